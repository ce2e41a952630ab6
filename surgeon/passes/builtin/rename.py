"""rename_io and rename_tensors: give tensors (and nodes) new names everywhere they are used.

In onnx-graphsurgeon a subgraph node that reads an outer-scope tensor holds
the same ``Tensor`` object as the outer graph, so renaming the object renames
every use at once, inside ``If``/``Loop``/``Scan`` bodies too. What gs does
not carry (value_info order, quantization annotations, IR-3 initializer
inputs) lives in :class:`surgeon.io.model.Origin` keyed by name and is renamed
along with the tensors by :mod:`surgeon.io.tensor_names`.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from surgeon.errors import PassError, name_hint, suggestion_hint
from surgeon.graph.names import quoted
from surgeon.io.model import Model
from surgeon.io.tensor_names import apply_renames, check_renames, tensor_groups
from surgeon.passes.contract import INTERFACE, verified_by
from surgeon.passes.result import PassResult


@verified_by(INTERFACE)
def rename_io(model: Model, *, inputs: dict[str, str] | None = None,
              outputs: dict[str, str] | None = None) -> PassResult:
    """Rename graph inputs and outputs, everywhere they are used.

    Parameters:
        inputs: graph input renames, old name -> new name.
        outputs: graph output renames, old name -> new name.

    Rules:
        1. Every old name must be an input (under ``inputs``) or an output
           (under ``outputs``) of the main graph; otherwise the step fails
           with the closest names.
        2. A new name must not exist anywhere in the model (subgraphs and
           unused initializers included), unless the tensor holding it is
           renamed in the same step (so two names can be swapped).
        3. The tensor is renamed in every node that reads it, including nodes
           of ``If``/``Loop``/``Scan`` bodies that capture it, and in its
           value_info and quantization annotation.
        4. A tensor that is both a graph input and a graph output is one
           tensor: renaming it renames both.
        5. Everything is checked before anything is renamed.

    Example:
        version: 1
        steps:
          - pass: rename_io
            with:
              inputs: {input: images}
              outputs: {output: features}

    Reports:
        the renames (old -> new), which numeric verification follows.
    """
    inputs, outputs = inputs or {}, outputs or {}
    if not inputs and not outputs:
        raise PassError("nothing to rename",
                        hint="give inputs: {old: new} and/or outputs: {old: new}")
    graph = model.graph
    chosen: dict[int, tuple[gs.Tensor, str, str]] = {}  # id(tensor) -> (tensor, new name, where given)
    for kind, mapping, io, other, other_kind in (("input", inputs, graph.inputs, graph.outputs, "output"),
                                                 ("output", outputs, graph.outputs, graph.inputs, "input")):
        by_name = {t.name: t for t in io}
        for old, new in mapping.items():
            t = by_name.get(old)
            if t is None:
                if any(o.name == old for o in other):
                    hint = f"'{old}' is a graph {other_kind}: list it under {other_kind}s:"
                else:
                    hint = suggestion_hint(old, by_name) or f"the graph {kind}s are: {quoted(by_name)}"
                raise PassError(f"'{old}' is not a graph {kind}", hint=hint)
            earlier = chosen.get(id(t))
            if earlier is not None and earlier[1] != new:
                raise PassError(
                    f"'{old}' is both a graph input and a graph output, and is given two new "
                    f"names: '{earlier[1]}' ({earlier[2]}s) and '{new}' ({kind}s)",
                    hint="it is one tensor: give one new name, under either inputs or outputs",
                )
            chosen[id(t)] = (t, new, kind)
    renames = {t.name: new for t, new, _ in chosen.values() if t.name != new}
    groups = tensor_groups(model)
    check_renames(model, renames, groups)
    apply_renames(model, renames, groups)
    return PassResult(renamed=renames)


@verified_by(INTERFACE)
def rename_tensors(model: Model, *, map: dict[str, str] | None = None, prefix: str | None = None,
                   strip_prefix: str | None = None, include_io: bool = False,
                   allow_missing: bool = False) -> PassResult:
    """Rename tensors by name, or all node and tensor names by prefix.

    Parameters:
        map: tensor renames, old name -> new name (any tensor, graph inputs and
            outputs included).
        prefix: text added in front of node and tensor names (after
            ``strip_prefix`` is removed, if given).
        strip_prefix: only names that start with this text are renamed: the
            text is removed (and replaced by ``prefix`` if given), e.g.
            ``/backbone/conv1/Conv_output_0`` -> ``/conv1/Conv_output_0``.
        include_io: let ``prefix``/``strip_prefix`` rename the main graph's
            inputs and outputs too (off: the model's interface keeps its names).
        allow_missing: a ``map`` name that does not exist, or a
            ``strip_prefix`` that no name starts with, is skipped instead of
            failing the step.

    Rules:
        1. Give either ``map`` or ``prefix``/``strip_prefix``; for both kinds
           of rename use two steps.
        2. ``map`` renames tensors only; ``prefix``/``strip_prefix`` rename
           node names and tensor names (initializers included) in the main
           graph and every subgraph. Graph inputs and outputs keep their names
           unless ``include_io: true``; inputs/outputs of subgraph bodies are
           renamed like any tensor. Local function bodies (their own name
           scope) are left as they are.
        3. A new tensor name must not exist anywhere in the model unless that
           tensor is renamed in the same step, two tensors must not get the
           same new name, and no name may become empty.
        4. A tensor is renamed in every node that reads it, including nodes
           of ``If``/``Loop``/``Scan`` bodies that capture it, and in its
           value_info and quantization annotation. Sibling subgraphs may each
           hold a tensor of the same name; all of them are renamed.
        5. Everything is checked before anything is renamed.

    Example:
        version: 1
        steps:
          - pass: rename_tensors
            with:
              map: {/block1/block1.0/Conv_output_0: stem_features}
          - pass: rename_tensors
            with: {strip_prefix: /, prefix: "net."}

    Reports:
        the tensor renames (old -> new); renamed nodes show as rewired and are
        counted in details.nodes_renamed.
    """
    bulk = prefix is not None or strip_prefix is not None
    if map is None and not bulk:
        raise PassError("nothing to rename",
                        hint="give map: {old: new}, or prefix and/or strip_prefix")
    if map is not None and bulk:
        raise PassError("give either map or prefix/strip_prefix, not both",
                        hint="use two rename_tensors steps")
    if strip_prefix == "":
        raise PassError("strip_prefix is empty",
                        hint="give the text to remove, or leave strip_prefix out to add a prefix to every name")
    if prefix == "" and strip_prefix is None:
        raise PassError("prefix is empty, so nothing would change",
                        hint="give the text to add in front of every name")
    groups = tensor_groups(model)
    result = PassResult()
    node_renames: list[tuple[gs.Node, str]] = []
    if map is not None:
        renames = {}
        for old, new in map.items():
            if old in groups:
                if old != new:
                    renames[old] = new
            elif allow_missing:
                result.notes.append(f"no tensor named '{old}': skipped (allow_missing)")
            else:
                raise PassError(f"no tensor named '{old}' in the model",
                                hint=suggestion_hint(old, groups)
                                or f"{name_hint(old, groups, 'tensor')}; set allow_missing: true if the name "
                                   "may legitimately be absent")
    else:
        io = set() if include_io else {t.name for t in model.graph.inputs + model.graph.outputs}
        renames = {name: prefixed for name in groups
                   if name not in io and (prefixed := _prefixed(name, prefix, strip_prefix)) is not None}
        renames = {old: new for old, new in renames.items() if old != new}
        node_renames = [(n, prefixed) for n in model.nodes()
                        if n.name and (prefixed := _prefixed(n.name, prefix, strip_prefix)) is not None]
        if strip_prefix is not None and not renames and not node_renames:
            if not allow_missing:
                sample = [n for n in groups if n not in io][:3]
                raise PassError(
                    f"no node or tensor name starts with '{strip_prefix}'"
                    + ("" if include_io else " (graph inputs and outputs excluded)"),
                    hint=("names in the model look like " + quoted(sample) + "; " if sample else "")
                    + "set allow_missing: true if the step may legitimately match nothing",
                )
            result.notes.append(f"no name starts with '{strip_prefix}': skipped (allow_missing)")
        for node, new in node_renames:
            if new == "":
                raise PassError(f"node '{node.name}' would get an empty name",
                                hint="strip_prefix must be shorter than the names it renames, or add a prefix")
    check_renames(model, renames, groups)
    apply_renames(model, renames, groups)
    for node, new in node_renames:
        node.name = new
    result.renamed = renames
    result.details = {"nodes_renamed": len(node_renames)}
    return result


def _prefixed(name: str, prefix: str | None, strip_prefix: str | None) -> str | None:
    """The new name under a prefix rename, or None when the name is not renamed."""
    if strip_prefix is not None:
        if not name.startswith(strip_prefix):
            return None
        name = name[len(strip_prefix):]
    return (prefix or "") + name
