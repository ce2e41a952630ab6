"""rewrite: replace every match of a pattern, written in ONNX text, with a replacement graph."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon.errors import PassError, did_you_mean
from surgeon.graph.edit import detach, remove_dead
from surgeon.graph.names import Namer, node_label
from surgeon.graph.pattern import (
    Match,
    Miss,
    Pattern,
    PatternTextError,
    TextProblem,
    check_pattern_text,
    check_replacement,
    is_constant,
    parse_pattern,
)
from surgeon.graph.pattern import Matcher as _Matcher
from surgeon.graph.toposort import is_sorted, sorted_nodes
from surgeon.graph.walk import graphs_and_functions, walk_graphs
from surgeon.io.model import Model
from surgeon.passes.contract import Contract, verified_by
from surgeon.passes.result import PassResult
from surgeon.passes.spec import Check, Min, checked_together
from surgeon.recipe.types import text_path

_MISSES_SHOWN = 3


def _text_check(what: str) -> Check:
    def check(value: Any) -> list[tuple[str, str, str | None]]:
        return [_located(problem) for problem in check_pattern_text(value, what)]

    return Check(check)


def _located(problem: TextProblem) -> tuple[str, str, str | None]:
    line, column, message, hint = problem
    return (text_path(line, column) if line else "", message, hint)


def _check_together(params: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    if not isinstance(params.get("pattern"), str) or not isinstance(params.get("replacement"), str):
        return []
    out = []
    for name, problem in check_replacement(params["pattern"], params["replacement"], params.get("constant")):
        sub, message, hint = _located(problem)
        out.append((name + sub, message, hint))
    return out


@verified_by(Contract("outputs equal the original's: a replacement is meant to compute what its match did "
                      "(float arithmetic may be reordered, so floats compare at rtol 1e-4 and atol 1e-4 of each "
                      "output's scale)", tolerance="reassociated"))
@checked_together(_check_together)
def rewrite(model: Model, *, pattern: Annotated[str, _text_check("pattern")],
            replacement: Annotated[str, _text_check("replacement")], constant: list[str] | None = None,
            count: Annotated[int, Min(0)] | None = None, allow_missing: bool = False) -> PassResult:
    """Replace every match of a pattern with a replacement, both written in ONNX text syntax.

    Parameters:
        pattern: the graph to find, in ``onnx.parser`` text: a model
            (``<ir_version: 8, opset_import: ["" : 17]> agraph (...) => (...) {...}``)
            or a bare graph. Its inputs bind to any tensor; its initializers
            (``<float two = {2.0}>`` after the signature) match constants of
            equal value.
        replacement: the graph that takes the match's place, in the same
            syntax; it reads some of the pattern's inputs and writes exactly
            the pattern's outputs, under the same names.
        constant: pattern inputs that must be bound to a constant or initializer.
        count: exact number of matches that must be replaced (default: at least one).
        allow_missing: matching nothing is not an error.

    Rules:
        1. A pattern node matches a node of the same op and domain with as
           many inputs (trailing omitted inputs do not count) and at least as
           many outputs. An attribute written in the pattern must be equal (a
           float within a relative 1e-6); one left out matches any value.
        2. Inputs of commutative ops (Add, Mul, And, Or, Xor, Max, Min, Sum,
           Mean, Equal, BitwiseAnd/Or/Xor) match in either order. A pattern
           input read twice must be bound to the same tensor both times. Types
           and shapes written in the signatures are not compared.
        3. Matching starts at each node with the op of the pattern node that
           writes the first output (in graph order) and walks back along
           inputs, so every pattern node must feed that output; the cost is
           linear in the graph's size. Matches are searched in the main graph,
           then in If/Loop/Scan bodies (outermost first), then in the bodies of
           local functions; a match lies within one graph.
        4. Every match that does not overlap an earlier one is replaced. A
           match whose inner tensors are read outside it (or are graph
           outputs), or whose outputs would feed its own inputs, is skipped and
           reported in the notes.
        5. The replacement's nodes take the place of the match's last node;
           the node writing the first output keeps that node's name, the others
           and the replacement's inner tensors and constants are named
           ``<that name>/<name in the text>``, made unique. Outputs keep their
           names, types and shapes. Constant nodes that only the match read are
           removed.
        6. Ops of the replacement in the default domain must exist at the
           model's opset (LayerNormalization needs 17: run convert_opset
           first); an op ONNX does not know is kept as a plugin op. A custom
           domain the model does not import is imported at the replacement's
           version (1 when it gives none).
        7. Fewer matches than ``count`` (or none) is an error that lists the
           nearest misses: where a match got furthest and why it stopped.
           Pattern and replacement are checked when the recipe is read: they
           parse, the replacement reads only pattern inputs and writes exactly
           its outputs, and ``constant`` names pattern inputs.

    Example:
        version: 1
        steps:
          - pass: rewrite
            with:
              pattern: |
                <ir_version: 8, opset_import: ["" : 17]>
                agraph (float[N] x) => (float[N] y) {
                  s = Sigmoid (x)
                  y = Mul (x, s)
                }
              replacement: |
                <ir_version: 8, opset_import: ["" : 17]>
                agraph (float[N] x) => (float[N] y) {
                  y = SiLU_TRT (x)
                }

    Reports:
        "rewrote N matches" in the step summary; the nodes removed and added
        (by the runner); a note per skipped match with its reason; details
        ``matches`` (count) and ``skipped`` (reasons).
    """
    pat = _parse(pattern, "pattern")
    rep = _parse(replacement, "replacement")
    problems = check_replacement(pattern, replacement, constant)
    if problems:
        _, (_line, _col, message, hint) = problems[0]
        raise PassError(message, hint=hint)
    _check_opsets(model, rep)

    wanted = frozenset(constant or ())
    accepted: list[tuple[gs.Graph, Match]] = []
    skipped: list[str] = []
    misses: list[tuple[Miss, gs.Node, str]] = []
    taken: set[int] = set()
    anchor_op = pat.nodes[pat.anchor]
    seen_ops: set[str] = set()
    for graph in graphs_and_functions(model.graph):
        where = _where(model, graph)
        matcher = _Matcher(pat, graph, wanted)
        seen_ops.update(n.op for n in graph.nodes)
        index: dict[int, int] | None = None
        outputs = {id(t) for t in graph.outputs}
        for node in matcher.candidates(graph):
            if id(node) in taken:
                continue
            match = matcher.match(node)
            if match is None:
                if matcher.miss is not None:
                    misses.append((matcher.miss, node, where))
                continue
            if any(id(n) in taken for n in match.nodes):
                skipped.append(f"the match at {node_label(node)}{where} overlaps an earlier match")
                continue
            reason = _escape(pat, match, outputs)
            if reason is None and len(pat.outputs) > 1:
                index = index if index is not None else {id(n): i for i, n in enumerate(graph.nodes)}
                reason = _cycle(pat, match, index)
            if reason is not None:
                skipped.append(f"the match at {node_label(node)}{where} was skipped: {reason}")
                continue
            taken.update(id(n) for n in match.nodes)
            accepted.append((graph, match))

    n = len(accepted)
    if (n == 0 and not allow_missing) or (count is not None and n != count and not (allow_missing and n == 0)):
        raise _no_match_error(pat, anchor_op.op, n, count, accepted, skipped, misses, seen_ops)

    _apply(model, pat, rep, accepted)
    result = PassResult(notes=list(skipped), details={"matches": n, "skipped": skipped})
    if n:
        plugins = sorted({p.op for p in rep.nodes if not p.domain and not onnx.defs.has(p.op)})
        result.notes += [f"{op} is not an ONNX op: it is kept as a plugin op in the default domain" for op in plugins]
    if n:
        result.headline.append(f"rewrote {n} match" + ("" if n == 1 else "es"))
    return result


def _parse(text: str, what: str) -> Pattern:
    try:
        return parse_pattern(text, what)
    except PatternTextError as exc:
        line, column, message, hint = exc.problems[0]
        place = f" (line {line} of the {what})" if line else ""
        raise PassError(message + place, hint=hint) from None


def _check_opsets(model: Model, rep: Pattern) -> None:
    opset = model.opset
    for p in rep.nodes:
        if p.domain or not onnx.defs.has(p.op):
            continue
        try:
            onnx.defs.get_schema(p.op, opset, "")
        except onnx.defs.SchemaError:
            since = onnx.defs.get_schema(p.op).since_version
            raise PassError(f"the replacement uses {p.op} (line {p.line}), which does not exist at the model's "
                            f"opset {opset} (it came in opset {since})",
                            hint=f"convert the model first (- pass: convert_opset, with: {{target: {since}}}), "
                                 f"or write the replacement with ops of opset {opset}") from None


def _where(model: Model, graph: gs.Graph) -> str:
    if graph is model.graph:
        return ""
    if isinstance(graph, gs.Function):
        return f" in local function '{graph.name}'"
    return f" in subgraph '{graph.name}'"


def _escape(pat: Pattern, match: Match, graph_outputs: set[int]) -> str | None:
    """Why the match's inner tensors cannot go away (a reader outside it, a graph output), or None."""
    inside = {id(n) for n in match.nodes}
    kept = {id(match.tensors[name]) for name in pat.outputs}
    for name in pat.inputs:
        t = match.tensors.get(name)
        if t is not None and any(id(p) in inside for p in t.inputs) and id(t) not in kept:
            return f"pattern input '{name}' is bound to '{t.name}', which the match itself computes"
    for node in match.nodes:
        for t in node.outputs:
            if id(t) in kept:
                continue
            if id(t) in graph_outputs:
                return f"its inner tensor '{t.name}' is a graph output"
            for reader in t.outputs:
                if id(reader) not in inside:
                    return f"its inner tensor '{t.name}' is read by {node_label(reader)} outside the match"
    return None


