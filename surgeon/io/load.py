"""Loading: an ONNX file or ModelProto -> :class:`surgeon.Model`.

The protobuf is read without its external data; :mod:`surgeon.io.fast_import`
builds the gs graph (exactly what gs's importer builds, without its per-object
cost; gs's importer is the fallback); then
we walk the proto and the gs graph side by side (gs imports nodes in file
order, subgraphs by attribute name) to record in :class:`Origin` what gs
would otherwise lose, and to undo its one import bug that changes meaning
(a shapeless ``value_info`` entry overriding a graph output's declared type).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Collection
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError
from onnx_graphsurgeon.importers.onnx_importer import (
    OnnxImporter,
    get_onnx_tensor_dtype,
    get_onnx_tensor_shape,
    get_onnx_tensor_type,
)
from onnx_graphsurgeon.logger import G_LOGGER

from surgeon.errors import ModelLoadError
from surgeon.graph.names import node_label
from surgeon.graph.quiet import quiet_gs
from surgeon.graph.walk import node_domain, proto_graphs, walk_graphs
from surgeon.io import fast_import
from surgeon.io.export import function_fingerprint
from surgeon.io.external import external_problems, is_external, lazy_external
from surgeon.io.model import Model, Origin, tensor_signature

# gs logs every graph it imports at INFO/WARNING; surgeon reports changes itself.
G_LOGGER.severity = G_LOGGER.ERROR
logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)


def load(source: str | Path | onnx.ModelProto, *, base_dir: str | Path | None = None) -> Model:
    """Load a model for editing. Weights in external data stay on disk.

    ``source`` is a path or a ``ModelProto`` (which is copied, never changed).
    ``base_dir`` is where external-data files are looked up for a ModelProto
    (for a path, the model's folder).
    """
    if isinstance(source, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
        folder = Path(base_dir) if base_dir is not None else None
        return _build(proto, folder, None)
    path = Path(source)
    proto = read_proto(path)
    try:
        return _build(proto, path.parent, path)
    except UnicodeDecodeError as exc:  # protobuf decodes string fields lazily, on first access
        raise ModelLoadError(f"{path} is not a valid ONNX model: a text field is not UTF-8 ({exc.reason})",
                             hint="the file may be corrupt; re-export it") from exc


def read_proto(path: Path) -> onnx.ModelProto:
    """Read and sanity-check an ONNX file, without its external data."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}",
                             hint="check the path; it is relative to the current directory")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not an ONNX model file",
                             hint="give the .onnx file inside it")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}",
                             hint="check the file's permissions") from exc
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ModelLoadError(
            f"{path} is not a valid ONNX model: the protobuf cannot be parsed ({exc})",
            hint="the file may be truncated or corrupt, or not an ONNX model at all; re-export it",
        ) from exc
    if not proto.HasField("graph") or proto.ir_version <= 0:
        what = "is empty" if not data else "has no graph or IR version"
        raise ModelLoadError(f"{path} is not an ONNX model: the file {what}",
                             hint="is this the right file? ONNX models are written by torch.onnx.export, "
                                  "onnx.save and similar tools")
    return proto


def from_proto(proto: onnx.ModelProto, *, base_dir: Path | None = None,
               source_path: Path | None = None) -> Model:
    """Build a Model from a proto this module may keep and edit (no copy)."""
    return _build(proto, base_dir, source_path)


def _check_text(proto: onnx.ModelProto, where: str) -> None:
    """Refuse text fields that are not UTF-8 where protobuf hands them over as bytes without
    complaint (opset domains, node ops and names): everything after the load assumes text."""
    fields = [o.domain for o in proto.opset_import]
    for g in proto_graphs(proto.graph):
        for n in g.node:
            fields += (n.op_type, n.domain, n.name)
    if not all(isinstance(f, str) for f in fields):
        bad = next(f for f in fields if not isinstance(f, str))
        raise ModelLoadError(f"{where} is not a valid ONNX model: a text field is not UTF-8 ({bad!r})",
                             hint="the file may be corrupt; re-export it")


