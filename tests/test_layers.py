"""The layout is the architecture: each layer imports only the layers below it.

Every ``import`` in the package is read (module level and inside functions: a
lazy import is still a dependency) and checked against the table in
CONTRIBUTING.md. A failure names the importing file and line, so moving a
helper to the right layer is the fix, never widening the table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "surgeon"

# layer -> the layers it may import (itself included where it may).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "progress": set(),
    "graph": {"errors", "progress", "graph"},
    "io": {"errors", "progress", "graph", "io"},
    "recipe": {"errors", "progress", "recipe"},
    "passes": {"errors", "progress", "graph", "io", "recipe", "passes"},
    "builtin": {"errors", "progress", "graph", "io", "recipe", "passes"},
    "views": {"errors", "progress", "graph", "io", "views"},
    "verify": {"errors", "progress", "graph", "io"},
    "report": {"errors", "progress", "graph", "io", "recipe", "passes"},
    "workflow": {"errors", "progress", "graph", "io", "recipe", "passes", "verify", "report"},
    "review": {"errors", "progress", "graph", "io", "recipe", "passes", "verify", "report", "workflow"},
    "batch": {"errors", "progress", "graph", "io", "recipe", "passes", "verify", "report", "workflow"},
    "terminal": {"progress"},
    "cli": {"errors", "progress", "graph", "io", "recipe", "passes", "builtin", "views", "verify", "report",
            "workflow", "review", "batch", "terminal"},
    "api": {"errors", "progress", "graph", "io", "recipe", "passes", "builtin", "views", "verify", "report",
            "workflow", "review", "batch", "cli"},
}
# Progress-bar libraries: only the terminal display draws; everything else reports through surgeon.progress.
DISPLAY_LIBRARIES = {"tqdm", "rich"}
# The one documented exception: shape inference hands onnx a protobuf, so it uses the exporter.
EXCEPTIONS = {("surgeon.graph.shapes", "io")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if module in ("surgeon", "surgeon.__main__"):
        return "api"
    top = parts[1]
    if top == "passes" and len(parts) > 2 and parts[2] == "builtin":
        return "builtin"
    return top


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def surgeon_imports(path: Path):
    """(line, imported module) for every import of a surgeon module in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("surgeon"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "surgeon":
                # `from surgeon import __version__` is package metadata; anything else names a submodule.
                for alias in node.names:
                    if alias.name != "__version__":
                        yield node.lineno, f"surgeon.{alias.name}"
            elif target.startswith("surgeon."):
                yield node.lineno, target


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_module_imports_only_lower_layers(path: Path) -> None:
    importer = module_name(path)
    layer = layer_of(importer)
    assert layer in ALLOWED, f"{importer}: unknown layer '{layer}' (add it to ALLOWED and CONTRIBUTING.md)"
    wrong = []
    for line, target in surgeon_imports(path):
        target_layer = layer_of(target)
        if target_layer in ALLOWED[layer] or (importer, target_layer) in EXCEPTIONS:
            continue
        wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} ({layer}) imports {target} "
                     f"({target_layer})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", sorted((PACKAGE / "passes" / "builtin").glob("*.py")), ids=lambda p: p.name)
def test_builtin_pass_never_imports_another(path: Path) -> None:
    """A pass built from others composes them through the registry, never by importing their module."""
    me = module_name(path)
    others = [f"{path.name}:{line}: imports {target}" for line, target in surgeon_imports(path)
              if target.startswith("surgeon.passes.builtin") and target != me]
    assert not others, "\n".join(others)


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rule test itself can fail: a graph module importing a pass is caught."""
    bad = PACKAGE / "graph" / "_probe_for_layer_test.py"
    bad.write_text("from surgeon.passes.result import PassResult\n")
    try:
        with pytest.raises(AssertionError, match=r"surgeon.graph._probe_for_layer_test \(graph\) imports "
                                                 r"surgeon.passes.result \(passes\)"):
            test_module_imports_only_lower_layers(bad)
    finally:
        bad.unlink()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_only_the_terminal_display_imports_a_progress_bar_library(path: Path) -> None:
    """The library reports progress through surgeon.progress; drawing it is the command line's job."""
    if module_name(path) == "surgeon.terminal":
        return
    tree = ast.parse(path.read_text(), str(path))
    found = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: imports {name}"
             for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
             if name.split(".")[0] in DISPLAY_LIBRARIES]
    assert not found, "\n".join(found)
