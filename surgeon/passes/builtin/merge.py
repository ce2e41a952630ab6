"""merge: glue another model in front of or behind this one, across opsets.

``onnx.compose.merge_models`` refuses models with different opsets or IR
versions (onnx#4474) and leaves name collisions to the caller. This pass
converts the lower default-domain opset up (through ``convert_opset``, the
registered pass), takes the higher IR version, merges the other domains'
imports, renames only what collides, and keeps local functions, metadata and
external weights of both models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx_graphsurgeon as gs

from surgeon.errors import PassError, SurgeonError
from surgeon.graph.constants import np_dtype_of_ort
from surgeon.graph.correspondence import Correspondence, Derived, Pick, Tensor
from surgeon.graph.names import Namer, quoted
from surgeon.graph.walk import node_domain, walk_graphs
from surgeon.io.external import ExternalValues, external_location, external_ref
from surgeon.io.load import load
from surgeon.io.model import Model
from surgeon.io.runtime import cpu_session
from surgeon.passes.context import recipe_folder
from surgeon.passes.contract import Contract, verified_by
from surgeon.passes.registry import registry
from surgeon.passes.result import PassResult

if TYPE_CHECKING:
    from surgeon.passes.runner import StepReport


def _merge_contract_hook(plan: Correspondence, report: StepReport, model: Model) -> None:
    _merge_contract(plan, report, model)  # defined below the pass, where its helpers are


@verified_by(Contract("before: the original is fed the new input run through the other model (in onnxruntime); "
                      "after: the other model's outputs equal it run on the original's connected tensors",
                      update=_merge_contract_hook))
def merge(ours: Model, *, model: str, position: Literal["before", "after"], connect: dict[str, str],
          prefix: str | None = None) -> PassResult:
    """Merge another ONNX model in front of this one (its outputs feed our inputs) or behind it.

    Parameters:
        model: the other model's file, relative to the recipe's folder (to the current directory
            for a recipe built in Python).
        position: ``before``: its outputs feed our graph inputs; ``after``: our tensors feed its
            graph inputs.
        connect: its tensor -> our tensor. Before: one of its graph outputs -> one of our graph
            inputs. After: one of its graph inputs -> any tensor of our main graph (usually a
            graph output).
        prefix: put in front of its names that collide with ours (default: the other file's name
            and a dot, e.g. ``letterbox.``); names that do not collide are kept.

    Rules:
        1. The connected tensors must agree: same dtype, same rank, and equal fixed dimensions;
           otherwise the step fails naming both tensors. Each connected tensor of ours keeps
           its name; the other model's tensor is replaced by it.
        2. Opsets are reconciled: the model with the lower default (ai.onnx) opset is converted
           up with ``convert_opset`` (``onnx.version_converter``), or the step fails naming the
           model and the op that cannot be converted. Imports of other domains are merged; the
           same domain at two versions is an error. The IR version is the higher of the two.
        3. Names: tensor and node names of the other model (subgraphs included) that collide
           with ours get ``prefix``; a local function whose name collides is renamed the same way
           (its calls too). The graph inputs and outputs of the merged model are: (before) its
           inputs, then our inputs that were not connected; our outputs, then its outputs that
           were not connected. (After) our inputs, then its inputs that were not connected; our
           outputs that were not connected, then its outputs.
        4. Metadata: both models' ``metadata_props`` are kept; on a key present in both with
           different values ours wins, and the step reports it. Our producer, model version and
           doc string stay.
        5. External data: the other model's weights stay lazy and are copied from its data file
           into the output's data file on save, with ours.
        6. Nothing changes when the step fails: every check runs, and the other model is
           converted, before our model is touched (if our model is the one converted and that
           fails, the converter leaves it unchanged).

    Example:
        version: 1
        steps:
          - pass: merge
            with:
              model: ../fixtures/preprocess_bgr_op11.onnx
              position: before
              connect: {preprocessed: images}

    Reports:
        the nodes added (by the runner); notes on the opset conversion, the IR version, renamed
        names and metadata clashes; ``details``: ``opset``, ``renamed`` (its old -> new names).
    """
    path = recipe_folder() / model
    if not path.is_file():
        raise PassError(f"model to merge not found: {path}",
                        hint="'model' is relative to the recipe's folder (to the current directory for a "
                             "recipe built in Python); check the path")
    try:
        other = load(path)
    except SurgeonError as exc:
        raise PassError(f"cannot read the model to merge, {path}: {exc.message}", hint=exc.hint) from exc
    if not connect:
        raise PassError("'connect' is empty: nothing would join the two models",
                        hint="map its tensors to ours, e.g. connect: {letterboxed: images}")
    label = path.name
    result = PassResult()
    pairs = _pairs(ours, other, position, connect, label)
    _check_domains(ours, other, label)
    ours_opset, their_opset = ours.opset, other.opset
    if their_opset < ours_opset:
        _convert(other, ours_opset, label, result)
    prefix = prefix if prefix is not None else Path(path.name).stem + "."
    if their_opset > ours_opset:  # last fallible step: a failed conversion leaves our model unchanged
        _convert(ours, their_opset, "our model", result)

    # Its graph inputs and outputs by their names in its file, for verification (the contract runs its file).
    their_io = [(t.name, t) for t in [*other.graph.inputs, *other.graph.outputs]]
    renamed = _rename_collisions(ours, other, prefix, {id(t) for t, _ in pairs})
    _wire(ours, other, pairs, position)
    _adopt_weights(ours, other)
    _adopt_model_data(ours, other, label, result)
    if renamed:
        result.notes.append(f"renamed {len(renamed)} name(s) of {label} that collide with ours, with prefix "
                            f"'{prefix}'")
    result.notes.insert(0, f"merged {label} {position} the model ({len(list(other.graph.nodes))} nodes)")
    result.details.update({"opset": ours.opset, "renamed": renamed, "path": str(path), "position": position,
                           "connect": dict(connect),
                           "inputs": {old: t.name for old, t in their_io[:len(other.graph.inputs)]},
                           "outputs": {old: t.name for old, t in their_io[len(other.graph.inputs):]}})
    result.changed = True
    return result


def _run_file(path: str) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Run the model file at ``path`` in onnxruntime (one session, opened on first use)."""
    session: list[Any] = []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not session:
            session.append(cpu_session(path, optimization="all", arena=True))
        sess = session[0]
        typed = {i.name: feeds[i.name].astype(np_dtype_of_ort(i.type) or np.float32, copy=False)
                 for i in sess.get_inputs()}
        return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, typed)))

    return run


