"""fixtures/README.md stays true, and fixtures/fetch.py fetches what it says, the way it says.

The table lists every model with its sha256: each listed file must be there
with that hash, and each model file under fixtures/ must be listed, so the
table cannot rot. The fetch is tested with a fake pip (no network).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
from util import FIXTURES, ROOT, fetch, locate_real_model, real_model

ROW = re.compile(r"^\| `(?P<file>[^`]+)` \|(?:.* \|)? `(?P<sha256>[0-9a-f]{64})` \|$")
MODEL_SUFFIXES = (".onnx", ".data")
OUTPUTS = (".surgeon.onnx", ".surgeon.onnx.data")  # what `surgeon apply` writes beside its input (gitignored)


def _listed() -> dict[str, str]:
    rows = [ROW.match(line) for line in (FIXTURES / "README.md").read_text().splitlines()]
    listed = {}
    for row in filter(None, rows):
        assert row["file"] not in listed, f"{row['file']} is listed twice in fixtures/README.md"
        listed[row["file"]] = row["sha256"]
    return listed


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_listed_file_is_there_with_its_sha256():
    listed = _listed()
    assert len(listed) > 80
    wrong = []
    for name, digest in listed.items():
        if name in fetch.FETCHED:
            pinned = fetch.FETCHED[name].sha256
        elif name in fetch.ONNX_PACKAGED:
            pinned = fetch.ONNX_PACKAGED[name][1]
        else:
            path = FIXTURES / name
            pinned = _sha256(path) if path.is_file() else "missing"
        if pinned != digest:
            wrong.append(f"{name}: README says {digest}, found {pinned}")
    assert not wrong, "fixtures/README.md is out of date:\n" + "\n".join(wrong)


def test_every_model_under_fixtures_is_listed():
    files = [p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*")
             if p.is_file() and p.name.endswith(MODEL_SUFFIXES) and not p.name.endswith(OUTPUTS)]
    assert "models/silero_vad.onnx" in files and "polygraphy/data/ext_weights.data" in files
    unlisted = sorted(set(files) - set(_listed()))
    assert not unlisted, f"add these to fixtures/README.md (origin, license, sha256): {unlisted}"


def test_every_fetched_or_packaged_model_is_listed():
    assert set(fetch.FETCHED) | set(fetch.ONNX_PACKAGED) <= set(_listed())


def test_every_real_model_name_resolves_inside_the_repository_or_its_caches():
    for name in fetch.names(subfolders=True):
        path, why = locate_real_model(name)
        if path is not None:
            assert path.resolve().is_relative_to(FIXTURES) or name in fetch.FETCHED or name in fetch.ONNX_PACKAGED
        else:
            assert name in fetch.FETCHED, why  # only a model still to fetch may be missing


def test_an_unknown_name_is_an_error_not_a_skip():
    with pytest.raises(ValueError, match="unknown real model no_such_model.onnx"):
        real_model("no_such_model.onnx")
    with pytest.raises(ValueError, match="no Polygraphy test model polygraphy/nope.onnx"):
        real_model("polygraphy/nope.onnx")


def test_no_test_or_benchmark_reads_the_folder_beside_the_repository():
    beside = re.compile(r'\.\./shar(e)d|/ "shar(e)d"|SHAR(E)D')  # spelled so that this file does not match
    found = [p.relative_to(ROOT).as_posix() for folder in ("tests", "benchmarks")
             for p in (ROOT / folder).glob("*.py") if beside.search(p.read_text())]
    assert not found


# fetch.py, without the network: a fake `pip download` that writes a wheel holding a fake model.

MODEL_BYTES = b"not really onnx, but bytes with a known hash"


@pytest.fixture
def fake_pypi(tmp_path, monkeypatch):
    """One fetchable model, a cache in tmp_path, and the pip calls made (each writes the wheel)."""
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/models/m.onnx", MODEL_BYTES)
    spec = fetch.Fetched(package="pkg", version="1.0", wheel=wheel.name, wheel_sha256=_sha256(wheel),
                         member="pkg/models/m.onnx", sha256=hashlib.sha256(MODEL_BYTES).hexdigest(),
                         license="MIT")
    monkeypatch.setitem(fetch.FETCHED, "m.onnx", spec)
    monkeypatch.setenv("SURGEON_FIXTURE_CACHE", str(tmp_path / "cache"))
    calls = []

    def pip(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        requirements = Path(cmd[cmd.index("-r") + 1]).read_text()
        assert requirements == f"pkg==1.0 --hash=sha256:{spec.wheel_sha256}\n"
        assert {"--no-deps", "--require-hashes", "--only-binary=:all:"} <= set(cmd)
        dest.joinpath(wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", pip)
    locate_real_model.cache_clear()
    yield calls
    locate_real_model.cache_clear()  # forget the fake model's location


def test_fetch_extracts_the_model_once(fake_pypi, tmp_path, capsys):
    assert fetch.cached("m.onnx") is None
    assert fetch.main(["m.onnx"]) == 0
    assert (tmp_path / "cache" / "m.onnx").read_bytes() == MODEL_BYTES
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["m.onnx"]  # no wheel, no temp folder left
    assert fetch.main(["m.onnx"]) == 0  # idempotent: the model with the right sha256 is there, no pip call
    assert len(fake_pypi) == 1
    assert capsys.readouterr().out == (f"m.onnx: fetched into {tmp_path / 'cache'}\n"
                                       f"m.onnx: already in {tmp_path / 'cache'}\n")


def test_fetch_replaces_a_cached_model_with_the_wrong_sha256(fake_pypi, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "m.onnx").write_bytes(b"truncated")
    assert fetch.fetch("m.onnx").read_bytes() == MODEL_BYTES
    assert len(fake_pypi) == 1


def test_fetch_refuses_a_model_with_another_sha256(fake_pypi, tmp_path, monkeypatch):
    monkeypatch.setitem(fetch.FETCHED, "m.onnx", dataclasses.replace(fetch.FETCHED["m.onnx"], sha256="0" * 64))
    with pytest.raises(fetch.FetchError, match=r"m.onnx from pkg-1.0-py3-none-any.whl has sha256 [0-9a-f]{64}, "
                                               "expected 0{64}"):
        fetch.fetch("m.onnx")
    assert not (tmp_path / "cache" / "m.onnx").exists()


def test_offline_fetch_fails_with_pips_reason_and_exit_status_1(fake_pypi, monkeypatch, capsys):
    def offline(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: Retrying...\nERROR: No matching distribution "
                                                       "found for pkg==1.0\n")

    monkeypatch.setattr(fetch.subprocess, "run", offline)
    assert fetch.main(["m.onnx"]) == 1
    assert capsys.readouterr().err == ("error: could not download pkg==1.0 for m.onnx (`pip download` exited 1): "
                                       "ERROR: No matching distribution found for pkg==1.0\n")


def test_a_model_not_fetched_yet_skips_saying_how_to_fetch_it(fake_pypi, tmp_path, monkeypatch):
    monkeypatch.delenv("SURGEON_REQUIRE_FIXTURES", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        real_model("m.onnx")
    assert str(skipped.value) == (f"m.onnx is not in the fixture cache {tmp_path / 'cache'}: run "
                                  "`python fixtures/fetch.py` (downloads pkg==1.0 from PyPI)")
    locate_real_model.cache_clear()
    monkeypatch.setenv("SURGEON_REQUIRE_FIXTURES", "1")
    with pytest.raises(pytest.fail.Exception, match="SURGEON_REQUIRE_FIXTURES is set"):
        real_model("m.onnx")


def test_the_pinned_ocr_model_is_the_one_the_wheel_ships():
    spec = fetch.FETCHED["ch_PP-OCRv4_rec_infer.onnx"]
    assert (spec.package, spec.version, spec.license) == ("rapidocr-onnxruntime", "1.4.4", "Apache-2.0")
    path = real_model("ch_PP-OCRv4_rec_infer.onnx")  # skips (or fails in CI) until fetched
    assert _sha256(path) == spec.sha256
