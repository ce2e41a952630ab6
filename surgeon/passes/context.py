"""What a pass may know of the recipe that runs it: the folder that its file paths are relative to,
and the real inputs the run was given.

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


_INPUTS: list[Path | None] = []


@contextmanager
def run_inputs(path: str | Path | None) -> Iterator[None]:
    """Steps run inside the block may use ``path``, the real inputs (``.npz``) the run is verified on
    (``surgeon apply --inputs``, a recipe's ``verify: inputs``), e.g. to measure activations on them."""
    _INPUTS.append(Path(path) if path is not None else None)
    try:
        yield
    finally:
        _INPUTS.pop()


def given_inputs() -> Path | None:
    """The real inputs of the running recipe (see :func:`run_inputs`), or None."""
    return _INPUTS[-1] if _INPUTS else None
