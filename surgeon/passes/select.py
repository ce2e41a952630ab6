"""The one node selector that every node-selecting pass shares.

Exporter node names (``/model.22/Concat_3``) change between exports, so a
selector can also match by op type, domain, attributes and neighbours, and can
pin how many nodes it must match (``count``). A selector that matches nothing
is an error with suggestions from the model's real names, unless the step
says ``allow_missing: true``: a recipe that silently does nothing after a
re-export is the worst failure this tool can have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from surgeon.errors import LISTING, PassError, did_you_mean
from surgeon.graph.names import listed, node_label, qualified_op
from surgeon.graph.walk import node_domain, walk_graphs

_SELECT_KEYS = ("name", "names", "name_regex", "op")


@dataclass(frozen=True)
class Selector:
    """Which nodes a pass acts on. All given criteria must hold (AND)."""

    name: str | None = field(default=None, metadata={"doc": "exact node name"})
    names: list[str] | None = field(default=None, metadata={"doc": "any of these exact node names"})
    name_regex: str | None = field(default=None, metadata={"doc": "Python regex that must match the whole node name"})
    op: str | None = field(default=None, metadata={"doc": "op type, e.g. FooOp"})
    domain: str | None = field(default=None, metadata={"doc": "op domain ('' or ai.onnx for standard ops)"})
    attrs: dict[str, Any] | None = field(default=None,
                                         metadata={"doc": "attribute values the node must have (equality)"})
    producer_op: str | None = field(default=None, metadata={"doc": "op type of a node feeding one of its inputs"})
    consumer_op: str | None = field(default=None, metadata={"doc": "op type of a node reading one of its outputs"})
    count: int | None = field(default=None, metadata={"doc": "exact number of nodes that must match"})
    allow_missing: bool = field(default=False, metadata={"doc": "matching no node is not an error"})

    @staticmethod
    def static_problems(params: dict[str, Any]) -> list[tuple[str, str | None]]:
        """Problems visible without a model: missing criteria, a bad regex, a negative count."""
        problems: list[tuple[str, str | None]] = []
        if not any(params.get(k) is not None for k in _SELECT_KEYS):
            problems.append(("no node selector given",
                             "add one of: name, names, name_regex, op (optionally with domain, attrs, "
                             "producer_op, consumer_op, count)"))
        regex = params.get("name_regex")
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as exc:
                problems.append((f"name_regex {regex!r} is not a valid regular expression: {exc}",
                                 "name_regex uses Python's re syntax; escape '.', '/' is fine as is"))
        count = params.get("count")
        if count is not None and count < 0:
            problems.append((f"count must be 0 or more, got {count}", None))
        return problems

    def describe(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and f.name != "allow_missing":
                parts.append(f"{f.name}={v!r}")
        return ", ".join(parts) or "<empty selector>"

    # -- matching -------------------------------------------------------------------

    def matches(self, node: gs.Node) -> bool:
        if self.name is not None and node.name != self.name:
            return False
        if self.names is not None and node.name not in self.names:
            return False
        if self.name_regex is not None and not re.fullmatch(self.name_regex, node.name or ""):
            return False
        if self.op is not None and node.op != self.op:
            return False
        if self.domain is not None:
            want = "" if self.domain == "ai.onnx" else self.domain
            if node_domain(node) != want:
                return False
        if self.attrs:
            for key, want in self.attrs.items():
                if key not in node.attrs or not _attr_equal(node.attrs[key], want):
                    return False
        if self.producer_op is not None:
            if not any(inp.inputs and inp.inputs[0].op == self.producer_op for inp in node.inputs):
                return False
        if self.consumer_op is not None:
            if not any(c.op == self.consumer_op for out in node.outputs for c in out.outputs):
                return False
        return True

    def select(self, graph: gs.Graph, *, subgraphs: bool = True) -> list[tuple[gs.Node, gs.Graph]]:
        """The matching ``(node, owning graph)`` pairs, in graph order.

        With ``subgraphs`` (the default) the search covers If/Loop/Scan bodies
        and the bodies of the model's local functions (a placeholder op can sit
        inside a module exported as a function); the owning graph is then the
        body or the ``gs.Function``.

        Raises :class:`PassError` when nothing matches (unless ``allow_missing``)
        or when ``count`` is given and a different number matches.
        """
        graphs = list(walk_graphs(graph)) if subgraphs else [graph]
        if subgraphs:
            for func in getattr(graph, "functions", None) or []:
                graphs += walk_graphs(func)
        op = self.op  # the usual selector: a comparison per node before the full match
        found = [(n, g) for g in graphs for n in g.nodes if (op is None or n.op == op) and self.matches(n)]
        if self.count is not None and len(found) != self.count:
            if not (self.allow_missing and not found):
                raise PassError(
                    f"selector ({self.describe()}) must match {self.count} node(s) but matched "
                    f"{len(found)}" + (f": {listed((node_label(n) for n, _ in found), 10)}" if found else ""),
                    hint="the model may have been re-exported; check the selector or update count",
                )
        if not found and not self.allow_missing:
            raise PassError(
                f"selector ({self.describe()}) matched no node",
                hint=self._suggest(graphs),
            )
        return found

    def _suggest(self, graphs: list[gs.Graph]) -> str:
        nodes = [n for g in graphs for n in g.nodes]
        hints = []
        missing_names = False
        if self.name is not None:
            close = did_you_mean(self.name, [n.name for n in nodes if n.name])
            if close:
                hints.append("closest node names: " + ", ".join(repr(c) for c in close))
            missing_names = not close and not any(n.name == self.name for n in nodes)
        for value in self.names or []:
            if not any(n.name == value for n in nodes):
                close = did_you_mean(value, [n.name for n in nodes if n.name])
                hints.append(f"no node named {value!r}"
                             + (f" (closest: {', '.join(repr(c) for c in close)})" if close else ""))
                missing_names = missing_names or not close
        if missing_names:
            hints.append(f"list the node names with '{LISTING['node']}'")
        ops = sorted({(n.op, node_domain(n)) for n in nodes})
        if self.op is not None:
            close = did_you_mean(self.op, [o for o, _ in ops])
            same_op = sorted({d for o, d in ops if o == self.op})
            if same_op and self.domain is not None:
                hints.append(f"op {self.op!r} exists in domain(s) "
                             + ", ".join(repr(d or "ai.onnx") for d in same_op))
            elif close:
                hints.append("closest op types: " + ", ".join(repr(c) for c in close))
        if not hints:
            present = ", ".join(qualified_op(d, o) for o, d in ops[:15])
            hints.append(f"op types in the model: {present}" + (" ..." if len(ops) > 15 else ""))
        hints.append("set allow_missing: true if the step may legitimately match nothing")
        return "\n".join(hints)


def _attr_equal(have: Any, want: Any) -> bool:
    if isinstance(have, gs.Constant):
        have = have.values
    if isinstance(have, np.ndarray):
        try:
            return bool(np.array_equal(have, np.asarray(want)))
        except Exception:
            return False
    if isinstance(have, (list, tuple)) and isinstance(want, (list, tuple)):
        return len(have) == len(want) and all(_attr_equal(a, b) for a, b in zip(have, want))
    if isinstance(have, float) and isinstance(want, (int, float)) and not isinstance(want, bool):
        return abs(have - float(want)) <= 1e-6 * max(1.0, abs(have))
    return have == want
