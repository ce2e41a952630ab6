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
    """Hash of the recipe file's bytes (provenance); None for recipes built in Python."""

    @classmethod
    def from_steps(cls, steps: list[dict[str, Any] | tuple[str, dict[str, Any]]], description: str = "") -> "Recipe":
        """Build a recipe in Python: ``Recipe.from_steps([("remove_node", {"op": "FooOp"}), ("cleanup", {})])``.

        Parameters are validated against the registry, as for a YAML recipe.
        """
        from surgeon.recipe.validate import validate_steps

        built = []
        for i, item in enumerate(steps):
            if isinstance(item, tuple):
                name, params = item
                built.append(Step(name, dict(params), index=i))
            else:
                item = dict(item)
                built.append(Step(item.pop("pass"), dict(item.pop("with", {}) or {}), id=item.pop("id", None),
                                  index=i, expect=item.pop("expect", None)))
        validate_steps(built)
        return cls(tuple(built), description=description)
