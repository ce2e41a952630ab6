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
                   "custom domains: devtech\n"
                   "custom op devtech::FooOp x1: not declared: shape inference stops at it (declare it in a "
                   "recipe's custom_ops:)\n")


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
    missing = tmp_path / "nope.onnx"  # trouble is 2 with --exit-code, as for diff(1): a script tells it from "differ"
    assert _cli("diff", FIXTURES / "model_foo.onnx", missing, "--exit-code")[0] == 2
    assert _cli("diff", FIXTURES / "model_foo.onnx", missing)[0] == 1


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


def test_inspect_nodes_lists_the_names_a_recipe_needs():
    path = FIXTURES / "model_foo.onnx"
    code, out, err = _cli("inspect", path, "--nodes", "--op", "conv")
    assert (code, err) == (0, "")
    assert out == ("2 of 5 nodes with op conv:\n"
                   "  /block1/block1.0/Conv (Conv): input, onnx::Conv_21, onnx::Conv_22 -> "
                   "/block1/block1.0/Conv_output_0\n"
                   "  /block2/block2.0/Conv (Conv): /FooOp_output_0, onnx::Conv_24, onnx::Conv_25 -> "
                   "/block2/block2.0/Conv_output_0\n")
    code, out, _ = _cli("inspect", path, "--nodes", "--op", "devtech::FooOp", "--json")
    assert json.loads(out)["nodes"] == [{"name": "/FooOp", "op": "devtech::FooOp", "graph": "main",
                                         "inputs": ["/block1/block1.2/Relu_output_0"],
                                         "outputs": ["/FooOp_output_0"]}]


def test_inspect_nodes_reach_into_subgraphs_with_a_glob():
    path = real_model("silero_vad.onnx")
    proto = onnx.load(path)
    from surgeon.graph.walk import proto_graphs
    want = [(n.name, g.name) for g in proto_graphs(proto.graph) for n in g.node
            if n.op_type == "LSTM" and n.name.lower().endswith("lstm")]
    assert want  # the model's LSTMs sit inside If branches
    code, out, _ = _cli("inspect", path, "--nodes", "--op", "LSTM", "--name", "*/lstm", "--json")
    info = json.loads(out)
    assert [(r["name"], r["graph"]) for r in info["nodes"]] == [(n, f"graph '{g}'") for n, g in want]
    assert info["total"] == sum(len(g.node) for g in proto_graphs(proto.graph))
    text = _cli("inspect", path, "--nodes", "--op", "LSTM", "--name", "*/lstm")[1]
    assert text.splitlines()[0] == f"{len(want)} of {info['total']} nodes with op LSTM and name matching '*/lstm':"
    assert text.splitlines()[1].endswith(f"  [graph '{want[0][1]}']")


def test_inspect_tensors_with_types_and_origins():
    path = FIXTURES / "model_foo.onnx"
    code, out, err = _cli("inspect", path, "--tensors", "--name", "FOO")
    assert (code, err) == (0, "")
    assert out == "1 of 10 tensors with name matching 'FOO':\n  /FooOp_output_0: ?, from /FooOp\n"
    code, out, _ = _cli("inspect", path, "--tensors", "--op", "Relu")
    assert out == ("4 of 10 tensors with op Relu:\n"
                   "  /block1/block1.0/Conv_output_0: ?, from /block1/block1.0/Conv\n"
                   "  /block1/block1.2/Relu_output_0: ?, from /block1/block1.2/Relu\n"
                   "  /block2/block2.0/Conv_output_0: ?, from /block2/block2.0/Conv\n"
                   "  output: float32[N,8,16,16], output from /block2/block2.2/Relu\n")


def test_inspect_filters_need_a_listing():
    code, _, err = _cli("inspect", FIXTURES / "model_foo.onnx", "--op", "Conv")
    assert (code, err) == (2, "surgeon: error: --op and --name filter the listings: add --nodes or --tensors\n")


def test_inspect_counts_weights_in_constant_nodes():
    path = real_model("silero_vad.onnx")
    from surgeon.graph.walk import proto_graphs
    constants = [n for g in proto_graphs(onnx.load(path).graph) for n in g.node if n.op_type == "Constant"]
    size = sum(numpy_helper.to_array(n.attribute[0].t).nbytes for n in constants)
    info = json.loads(_cli("inspect", path, "--json")[1])
    assert info["constant_nodes"] == {"count": len(constants), "bytes": size}
    assert info["initializers"] == {"count": 0, "bytes": 0}
    from surgeon.graph.names import byte_size
    assert f"\nweights in Constant nodes: {len(constants)} ({byte_size(size)})\n" in _cli("inspect", path)[1]


def test_inspect_shortens_long_dims_and_metadata_in_text_not_in_json(tmp_path):
    proto = onnx.load(FIXTURES / "model.onnx")
    expr = "floor((floor((height - 1)/2) + 1 - 1)/2) + 1"
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = expr
    onnx.helper.set_model_props(proto, {"character": "\n".join("abcdefghijklmnopqrstuvwxyz")})
    onnx.save(proto, tmp_path / "m.onnx")
    code, out, _ = _cli("inspect", tmp_path / "m.onnx")
    assert "inputs:\n  input: float32[N,3,floor((flo...- 1)/2) + 1,16]\n" in out
    assert out.endswith("metadata: character=a b c d e f g h i j k l m n o p q r s... (51 chars)\n")
    info = json.loads(_cli("inspect", tmp_path / "m.onnx", "--json")[1])
    assert info["inputs"][0]["type"] == f"float32[N,3,{expr},16]"
    assert info["metadata_props"]["character"] == "\n".join("abcdefghijklmnopqrstuvwxyz")


def test_inspect_nodes_and_tensors_together():
    path = FIXTURES / "model_foo.onnx"
    code, out, _ = _cli("inspect", path, "--nodes", "--tensors", "--name", "foo")
    assert code == 0
    assert out == ("1 of 5 nodes with name matching 'foo':\n"
                   "  /FooOp (devtech::FooOp): /block1/block1.2/Relu_output_0 -> /FooOp_output_0\n"
                   "1 of 10 tensors with name matching 'foo':\n  /FooOp_output_0: ?, from /FooOp\n")
    info = json.loads(_cli("inspect", path, "--nodes", "--tensors", "--json")[1])
    assert (info["nodes"]["total"], info["tensors"]["total"]) == (5, 10)