def _cycle(pat: Pattern, match: Match, index: dict[int, int]) -> str | None:
    """Whether an output other than the last node's feeds, outside the match, one of its nodes."""
    inside = {id(n) for n in match.nodes}
    last = max(index[id(n)] for n in match.nodes)
    for name in pat.outputs:
        t = match.tensors[name]
        work = [r for r in t.outputs if id(r) not in inside and index.get(id(r), last + 1) < last]
        seen: set[int] = set()
        while work:
            node = work.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            for out in node.outputs:
                for r in out.outputs:
                    if id(r) in inside:
                        return f"its output '{name}' feeds its own input through {node_label(node)}"
                    if index.get(id(r), last + 1) < last:
                        work.append(r)
    return None


def _no_match_error(pat: Pattern, op: str, n: int, count: int | None, accepted: list[tuple[gs.Graph, Match]],
                    skipped: list[str], misses: list[tuple[Miss, gs.Node, str]], ops: set[str]) -> PassError:
    expected = f"expected {count}" if count is not None else "expected at least 1"
    head = f"the pattern matched {n} time{'' if n == 1 else 's'}, {expected}"
    lines = [head]
    if count is not None and n > count:
        lines.append("matches at: " + ", ".join(node_label(m.anchor) for _, m in accepted[:10])
                     + (f" and {n - 10} more" if n > 10 else ""))
        return PassError("\n".join(lines), hint="the model may have been re-exported; check the pattern or "
                                                "update count")
    lines += [f"  {s}" for s in skipped]
    if not misses and not skipped:
        close = did_you_mean(op, sorted(ops))
        lines.append(f"no node has op {op} (the op writing the pattern's output '{pat.outputs[0]}')")
        hint = (f"did you mean {', '.join(repr(c) for c in close)}?\n" if close else "")
        return PassError("\n".join(lines), hint=hint + "set allow_missing: true if the step may legitimately "
                                                       "match nothing")
    ranked = sorted(range(len(misses)), key=lambda i: (-misses[i][0].depth, i))
    if misses:
        lines.append("nearest misses (pattern nodes matched, and where the match stopped):")
    total = len(pat.nodes)
    for i in ranked[:_MISSES_SHOWN]:
        miss, anchor, where = misses[i]
        lines.append(f"  from {node_label(anchor)}{where}: {miss.depth} of {total} matched; {miss.reason}")
    if len(misses) > _MISSES_SHOWN:
        lines.append(f"  and {len(misses) - _MISSES_SHOWN} more {op} node(s) that do not match")
    return PassError("\n".join(lines), hint="compare the pattern with the nodes named above (an attribute left "
                                            "out of the pattern matches any value); set allow_missing: true if "
                                            "the step may legitimately match nothing")


