"""Bad input of every kind: a one-screen message, exit 1, no output, no temporary
files, the input untouched. Plus a fuzz test over damaged models and recipes."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import onnx
import onnx.checker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from util import FIXTURES, RECIPES

import surgeon
from surgeon.cli import main
from surgeon.io.save import _checker_problem

FOO = (FIXTURES / "model_foo.onnx").read_bytes()
STRIP = (RECIPES / "strip_fooop.yaml").read_text()


def _apply(folder: Path, recipe_text: str, model_bytes: bytes, *extra: str):
    """Run `surgeon apply` on copies in ``folder``; returns (code, stdout, stderr, model path)."""
    recipe, model = folder / "r.yaml", folder / "m.onnx"
    recipe.write_text(recipe_text)
    model.write_bytes(model_bytes)
    out, err = io.StringIO(), io.StringIO()
    code = main(["apply", str(recipe), str(model), *extra], out=out, err=err)
    return code, out.getvalue(), err.getvalue(), model


def _assert_user_error(folder: Path, code: int, err: str, model: Path, model_bytes: bytes):
    assert code == 1, err
    assert "Traceback" not in err and err.startswith(("error:", str(folder), "r.yaml")), err
    assert len(err.splitlines()) < 40, "a message must fit on one screen"
    assert sorted(p.name for p in folder.iterdir()) == ["m.onnx", "r.yaml"]
    assert model.read_bytes() == model_bytes


def _model(nodes, inputs=("x",), outputs=("y",)) -> bytes:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, [2]) for i in inputs],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2]) for o in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


CYCLIC = _model([helper.make_node("Add", ["x", "b"], ["a"], name="A"), helper.make_node("Relu", ["a"], ["b"], name="B"),
                 helper.make_node("Relu", ["a"], ["y"], name="C")])
DANGLING = _model([helper.make_node("Add", ["x", "ghost"], ["y"], name="A")])
TIDY = "version: 1\nsteps:\n  - pass: cleanup\n  - pass: toposort\n"


@pytest.mark.parametrize("recipe,model_bytes", [
    pytest.param(STRIP, b"not onnx at all", id="not-onnx"),
    pytest.param(STRIP, FOO[: len(FOO) // 3], id="truncated"),
    pytest.param(STRIP, FOO[:40] + bytes([FOO[40] ^ 0xFF]) + FOO[41:], id="bit-flipped"),
    pytest.param(TIDY, CYCLIC, id="cyclic-graph"),
    pytest.param("", FOO, id="empty-recipe"),
    pytest.param("- pass: cleanup\n", FOO, id="recipe-not-a-mapping"),
    pytest.param("version: 2\nstep:\n  - pas: cleanup\n    with: 3\n  - pass: remove_nodes\n"
                 "    with: {op: FooOp, mode: on, count: 1.0}\nsteps: []\n", FOO, id="every-mistake"),
    pytest.param("version: 1\nsteps:\n  - pass: remove_node\n    with: {op: NotThere}\n", FOO, id="matches-nothing"),
])
def test_bad_input_is_a_user_error(tmp_path, recipe, model_bytes):
    code, _, err, model = _apply(tmp_path, recipe, model_bytes)
    _assert_user_error(tmp_path, code, err, model, model_bytes)


def test_dangling_input_is_refused_on_load(tmp_path):
    """A graph that reads a tensor nothing provides cannot run anywhere: refused, unlike
    benign checker findings (missing shapes, plugin ops) which are only warnings."""
    code, out, err, model = _apply(tmp_path, TIDY, DANGLING)
    _assert_user_error(tmp_path, code, err, model, DANGLING)
    assert err == (f"error: {model} has a broken graph:\n"
                   "  node 'A' (Add) in graph 'g' reads 'ghost', which no node, graph input or initializer provides\n"
                   "  hint: no runtime can execute it; re-export the model, or fix the graph with onnx / "
                   "onnx-graphsurgeon\n")


def test_pass_that_raises_halfway(tmp_path):
    @surgeon.register_pass("test_halfway_crash")
    def crash(graph):
        """Remove a node, then fail."""
        graph.nodes.pop()
        raise RuntimeError("boom")

    try:
        code, _, err, model = _apply(tmp_path, "version: 1\nsteps:\n  - pass: test_halfway_crash\n", FOO)
    finally:
        surgeon.registry.unregister("test_halfway_crash")
    _assert_user_error(tmp_path, code, err, model, FOO)
    assert err.startswith(f"{tmp_path / 'r.yaml'}:3:5: error: step 1 (test_halfway_crash): the pass raised "
                          "RuntimeError: boom\n")


def test_missing_reference_is_a_user_error(tmp_path):
    code, _, err, model = _apply(tmp_path, STRIP, FOO, "--reference", str(tmp_path / "nope.onnx"))
    _assert_user_error(tmp_path, code, err, model, FOO)


# -- fuzz ------------------------------------------------------------------------------

_TOKENS = ["", ":", " ", "-", "{", "}", "[", "]", "\n", "\t", "'", "yes", "1e-3", "null", "FooOp", "cleanup",
           "remove_node", "expect: {removed: 1}", "allow_missing: true", "count: 2", "with:", "010", "&a", "*a"]


@st.composite
def damaged_model(draw):
    data = bytearray(FOO)
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


@st.composite
def mutated_recipe(draw):
    text = STRIP
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        text = text[:i] + draw(st.sampled_from(_TOKENS)) + text[j:]
    return text


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.tuples(st.just(STRIP), damaged_model()), st.tuples(mutated_recipe(), st.just(FOO))))
def test_fuzz_apply(case):
    recipe, model_bytes = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        code, out, err, model = _apply(folder, recipe, model_bytes)
        assert code in (0, 1), err
        if code == 0:
            written = folder / "m.surgeon.onnx"
            if "as it already rejected the input" not in err:  # else: damage the input had (a warning, on stderr)
                # An op name the flips turned unknown (Conv -> Conv*) is a plugin op to surgeon,
                # checked under a placeholder domain like TensorRT's plugins: check the same way.
                assert _checker_problem(written, folder) is None
            assert sorted(p.name for p in folder.iterdir()) == ["m.onnx", "m.surgeon.onnx", "r.yaml"]
            assert model.read_bytes() == model_bytes
        else:
            _assert_user_error(folder, code, err, model, model_bytes)


def test_unknown_default_domain_op_is_kept_as_a_plugin_op(tmp_path):
    """Found by the fuzz test on Python 3.10: a flipped byte renamed Conv to Conv*. surgeon keeps an
    unknown default-domain op as a plugin op (like EfficientNMS_TRT) and checks everything else."""
    proto = onnx.load_from_string(FOO)
    proto.graph.node[0].op_type = "Conv*"
    code, out, err, model = _apply(tmp_path, STRIP, proto.SerializeToString())
    assert code == 0, err
    written = tmp_path / "m.surgeon.onnx"
    assert [n.op_type for n in onnx.load(written).graph.node][0] == "Conv*"
    assert _checker_problem(written, tmp_path) is None


def test_text_field_that_is_not_utf8_is_a_user_error(tmp_path):
    """Found by test_fuzz_apply: protobuf hands a non-UTF-8 opset domain over as bytes, silently."""
    damaged = FOO.replace(b"devtech", b"\xe4evtech")
    code, out, err, model = _apply(tmp_path, STRIP, damaged)
    assert err == (f"error: {model} is not a valid ONNX model: a text field is not UTF-8 (b'\\xe4evtech')\n"
                   "  hint: the file may be corrupt; re-export it\n")
    _assert_user_error(tmp_path, code, err, model, damaged)
