"""Saving: validate the exported model and write it atomically.

Files are first written into a private temporary folder beside the target
(same file system, so the final ``rename`` is atomic), checked there with
``onnx.checker`` by path (so external data is found next to the model), and
only then moved into place: a failed save leaves neither a half-written
model nor stray temporary files, and the input is never overwritten unless
the caller says ``in_place=True``.

How much is checked is the caller's choice (``check=``, ``surgeon apply
--check``), a property of the run, never of a recipe:

- ``"full"`` (default): ``onnx.checker.check_model(path, full_check=True)``
  on the written file, which adds strict shape and type inference to the
  structural rules below, then surgeon's structure checks.
- ``"basic"``: ``onnx.checker.check_model(path, full_check=False)`` (IR
  version and opset imports, every node against its operator schema: known
  op, input and output counts, attribute names and types; SSA form and
  topological order of every graph; initializers; local functions; no
  shape or type inference), then surgeon's structure checks (every graph,
  subgraphs included): every node input and graph output is produced by a
  node, a graph input, an initializer or an outer scope; no cycles; each
  tensor name is defined once; node names are unique.
- ``"none"``: nothing beyond writing; a warning says so.

At both checking levels only what the edit introduced fails: checker
findings the input model already had at that level become warnings, as
before, and duplicate names it already had pass silently.
"""

from __future__ import annotations

import operator
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.checker
import onnx_graphsurgeon as gs

from surgeon.errors import ExportError
from surgeon.graph.collector import long_lived
from surgeon.graph.names import node_label
from surgeon.graph.ops import default_opset, is_plugin_op
from surgeon.graph.walk import proto_graphs
from surgeon.io.export import to_proto
from surgeon.io.external import (
    ExternalValues,
    copy_range,
    external_location,
    external_ref,
    is_external,
    iter_model_tensors,
    read_inline,
    set_external,
    spill_location,
)
from surgeon.io.load import structure_problems
from surgeon.io.model import Model
from surgeon.progress import Progress, Task, task

TWO_GIB = 2**31
# Inline tensors at least this big go to the data file when a model keeps
# external data (onnx.save's own default threshold).
EXTERNAL_THRESHOLD = 1024
ALIGN = 4096  # data-file offsets aligned for mmap-friendly readers
# Location of a weight held in memory whose bytes _write_external writes straight from numpy.
_FROM_MEMORY = "surgeon-save-from-memory"
PLUGIN_DOMAIN = "surgeon.plugin"
CHECK_LEVELS = ("full", "basic", "none")
NOT_CHECKED = ("the model was not checked (check level 'none'): neither the ONNX checker nor surgeon's "
               "structure checks ran on it")


@dataclass
class SaveResult:
    path: Path
    data_path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    check: str = "full"
    """The check level the written model passed ("full", "basic" or "none")."""
    check_seconds: float = 0.0
    """How long checking took."""


def check_level(check: str | bool) -> str:
    """``check=`` as one of :data:`CHECK_LEVELS` (``True``/``False``, the old values, mean "full"/"none")."""
    if check is True or check is False:
        return "full" if check else "none"
    if check not in CHECK_LEVELS:
        raise ValueError(f"check={check!r}: expected one of " + ", ".join(repr(c) for c in CHECK_LEVELS))
    return str(check)