def _apply(model: Model, pat: Pattern, rep: Pattern, accepted: list[tuple[gs.Graph, Match]]) -> None:
    if not accepted:
        return
    namer = Namer(model.graph)
    for func in getattr(model.graph, "functions", None) or []:
        for g in walk_graphs(func):
            namer.taken.update(n.name for n in g.nodes if n.name)
            namer.taken.update(t.name for n in g.nodes for t in n.inputs + n.outputs if t.name)
    _import_domains(model, rep, {id(g): g for g, _ in accepted})
    by_graph: dict[int, list[Match]] = {}
    graphs: dict[int, gs.Graph] = {}
    for g, m in accepted:
        by_graph.setdefault(id(g), []).append(m)
        graphs[id(g)] = g
    for key, matches in by_graph.items():
        graph = graphs[key]
        members = {id(n) for n in graph.nodes}
        at: dict[int, list[gs.Node]] = {}
        gone: set[int] = set()
        dead: list[gs.Node] = []
        for m in matches:
            anchor = m.anchor
            base = anchor.name or anchor.op
            read = [t for node in m.nodes for t in node.inputs if is_constant(t)]
            for node in m.nodes:
                gone.add(id(node))
                members.discard(id(node))
                detach(node)
            at[id(anchor)] = _instantiate(rep, m, base, namer)
            remove_dead(graph, read, members=members, later=dead)
        gone.update(id(n) for n in dead)
        kept: list[gs.Node] = []
        for node in graph.nodes:
            if id(node) in at:
                kept.extend(at[id(node)])
            elif id(node) not in gone:
                kept.append(node)
        graph.nodes = kept
        if len(pat.outputs) > 1 and not is_sorted(graph):
            graph.nodes = sorted_nodes(graph)


