"""How a pass declares its parameters: once, as a typed Python signature.

A pass is a plain function::

    def remove_node(model: Model, select: Selector, *, input: int = 0,
                    mode: Literal["bypass", "drop"] = "bypass") -> PassResult | None:
        '''Bypass or drop the selected nodes.

        Parameters:
            input: index of the data input that takes the node's place.
            mode: ``bypass`` rewires consumers to the input; ``drop`` detaches.
        ...
        '''

:class:`PassSpec` reads that signature and docstring and derives from it
everything else: recipe validation (names, types, ranges, required/optional),
the Python call, the ``explain`` text and a JSON schema. A number's range is
declared in its annotation with the markers of :mod:`surgeon.recipe.types`,
re-exported here for pass authors::

    from typing import Annotated
    from surgeon.passes.spec import Max, Min

    def my_pass(model, *, rounds: Annotated[int, Min(1)] = 10,
                ratio: Annotated[float, Min(0), Max(1)] = 0.5): ...

It is checked when the recipe is read, before any model is opened.

A parameter typed :class:`~surgeon.passes.select.Selector` is flattened: its fields
(``op``, ``name``, ``count``...) become parameters of the pass, so every pass
that selects nodes validates selectors the same way.

The first parameter says what the pass receives, by its type annotation:
``gs.Graph`` gets the bare graph (so an existing onnx-graphsurgeon script works
unchanged), :class:`~surgeon.io.model.Model` the model. Without an annotation
the name decides: ``graph`` gets the graph, anything else the model.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

from surgeon.errors import PassError, suggestion_hint
from surgeon.recipe.types import Check, Max, Min, check_type, schema_of, text_place, type_name, yaml_of

__all__ = ["Check", "Max", "Min", "PassSpec", "ParamSpec", "REQUIRED", "check_type", "checked_together",
           "type_name"]

# (parameter path, message, hint): a problem of several parameters together
ParamProblem = tuple[str, str, "str | None"]


def checked_together(check: Callable[[dict[str, Any]], list[ParamProblem]]
                     ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a check of a pass's parameters together (a pattern and its replacement must agree),
    run when the recipe is read, after every parameter passed its own type check::

        @checked_together(lambda params: [...])
        def my_pass(model, *, pattern: str, replacement: str): ...

    The check gets the given parameters (defaults not filled in) and returns problems as
    ``(parameter path, message, hint)``; a path such as ``replacement@3`` (see
    :func:`surgeon.recipe.types.text_path`) points at line 3 of a text parameter.
    """
    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.__surgeon_check__ = check  # type: ignore[attr-defined]
        return func

    return mark


def param_label(key: str, sub: str) -> str:
    """``'names[2]'`` or ``'pattern', line 3``: a parameter (and a place inside it) in messages."""
    return f"'{key}'{text_place(sub)}" if sub.startswith("@") else f"'{key}{sub}'"


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()