def default_output_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.surgeon.onnx`` beside it."""
    p = Path(model_path)
    stem = p.name[:-5] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.surgeon.onnx")


class Staged:
    """An exported, checked model waiting in a private folder beside its target.

    :meth:`commit` moves it into place (weights first, then the model, each
    with an atomic rename); :meth:`discard` (or leaving the ``with`` block
    without committing) deletes it. Between the two, callers can run more
    checks on the staged files, e.g. numeric verification.
    """

    def __init__(self, folder: Path, target: Path, model_path: Path, data_path: Path | None,
                 warnings: list[str], model: Model, written: dict[str, onnx.TensorProto],
                 check: str = "full", check_seconds: float = 0.0) -> None:
        self.folder, self.target = folder, target
        self.model_path, self.data_path = model_path, data_path
        self.warnings = warnings
        self.check, self.check_seconds = check, check_seconds
        self.model = model
        self.written = written  # tensor name -> its proto as written to the data file

    def commit(self) -> SaveResult:
        data_target = None
        try:
            if self.data_path is not None:
                data_target = self.target.with_name(self.data_path.name)
                # In place, the new data file replaces the one the model reads its
                # weights from: the model must then read the new file, at new offsets.
                replaced = data_target.exists() and any(_same(data_target, f) for f in _source_data_files(self.model))
                os.replace(self.data_path, data_target)
                if replaced:
                    _repoint(self.model, self.written, data_target.parent)
            os.replace(self.model_path, self.target)
        except OSError as exc:
            raise ExportError(f"cannot write {self.target}: {exc.strerror or exc}",
                              hint="write to a folder you can write to, with -o") from exc
        finally:
            self.discard()
        return SaveResult(self.target, data_target, self.warnings, self.check, self.check_seconds)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def stage(
    model: Model,
    path: str | Path,
    *,
    in_place: bool = False,
    check: str | bool = "full",
    external_data: bool | None = None,
    folder: str | Path | None = None,
    progress: Progress | None = None,
) -> Staged:
    """Export ``model`` for ``path`` into a private temporary folder and check it there.

    The folder is created beside ``path`` (same file system: the commit is a
    rename) unless ``folder`` names another parent (a dry run uses the
    system's temporary folder, so nothing appears beside the target).
    ``check`` is the level of checking (module docstring); ``progress`` hears
    of the checking stage.
    """
    with long_lived():  # exporting and checking allocate a lot; the model's objects need no rescans
        return _stage(model, path, in_place, check, external_data, folder, progress)


def _stage(model: Model, path: str | Path, in_place: bool, check: str | bool, external_data: bool | None,
           folder: str | Path | None, progress: Progress | None) -> Staged:
    level = check_level(check)
    target = Path(path)
    if not str(path) or target.is_dir() or str(path).endswith(("/", "\\")):
        raise ExportError(f"cannot write the model to {str(path)!r}: it is a folder, not a file name",
                          hint="give the output file's name, e.g. -o out/model.onnx")
    refuse_overwrites(model, target, in_place)
    parent = Path(folder) if folder is not None else target.parent
    if not parent.is_dir():
        raise ExportError(f"cannot write {target}: folder {parent} does not exist",
                          hint="create the folder first, or choose another output path with -o")
    use_external = external_data
    if use_external is None and model.has_external_data:
        use_external = True
    in_memory: dict[str, np.ndarray] = {}
    proto = to_proto(model, initializer=_deferred(in_memory) if use_external else None)
    if use_external is None:
        use_external = _inline_size(proto) >= TWO_GIB - (64 << 20)
    if not use_external:
        # Weights a pass computed wait in a spill file (see io/external.py); inline, they come back.
        for t in iter_model_tensors(proto):
            if is_external(t) and spill_location(t) is not None:
                read_inline(t, None)
    if not os.access(target.parent, os.W_OK):  # a dry run would otherwise "succeed" here
        raise ExportError(f"cannot write {target}: folder {target.parent} is not writable",
                          hint="write to a folder you can write to, with -o")
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=".surgeon-tmp-", dir=parent))
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror or exc} in {parent}",
                          hint="write to a folder you can write to, with -o") from exc
    try:
        tmp_model = tmpdir / target.name
        data_path = None
        written: dict[str, onnx.TensorProto] = {}
        if use_external:
            data_path = tmpdir / (target.name + ".data")
            written = _write_external(proto, model, data_path, data_path.name, in_memory)
            if not written:
                data_path.unlink()  # every weight is small or folded away: no empty data file
                data_path = None
        _write_proto(proto, tmp_model)
        found, seconds = _check_level(tmp_model, model, proto, level, progress)
    except OSError as exc:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}",
                          hint="check the free disk space and that the folder is writable") from exc
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    return Staged(tmpdir, target, tmp_model, data_path, found, model, written, level, seconds)


def save(
    model: Model,
    path: str | Path,
    *,
    in_place: bool = False,
    check: str | bool = "full",
    external_data: bool | None = None,
    progress: Progress | None = None,
) -> SaveResult:
    """Validate ``model`` and write it to ``path`` atomically.

    ``external_data``: None keeps the input's choice (and switches to external
    data for models over 2 GiB); True/False forces it. The data file is
    ``<path>.data``. ``check``: "full" (default), "basic" or "none" (see the
    module docstring). Checker findings that the input model already had are
    returned as warnings, not errors: only what the edit introduced fails.
    """
    with task(progress, f"writing {Path(path).name}"):
        staged = stage(model, path, in_place=in_place, check=check, external_data=external_data,
                       progress=progress)
    with staged:
        return staged.commit()


def refuse_overwrites(model: Model, target: Path, in_place: bool) -> None:
    src = model.source_path
    if in_place:
        return
    if src is not None and target.exists() and _same(target, src):
        raise ExportError(
            f"refusing to overwrite the input model {src}",
            hint="write to another file with -o, or pass --in-place (in_place=True) to replace it",
        )
    if model.base_dir is not None:
        data = target.with_name(target.name + ".data")
        if data.exists() and any(_same(data, f) for f in _source_data_files(model)):
            raise ExportError(
                f"refusing to overwrite {data}: the input model reads its weights from it",
                hint="choose another output name, or pass --in-place (in_place=True)",
            )


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _constants(model: Model):
    """Every gs Constant of the model: initializers (used or not) and tensor attributes, in all graphs."""
    for g in model.graphs():
        for t in g.tensors().values():
            if isinstance(t, gs.Constant):
                yield t
        for node in g.nodes:
            for value in node.attrs.values():
                if isinstance(value, gs.Constant):
                    yield value
    for consts in model.origin.unused_initializers.values():
        yield from consts


def _source_data_files(model: Model) -> set[Path]:
    """The files the model's lazy weights are read from."""
    return {external_ref(c._values.tensor, c._values.base_dir).path
            for c in _constants(model) if isinstance(c._values, ExternalValues)}


