"""One recipe over many models: apply --out-dir/--jobs, apply_many with any Executor (Dask included)."""

from __future__ import annotations

import io
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import surgeon
from surgeon.batch import apply_many
from surgeon.cli import main
from tests.util import assert_same_outputs, random_inputs

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "fixtures" / "models"
RECIPE = ROOT / "recipes" / "strip_fooop.yaml"


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    """Two FooOp models at the top, one model without FooOp in a sub-folder (the recipe does not fit it)."""
    folder = tmp_path / "zoo"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(MODELS / "model_foo.onnx", folder / "a.onnx")
    shutil.copy(MODELS / "model_foo_dynamo.onnx", folder / "b.onnx")
    shutil.copy(MODELS / "model.onnx", folder / "sub" / "plain.onnx")
    (folder / "notes.txt").write_text("not a model")
    return folder


def _cli(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _rows(table: str) -> list[list[str]]:
    lines = table.splitlines()
    assert re.fullmatch(r"model +status +nodes +seconds", lines[0])
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:4]]


def test_batch_over_a_folder_writes_every_model_that_fits(zoo: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    report = tmp_path / "batch.json"
    code, out, err = _cli("apply", RECIPE, zoo, "--out-dir", out_dir, "--jobs", 2, "--report", report)
    assert code == 1, err
    rows = _rows(out)
    assert [row[:3] for row in rows] == [[str(zoo / "a.onnx"), "ok", "5 -> 4"], [str(zoo / "b.onnx"), "ok", "5 -> 4"],
                                         [str(zoo / "sub" / "plain.onnx"), "failed", "-"]]
    assert all(re.fullmatch(r"\d+\.\d\d", row[3]) for row in rows)
    assert (f"{zoo / 'sub' / 'plain.onnx'}:\n{RECIPE}:8:5: error: step 1 'drop-fooop' (remove_node): selector "
            "(op='FooOp', domain='devtech') matched no node\n") in out
    assert out.endswith("2 of 3 models written, 1 failed\n")
    # The models that fit are written (and equal to the input minus the pass-through FooOp); the one that
    # does not leaves nothing behind, not even its sub-folder.
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")) == ["a.onnx", "b.onnx"]
    for name in ("a.onnx", "b.onnx"):
        written = surgeon.load(out_dir / name)
        assert "FooOp" not in {n.op for n in written.graph.nodes}
    oracle = MODELS / "model.onnx"  # model_foo is model.onnx with a FooOp inserted
    assert_same_outputs(oracle, out_dir / "a.onnx", random_inputs(oracle))
    data = json.loads(report.read_text())
    assert (data["models"], data["failed"]) == (3, 1)
    assert [job["status"] for job in data["jobs"]] == ["ok", "ok", "failed"]
    assert data["jobs"][0]["report"]["steps"][0]["removed"][0]["op"] == "FooOp"


def test_one_job_runs_in_process_with_the_same_result(zoo: Path, tmp_path: Path) -> None:
    result = apply_many(RECIPE, [str(zoo / "a.onnx"), str(zoo / "b.onnx")], tmp_path / "out", jobs=1)
    assert [(Path(j.model).name, j.status, j.nodes_before, j.nodes_after) for j in result.jobs] == [
        ("a.onnx", "ok", 5, 4), ("b.onnx", "ok", 5, 4)]


def test_any_executor_runs_the_batch(zoo: Path, tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        result = apply_many(RECIPE, [str(zoo / "*.onnx")], tmp_path / "out", executor=pool)
    assert [(Path(j.model).name, j.status) for j in result.jobs] == [("a.onnx", "ok"), ("b.onnx", "ok")]


def test_dask_cluster_runs_the_batch(zoo: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed "
                                      "(pip install -e '.[test]')")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        result = apply_many(RECIPE, [str(zoo)], tmp_path / "out", executor=client.get_executor())
    assert [(Path(j.model).name, j.status) for j in result.jobs] == [("a.onnx", "ok"), ("b.onnx", "ok"),
                                                                     ("plain.onnx", "failed")]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.onnx")) == ["a.onnx", "b.onnx"]


def test_batch_usage_errors(zoo: Path, tmp_path: Path) -> None:
    a, b = zoo / "a.onnx", zoo / "b.onnx"
    assert _cli("apply", RECIPE, a, b)[2].startswith(
        "surgeon: error: 2 models given: to apply the recipe to each, add --out-dir DIR\n")
    assert _cli("apply", RECIPE, a, "--out-dir", zoo)[2] == (
        f"surgeon: error: --out-dir {zoo} would overwrite the input {a}\n  hint: choose another output folder\n")
    twin = tmp_path / "other" / "a.onnx"
    twin.parent.mkdir()
    shutil.copy(a, twin)
    assert _cli("apply", RECIPE, a, twin, "--out-dir", tmp_path / "out")[2] == (
        f"surgeon: error: {a} and {twin} would both be written to a.onnx\n"
        "  hint: give their folder instead (sub-folders are kept), or run them separately\n")
    assert _cli("apply", RECIPE, a, "--out-dir", tmp_path / "out", "-o", "x.onnx")[2].startswith(
        "surgeon: error: --out-dir names every output: leave out -o/--output and --in-place")
    assert _cli("apply", RECIPE, a, "--jobs", "2")[2].startswith(
        "surgeon: error: --jobs takes a positive number of worker processes, with --out-dir")
    assert _cli("apply", RECIPE, tmp_path / "none" / "*.onnx", "--out-dir", tmp_path / "out")[2].startswith(
        f"surgeon: error: no model matches {tmp_path / 'none' / '*.onnx'}")
    assert not (tmp_path / "out").exists()
