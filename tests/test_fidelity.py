"""A load -> save with no pass in between loses nothing.

onnx-graphsurgeon alone fails this on about 4 % of models (crashes on
optional types, drops IR-3 initializer inputs, loses metadata...). Our loader
and exporter must write back exactly what they read: the exported proto is
compared field by field with the input, over every real model the repository
carries or fetches (fixtures/README.md) and the 1,884 ONNX backend node tests.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx.backend.test.loader import load_model_tests
from util import assert_same_outputs, ocr_inputs, random_inputs, real_model, real_model_names, silero_inputs

import surgeon
from surgeon.io.export import to_proto

# Data lives in data/, not beside the model: loading it must fail (tested in test_load_errors).
NEEDS_OTHER_DATA_DIR = {"ext_weights.onnx"}


def _first_difference(a: onnx.ModelProto, b: onnx.ModelProto) -> str:
    for field in a.DESCRIPTOR.fields:
        if field.name == "graph":
            continue
        if getattr(a, field.name) != getattr(b, field.name):
            return f"model.{field.name}"
    for field in a.graph.DESCRIPTOR.fields:
        x, y = getattr(a.graph, field.name), getattr(b.graph, field.name)
        if x != y:
            if hasattr(x, "__len__") and not isinstance(x, (str, bytes)) and len(x) == len(y):
                i = next(i for i, (p, q) in enumerate(zip(x, y)) if p != q)
                return f"graph.{field.name}[{i}]:\n{x[i]}\n--- became ---\n{y[i]}"
            return f"graph.{field.name}"
    return "somewhere in the serialization"


def assert_round_trip(proto: onnx.ModelProto, base_dir=None) -> None:
    original = onnx.ModelProto()
    original.CopyFrom(proto)
    exported = to_proto(surgeon.load(proto, base_dir=base_dir))
    assert proto == original, "loading must not change the caller's proto"
    if exported.SerializeToString() != original.SerializeToString():
        pytest.fail("round trip changed " + _first_difference(original, exported))


def _real_models():
    return [n for n in real_model_names(subfolders=True)
            if os.path.basename(n) not in NEEDS_OTHER_DATA_DIR or "same_dir" in n]


@pytest.mark.parametrize("name", _real_models())
def test_round_trip_is_exact_on_real_models(name):
    path = real_model(name)
    proto = onnx.load(path, load_external_data=False)
    assert_round_trip(proto, base_dir=os.path.dirname(path))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # raised by onnx while it builds the cases
def test_round_trip_is_exact_on_every_backend_node_test():
    failures = []
    cases = load_model_tests(kind="node")
    assert len(cases) > 1000
    for case in cases:
        proto = case.model  # built in memory by onnx, no download
        try:
            assert_round_trip(proto)
        except BaseException as exc:  # collect all, report together
            failures.append(f"{case.name}: {str(exc).splitlines()[0]}")
    assert not failures, f"{len(failures)} of {len(cases)} node tests changed:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("name", ["silero_vad.onnx", "ctrlflow_script_legacy.onnx", "light_densenet121.onnx",
                                  "ch_PP-OCRv4_rec_infer.onnx"])
def test_saved_round_trip_runs_bit_identical(tmp_path, name):
    src = real_model(name)
    out = tmp_path / name
    surgeon.save(surgeon.load(src), out)
    feeds = {"silero_vad.onnx": silero_inputs(), "ch_PP-OCRv4_rec_infer.onnx": ocr_inputs()}.get(name)
    if feeds is None:
        feeds = random_inputs(src, dims={"N": 2})
    assert_same_outputs(src, out, feeds, exact=True)


def test_gs_losses_are_repaired():
    """The specific things gs drops (design notes §8), each in one small model."""
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 18, "custom.unused" : 1], producer_name: "p", producer_version: "1",
         domain: "ai.example", model_version: 7, doc_string: "model doc", metadata_props: ["k" : "v"]>
        g (float[N, 4] x, optional(seq(float[3])) maybe) => (float[N, 4] y, optional(seq(float[3])) maybe_out)
            <float[1] unused_w = {1.0}, float[1] only_in_branch = {2.0}, bool c = {1}>
        {
            y = If (c) <then_branch = t () => (float[N, 4] ty) { ty = Add (x, only_in_branch) },
                        else_branch = e () => (float[N, 4] ey) { ey = Sub (x, only_in_branch) }>
            maybe_out = Identity (maybe)
        }
    """)
    model.graph.node[0].doc_string = "node doc"
    model.graph.node[0].metadata_props.add(key="pkg.torch.onnx.stack_trace", value="model.py:1")
    model.graph.value_info.append(onnx.helper.make_empty_tensor_value_info("y"))  # shapeless duplicate
    onnx.checker.check_model(model)
    assert_round_trip(model)
    exported = to_proto(surgeon.load(model))
    assert [i.name for i in exported.graph.initializer] == ["unused_w", "only_in_branch", "c"]
    assert not exported.graph.node[0].attribute[0].g.initializer  # not moved into the branches


def test_ir3_initializer_inputs_are_kept():
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Add", ["x", "w"], ["y"])], "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2]),
             onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [2])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
            [onnx.numpy_helper.from_array(np.ones(2, np.float32), "w")]),
        opset_imports=[onnx.helper.make_opsetid("", 8)], ir_version=3)
    assert_round_trip(model)


def test_constants_held_in_memory_export_as_gs_would():
    """Arrays a pass put in memory are written into the graph in place (no extra copy of a
    folded weight); the TensorProto is byte for byte what gs's exporter makes."""
    import ml_dtypes
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float16),
              rng.standard_normal((2, 2)), np.arange(-3, 3, dtype=np.int8), np.arange(6, dtype=np.uint16),
              np.arange(4, dtype=np.int64).reshape(2, 2), np.array([True, False]), np.array(7, np.int32),
              np.zeros((0, 3), np.float32), np.arange(4, dtype=ml_dtypes.bfloat16)]
    names = [f"c{i}" for i in range(len(arrays))]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", [n], [f"o{n}"]) for n in names], "g", [],
        [onnx.helper.make_tensor_value_info(f"o{n}", onnx.TensorProto.FLOAT, None) for n in names],
        [onnx.numpy_helper.from_array(np.zeros(1, np.float32), n) for n in names])
    model = surgeon.load(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]))
    consts = model.graph.tensors()
    for name, arr in zip(names, arrays):
        consts[name].values = arr
    consts["c1"].data_location = onnx.TensorProto.EXTERNAL  # values replaced in memory: inline now
    consts["c2"].data_location = onnx.TensorProto.DEFAULT
    expected = []
    for name in names:
        t = OnnxExporter.export_tensor_proto(consts[name])
        if t.data_location == onnx.TensorProto.EXTERNAL:
            t.data_location = onnx.TensorProto.DEFAULT
        expected.append(t.SerializeToString())
    exported = to_proto(model).graph.initializer
    assert [t.name for t in exported] == names
    assert [t.SerializeToString() for t in exported] == expected
    assert exported[1].HasField("data_location") and not exported[0].HasField("data_location")
    assert exported[9].data_type == onnx.TensorProto.BFLOAT16  # not numpy-native: gs's own path
