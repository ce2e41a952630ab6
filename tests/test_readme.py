"""The README's code is run: its Python API example, and its gs-script pass used from a recipe."""

from __future__ import annotations

import io
import re
import shutil

from util import ROOT

import surgeon
from surgeon.cli import main


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "fixtures", tmp_path / "fixtures", ignore=shutil.ignore_patterns("models", "polygraphy"))
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks("python")[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "step 1 'drop-fooop' (remove_node): removed 1 node (devtech::FooOp); rewired 1 node"
    assert printed[-1] == "step 1 (remove_node): removed 1 node (devtech::FooOp); rewired 1 node"
    assert (tmp_path / "clean.onnx").exists()


def test_gs_script_pass_example_runs_from_its_recipe(tmp_path):
    plugin, = [b for b in _blocks("python") if b.startswith("# my_passes.py")]
    recipe, = [b for b in _blocks("yaml") if "plugins: [my_passes]" in b and "strip_fooop_gs" in b]
    (tmp_path / "my_passes.py").write_text(plugin)
    (tmp_path / "r.yaml").write_text(recipe)
    try:
        out = io.StringIO()
        code = main(["apply", str(tmp_path / "r.yaml"), str(ROOT / "fixtures" / "model_foo.onnx"),
                     "-o", str(tmp_path / "out.onnx")], out=out)
        assert code == 0
        assert "step 1 (strip_fooop_gs): removed 1 node (devtech::FooOp)" in out.getvalue()
    finally:
        surgeon.registry.unregister("strip_fooop_gs")
