"""One whole job: recipe + model file -> edited model file.

This is what ``surgeon apply`` does, as a library call, so the CLI stays a
thin layer and Python users get the same behaviour (validation before the
model is read, atomic output, the input never overwritten by accident).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from surgeon.load import load
from surgeon.model import Model
from surgeon.recipe.model import Recipe
from surgeon.recipe.parse import load_recipe
from surgeon.runner import ApplyResult, apply
from surgeon.save import SaveResult, default_output_path, save


@dataclass
class FileResult:
    recipe: Recipe
    model: Model
    applied: ApplyResult
    saved: SaveResult | None = None
    warnings: list[str] = field(default_factory=list)


def apply_file(
    recipe: str | Path | Recipe,
    model_path: str | Path,
    output: str | Path | None = None,
    *,
    in_place: bool = False,
) -> FileResult:
    """Validate ``recipe``, load ``model_path``, run the steps, save the result.

    Without ``output`` the result goes to ``<stem>.surgeon.onnx`` beside the
    input; with ``in_place`` it replaces the input.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)  # before the model is touched: a bad recipe costs nothing
    model_path = Path(model_path)
    model = load(model_path)
    applied = apply(recipe, model)
    target = model_path if in_place else Path(output) if output is not None else default_output_path(model_path)
    saved = save(model, target, in_place=in_place)
    return FileResult(recipe, model, applied, saved, list(saved.warnings))
