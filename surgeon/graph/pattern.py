"""Graph patterns written in ONNX's own text syntax, and matching them in a gs graph.

A pattern is a graph in ``onnx.parser`` text (a model with
``<ir_version: ..., opset_import: [...]>`` or a bare graph). Its inputs bind
to any tensor, its initializers match constants of equal value, its nodes
match nodes of the same op and domain whose written attributes are equal
(omitted attributes match anything); the inputs of commutative ops match in
either order.

:func:`check_pattern_text` finds the problems of a text without a model (for
the recipe check), as ``(line, column, message, hint)`` with lines counted in
the text. :class:`Matcher` matches a pattern at one anchor node (a node with
the op of the node that writes the pattern's first output) by walking back
along inputs, so matching a whole graph costs one small walk per anchor
candidate: linear in the graph's size. A failed match remembers how far it
got and why it stopped, for "nearest misses" in error messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import onnx_graphsurgeon as gs

from surgeon.graph.constants import constant_values
from surgeon.graph.names import node_label
from surgeon.graph.walk import node_domain

COMMUTATIVE = frozenset({"Add", "Mul", "And", "Or", "Xor", "Max", "Min", "Sum", "Mean", "Equal", "BitwiseAnd",
                         "BitwiseOr", "BitwiseXor"})
"""Default-domain ops whose inputs may be matched in any order."""

# (line, column, message, hint); line and column count in the text, from 1 (column None: the whole line)
TextProblem = tuple[int, "int | None", str, "str | None"]


@dataclass(frozen=True)
class PatternNode:
    op: str
    domain: str
    attrs: dict[str, Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    line: int

    def describe(self) -> str:
        return f"{', '.join(self.outputs)} = {self.op}"


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern (or replacement) graph."""

    nodes: tuple[PatternNode, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    constants: dict[str, np.ndarray]
    """Initializers written in the text, by name."""
    opsets: dict[str, int]
    producer: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Tensor name -> (index of the node that writes it, output index)."""

    @property
    def anchor(self) -> int:
        """Index of the node that writes the first output."""
        return self.producer[self.outputs[0]][0]


class PatternTextError(ValueError):
    def __init__(self, problems: list[TextProblem]) -> None:
        self.problems = problems
        super().__init__(problems[0][2])


def _line_of_output(lines: list[str], name: str) -> int:
    """The line of the node writing ``name`` (1 when it cannot be told)."""
    want = re.compile(r"(^|[\s,])" + re.escape(name) + r"\s*(,[^=]*)?=")
    for i, line in enumerate(lines, 1):
        if want.search(line.split("#", 1)[0]):
            return i
    return 1


def _parse_error(exc: Exception, text: str) -> TextProblem:
    raw = str(exc)
    if raw.startswith("b'") or raw.startswith('b"'):
        raw = raw[2:-1].encode().decode("unicode_escape")
    m = re.search(r"line: (\d+) column: (\d+)", raw)
    line, column = (int(m.group(1)), int(m.group(2))) if m else (1, None)
    what = raw.strip().splitlines()[-1].strip() if raw.strip() else "cannot parse"
    lines = text.splitlines()
    if line > len(lines):
        line, column = max(1, len(lines)), None
    elif "Expected character" in what and column is not None and line > 1 and \
            not lines[line - 1][:column - 1].strip():
        # onnx's parser notices a missing ')' or '}' at the next token, on the next line: point at
        # the end of the line that lacks it.
        previous = next((i for i in range(line - 1, 0, -1) if lines[i - 1].strip()), None)
        if previous is not None:
            line, column = previous, len(lines[previous - 1].rstrip()) + 1
    return (line, column, f"invalid ONNX text: {what}",
            "write the graph as onnx.parser reads it, e.g.\n"
            "<ir_version: 8, opset_import: [\"\" : 17]>\n"
            "agraph (float[N] x) => (float[N] y) {\n    y = Relu (x)\n}")


def parse_pattern(text: str, what: str = "pattern") -> Pattern:
    """The pattern in ``text``; raises :class:`PatternTextError` listing its problems."""
    problems: list[TextProblem] = []
    lines = text.splitlines()
    try:
        if text.lstrip().startswith("<"):
            model = onnx.parser.parse_model(text)
            graph, opsets = model.graph, {o.domain: o.version for o in model.opset_import}
            if model.functions:
                raise PatternTextError([(1, None, f"the {what} defines local functions",
                                         f"write the {what}'s nodes in its graph")])
        else:
            graph, opsets = onnx.parser.parse_graph(text), {}
    except PatternTextError:
        raise
    except Exception as exc:  # onnx.parser.ParseError, and what the C++ parser raises otherwise
        raise PatternTextError([_parse_error(exc, text)]) from None
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    inputs = tuple(i.name for i in graph.input if i.name not in constants)
    outputs = tuple(o.name for o in graph.output)
    nodes: list[PatternNode] = []
    producer: dict[str, tuple[int, int]] = {}
    for index, n in enumerate(graph.node):
        line = _line_of_output(lines, n.output[0]) if n.output else 1
        attrs = {}
        for a in n.attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                problems.append((line, None, f"node '{n.output[0] if n.output else n.op_type}' ({n.op_type}) "
                                 f"of the {what} holds a subgraph", "patterns match plain nodes, not If/Loop/Scan"))
            elif a.ref_attr_name:
                problems.append((line, None, f"attribute '{a.name}' refers to a function attribute",
                                 "write the attribute's value"))
            else:
                attrs[a.name] = _attr_value(a)
        domain = "" if n.domain == "ai.onnx" else n.domain
        nodes.append(PatternNode(n.op_type, domain, attrs, tuple(n.input), tuple(n.output), line))
        for k, out in enumerate(n.output):
            if out in producer or out in inputs or out in constants:
                problems.append((line, None, f"tensor '{out}' of the {what} is written twice",
                                 "give every node output its own name"))
            producer[out] = (index, k)
    if not nodes:
        problems.append((1, None, f"the {what} has no nodes", "write at least one node between { and }"))
    known = set(inputs) | set(constants) | set(producer) | {""}
    for p in nodes:
        for name in p.inputs:
            if name not in known:
                problems.append((p.line, None, f"node '{p.describe()}' of the {what} reads '{name}', which is "
                                 "neither an input nor written by a node",
                                 f"declare '{name}' as an input of the {what}"))
    for name in outputs:
        if name not in producer:
            problems.append((_line_of_output(lines, name) if name in inputs else 1, None,
                             f"output '{name}' of the {what} is not written by any node",
                             f"compute '{name}' with a node (an input cannot be an output: use Identity)"))
    if problems:
        raise PatternTextError(problems)
    pattern = Pattern(tuple(nodes), inputs, outputs, constants, opsets, producer)
    read = {name for p in nodes for name in p.inputs}
    header = next((i for i, line in enumerate(lines, 1) if "=>" in line), 1)
    for name in inputs:
        if name not in read and what == "pattern":  # a replacement may leave pattern inputs unread
            problems.append((header, None, f"input '{name}' of the {what} is not read by any node",
                             f"remove '{name}' from the {what}'s inputs"))
    if what == "pattern":
        reached = _ancestors(pattern, pattern.anchor)
        for i, p in enumerate(nodes):
            if i not in reached:
                problems.append((p.line, None, f"node '{p.describe()}' does not feed the pattern's first output "
                                 f"'{outputs[0]}'", "a pattern is matched backwards from the node writing its first "
                                 "output: list the output it computes first, or remove the node"))
    if problems:
        raise PatternTextError(problems)
    return pattern


def _ancestors(pattern: Pattern, start: int) -> set[int]:
    seen = {start}
    work = [start]
    while work:
        for name in pattern.nodes[work.pop()].inputs:
            if name in pattern.producer:
                q = pattern.producer[name][0]
                if q not in seen:
                    seen.add(q)
                    work.append(q)
    return seen


def _attr_value(a: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
    return value


def check_pattern_text(text: str, what: str = "pattern") -> list[TextProblem]:
    """Problems of a pattern text, found without a model (empty when it is fine)."""
    try:
        parse_pattern(text, what)
    except PatternTextError as exc:
        return exc.problems
    return []


def check_replacement(pattern_text: str, replacement_text: str, constant: list[str] | None = None
                      ) -> list[tuple[str, TextProblem]]:
    """Problems of a pattern and its replacement together, as ``(parameter, problem)``: each
    parses, the replacement reads only pattern inputs and writes exactly the pattern's outputs,
    and ``constant`` names pattern inputs."""
    out: list[tuple[str, TextProblem]] = []
    try:
        pattern = parse_pattern(pattern_text)
    except PatternTextError:
        return []  # the pattern's own check reports it
    if constant:
        for i, name in enumerate(constant):
            if name not in pattern.inputs:
                out.append((f"constant[{i}]", (0, None, f"'{name}' is not an input of the pattern",
                                               "the pattern's inputs are: " + ", ".join(pattern.inputs))))
    try:
        replacement = parse_pattern(replacement_text, "replacement")
    except PatternTextError:
        return out  # the replacement's own check reports it
    lines = replacement_text.splitlines()
    header = next((i for i, line in enumerate(lines, 1) if "=>" in line), 1)
    for name in replacement.inputs:
        if name not in pattern.inputs:
            out.append(("replacement", (header, None, f"replacement input '{name}' is not an input of the pattern",
                                        "the replacement reads what the pattern's inputs are bound to: "
                                        "its inputs are some of " + ", ".join(pattern.inputs))))
    if set(replacement.outputs) != set(pattern.outputs) or len(replacement.outputs) != len(pattern.outputs):
        out.append(("replacement", (header, None, f"the replacement writes {_names(replacement.outputs)} but the "
                                    f"pattern writes {_names(pattern.outputs)}",
                                    "the replacement produces the pattern's outputs under the same names")))
    return out


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{n}'" for n in names) or "nothing"


# -- matching ---------------------------------------------------------------------------


def is_constant(t: gs.Tensor) -> bool:
    """An initializer, or the output of a Constant node."""
    if isinstance(t, gs.Constant):
        return True
    return len(t.inputs) == 1 and t.inputs[0].op == "Constant" and not t.inputs[0].inputs


def describe_tensor(t: gs.Tensor | None, members: set[int]) -> str:
    """What a tensor is, for "found X" in a miss: the producer's op, or what kind of value it is."""
    if t is None:
        return "no input"
    if isinstance(t, gs.Constant):
        return f"initializer '{t.name}'"
    if t.inputs:
        producer = t.inputs[0]
        if id(producer) not in members:
            return f"'{t.name}' of the enclosing graph"
        return producer.op
    return f"graph input '{t.name}'"


def attr_equal(have: Any, want: Any) -> bool:
    """A node's attribute value (as gs holds it) equals a pattern's."""
    if isinstance(have, gs.Constant):
        have = have.values
    if isinstance(have, np.ndarray) or isinstance(want, np.ndarray):
        try:
            return bool(np.array_equal(np.asarray(have), np.asarray(want)))
        except Exception:
            return False
    if isinstance(have, (list, tuple)) and isinstance(want, (list, tuple)):
        return len(have) == len(want) and all(attr_equal(a, b) for a, b in zip(have, want))
    if isinstance(have, float) or isinstance(want, float):
        if isinstance(have, (int, float)) and isinstance(want, (int, float)):
            return abs(float(have) - float(want)) <= 1e-6 * max(1.0, abs(float(want)))
        return False
    return bool(have == want)


def _value_equal(t: gs.Tensor, want: np.ndarray) -> bool:
    if isinstance(t, gs.Constant) and t.shape is not None and int(np.prod(t.shape)) != want.size:
        return False  # a large weight is not read to be compared with a small pattern constant
    have = constant_values(t)
    if have is None or have.size != want.size:
        return False
    try:
        return bool(np.allclose(have.astype(np.float64).ravel(), want.astype(np.float64).ravel(),
                                rtol=1e-6, atol=0.0))
    except (TypeError, ValueError):
        return bool(np.array_equal(have.ravel(), want.ravel()))


@dataclass
class Match:
    """A full match: the graph nodes in pattern order and what each pattern tensor is bound to."""

    nodes: list[gs.Node]
    tensors: dict[str, gs.Tensor]
    anchor: gs.Node
    """The node writing the pattern's first output (every other matched node feeds it)."""


@dataclass
class Miss:
    """How far a failed match got: pattern nodes matched, and why it stopped."""

    depth: int
    reason: str
    bound: int = 0


class Matcher:
    """Matches one pattern in one graph (a main graph, a subgraph or a function body)."""

    def __init__(self, pattern: Pattern, graph: gs.Graph | gs.Function, constant: frozenset[str] = frozenset()
                 ) -> None:
        self.pattern = pattern
        self.members = {id(n) for n in graph.nodes}
        self.constant = constant
        self.miss: Miss | None = None

    def candidates(self, graph: gs.Graph | gs.Function) -> list[gs.Node]:
        a = self.pattern.nodes[self.pattern.anchor]
        return [n for n in graph.nodes if n.op == a.op and node_domain(n) == a.domain]

    def match(self, node: gs.Node) -> Match | None:
        """The match whose anchor is ``node``, or None (then :attr:`miss` says why)."""
        self.miss = None
        found = self._expand([(self.pattern.anchor, node)], {}, {}, {})
        if found is None:
            return None
        tensors, nmap = found
        return Match([nmap[i] for i in range(len(self.pattern.nodes))], tensors, node)

    def _fail(self, depth: int, reason: str, bound: int = 0) -> None:
        """Remember the failure that got furthest: most pattern nodes matched, then (between the
        input orders of a commutative node) most of its inputs bound."""
        if self.miss is None or (depth, bound) > (self.miss.depth, self.miss.bound):
            self.miss = Miss(depth, reason, bound)

    def _fail_at(self, depth: int, j: int, reason: str) -> None:
        self._fail(depth, reason, j + 1)

    def _node_problem(self, p: PatternNode, node: gs.Node) -> str | None:
        if node.op != p.op or node_domain(node) != p.domain:
            return f"expected {p.op}, found {node.op}"
        for key, want in p.attrs.items():
            if key not in node.attrs:
                return f"attribute '{key}' is not set (pattern wants {_show(want)})"
            if not attr_equal(node.attrs[key], want):
                return f"attribute '{key}' is {_show(node.attrs[key])}, pattern wants {_show(want)}"
        n_in = len(p.inputs)
        while n_in and p.inputs[n_in - 1] == "":
            n_in -= 1
        have = len(node.inputs)
        while have and node.inputs[have - 1].name == "":
            have -= 1
        if have != n_in:
            return f"has {have} input(s), pattern wants {n_in}"
        if len(node.outputs) < len(p.outputs):
            return f"has {len(node.outputs)} output(s), pattern wants {len(p.outputs)}"
        return None

    def _expand(self, todo: list[tuple[int, gs.Node]], tensors: dict[str, gs.Tensor], nmap: dict[int, gs.Node],
                used: dict[int, int]) -> tuple[dict[str, gs.Tensor], dict[int, gs.Node]] | None:
        if not todo:
            return tensors, nmap
        (pi, node), rest = todo[0], todo[1:]
        p = self.pattern.nodes[pi]
        depth = len(nmap)
        problem = self._node_problem(p, node)
        if problem is not None:
            self._fail(depth, f"{node_label(node)}: {problem}")
            return None
        tensors = dict(tensors)
        for k, name in enumerate(p.outputs):
            if name:
                bound = tensors.get(name)
                if bound is not None and bound is not node.outputs[k]:
                    self._fail(depth, f"{node_label(node)}: output {k} is '{node.outputs[k].name}', but pattern "
                                      f"tensor '{name}' is already bound to '{bound.name}'")
                    return None
                tensors[name] = node.outputs[k]
        nmap = {**nmap, pi: node}
        used = {**used, id(node): pi}
        for order in self._orders(p, node):
            result = self._inputs(p, node, order, tensors, nmap, used, rest, depth + 1)
            if result is not None:
                return result
        return None

    def _orders(self, p: PatternNode, node: gs.Node) -> list[tuple[int, ...]]:
        n = len(p.inputs)
        identity = tuple(range(n))
        if p.domain != "" or p.op not in COMMUTATIVE or n < 2:
            return [identity]
        if n > 4:
            return [identity]  # Sum of many: in order (4! orders at most are tried)
        return list(permutations(identity))

    def _inputs(self, p: PatternNode, node: gs.Node, order: tuple[int, ...], tensors: dict[str, gs.Tensor],
                nmap: dict[int, gs.Node], used: dict[int, int], rest: list[tuple[int, gs.Node]], depth: int
                ) -> tuple[dict[str, gs.Tensor], dict[int, gs.Node]] | None:
        tensors = dict(tensors)
        todo = list(rest)
        for j, name in enumerate(p.inputs):
            i = order[j]  # the node's input i is matched to pattern input j
            t = node.inputs[i] if i < len(node.inputs) and node.inputs[i].name != "" else None
            where = f"{node_label(node)}: input {i}"
            label = node_label(node)
            if name == "":
                if t is not None:
                    self._fail_at(depth, j, f"{where} is '{t.name}', pattern wants it omitted")
                    return None
                continue
            if t is None:
                self._fail_at(depth, j, f"{where} is omitted, pattern wants '{name}'")
                return None
            if name in self.pattern.constants:
                if not _value_equal(t, self.pattern.constants[name]):
                    self._fail_at(depth, j, f"{where} is {self._value_text(t)}, pattern wants the constant "
                                      f"{_show(self.pattern.constants[name])}")
                    return None
                continue
            bound = tensors.get(name)
            if bound is not None:
                if bound is not t:
                    self._fail_at(depth, j, f"{where} is '{t.name}', but pattern tensor '{name}' is already "
                                      f"bound to '{bound.name}'")
                    return None
                continue
            if name in self.pattern.producer:
                q, k = self.pattern.producer[name]
                qn = self.pattern.nodes[q]
                producer = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
                if producer is None or id(producer) not in self.members or producer.op != qn.op:
                    found = describe_tensor(t, self.members)
                    self._fail_at(depth, j, f"{label}: expected {qn.op} on input {i}, found {found}")
                    return None
                if k >= len(producer.outputs) or producer.outputs[k] is not t:
                    self._fail_at(depth, j, f"{where} is output {_out_index(producer, t)} of "
                                            f"{node_label(producer)}, "
                                      f"pattern wants its output {k}")
                    return None
                if q in nmap:
                    if nmap[q] is not producer:
                        self._fail_at(depth, j, f"{where} comes from {node_label(producer)}, which is not the node "
                                          f"matched to '{qn.describe()}'")
                        return None
                elif id(producer) in used:
                    self._fail_at(depth, j, f"{where} comes from {node_label(producer)}, which is already "
                                            "matched to another pattern node")
                    return None
                elif not any(q == item[0] for item in todo):
                    todo.append((q, producer))
                tensors[name] = t
                continue
            # a pattern input
            if name in self.constant and not is_constant(t):
                self._fail_at(depth, j, f"{where} is '{t.name}', computed by {describe_tensor(t, self.members)}; "
                                  f"pattern input '{name}' must be a constant or initializer")
                return None
            tensors[name] = t
        return self._expand(todo, tensors, nmap, used)

    def _value_text(self, t: gs.Tensor) -> str:
        if not is_constant(t):
            return f"'{t.name}', computed by {describe_tensor(t, self.members)}"
        values = constant_values(t) if not (isinstance(t, gs.Constant) and t.shape is not None
                                            and int(np.prod(t.shape)) > 8) else None
        return f"the constant {_show(values)}" if values is not None else f"the constant '{t.name}'"


def _out_index(node: gs.Node, t: gs.Tensor) -> int:
    return next(i for i, o in enumerate(node.outputs) if o is t)


def _show(value: Any) -> str:
    if isinstance(value, gs.Constant):
        value = value.values
    if isinstance(value, np.ndarray):
        if value.size > 8:
            return f"a {value.dtype} tensor of shape {list(value.shape)}"
        return str(value.tolist())
    if isinstance(value, str):
        return repr(value)
    return str(value)
