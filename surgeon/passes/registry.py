"""The table of passes: built-ins, user passes and plugins.

Built-in passes are listed once, explicitly, in :data:`BUILTIN_PASSES`
(name -> ``module:function``) and imported on first use, so ``surgeon --help``
does not import forty modules. Users add passes with
:func:`surgeon.register_pass`, through the ``surgeon.passes`` entry-point
group of an installed package, or by naming a module in a recipe's
``plugins:`` list. Two passes with the same name are an error, never a silent
override.

The registry is the recipe layer's pass catalogue
(:class:`surgeon.recipe.catalogue.PassCatalogue`): the recipe layer may not
import passes, so this module installs the global :data:`registry` as its
default catalogue when it is imported (``surgeon/__init__`` imports it). That
keeps ``surgeon.load_recipe(path)``, ``Recipe.from_steps(...)`` and
``recipe_json_schema()`` working without a registry argument.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from surgeon.errors import PassError, SurgeonError, suggestion_hint
from surgeon.passes.spec import PassSpec
from surgeon.recipe.catalogue import set_default_catalogue

BUILTIN_PASSES: dict[str, str] = {
    # structure
    "remove_node": "surgeon.passes.builtin.remove_node:remove_node",
    "cleanup": "surgeon.passes.builtin.cleanup:cleanup",
    "toposort": "surgeon.passes.builtin.cleanup:toposort",
    # names, outputs and node edits
    "rename_io": "surgeon.passes.builtin.rename:rename_io",
    "rename_tensors": "surgeon.passes.builtin.rename:rename_tensors",
    "set_outputs": "surgeon.passes.builtin.outputs:set_outputs",
    "add_outputs": "surgeon.passes.builtin.outputs:add_outputs",
    "extract": "surgeon.passes.builtin.outputs:extract",
    "insert_node": "surgeon.passes.builtin.edit:insert_node",
    "replace_op": "surgeon.passes.builtin.edit:replace_op",
    "replace_subgraph": "surgeon.passes.builtin.subgraph:replace_subgraph",
    "rewrite": "surgeon.passes.builtin.rewrite:rewrite",
    # shapes and types
    "infer_shapes": "surgeon.passes.builtin.shapes:infer_shapes",
    "set_shapes": "surgeon.passes.builtin.shapes:set_shapes",
    "set_batch": "surgeon.passes.builtin.shapes:set_batch",
    "set_dtype": "surgeon.passes.builtin.shapes:set_dtype",
    # simplification
    "fold_constants": "surgeon.passes.builtin.fold:fold_constants",
    "eliminate_noops": "surgeon.passes.builtin.noops:eliminate_noops",
    "fuse": "surgeon.passes.builtin.fuse:fuse",
    "dedupe_initializers": "surgeon.passes.builtin.dedupe:dedupe_initializers",
    "simplify": "surgeon.passes.builtin.simplify:simplify",
    # functions, precision, opsets, metadata
    "inline_functions": "surgeon.passes.builtin.functions:inline_functions",
    "to_fp16": "surgeon.passes.builtin.precision:to_fp16",
    "convert_opset": "surgeon.passes.builtin.opset:convert_opset",
    "merge": "surgeon.passes.builtin.merge:merge",
    "set_metadata": "surgeon.passes.builtin.metadata:set_metadata",
    # detectors: pre- and post-processing
    "insert_nms": "surgeon.passes.builtin.nms:insert_nms",
    "add_preprocess": "surgeon.passes.builtin.preprocess:add_preprocess",
}

ENTRY_POINT_GROUP = "surgeon.passes"


class PassRegistry:
    def __init__(self, builtins: dict[str, str] | None = None) -> None:
        self._builtin_paths = dict(BUILTIN_PASSES if builtins is None else builtins)
        self._specs: dict[str, PassSpec] = {}
        self._entry_points_loaded = False
        self._plugin_files: dict[Path, str] = {}  # a plugin file imported by path -> its module name

    # -- registration -------------------------------------------------------------

    def register(self, name: str, func: Callable[..., Any], source: str = "user") -> PassSpec:
        self._load_entry_points()
        existing = self._origin(name)
        if existing is not None:
            raise PassError(
                f"cannot register pass '{name}' from {source}: the name is taken by {existing}",
                hint="choose another name (passes are never silently overridden)",
            )
        spec = PassSpec.from_function(name, func, source=source)
        self._specs[name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove a user pass (tests use this to keep the global table clean)."""
        spec = self._specs.get(name)
        if spec is not None and spec.source != "builtin":
            del self._specs[name]

    def _origin(self, name: str) -> str | None:
        if name in self._builtin_paths:
            return f"the built-in pass ({self._builtin_paths[name]})"
        if name in self._specs:
            return self._specs[name].source
        return None

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                func = ep.load()
            except Exception as exc:
                raise SurgeonError(
                    f"cannot load pass '{ep.name}' from entry point {ep.value}: {exc}",
                    hint=f"fix or uninstall the package that declares it in [{ENTRY_POINT_GROUP}]",
                ) from exc
            self.register(ep.name, func, source=f"entry point {ep.value}")

    def import_plugin(self, module: str, beside: str | Path | None = None) -> None:
        """Import a module so that its ``@register_pass`` decorators run; a name ending in
        ``.py`` is a file, relative to ``beside``, imported by its path.

        ``beside``: the recipe's folder; a ``<module>.py`` there must be the
        module that gets imported, not another one of the same name that was
        imported earlier (``json``, ``utils``...), which would silently
        register nothing.
        """
        if module.endswith(".py"):
            self._import_file(Path(beside or ".") / module)
            return
        local = Path(beside) / f"{module}.py" if beside is not None else None
        loaded = sys.modules.get(module)
        if loaded is not None:
            where = getattr(loaded, "__file__", None)
            if local is not None and local.exists() and (where is None or Path(where).resolve() != local.resolve()):
                raise SurgeonError(
                    f"plugin '{module}' beside the recipe is shadowed by the already imported module "
                    f"'{module}' ({where or 'built in'})",
                    hint=f"rename {local.name} to a name no other module has, e.g. {module}_passes.py",
                )
            return
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SurgeonError(
                f"cannot import plugin module '{module}': {exc}",
                hint="the module must be importable: install it, or run from the folder that holds it "
                     "(the recipe's own folder is searched too)",
            ) from exc
        except SurgeonError:
            raise  # e.g. a pass name clash, already explained
        except Exception as exc:  # the plugin's own code failed: point at it, it is not surgeon's bug
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            raise SurgeonError(
                f"plugin module '{module}' failed while importing: {type(exc).__name__}: {exc}",
                hint=f"fix {frame.filename}:{frame.lineno}",
            ) from exc

    def _import_file(self, path: Path) -> None:
        """Import a plugin ``.py`` file by its path (once per file), whatever modules of the same
        name exist; its folder is importable while it runs, for the helpers beside it."""
        import importlib.util

        path = path.resolve()
        if path in self._plugin_files:
            return
        if not path.is_file():
            raise SurgeonError(f"plugin file {path} does not exist",
                               hint="a plugin path is relative to the recipe's folder")
        name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else \
            f"surgeon_plugin_{len(self._plugin_files)}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise SurgeonError(f"plugin file {path} cannot be imported as Python", hint="give a .py file")
        module = importlib.util.module_from_spec(spec)
        folder = str(path.parent)
        added = folder not in sys.path
        if added:
            sys.path.insert(0, folder)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except SurgeonError:
            del sys.modules[name]
            raise
        except Exception as exc:
            del sys.modules[name]
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            raise SurgeonError(
                f"plugin file {path} failed while importing: {type(exc).__name__}: {exc}",
                hint=f"fix {frame.filename}:{frame.lineno}",
            ) from exc
        finally:
            if added:
                sys.path.remove(folder)
        self._plugin_files[path] = name

    # -- lookup -----------------------------------------------------------------------

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(set(self._builtin_paths) | set(self._specs))

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._builtin_paths or name in self._specs

    def get(self, name: str) -> PassSpec:
        self._load_entry_points()
        spec = self._specs.get(name)
        if spec is not None:
            return spec
        path = self._builtin_paths.get(name)
        if path is None:
            raise PassError(f"unknown pass '{name}'",
                            hint=suggestion_hint(name, self.names()) or "run 'surgeon passes' to list them")
        module, _, attr = path.partition(":")
        func = getattr(importlib.import_module(module), attr)
        spec = PassSpec.from_function(name, func, source="builtin")
        self._specs[name] = spec
        return spec

    def lookup(self, name: str) -> PassSpec | None:
        """The pass called ``name``, or None (the recipe layer's catalogue protocol)."""
        return self.get(name) if name in self else None

    def __iter__(self) -> Iterator[PassSpec]:
        for name in self.names():
            yield self.get(name)


registry = PassRegistry()
set_default_catalogue(registry)  # recipes name passes of this registry unless given another one


def register_pass(name: str | None = None, *, registry: PassRegistry = registry):
    """Decorator: make a function usable from recipes under ``name``.

    The function takes the model (first parameter annotated ``surgeon.Model``) or
    the bare onnx-graphsurgeon graph (annotated ``gs.Graph``; unannotated, the
    name ``graph`` means the graph and any other name the model), then keyword
    parameters with type annotations; those become the pass's recipe
    parameters::

        @surgeon.register_pass("strip_fooop")
        def strip_fooop(graph, *, op: str = "FooOp"):
            ...
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        module = getattr(func, "__module__", "?")
        registry.register(name or func.__name__, func, source=f"{module}.{func.__qualname__}")
        return func

    if callable(name):  # used bare: @register_pass
        func, name = name, None
        return decorate(func)
    return decorate
