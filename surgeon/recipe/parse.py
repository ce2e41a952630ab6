"""Read a recipe file into a validated :class:`Recipe`, reporting every problem at once.

Format (version 1)::

    version: 1                      # required
    description: Strip FooOp        # optional
    plugins: [my_passes]            # optional modules (or .py files beside the recipe) that register passes
    verify: {rtol: 1.0e-4, atol: 1.0e-5, dims: {N: 2}, inputs: x.npz, reference: ref.onnx}
    custom_ops:                     # optional: what plugin ops do to dtypes and shapes
      - {op: FooOp, domain: devtech, outputs: [{dtype: input0, shape: input0}]}
    steps:                          # required, at least one
      - id: drop-fooop              # optional, unique
        pass: remove_node           # required, a registered pass
        with: {op: FooOp}           # the pass's parameters
        allow_missing: true         # sugar for with.allow_missing (passes that select nodes)
        expect: {removed: 1}        # checked after the step runs

Every problem is a :class:`Diagnostic` at the file position of the offending
key or value; all of them are raised together, sorted by position, as one
:class:`RecipeError`. Only a YAML syntax error stops parsing early.

The allowed keys come from :mod:`surgeon.recipe.fields`; passes are looked up
in a :class:`~surgeon.recipe.catalogue.PassCatalogue` (the global pass
registry unless one is given). Steps built in Python (``Recipe.from_steps``)
go through the same parser, without positions: their messages are the YAML
ones, prefixed with the step's label where the message does not name the step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surgeon.errors import Diagnostic, Location, RecipeError, SurgeonError
from surgeon.recipe.catalogue import PassCatalogue, PassInfo, catalogue_or_default
from surgeon.recipe.custom_ops import CustomOp, check_custom_ops, custom_ops_of
from surgeon.recipe.expand import expand
from surgeon.recipe.fields import STEP_KEYS, SUPPORTED_VERSIONS, TOP_KEYS, VERIFY_FIELDS, key_list, key_suggestion
from surgeon.recipe.model import Recipe, Step
from surgeon.recipe.types import check_type
from surgeon.recipe.validate import Problem, check_fields, check_step, duplicate_ids, kind_of
from surgeon.recipe.yaml import Positions, load_yaml

__all__ = ["SUPPORTED_VERSIONS", "load_recipe", "parse_recipe", "recipe_from_steps", "validate_steps"]


def load_recipe(path: str | Path, registry: PassCatalogue | None = None, *,
                variables: dict[str, str] | None = None) -> Recipe:
    """Read and validate the recipe file at ``path``; ``variables`` are ``--set`` values (text) for its ``vars:``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}", hint="check the path") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}",
                          hint="the recipe must be a readable file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        swapped = str(path).endswith(".onnx") or data[:2] == b"\x08"
        raise RecipeError(f"recipe {path} is not UTF-8 text (byte {exc.start} is invalid)",
                          hint="this looks like a model: the recipe comes first (surgeon apply RECIPE MODEL)"
                          if swapped else "save the recipe as UTF-8") from None
    recipe = parse_recipe(text, filename=str(path), registry=registry, variables=variables)
    return dataclasses.replace(recipe, path=str(path))


