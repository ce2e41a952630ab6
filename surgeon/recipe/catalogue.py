"""What the recipe layer needs to know about passes, without importing them.

The recipe layer checks that a step names a known pass and that its
parameters fit that pass, but passes are a higher layer (``surgeon.passes``
imports ``surgeon.recipe``, never the reverse). So the recipe layer declares
the little it needs as two protocols, and whoever parses a recipe hands in a
:class:`PassCatalogue`; :class:`surgeon.passes.registry.PassRegistry`
implements it.

The public functions (``load_recipe``, ``parse_recipe``,
``Recipe.from_steps``, ``recipe_json_schema``) take the catalogue as an
optional argument and otherwise use the *default catalogue*. The pass
registry module installs the global registry as that default when it is
imported (``set_default_catalogue(registry)`` at its end), and importing
``surgeon`` imports it, so ``surgeon.load_recipe("r.yaml")`` keeps working
unchanged while this layer never imports ``surgeon.passes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from surgeon.errors import suggestion_hint

# (path of the parameter, message, hint), as ``PassSpec.validate`` returns them.
ParamProblem = tuple[str, str, "str | None"]


class PassInfo(Protocol):
    """One pass, as far as a recipe is concerned."""

    @property
    def name(self) -> str: ...

    @property
    def summary(self) -> str:
        """One line: what the pass does (the JSON schema shows it)."""

    @property
    def params(self) -> Mapping[str, Any]:
        """The pass's parameters by name (only the names are read here)."""

    def validate(self, params: dict[str, Any]) -> list[ParamProblem]:
        """Every problem of the parameters: unknown, missing, wrong type, out of range."""

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the ``with:`` mapping, with ``required`` parameter names."""


class PassCatalogue(Protocol):
    """The passes a recipe may name."""

    def lookup(self, name: str) -> PassInfo | None:
        """The pass called ``name``, or None."""

    def names(self) -> list[str]:
        """Every pass name, sorted (for did-you-mean hints and the JSON schema)."""

    def import_plugin(self, module: str, beside: str | Path | None = None) -> None:
        """Import a recipe's ``plugins:`` module (or ``.py`` file, relative to ``beside``) so that
        the passes it registers are known; raises a :class:`~surgeon.errors.SurgeonError` saying why it cannot."""


_default: PassCatalogue | None = None


def set_default_catalogue(catalogue: PassCatalogue) -> None:
    """Make ``catalogue`` the one used when a recipe function is given none."""
    global _default
    _default = catalogue


def catalogue_or_default(catalogue: PassCatalogue | None) -> PassCatalogue:
    if catalogue is not None:
        return catalogue
    if _default is None:  # only when surgeon.recipe is used without the surgeon package's passes
        raise RuntimeError("no pass catalogue: pass registry=... or import surgeon.passes.registry first")
    return _default


def unknown_pass(name: str, catalogue: PassCatalogue) -> tuple[str, str]:
    """The message and hint for a step that names no known pass."""
    return f"unknown pass '{name}'", suggestion_hint(name, catalogue.names()) or "run 'surgeon passes' to list them"