def _instantiate(rep: Pattern, match: Match, base: str, namer: Namer) -> list[gs.Node]:
    tensors: dict[str, gs.Tensor] = {}
    for name in rep.inputs:
        tensors[name] = match.tensors[name]
    for name in rep.outputs:
        tensors[name] = match.tensors[name]
    for name, value in rep.constants.items():
        tensors[name] = gs.Constant(namer.new(f"{base}/{name}"), np.array(value))
    first = rep.producer[rep.outputs[0]][0]
    nodes = []
    for i, p in enumerate(rep.nodes):
        outs = []
        for name in p.outputs:
            if name and name not in tensors:
                tensors[name] = gs.Variable(namer.new(f"{base}/{name}"))
            outs.append(tensors[name] if name else gs.Variable.empty())
        ins = [tensors[name] if name else gs.Variable.empty() for name in p.inputs]
        attrs = {k: (gs.Constant("", v) if isinstance(v, np.ndarray) else v) for k, v in p.attrs.items()}
        name = base if i == first else namer.new(f"{base}/{p.op}")
        nodes.append(gs.Node(p.op, name, attrs, inputs=ins, outputs=outs, domain=p.domain or None))
    return nodes


def _import_domains(model: Model, rep: Pattern, graphs: dict[int, gs.Graph]) -> None:
    for p in rep.nodes:
        if p.domain and p.domain not in model.opset_imports:
            model.opset_imports[p.domain] = rep.opsets.get(p.domain, 1)
    for g in graphs.values():
        if isinstance(g, gs.Function):
            have = {d.domain for d in g.import_domains or []}
            for p in rep.nodes:
                if p.domain and p.domain not in have:
                    g.import_domains = [*(g.import_domains or []),
                                        onnx.helper.make_opsetid(p.domain, rep.opsets.get(p.domain, 1))]
                    have.add(p.domain)
