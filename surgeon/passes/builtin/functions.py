"""inline_functions: replace calls of model-local functions by their bodies.

The PyTorch dynamo exporter and ``export_modules_as_functions`` write model-local
functions; many back ends (TensorRT, older runtimes, most graph tools) want a
flat graph. The inlining itself is onnx's (``onnx.inliner``): it renames the
body's tensors uniquely, substitutes attribute references and inlines nested
calls and calls inside ``If``/``Loop`` bodies. Its result is merged back into
the model by :func:`surgeon.io.adopt.adopt_rewrite`, which ``convert_opset`` shares.
"""

from __future__ import annotations

import onnx
import onnx.inliner
import onnx_graphsurgeon as gs

from surgeon.errors import PassError, suggestion_hint
from surgeon.graph.names import qualified_op
from surgeon.graph.ops import default_opset
from surgeon.graph.walk import walk_graphs
from surgeon.io.adopt import adopt_rewrite, converter_failed_op, converter_message
from surgeon.io.export import to_proto
from surgeon.io.model import Model
from surgeon.passes.contract import EQUAL, verified_by
from surgeon.passes.result import PassResult


@verified_by(EQUAL)
def inline_functions(model: Model, *, functions: list[str] | None = None,
                     allow_missing: bool = False) -> PassResult:
    """Inline calls of model-local functions, then drop the functions nothing calls any more.

    Parameters:
        functions: names of the functions to inline, as ``name`` or
            ``domain::name`` (default: every local function).
        allow_missing: a name in ``functions`` that the model does not define
            is not an error (the step then inlines the others, or nothing).

    Rules:
        1. Every call of a selected function is replaced by the function's
           body, in the main graph, in ``If``/``Loop``/``Scan`` bodies and in
           the bodies of other local functions; calls inside the body are
           inlined too when their function is selected (``onnx.inliner``).
        2. Body tensors get fresh unique names; the call's own input and
           output tensors keep theirs, so the graph's interface and every
           other node stay as they were.
        3. A selected function that no node calls after inlining is removed;
           functions that were not selected are kept.
        4. A name that is not a local function is an error with the closest
           names (unless ``allow_missing``); a model without local functions
           is left unchanged when ``functions`` is not given (applying the
           step twice is harmless).
        5. A function whose body imports another version of the default
           opset than the model is converted to the model's version while
           inlining all functions; selecting functions by name in such a
           model is an error (onnx's selective inliner cannot convert).

    Example:
        version: 1
        steps:
          - pass: inline_functions
          - pass: cleanup

    Reports:
        the removed call nodes and the added body nodes (by the runner); the
        number of calls inlined per function and the functions removed.
    """
    local = list(model.graph.functions)
    result = PassResult()
    if functions is None:
        selected = local
        if not selected:
            result.notes.append("the model has no local functions: nothing to inline")
            return result
    else:
        selected = _select(local, functions, allow_missing, result)
        if not selected:
            return result
    keys = [(f.domain or "", f.name) for f in selected]
    calls = _count_calls(model, set(keys))
    before = to_proto(model)
    after = _inline(before, keys, everything=functions is None or len(selected) == len(local))
    adopt_rewrite(model, before, after, functions=True)

    remaining = {(f.domain or "", f.name) for f in model.graph.functions}
    removed = [qualified_op(*k) for k in keys if k not in remaining]
    result.details = {"inlined": {qualified_op(*k): calls[k] for k in keys}, "functions_removed": removed}
    result.changed = True  # the list of local functions changed: the runner does not see it
    result.notes.extend(f"inlined {n} call(s) of {qualified_op(*k)}" for k, n in calls.items() if n)
    if removed:
        result.notes.append("removed local function(s) " + ", ".join(removed))
    return result


def _select(local: list[gs.Function], names: list[str], allow_missing: bool,
            result: PassResult) -> list[gs.Function]:
    by_label: dict[str, list[gs.Function]] = {}
    for f in local:
        by_label.setdefault(f.name, []).append(f)
        by_label.setdefault(qualified_op(f.domain or "", f.name), []).append(f)
    selected: list[gs.Function] = []
    for name in names:
        found = by_label.get(name)
        if found is None:
            if allow_missing:
                result.notes.append(f"no local function '{name}' (allowed: allow_missing)")
                continue
            candidates = sorted({qualified_op(f.domain or "", f.name) for f in local})
            listed = ", ".join(candidates) if candidates else "none"
            raise PassError(
                f"the model has no local function '{name}'",
                hint=suggestion_hint(name, list(by_label))
                or f"the model's local functions: {listed}; set allow_missing: true if the step may "
                   "legitimately find none",
            )
        selected += [f for f in found if not any(f is s for s in selected)]
    return selected


def _count_calls(model: Model, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    counts = dict.fromkeys(sorted(keys), 0)
    nodes = [n for g in walk_graphs(model.graph) for n in g.nodes]
    nodes += [n for f in model.graph.functions for g in walk_graphs(f) for n in g.nodes]
    for n in nodes:
        key = (n.domain or "", n.op)
        if key in counts:
            counts[key] += 1
    return counts


def _inline(proto: onnx.ModelProto, keys: list[tuple[str, str]], everything: bool) -> onnx.ModelProto:
    model_opset = default_opset(proto.opset_import)
    other = [f for f in proto.functions if default_opset(f.opset_import) not in (None, model_opset)]
    try:
        if everything:
            # Only the all-functions inliner converts bodies written for another opset.
            return onnx.inliner.inline_local_functions(proto, convert_version=True)
        if other:
            names = ", ".join(f"'{qualified_op(f.domain, f.name)}' (opset {default_opset(f.opset_import)})"
                              for f in other)
            raise PassError(
                f"cannot inline selected functions: local function(s) {names} import another version "
                f"of the default opset than the model ({model_opset}), and onnx's selective inliner "
                "cannot convert them",
                hint="inline all functions (leave out 'functions'), which converts their bodies to the "
                     "model's opset",
            )
        return onnx.inliner.inline_selected_functions(proto, keys)
    except RuntimeError as exc:  # the version converter failed on a function body
        op = converter_failed_op(str(exc))
        culprits = [f for f in other if op is None or any(n.op_type == op for n in f.node)]
        names = ", ".join(f"'{qualified_op(f.domain, f.name)}' (opset {default_opset(f.opset_import)})"
                          for f in culprits) or "a local function"
        raise PassError(
            f"cannot inline {names}: onnx cannot convert its body to the model's opset {model_opset}"
            + (f" ({op} cannot be converted)" if op else "") + f": {converter_message(str(exc))}",
            hint="convert the model to the function's opset first (pass: convert_opset), then inline",
        ) from exc
