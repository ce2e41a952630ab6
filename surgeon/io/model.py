"""The model a pass edits: a ``gs.Graph`` plus everything gs does not carry.

onnx-graphsurgeon's graph holds nodes and tensors well, but drops or mangles
model-level data (metadata, model domain, unknown fields), node metadata,
optional/sequence/map types, IR-3 initializer inputs, unused initializers and
where initializers were declared. :class:`Model` keeps that next to the graph
in :class:`Origin`, a record of what the input looked like, so the exporter
can write back exactly what was read wherever a pass did not change it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_graphsurgeon as gs

from surgeon.graph.walk import walk_graphs


@dataclass
class Origin:
    """What the input model looked like, keyed by ``id()`` of gs objects.

    gs objects define ``__eq__`` without ``__hash__``, so they cannot be dict
    keys; each entry holds the object itself too, which keeps ``id()`` unique.
    An entry is used on export only while the object still looks as it did on
    load (same dtype/shape), so edits made by passes always win.
    """

    value_info: dict[int, tuple[gs.Tensor, onnx.ValueInfoProto, tuple]] = field(default_factory=dict)
    """Graph inputs/outputs and value_info entries: the proto as read, and (dtype, shape, type) then."""
    value_info_order: dict[int, dict[str, int]] = field(default_factory=dict)
    """Per graph: value_info name -> position as read (export keeps that order)."""
    io_value_info: dict[int, list[onnx.ValueInfoProto]] = field(default_factory=dict)
    """Per graph: value_info entries that repeat a graph input/output name (kept as read)."""
    nodes: dict[int, tuple[gs.Node, str, list[onnx.StringStringEntryProto], list[onnx.AttributeProto]]] = \
        field(default_factory=dict)
    """Per node: doc_string, metadata_props, and attributes gs could not import."""
    owner: dict[int, tuple[gs.Constant, gs.Graph]] = field(default_factory=dict)
    """Per initializer: the graph whose ``initializer`` list declared it."""
    initializer_order: dict[int, dict[str, int]] = field(default_factory=dict)
    """Per graph: initializer name -> position as read (export keeps that order)."""
    initializer_inputs: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    """Per graph: initializers also listed as graph inputs (IR 3 habit), with the
    number of real inputs that came before each."""
    unused_initializers: dict[int, list[gs.Constant]] = field(default_factory=dict)
    """Per graph: initializers no node reads. gs forgets them; cleanup drops them."""
    graphs: dict[int, tuple[gs.Graph, list[onnx.StringStringEntryProto], list[Any]]] = field(default_factory=dict)
    """Per graph: metadata_props and quantization_annotation."""
    functions: dict[int, tuple[Any, onnx.FunctionProto, bytes]] = field(default_factory=dict)
    """Per local function: the proto as read and a fingerprint of gs's export of it then."""
    graph_opset: int | None = None
    """gs's ``graph.opset`` on load: a gs script that changes it changes the default opset."""
    graph_import_domains: set[tuple[str, int]] = field(default_factory=set)
    """gs's ``graph.import_domains`` on load, to notice domains a gs script adds."""
    used_domains: set[str] = field(default_factory=set)
    """Opset domains that nodes used on load (only these are pruned when unused)."""


class Model:
    """A loaded ONNX model: ``model.graph`` is an onnx-graphsurgeon ``gs.Graph``.

    Model-level fields (``ir_version``, ``producer_name``, ``metadata_props``...)
    are read from and written to a copy of the input's ``ModelProto`` without
    its graph and functions (:attr:`template`), so fields this code does not
    know about survive a round trip too.
    """

    def __init__(
        self,
        graph: gs.Graph,
        template: onnx.ModelProto,
        *,
        base_dir: Path | None = None,
        source_path: Path | None = None,
        origin: Origin | None = None,
    ) -> None:
        self.graph = graph
        self.template = template
        self.base_dir = base_dir
        """Folder that external-data locations are relative to (None: no external data)."""
        self.source_path = source_path
        self.origin = origin or Origin()
        self.opset_imports: dict[str, int] = {o.domain: o.version for o in template.opset_import}
        """Opset imports, domain -> version, in the input's order. The exporter
        drops domains that nodes used on load but no longer use."""

    # -- model-level fields -------------------------------------------------------------

    @staticmethod  # a small property factory, called in the class body (callable there since Python 3.10)
    def _field(name: str, doc: str) -> property:
        def get(self: Model) -> Any:
            return getattr(self.template, name)

        def set_(self: Model, value: Any) -> None:
            setattr(self.template, name, value)

        return property(get, set_, doc=doc)

    ir_version = _field("ir_version", "IR version written to the output.")
    producer_name = _field("producer_name", "Tool that produced the model.")
    producer_version = _field("producer_version", "Version of that tool.")
    domain = _field("domain", "Model domain (reverse-DNS namespace).")
    model_version = _field("model_version", "Model version (integer).")
    doc_string = _field("doc_string", "Model doc string.")
    del _field

    @property
    def metadata_props(self) -> dict[str, str]:
        """A copy of the model's metadata as a dict; assign to change it."""
        return {p.key: p.value for p in self.template.metadata_props}

    @metadata_props.setter
    def metadata_props(self, props: dict[str, str]) -> None:
        del self.template.metadata_props[:]
        for k, v in props.items():
            self.template.metadata_props.add(key=str(k), value=str(v))

    @property
    def opset(self) -> int:
        """Version of the default (ai.onnx) opset."""
        return self.opset_imports.get("", self.opset_imports.get("ai.onnx", 0))

    @property
    def has_external_data(self) -> bool:
        return self.base_dir is not None

    # -- traversal -----------------------------------------------------------------------

    def graphs(self) -> Iterator[gs.Graph]:
        """The main graph and every nested subgraph, outermost first."""
        return walk_graphs(self.graph)

    def nodes(self) -> Iterator[gs.Node]:
        for g in self.graphs():
            yield from g.nodes

    def forget_unused_initializers(self) -> int:
        """Drop initializers that no node reads (gs never saw them); returns how many."""
        n = sum(len(v) for v in self.origin.unused_initializers.values())
        self.origin.unused_initializers.clear()
        return n

    def copy(self) -> Model:
        """An independent copy (for dry runs). External weights stay on disk, shared; weights a
        pass spilled too (the copy keeps their spill file alive once this model is gone)."""
        from surgeon.io.export import to_proto
        from surgeon.io.load import from_proto

        return from_proto(to_proto(self), base_dir=self.base_dir, source_path=self.source_path)

    def __repr__(self) -> str:
        src = f" from {self.source_path}" if self.source_path else ""
        return (f"<surgeon.Model{src}: {len(self.graph.nodes)} nodes, "
                f"inputs {[t.name for t in self.graph.inputs]}, outputs {[t.name for t in self.graph.outputs]}>")


def tensor_signature(t: gs.Tensor) -> tuple:
    """What must stay equal for a tensor's original type proto to be reused on export."""
    if isinstance(t, gs.Constant):
        return ("const", str(t.dtype), tuple(t.shape))
    shape = None if t.shape is None else tuple(t.shape)
    return (str(t.dtype) if t.dtype is not None else None, shape, getattr(t, "type", None))