def _merge_contract(plan: Correspondence, report: StepReport, model: Model) -> None:
    """Before: the original is fed what the other model makes of the new input. After: the other
    model's outputs are compared with that model run on the original's tensors."""
    d = report.details
    label = Path(d["path"]).name
    run = _run_file(d["path"])
    inputs, outputs, connect = d["inputs"], d["outputs"], d["connect"]
    if d["position"] == "before":
        joined = {their: ours for their, ours in connect.items()}
        for their, new in outputs.items():
            if their not in joined:
                plan.skipped[new] = f"an output of {label} alone (merged before the model)"
        if len(inputs) != 1 or len(joined) != 1:
            for t in model.graph.outputs:
                plan.skipped.setdefault(t.name, f"{label} has {len(inputs)} inputs and {len(joined)} connections; "
                                                "verification feeds the original through one of each only")
            return
        [(their_input, new_input)] = inputs.items()
        [(their_output, our_input)] = joined.items()
        previous = plan.feed(our_input)
        plan.inputs.pop(our_input, None)
        plan.inputs[new_input] = previous.then(lambda x: run({their_input: x})[their_output],
                                               f"run through {label} (its '{their_output}')")
        return
    unconnected = [their for their in inputs if their not in connect]
    if unconnected:
        for new in outputs.values():
            plan.skipped[new] = (f"{label} also reads its input(s) {', '.join(unconnected)}, which the original "
                                 "does not have")
        return
    order = list(connect)
    derived = Derived(lambda *arrays: run(dict(zip(order, arrays))), tuple(Tensor(connect[t]) for t in order),
                      f"{label} run on the original's {', '.join(repr(connect[t]) for t in order)}")
    for their, new in outputs.items():
        plan.exprs[new] = Pick(derived, their)


