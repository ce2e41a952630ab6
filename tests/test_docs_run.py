"""Every shell command and Python block in README.md and docs/ runs, and prints what the page shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.doc_examples import ROOT, blocks, console_steps, matches, run_command, run_python, sandbox

PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "passes.md")]


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    folder = sandbox(tmp_path / "sandbox")
    for block in blocks(page):
        if block.lang == "python":
            code, output = run_python(block, folder)
            assert code == 0, f"{_id(page)}:{block.line}: the python block exited {code}:\n{output}"
            continue
        if block.lang in ("sh", "bash"):
            code, output = run_command("set -e\n" + "\n".join(block.lines), folder)
            assert code == 0, f"{_id(page)}:{block.line}: the {block.lang} block exited {code}:\n{output}"
            continue
        for command, expected, line in console_steps(block):
            _, output = run_command(command, folder)
            assert matches(expected, output.rstrip("\n").splitlines()), (
                f"{_id(page)}:{line}: `{command}` printed\n{output}\nbut the page shows\n" + "\n".join(expected))


def test_every_page_with_commands_is_run() -> None:
    """A page that shows `$ surgeon ...` outside a console block would escape the test."""
    loose = []
    for page in PAGES:
        in_block, lang = False, ""
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("```"):
                in_block, lang = (not in_block, line[3:].strip()) if not in_block else (False, "")
            elif in_block and lang != "console" and line.startswith("$ "):
                loose.append(f"{_id(page)}:{number}")
    assert loose == [], "mark these blocks ```console so their commands run"


def test_matching_rules() -> None:
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert matches(["checked (full) in ... s"], ["checked (full) in 0.05 s"])
    assert not matches(["a", "b"], ["a", "c"])
    assert not matches(["a"], ["a", "extra"])