def _build(proto: onnx.ModelProto, folder: Path | None, source_path: Path | None) -> Model:
    paused = gc.isenabled()
    gc.disable()  # the graph's objects all live as long as the model: collections would only rescan them
    try:
        return _build_model(proto, folder, source_path)
    finally:
        if paused:
            gc.enable()


def _build_model(proto: onnx.ModelProto, folder: Path | None, source_path: Path | None) -> Model:
    where = str(source_path) if source_path else "the model"
    _check_text(proto, where)
    has_external = _has_external(proto)
    if has_external:
        if folder is None:
            raise ModelLoadError(f"{where} keeps weights in external data, but no folder to read them from was given",
                                 hint="pass base_dir= (the folder of the .onnx file) to surgeon.load")
        problems = external_problems(proto, folder)
        if problems:
            raise ModelLoadError(
                f"{where}: external data cannot be read:\n  " + "\n  ".join(problems[:10])
                + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""),
                hint="keep the weight files next to the .onnx file, with the names it was saved with",
            )
    # None: an untested gs version, or a model it cannot build. Well formed: every input defined
    # before its node, so structure_problems has nothing to find (it walks the protobuf again).
    graph, well_formed = fast_import.import_checked(proto)
    if not well_formed:
        broken = structure_problems(proto.graph)
        if broken:
            raise ModelLoadError(
                f"{where} has a broken graph:\n  " + "\n  ".join(broken[:10])
                + (f"\n  ... and {len(broken) - 10} more" if len(broken) > 10 else ""),
                hint="no runtime can execute it; re-export the model, or fix the graph with onnx / "
                     "onnx-graphsurgeon",
            )
    try:
        if graph is None:
            with quiet_gs():
                graph = gs.import_onnx(proto)
    except Exception as exc:  # gs fails in many ways on malformed graphs; all are input problems
        raise ModelLoadError(
            f"{where} cannot be imported: {type(exc).__name__}: {exc}",
            hint="the model is malformed; check it with onnx.checker.check_model or re-export it",
        ) from exc
    origin = Origin(graph_opset=graph.opset,
                    graph_import_domains={(o.domain, o.version) for o in graph.import_domains or []})
    _record_graph(proto.graph, graph, origin, folder if has_external else None)
    for fproto, func in zip(proto.functions, graph.functions):
        origin.functions[id(func)] = (func, fproto, function_fingerprint(func))
        for n in fproto.node:
            origin.used_domains.add(n.domain if n.domain != "ai.onnx" else "")
    # The template is the proto without graph and functions: copying field by
    # field (not CopyFrom + clear) never duplicates the weights in memory.
    template = onnx.ModelProto()
    for fd in proto.DESCRIPTOR.fields:
        if fd.name in ("graph", "functions"):
            continue
        if _is_repeated(fd):
            getattr(template, fd.name).extend(getattr(proto, fd.name))
        elif proto.HasField(fd.name):
            value = getattr(proto, fd.name)
            if fd.message_type is not None:
                getattr(template, fd.name).CopyFrom(value)
            else:
                setattr(template, fd.name, value)
    template.graph.name = proto.graph.name
    return Model(graph, template, base_dir=folder if has_external else None,
                 source_path=source_path, origin=origin)


