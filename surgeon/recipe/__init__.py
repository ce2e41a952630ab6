"""Recipes: YAML files that list passes to run, parsed with positions and validated
against the pass registry before the model is touched."""

from surgeon.recipe.model import Recipe, Step
from surgeon.recipe.parse import load_recipe, parse_recipe

__all__ = ["Recipe", "Step", "load_recipe", "parse_recipe"]
