"""One whole job: recipe + model file -> edited, checked, verified model file.

This is what ``surgeon apply`` does, as a library call, so the CLI stays a
thin layer and Python users get the same behaviour (validation before the
model is read, atomic output, the input never overwritten by accident).

The edited model is saved into a private temporary folder first; it is
verified there and only moved into place when verification passed, so a
model that fails verification is never written (a dry run never moves it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surgeon.errors import StepError, SurgeonError
from surgeon.graph.collector import long_lived
from surgeon.io.load import load
from surgeon.io.model import Model
from surgeon.io.save import SaveResult, check_level, default_output_path, stage
from surgeon.passes.context import run_inputs
from surgeon.passes.custom_ops import recipe_scope
from surgeon.passes.runner import ApplyResult, StepReport, apply
from surgeon.progress import Progress, task
from surgeon.recipe.model import Recipe
from surgeon.recipe.parse import load_recipe
from surgeon.report import add_provenance, file_sha256, previous_run, rerun_note
from surgeon.verify import VerificationError, VerifyReport, verify


@dataclass
class VerifyOptions:
    """How to verify; ``None`` fields fall back to the recipe's ``verify:``, then to defaults."""

    reference: str | Path | None = None
    rtol: float | None = None
    atol: float | None = None
    dims: dict[str, int] = field(default_factory=dict)
    inputs: str | Path | None = None
    seed: int = 0
    recipe_dims: dict[str, int] = field(default_factory=dict)
    """The recipe's ``verify: dims`` (``dims`` are the command line's; they come first)."""


@dataclass
class FileResult:
    recipe: Recipe
    model: Model
    applied: ApplyResult
    saved: SaveResult | None = None
    warnings: list[str] = field(default_factory=list)
    model_path: Path | None = None
    input_sha256: str | None = None
    output_sha256: str | None = None
    verification: VerifyReport | None = None
    dry_run: bool = False
    target: Path | None = None
    """Where the output goes (or would go, in a dry run)."""
    check: str = "full"
    """The check level the output passed ("full", "basic", "none")."""
    check_seconds: float = 0.0
    """How long checking the output took."""


def apply_file(
    recipe: str | Path | Recipe,
    model_path: str | Path,
    output: str | Path | None = None,
    *,
    in_place: bool = False,
    dry_run: bool = False,
    verify_with: VerifyOptions | None = None,
    provenance: bool = True,
    check: str = "full",
    progress: Progress | None = None,
    no_verify: bool = False,
    variables: dict[str, str] | None = None,
    watch: Callable[[Model, StepReport | None], None] | None = None,
) -> FileResult:
    """Validate ``recipe``, load ``model_path``, run the steps, save the result.

    Without ``output`` the result goes to ``<stem>.surgeon.onnx`` beside the
    input; with ``in_place`` it replaces the input. ``verify_with`` (or a
    ``verify:`` section in the recipe) compares the result numerically with
    the input (or a reference) and raises :class:`VerificationError`, writing
    nothing, when they differ. ``dry_run`` runs everything and writes nothing.
    ``check`` is how much the written model is checked: "full", "basic" or
    "none" (:mod:`surgeon.io.save`); a property of the run, not of the recipe.
    ``progress`` (:class:`surgeon.progress.Progress`) hears of every stage.

    What is compared with what comes from the steps' verification contracts
    (``ApplyResult.correspondence``). A recipe with a step whose contract asks for it
    (a precision change such as ``to_fp16``) is verified even without ``verify_with``,
    unless ``no_verify``.
    ``watch`` sees the model before the first step and after each (:func:`surgeon.passes.runner.apply`).
    ``variables`` set the recipe's ``vars:`` (``--set name=value``; text, typed by the parameter it feeds).
    """
    check = check_level(check)  # a wrong value costs nothing either
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, variables=variables)  # before the model is touched: a bad recipe costs nothing
    elif variables:
        raise SurgeonError("variables can only be set on a recipe file", hint="pass the recipe's path, or build "
                           "the Recipe with the values already in its steps")
    options = None if no_verify else _verify_options(recipe, verify_with)
    if options is not None:  # before the model is read: a typo costs nothing
        for what, given in (("reference model", options.reference), ("verification inputs", options.inputs)):
            if given is not None and not isinstance(given, dict) and not Path(given).is_file():
                raise SurgeonError(f"{what} not found: {given}", hint="check the path (relative to the current "
                                   "directory on the command line, to the recipe in its verify: section)")
    model_path = Path(model_path)
    with task(progress, f"loading {model_path.name}"):
        model = load(model_path)
        with long_lived():
            input_sha = file_sha256(model_path)
    with long_lived():  # the model lives through the whole job: full collections skip its objects
        return _edit_and_save(recipe, model, model_path, input_sha, output, in_place, dry_run, options,
                              provenance, check, progress, no_verify, watch)