def _io_duplicates(gproto: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """value_info entries that repeat a graph input/output name.

    gs lets such an entry (often shapeless) replace the input's/output's own
    declared type; :func:`_record_graph` restores the declared type, and the
    exporter writes these entries back as they were.
    """
    io_names = {v.name for v in gproto.input} | {v.name for v in gproto.output}
    return [vi for vi in gproto.value_info if vi.name in io_names]


def _record_graph(gproto: onnx.GraphProto, graph: gs.Graph, origin: Origin,
                  external_dir: Path | None) -> None:
    """Record what gs drops from one graph, then recurse into its subgraphs."""
    gid = id(graph)
    origin.io_value_info[gid] = _io_duplicates(gproto)
    origin.graphs[gid] = (graph, list(gproto.metadata_props), list(gproto.quantization_annotation))

    # Declared types of graph inputs/outputs win over anything gs merged in.
    for vi, t in _io_pairs(gproto, graph):
        if vi.type.ByteSize() > 0 and isinstance(t, gs.Variable):
            t.dtype = get_onnx_tensor_dtype(vi)
            t.shape = get_onnx_tensor_shape(vi)
            t.type = get_onnx_tensor_type(vi)
        origin.value_info[id(t)] = (t, vi, tensor_signature(t))

    # Initializers: where they were declared, in which order, which were also inputs.
    init_names = [i.name for i in gproto.initializer] + [s.values.name for s in gproto.sparse_initializer]
    origin.initializer_order[gid] = {name: i for i, name in enumerate(init_names)}
    init_set = set(init_names)
    real_before = 0
    as_inputs = []
    for vi in gproto.input:
        if vi.name in init_set:
            as_inputs.append((vi.name, real_before))
        else:
            real_before += 1
    if as_inputs:
        origin.initializer_inputs[gid] = as_inputs
    # gs keeps initializers in the subgraph-local tensor map of its importer only;
    # the ones nodes use are reachable from the nodes, the rest we keep here.
    used = {t.name: t for n in graph.nodes for t in n.inputs if isinstance(t, gs.Constant)}
    used.update({t.name: t for t in graph.outputs if isinstance(t, gs.Constant)})
    unused, owned = [], []
    captured = None
    for init in list(gproto.initializer) + [s.values for s in gproto.sparse_initializer]:
        const = used.get(init.name)
        if const is None:
            if captured is None:
                captured = _captured_constants(graph)
            const = captured.get(init.name)
        if const is None:
            const = OnnxImporter.import_tensor(init)
            unused.append(const)
        origin.owner[id(const)] = (const, graph)
        owned.append(const)
    if unused:
        origin.unused_initializers[gid] = unused

    # value_info entries, for intermediate tensors and initializers alike
    # (exporters that write none, like the legacy torch one, skip the tensor walk).
    if len(gproto.value_info):
        tensors = graph.tensors()
        for const in owned:
            tensors.setdefault(const.name, const)
        origin.value_info_order[gid] = {vi.name: i for i, vi in enumerate(gproto.value_info)}
        for vi in gproto.value_info:
            t = tensors.get(vi.name)
            if t is not None and id(t) not in origin.value_info:
                origin.value_info[id(t)] = (t, vi, tensor_signature(t))

    if external_dir is not None:
        _make_lazy_external(graph, owned, external_dir)

    # Nodes: extras gs drops, then recurse into subgraphs.
    # (Each protobuf field is read once per node: every access builds a new wrapper.)
    origin.used_domains.update(node_domain(node) for node in {(n.domain or ""): n for n in graph.nodes}.values())
    for nproto, node in zip(gproto.node, graph.nodes):
        attributes = nproto.attribute
        skipped = [a for a in attributes if a.name not in node.attrs] if len(attributes) else []
        doc = nproto.doc_string
        meta = nproto.metadata_props
        if doc or len(meta) or skipped:
            origin.nodes[id(node)] = (node, doc, list(meta), skipped)
        if len(attributes):
            for attr in attributes:
                if attr.type == onnx.AttributeProto.GRAPH and isinstance(node.attrs.get(attr.name), gs.Graph):
                    _record_graph(attr.g, node.attrs[attr.name], origin, external_dir)


def _captured_constants(graph: gs.Graph) -> dict[str, gs.Constant]:
    """Constants that nodes of ``graph``'s subgraphs read (an initializer only a
    subgraph uses is reachable from there only)."""
    found: dict[str, gs.Constant] = {}
    for g in walk_graphs(graph):
        if g is not graph:
            for n in g.nodes:
                for t in n.inputs:
                    if isinstance(t, gs.Constant):
                        found.setdefault(t.name, t)
    return found


def _io_pairs(gproto: onnx.GraphProto, graph: gs.Graph):
    inputs = {t.name: t for t in graph.inputs}
    for vi in gproto.input:
        if vi.name in inputs:
            yield vi, inputs[vi.name]
    for vi, t in zip(gproto.output, graph.outputs):
        yield vi, t


def _make_lazy_external(graph: gs.Graph, owned: list[gs.Constant], folder: Path) -> None:
    """Swap gs's lazy values of external tensors for ones that read from ``folder``."""
    consts = list(owned)
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Constant):
                consts.append(value)
    for c in consts:
        values = c._values
        if type(values).__name__ == "LazyValues" and is_external(values.tensor):
            c._values = lazy_external(values.tensor, folder)


