"""Read YAML into plain Python values and remember where each value was written.

``yaml.safe_load`` forgets positions, so recipe errors could not say
``recipe.yaml:7:11``. This module composes the node tree with PyYAML's
SafeLoader (which keeps marks), builds the same values ``safe_load`` would
(YAML 1.1 resolution, as PyYAML does it: ``1e-3`` is a string, ``on`` is
true, ``010`` is 8), and keeps a parallel tree of :class:`Positions`.

Deliberate differences from ``safe_load``:

- A duplicate mapping key is a problem (PyYAML silently keeps the last one);
  the first occurrence is kept and the second reported.
- Anchors and aliases are accepted and resolved; an alias reports the
  position of its anchor. Merge keys (``<<: *base``) are rejected: they make a
  reviewed recipe say less than it does.
- Only plain scalars, mappings and sequences are accepted: a tag PyYAML's safe
  loader does not know, a collection tag such as ``!!set`` and a recursive
  alias are problems.

Problems found while building values are returned, not raised, so that the
recipe parser can report them together with its own. A YAML syntax error
stops everything and is raised as a :class:`RecipeError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from surgeon.errors import Diagnostic, Location, RecipeError

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# Fixes for the syntax errors people actually make, keyed by PyYAML's problem text.
_SYNTAX_HINTS = {
    "found character '\\t' that cannot start any token":
        "YAML does not allow tabs for indentation: indent with spaces",
    "mapping values are not allowed here":
        "check the indentation of this line, and quote a value that contains ': '",
    "found undefined alias": "define the anchor (&name) before using the alias (*name)",
    "but found another document": "a recipe is one YAML document: remove the '---' line",
    "found unexpected end of stream": "close the quote or bracket opened earlier",
    "expected ',' or ']', but got '['":
        "inside [...] a bracket starts a new list: quote an item that contains one ('input0[1]'), "
        "or write the list one item per line ('- input0[1]')",
}


@dataclass(frozen=True)
class TextPos:
    """A place inside a text value, as a path key (1-based line and column of the text)."""

    line: int
    column: int | None = None


@dataclass
class Positions:
    """Where a value, and everything inside it, was written.

    ``children`` is keyed like the value: mapping keys for a mapping, indices
    for a list. ``key_locations`` gives where each mapping key was written.
    """

    location: Location
    children: dict[Any, Positions] = field(default_factory=dict)
    key_locations: dict[Any, Location] = field(default_factory=dict)
    text_start: Location | None = None
    """For a string: where its first character is (a block scalar's first content line)."""

    def child(self, key: Any) -> Positions | None:
        if isinstance(key, TextPos):
            return self._text_child(key)
        if key in self.children:
            return self.children[key]
        # Paths built from messages spell keys as text ("attrs.1"); YAML may have read the key as 1.
        return next((c for k, c in self.children.items() if str(k) == str(key)), None)

    def _text_child(self, pos: TextPos) -> Positions | None:
        start = self.text_start
        if start is None or start.line is None:
            return None
        column = start.column if pos.column is None or start.column is None else start.column + pos.column - 1
        return Positions(Location(start.file, start.line + pos.line - 1, column))

    def value_location(self, path: Sequence[Any]) -> Location:
        """Where the value at ``path`` was written, or its deepest written ancestor."""
        node = self
        for key in path:
            nxt = node.child(key)
            if nxt is None:
                break
            node = nxt
        return node.location

    def key_location(self, path: Sequence[Any]) -> Location:
        """Where the last key of ``path`` was written; falls back like :meth:`value_location`."""
        if not path:
            return self.location
        parent = self
        for key in path[:-1]:
            nxt = parent.child(key)
            if nxt is None:
                return parent.location
            parent = nxt
        last = path[-1]
        if last in parent.key_locations:
            return parent.key_locations[last]
        return next((loc for k, loc in parent.key_locations.items() if str(k) == str(last)), parent.location)

    def has(self, path: Sequence[Any]) -> bool:
        node: Positions | None = self
        for key in path:
            node = node.child(key) if node is not None else None
        return node is not None


@dataclass(frozen=True)
class YamlDocument:
    value: Any
    """What ``yaml.safe_load`` would return (minus rejected duplicates, merge keys and tags)."""
    positions: Positions
    problems: tuple[Diagnostic, ...]


def load_yaml(text: str, filename: str) -> YamlDocument:
    """Parse one YAML document with positions. Raises :class:`RecipeError` on a syntax error."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:  # empty file, or only comments
            return YamlDocument(None, Positions(Location(filename, 1, 1)), ())
        builder = _Builder(loader, filename)
        value, positions = builder.build(node)
        return YamlDocument(value, positions, tuple(builder.problems))
    except yaml.MarkedYAMLError as exc:  # a syntax error: the builder reports the rest itself
        raise RecipeError(diagnostics=[_syntax_diagnostic(exc, filename)]) from None
    finally:
        loader.dispose()


def _location(mark: yaml.Mark, filename: str) -> Location:
    return Location(filename, mark.line + 1, mark.column + 1)


def _syntax_diagnostic(exc: yaml.MarkedYAMLError, filename: str) -> Diagnostic:
    problem = exc.problem or exc.context or "invalid YAML"
    message = f"invalid YAML: {problem}"
    if exc.context and exc.problem and problem.startswith("but "):
        # "expected a single document in the stream" / "but found another document": one sentence.
        message = f"invalid YAML: {exc.context} {problem}"
    elif exc.context and exc.problem and exc.context_mark is not None:
        ctx = exc.context_mark
        message += f" ({exc.context} at line {ctx.line + 1}, column {ctx.column + 1})"
    mark = exc.problem_mark or exc.context_mark
    hint = next((h for text, h in _SYNTAX_HINTS.items() if text in problem),
                "check the indentation, quotes and brackets around this position")
    return Diagnostic(message, _location(mark, filename) if mark else Location(filename), hint)


class _Builder:
    """Turns a composed node tree into values and positions, collecting problems."""

    def __init__(self, loader: yaml.SafeLoader, filename: str) -> None:
        self.loader = loader  # constructs scalars exactly as safe_load does
        self.filename = filename
        self.problems: list[Diagnostic] = []
        self.built: dict[int, tuple[Any, Positions]] = {}  # aliases share one node: build it once
        self.in_progress: set[int] = set()

    def problem(self, node: yaml.Node, message: str, hint: str) -> None:
        self.problems.append(Diagnostic(message, _location(node.start_mark, self.filename), hint))

    def build(self, node: yaml.Node) -> tuple[Any, Positions]:
        if id(node) in self.built:
            return self.built[id(node)]
        if id(node) in self.in_progress:
            self.problem(node, "recursive alias: this value contains itself",
                         "recipes cannot hold self-referencing values; write the value out")
            return None, Positions(_location(node.start_mark, self.filename))
        self.in_progress.add(id(node))
        if isinstance(node, yaml.MappingNode):
            result = self.build_mapping(node)
        elif isinstance(node, yaml.SequenceNode):
            result = self.build_sequence(node)
        else:
            result = self.build_scalar(node)
        self.in_progress.discard(id(node))
        self.built[id(node)] = result
        return result

    def build_scalar(self, node: yaml.Node) -> tuple[Any, Positions]:
        """Any node that is not a collection (the composer makes only scalars besides those)."""
        here = Positions(_location(node.start_mark, self.filename))
        here.text_start = self._text_start(node)
        try:
            return self.loader.construct_object(node, deep=True), here
        except yaml.constructor.ConstructorError:
            self.problem(node, f"unsupported YAML tag '{node.tag}'",
                         "recipes hold plain values only: remove the tag")
            return None, here

    def _text_start(self, node: yaml.Node) -> Location | None:
        """Where a string scalar's first character is: for a block scalar (``|``, ``>``) the
        line after the indicator, at the block's indentation."""
        style = getattr(node, "style", None)
        mark = node.start_mark
        if style in ("|", ">"):
            lines = (mark.buffer or "").splitlines() if isinstance(mark.buffer, str) else []
            indent = 0
            for text in lines[mark.line + 1:]:
                if text.strip():
                    indent = len(text) - len(text.lstrip(" "))
                    break
            return Location(self.filename, mark.line + 2, indent + 1)
        if style in ("'", '"'):
            return Location(self.filename, mark.line + 1, mark.column + 2)
        return _location(mark, self.filename)

    def build_sequence(self, node: yaml.SequenceNode) -> tuple[Any, Positions]:
        here = Positions(_location(node.start_mark, self.filename))
        if node.tag != _SEQ_TAG:
            self.problem(node, f"unsupported YAML tag '{node.tag}'", "write a plain list: remove the tag")
            return None, here
        values = []
        for index, item in enumerate(node.value):
            value, pos = self.build(item)
            values.append(value)
            here.children[index] = pos
        return values, here

    def build_mapping(self, node: yaml.MappingNode) -> tuple[Any, Positions]:
        here = Positions(_location(node.start_mark, self.filename))
        if node.tag != _MAP_TAG:
            self.problem(node, f"unsupported YAML tag '{node.tag}'", "write a plain mapping: remove the tag")
            return None, here
        values: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key_loc = _location(key_node.start_mark, self.filename)
            if key_node.tag == _MERGE_TAG:
                self.problem(key_node, "YAML merge keys ('<<') are not supported in recipes",
                             "write the keys out, so that the recipe shows every value it sets")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, "a mapping key must be a plain value, not a list or a mapping",
                             "use a name as the key")
                continue
            key, _ = self.build_scalar(key_node)
            if key in values:
                first = here.key_locations[key]
                self.problem(key_node, f"duplicate key '{key}' (first given on line {first.line})",
                             "remove one of them (YAML loaders silently keep only the last)")
                continue
            values[key], here.children[key] = self.build(value_node)
            here.key_locations[key] = key_loc
        return values, here