def _edit_and_save(recipe: Recipe, model: Model, model_path: Path, input_sha: str, output: str | Path | None,
                   in_place: bool, dry_run: bool, options: VerifyOptions | None, provenance: bool, check: str,
                   progress: Progress | None, no_verify: bool,
                   watch: Callable[[Model, StepReport | None], None] | None) -> FileResult:
    """apply_file after loading: run the steps, stage, check, verify, commit."""
    warnings = [w for w in [previous_run(model, recipe)] if w]
    with recipe_scope(recipe):  # the recipe's custom ops, for the steps and for checking the output
        return _apply_loaded(recipe, model, model_path, input_sha, warnings, output, in_place, dry_run, options,
                             provenance, check, progress, no_verify, watch)


def _apply_loaded(recipe: Recipe, model: Model, model_path: Path, input_sha: str, warnings: list[str],
                  output: str | Path | None, in_place: bool, dry_run: bool, options: VerifyOptions | None,
                  provenance: bool, check: str, progress: Progress | None, no_verify: bool,
                  watch: Callable[[Model, StepReport | None], None] | None) -> FileResult:
    # The real inputs verification will use are there for the steps too (to_fp16 measures activations on them).
    known = options if options is not None else None if no_verify else _verify_options(recipe, None)
    try:
        with run_inputs(known.inputs if known is not None else None):
            applied = apply(recipe, model, progress=progress, watch=watch)
    except StepError as exc:
        failed = next((s for s in recipe.steps if exc.message.startswith(f"{s.label}:")), None)
        note = rerun_note(model, recipe, failed)
        if note is None:
            raise
        raise StepError(diagnostics=[*exc.diagnostics, note]) from exc
    warnings += applied.warnings
    if options is None and applied.verify_by_default and not no_verify:
        options = _verify_options(recipe, VerifyOptions())
    if provenance:
        add_provenance(model, recipe, input_sha)
    target = model_path if in_place else Path(output) if output is not None else default_output_path(model_path)
    result = FileResult(recipe, model, applied, warnings=warnings, model_path=model_path, input_sha256=input_sha,
                        dry_run=dry_run, target=target)
    # A dry run still exports and checks the model, in the system's temporary folder.
    with task(progress, f"writing {target.name}"):
        staged = stage(model, target, in_place=in_place, folder=tempfile.gettempdir() if dry_run else None,
                       check=check, progress=progress)
    with staged:
        result.warnings += staged.warnings
        result.check, result.check_seconds = staged.check, staged.check_seconds
        if options is not None:
            result.verification = verify(model_path, staged.model_path, correspondence=applied.correspondence,
                                         reference=options.reference, rtol=options.rtol, atol=options.atol,
                                         dims=options.dims, recipe_dims=options.recipe_dims,
                                         inputs=options.inputs, seed=options.seed, progress=progress)
            if result.verification.status == "skipped" and applied.verify_by_default:
                # A precision change is written only once verified: nothing compared is no proof.
                remedy = result.verification.remedy
                result.verification.notes.append(
                    f"a recipe that changes precision is written only once verified: give {remedy}, or "
                    "--no-verify to write it unverified" if remedy else "a recipe that changes precision is "
                    "written only once verified, and nothing here can be compared: --no-verify writes it "
                    "unverified")
            unchecked = result.verification.behind_foreign_ops if applied.verify_by_default else []
            if unchecked and result.verification.status == "match":
                result.verification.status = "incomplete"
                # float16 after a custom op is neither measured (the activation run stops there) nor compared.
                result.verification.notes.append(
                    "a recipe that changes precision is written only once every output is verified; "
                    + ", ".join(repr(n) for n in unchecked) + " is not (the notes above say what would let it be): "
                    "--no-verify writes it unverified")
            if result.verification.status in ("mismatch", "failed", "inconclusive") or unchecked or \
                    (result.verification.status == "skipped" and applied.verify_by_default):
                error = VerificationError(result.verification)
                error.result = result
                raise error
            if result.verification.status == "skipped":
                result.warnings.append("verification skipped: nothing was compared (see the notes above)")
        if dry_run:
            return result
        result.saved = staged.commit()
        with task(progress, f"hashing {target.name}"):
            result.output_sha256 = file_sha256(target)
        return result


def _verify_options(recipe: Recipe, given: VerifyOptions | None) -> VerifyOptions | None:
    """Merge the command line's options over the recipe's ``verify:`` (paths there are
    relative to the recipe file)."""
    section: dict[str, Any] | None = recipe.verify
    if given is None and section is None:
        return None
    options = given or VerifyOptions()
    section = section or {}
    base = Path(recipe.path).parent if recipe.path else Path(".")
    for key in ("reference", "inputs"):
        if getattr(options, key) is None and section.get(key) is not None:
            setattr(options, key, base / section[key])
    for key in ("rtol", "atol"):
        if getattr(options, key) is None and section.get(key) is not None:
            setattr(options, key, float(section[key]))
    options.recipe_dims = {**section.get("dims", {}), **options.recipe_dims}
    return options