def _pairs(ours: Model, other: Model, position: str, connect: dict[str, str],
           label: str) -> list[tuple[gs.Tensor, gs.Tensor]]:
    """``(its tensor, our tensor)`` for each entry of ``connect``, checked."""
    if position == "before":
        theirs = {t.name: t for t in other.graph.outputs}
        mine = {t.name: t for t in ours.graph.inputs}
        their_what, our_what = "graph output", "graph input"
    else:
        theirs = {t.name: t for t in other.graph.inputs}
        mine = ours.graph.tensors()
        their_what, our_what = "graph input", "tensor"
    problems: list[str] = []
    pairs = []
    for their_name, our_name in connect.items():
        t, o = theirs.get(their_name), mine.get(our_name)
        if t is None:
            problems.append(f"{label} has no {their_what} '{their_name}' (its {their_what}s: {quoted(theirs)})")
        if o is None:
            problems.append(f"our model has no {our_what} '{our_name}'"
                            + (f" (its graph inputs: {quoted(mine)})" if position == "before" else ""))
        if t is None or o is None:
            continue
        mismatch = _mismatch(t, o)
        if mismatch:
            problems.append(f"{label}'s '{their_name}' ({_type(t)}) cannot connect to our '{our_name}' "
                            f"({_type(o)}): {mismatch}")
        pairs.append((t, o))
    used = [o for o in connect.values()]
    for name in dict.fromkeys(n for n in used if used.count(n) > 1):
        if position == "before":
            problems.append(f"our graph input '{name}' is connected twice")
    if problems:
        raise PassError("cannot merge: " + problems[0] if len(problems) == 1
                        else "cannot merge:\n  " + "\n  ".join(problems),
                        hint="'connect' maps its tensors to ours (before: its outputs -> our inputs; after: its "
                             "inputs -> our tensors); run 'surgeon inspect' on both models to see their names")
    return pairs


def _type(t: gs.Tensor) -> str:
    dtype = "?" if t.dtype is None else getattr(t.dtype, "__name__", str(t.dtype))
    shape = "?" if t.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]"
    return f"{dtype} {shape}"


def _mismatch(a: gs.Tensor, b: gs.Tensor) -> str | None:
    if a.dtype is not None and b.dtype is not None and str(a.dtype) != str(b.dtype):
        return "the dtypes differ"
    if a.shape is not None and b.shape is not None:
        if len(a.shape) != len(b.shape):
            return "the ranks differ"
        for i, (x, y) in enumerate(zip(a.shape, b.shape)):
            if isinstance(x, int) and isinstance(y, int) and x != y:
                return f"dimension {i} differs ({x} vs {y})"
    return None


def _check_domains(ours: Model, other: Model, label: str) -> None:
    clashes = [f"'{d}' ({v} in {label}, {ours.opset_imports[d]} in ours)"
               for d, v in other.opset_imports.items()
               if d not in ("", "ai.onnx") and d in ours.opset_imports and ours.opset_imports[d] != v]
    if clashes:
        raise PassError("cannot merge: both models import the domain " + ", ".join(clashes)
                        + " at different versions",
                        hint="a domain's ops can differ between its versions; re-export one of the models "
                             "with the other's version of that domain")


def _convert(m: Model, target: int, label: str, result: PassResult) -> None:
    before = m.opset
    try:
        registry.get("convert_opset").call(m, {"target": target})
    except PassError as exc:
        raise PassError(f"cannot merge: {label} is at opset {before} and must be converted to opset {target}, "
                        f"but {exc.message}", hint=exc.hint) from exc
    result.notes.append(f"converted {label} from opset {before} to {target}")


def _names(graph: gs.Graph) -> tuple[list[gs.Tensor], list[gs.Node]]:
    """Every tensor (by object, once) and node of ``graph`` and its subgraphs."""
    tensors: dict[int, gs.Tensor] = {}
    nodes: list[gs.Node] = []
    for g in walk_graphs(graph):
        for t in list(g.inputs) + list(g.outputs):
            tensors.setdefault(id(t), t)
        for n in g.nodes:
            nodes.append(n)
            for t in list(n.inputs) + list(n.outputs):
                tensors.setdefault(id(t), t)
    return list(tensors.values()), nodes


def _rename_collisions(ours: Model, other: Model, prefix: str, replaced: set[int]) -> dict[str, str]:
    """Rename the other model's tensors, nodes and functions whose names ours uses; old -> new."""
    namer = Namer(ours.graph)
    tensors, nodes = _names(other.graph)
    their_taken = {t.name for t in tensors if t.name} | {n.name for n in nodes if n.name}
    namer.taken |= their_taken
    renamed: dict[str, str] = {}
    our_tensor_names, our_nodes = _names(ours.graph)
    ours_taken = {t.name for t in our_tensor_names if t.name} | {n.name for n in our_nodes if n.name}
    for t in tensors:
        if id(t) in replaced or not t.name or t.name not in ours_taken:
            continue
        new = namer.new(prefix + t.name)
        renamed[t.name] = new
        t.name = new
    for n in nodes:
        if n.name and n.name in ours_taken:
            new = namer.new(prefix + n.name)
            renamed.setdefault(n.name, new)
            n.name = new
    our_functions = {(f.domain, f.name) for f in ours.graph.functions}
    calls: dict[tuple[str, str], list[gs.Node]] = {}
    for n in nodes:
        calls.setdefault((node_domain(n), n.op), []).append(n)
    for f in other.graph.functions:
        if (f.domain, f.name) in our_functions:
            old = f.name
            f.name = prefix + old
            for n in calls.get((f.domain or "", old), []):
                n.op = f.name
            renamed[f"function {f.domain}::{old}"] = f"{f.domain}::{f.name}"
    return renamed


