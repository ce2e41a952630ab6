"""`surgeon inspect` and `surgeon diff`, text and JSON."""

from __future__ import annotations

import io
import json

import onnx
from onnx import numpy_helper
from util import FIXTURES, FOOOP_IN_LOCAL_FUNCTION, real_model

from surgeon.cli import main
from surgeon.views.diff import diff_models


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_inspect_fixture():
    path = FIXTURES / "model_foo.onnx"
    code, out, err = _cli("inspect", path)
    assert (code, err) == (0, "")
    assert out == (f"{path}: IR 7, producer pytorch 2.13.0\n"
                   "opsets: ai.onnx 13, devtech 1\n"
                   "inputs:\n  input: float32[N,3,16,16]\n"
                   "outputs:\n  output: float32[N,8,16,16]\n"
                   "nodes: 5 (5 in the main graph)\n"
                   "ops: Conv x2, Relu x2, devtech::FooOp x1\n"
                   "initializers: 4 (3.2 KiB)\n"
                   "custom domains: devtech\n")


def test_inspect_json_counts_subgraphs():
    code, out, _ = _cli("inspect", real_model("silero_vad.onnx"), "--json")
    info = json.loads(out)
    assert code == 0
    assert info["nodes"] == {"main_graph": 5, "total": 689}
    assert info["control_flow"] == {"If": 25}
    assert [i["type"] for i in info["inputs"]] == ["float32[?,?]", "float32[2,?,128]", "int64[]"]


def test_inspect_external_data(tmp_path):
    onnx.save_model(onnx.load(FIXTURES / "model.onnx"), tmp_path / "m.onnx", save_as_external_data=True,
                    location="m.weights", size_threshold=0)
    info = json.loads(_cli("inspect", tmp_path / "m.onnx", "--json")[1])
    assert info["external_data_files"] == ["m.weights"]
    assert info["initializers"]["bytes"] == json.loads(_cli("inspect", FIXTURES / "model.onnx", "--json")[1])[
        "initializers"]["bytes"]


def test_diff_after_strip(tmp_path):
    out = tmp_path / "clean.onnx"
    assert main(["apply", str(FIXTURES.parent / "recipes" / "strip_fooop.yaml"), str(FIXTURES / "model_foo.onnx"),
                 "-o", str(out)], out=io.StringIO()) == 0
    code, text, err = _cli("diff", FIXTURES / "model_foo.onnx", out)
    assert (code, err) == (0, "")
    assert text == (f"--- {FIXTURES / 'model_foo.onnx'}\n+++ {out}\n"
                    "nodes: 5 -> 4 (1 removed, 0 added)\n  - /FooOp (devtech::FooOp)\n"
                    "nodes changed: 1 (inputs, outputs or attributes)\n"
                    "  ~ /block2/block2.0/Conv (Conv): inputs\n"
                    "ops: devtech::FooOp -1\n"
                    "opset devtech: 1 -> None\n"
                    "metadata: + surgeon.input_sha256\n"
                    "metadata: + surgeon.recipe_sha256\n"
                    "metadata: + surgeon.recipe_steps\n"
                    "metadata: + surgeon.version\n"
                    "initializers: 4 -> 4 (3232 -> 3232 bytes)\n")


def test_diff_json_changed_values_and_io(tmp_path):
    proto = onnx.load(FIXTURES / "model.onnx")
    init = proto.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2, init.name))
    proto.graph.output[0].name = "renamed"
    proto.graph.node[-1].output[0] = "renamed"
    onnx.save(proto, tmp_path / "b.onnx")
    code, text, _ = _cli("diff", FIXTURES / "model.onnx", tmp_path / "b.onnx", "--json")
    d = json.loads(text)
    assert code == 0
    assert d["initializers"]["changed"] == [init.name]
    assert d["outputs"]["removed"] == [{"name": "output", "type": "float32[N,8,16,16]"}]
    assert d["outputs"]["added"] == [{"name": "renamed", "type": "float32[N,8,16,16]"}]
    assert d["nodes"]["added"] == [] and d["op_histogram_delta"] == {}


def test_inspect_bad_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"")
    code, _, err = _cli("inspect", bad)
    assert code == 1 and err.startswith(f"error: {bad} is not an ONNX model: the file is empty\n")


