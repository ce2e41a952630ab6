"""Recipes: YAML files that list passes to run, parsed with positions and validated
against a pass catalogue before the model is touched.

This layer imports only :mod:`surgeon.errors` and itself. What it needs to
know about passes is the :class:`~surgeon.recipe.catalogue.PassCatalogue`
protocol; the pass registry implements it and registers itself as the default
catalogue when imported (see :mod:`surgeon.recipe.catalogue`).
"""

from surgeon.recipe.model import Recipe, Step
from surgeon.recipe.parse import load_recipe, parse_recipe

__all__ = ["Recipe", "Step", "load_recipe", "parse_recipe"]
