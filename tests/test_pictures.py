"""Pictures of changes (diff --html, apply --html) and surgeon view: structure, and a real headless browser."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from surgeon.cli import main
from surgeon.io.load import read_proto
from surgeon.views.picture import picture, structure_of_proto

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "fixtures" / "models"
ARTIFACTS = Path(os.environ.get("SURGEON_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
"""Where the browser test leaves its screenshots (CI keeps them; git ignores build/)."""


def _cli(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _nodes(page: str) -> dict[str, str]:
    """data-name -> state of every drawn node."""
    return {name: state for state, name in re.findall(r"<g class='node (\w+)' data-name='([^']*)'", page)}


@pytest.fixture
def stripped(tmp_path: Path) -> Path:
    out = tmp_path / "stripped.onnx"
    assert _cli("apply", ROOT / "recipes" / "strip_fooop.yaml", MODELS / "model_foo.onnx", "-o", out)[0] == 0
    return out


def test_diff_page_draws_the_change_and_its_neighbourhood(stripped: Path, tmp_path: Path) -> None:
    target = tmp_path / "diff.html"
    code, out, err = _cli("diff", MODELS / "model_foo.onnx", stripped, "--html", target)
    assert code == 0 and err == f"wrote {target}\n"
    page = target.read_text()
    assert _nodes(page) == {"/FooOp": "removed", "/block1/block1.2/Relu": "rewired",
                            "/block2/block2.0/Conv": "rewired", "/block1/block1.0/Conv": "context",
                            "/block2/block2.2/Relu": "context", "input": "context", "output": "context"}
    edges = re.findall(r"<path class='edge (\w+)'[^>]*><title>([^<]*)</title>", page)
    # Types where the models declare them (model_foo has no value_info for most intermediate tensors).
    foo = "float32[FooOp/FooOp_output_0_dim_0,FooOp/FooOp_output_0_dim_1,FooOp/FooOp_output_0_dim_2," \
          "FooOp/FooOp_output_0_dim_3]"
    assert sorted(edges) == sorted([
        ("removed", "/block1/block1.2/Relu_output_0: ? (removed)"),
        ("removed", f"/FooOp_output_0: {foo} (removed)"),
        ("added", "/block1/block1.2/Relu_output_0: ? (added)"),
        ("context", "input: float32[N,3,32,32] (context)"),
        ("context", "/block1/block1.0/Conv_output_0: ? (context)"),
        ("context", "/block2/block2.0/Conv_output_0: ? (context)"),
        ("context", "output: float32[N,Reluoutput_dim_1,Reluoutput_dim_2,Reluoutput_dim_3] (context)")])
    # The text tables of `surgeon diff` come along, and the page fetches nothing.
    assert "nodes: 5 -&gt; 4 (1 removed, 0 added)" in page
    assert not re.search(r"\b(src|href)\s*=|@import|url\(", page)


def test_identical_models_draw_nothing() -> None:
    s = structure_of_proto(read_proto(MODELS / "model.onnx"))
    assert picture(s, s, "same") == "<h2>same</h2>\n<p class='same'>no change to the graph's structure</p>\n"


def test_a_large_change_is_cut_and_says_so() -> None:
    a = structure_of_proto(read_proto(MODELS / "transformer_encoder_dynamo.onnx"))
    b = type(a)(nodes=[], types={}, inputs=a.inputs, outputs=a.outputs)
    section = picture(a, b, "everything removed", limit=50)
    assert section.count("<g class='node removed'") == 50
    # Every node is removed, and the graph's inputs and outputs lost their edges (rewired).
    changed = len(a.nodes) + len(a.inputs) + len(a.outputs)
    assert f"<p class='cut'>{changed - 50} more changed nodes are not drawn (the first 50 are)" in section


def test_apply_page_has_one_section_per_step(tmp_path: Path) -> None:
    target = tmp_path / "run.html"
    code, _, _ = _cli("apply", ROOT / "recipes" / "strip_fooop.yaml", MODELS / "model_foo.onnx",
                      "-o", tmp_path / "out.onnx", "--html", target)
    assert code == 0
    page = target.read_text()
    assert re.findall(r"<h2>(.*?)</h2>", page) == [
        "step 1 &#x27;drop-fooop&#x27; (remove_node): removed 1 node (devtech::FooOp); rewired 1 node",
        "step 2 (cleanup): no change"]
    assert "<g class='node removed' data-name='/FooOp'" in page
    assert _cli("apply", ROOT / "recipes" / "strip_fooop.yaml", MODELS / "model_foo.onnx", "-o",
                tmp_path / "o2.onnx", "--html", tmp_path / "no" / "r.html")[2].startswith(
        f"surgeon: error: --html: folder {tmp_path / 'no'} does not exist")


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_browser() is None, reason="no Chromium here (Debian: apt-get install chromium; .ci/run "
                                               "installs it where it can)")
def test_page_renders_in_a_real_browser(stripped: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (.[test])")
    target = tmp_path / "diff.html"
    assert _cli("diff", MODELS / "model_foo.onnx", stripped, "--html", target)[0] == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_browser(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
                    else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(target.as_uri())
            drawn = page.eval_on_selector_all(
                "g.node", "els => els.map(e => [e.dataset.name, getComputedStyle(e.querySelector('rect')).stroke,"
                          " e.getBoundingClientRect().width > 0])")
            box_before = page.get_attribute("svg.graph", "viewBox")
            page.mouse.move(500, 500)
            page.mouse.wheel(0, -400)  # zoom in
            box_after = page.get_attribute("svg.graph", "viewBox")
            page.screenshot(path=str(ARTIFACTS / "diff_strip_fooop.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert requests == [target.as_uri()]  # self-contained: nothing else is fetched
    colours = {name: colour for name, colour, visible in drawn if visible}
    assert colours["/FooOp"] == "rgb(214, 39, 40)"  # removed: red
    assert colours["/block1/block1.2/Relu"] == "rgb(255, 159, 28)"  # rewired: amber
    assert colours["/block1/block1.0/Conv"] == "rgb(154, 160, 166)"  # context: grey
    assert box_after != box_before  # the wheel zooms
    assert (ARTIFACTS / "diff_strip_fooop.png").stat().st_size > 10_000


# -- surgeon view ---------------------------------------------------------------------------------


def test_view_without_netron_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "netron", None)  # import netron raises ImportError
    assert _cli("view", MODELS / "model.onnx") == (
        1, "", "error: surgeon view needs Netron, which is not installed\n"
               f"  hint: pip install 'surgeon[netron]' (or pip install netron), then run surgeon view "
               f"{MODELS / 'model.onnx'} again\n")


def test_view_serves_the_model_in_netron(tmp_path: Path) -> None:
    pytest.importorskip("netron", reason="the netron extra is not installed")
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "surgeon", "view", str(MODELS / "model.onnx"), "--no-browser",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/", timeout=2) as response:
                    body = response.read().decode()
                break
            except OSError:
                time.sleep(0.3)
        assert "Netron" in body or "netron" in body
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"Netron shows {MODELS / 'model.onnx'} at http://localhost:{port}" in out
