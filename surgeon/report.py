"""The machine-readable account of a run (``--report FILE.json``) and the
provenance a surgeon-made model carries in its ``metadata_props``.

Both are documented in docs/trust.md; the report's ``schema`` field names its
version. Provenance holds no timestamp or path, so the same input and recipe
still give a byte-identical model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from surgeon.errors import Diagnostic
from surgeon.io.model import Model
from surgeon.recipe.model import Recipe

REPORT_SCHEMA = "surgeon.report/1"
PROVENANCE_KEYS = ("surgeon.version", "surgeon.recipe_sha256", "surgeon.recipe_steps", "surgeon.input_sha256")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def step_list(recipe: Recipe) -> list[dict[str, Any]]:
    return [{"id": s.id, "pass": s.pass_name, "with": s.params} for s in recipe.steps]


def recipe_sha256(recipe: Recipe) -> str:
    """The recipe file's hash; for a recipe built in Python, the hash of its step list."""
    if recipe.sha256:
        return recipe.sha256
    return hashlib.sha256(_json(step_list(recipe)).encode()).hexdigest()


def previous_run(model: Model, recipe: Recipe) -> str | None:
    """A warning when ``model`` was itself made by ``recipe`` (read from its provenance)."""
    props = model.metadata_props
    if props.get("surgeon.recipe_sha256") == recipe_sha256(recipe):
        return (f"this model was already made by this recipe (from an input with sha256 "
                f"{props.get('surgeon.input_sha256', '?')[:16]}...); applying it again is probably a mistake")
    return None


def rerun_note(model: Model, recipe: Recipe, failed: Any) -> Diagnostic | None:
    """A note for a step that failed on a model whose provenance shows this recipe (or this very
    step) already ran on it: the usual reason is a recipe applied to its own output."""
    props = model.metadata_props
    if "surgeon.recipe_sha256" not in props:
        return None
    source = props.get("surgeon.input_sha256", "?")[:16]
    hint = f"run the recipe on the original model (sha256 {source}...), not on a model it already made"
    if props["surgeon.recipe_sha256"] == recipe_sha256(recipe):
        return Diagnostic(f"this model was already made by this recipe (its metadata records the recipe's "
                          f"sha256 {props['surgeon.recipe_sha256'][:16]}...): the step has nothing left to do",
                          hint=hint, severity="note")
    try:
        done = json.loads(props.get("surgeon.recipe_steps", "[]"))
    except ValueError:
        return None
    if failed is None or not isinstance(done, list):
        return None
    if any(isinstance(d, dict) and d.get("pass") == failed.pass_name and d.get("with") == failed.params
           for d in done):
        return Diagnostic(f"this model's provenance (surgeon.recipe_steps) shows that a recipe already ran "
                          f"'{failed.pass_name}' with the same parameters on it", hint=hint, severity="note")
    return None


def add_provenance(model: Model, recipe: Recipe, input_sha256: str) -> None:
    """Record how the model is being made. Replaces an earlier run's record: the
    input hash links to that earlier file, whose own record tells the rest."""
    from surgeon import __version__

    props = model.metadata_props
    props.update({
        "surgeon.version": __version__,
        "surgeon.recipe_sha256": recipe_sha256(recipe),
        "surgeon.recipe_steps": _json(step_list(recipe)),
        "surgeon.input_sha256": input_sha256,
    })
    model.metadata_props = props


def build_report(result: Any) -> dict[str, Any]:
    """The JSON report of a :class:`surgeon.workflow.FileResult` (schema in docs/trust.md)."""
    from surgeon import __version__

    saved = result.saved
    verification = result.verification
    status = "ok"
    if verification is not None and verification.status in ("mismatch", "failed", "inconclusive", "incomplete"):
        status = "verification_failed"
    elif verification is not None and verification.status == "skipped":
        status = "verification_skipped"  # asked for, nothing compared: CI can tell it from a match
    return {
        "schema": REPORT_SCHEMA,
        "status": status,
        "surgeon_version": __version__,
        "dry_run": result.dry_run,
        "target": str(result.target) if result.target is not None else None,
        "recipe": {"path": result.recipe.path, "sha256": recipe_sha256(result.recipe)},
        "input": {"path": str(result.model_path), "sha256": result.input_sha256},
        "output": None if saved is None else {
            "path": str(saved.path), "sha256": result.output_sha256,
            "data_path": str(saved.data_path) if saved.data_path else None,
        },
        "check": {"level": result.check, "seconds": round(result.check_seconds, 6)},
        "steps": [report.to_dict() for report in result.applied.steps],
        "renamed": result.applied.renamed,
        "warnings": list(result.warnings),
        "verification": verification.to_dict() if verification is not None else None,
    }


def error_report(message: str) -> dict[str, Any]:
    """The report of a run that stopped with a user error before it could finish."""
    from surgeon import __version__

    return {"schema": REPORT_SCHEMA, "status": "error", "surgeon_version": __version__, "error": message}


def write_report(report: dict[str, Any], path: str | Path) -> None:
    """Write atomically: a CI job never reads half a report."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".surgeon-report-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(report, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
