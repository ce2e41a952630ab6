"""What a pass may know of the recipe that runs it: the folder that its file paths are relative to.

A pass that reads a file named in a recipe (``merge``'s ``model``) resolves
it against :func:`recipe_folder`: the recipe's folder while the runner runs a
recipe read from a file, else the current directory (a recipe built in
Python, ``run_pass``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_FOLDERS: list[Path] = []


@contextmanager
def in_recipe_folder(recipe_path: str | None) -> Iterator[None]:
    """Paths in the steps run inside the block are relative to ``recipe_path``'s folder."""
    _FOLDERS.append(Path(recipe_path).parent if recipe_path else Path("."))
    try:
        yield
    finally:
        _FOLDERS.pop()


def recipe_folder() -> Path:
    """The folder that relative paths in the running step are relative to."""
    return _FOLDERS[-1] if _FOLDERS else Path(".")


def resolve(path: str) -> Path:
    """``path`` relative to :func:`recipe_folder` (an absolute path stays as it is)."""
    return recipe_folder() / path
