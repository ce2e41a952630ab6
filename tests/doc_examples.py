"""Run the examples in README.md and docs/ so the docs cannot rot.

Which fenced blocks run:

- ```` ```console ````: each line starting with ``$ `` is a shell command (a line
  ending in ``\\`` continues it); the lines up to the next ``$ `` are its output
  (stdout and stderr together), compared line by line. A line ``...`` matches any
  number of lines; ``...`` inside a line matches any text (timings, temporary paths).
- ```` ```sh ```` / ```` ```bash ````: the block runs as one script (``set -e``), which must exit 0;
  output is not compared (use it to write the files a page then works on).
- ```` ```python ````: the block runs as a script (its own interpreter) in the same sandbox; it must exit 0.
- Other blocks (```` ```yaml ````, plain ```` ``` ````) are not run: recipes are checked by
  tests/test_recipes.py and the pass examples by tests/test_docs.py; plain blocks show
  syntax or set-up commands that CI itself runs (.ci/run).

Every file's blocks run in order in one sandbox folder (so a page can write a model
and then inspect it) that looks like the repository (see :func:`sandbox`), where
``surgeon`` is this checkout's command line.

Authoring: ``python -m tests.doc_examples --fill docs/cookbook/x.md`` runs a page's
console commands and writes their real output into it (check the diff, then put
``...`` where output varies).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    file: Path
    line: int
    lang: str
    lines: list[str] = field(default_factory=list)


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    current: Block | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line)
        if current is None and match:
            current = Block(path, number, match.group(1))
        elif current is not None and line.strip() == "```":
            found.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    return [b for b in found if b.lang in ("console", "sh", "bash", "python")]


def console_steps(block: Block) -> list[tuple[str, list[str], int]]:
    """(command, expected output lines, line number of the command) of a console block."""
    steps: list[tuple[str, list[str], int]] = []
    lines = block.lines
    i = 0
    while i < len(lines):
        if lines[i].startswith("$ "):
            start = block.line + i + 1
            command = lines[i][2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            steps.append((command, [], start))
        elif steps:
            steps[-1][1].append(lines[i])
        i += 1
    return steps


def sandbox(folder: Path) -> Path:
    """A folder that looks like the repository: recipes/ and docs/ copied, fixtures/ mirrored with a link
    per file (so a page that writes ``fixtures/x.surgeon.onnx`` writes it here, never into the checkout)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("recipes", "docs"):
        if not (folder / name).exists():
            shutil.copytree(ROOT / name, folder / name)
    for source in (ROOT / "fixtures").rglob("*"):
        target = folder / source.relative_to(ROOT)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    return folder


def environment(folder: Path) -> dict[str, str]:
    """``surgeon`` on PATH is this checkout's CLI, whatever is installed."""
    bin_dir = folder / ".bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "surgeon"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m surgeon \"$@\"\n")
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "120",
            "NO_COLOR": "1"}


def run_command(command: str, folder: Path) -> tuple[int, str]:
    done = subprocess.run(command, shell=True, cwd=folder, env=environment(folder), capture_output=True,
                          text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; ``...`` alone matches any lines, ``...`` in a line any text."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(matches(rest, actual[i:]) for i in range(len(actual) + 1))
    if not actual:
        return False
    pattern = "^" + ".*".join(re.escape(part) for part in head.rstrip().split("...")) + "$"
    return re.match(pattern, actual[0].rstrip()) is not None and matches(rest, actual[1:])


def run_python(block: Block, folder: Path) -> tuple[int, str]:
    """The block as a script in the sandbox, in its own interpreter (a registered pass must not leak
    into the test process). Line numbers in a traceback are the page's."""
    script = folder / f".block_{block.line}.py"
    script.write_text("\n" * block.line + "\n".join(block.lines) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=folder, env=environment(folder), capture_output=True,
                          text=True, timeout=600)
    return done.returncode, (done.stdout + done.stderr).replace(str(script), str(block.file))


def fill(path: Path, folder: Path) -> None:
    """Write each console command's real output into the page (authoring aid); sh and python blocks
    run where they stand, as in the test."""
    out: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or match.group(1) not in ("console", "sh", "bash", "python"):
            out.append(lines[i])
            if match:  # copy a block that does not run, fence to fence
                i += 1
                while i < len(lines) and lines[i].strip() != "```":
                    out.append(lines[i])
                    i += 1
                if i < len(lines):
                    out.append(lines[i])
            i += 1
            continue
        lang, start = match.group(1), i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if lang in ("sh", "bash"):
            run_command("set -e\n" + "\n".join(body), folder)
            out += lines[start:i + 1]
        elif lang == "python":
            run_python(Block(path, start + 1, lang, body), folder)
            out += lines[start:i + 1]
        else:
            out.append(lines[start])
            for command, _, _ in console_steps(Block(path, start + 1, lang, body)):
                out.append("$ " + command)
                out += run_command(command, folder)[1].rstrip("\n").splitlines()
            out.append("```")
        i += 1
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


if __name__ == "__main__":
    import tempfile

    if len(sys.argv) != 3 or sys.argv[1] != "--fill":
        sys.exit("usage: python -m tests.doc_examples --fill PAGE.md")
    fill(Path(sys.argv[2]), sandbox(Path(tempfile.mkdtemp(prefix="surgeon-docs-"))))
