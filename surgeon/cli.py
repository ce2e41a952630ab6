"""The ``surgeon`` command line: parses arguments, calls the library, renders results.

Exit codes: 0 success, 1 user error (message, no traceback), 2 usage error,
3 internal error (a bug: traceback and versions for the report).
"""

from __future__ import annotations

import argparse
import platform
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from surgeon import __version__
from surgeon.errors import SurgeonError, UsageError
from surgeon.graph.correspondence import TOLERANCES
from surgeon.progress import Progress

if TYPE_CHECKING:
    from surgeon.workflow import VerifyOptions

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3
SCHEMA_FILE = "recipes/recipe.schema.json"
CHECKS_FILE = "surgeon-checks.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print and sys.exit(2) itself
        raise UsageError(f"{message}\n{self.format_usage().strip()}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="surgeon", description="Declarative graph surgery for ONNX models.")
    p.add_argument("--version", action="version", version=f"surgeon {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    a = sub.add_parser("apply", help="run a recipe on a model and write the edited model")
    a.add_argument("recipe", help="YAML recipe file")
    a.add_argument("model", nargs="+",
                   help="ONNX model file (never modified unless --in-place); with --out-dir, any number of "
                        "files, folders (every .onnx under them) or quoted glob patterns")
    a.add_argument("--out-dir", metavar="DIR",
                   help="apply the recipe to every MODEL, writing DIR/<name>.onnx (folders keep their "
                        "sub-folders); a failed model is reported and the others still written")
    a.add_argument("-j", "--jobs", type=int, metavar="N",
                   help="worker processes for --out-dir (default: the number of CPUs; 1: one after another "
                        "in this process)")
    a.add_argument("-o", "--output", help="output file (default: <model>.surgeon.onnx beside the input)")
    a.add_argument("--in-place", action="store_true", help="replace the input model")
    a.add_argument("-q", "--quiet", action="store_true",
                   help="print only errors and the output path (and no progress on the terminal)")
    a.add_argument("--check", choices=("full", "basic", "none"), default="full",
                   help="how much the written model is checked: full (default: the ONNX checker with shape "
                        "and type inference), basic (structure only: the checker without inference, and "
                        "surgeon's structure checks), none (nothing beyond writing)")
    a.add_argument("--dry-run", action="store_true", help="run every step and check the result, write nothing")
    a.add_argument("--report", metavar="FILE.json", help="write a JSON account of the run (see docs/trust.md)")
    a.add_argument("--html", metavar="FILE.html",
                   help="write a self-contained page that draws what each step changed")
    a.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="variables",
                   help="set a variable of the recipe's vars: (repeatable; typed by the parameter it feeds)")
    a.add_argument("--no-provenance", action="store_true",
                   help="do not record surgeon version, recipe and input hashes in the output's metadata")
    v = a.add_argument_group("verification (any of these turns it on; so do a recipe's verify: and a "
                             "precision change such as to_fp16)")
    v.add_argument("--verify", action="store_true",
                   help="run the input (or --reference) and the output in onnxruntime and compare outputs "
                        "as each step's verification contract says")
    v.add_argument("--no-verify", action="store_true",
                   help="do not verify, not even a recipe that changes precision")
    v.add_argument("--reference", metavar="MODEL", help="compare against this model instead of the input")
    _comparison_options(v)

    i = sub.add_parser("inspect", help="describe a model: IO, opsets, ops, weights, custom domains")
    i.add_argument("model", help="ONNX model file")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--recipe", metavar="RECIPE", help="also use this recipe's custom_ops: declarations")
    i.add_argument("--nodes", action="store_true", help="list the nodes: name, op, inputs -> outputs")
    i.add_argument("--tensors", action="store_true", help="list the tensors: name, type, where it comes from")
    i.add_argument("--op", help="with --nodes/--tensors: only nodes of this op type (tensors they read or write)")
    i.add_argument("--name", help="with --nodes/--tensors: only names containing this text (case-insensitive); "
                                   "with * ? or [ it is a glob the whole name must match ('*lstm*')")
    d = sub.add_parser("diff", help="structural difference between two models")
    d.add_argument("a", help="first (old) model")
    d.add_argument("b", help="second (new) model")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument("--exit-code", action="store_true",
                   help="exit with 1 when the models differ, 0 when they are identical, 2 when they cannot be "
                        "compared (like diff(1))")

    d.add_argument("--html", metavar="FILE.html",
                   help="also write a self-contained page that draws the changed part of the graph")

    c = sub.add_parser("verify", help="compare two models' outputs in onnxruntime")
    c.add_argument("a", help="the baseline model (e.g. the original)")
    c.add_argument("b", help="the model to check (e.g. the edited one)")
    c.add_argument("--report", metavar="FILE.json", help="write the comparison as JSON")
    c.add_argument("--tolerance", choices=TOLERANCES, default="dtype",
                   help="how far floats may differ: dtype (each output dtype's default), reassociated (float "
                        "arithmetic reordered: 1e-4 of each output's scale), fp16 (b computes in float16: 1e-2 "
                        "of each output's scale, or on the logits of a final Sigmoid/Tanh/Softmax). Default: dtype")
    _comparison_options(c)
    w = sub.add_parser("view", help="open a model in Netron (needs the optional netron extra)")
    w.add_argument("model", help="ONNX model file")
    w.add_argument("--port", type=int, default=8080, help="local port Netron serves on (default 8080)")
    w.add_argument("--no-browser", action="store_true", help="serve and print the address; do not open a browser")

    sub.add_parser("passes", help="list the available passes")
    e = sub.add_parser("explain", help="show a pass's parameters, rules and recipe example")
    e.add_argument("name", help="pass name")
    s = sub.add_parser("schema", help="print (or --write) the JSON schema of recipes, for editors")
    s.add_argument("--write", nargs="?", const=SCHEMA_FILE, metavar="FILE",
                   help=f"write the schema to FILE (default {SCHEMA_FILE}) if it differs, instead of printing it")
    s.add_argument("--check", nargs="?", const=SCHEMA_FILE, metavar="FILE",
                   help="exit 1 when FILE is not the current schema (a stale schema misleads editors)")
    val = sub.add_parser("validate", help="check recipes without writing anything (--model: against a model)")
    val.add_argument("recipes", nargs="*", metavar="RECIPE", help="recipe files")
    val.add_argument("--model", metavar="MODEL",
                     help="also run every step on MODEL in memory and say what each would do")
    val.add_argument("--checks", nargs="?", const=CHECKS_FILE, metavar="FILE",
                     help=f"run each recipe/model pair listed in FILE (default {CHECKS_FILE}) as "
                          "apply --dry-run --verify would")
    val.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="variables",
                     help="set a variable of the recipes' vars: (repeatable)")
    val.add_argument("--json", action="store_true", help="print JSON")
    return p