def _has_external(proto: onnx.ModelProto) -> bool:
    """``any(is_external(t) for t in iter_model_tensors(proto))``, without a generator per node:
    most nodes of a large graph have no attributes, and only attributes hold tensors."""

    def in_graph(g: onnx.GraphProto) -> bool:
        if any(is_external(t) for t in g.initializer):
            return True
        if any(is_external(s.values) or is_external(s.indices) for s in g.sparse_initializer):
            return True
        return any(in_attributes(attributes) for attributes in map(_attributes, g.node) if len(attributes))

    def in_attributes(attributes) -> bool:
        for a in attributes:
            if a.HasField("t") and is_external(a.t):
                return True
            if any(is_external(t) for t in a.tensors):
                return True
            if a.HasField("g") and in_graph(a.g):
                return True
            if any(in_graph(sub) for sub in a.graphs):
                return True
        return False

    return in_graph(proto.graph) or any(in_attributes(n.attribute) for f in proto.functions for n in f.node)


def _attributes(node: onnx.NodeProto):
    return node.attribute


def _is_repeated(fd) -> bool:
    # protobuf >= 5 (upb) has is_repeated; older ones only label.
    return fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED


def structure_problems(gproto: onnx.GraphProto, outer: tuple[Collection[str], ...] = ()) -> list[str]:
    """Dangling inputs and cycles: defects that make a graph unrunnable anywhere.

    Unlike checker findings (a missing output shape, an unregistered plugin op),
    which surgeon tolerates when the input already had them, these are refused
    on load: no edit can be verified on a graph that cannot run. ``outer``: the
    names the enclosing graphs provide, one collection per graph (looked up in
    turn, never merged: a copy per subgraph made graphs with many ``If`` bodies
    quadratic).
    """
    problems = []
    nodes = list(gproto.node)  # protobuf builds a new wrapper per access: read each field once
    inputs = [list(n.input) for n in nodes]
    local = {v.name for v in gproto.input} | {t.name for t in gproto.initializer} \
        | {s.values.name for s in gproto.sparse_initializer} | {""}

    def declared(name: str) -> bool:
        return name in local or any(name in scope for scope in outer)

    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    scope: tuple[Collection[str], ...] | None = None
    in_order = True  # every edge goes forward: then there is no cycle (the usual case; no Kahn pass)
    for j, (n, ins) in enumerate(zip(nodes, inputs)):
        for name in ins:
            if name in local or (outer and declared(name)):
                continue
            k = producer.get(name)
            if k is None:
                problems.append(f"{node_label(n)} in graph '{gproto.name}' reads '{name}', "
                                "which no node, graph input or initializer provides")
            elif k >= j:
                in_order = False
        attributes = n.attribute
        if len(attributes):
            for a in attributes:
                if a.type == onnx.AttributeProto.GRAPH:
                    if scope is None:
                        scope = (*outer, local, producer)
                    problems += structure_problems(a.g, scope)
    for out in gproto.output:
        if not declared(out.name) and out.name not in producer:
            problems.append(f"graph output '{out.name}' of graph '{gproto.name}' is produced by nothing")
    if in_order:
        return problems
    # Kahn's algorithm over the edges inside this graph: what never becomes ready is on a cycle.
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for j, ins in enumerate(inputs):
        feeding = {producer[i] for i in ins if i in producer and not declared(i)}
        waiting[j] = len(feeding)
        for k in feeding:
            readers.setdefault(k, []).append(j)
    ready = [j for j, w in enumerate(waiting) if w == 0]
    done = 0
    while ready:
        j = ready.pop()
        done += 1
        for k in readers.get(j, ()):
            waiting[k] -= 1
            if waiting[k] == 0:
                ready.append(k)
    if done < len(nodes):
        stuck = [nodes[j].name or nodes[j].op_type for j, w in enumerate(waiting) if w > 0]
        problems.append(f"graph '{gproto.name}' has a cycle through node(s) " + ", ".join(stuck[:5])
                        + (" ..." if len(stuck) > 5 else ""))
    return problems
