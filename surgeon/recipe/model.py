"""The parsed, validated form of a recipe: what the runner executes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from surgeon.errors import Location


@dataclass(frozen=True)
class Step:
    """One step: a pass with its parameters, and where it was written."""

    pass_name: str
    params: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    index: int = 0
    location: Location | None = None
    """Where the step's mapping starts in the recipe file."""
    param_locations: dict[str, Location] = field(default_factory=dict)
    """Where each parameter's value was written (for errors raised while running)."""
    expect: dict[str, Any] | None = None
    """Assertions checked after the step (see the recipe format)."""

    @property
    def label(self) -> str:
        name = f"step {self.index + 1}"
        if self.id:
            name += f" '{self.id}'"
        return f"{name} ({self.pass_name})"


@dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]
    version: int = 1
    description: str = ""
    plugins: tuple[str, ...] = ()
    verify: dict[str, Any] | None = None
    path: str | None = None
    sha256: str | None = None
    """Hash of the recipe file's bytes, with the files it includes and the values set for its variables
    (provenance); None for recipes built in Python."""
    variables: dict[str, Any] = field(default_factory=dict)
    """The final value of each ``vars:`` variable (defaults, then ``--set``)."""
    included: tuple[str, ...] = ()
    """The files spliced in by ``include:`` steps, in order."""
    custom_ops: tuple[Any, ...] = ()
    """The ``custom_ops:`` declarations (:class:`surgeon.recipe.custom_ops.CustomOp`), active while it runs."""

    @classmethod
    def from_steps(cls, steps: list[dict[str, Any] | tuple[str, dict[str, Any]]], description: str = "",
                   registry: Any = None) -> Recipe:
        """Build a recipe in Python: ``Recipe.from_steps([("remove_node", {"op": "FooOp"}), ("cleanup", {})])``.

        A step is a ``(pass, parameters)`` pair or a mapping with the keys of a
        YAML step (``{"pass": ..., "with": {...}, "id": ..., "expect": {...}}``).
        It is checked exactly as a YAML recipe is, against ``registry`` (a
        :class:`~surgeon.recipe.catalogue.PassCatalogue`; default: the global
        pass registry), with the same messages, naming the step instead of a
        file position.
        """
        from surgeon.recipe.parse import recipe_from_steps  # parse imports this module

        return recipe_from_steps(steps, description, registry)