def _comparison_options(group: argparse._ActionsContainer) -> None:
    group.add_argument("--rtol", type=float, help="relative tolerance for float outputs (default: per dtype, "
                                                  "or what the steps' contracts call for)")
    group.add_argument("--atol", type=float, help="absolute tolerance for float outputs (default as for --rtol)")
    group.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                       help="size of a symbolic input dimension (repeatable); '?=N' sizes the unnamed '?'/-1 "
                            "dimensions. Default: the recipe's verify: dims, the --inputs arrays, the model's "
                            "metadata, then 224 for image height/width, 2 for a batch, 16 otherwise")
    group.add_argument("--inputs", metavar="FILE.npz",
                       help="real inputs (numpy.savez, one array per input of the edited model, by name)")
    group.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = None
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help(out)
            return EXIT_USAGE
        return _COMMANDS[args.command](args, out, err)
    except UsageError as exc:
        print(f"surgeon: {exc}", file=err)
        return EXIT_USAGE
    except SurgeonError as exc:
        print(str(exc), file=err)
        _report_failure(argv, exc, err)
        # diff --exit-code says "differ" with 1, so trouble is 2 there, as for diff(1).
        return EXIT_USAGE if getattr(args, "exit_code", False) else EXIT_USER
    except SystemExit as exc:  # --version / --help
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("surgeon: interrupted; nothing was written", file=err)
        return EXIT_USER
    except BrokenPipeError:  # `surgeon schema | head`: the reader left; nothing went wrong here
        _silence_stdout()
        return EXIT_OK
    except Exception:
        print(traceback.format_exc(), file=err)
        print("surgeon: internal error: this is a bug in surgeon, not in your recipe or model.\n"
              "Please report it with the traceback above and these versions:\n" + versions(), file=err)
        return EXIT_BUG