@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter of a pass."""

    name: str
    annotation: Any
    default: Any = REQUIRED
    doc: str = ""
    group: str | None = None  # "select" for parameters flattened from a Selector

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        ann = self.annotation
        args = typing.get_args(ann)
        if self.default is None and type(None) in args:  # "X | None = None" is just an optional X
            # A Union built at run time from a tuple of types: `|` has no such form.
            ann = Union[tuple(a for a in args if a is not type(None))]  # noqa: UP007
        default = "required" if self.required else f"default {yaml_of(self.default)}"
        return f"{self.name} ({type_name(ann)}, {default})"


def _docstring_sections(doc: str) -> tuple[str, dict[str, str]]:
    """Split a pass docstring into its summary and ``Section:`` blocks."""
    doc = inspect.cleandoc(doc or "")
    lines = doc.splitlines()
    summary = lines[0].strip() if lines else ""
    sections: dict[str, list[str]] = {}
    current = None
    for line in lines[1:]:
        m = re.match(r"^([A-Z][A-Za-z ]+):\s*$", line)
        if m:
            current = m.group(1).strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return summary, {k: inspect.cleandoc("\n".join(v)) for k, v in sections.items()}


def _param_docs(section: str) -> dict[str, str]:
    docs: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        m = re.match(r"^(\w+):\s*(.*)$", line)
        if m and not line.startswith(" "):
            current = m.group(1)
            docs[current] = m.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
    return docs


@dataclass(frozen=True)
class PassSpec:
    """A registered pass: its function and the parameters derived from it."""

    name: str
    func: Callable[..., Any]
    params: dict[str, ParamSpec]
    summary: str
    sections: dict[str, str] = field(default_factory=dict)
    receives: str = "model"  # or "graph"
    selector_param: str | None = None  # the function's Selector-typed parameter, if any
    source: str = "builtin"
    contract: Any = None
    """How the pass is verified (:class:`surgeon.passes.contract.Contract`, declared with
    ``@verified_by``); None: not declared (verified as "outputs equal", with a note)."""
    together: Callable[[dict[str, Any]], list[ParamProblem]] | None = None  # see checked_together

    @classmethod
    def from_function(cls, name: str, func: Callable[..., Any], source: str = "builtin") -> PassSpec:
        from surgeon.passes.select import Selector

        sig = inspect.signature(func)
        try:
            hints = typing.get_type_hints(func, include_extras=True)  # keep Min/Max
        except Exception as exc:  # a user pass with an unresolvable annotation
            raise PassError(
                f"pass '{name}': cannot read the type annotations of {func.__qualname__}: {exc}",
                hint="annotations must name types importable from the pass's module",
            ) from exc
        summary, sections = _docstring_sections(func.__doc__ or "")
        docs = _param_docs(sections.get("Parameters", ""))
        plist = list(sig.parameters.values())
        if not plist or plist[0].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                              inspect.Parameter.POSITIONAL_OR_KEYWORD):
            raise PassError(
                f"pass '{name}': {func.__qualname__} must take the model (or graph) as its first parameter",
                hint="define it as def my_pass(graph, *, param: type = default) or def my_pass(model, ...)",
            )
        receives = _receives(name, func, plist[0], hints.get(plist[0].name))
        params: dict[str, ParamSpec] = {}
        selector_param = None
        for p in plist[1:]:
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise PassError(f"pass '{name}': *args/**kwargs cannot be declared as recipe parameters; "
                                "list each parameter with its type")
            ann = hints.get(p.name, Any)
            if ann is Selector:
                selector_param = p.name
                for f in dataclasses.fields(Selector):
                    params[f.name] = ParamSpec(f.name, hints_of_selector()[f.name],
                                               f.default, f.metadata.get("doc", ""), group="select")
                continue
            default = REQUIRED if p.default is inspect.Parameter.empty else p.default
            params[p.name] = ParamSpec(p.name, ann, default, docs.get(p.name, ""))
        from surgeon.passes.contract import contract_of

        return cls(name, func, params, summary, sections, receives, selector_param, source, contract_of(func),
                   getattr(func, "__surgeon_check__", None))

    # -- using the declaration -------------------------------------------------

    def validate(self, params: dict[str, Any]) -> list[tuple[str, str, str | None]]:
        """Problems of a parameter mapping, as ``(param path, message, hint)``; empty if valid."""
        problems: list[tuple[str, str, str | None]] = []
        for key, value in params.items():
            if not isinstance(key, str):
                problems.append((str(key), f"parameter names are strings; got {yaml_of(key)}",
                                 "write the parameter's name, e.g. op: FooOp"))
                continue
            spec = self.params.get(key)
            if spec is None:
                problems.append((key, f"pass '{self.name}' has no parameter '{key}'",
                                 suggestion_hint(key, self.params) or self.param_list_hint()))
                continue
            # Out of range and no better hint declared: the default is always a valid value
            # (a null default means "not set", which is not a value to suggest).
            range_hint = (f"remove '{key}' to use the default ({yaml_of(spec.default)})"
                          if not spec.required and spec.default is not None else None)
            problems += [(key + sub, f"parameter {param_label(key, sub)}: {msg}", hint)
                         for sub, msg, hint in check_type(value, spec.annotation, range_hint=range_hint)]
        for spec in self.params.values():
            if spec.required and spec.name not in params:
                problems.append(("", f"pass '{self.name}' needs parameter '{spec.name}' "
                                     f"({type_name(spec.annotation)})", spec.doc or None))
        if self.together is not None and not problems:
            for path, msg, hint in self.together(params):
                key, sub = re.match(r"(\w*)(.*)", path).groups()  # type: ignore[union-attr]
                problems.append((path, f"parameter {param_label(key, sub)}: {msg}", hint))
        if self.selector_param is not None and not problems:
            from surgeon.passes.select import Selector

            sel = {k: v for k, v in params.items() if self.params[k].group == "select"}
            for msg, hint in Selector.static_problems(sel):
                problems.append(("", msg, hint))
        return problems

    def param_list_hint(self) -> str:
        if not self.params:
            return f"'{self.name}' takes no parameters"
        return "its parameters are: " + ", ".join(self.params)

    def call(self, model: Any, params: dict[str, Any]) -> Any:
        """Run the pass on ``model`` with already-validated recipe parameters."""
        from surgeon.passes.select import Selector

        problems = self.validate(params)
        if problems:
            raise PassError(
                problems[0][1],
                hint=problems[0][2],
                diagnostics=None,
            )
        kwargs: dict[str, Any] = {}
        sel: dict[str, Any] = {}
        for key, value in params.items():
            if self.params[key].group == "select":
                sel[key] = value
            else:
                kwargs[key] = value
        if self.selector_param is not None:
            kwargs[self.selector_param] = Selector(**sel)
        target = model.graph if self.receives == "graph" else model
        return self.func(target, **kwargs)

    def explain(self) -> str:
        """Human documentation of the pass (``surgeon explain NAME``)."""
        out = [f"{self.name}: {self.summary}", ""]
        if self.params:
            out.append("Parameters:")
            for p in self.params.values():
                out.append(f"  {p.describe()}")
                if p.doc:
                    out.append(f"      {p.doc}")
            out.append("")
        for title, body in self.sections.items():
            if title == "Parameters":
                continue
            out.append(f"{title}:")
            out += ["  " + line for line in body.splitlines()]
            out.append("")
        out += ["Verified by (--verify):", "  " + self.verified_by(), ""]
        return "\n".join(out).rstrip() + "\n"

    def verified_by(self) -> str:
        """How --verify checks this pass: its contract in words."""
        if self.contract is None:
            return "outputs equal the original's (the pass declares no verification contract)"
        return str(self.contract.what) + (" (verified by default)" if self.contract.verify_by_default else "")

    def markdown(self) -> str:
        """The pass's reference section for docs/passes.md."""
        out = [f"## `{self.name}`", "", self.summary, ""]
        if self.params:
            out += ["| parameter | type | default | meaning |", "| --- | --- | --- | --- |"]
            for p in self.params.values():
                kind, default = p.describe()[len(p.name) + 2:-1].rsplit(", ", 1)
                default = default.removeprefix("default ")
                doc = p.doc.replace("|", "\\|")  # a pipe would end the table cell
                out.append(f"| `{p.name}` | {kind} | {default} | {doc} |")
            out.append("")
        for title in ("Rules", "Example", "Reports"):
            body = self.sections.get(title)
            if not body:
                continue
            out.append(f"**{title}**")
            out.append("")
            out += (["```yaml", body, "```"] if title == "Example" else [body])
            out.append("")
        out += ["**Verified by** (`--verify`)", "", self.verified_by(), ""]
        return "\n".join(out)

    def example(self) -> str | None:
        """The recipe example of the docstring's ``Example:`` section (run by a test)."""
        return self.sections.get("Example")

    def json_schema(self) -> dict[str, Any]:
        props = {p.name: {**schema_of(p.annotation), "description": p.doc} for p in self.params.values()}
        for p in self.params.values():
            if not p.required:
                props[p.name]["default"] = p.default
        return {
            "type": "object",
            "description": self.summary,
            "properties": props,
            "required": [p.name for p in self.params.values() if p.required],
            "additionalProperties": False,
        }