def _wire(ours: Model, other: Model, pairs: list[tuple[gs.Tensor, gs.Tensor]], position: str) -> None:
    g, h = ours.graph, other.graph
    joined = {id(t) for t, _ in pairs}
    mine = {id(o) for _, o in pairs}
    if position == "before":
        for t, o in pairs:
            for producer in list(t.inputs):
                index = next(i for i, x in enumerate(producer.outputs) if x is t)
                producer.outputs[index] = o
            for reader in list(t.outputs):
                for i, x in enumerate(reader.inputs):
                    if x is t:
                        reader.inputs[i] = o
        inputs = list(h.inputs) + [t for t in g.inputs if id(t) not in mine]
        outputs = list(g.outputs) + [t for t in h.outputs if id(t) not in joined]
        nodes = list(h.nodes) + list(g.nodes)
    else:
        for t, o in pairs:
            for reader in list(t.outputs):
                for i, x in enumerate(reader.inputs):
                    if x is t:
                        reader.inputs[i] = o
        inputs = list(g.inputs) + [t for t in h.inputs if id(t) not in joined]
        outputs = [t for t in g.outputs if id(t) not in mine] + list(h.outputs)
        nodes = list(g.nodes) + list(h.nodes)
    g.inputs = inputs
    g.outputs = outputs
    g.nodes = nodes
    theirs = {(f.domain, f.name) for f in g.functions}
    g.functions = list(g.functions) + [f for f in h.functions if (f.domain, f.name) not in theirs]
    _adopt_origin(ours, other)


def _adopt_origin(ours: Model, other: Model) -> None:
    """Keep what the other model's loader recorded (node metadata, value_info as read, where its
    initializers were declared): its main graph's records now belong to ours."""
    mine, theirs = ours.origin, other.origin
    mine.value_info.update(theirs.value_info)
    mine.nodes.update(theirs.nodes)
    mine.functions.update(theirs.functions)
    for key, (const, graph) in theirs.owner.items():
        mine.owner[key] = (const, ours.graph if graph is other.graph else graph)
    main = id(other.graph)
    for table in ("value_info_order", "io_value_info", "initializer_order", "initializer_inputs", "graphs"):
        target, source = getattr(mine, table), getattr(theirs, table)
        target.update({k: v for k, v in source.items() if k != main})
    mine.used_domains |= theirs.used_domains
    for key, consts in theirs.unused_initializers.items():
        mine.unused_initializers.setdefault(id(ours.graph) if key == main else key, []).extend(consts)


def _adopt_weights(ours: Model, other: Model) -> None:
    """The other model's lazy external weights, pointed at their data file by absolute path, so
    that saving copies them into the output's data file whatever folder ours was read from."""
    if other.base_dir is None:
        return
    tensors, nodes = _names(other.graph)
    consts = [t for t in tensors if isinstance(t, gs.Constant)]
    consts += [v for n in nodes for v in n.attrs.values() if isinstance(v, gs.Constant)]
    for c in consts:
        values = c._values
        if isinstance(values, ExternalValues) and external_location(values.tensor):
            where = external_ref(values.tensor, values.base_dir).path.resolve()
            for entry in values.tensor.external_data:
                if entry.key == "location":
                    entry.value = str(where)
    if ours.base_dir is None:
        ours.base_dir = other.base_dir


def _adopt_model_data(ours: Model, other: Model, label: str, result: PassResult) -> None:
    for domain, version in other.opset_imports.items():
        ours.opset_imports.setdefault(domain, version)
    if other.ir_version > ours.ir_version:
        result.notes.append(f"raised the IR version from {ours.ir_version} to {other.ir_version} ({label}'s)")
        ours.ir_version = other.ir_version
    props = ours.metadata_props
    clashes = [k for k, v in other.metadata_props.items() if k in props and props[k] != v]
    ours.metadata_props = {**other.metadata_props, **props}
    if clashes:
        result.notes.append(f"metadata {quoted(clashes)} differ(s) between the models: ours kept")
