"""Checking recipes in review, before any model is edited: ``surgeon validate``.

Recipes live in model repositories and are reviewed like code, so the checks a
pull request needs must run without writing anything:

- :func:`validate_recipe` reads a recipe the way ``surgeon apply`` does
  (format, pass names, parameter types and ranges, plugins imported, the
  read-time checks of each pass's parameters) and returns every problem with
  its ``file:line:col``. Given a model, it also runs the steps on it in memory
  and says what each step would do, so a recipe that no longer fits a
  re-exported model fails in review, not in deployment.
- :func:`run_checks` runs each (recipe, model) pair listed in a checks file
  the way ``surgeon apply --dry-run --verify`` does: every step, the written
  model checked and compared numerically with the input, nothing written.
  This is what the ``surgeon-check`` pre-commit hook runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surgeon.errors import Diagnostic, Location, RecipeError, SurgeonError
from surgeon.recipe.yaml import load_yaml

CHECKS_FILE = "surgeon-checks.yaml"
"""The default checks file of ``surgeon validate --checks`` (and of the surgeon-check hook)."""


@dataclass
class RecipeCheck:
    """The outcome for one recipe (and model, when one was given)."""

    recipe: str
    model: str | None = None
    steps: int = 0
    """How many steps the recipe has (0 when it could not be read)."""
    problems: list[Diagnostic] = field(default_factory=list)
    """Empty when the recipe is fine."""
    preview: list[str] = field(default_factory=list)
    """With a model: what each step did to it, one summary per step that ran."""
    verification: str | None = None
    """With a checks file: the verification's summary."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "model": self.model, "ok": self.ok, "steps": self.steps,
                "problems": [{"message": d.message, "location": str(d.location) if d.location else None,
                              "hint": d.hint} for d in self.problems],
                "preview": self.preview, "verification": self.verification}


def validate_recipe(recipe: str | Path, model: str | Path | None = None,
                    variables: dict[str, str] | None = None) -> RecipeCheck:
    """Check ``recipe`` without writing anything; with ``model``, also run its steps on it in memory.
    ``variables`` set the recipe's ``vars:`` as ``--set`` does."""
    from surgeon.recipe.parse import load_recipe

    check = RecipeCheck(str(recipe), str(model) if model is not None else None)
    try:
        parsed = load_recipe(recipe, variables=variables)
    except SurgeonError as exc:
        check.problems = list(exc.diagnostics)
        return check
    check.steps = len(parsed.steps)
    if model is None:
        return check
    from surgeon.io.load import load
    from surgeon.passes.runner import apply

    try:
        loaded = load(model)
    except SurgeonError as exc:
        check.problems = list(exc.diagnostics)
        return check
    # One step at a time, so the steps that ran before a failing one still say what they did.
    for step in parsed.steps:
        try:
            result = apply(dataclasses.replace(parsed, steps=(step,)), loaded)
        except SurgeonError as exc:
            check.problems = list(exc.diagnostics)
            return check
        check.preview += [report.summary() for report in result.steps]
    return check


@dataclass(frozen=True)
class CheckPair:
    """One entry of a checks file: a recipe and the model it is written for."""

    recipe: Path
    model: Path
    location: Location


def load_checks(path: str | Path) -> list[CheckPair]:
    """Read a checks file::

        checks:
          - recipe: recipes/strip_fooop.yaml   # paths relative to this file
            model: models/model_foo.onnx

    Raises :class:`RecipeError` listing every problem with its ``file:line:col``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"checks file not found: {path}",
                          hint=f"create it with a 'checks:' list of recipe/model pairs (see docs/review.md), "
                               f"or name another with --checks FILE (default {CHECKS_FILE})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read checks file {path}: {exc}") from None
    doc = load_yaml(text, str(path))
    problems = list(doc.problems)
    top = doc.value
    example = "checks:\n  - recipe: recipes/strip_fooop.yaml\n    model: models/model_foo.onnx"
    if not isinstance(top, dict) or not isinstance(top.get("checks"), list) or not top["checks"]:
        raise RecipeError(f"{path} must hold a non-empty 'checks:' list", location=doc.positions.location,
                          hint=f"for example:\n{example}")
    unknown = sorted(str(k) for k in top if k != "checks")
    for key in unknown:
        problems.append(Diagnostic(f"unknown key '{key}' in a checks file", doc.positions.key_location([key]),
                                   "a checks file has only 'checks:'"))
    pairs = []
    base = path.parent
    for i, entry in enumerate(top["checks"]):
        where = doc.positions.value_location(["checks", i])
        if not isinstance(entry, dict) or set(entry) != {"recipe", "model"}:
            problems.append(Diagnostic(f"check {i + 1} must have exactly the keys 'recipe' and 'model'", where,
                                       f"for example:\n{example}"))
            continue
        files = {}
        for key in ("recipe", "model"):
            value = entry[key]
            at = doc.positions.value_location(["checks", i, key])
            if not isinstance(value, str) or not (base / value).is_file():
                problems.append(Diagnostic(f"{key} not found: {value}", at,
                                           f"paths are relative to the checks file's folder ({base})"))
            files[key] = base / str(value)
        pairs.append(CheckPair(files["recipe"], files["model"], where))
    if problems:
        raise RecipeError(diagnostics=sorted(problems, key=lambda d: d.position))
    return pairs


def run_checks(path: str | Path) -> list[RecipeCheck]:
    """Run every pair of the checks file at ``path`` as ``surgeon apply --dry-run --verify`` would."""
    from surgeon.workflow import VerifyOptions, apply_file

    outcomes = []
    for pair in load_checks(path):
        check = RecipeCheck(str(pair.recipe), str(pair.model))
        try:
            result = apply_file(pair.recipe, pair.model, dry_run=True, verify_with=VerifyOptions())
        except SurgeonError as exc:
            partial = getattr(exc, "result", None)  # a verification failure carries the run it judged
            check.preview = [report.summary() for report in getattr(getattr(partial, "applied", None), "steps", [])]
            check.problems = list(exc.diagnostics)
        else:
            check.steps = len(result.recipe.steps)
            check.preview = [report.summary() for report in result.applied.steps]
            check.preview += [f"warning: {w}" for w in result.warnings]
            if result.verification is not None:
                check.verification = result.verification.summary()
        outcomes.append(check)
    return outcomes


def render_checks(checks: list[RecipeCheck]) -> str:
    """The text ``surgeon validate`` prints: one block per recipe, problems as ``file:line:col: error: ...``."""
    lines = []
    for check in checks:
        subject = check.recipe + (f" on {check.model}" if check.model else "")
        if check.ok:
            lines.append(f"{subject}: ok ({check.steps} step{'' if check.steps == 1 else 's'})")
        else:
            lines.append(f"{subject}: {len(check.problems)} problem{'' if len(check.problems) == 1 else 's'}")
        lines += [f"  {summary}" for summary in check.preview]
        if check.verification:
            lines.append(f"  verify: {check.verification}")
        lines += [d.render() for d in check.problems]
    bad = sum(not c.ok for c in checks)
    noun = "recipe" if len(checks) == 1 else "recipes"
    lines.append(f"{len(checks)} {noun} checked: " + ("all ok" if not bad else f"{bad} with problems"))
    return "\n".join(lines) + "\n"