def _repoint(model: Model, written: dict[str, onnx.TensorProto], folder: Path) -> None:
    """Make the model's lazy weights read the data file just written (an in-place save replaced theirs)."""
    for const in _constants(model):
        values = const._values
        if isinstance(values, ExternalValues) and const.name in written:
            del values.tensor.external_data[:]
            values.tensor.external_data.extend(written[const.name].external_data)
            values.base_dir = folder
    model.base_dir = folder


def _inline_size(proto: onnx.ModelProto) -> int:
    """Bytes the weights would take inline (spilled ones included: they would be inlined)."""
    size = 0
    for t in iter_model_tensors(proto):
        if is_external(t) and spill_location(t) is not None:
            size += external_ref(t, Path(".")).length or 0
        else:
            size += len(t.raw_data)
    return size


def _deferred(in_memory: dict[str, np.ndarray]):
    """An exporter hook: a large weight held in memory (a pass folded or converted it) is
    exported as a reference, its array kept in ``in_memory`` for _write_external to write.
    Through the proto it would be copied twice (gs's tobytes, the proto) while the array
    is still held: 1.8 GB at once for a 596 MB weight."""
    def initializer(c: gs.Constant) -> onnx.TensorProto | None:
        values = c._values
        if (not isinstance(values, np.ndarray) or values.nbytes < EXTERNAL_THRESHOLD or c.name in in_memory
                or values.dtype.kind not in "fiub" or values.dtype.byteorder == ">" or not np.little_endian
                or getattr(c, "export_dtype", values.dtype) != values.dtype):
            return None
        t = onnx.TensorProto(name=c.name, data_type=onnx.helper.np_dtype_to_tensor_dtype(values.dtype),
                             dims=values.shape)
        set_external(t, _FROM_MEMORY, 0, values.nbytes)
        in_memory[c.name] = values
        return t
    return initializer