def _silence_stdout() -> None:
    # Python flushes stdout once more at exit and would complain about the closed pipe.
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def versions() -> str:
    import onnx
    import onnx_graphsurgeon
    import onnxruntime

    return (f"  surgeon {__version__}, onnx {onnx.__version__}, onnx-graphsurgeon {onnx_graphsurgeon.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}")


def _report_failure(argv: Sequence[str] | None, exc: SurgeonError, err: TextIO) -> None:
    """With --report, a failed run still leaves a report (CI reads it to see why)."""
    try:
        args = build_parser().parse_args(argv)
    except SurgeonError:
        return
    path = getattr(args, "report", None)
    if not path:
        return
    from surgeon.verify import VerificationError

    if args.command == "verify" and isinstance(exc, VerificationError):
        return  # `surgeon verify` wrote the comparison itself
    from surgeon.report import build_report, error_report, write_report

    result = getattr(exc, "result", None)
    report = build_report(result) if result is not None else error_report(exc.render())
    try:
        write_report(report, path)
    except OSError as os_exc:
        print(f"warning: cannot write the report {path}: {os_exc.strerror}", file=err)


@contextmanager
def _progress(err: TextIO, quiet: bool) -> Iterator[Progress | None]:
    """Progress on ``err`` when it is a terminal and not ``-q``; cleared before anything else is printed."""
    try:
        tty = err.isatty()
    except (AttributeError, ValueError):
        tty = False
    if quiet or not tty:
        yield None
        return
    from surgeon.terminal import TerminalProgress

    with TerminalProgress(err) as display:
        yield display


