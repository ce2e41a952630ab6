"""The iterative toposort (surgeon.graph.toposort): any depth, stable, cycles named."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

import surgeon
from surgeon.graph.toposort import CycleError, is_sorted, sorted_nodes
from surgeon.io.export import to_proto


def _reversed_chain(n: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}" if i < n - 1 else "y"],
                              name=f"n{i}") for i in range(n)]
    graph = helper.make_graph(nodes[::-1], "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_toposort_sorts_a_5000_deep_reversed_chain():
    """gs's recursive toposort fails here with 'maximum recursion depth exceeded'."""
    model = surgeon.load(_reversed_chain(5000))
    assert not is_sorted(model.graph)
    report = surgeon.run_pass(model, "toposort")
    assert [n.name for n in model.graph.nodes] == [f"n{i}" for i in range(5000)]
    assert report.reordered and report.notes == ["reordered graph 'chain'"]
    onnx.checker.check_model(to_proto(model))


def test_toposort_keeps_valid_order_and_moves_only_what_must_move():
    x = gs.Variable("x", dtype="float32", shape=[2])
    a, b, c, d = (gs.Variable(n) for n in "abcd")
    na = gs.Node("Relu", "na", inputs=[x], outputs=[a])
    nb = gs.Node("Relu", "nb", inputs=[x], outputs=[b])
    nc = gs.Node("Add", "nc", inputs=[d, b], outputs=[c])
    nd = gs.Node("Relu", "nd", inputs=[a], outputs=[d])
    graph = gs.Graph(nodes=[nb, na, nc, nd], inputs=[x], outputs=[c])
    # nb and na are independent: their order stays; only nc moves after nd.
    assert [n.name for n in sorted_nodes(graph)] == ["nb", "na", "nd", "nc"]
    graph.nodes = [nb, na, nd, nc]
    assert is_sorted(graph) and sorted_nodes(graph) == graph.nodes


def test_toposort_counts_what_subgraphs_read():
    """An If whose branch reads a tensor produced after it must move after that producer."""
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 18]>
        g (float[2] x, bool c) => (float[2] y) {
            y = If (c) <then_branch = t () => (float[2] ty) { ty = Relu (late) },
                        else_branch = e () => (float[2] ey) { ey = Neg (late) }>
            late = Abs (x)
        }
    """)
    graph = _gs_graph(model)
    assert not is_sorted(graph)
    assert [n.op for n in sorted_nodes(graph)] == ["Abs", "If"]


def _gs_graph(model):
    from surgeon.io.fast_import import import_onnx

    return import_onnx(model)


def test_toposort_names_nodes_on_a_cycle():
    a, b = gs.Variable("a"), gs.Variable("b")
    graph = gs.Graph(nodes=[gs.Node("Relu", "n1", inputs=[b], outputs=[a]),
                            gs.Node("Relu", "n2", inputs=[a], outputs=[b])], name="loop")
    with pytest.raises(CycleError, match=r"graph 'loop' has a cycle through node\(s\) n1, n2"):
        sorted_nodes(graph)
