"""One recipe over many models: ``surgeon apply RECIPE MODEL... --out-dir DIR [--jobs N]``.

Each model is one :func:`surgeon.workflow.apply_file` job, run in a worker
process (a model zoo is hundreds of independent jobs, and onnx, gs and
onnxruntime hold the GIL). A job that fails is reported and the others still
run and write their outputs. The library call takes any
:class:`concurrent.futures.Executor`, so the same batch runs on a cluster:
``apply_many(..., executor=dask.distributed.Client().get_executor())`` (or
Ray's executor); jobs are plain picklable calls of :func:`run_job`.
"""

from __future__ import annotations

import glob
import os
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from surgeon.errors import SurgeonError, UsageError
from surgeon.progress import Progress, task


@dataclass
class JobResult:
    """What happened to one model."""

    model: str
    output: str
    status: str
    """"ok", "failed" (a user error: bad model, a step that does not fit it, verification), or "crashed" (a bug)."""
    nodes_before: int | None = None
    nodes_after: int | None = None
    seconds: float = 0.0
    error: str | None = None
    report: dict[str, Any] | None = None
    """The job's JSON report (as ``surgeon apply --report`` writes it)."""


@dataclass
class BatchResult:
    recipe: str
    jobs: list[JobResult] = field(default_factory=list)

    @property
    def failed(self) -> list[JobResult]:
        return [job for job in self.jobs if job.status != "ok"]

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "models": len(self.jobs), "failed": len(self.failed),
                "jobs": [asdict(job) for job in self.jobs]}


def expand_models(items: list[str]) -> list[tuple[Path, Path]]:
    """(model file, its output path relative to the output folder) for each item: a file, a folder
    (every ``*.onnx`` under it, keeping the sub-folders) or a glob pattern."""
    found: list[tuple[Path, Path]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            models = sorted(p for p in path.rglob("*.onnx") if p.is_file())
            if not models:
                raise UsageError(f"folder {item} holds no .onnx file")
            found += [(p, p.relative_to(path)) for p in models]
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise UsageError(f"no model matches {item}")
            found += [(p, Path(p.name)) for p in matches]
        else:
            raise UsageError(f"model not found: {item}")
    outputs: dict[Path, Path] = {}
    for model, relative in found:
        if relative in outputs and outputs[relative].resolve() != model.resolve():
            raise UsageError(f"{outputs[relative]} and {model} would both be written to {relative}",
                             hint="give their folder instead (sub-folders are kept), or run them separately")
        outputs[relative] = model
    unique = {model.resolve(): (model, relative) for model, relative in found}
    return list(unique.values())


def run_job(recipe: str, model: str, output: str, options: dict[str, Any]) -> JobResult:
    """Apply ``recipe`` to ``model`` and write ``output``; never raises for a user error (the result says)."""
    from surgeon.graph.walk import walk_nodes
    from surgeon.report import build_report
    from surgeon.workflow import VerifyOptions, apply_file

    start = time.perf_counter()
    verify = options.get("verify")
    folder = Path(output).parent
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        result = apply_file(recipe, model, output, verify_with=VerifyOptions(**verify) if verify else None,
                            check=options.get("check", "full"), variables=options.get("variables"),
                            provenance=options.get("provenance", True), dry_run=options.get("dry_run", False))
    except Exception as exc:  # a bug in surgeon or a plugin is "crashed": this model fails, the batch goes on
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a failed model leaves nothing behind, not even its folder
        if isinstance(exc, SurgeonError):
            return JobResult(model, output, "failed", seconds=time.perf_counter() - start, error=exc.render())
        return JobResult(model, output, "crashed", seconds=time.perf_counter() - start,
                         error=f"internal error: {type(exc).__name__}: {exc}")
    after = sum(1 for _ in walk_nodes(result.model.graph))
    removed = sum(len(step.removed) for step in result.applied.steps)
    added = sum(len(step.added) for step in result.applied.steps)
    return JobResult(model, output, "ok", nodes_before=after - added + removed, nodes_after=after,
                     seconds=time.perf_counter() - start, report=build_report(result))


def apply_many(recipe: str | Path, models: list[str], out_dir: str | Path, *, jobs: int | None = None,
               executor: Executor | None = None, options: dict[str, Any] | None = None,
               progress: Progress | None = None) -> BatchResult:
    """Apply ``recipe`` to every model (files, folders, globs) and write the results under ``out_dir``.

    ``jobs`` worker processes (default: the CPU count) unless ``executor`` is given; ``options`` are
    apply_file's: ``check``, ``variables``, ``provenance``, ``dry_run``, ``verify`` (VerifyOptions' fields
    as a dict).
    The recipe is read once here first, so a bad recipe fails before any job starts.
    """
    from surgeon.recipe.parse import load_recipe

    options = dict(options or {})
    load_recipe(recipe, variables=options.get("variables"))
    pairs = expand_models(models)
    out_dir = Path(out_dir)
    for model, relative in pairs:
        if (out_dir / relative).resolve() == model.resolve():
            raise UsageError(f"--out-dir {out_dir} would overwrite the input {model}",
                             hint="choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = BatchResult(str(recipe))
    own = executor is None and (jobs or 0) != 1
    pool: Executor | None = executor
    if own:
        pool = ProcessPoolExecutor(max_workers=min(jobs or os.cpu_count() or 1, len(pairs)))
    try:
        with task(progress, "models", total=len(pairs), unit="model") as bar:
            if pool is None:  # --jobs 1: in this process, one after another
                for model, relative in pairs:
                    bar.describe(model.name)
                    result.jobs.append(run_job(str(recipe), str(model), str(out_dir / relative), options))
                    bar.advance()
            else:
                futures: dict[Future, int] = {
                    pool.submit(run_job, str(recipe), str(model), str(out_dir / relative), options): i
                    for i, (model, relative) in enumerate(pairs)}
                done: dict[int, JobResult] = {}
                for future in as_completed(futures):
                    done[futures[future]] = future.result()
                    bar.describe(Path(done[futures[future]].model).name)
                    bar.advance()
                result.jobs = [done[i] for i in range(len(pairs))]  # in the order the models were given
    finally:
        if own and pool is not None:
            pool.shutdown(cancel_futures=True)
    return result


def render_batch(result: BatchResult) -> str:
    """The summary table ``surgeon apply`` prints for a batch."""
    rows = [("model", "status", "nodes", "seconds")]
    for job in result.jobs:
        nodes = f"{job.nodes_before} -> {job.nodes_after}" if job.nodes_after is not None else "-"
        rows.append((job.model, job.status, nodes, f"{job.seconds:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             .rstrip() for row in rows]
    for job in result.failed:
        lines.append(f"\n{job.model}:\n{job.error}")
    ok = len(result.jobs) - len(result.failed)
    lines.append(f"{ok} of {len(result.jobs)} models written" + (f", {len(result.failed)} failed"
                                                                   if result.failed else ""))
    return "\n".join(lines) + "\n"