def _write_external(proto: onnx.ModelProto, model: Model, data_file: Path,
                    location: str, in_memory: dict[str, np.ndarray] | None = None) -> dict[str, onnx.TensorProto]:
    """Move every external or large tensor into ``data_file``, streaming external sources
    and writing ``in_memory`` arrays (see _deferred) without copies; returns the tensors
    that went there, by name."""
    base = model.base_dir
    moved: dict[str, onnx.TensorProto] = {}
    with open(data_file, "wb") as out:
        for t in iter_model_tensors(proto):
            if in_memory and t.name in in_memory and is_external(t) and external_location(t) == _FROM_MEMORY:
                values = np.ascontiguousarray(in_memory[t.name])
                _pad(out)
                offset = out.tell()
                out.write(values.reshape(-1).view(np.uint8).data)  # no copy
                set_external(t, location, offset, values.nbytes)
                moved[t.name] = t
            elif is_external(t):
                if base is None and spill_location(t) is None:
                    raise ExportError(f"tensor '{t.name}' refers to external data, but the model has no "
                                      "folder to read it from",
                                      hint="load the model from its file, or pass base_dir= to surgeon.load")
                ref = external_ref(t, base if base is not None else Path("."))
                _pad(out)
                offset = out.tell()
                length = copy_range(ref.path, ref.offset, ref.length, out)
                set_external(t, location, offset, length)
                moved[t.name] = t
            elif t.HasField("raw_data") and len(t.raw_data) >= EXTERNAL_THRESHOLD:
                _pad(out)
                offset = out.tell()
                out.write(t.raw_data)
                set_external(t, location, offset, len(t.raw_data))
                moved[t.name] = t
    return moved




def _pad(f) -> None:
    pos = f.tell()
    if pos % ALIGN:
        f.write(b"\0" * (ALIGN - pos % ALIGN))


def _write_proto(proto: onnx.ModelProto, path: Path) -> None:
    try:
        data = proto.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GiB
        raise ExportError(f"the model is too large to serialize ({exc})",
                          hint="save with external_data=True") from exc
    with open(path, "wb") as f:
        f.write(data)


# -- validation --------------------------------------------------------------------


def _check_level(path: Path, model: Model, written: onnx.ModelProto, level: str,
                 progress: Progress | None) -> tuple[list[str], float]:
    """Check the written file at ``level``: (warnings, seconds it took)."""
    if level == "none":
        return [NOT_CHECKED], 0.0
    start = time.perf_counter()
    with task(progress, f"checking ({level})"):
        found = _check(path, model, written, full=level == "full", progress=progress)
        _name_check(model, written)
    return found, time.perf_counter() - start