def parse_recipe(text: str, filename: str = "<recipe>", registry: PassCatalogue | None = None, *,
                 variables: dict[str, str] | None = None) -> Recipe:
    """Parse and validate recipe text; ``filename`` is used in messages, to find plugins and included files.

    Plugin modules are imported (the folder of ``filename`` is searched first)
    before the steps are checked, so that the passes they register are known.
    ``include:`` steps and ``${var}`` references are resolved first
    (:mod:`surgeon.recipe.expand`), ``variables`` overriding ``vars:`` defaults.
    """
    doc = load_yaml(text, filename)
    catalogue = catalogue_or_default(registry)
    expanded = expand(doc.value, doc.positions, filename, catalogue, variables)
    parser = _Parser(expanded.positions, filename, catalogue)
    parser.diagnostics += [*doc.problems, *expanded.diagnostics]
    recipe = parser.recipe(expanded.value)
    if parser.diagnostics:
        # An unknown variable is the problem; the parameter's type error about '${name}' only repeats it.
        unresolved = {d.location for d in expanded.diagnostics if d.message.startswith("unknown variable")}
        kept = [d for d in parser.diagnostics if d.location not in unresolved or d in expanded.diagnostics]
        kept = list(dict.fromkeys(kept))  # a file included twice reports its problems once
        located = sorted(kept, key=lambda d: (d.location is not None and d.location.file != filename,
                                              *d.position))
        raise RecipeError(diagnostics=located)
    # Same bytes as the file when read by load_recipe: UTF-8 decoding round-trips exactly. What the
    # recipe includes and the values set for it change what runs, so they join the hash.
    digest = hashlib.sha256(text.encode("utf-8"))
    for path, included in expanded.included:
        digest.update(f"\0include {path}\0".encode() + included.encode("utf-8"))
    for name, value in sorted((variables or {}).items()):
        digest.update(f"\0set {name}={value}".encode())
    return dataclasses.replace(recipe, sha256=digest.hexdigest(), variables=expanded.variables,
                               included=tuple(path for path, _ in expanded.included))


def recipe_from_steps(steps: Any, description: str = "", registry: PassCatalogue | None = None) -> Recipe:
    """A recipe from steps written in Python, checked like a YAML recipe (see ``Recipe.from_steps``).

    A step is a mapping with the keys of a YAML step (``{"pass": ..., "with": {...}}``)
    or a ``(pass name, parameters)`` pair.
    """
    items = [{"pass": item[0], "with": item[1]} if isinstance(item, tuple) and len(item) == 2 else item
             for item in steps]
    parser = _Parser(None, "<python>", catalogue_or_default(registry))
    built = parser.steps({"steps": items})
    if parser.diagnostics:
        raise RecipeError(diagnostics=parser.diagnostics)
    return Recipe(tuple(built), description=description)


def validate_steps(steps: Sequence[Step], registry: PassCatalogue | None = None) -> None:
    """Validate :class:`Step` objects built in Python; raises one :class:`RecipeError` listing every problem."""
    items = []
    for step in steps:
        item: dict[str, Any] = {"pass": step.pass_name, "with": step.params}
        if step.id is not None:
            item["id"] = step.id
        if step.expect is not None:
            item["expect"] = step.expect
        items.append(item)
    recipe_from_steps(items, registry=registry)


