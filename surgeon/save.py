"""Saving: validate the exported model and write it atomically.

Files are first written into a private temporary folder beside the target
(same file system, so the final ``rename`` is atomic), checked there with
``onnx.checker`` by path (so external data is found next to the model), and
only then moved into place: a failed save leaves neither a half-written
model nor stray temporary files, and the input is never overwritten unless
the caller says ``in_place=True``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx.checker
import onnx.defs

from surgeon.errors import ExportError
from surgeon.export import to_proto
from surgeon.external import copy_range, external_ref, is_external, iter_model_tensors, set_external
from surgeon.model import Model

TWO_GIB = 2**31
# Inline tensors at least this big go to the data file when a model keeps
# external data (onnx.save's own default threshold).
EXTERNAL_THRESHOLD = 1024
ALIGN = 4096  # data-file offsets aligned for mmap-friendly readers
PLUGIN_DOMAIN = "surgeon.plugin"


@dataclass
class SaveResult:
    path: Path
    data_path: Path | None = None
    warnings: list[str] = field(default_factory=list)


def default_output_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.surgeon.onnx`` beside it."""
    p = Path(model_path)
    stem = p.name[:-5] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.surgeon.onnx")


def save(
    model: Model,
    path: str | Path,
    *,
    in_place: bool = False,
    check: bool = True,
    external_data: bool | None = None,
) -> SaveResult:
    """Validate ``model`` and write it to ``path`` atomically.

    ``external_data``: None keeps the input's choice (and switches to external
    data for models over 2 GiB); True/False forces it. The data file is
    ``<path>.data``. Checker findings that the input model already had are
    returned as warnings, not errors: only what the edit introduced fails.
    """
    target = Path(path)
    _refuse_overwrites(model, target, in_place)
    proto = to_proto(model)
    use_external = external_data
    if use_external is None:
        use_external = model.has_external_data or _inline_size(proto) >= TWO_GIB - (64 << 20)
    if not target.parent.is_dir():
        raise ExportError(f"cannot write {target}: folder {target.parent} does not exist")
    tmpdir = Path(tempfile.mkdtemp(prefix=".surgeon-tmp-", dir=target.parent))
    try:
        tmp_model = tmpdir / target.name
        data_path = None
        if use_external:
            data_path = target.with_name(target.name + ".data")
            _write_external(proto, model, tmpdir / data_path.name, data_path.name)
        _write_proto(proto, tmp_model)
        found = _check(tmp_model, model) if check else []
        if data_path is not None:
            os.replace(tmpdir / data_path.name, data_path)
        os.replace(tmp_model, target)
        return SaveResult(target, data_path, found)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _refuse_overwrites(model: Model, target: Path, in_place: bool) -> None:
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


def _source_data_files(model: Model) -> set[Path]:
    from surgeon.external import ExternalValues
    import onnx_graphsurgeon as gs

    files = set()
    for g in model.graphs():
        for t in g.tensors().values():
            if isinstance(t, gs.Constant) and isinstance(t._values, ExternalValues):
                files.add(external_ref(t._values.tensor, t._values.base_dir).path)
    for consts in model.origin.unused_initializers.values():
        for t in consts:
            if isinstance(t._values, ExternalValues):
                files.add(external_ref(t._values.tensor, t._values.base_dir).path)
    return files


def _inline_size(proto: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in iter_model_tensors(proto))


def _write_external(proto: onnx.ModelProto, model: Model, data_file: Path, location: str) -> None:
    """Move every external or large tensor into ``data_file``, streaming external sources."""
    base = model.base_dir
    with open(data_file, "wb") as out:
        for t in iter_model_tensors(proto):
            if is_external(t):
                if base is None:
                    raise ExportError(f"tensor '{t.name}' refers to external data, but the model has no "
                                      "folder to read it from")
                ref = external_ref(t, base)
                _pad(out)
                offset = out.tell()
                length = copy_range(ref.path, ref.offset, ref.length, out)
                set_external(t, location, offset, length)
            elif t.HasField("raw_data") and len(t.raw_data) >= EXTERNAL_THRESHOLD:
                _pad(out)
                offset = out.tell()
                out.write(t.raw_data)
                set_external(t, location, offset, len(t.raw_data))


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


def _check(path: Path, model: Model) -> list[str]:
    """Run the full ONNX checker on the written file; tolerate what the input already had."""
    problem = _checker_problem(path)
    if problem is None:
        return []
    before = None
    if model.source_path is not None and model.source_path.exists():
        before = _checker_problem(model.source_path)
    if before is not None and _same_finding(before, problem):
        return [f"the ONNX checker rejects the model, as it already rejected the input: {problem}"]
    raise ExportError(
        f"the edited model fails the ONNX checker: {problem}",
        hint="the recipe introduced this (the input model passed the checker"
             + ("" if before is None else " with a different finding") + "); "
             "check the steps that touched the names above",
    )


def _same_finding(a: str, b: str) -> bool:
    return a.splitlines()[0] == b.splitlines()[0]


def _checker_problem(path: Path) -> str | None:
    """The checker's complaint about a model file, or None if it passes.

    Plugin ops (TensorRT's ``EfficientNMS_TRT``...) live in the default
    domain but are not ONNX ops; they are checked as ops of a custom domain,
    so that everything else is still checked in full.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto = onnx.load(str(path), load_external_data=False)
            plugins = _mark_plugin_ops(proto)
            if plugins:
                tmp = path.with_name(path.name + ".plugins-check.onnx")
                try:
                    tmp.write_bytes(proto.SerializeToString())
                    onnx.checker.check_model(str(tmp), full_check=True)
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return str(exc).strip()
    except Exception as exc:  # the checker raises a few other types on odd models
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def _mark_plugin_ops(proto: onnx.ModelProto) -> set[str]:
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    found: set[str] = set()

    def visit(g: onnx.GraphProto) -> None:
        for n in g.node:
            if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type):
                if not any(f.name == n.op_type for f in proto.functions):
                    n.domain = PLUGIN_DOMAIN
                    found.add(n.op_type)
            for a in n.attribute:
                if a.HasField("g"):
                    visit(a.g)
                for sub in a.graphs:
                    visit(sub)

    if opset is not None:
        visit(proto.graph)
    if found:
        proto.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return found
