"""Tensor names across a whole :class:`~surgeon.io.model.Model`: which tensors
carry a name, where a name lives (for messages), and renaming consistently.

A rename must reach both the gs tensors and the name-keyed records in
:class:`~surgeon.io.model.Origin` (value_info order, IR-3 initializer inputs,
quantization annotations, unused initializers) that the exporter reads; that
is why this lives in ``io/`` next to ``Origin`` rather than in ``graph/``,
which must not know the Model. ``rename_io``/``rename_tensors`` rename with
it; ``insert_node``, ``extract`` and the output passes look names up with it.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from surgeon.errors import PassError
from surgeon.graph.names import node_label
from surgeon.graph.walk import subgraphs_of, walk_graphs
from surgeon.io.model import Model


def tensor_groups(model: Model) -> dict[str, list[gs.Tensor]]:
    """Tensor name -> the distinct tensor objects with that name, in the whole model.

    Usually one object per name; sibling subgraphs (the two branches of an
    ``If``) may each declare a local tensor of the same name. Unused
    initializers, which gs does not see, are included.
    """
    groups: dict[str, list[gs.Tensor]] = {}
    seen: set[int] = set()

    def add(t: gs.Tensor) -> None:
        if t.name and id(t) not in seen:
            seen.add(id(t))
            groups.setdefault(t.name, []).append(t)

    for g in walk_graphs(model.graph):
        for t in g.inputs:
            add(t)
        for n in g.nodes:
            for t in list(n.inputs) + list(n.outputs):
                add(t)
        for t in g.outputs:
            add(t)
    for unused in model.origin.unused_initializers.values():
        for t in unused:
            add(t)
    return groups


def where_is(model: Model, name: str) -> str:
    """Where a tensor name lives, for error messages: ``graph input``, ``output of node 'x' (Op) in ...``."""
    def visit(graph: gs.Graph, scope: str) -> str | None:
        if any(t.name == name for t in graph.inputs):
            return f"input of {scope}" if scope != "the main graph" else "graph input"
        for n in graph.nodes:
            if any(t.name == name for t in n.outputs):
                return f"output of {node_label(n)} in {scope}"
            if any(t.name == name and isinstance(t, gs.Constant) for t in n.inputs):
                return f"initializer read by {node_label(n)} in {scope}"
        for n in graph.nodes:
            for attr, sub in subgraphs_of(n):
                found = visit(sub, f"the {attr} of node '{n.name}'")
                if found:
                    return found
        return None

    found = visit(model.graph, "the main graph")
    if found:
        return found
    return "unused initializer" if any(
        t.name == name for ts in model.origin.unused_initializers.values() for t in ts) else "tensor"


def check_renames(model: Model, renames: dict[str, str], groups: dict[str, list[gs.Tensor]]) -> None:
    """Refuse empty, duplicate or taken new names (a name freed in the same step may be reused)."""
    taken: dict[str, str] = {}
    for old, new in renames.items():
        if not new:
            raise PassError(f"cannot rename '{old}' to an empty name",
                            hint="an empty name means an omitted optional input in ONNX; give a real name")
        if new in taken:
            raise PassError(f"'{taken[new]}' and '{old}' would both be named '{new}'",
                            hint="give every tensor its own new name")
        taken[new] = old
        if new in groups and new not in renames:
            raise PassError(
                f"cannot rename '{old}' to '{new}': a tensor named '{new}' already exists "
                f"({where_is(model, new)})",
                hint="choose another name; to swap two names, rename both in the same step",
            )


def apply_renames(model: Model, renames: dict[str, str], groups: dict[str, list[gs.Tensor]]) -> None:
    """Rename the tensor objects, then the name-keyed records the exporter reads."""
    if not renames:
        return
    for old, new in renames.items():
        for t in groups[old]:
            t.name = new
    o = model.origin
    for order in (*o.value_info_order.values(), *o.initializer_order.values()):
        renamed = {renames.get(k, k): v for k, v in order.items()}
        order.clear()
        order.update(renamed)
    for gid, entries in o.initializer_inputs.items():
        o.initializer_inputs[gid] = [(renames.get(name, name), k) for name, k in entries]
    for gid, vis in o.io_value_info.items():
        o.io_value_info[gid] = [_renamed_copy(vi, "name", renames) for vi in vis]
    for gid, (graph, meta, quantization) in o.graphs.items():
        o.graphs[gid] = (graph, meta, [_renamed_copy(q, "tensor_name", renames) for q in quantization])


def _renamed_copy(proto, field: str, renames: dict[str, str]):
    old = getattr(proto, field)
    if old not in renames:
        return proto
    copy = type(proto)()
    copy.CopyFrom(proto)
    setattr(copy, field, renames[old])
    return copy