def test_diff_counts_nodes_that_share_a_name(tmp_path):
    from onnx import TensorProto, helper

    def model(ops):
        nodes, prev = [], "x"
        for i, (name, op) in enumerate(ops):
            out = "y" if i == len(ops) - 1 else f"t{i}"
            nodes.append(helper.make_node(op, [prev], [out], name=name))
            prev = out
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    onnx.save(model([("dup", "Relu"), ("dup", "Sigmoid"), ("n", "Neg")]), tmp_path / "a.onnx")
    onnx.save(model([("dup", "Relu"), ("n", "Neg")]), tmp_path / "b.onnx")
    d = diff_models(tmp_path / "a.onnx", tmp_path / "b.onnx")
    assert d["nodes"]["count"] == [3, 2]
    assert d["nodes"]["removed"] == [{"name": "dup", "op": "Sigmoid"}]
    assert d["nodes"]["added"] == []
    assert d["op_histogram_delta"] == {"Sigmoid": -1}


def test_diff_names_dtype_changes_and_shortens_long_lists(tmp_path):
    import surgeon
    from surgeon.views.diff import LISTED, render_diff

    fp16 = tmp_path / "fp16.onnx"
    model = surgeon.load(FIXTURES / "model.onnx")
    surgeon.run_pass(model, "to_fp16")
    surgeon.save(model, fp16)
    d = diff_models(FIXTURES / "model.onnx", fp16)
    assert d["initializers"]["changed"] == []
    assert {"name": "onnx::Conv_21", "a": "float32[8, 3, 3, 3]", "b": "float16[8, 3, 3, 3]"} in \
        d["initializers"]["retyped"]
    assert "  ~ onnx::Conv_21: float32[8, 3, 3, 3] -> float16[8, 3, 3, 3]\n" in render_diff(d)

    d["nodes"]["removed"] = [{"name": f"n{i}", "op": "Relu"} for i in range(LISTED + 5)]
    text = render_diff(d)
    assert "  - n19 (Relu)\n    ... and 5 more (--json lists them all)\n" in text
    assert "n20" not in text


def test_inspect_shows_what_local_functions_run(tmp_path):
    from surgeon.views.inspect import inspect_model, render_inspection

    onnx.save(onnx.parser.parse_model(FOOOP_IN_LOCAL_FUNCTION), tmp_path / "fn.onnx")
    info = inspect_model(tmp_path / "fn.onnx")
    assert info["custom_domains"] == ["devtech", "local"]
    assert info["function_op_histogram"] == {"Relu": 1, "Sigmoid": 1, "devtech::FooOp": 1}
    assert "ops in local functions: Relu x1, Sigmoid x1, devtech::FooOp x1\n" in render_inspection(info)


def test_diff_of_a_model_with_itself_says_identical_and_exit_code_is_0():
    path = real_model("tiny_yolo_legacy.onnx")
    proto = onnx.load(path)
    size = sum(numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)
    for argv in (("diff", path, path), ("diff", path, path, "--exit-code")):
        code, text, err = _cli(*argv)
        assert (code, err) == (0, "")
        assert text == (f"--- {path}\n+++ {path}\n"
                        f"identical: {len(proto.graph.node)} nodes, {len(proto.graph.initializer)} initializers "
                        f"({size} bytes); inputs, outputs, opsets and metadata the same\n")


def test_diff_exit_code_is_1_when_models_differ(tmp_path):
    out = tmp_path / "clean.onnx"
    assert main(["apply", str(FIXTURES.parent / "recipes" / "strip_fooop.yaml"), str(FIXTURES / "model_foo.onnx"),
                 "-o", str(out)], out=io.StringIO()) == 0
    code, text, err = _cli("diff", FIXTURES / "model_foo.onnx", out, "--exit-code")
    assert (code, err) == (1, "")
    assert "nodes: 5 -> 4 (1 removed, 0 added)\n" in text
    assert "metadata: + surgeon.recipe_steps\n" in text
    assert _cli("diff", FIXTURES / "model_foo.onnx", out)[0] == 0  # without --exit-code a difference is no failure


def test_diff_sees_changed_attributes_and_metadata(tmp_path):
    proto = onnx.load(FIXTURES / "model.onnx")
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    next(a for a in conv.attribute if a.name == "pads").ints[:] = [0, 0, 0, 0]
    onnx.helper.set_model_props(proto, {"author": "me"})
    onnx.save(proto, tmp_path / "b.onnx")
    code, text, _ = _cli("diff", FIXTURES / "model.onnx", tmp_path / "b.onnx", "--exit-code")
    assert code == 1
    assert text == (f"--- {FIXTURES / 'model.onnx'}\n+++ {tmp_path / 'b.onnx'}\n"
                    "nodes: 4 -> 4 (0 removed, 0 added)\n"
                    "nodes changed: 1 (inputs, outputs or attributes)\n"
                    f"  ~ {conv.name} (Conv): attribute pads\n"
                    "metadata: + author\n"
                    "initializers: 4 -> 4 (3232 -> 3232 bytes)\n")
