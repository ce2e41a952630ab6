"""surgeon.graph.prune.cleanup leaves the very graph gs's Graph.cleanup leaves, object for object."""

from __future__ import annotations

import onnx
import pytest
from onnx.backend.test.loader import load_model_tests
from test_fast_import import _Twins
from util import real_model, real_model_names

from surgeon.graph import prune
from surgeon.graph.quiet import quiet_gs
from surgeon.io.fast_import import import_onnx


def _variants():
    """The graph as it is, with only its first output (dead nodes), and without inputs' readers."""
    yield lambda g: g
    yield lambda g: setattr(g, "outputs", g.outputs[:1]) or g
    yield lambda g: setattr(g, "outputs", []) or g


def assert_same_cleanup(proto: onnx.ModelProto) -> None:
    for remove_inputs in (False, True):
        for edit in _variants():
            ours, theirs = edit(import_onnx(proto)), edit(import_onnx(proto))
            with quiet_gs():
                theirs.cleanup(remove_unused_graph_inputs=remove_inputs, recurse_subgraphs=True)
                prune.cleanup(ours, remove_unused_graph_inputs=remove_inputs)
            _Twins().same(theirs, ours, "graph")


@pytest.mark.parametrize("name", real_model_names(subfolders=True))
def test_cleanup_equals_gs_on_real_models(name):
    assert_same_cleanup(onnx.load(real_model(name), load_external_data=False))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cleanup_equals_gs_on_every_backend_node_test():
    failures = []
    for case in load_model_tests(kind="node"):
        try:
            assert_same_cleanup(case.model)
        except BaseException as exc:
            failures.append(f"{case.name}: {str(exc).splitlines()[0]}")
    assert not failures, f"{len(failures)} differ:\n" + "\n".join(failures[:20])


def test_cleanup_of_a_dead_branch():
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 18]>
        g (float[2] x, float[2] unused) => (float[2] y) {
            a = Relu (x)
            dead = Neg (a)
            dead2 = Abs (dead)
            y = Sigmoid (a)
        }
    """)
    graph = import_onnx(model)
    prune.cleanup(graph, remove_unused_graph_inputs=True)
    assert [n.op for n in graph.nodes] == ["Relu", "Sigmoid"]
    assert [t.name for t in graph.inputs] == ["x"]
    assert [n.op for n in graph.nodes[0].outputs[0].outputs] == ["Sigmoid"]
    assert_same_cleanup(model)
