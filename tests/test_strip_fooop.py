"""The seed case end to end: strip devtech::FooOp from real PyTorch exports."""

from __future__ import annotations

import io
import shutil

import numpy as np
import onnx
import pytest
from util import FIXTURES, RECIPES, real_model, run, session

import surgeon
from surgeon.cli import main

PAIRS = [
    ("model_foo.onnx", "model.onnx"),
    ("model_foo_keepbn.onnx", "model_keepbn.onnx"),
    ("model_foo_dynamo.onnx", "model_dynamo.onnx"),
    ("model_foo_dynamo_library.onnx", "model_dynamo.onnx"),
]


def _assert_matches_oracle(edited, oracle):
    out = onnx.load(str(edited))
    onnx.checker.check_model(out, full_check=True)
    assert "devtech" not in {o.domain for o in out.opset_import}
    assert not any(n.op_type == "FooOp" for n in out.graph.node)
    sess = session(edited)
    (inp,) = sess.get_inputs()
    for batch in (1, 3):
        shape = [batch if not isinstance(d, int) else d for d in inp.shape]
        x = np.random.default_rng(batch).standard_normal(shape).astype(np.float32)
        got, want = run(edited, {inp.name: x}), run(oracle, {inp.name: x})
        assert list(got) == list(want)
        for name in want:
            assert np.array_equal(got[name], want[name]), f"{name} differs at batch {batch}"


@pytest.mark.parametrize("foo,oracle", PAIRS)
def test_cli_strips_fooop_bit_identical_to_oracle(tmp_path, foo, oracle):
    src = tmp_path / foo
    shutil.copy(real_model(foo), src)
    before = src.read_bytes()
    out = io.StringIO()
    assert main(["apply", str(RECIPES / "strip_fooop.yaml"), str(src)], out=out) == 0
    edited = tmp_path / foo.replace(".onnx", ".surgeon.onnx")
    assert out.getvalue().splitlines()[-1] == f"wrote {edited}"
    assert "step 1 'drop-fooop' (remove_node): removed 1 node (devtech::FooOp)" in out.getvalue()
    assert src.read_bytes() == before
    _assert_matches_oracle(edited, real_model(oracle))


def test_bundled_fixture_matches_its_oracle(tmp_path):
    out = tmp_path / "clean.onnx"
    assert main(["apply", str(RECIPES / "strip_fooop.yaml"), str(FIXTURES / "model_foo.onnx"), "-o", str(out)],
                out=io.StringIO()) == 0
    _assert_matches_oracle(out, FIXTURES / "model.onnx")


def test_python_api(tmp_path):
    model = surgeon.load(real_model("model_foo.onnx"))
    result = surgeon.apply(RECIPES / "strip_fooop.yaml", model)
    assert [len(r.removed) for r in result.steps] == [1, 0]
    saved = surgeon.save(model, tmp_path / "clean.onnx")
    assert saved.path == tmp_path / "clean.onnx"
    _assert_matches_oracle(saved.path, real_model("model.onnx"))


def test_external_data_in_and_out(tmp_path, monkeypatch):
    """Weights in external data stay there, are streamed to the output, and work from any cwd."""
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    proto = onnx.load(real_model("model_foo.onnx"))
    onnx.save_model(proto, src_dir / "foo.onnx", save_as_external_data=True,
                    location="foo.weights", size_threshold=0)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = surgeon.load(src_dir / "foo.onnx")
    assert model.has_external_data
    surgeon.apply(RECIPES / "strip_fooop.yaml", model)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    saved = surgeon.save(model, out_dir / "clean.onnx")
    assert saved.data_path == out_dir / "clean.onnx.data"
    written = onnx.load(str(saved.path), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in written.graph.initializer)
    assert {e.value for t in written.graph.initializer for e in t.external_data if e.key == "location"} == \
        {"clean.onnx.data"}
    _assert_matches_oracle(saved.path, real_model("model.onnx"))


def test_lazy_weights_are_read_on_demand(tmp_path):
    onnx.save_model(onnx.load(real_model("model_foo.onnx")), tmp_path / "foo.onnx",
                    save_as_external_data=True, location="w.bin", size_threshold=0)
    model = surgeon.load(tmp_path / "foo.onnx")
    conv = next(n for n in model.graph.nodes if n.op == "Conv")
    weight = conv.inputs[1]
    assert type(weight._values).__name__ == "ExternalValues"  # nothing read yet
    inline = onnx.load(real_model("model_foo.onnx"))
    expected = onnx.numpy_helper.to_array(next(t for t in inline.graph.initializer if t.name == weight.name))
    assert weight.values.dtype == np.float32
    assert np.array_equal(weight.values, expected)


def test_large_models_get_external_data_automatically(tmp_path, monkeypatch):
    """Over 2 GiB of weights cannot be one protobuf; the limit is lowered here to test the switch."""
    import importlib

    save_module = importlib.import_module("surgeon.io.save")

    monkeypatch.setattr(save_module, "TWO_GIB", 64 << 20)
    monkeypatch.setattr(save_module, "EXTERNAL_THRESHOLD", 1024)
    model = surgeon.load(FIXTURES / "model.onnx")
    assert not model.has_external_data
    conv = next(n for n in model.graph.nodes if n.op == "Conv")
    conv.inputs[1].values = np.zeros((8, 3, 3, 3), np.float32)  # edited in memory, as a pass would
    monkeypatch.setattr(save_module, "_inline_size", lambda proto: 65 << 20)
    saved = surgeon.save(model, tmp_path / "big.onnx")
    assert saved.data_path == tmp_path / "big.onnx.data"
    written = onnx.load(str(saved.path), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in written.graph.initializer)
    onnx.checker.check_model(str(saved.path), full_check=True)


def test_weights_replaced_in_memory_on_an_external_data_model(tmp_path):
    onnx.save_model(onnx.load(FIXTURES / "model.onnx"), tmp_path / "m.onnx", save_as_external_data=True,
                    location="m.bin", size_threshold=0)
    model = surgeon.load(tmp_path / "m.onnx")
    conv = next(n for n in model.graph.nodes if n.op == "Conv")
    conv.inputs[1].values = np.zeros((8, 3, 3, 3), np.float32)  # what a folding or fp16 pass does
    saved = surgeon.save(model, tmp_path / "out.onnx")
    reloaded = surgeon.load(saved.path)
    weight = next(n for n in reloaded.graph.nodes if n.op == "Conv").inputs[1]
    assert np.array_equal(weight.values, np.zeros((8, 3, 3, 3), np.float32))


def test_no_empty_data_file_when_nothing_stays_external(tmp_path):
    """Folding Polygraphy's external-weights model leaves only small inline constants: no data file."""
    model = surgeon.load(real_model("polygraphy/ext_weights_same_dir/ext_weights.onnx"))
    assert model.has_external_data
    surgeon.run_pass(model, "fold_constants")
    saved = surgeon.save(model, tmp_path / "out.onnx")
    assert saved.data_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