def _apply(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from surgeon.report import build_report, write_report
    from surgeon.workflow import VerifyOptions, apply_file

    if args.in_place and args.output:
        raise UsageError("--in-place and -o/--output exclude each other")
    if args.report and not Path(args.report).resolve().parent.is_dir():
        raise UsageError(f"--report: folder {Path(args.report).parent} does not exist")
    if args.no_verify and (args.verify or args.reference):
        raise UsageError("--no-verify excludes --verify and --reference")
    if args.jobs is not None and (args.jobs < 1 or args.out_dir is None):
        raise UsageError("--jobs takes a positive number of worker processes, with --out-dir")
    options = None
    if args.verify or args.reference or args.rtol is not None or args.atol is not None or args.dim or args.inputs:
        options = VerifyOptions(args.reference, args.rtol, args.atol, _dims(args.dim), args.inputs, args.seed)
    if args.out_dir is not None:
        return _apply_many(args, options, out, err)
    if len(args.model) > 1:
        raise UsageError(f"{len(args.model)} models given: to apply the recipe to each, add --out-dir DIR")
    [args.model] = args.model
    pictures = None
    if args.html:
        from surgeon.views.picture import RunPictures

        if not Path(args.html).resolve().parent.is_dir():
            raise UsageError(f"--html: folder {Path(args.html).parent} does not exist")
        pictures = RunPictures()
    from surgeon.verify import VerificationError

    try:
        with _progress(err, args.quiet) as progress:
            result = apply_file(args.recipe, args.model, args.output, in_place=args.in_place,
                                dry_run=args.dry_run, verify_with=options, provenance=not args.no_provenance,
                                check=args.check, progress=progress, no_verify=args.no_verify,
                                variables=_variables(args.variables), watch=pictures)
    except VerificationError as exc:
        if not args.quiet and exc.result is not None:  # what the steps did (kept in float32, ...) explains it
            _print_steps(args, exc.result, out)
        raise
    if pictures is not None:
        _write_text(args.html, pictures.page(args.recipe, args.model))
    if not args.quiet:
        _print_steps(args, result, out)
        if result.check != "none":
            print(f"checked ({result.check}) in {result.check_seconds:.2f} s", file=out)
        if result.verification is not None:
            print(f"verify: {result.verification.summary()}", file=out)
        for warning in result.warnings:
            print(f"warning: {warning}", file=err)
    if args.report:
        write_report(build_report(result), args.report)
    if result.dry_run:
        print(f"dry run: nothing written (would write {result.target})", file=out)
        return EXIT_OK
    saved = result.saved
    if saved is None:  # apply_file saves whenever it is not a dry run
        raise AssertionError("apply_file returned without saving and without a dry run")
    extra = f" (weights in {saved.data_path.name})" if saved.data_path else ""
    print(f"wrote {saved.path}{extra}", file=out)
    return EXIT_OK


def _print_steps(args: argparse.Namespace, result, out: TextIO) -> None:
    print(f"{args.recipe} on {args.model}:", file=out)
    for report in result.applied.steps:
        print(f"  {report.summary()}", file=out)
        for note in report.notes:
            print(f"      {note}", file=out)


def _verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from surgeon.graph.correspondence import Correspondence
    from surgeon.verify import VerificationError, verify

    if args.report and not Path(args.report).resolve().parent.is_dir():
        raise UsageError(f"--report: folder {Path(args.report).parent} does not exist")
    for path in (args.a, args.b, args.inputs):
        if path is not None and not Path(path).is_file():
            raise SurgeonError(f"not found: {path}", hint="check the path")
    report = verify(args.a, args.b, rtol=args.rtol, atol=args.atol, dims=_dims(args.dim), inputs=args.inputs,
                    seed=args.seed, correspondence=Correspondence(tolerance=args.tolerance))
    if args.report:
        import json

        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if report.status != "match":
        raise VerificationError(report, writing=False)
    print(f"verify: {report.summary()}", file=out)
    return EXIT_OK


def _apply_many(args: argparse.Namespace, verify: VerifyOptions | None, out: TextIO, err: TextIO) -> int:
    import dataclasses

    from surgeon.batch import apply_many, render_batch
    from surgeon.report import write_report

    if args.output or args.in_place:
        raise UsageError("--out-dir names every output: leave out -o/--output and --in-place")
    options = {"check": args.check, "variables": _variables(args.variables), "provenance": not args.no_provenance,
               "dry_run": args.dry_run,
               "verify": dataclasses.asdict(verify) if verify is not None else None}
    with _progress(err, args.quiet) as progress:
        result = apply_many(args.recipe, args.model, args.out_dir, jobs=args.jobs, options=options,
                            progress=progress)
    out.write(render_batch(result))
    if args.report:
        write_report(result.to_dict(), args.report)
    return EXIT_USER if result.failed else EXIT_OK


def _variables(items: list[str]) -> dict[str, str] | None:
    """``--set NAME=VALUE`` pairs; the value stays text until the parameter it feeds types it."""
    variables = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set {item!r}: expected NAME=VALUE, e.g. --set score=0.4")
        if name in variables:
            raise UsageError(f"--set {name} is given twice")
        variables[name] = value
    return variables or None


def _dims(items: list[str]) -> dict[str, int]:
    dims = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.isdigit() or int(value) < 1:
            raise UsageError(f"--dim {item!r}: expected NAME=N with a positive integer N, e.g. --dim N=2 "
                             "(or ?=N for unnamed dimensions)")
        dims[name] = int(value)
    return dims


def _inspect(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import json

    from surgeon.passes.custom_ops import recipe_scope
    from surgeon.recipe import Recipe, load_recipe
    from surgeon.views import inspect as view

    if (args.op or args.name) and not (args.nodes or args.tensors):
        raise UsageError("--op and --name filter the listings: add --nodes or --tensors")
    recipe = load_recipe(args.recipe) if args.recipe else Recipe(())
    shown = []
    with recipe_scope(recipe):
        if args.nodes:
            shown.append((view.list_nodes(args.model, op=args.op, name=args.name), view.render_nodes))
        if args.tensors:
            shown.append((view.list_tensors(args.model, op=args.op, name=args.name), view.render_tensors))
        if not shown:
            shown.append((view.inspect_model(args.model), view.render_inspection))
    if args.json:
        data = shown[0][0] if len(shown) == 1 else {"nodes": shown[0][0], "tensors": shown[1][0]}
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        out.write("".join(render(info) for info, render in shown))
    return EXIT_OK


def _diff(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import json

    from surgeon.views.diff import diff_models, differs, render_diff

    delta = diff_models(args.a, args.b)
    text = render_diff(delta)
    out.write(json.dumps(delta, indent=2) + "\n" if args.json else text)
    if args.html:
        from surgeon.io.load import read_proto
        from surgeon.views.picture import diff_page, structure_of_proto

        a, b = (structure_of_proto(read_proto(Path(p))) for p in (args.a, args.b))
        _write_text(args.html, diff_page(args.a, args.b, a, b, delta, text))
        print(f"wrote {args.html}", file=err)
    return EXIT_USER if args.exit_code and differs(delta) else EXIT_OK


def _write_text(path: str, text: str) -> None:
    """Write a report file whole or not at all."""
    target = Path(path)
    if not target.resolve().parent.is_dir():
        raise UsageError(f"folder {target.parent} does not exist (for {path})")
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)


def _view(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        import netron
    except ImportError:
        raise SurgeonError("surgeon view needs Netron, which is not installed",
                           hint="pip install 'surgeon[netron]' (or pip install netron), then run "
                                f"surgeon view {args.model} again") from None
    model = Path(args.model)
    if not model.is_file():
        raise SurgeonError(f"model not found: {model}", hint="check the path")
    address = netron.start(str(model), address=("localhost", args.port), browse=not args.no_browser)
    host, port = address if isinstance(address, tuple) else ("localhost", args.port)
    print(f"Netron shows {model} at http://{host}:{port} (Ctrl+C to stop)", file=out, flush=True)
    try:
        netron.wait()
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _passes(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from surgeon.passes.registry import registry

    specs = list(registry)
    width = max(len(s.name) for s in specs)
    for spec in specs:
        print(f"{spec.name.ljust(width)}  {spec.summary}", file=out)
    return EXIT_OK


def _explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from surgeon.passes.registry import registry

    out.write(registry.get(args.name).explain())
    return EXIT_OK


def _schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from surgeon.recipe.schema import schema_text

    text = schema_text()
    if args.write is None and args.check is None:
        out.write(text)
        return EXIT_OK
    if args.write is not None and args.check is not None:
        raise UsageError("--write and --check exclude each other")
    path = Path(args.write or args.check)
    if not path.parent.is_dir():
        raise UsageError(f"folder {path.parent} does not exist (run from the repository root, or name the file)")
    current = path.read_text(encoding="utf-8") if path.is_file() else None
    if args.check is not None:
        if current == text:
            print(f"{path}: up to date", file=out)
            return EXIT_OK
        print(f"{path}: {'missing' if current is None else 'stale'}: regenerate it with "
              f"`surgeon schema --write {path}`", file=err)
        return EXIT_USER
    if current == text:
        print(f"{path}: already up to date", file=out)
        return EXIT_OK
    _write_text(str(path), text)  # never a half-written schema
    print(f"wrote {path}", file=out)
    return EXIT_OK


def _validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import json

    from surgeon.review import render_checks, run_checks, validate_recipe

    if args.checks is not None:
        if args.recipes or args.model:
            raise UsageError("--checks runs the pairs its file lists: give no RECIPE and no --model with it")
        checks = run_checks(args.checks)
    elif not args.recipes:
        raise UsageError("give at least one RECIPE (or --checks FILE)")
    else:
        variables = _variables(args.variables)
        checks = [validate_recipe(recipe, args.model, variables) for recipe in args.recipes]
    out.write(json.dumps([c.to_dict() for c in checks], indent=2) + "\n" if args.json else render_checks(checks))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_USER


_COMMANDS = {"apply": _apply, "verify": _verify, "passes": _passes, "explain": _explain, "schema": _schema,
             "inspect": _inspect, "diff": _diff, "validate": _validate, "view": _view}


if __name__ == "__main__":  # python -m surgeon.cli
    sys.exit(main())
