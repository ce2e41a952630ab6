"""Walking a gs graph together with its subgraphs (If/Loop/Scan bodies).

onnx-graphsurgeon stores subgraphs as ``gs.Graph`` values in node attributes;
these helpers visit them in a fixed, deterministic order so passes, the runner's
change tracking and the exporter all agree on what "the whole model" is.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
import onnx_graphsurgeon as gs


def subgraphs_of(node: gs.Node) -> Iterator[tuple[str, gs.Graph]]:
    """The ``(attribute name, graph)`` pairs of a node, in attribute order."""
    for key, value in node.attrs.items():
        if isinstance(value, gs.Graph):
            yield key, value
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, gs.Graph):
                    yield key, item


def walk_graphs(graph: gs.Graph) -> Iterator[gs.Graph]:
    """``graph`` and every subgraph nested in it, outermost first."""
    yield graph
    for node in graph.nodes:
        for _, sub in subgraphs_of(node):
            yield from walk_graphs(sub)


def proto_subgraphs_of(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """The ``(attribute name, GraphProto)`` pairs of a node (the protobuf-level twin of :func:`subgraphs_of`)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.name, attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for sub in attr.graphs:
                yield attr.name, sub


def proto_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every GraphProto nested in its nodes' attributes, outermost first
    (the protobuf-level twin of :func:`walk_graphs`)."""
    yield graph
    for node in graph.node:
        for _, sub in proto_subgraphs_of(node):
            yield from proto_graphs(sub)


def proto_value_infos(graph: onnx.GraphProto) -> Iterator[onnx.ValueInfoProto]:
    """The inputs, outputs and value_info of ``graph`` and of every graph nested in it, graph by graph."""
    for sub in proto_graphs(graph):
        yield from sub.input
        yield from sub.output
        yield from sub.value_info


def walk_nodes(graph: gs.Graph) -> Iterator[tuple[gs.Node, gs.Graph]]:
    """Every ``(node, graph that holds it)`` in ``graph`` and its subgraphs."""
    for g in walk_graphs(graph):
        for node in g.nodes:
            yield node, g


def node_domain(node: gs.Node) -> str:
    """A node's domain with the default domain spelled ``""``."""
    d = node.domain or ""
    return "" if d == "ai.onnx" else d


def producers(graph: gs.Graph) -> dict[str, gs.Node]:
    """Tensor name -> the node producing it, in one graph (not its subgraphs)."""
    return {t.name: n for n in graph.nodes for t in n.outputs if t.name}


def all_tensor_names(graph: gs.Graph) -> set[str]:
    """Every tensor name visible anywhere in the graph and its subgraphs."""
    names: set[str] = set()
    for g in walk_graphs(graph):
        for t in g.inputs + g.outputs:
            names.add(t.name)
        for n in g.nodes:
            for t in n.inputs + n.outputs:
                if t.name:
                    names.add(t.name)
    return names




def graphs_and_functions(graph: gs.Graph) -> Iterator[gs.Graph]:
    """``graph``, its subgraphs, then the bodies of its local functions and their subgraphs:
    every node list a pass that edits "the whole model" visits, in a fixed order."""
    yield from walk_graphs(graph)
    for func in getattr(graph, "functions", None) or []:
        yield from walk_graphs(func)