def _receives(name: str, func: Callable[..., Any], first: inspect.Parameter, annotation: Any) -> str:
    """"graph" or "model": what the first parameter takes, by its annotation (else by its name)."""
    import onnx_graphsurgeon as gs

    from surgeon.io.model import Model

    if annotation is None or annotation is Any:
        return "graph" if first.name == "graph" else "model"
    options = [a for a in (typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType)
                           else (annotation,)) if a is not type(None)]
    graph = any(isinstance(a, type) and issubclass(a, gs.Graph) for a in options)
    model = any(isinstance(a, type) and issubclass(a, Model) for a in options)
    if graph != model:
        return "graph" if graph else "model"
    shown = getattr(annotation, "__name__", None) or str(annotation)
    raise PassError(
        f"pass '{name}': the first parameter of {func.__qualname__} ({first.name}: {shown}) must be "
        + ("either the graph or the model, not both" if graph else "the graph or the model"),
        hint=f"annotate it as gs.Graph (onnx_graphsurgeon) for the bare graph, e.g. def {func.__name__}"
             f"({first.name}: gs.Graph, ...), or as surgeon.Model for the model",
    )


@functools.cache
def hints_of_selector() -> dict[str, Any]:
    from surgeon.passes.select import Selector  # select imports this module

    return typing.get_type_hints(Selector)
