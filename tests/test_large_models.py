"""Models past protobuf's 2 GiB limit, at test sizes.

A model with more than 2 GiB of weights cannot be in a unit test, but its code
paths can: the limits surgeon acts on are module constants, lowered here to
KiB, so that an 80 KiB model is "too big" for one protobuf. The structural
steps, saving and verification must then work without surgeon ever reading a
weight (ExternalValues.load raises), and verification must hold one model's
weights at a time. benchmarks/large.py measures the real thing (4 GiB).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

import surgeon
from surgeon.graph import shapes
from surgeon.io import export as export_module
from surgeon.io import save as save_module
from surgeon.io.external import ExternalValues
from surgeon.recipe.model import Recipe
from surgeon.workflow import VerifyOptions, apply_file

verify_module = sys.modules["surgeon.verify"]  # the package exports the function under the same name

LIMIT = 16 * 1024  # "2 GiB" for these tests: every weight file below is several times this


def tiny_llm(vocab: int = 64, d: int = 32, blocks: int = 2) -> onnx.ModelProto:
    """The benchmark's LLM shape, small: embedding Gather, attention and MLP blocks, a tied
    output projection stored transposed, dynamic batch and sequence."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def w(name, shape, std):
        name += ".weight"
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * std).astype(np.float32), name))
        return name

    def n(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    x = n("Gather", [w("embed", (vocab, d), 0.02), "ids"], "x0")
    for b in range(blocks):
        p = f"b{b}."
        q = n("MatMul", [x, w(p + "q", (d, d), d ** -0.5)], p + "q")
        k = n("Transpose", [n("MatMul", [x, w(p + "k", (d, d), d ** -0.5)], p + "k")], p + "kT", perm=[0, 2, 1])
        a = n("Softmax", [n("MatMul", [q, k], p + "s")], p + "p", axis=-1)
        o = n("MatMul", [n("MatMul", [a, x], p + "ctx"), w(p + "o", (d, d), d ** -0.5)], p + "o")
        x = n("LayerNormalization", [n("Add", [x, o], p + "r1"), w(p + "g", (d,), 1.0), w(p + "beta", (d,), 0.1)],
              p + "ln1", axis=-1)
        h = n("Relu", [n("MatMul", [x, w(p + "w1", (d, 4 * d), d ** -0.5)], p + "h")], p + "a")
        x = n("Add", [x, n("MatMul", [h, w(p + "w2", (4 * d, d), (4 * d) ** -0.5)], p + "m")], p + "r2")
    n("MatMul", [x, n("Transpose", ["embed.weight"], "head", perm=[1, 0])], "logits")
    graph = helper.make_graph(nodes, "llm", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def limits(monkeypatch):
    """Protobuf's 2 GiB, as surgeon sees it, lowered to LIMIT bytes."""
    monkeypatch.setattr(shapes, "PROTO_LIMIT", LIMIT)
    # save switches to external data 64 MiB below its limit.
    monkeypatch.setattr(save_module, "TWO_GIB", (64 << 20) + LIMIT)


@pytest.fixture
def weights_never_read(monkeypatch):
    def refuse(self):
        raise AssertionError(f"weight '{self.tensor.name}' was read into memory")

    monkeypatch.setattr(ExternalValues, "load", refuse)


@pytest.fixture
def big(tmp_path):
    path = tmp_path / "llm.onnx"
    onnx.save(tiny_llm(), path, save_as_external_data=True, location="llm.onnx.data", size_threshold=0)
    weights = (tmp_path / "llm.onnx.data").stat().st_size
    assert weights > 4 * LIMIT and path.stat().st_size < LIMIT
    return path


STRUCTURAL = {
    "infer_shapes": [("infer_shapes", {})],
    "set_batch": [("set_batch", {"size": 1})],
    "cleanup": [("cleanup", {})],
    "all": [("set_batch", {"size": 1}), ("infer_shapes", {}), ("cleanup", {})],
}


@pytest.mark.parametrize("steps", STRUCTURAL.values(), ids=list(STRUCTURAL))
def test_structural_steps_save_and_verify_without_reading_weights(big, tmp_path, limits, weights_never_read,
                                                                  steps):
    out = tmp_path / "out" / "llm.onnx"
    out.parent.mkdir()
    result = apply_file(Recipe.from_steps(steps), big, out, verify_with=VerifyOptions(dims={"batch": 1, "seq": 3}))
    assert result.verification is not None and result.verification.status == "match", \
        result.verification.summary()
    # The weights went file to file: the output keeps them external, byte for byte.
    assert out.stat().st_size < LIMIT
    assert all(i.data_location == TensorProto.EXTERNAL
               for i in onnx.load(str(out), load_external_data=False).graph.initializer)
    before = onnx.load(str(big))
    after = onnx.load(str(out))
    assert {i.name for i in after.graph.initializer} == {i.name for i in before.graph.initializer}
    for init in after.graph.initializer:
        want = numpy_helper.to_array(next(i for i in before.graph.initializer if i.name == init.name))
        assert np.array_equal(numpy_helper.to_array(init), want)


def test_infer_shapes_and_set_batch_shape_the_whole_model(big, limits, weights_never_read):
    model = surgeon.load(big)
    surgeon.run_pass(model, "set_batch", size=1)
    surgeon.run_pass(model, "infer_shapes")
    tensors = model.graph.tensors()
    assert tensors["logits"].shape == [1, "seq", 64]
    assert tensors["b1.h"].shape == [1, "seq", 128]


def test_in_memory_weights_past_the_limit_are_inferred_and_saved_external(tmp_path, limits):
    """Weights held in memory (no external data in the input) past the limit: inference drops
    their bytes, and save switches to external data by itself."""
    proto = tiny_llm()
    assert sum(len(i.raw_data) for i in proto.graph.initializer) > 4 * LIMIT
    model = surgeon.load(proto)
    surgeon.run_pass(model, "infer_shapes")
    assert model.graph.tensors()["logits"].shape == ["batch", "seq", 64]
    surgeon.save(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").stat().st_size > 4 * LIMIT
    assert (tmp_path / "m.onnx").stat().st_size < LIMIT
    feeds = {"ids": np.array([[1, 2, 3]], np.int64)}
    import onnxruntime as ort

    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, feeds)[0]
    want = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_graph_over_the_limit_even_without_weights_is_refused(big, monkeypatch):
    monkeypatch.setattr(shapes, "PROTO_LIMIT", 1024)
    model = surgeon.load(big)
    with pytest.raises(surgeon.SurgeonError, match="even without its weights, its graph is over 2 GiB"):
        surgeon.run_pass(model, "infer_shapes")


def test_verify_holds_one_models_weights_at_a_time(big, tmp_path, monkeypatch):
    """Two onnxruntime sessions at once would hold the weights twice (8 GiB for a 4 GiB model)."""
    live, most = [0], [0]
    real = verify_module._session

    class Counted:
        def __init__(self, model):
            self.sess = real(model)
            live[0] += 1
            most[0] = max(most[0], live[0])

        def __getattr__(self, name):
            return getattr(self.sess, name)

        def __del__(self):
            live[0] -= 1

    monkeypatch.setattr(verify_module, "_session", Counted)
    model = surgeon.load(big)
    surgeon.save(model, tmp_path / "copy.onnx")
    report = surgeon.verify(big, tmp_path / "copy.onnx", dims={"batch": 1, "seq": 4})
    assert report.status == "match" and most[0] == 1
    assert report.dims == {"batch": 1, "seq": 4}
    assert math.isclose(report.outputs[0].max_abs, 0.0)


def test_inference_never_copies_weights_a_pass_loaded(big, monkeypatch):
    """A weight in memory (folded, or read by a value pass) reaches shape inference as a
    placeholder: exporting its bytes held up to three copies of it (2.4 GB for a 596 MB one)."""
    model = surgeon.load(big)
    loaded = {c.name for c in model.graph.tensors().values()
              if isinstance(c, gs.Constant) and c.values.nbytes >= shapes.KEEP_BYTES}
    assert len(loaded) > 10
    exported: list[str] = []  # constants whose bytes went into a proto, by either path of the exporter
    real, real_in_place = OnnxExporter.export_tensor_proto, export_module._in_place
    monkeypatch.setattr(OnnxExporter, "export_tensor_proto", staticmethod(lambda c: exported.append(c.name) or real(c)))
    monkeypatch.setattr(export_module, "_in_place",
                        lambda c, g: real_in_place(c, g) and (exported.append(c.name) or True))
    surgeon.run_pass(model, "set_batch", size=1)
    surgeon.run_pass(model, "infer_shapes")
    assert exported and not loaded & set(exported)
    assert model.graph.tensors()["logits"].shape == [1, "seq", 64]
    # Saving still writes the bytes.
    monkeypatch.undo()
    surgeon.save(model, big.with_name("out.onnx"))
    assert surgeon.verify(big, big.with_name("out.onnx"), dims={"batch": 1}).status == "match"


def test_save_writes_weights_a_pass_loaded_straight_from_memory(big, tmp_path, monkeypatch):
    """A folded or converted weight goes from its array to the data file: through the proto it
    was copied twice while the array was held (1.8 GB at once for a 596 MB weight)."""
    model = surgeon.load(big)
    surgeon.run_pass(model, "fold_constants")  # the transposed embedding, in memory
    head = next(c for c in model.graph.tensors().values()
                if isinstance(c, gs.Constant) and isinstance(c._values, np.ndarray) and c.values.nbytes > 1024)
    exported: list[str] = []  # constants whose bytes went into a proto, by either path of the exporter
    real, real_in_place = OnnxExporter.export_tensor_proto, export_module._in_place
    monkeypatch.setattr(OnnxExporter, "export_tensor_proto", staticmethod(lambda c: exported.append(c.name) or real(c)))
    monkeypatch.setattr(export_module, "_in_place",
                        lambda c, g: real_in_place(c, g) and (exported.append(c.name) or True))
    surgeon.save(model, tmp_path / "out.onnx")
    assert head.name not in exported
    monkeypatch.undo()
    saved = {i.name: i for i in onnx.load(str(tmp_path / "out.onnx"), load_external_data=False).graph.initializer}
    assert saved[head.name].data_location == TensorProto.EXTERNAL
    assert np.array_equal(numpy_helper.to_array(next(i for i in onnx.load(str(tmp_path / "out.onnx")).graph.initializer
                                                     if i.name == head.name)), head.values)
    assert surgeon.verify(big, tmp_path / "out.onnx", dims={"batch": 1}).status == "match"