def _check(path: Path, model: Model, written: onnx.ModelProto, *, full: bool = True,
           progress: Progress | None = None) -> list[str]:
    """Run the ONNX checker on the written file; tolerate what the input already had.

    The checker stops at its first finding, so an input finding the output
    repeats would hide anything after it. In that case every node is also
    checked on its own, and the graph's wiring too: only findings the input
    did not have fail the save. ``written`` is the proto just serialized to
    ``path``: it is not read back from disk.
    """
    problem = _checker_problem(path, path.parent, written, full=full)
    if problem is None:
        # Nothing for structure_problems to find: the checker refuses a node input that no earlier
        # node, graph input, initializer or outer scope provides (so unsorted graphs and cycles),
        # and a graph output no node produces, in every graph; a second walk would cost as much
        # as the checker itself on a 100,000-node graph.
        if full:
            _check_past_declared_ops(model, written)
        return []
    source = model.source_path if model.source_path is not None and model.source_path.exists() else None
    before = _checker_problem(source, path.parent, full=full) if source is not None else None
    if before is not None and _same_finding(before, problem):
        source_proto = onnx.load(str(source), load_external_data=False)
        with task(progress, "checking each node", total=_node_count(written) + _node_count(source_proto),
                  unit="node") as nodes:
            new = _node_findings(written, nodes) - _node_findings(source_proto, nodes)
        new |= set(structure_problems(written.graph))
        if not new:
            return [f"the ONNX checker rejects the model, as it already rejected the input: {problem}"]
        problem = sorted(new)[0]
        before = None
    raise ExportError(
        f"the edited model fails the ONNX checker: {problem}",
        hint="the recipe introduced this (the input model passed the checker"
             + ("" if before is None else " with a different finding") + "); "
             "check the steps that touched the names above",
    )


def _check_past_declared_ops(model: Model, written: onnx.ModelProto) -> None:
    """The full check past custom ops the recipe (or ``surgeon.declare_op``) declared.

    onnx's checker knows nothing of a custom op, so the types and shapes behind one go
    unchecked. With declarations active, shape inference runs again through them with type
    checks on, so a tensor behind a declared op that a node cannot take (float16 into a
    float32 Conv) fails the save, naming the node.
    """
    from surgeon.errors import PassError
    from surgeon.graph import custom_ops
    from surgeon.graph.shapes import export_for_inference, infer

    declared = custom_ops.active()
    if not declared or not any((custom_ops.normal_domain(n.domain), n.op_type) in declared
                               for g in proto_graphs(written.graph) for n in g.node):
        return
    try:
        infer(export_for_inference(model, stale=False), errors="raise")
    except PassError as exc:
        raise ExportError(f"the edited model fails the full check past its declared custom ops: {exc.message}",
                          hint="the custom_ops: declarations and the model disagree: check the declared dtype "
                               "and shape of the ops above, or the steps that changed what they feed") from None


def _same_finding(a: str, b: str) -> bool:
    return a.splitlines()[0] == b.splitlines()[0]


def _node_count(proto: onnx.ModelProto) -> int:
    return sum(len(g.node) for g in proto_graphs(proto.graph))


def _node_findings(proto: onnx.ModelProto, progress: Task | None = None) -> set[str]:
    """What ``onnx.checker.check_node`` says of each node, in every graph (plugin ops skipped)."""
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = proto.ir_version
    ctx.opset_imports = {o.domain: o.version for o in proto.opset_import}
    local = {(f.domain, f.name) for f in proto.functions}
    function_names = {f.name for f in proto.functions}
    found: set[str] = set()
    for g in proto_graphs(proto.graph):
        for i, n in enumerate(g.node, 1):
            if progress is not None and i % 1000 == 0:
                progress.advance(1000)
            if is_plugin_op(n.domain, n.op_type, function_names) or (n.domain, n.op_type) in local:
                continue
            try:
                onnx.checker.check_node(n, ctx)
            except onnx.checker.ValidationError as exc:
                found.add(f"{node_label(n)}: {str(exc).strip().splitlines()[0]}")
        if progress is not None:
            progress.advance(len(g.node) % 1000)
    return found


def _refuse_new(problems: list[str]) -> None:
    """Fail on the first of ``problems``: defects the recipe introduced."""
    if problems:
        raise ExportError(f"the edited model fails surgeon's structure checks: {problems[0]}",
                          hint="the recipe introduced this (the input model did not have it); "
                               "check the steps that touched the names above")


def _name_check(model: Model, written: onnx.ModelProto) -> None:
    """Node names used twice in one graph and tensor names defined twice: refused when the
    edit made them, tolerated (silently, as the checker's own rules ignore node names) when
    the input had them already."""
    found = _duplicate_names(written)
    if not found:
        return
    source = model.source_path if model.source_path is not None and model.source_path.exists() else None
    had = set(_duplicate_names(onnx.load(str(source), load_external_data=False))) if source else set()
    _refuse_new([f for f in found if f not in had])