class _Parser:
    """Walks the parsed YAML, collecting diagnostics; builds the recipe as far as it can.

    Without ``positions`` (steps built in Python) there are no file locations:
    a message about a step is prefixed with the step's label instead, unless
    it names the step itself.
    """

    def __init__(self, positions: Positions | None, filename: str, catalogue: PassCatalogue) -> None:
        self.positions = positions
        self.filename = filename
        self.catalogue = catalogue
        self.diagnostics: list[Diagnostic] = []
        self.label: str | None = None  # the step being parsed, in Python mode

    def error(self, location: Location | None, message: str, hint: str | None = None,
              names_step: bool = False) -> None:
        if location is None and self.label is not None and not names_step:
            message = f"{self.label}: {message}"
        self.diagnostics.append(Diagnostic(message, location, hint))

    def at(self, path: tuple[Any, ...], key: bool = False) -> Location | None:
        if self.positions is None:
            return None
        return self.positions.key_location(path) if key else self.positions.value_location(path)

    def line_of(self, path: tuple[Any, ...], key: bool = False) -> str:
        """`` on line N`` where the value (or key) at ``path`` was written; nothing in Python mode."""
        where = self.at(path, key)
        return f" on line {where.line}" if where is not None else ""

    # -- top level --------------------------------------------------------------------

    def recipe(self, value: Any) -> Recipe:
        if value is None:
            self.error(self.at(()), "the recipe is empty",
                       "a recipe needs at least 'version: 1' and a 'steps:' list")
            return Recipe(())
        if not isinstance(value, dict):
            self.error(self.at(()), f"a recipe must be a mapping with 'version' and 'steps', got {kind_of(value)}",
                       "start the file with 'version: 1' and put the steps under 'steps:'")
            return Recipe(())
        for key in value:
            if key not in TOP_KEYS:
                hint = key_suggestion(key, TOP_KEYS) or "allowed keys: " + key_list(TOP_KEYS)
                self.error(self.at((key,), key=True), f"unknown key '{key}' in the recipe", hint)
        version = self.version(value)
        description = self.typed(value, "description", TOP_KEYS["description"].annotation, "")
        plugins = self.plugins(value.get("plugins", []))
        verify = value.get("verify")
        if "verify" in value:
            for p in check_fields(verify, VERIFY_FIELDS, "verify"):
                self.error(self.at(p.path, p.at_key), p.message, p.hint)
        custom = self.custom_ops(value)
        steps = self.steps(value)
        return Recipe(tuple(steps), version, description=description, plugins=tuple(plugins), verify=verify,
                      custom_ops=custom)

    def custom_ops(self, mapping: dict) -> tuple[CustomOp, ...]:
        """The ``custom_ops:`` declarations (none when the section has a problem, after reporting it)."""
        if "custom_ops" not in mapping:
            return ()
        problems = check_custom_ops(mapping["custom_ops"])
        for p in problems:
            self.error(self.at(p.path, p.at_key), p.message, p.hint)
        if problems:
            return ()
        value = mapping["custom_ops"]
        return custom_ops_of(value, [self.at(("custom_ops", i)) for i in range(len(value))])

    def typed(self, mapping: dict, key: str, annotation: Any, default: Any, path: tuple[Any, ...] = ()) -> Any:
        """``mapping[key]`` if it has the right type, else ``default`` (and the problem is reported)."""
        if key not in mapping:
            return default
        problems = check_type(mapping[key], annotation)
        for _, message, hint in problems:
            self.error(self.at(path + (key,)), f"'{key}': {message}", hint)
        return default if problems else mapping[key]

    def version(self, mapping: dict) -> int:
        """The recipe's format version (the newest one when it is missing or wrong, after reporting it)."""
        newest = SUPPORTED_VERSIONS[-1]
        if "version" not in mapping:
            self.error(self.at(()), "the recipe has no 'version'", f"add 'version: {newest}' at the top")
            return newest
        version = mapping["version"]
        if not isinstance(version, int) or isinstance(version, bool):
            self.error(self.at(("version",)), f"'version' must be an integer, got {kind_of(version)}",
                       f"write 'version: {newest}'")
            return newest
        if version not in SUPPORTED_VERSIONS:
            supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
            self.error(self.at(("version",)), f"unsupported recipe version {version}",
                       f"this surgeon reads recipe version {supported}; a newer recipe needs a newer surgeon")
            return newest
        return version

    def plugins(self, plugins: Any) -> list[str]:
        if not isinstance(plugins, list):
            self.error(self.at(("plugins",)), f"'plugins' must be a list of module names, got {kind_of(plugins)}",
                       "write 'plugins: [my_passes]'")
            return []
        folder = str(Path(self.filename).parent.resolve())
        added = folder not in sys.path
        if added:  # plugins beside the recipe are found without installing them
            sys.path.insert(0, folder)
        try:
            return [name for i, name in enumerate(plugins) if self.plugin(name, ("plugins", i))]
        finally:
            if added:
                sys.path.remove(folder)

    def plugin(self, name: Any, path: tuple[Any, ...]) -> bool:
        if not isinstance(name, str):
            self.error(self.at(path), f"a plugin must be a module name or a .py file, got {kind_of(name)}",
                       "write the module's import name, e.g. 'my_passes', or the file's path relative to "
                       "the recipe, e.g. 'passes/my_passes.py'")
            return False
        folder = Path(self.filename).parent
        if name.endswith(".py") or "/" in name or "\\" in name:
            file = folder / name
            if not name.endswith(".py") or not file.is_file():
                self.error(self.at(path), f"plugin file '{name}' not found: {file.resolve()} "
                           + ("does not exist" if name.endswith(".py") else "is not a .py file"),
                           _plugin_hint(name, folder))
                return False
        try:
            self.catalogue.import_plugin(name, beside=folder)
        except SurgeonError as exc:  # not importable, or it registers a clashing pass
            hint = exc.hint
            if exc.message.startswith("cannot import plugin module"):
                hint = _plugin_hint(name, folder) or hint
            self.error(self.at(path), exc.message, hint)
            return False
        return True

    # -- steps ------------------------------------------------------------------------

    def steps(self, mapping: dict) -> list[Step]:
        if "steps" not in mapping:
            self.error(self.at(()), "the recipe has no 'steps'",
                       "add a 'steps:' list of the passes to run, e.g. '- pass: cleanup'")
            return []
        steps = mapping["steps"]
        if not isinstance(steps, list):
            self.error(self.at(("steps",)), f"'steps' must be a list, got {kind_of(steps)}",
                       "start each step with '- ', e.g. '- pass: cleanup'")
            return []
        if not steps:
            if self.positions is None:
                self.error(None, "a recipe needs at least one step", "add a step, e.g. ('cleanup', {})")
            else:
                self.error(self.at(("steps",)), "'steps' is empty",
                           "add at least one step, e.g. '- pass: cleanup'")
            return []
        built = [self.step(item, i) for i, item in enumerate(steps)]
        self.label = None
        ids = [s.id if s is not None else None for s in built]  # only ids that are strings
        for index, first in duplicate_ids(ids):
            step = built[index]
            if step is None:  # duplicate_ids skips None ids, and a step that was not built has none
                raise AssertionError(f"duplicate id at step {index + 1}, which was not built")
            if self.positions is None:
                self.error(None, f"{step.label}: duplicate step id '{ids[index]}' "
                           f"(also used by step {first + 1})", "give each step its own id")
                continue
            self.error(self.at(("steps", index, "id")),
                       f"duplicate step id '{ids[index]}' (first used{self.line_of(('steps', first, 'id'))})",
                       "give each step its own id")
        return [s for s in built if s is not None]

    def step(self, item: Any, index: int) -> Step | None:
        path: tuple[Any, ...] = ("steps", index)
        self.label = None
        if not isinstance(item, dict):
            hint = (f"write '- pass: {item}'" if isinstance(item, str)
                    else "write each step as a mapping, e.g. '- pass: cleanup'")
            self.error(self.at(path), f"step {index + 1} must be a mapping with a 'pass' key, got {kind_of(item)}",
                       hint)
            return None
        if "pass" in item:
            raw_id = item.get("id")
            self.label = Step(str(item["pass"]), id=raw_id if isinstance(raw_id, str) else None, index=index).label
        spec = self.known_pass(item.get("pass"))
        self.step_keys(item, path, spec)
        step_id = self.typed(item, "id", STEP_KEYS["id"].annotation, None, path)
        if "pass" not in item:
            self.error(self.at(path), f"step {index + 1} has no 'pass'",
                       "add 'pass: NAME'; run 'surgeon passes' to list the passes", names_step=True)
            return None
        params = item.get("with", {})
        if not isinstance(params, dict):
            self.error(self.at(path + ("with",)),
                       f"'with' must be a mapping of parameter names to values, got {kind_of(params)}",
                       "write 'with: {name: value}', or remove 'with' if the pass needs no parameters")
            params = None
        # Where each parameter was written, inside the step: allow_missing may sit on the step itself.
        param_paths: dict[str, tuple[str, ...]] = {name: ("with", name) for name in params or {}}
        if params is not None and spec is not None and self.allow_missing_applies(item, params, spec, path):
            params = {**params, "allow_missing": item["allow_missing"]}
            param_paths["allow_missing"] = ("allow_missing",)
        problems = check_step(item["pass"], params or {}, item.get("expect"), self.catalogue)
        for p in problems:
            if params is None and p.path[:1] == ("with",):
                continue  # 'with' itself is wrong; what it lacks is beside the point
            self.error(self.step_location(p, path, param_paths), p.message, p.hint)
        locations = {name: self.at(path + p) for name, p in param_paths.items()}
        return Step(item["pass"], dict(params or {}), id=step_id, index=index, location=self.at(path),
                    param_locations={k: v for k, v in locations.items() if v is not None},
                    expect=item.get("expect"))

    def known_pass(self, name: Any) -> PassInfo | None:
        """The step's pass if it exists (check_step reports the ones that do not)."""
        return self.catalogue.lookup(name) if isinstance(name, str) else None

    def step_keys(self, item: dict, path: tuple[Any, ...], spec: PassInfo | None) -> None:
        for key in item:
            if key in STEP_KEYS:
                continue
            if spec is not None and key in spec.params:
                hint = f"'{key}' is a parameter of '{spec.name}': put it under 'with:'"
            else:
                hint = key_suggestion(key, STEP_KEYS) or "a step takes: " + key_list(STEP_KEYS)
            self.error(self.at(path + (key,), key=True), f"unknown key '{key}' in step {path[1] + 1}", hint,
                       names_step=True)

    def allow_missing_applies(self, item: dict, params: dict, spec: PassInfo, path: tuple[Any, ...]) -> bool:
        """Whether a step-level ``allow_missing`` (sugar for the selector parameter) can move into ``with``."""
        if "allow_missing" not in item:
            return False
        if "allow_missing" not in spec.params:
            self.error(self.at(path + ("allow_missing",), key=True),
                       f"pass '{spec.name}' does not select nodes, so 'allow_missing' does not apply",
                       "remove 'allow_missing'")
            return False
        if "allow_missing" in params:
            first = self.line_of(path + ("with", "allow_missing"), key=True)
            self.error(self.at(path + ("allow_missing",), key=True),
                       f"'allow_missing' is given twice (also under 'with'{first})",
                       "keep only one of them")
            return False
        return True

    def step_location(self, problem: Problem, path: tuple[Any, ...],
                      param_paths: dict[str, tuple]) -> Location | None:
        if self.positions is None:
            return None
        where = problem.path
        if where[:1] == ("with",) and len(where) > 1 and where[1] in param_paths:
            where = param_paths[where[1]] + where[2:]
        elif where[:1] == ("with",) and not self.positions.has(path + ("with",)):
            where = ("pass",)  # a missing parameter, and no 'with' at all: point at the pass
        return self.at(path + where, problem.at_key)


def _plugin_hint(name: str, folder: Path) -> str | None:
    """The spelling of a plugin that would work: the path of a file of that name near the recipe
    (relative to the recipe, as ``plugins:`` reads it), or the module name of a path given."""
    import importlib.util

    stem = Path(name.replace("\\", "/")).stem if name.endswith(".py") or "/" in name else name.rpartition(".")[2]
    found: list[str] = []
    for pattern in (f"{stem}.py", f"*/{stem}.py", f"*/*/{stem}.py"):
        found += sorted(p.relative_to(folder).as_posix() for p in folder.glob(pattern))
    found = [f for f in found if f not in (name, name.replace(".", "/") + ".py")]  # those failed on their own
    if found:
        return f"write the file's path relative to the recipe: '{found[0]}'"
    if name.endswith(".py") or "/" in name:
        try:
            importable = importlib.util.find_spec(stem) is not None if stem.isidentifier() else False
        except (ImportError, ValueError):
            importable = False
        if importable:
            return f"write the module's import name: '{stem}'"
        return (f"a plugin path is relative to the recipe's folder ({folder.resolve()}); "
                "write the path of the .py file from there, or an importable module name")
    return None
