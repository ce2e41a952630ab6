"""The ``surgeon`` command line: parses arguments, calls the library, renders results.

Exit codes: 0 success, 1 user error (message, no traceback), 2 usage error,
3 internal error (a bug: traceback and versions for the report).
"""

from __future__ import annotations

import argparse
import platform
import sys
import traceback
from pathlib import Path
from typing import Sequence, TextIO

from surgeon import __version__
from surgeon.errors import SurgeonError, UsageError

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print and sys.exit(2) itself
        raise UsageError(f"{message}\n{self.format_usage().strip()}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="surgeon", description="Declarative graph surgery for ONNX models.")
    p.add_argument("--version", action="version", version=f"surgeon {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    a = sub.add_parser("apply", help="run a recipe on a model and write the edited model")
    a.add_argument("recipe", help="YAML recipe file")
    a.add_argument("model", help="ONNX model file (never modified unless --in-place)")
    a.add_argument("-o", "--output", help="output file (default: <model>.surgeon.onnx beside the input)")
    a.add_argument("--in-place", action="store_true", help="replace the input model")
    a.add_argument("-q", "--quiet", action="store_true", help="print only errors and the output path")

    sub.add_parser("passes", help="list the available passes")
    e = sub.add_parser("explain", help="show a pass's parameters, rules and recipe example")
    e.add_argument("name", help="pass name")
    sub.add_parser("schema", help="print the JSON schema of recipes (for editors)")
    return p


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help(out)
            return EXIT_USAGE
        return _COMMANDS[args.command](args, out)
    except UsageError as exc:
        print(f"surgeon: {exc}", file=err)
        return EXIT_USAGE
    except SurgeonError as exc:
        print(str(exc), file=err)
        return EXIT_USER
    except SystemExit as exc:  # --version / --help
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("surgeon: interrupted; nothing was written", file=err)
        return EXIT_USER
    except Exception:
        print(traceback.format_exc(), file=err)
        print("surgeon: internal error: this is a bug in surgeon, not in your recipe or model.\n"
              "Please report it with the traceback above and these versions:\n" + versions(), file=err)
        return EXIT_BUG


def versions() -> str:
    import onnx
    import onnx_graphsurgeon
    import onnxruntime

    return (f"  surgeon {__version__}, onnx {onnx.__version__}, onnx-graphsurgeon {onnx_graphsurgeon.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}")


def _apply(args: argparse.Namespace, out: TextIO) -> int:
    from surgeon.workflow import apply_file

    if args.in_place and args.output:
        raise UsageError("--in-place and -o/--output exclude each other")
    result = apply_file(args.recipe, args.model, args.output, in_place=args.in_place)
    if not args.quiet:
        print(f"{args.recipe} on {args.model}:", file=out)
        for report in result.applied.steps:
            print(f"  {report.summary()}", file=out)
            for note in report.notes:
                print(f"      {note}", file=out)
        for warning in result.warnings:
            print(f"warning: {warning}", file=out)
    saved = result.saved
    extra = f" (weights in {saved.data_path.name})" if saved.data_path else ""
    print(f"wrote {saved.path}{extra}", file=out)
    return EXIT_OK


def _passes(args: argparse.Namespace, out: TextIO) -> int:
    from surgeon.passes.registry import registry

    specs = list(registry)
    width = max(len(s.name) for s in specs)
    for spec in specs:
        print(f"{spec.name.ljust(width)}  {spec.summary}", file=out)
    return EXIT_OK


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    from surgeon.passes.registry import registry

    out.write(registry.get(args.name).explain())
    return EXIT_OK


def _schema(args: argparse.Namespace, out: TextIO) -> int:
    import json

    from surgeon.recipe.schema import recipe_json_schema

    json.dump(recipe_json_schema(), out, indent=2)
    out.write("\n")
    return EXIT_OK


_COMMANDS = {"apply": _apply, "passes": _passes, "explain": _explain, "schema": _schema}


if __name__ == "__main__":  # python -m surgeon.cli
    sys.exit(main())