def _duplicate_names(proto: onnx.ModelProto) -> list[str]:
    """Node names used twice in one graph, tensor names defined twice in one graph, as findings."""
    found: list[str] = []
    for g in proto_graphs(proto.graph):
        nodes = list(g.node)  # each protobuf field read once per node: every access builds a wrapper
        names = [name for name in map(_name, nodes) if name]
        outputs = [o for outs in map(_outputs, nodes) for o in outs if o]
        declared = {v.name for v in g.input} | {t.name for t in g.initializer}
        if len(set(names)) == len(names) and len(set(outputs)) == len(outputs) and declared.isdisjoint(outputs):
            continue  # the usual case, in C-level set operations; the loops below word the findings
        seen: set[str] = set()
        for n in nodes:
            if n.name in seen and n.name:
                found.append(f"node name '{n.name}' is used by more than one node in graph '{g.name}'")
            seen.add(n.name)
        defined = {v.name for v in g.input} | {t.name for t in g.initializer}  # IR 3 lists both
        for n in nodes:
            for o in n.output:
                if o in defined and o:
                    found.append(f"tensor '{o}' is defined more than once in graph '{g.name}' "
                                 f"(again by {node_label(n)})")
                defined.add(o)
    return list(dict.fromkeys(found))


_name = operator.attrgetter("name")
_outputs = operator.attrgetter("output")


def _checker_problem(path: Path, scratch: Path, proto: onnx.ModelProto | None = None, *,
                     full: bool = True) -> str | None:
    """The checker's complaint about a model file, or None if it passes.

    Plugin ops (TensorRT's ``EfficientNMS_TRT``...) live in the default
    domain but are not ONNX ops; they are checked as ops of a custom domain,
    so that everything else is still checked in full. That marked copy is
    written into ``scratch`` (a folder surgeon owns, never the input's), with
    the model's external data files linked (or copied) beside it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if proto is None:  # the proto of the file at ``path``, when the caller has it in memory
            proto = onnx.load(str(path), load_external_data=False)
        target, cleanup = path, None
        marked = _marked_for_checking(proto)
        if marked is not None:
            if path.parent == scratch:
                # Staged output: the marked copy goes beside it and finds the same data file.
                target = cleanup = scratch / f".plugins-check-{path.name}"
            else:
                # The input, in a folder that is not ours: a private copy with its weights
                # (copied: onnx refuses hard-linked and symlinked data files).
                folder = Path(tempfile.mkdtemp(prefix="plugins-check-", dir=scratch))
                _copy_external_files(proto, path.parent, folder)
                target = folder / path.name
                cleanup = folder
            target.write_bytes(marked.SerializeToString())
        try:
            onnx.checker.check_model(str(target), full_check=full)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            return str(exc).strip()
        finally:
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True) if cleanup.is_dir() else cleanup.unlink(missing_ok=True)
    return None


def _copy_external_files(proto: onnx.ModelProto, source: Path, folder: Path) -> None:
    locations = {external_location(t) for t in iter_model_tensors(proto) if is_external(t)} - {""}
    for location in locations:
        dst = folder / location
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / location, dst)


def _plugin_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    if default_opset(proto.opset_import) is None:
        return []
    function_names = {f.name for f in proto.functions}
    return [n for g in proto_graphs(proto.graph) for n in g.node
            if is_plugin_op(n.domain, n.op_type, function_names)]


def _marked_for_checking(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``proto`` with its plugin ops moved to a placeholder domain, or None if it has none."""
    if not _plugin_nodes(proto):
        return None
    marked = onnx.ModelProto()
    marked.CopyFrom(proto)
    for n in _plugin_nodes(marked):
        n.domain = PLUGIN_DOMAIN
    marked.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return marked
