"""insert_nms: detections in the graph, checked against a plain numpy NMS (tests/nms_reference.py)."""

from __future__ import annotations

import functools
import textwrap

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from detectors import ANCHORS, CLASSES, blob_images, build_detector, with_batch, yolov8_from_tiny_yolo
from nms_reference import assert_same_detections, decode, reference_nms, split_head
from util import RECIPES, real_model, run

import surgeon
from surgeon.errors import ExportError, PassError
from surgeon.io.export import to_proto

KEYS = ("num_dets", "det_boxes", "det_scores", "det_classes")


def insert(model: surgeon.Model, **params) -> surgeon.StepReport:
    return surgeon.run_pass(model, "insert_nms", **params)


def proto_bytes(model: surgeon.Model) -> bytes:
    return to_proto(model).SerializeToString()


def check_against_reference(proto: onnx.ModelProto, layout: str, feeds: dict[str, np.ndarray], *,
                            raw_names: list[str], box_format: str = "cxcywh", iou_threshold: float,
                            score_threshold: float, max_detections: int = 100,
                            class_agnostic: bool = False, multi_label: bool = True) -> list:
    """Run the original and the NMS model; the NMS outputs must equal the reference on the raw outputs."""
    raw_out = run(proto, feeds)
    boxes, scores = decode(layout, [raw_out[n] for n in raw_names], box_format)
    expected = reference_nms(boxes, scores, iou_threshold=iou_threshold, score_threshold=score_threshold,
                             max_detections=max_detections, class_agnostic=class_agnostic,
                             multi_label=multi_label)
    # The inputs must really produce detections, and NMS must really drop some candidates.
    found = sum(len(d.scores) for d in expected)
    candidate_scores = scores.max(axis=2) if class_agnostic else scores
    candidates = int((candidate_scores > np.float32(score_threshold)).sum())
    assert found > 0, "the test input produces no detection"
    assert found < min(candidates, max_detections * len(expected)), "NMS suppressed nothing on this input"

    model = surgeon.load(proto)
    params = dict(layout=layout, box_format=box_format, iou_threshold=iou_threshold,
                  score_threshold=score_threshold, max_detections=max_detections, class_agnostic=class_agnostic,
                  multi_label=multi_label)
    if layout == "boxes_scores":
        params.update(boxes=raw_names[0], scores=raw_names[1])
    else:
        params.update(output=raw_names[0])
    insert(model, **params)
    assert [t.name for t in model.graph.outputs] == list(KEYS)
    got = run(model, feeds)
    assert_same_detections(got, expected, max_detections)
    return expected


# -- real models: tiny_yolo (boxes_scores layout) -------------------------------------------------


def tiny_yolo_images(n: int) -> np.ndarray:
    """Images of 32 x 32 blocks of strong values: random-weight tiny_yolo gives confident, varied scores."""
    rng = np.random.default_rng(3)
    return np.kron(rng.standard_normal((n, 3, 10, 10)) * 4, np.ones((32, 32))).astype(np.float32)


@functools.cache
def tiny_yolo(name: str, static_batch: int | None) -> onnx.ModelProto:
    proto = onnx.load(real_model(name))
    return proto if static_batch is None else with_batch(proto, static_batch)


@pytest.mark.parametrize("class_agnostic", [False, True], ids=["class_aware", "agnostic"])
@pytest.mark.parametrize("name, static_batch, batch", [
    ("tiny_yolo_legacy.onnx", None, 1),   # symbolic batch, anchors and classes
    ("tiny_yolo_legacy.onnx", None, 3),
    ("tiny_yolo_dynamo.onnx", None, 3),   # symbolic batch, static anchors and classes
    ("tiny_yolo_dynamo.onnx", 1, 1),      # every dimension static
    ("tiny_yolo_dynamo.onnx", 3, 3),
])
def test_tiny_yolo_matches_reference(name, static_batch, batch, class_agnostic):
    expected = check_against_reference(
        tiny_yolo(name, static_batch), "boxes_scores", {"images": tiny_yolo_images(batch)},
        raw_names=["boxes", "scores"], box_format="xyxy", iou_threshold=0.3, score_threshold=0.7,
        class_agnostic=class_agnostic)
    assert len(expected) == batch
    assert all(len(d.scores) > 0 for d in expected)


# -- built detectors: yolov8 and yolov5 layouts ---------------------------------------------------


@pytest.mark.parametrize("class_agnostic", [False, True], ids=["class_aware", "agnostic"])
@pytest.mark.parametrize("layout", ["yolov8", "yolov5"])
@pytest.mark.parametrize("symbolic, batch, opset", [
    (True, 1, 11),    # symbolic N, classes and anchors; ReduceSum takes axes as an attribute
    (True, 3, 13),
    (False, 1, 17),   # static everything
    (False, 3, 20),
], ids=["symbolic-b1-op11", "symbolic-b3-op13", "static-b1-op17", "static-b3-op20"])
def test_built_detectors_match_reference(layout, symbolic, batch, opset, class_agnostic):
    proto = build_detector(layout, batch="N" if symbolic else batch, symbolic=symbolic, opset=opset)
    images = blob_images(3, seed=1)
    if batch == 1:
        images = images[2:]  # one image with objects
    expected = check_against_reference(proto, layout, {"images": images}, raw_names=["output0"],
                                       iou_threshold=0.45, score_threshold=0.5, class_agnostic=class_agnostic)
    if batch == 3:
        assert len(expected[1].scores) == 0  # the image without objects: all padding


@pytest.mark.parametrize("multi_label", [True, False], ids=["multi_label", "best_label"])
@pytest.mark.parametrize("backend_model", ["tiny_yolo", "built_yolov8", "built_yolov5"])
def test_multi_label_matches_reference(backend_model, multi_label):
    """Both settings against the independent reference, on real weights and on built heads."""
    if backend_model == "tiny_yolo":
        proto, layout, feeds = real_yolov8(), "yolov8", {"images": tiny_yolo_images(2)}
        thresholds = dict(iou_threshold=0.45, score_threshold=0.7)
    else:
        layout = backend_model.removeprefix("built_")
        proto, feeds = build_detector(layout), {"images": blob_images(3, seed=1)}
        thresholds = dict(iou_threshold=0.45, score_threshold=0.3)
    check_against_reference(proto, layout, feeds, raw_names=["output0"], multi_label=multi_label, **thresholds)


@pytest.mark.parametrize("layout", ["yolov8", "yolov5"])
def test_multi_label_false_detects_an_anchor_only_as_its_best_class(layout):
    """Two-color rectangles score above the threshold for two classes at the same anchors: with
    multi_label true some detections are an anchor's second-best class; with false, none is."""
    proto, images = build_detector(layout), blob_images(1, seed=1)
    boxes, scores = decode(layout, [run(proto, {"images": images})["output0"]])
    assert ((scores[0] > 0.3).sum(axis=1) > 1).any()  # anchors above the threshold for two classes
    not_best = {}
    for multi_label in (True, False):
        model = surgeon.load(proto)
        insert(model, layout=layout, score_threshold=0.3, multi_label=multi_label, max_detections=300)
        out = run(model, {"images": images})
        n = int(out["num_dets"][0, 0])
        count = 0
        for box, label in zip(out["det_boxes"][0, :n], out["det_classes"][0, :n]):
            anchor = int(np.argmin(np.abs(boxes[0] - box).sum(axis=1)))
            count += int(label != scores[0, anchor].argmax())
        not_best[multi_label] = count
    assert not_best[True] > 0 and not_best[False] == 0


def test_pass_reference_equals_the_independent_reference():
    """The numpy NMS that --verify compares insert_nms with agrees with the tests' own, in both settings."""
    from surgeon.passes.builtin.nms import reference_detections

    raw = run(real_yolov8(), {"images": tiny_yolo_images(2)})["output0"]
    boxes, scores = decode("yolov8", [raw])
    for multi_label in (True, False):
        want = reference_nms(boxes, scores, iou_threshold=0.45, score_threshold=0.7, max_detections=100,
                             multi_label=multi_label)
        got = reference_detections([raw], layout="yolov8", box_format="cxcywh", iou_threshold=0.45,
                                   score_threshold=0.7, max_detections=100, class_agnostic=False,
                                   multi_label=multi_label)
        assert all(len(d.scores) > 0 for d in want)
        assert_same_detections(got, want, 100)


def test_verify_compares_detections_with_the_reference_and_catches_a_wrong_threshold(tmp_path):
    """--verify checks the raw head and the detections; an NMS graph that drifted from its declared
    settings (its IoU constant edited after the pass) is a mismatch."""
    proto = real_yolov8()
    onnx.save(proto, tmp_path / "v8.onnx")
    model = surgeon.load(proto)
    result = surgeon.apply(surgeon.parse_recipe(
        "version: 1\nsteps:\n  - pass: insert_nms\n    with: {layout: yolov8, score_threshold: 0.7, "
        "multi_label: false}\n"), model)
    surgeon.save(model, tmp_path / "nms.onnx")
    feeds = tmp_path / "in.npz"
    np.savez(feeds, images=tiny_yolo_images(2))
    report = surgeon.verify(tmp_path / "v8.onnx", tmp_path / "nms.onnx", correspondence=result.correspondence,
                            inputs=feeds)
    assert report.status == "match"
    assert [(o.edited_name, o.compared_with) for o in report.outputs] == [
        ("num_dets", "num_dets of the reference NMS of 'output0'"),
        ("det_boxes", "det_boxes of the reference NMS of 'output0'"),
        ("det_scores", "det_scores of the reference NMS of 'output0'"),
        ("det_classes", "det_classes of the reference NMS of 'output0'"),
        ("output0", "'output0'")]
    assert report.outputs[-1].intermediate and all(o.uninformative is None for o in report.outputs)
    drifted = onnx.load(tmp_path / "nms.onnx")
    iou = next(i for i in drifted.graph.initializer if i.name.endswith("iou_threshold"))
    iou.CopyFrom(onnx.numpy_helper.from_array(np.array([0.05], np.float32), iou.name))
    onnx.save(drifted, tmp_path / "drifted.onnx")
    report = surgeon.verify(tmp_path / "v8.onnx", tmp_path / "drifted.onnx", correspondence=result.correspondence,
                            inputs=feeds)
    assert report.status == "mismatch"
    assert not next(o for o in report.outputs if o.edited_name == "num_dets").ok


def test_class_aware_and_agnostic_differ_on_two_color_objects():
    """Yellow/cyan/magenta rectangles score for two classes at the same anchors: agnostic NMS keeps one."""
    proto = build_detector("yolov8")
    images = blob_images(1, seed=1)
    counts = {}
    for agnostic in (False, True):
        model = surgeon.load(proto)
        insert(model, layout="yolov8", score_threshold=0.5, class_agnostic=agnostic)
        counts[agnostic] = int(run(model, {"images": images})["num_dets"][0, 0])
    assert counts[True] < counts[False]


def test_truncates_to_max_detections_by_score():
    proto = build_detector("yolov5")
    images = blob_images(3, seed=1)
    expected = check_against_reference(proto, "yolov5", {"images": images}, raw_names=["output0"],
                                       iou_threshold=0.45, score_threshold=0.5, max_detections=5)
    assert [len(d.scores) for d in expected] == [5, 0, 5]


def test_float16_head_is_cast_to_float32():
    proto = build_detector("yolov8", dtype=onnx.TensorProto.FLOAT16)
    check_against_reference(proto, "yolov8", {"images": blob_images(3, seed=1)}, raw_names=["output0"],
                            iou_threshold=0.45, score_threshold=0.5)
    model = surgeon.load(proto)
    insert(model, layout="yolov8")
    first = to_proto(model).graph.node[len(proto.graph.node)]
    assert (first.op_type, first.input[0], first.attribute[0].i) == ("Cast", "output0", onnx.TensorProto.FLOAT)


def test_threshold_above_every_score_gives_only_padding():
    model = surgeon.load(build_detector("yolov8"))
    insert(model, layout="yolov8", score_threshold=1.0, max_detections=7)
    out = run(model, {"images": blob_images(2, seed=1)})
    assert out["num_dets"].tolist() == [[0], [0]]
    for key in KEYS[1:]:
        assert out[key].shape[:2] == (2, 7) and not out[key].any()


# -- exact structure and hand-checked results ------------------------------------------------------


TWO_TENSORS = """
<ir_version: 8, opset_import: ["" : 17]>
heads (float[N, A, 4] box_in, float[N, A, C] score_in) => (float[N, A, 4] boxes, float[N, A, C] scores) {
    boxes = Identity(box_in)
    scores = Identity(score_in)
}
"""

# Anchors 0 and 1 overlap (IoU 81/119 = 0.68); anchor 3 is anchor 0's box; anchor 2 stands apart.
HAND_BOXES = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]]], np.float32)
HAND_SCORES = np.array([[[0.9, 0.0], [0.8, 0.0], [0.1, 0.7], [0.0, 0.95]]], np.float32)


def test_onnx_backend_structure_and_hand_checked_detections():
    model = surgeon.load(onnx.parser.parse_model(TWO_TENSORS))
    report = insert(model, layout="boxes_scores", boxes="boxes", scores="scores", box_format="xyxy",
                    iou_threshold=0.5, score_threshold=0.5, max_detections=4)
    ops = [n.op for n in model.graph.nodes[2:]]
    assert ops == ["Transpose", "NonMaxSuppression", "GatherND", "Shape", "ConstantOfShape", "ScatterND",
                   "Reshape", "Pad", "TopK", "Greater", "Shape", "Gather", "Mod", "Div", "Where", "Cast",
                   "Cast", "ReduceSum", "Reshape", "Expand", "GatherElements", "Reshape", "Where"]
    nms = model.graph.nodes[3]
    assert nms.attrs == {"center_point_box": 0}
    assert nms.inputs[0].name == "boxes" and nms.inputs[1].inputs[0].op == "Transpose"
    assert [c.values.tolist() for c in nms.inputs[2:]] == [[4], [0.5], [0.5]]
    topk = model.graph.nodes[10]
    assert topk.op == "TopK" and topk.inputs[1].values.tolist() == [4]
    assert topk.attrs == {"axis": 1, "largest": 1, "sorted": 1}
    assert [(t.name, np.dtype(t.dtype).name, t.shape) for t in model.graph.outputs] == [
        ("num_dets", "int32", ["N", 1]), ("det_boxes", "float32", ["N", 4, 4]),
        ("det_scores", "float32", ["N", 4]), ("det_classes", "int32", ["N", 4])]
    assert report.notes == [
        "detection outputs: num_dets [N, 1] int32, det_boxes [N, 4, 4] float32, det_scores [N, 4] float32, "
        "det_classes [N, 4] int32",
        "removed raw graph output(s) 'boxes', 'scores'"]
    assert report.details == {"backend": "onnx", "outputs": {k: k for k in KEYS}, "raw": ["boxes", "scores"],
                              "layout": "boxes_scores", "box_format": "xyxy", "iou_threshold": 0.5,
                              "score_threshold": 0.5, "max_detections": 4, "class_agnostic": False,
                              "multi_label": True, "keep_raw": False}

    out = run(model, {"box_in": HAND_BOXES, "score_in": HAND_SCORES})
    # class 1 keeps anchors 3 and 2; class 0 keeps anchor 0 (anchor 1 overlaps it).
    assert out["num_dets"].tolist() == [[3]]
    assert out["det_classes"].tolist() == [[1, 0, 1, 0]]
    np.testing.assert_allclose(out["det_scores"], [[0.95, 0.9, 0.7, 0.0]])
    np.testing.assert_array_equal(out["det_boxes"][0], [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30],
                                                        [0, 0, 0, 0]])


def test_class_agnostic_hand_checked_detections():
    model = surgeon.load(onnx.parser.parse_model(TWO_TENSORS))
    insert(model, layout="boxes_scores", boxes="boxes", scores="scores", box_format="xyxy",
           iou_threshold=0.5, score_threshold=0.5, max_detections=4, class_agnostic=True)
    assert [n.op for n in model.graph.nodes[3:6]] == ["ArgMax", "GatherElements", "NonMaxSuppression"]
    out = run(model, {"box_in": HAND_BOXES, "score_in": HAND_SCORES})
    # anchor 3 (class 1, 0.95) suppresses anchors 0 and 1 of class 0 too; anchor 2 stands apart.
    assert out["num_dets"].tolist() == [[2]]
    assert out["det_classes"].tolist() == [[1, 1, 0, 0]]
    np.testing.assert_allclose(out["det_scores"], [[0.95, 0.7, 0.0, 0.0]])


def test_k_larger_than_classes_times_anchors_is_padded():
    model = surgeon.load(onnx.parser.parse_model(TWO_TENSORS))
    insert(model, layout="boxes_scores", boxes="boxes", scores="scores", box_format="xyxy",
           iou_threshold=0.5, score_threshold=0.5, max_detections=20)  # only 4 anchors x 2 classes
    out = run(model, {"box_in": HAND_BOXES, "score_in": HAND_SCORES})
    assert out["num_dets"].tolist() == [[3]]
    assert out["det_boxes"].shape == (1, 20, 4)
    assert out["det_classes"].tolist() == [[1, 0, 1] + [0] * 17]
    np.testing.assert_allclose(out["det_scores"], [[0.95, 0.9, 0.7] + [0.0] * 17])


def test_cxcywh_boxes_come_out_as_corners():
    model = surgeon.load(onnx.parser.parse_model(TWO_TENSORS))
    insert(model, layout="boxes_scores", boxes="boxes", scores="scores", box_format="cxcywh",
           score_threshold=0.5, max_detections=2)
    boxes = np.array([[[5, 5, 10, 4], [40, 40, 2, 2]]], np.float32)
    scores = np.array([[[0.9], [0.6]]], np.float32)
    out = run(model, {"box_in": boxes, "score_in": scores})
    np.testing.assert_array_equal(out["det_boxes"][0], [[0, 3, 10, 7], [39, 39, 41, 41]])


def test_keep_raw_and_output_names():
    proto = build_detector("yolov8")
    model = surgeon.load(proto)
    names = {"num_dets": "count", "det_boxes": "xyxy", "det_scores": "confidence", "det_classes": "label"}
    report = insert(model, layout="yolov8", output="output0", keep_raw=True, outputs=names,
                    score_threshold=0.5)
    assert [t.name for t in model.graph.outputs] == ["output0", "count", "xyxy", "confidence", "label"]
    assert report.details["outputs"] == names
    assert not any("removed" in n for n in report.notes)
    images = blob_images(3, seed=1)
    out = run(model, {"images": images})
    np.testing.assert_array_equal(out["output0"], run(proto, {"images": images})["output0"])
    boxes, scores = decode("yolov8", [out["output0"]])
    assert_same_detections(out, reference_nms(boxes, scores, iou_threshold=0.45, score_threshold=0.5,
                                              max_detections=100), 100, names)


def test_raw_output_produced_by_an_if_node():
    """The head comes out of an If (both branches): NMS follows whichever branch ran."""
    model = surgeon.load(onnx.parser.parse_model(textwrap.dedent("""
        <ir_version: 8, opset_import: ["" : 17]>
        branchy (float[N, 7, 256] head, bool flag) => (float[N, 7, 256] output0) {
            output0 = If(flag) <
                then_branch = then_g () => (float[N, 7, 256] inner) { inner = Identity(head) },
                else_branch = else_g () => (float[N, 7, 256] halved) {
                    half = Constant<value = float {0.5}>()
                    halved = Mul(head, half)
                }
            >
        }
    """)))
    with pytest.raises(PassError) as excinfo:
        insert(model, layout="yolov8", output="inner")
    assert str(excinfo.value) == (
        "error: output 'inner' is inside a subgraph ('then_g'); insert_nms works on tensors of the main graph\n"
        "  hint: name the main-graph tensor that carries the head's output (e.g. the output of the If/Loop node)")
    insert(model, layout="yolov8", output="output0", score_threshold=0.3)
    head = run(build_detector("yolov8"), {"images": blob_images(3, seed=1)})["output0"]
    for flag, raw in ((True, head), (False, head * np.float32(0.5))):
        out = run(model, {"head": head, "flag": np.array(flag)})
        boxes, scores = decode("yolov8", [raw])
        expected = reference_nms(boxes, scores, iou_threshold=0.45, score_threshold=0.3, max_detections=100)
        assert sum(len(d.scores) for d in expected) > 0
        assert_same_detections(out, expected, 100)


def shapeless_head(opset: int) -> onnx.ModelProto:
    proto = build_detector("yolov8", opset=opset)
    proto.graph.output[0].type.tensor_type.ClearField("shape")
    return proto


@pytest.mark.parametrize("source, params", [
    (lambda: tiny_yolo("tiny_yolo_legacy.onnx", None),
     dict(layout="boxes_scores", boxes="boxes", scores="scores", box_format="xyxy")),
    (lambda: shapeless_head(11), dict(layout="yolov8", class_agnostic=True)),
    (lambda: shapeless_head(20), dict(layout="yolov8")),
], ids=["tiny_yolo", "shapeless-op11", "shapeless-op20"])
def test_saved_model_passes_the_checker(source, params, tmp_path):
    """The full checker (strict shape inference) accepts the result, also for a head of unknown shape."""
    model = surgeon.load(source())
    insert(model, **params)
    if params["layout"] == "yolov8":
        assert [t.shape for t in model.graph.outputs] == [[None, 1], [None, 100, 4], [None, 100], [None, 100]]
    result = surgeon.save(model, tmp_path / "nms.onnx")
    assert result.warnings == []
    onnx.checker.check_model(str(tmp_path / "nms.onnx"), full_check=True)


def test_deterministic():
    def once() -> bytes:
        model = surgeon.load(build_detector("yolov5"))
        insert(model, layout="yolov5", class_agnostic=True)
        return proto_bytes(model)

    assert once() == once()


# -- efficient_nms_trt backend ------------------------------------------------------------------------

# TensorRT's plugin interface (plugin/efficientNMSPlugin: README and EfficientNMSPlugin_PluginConfig.yaml):
# attribute -> ONNX attribute type it must be written with (float32 -> FLOAT, int32 -> INT).
TRT_ATTRIBUTE_TYPES = {
    "score_threshold": onnx.AttributeProto.FLOAT,
    "iou_threshold": onnx.AttributeProto.FLOAT,
    "max_output_boxes": onnx.AttributeProto.INT,
    "background_class": onnx.AttributeProto.INT,
    "score_activation": onnx.AttributeProto.INT,
    "class_agnostic": onnx.AttributeProto.INT,
    "box_coding": onnx.AttributeProto.INT,
    "plugin_version": onnx.AttributeProto.STRING,
}


def trt_node(proto: onnx.ModelProto) -> onnx.NodeProto:
    (node,) = [n for n in proto.graph.node if n.op_type == "EfficientNMS_TRT"]
    return node


def plugin_inputs(model: surgeon.Model, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What the plugin would receive: its two inputs, computed by onnxruntime with the plugin cut off."""
    node = next(n for n in model.graph.nodes if n.op == "EfficientNMS_TRT")
    boxes, scores = node.inputs
    model.graph.nodes.remove(node)
    model.graph.outputs = [boxes, scores]
    for t in (boxes, scores):
        t.dtype = np.float32
    out = run(model, feeds)
    return out[boxes.name], out[scores.name]


@pytest.mark.parametrize("layout, box_format, agnostic, decode_ops", [
    ("yolov8", "cxcywh", False, ["Slice", "Transpose", "Slice", "Transpose"]),
    ("yolov5", "cxcywh", True, ["Slice", "Slice", "Slice", "Mul"]),
    ("boxes_scores", "xyxy", False, []),
])
def test_trt_backend_structure(layout, box_format, agnostic, decode_ops, tmp_path):
    if layout == "boxes_scores":
        proto, feeds = tiny_yolo("tiny_yolo_dynamo.onnx", None), {"images": tiny_yolo_images(2)}
        raw = dict(boxes="boxes", scores="scores")
    else:
        proto, feeds = build_detector(layout, symbolic=False), {"images": blob_images(2, seed=1)}
        raw = dict(output="output0")
    model = surgeon.load(proto)
    report = insert(model, layout=layout, box_format=box_format, backend="efficient_nms_trt",
                    iou_threshold=0.5, score_threshold=0.3, max_detections=50, class_agnostic=agnostic, **raw)
    assert [a.op for a in report.added] == decode_ops + ["EfficientNMS_TRT"]
    assert surgeon.save(model, tmp_path / "trt.onnx").warnings == []
    saved = onnx.load(tmp_path / "trt.onnx")
    node = trt_node(saved)
    assert node.domain == "" and [o.domain for o in saved.opset_import] == [""]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert {a.name: a.type for a in node.attribute} == TRT_ATTRIBUTE_TYPES
    assert attrs == {"score_threshold": pytest.approx(0.3), "iou_threshold": pytest.approx(0.5),
                     "max_output_boxes": 50, "background_class": -1, "score_activation": 0,
                     "class_agnostic": int(agnostic), "box_coding": int(box_format == "cxcywh"),
                     "plugin_version": b"1"}
    assert list(node.output) == list(KEYS) == [o.name for o in saved.graph.output]
    types = {o.name: (o.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim])
             for o in saved.graph.output}
    batch = "N"
    assert types == {"num_dets": (onnx.TensorProto.INT32, [batch, 1]),
                     "det_boxes": (onnx.TensorProto.FLOAT, [batch, 50, 4]),
                     "det_scores": (onnx.TensorProto.FLOAT, [batch, 50]),
                     "det_classes": (onnx.TensorProto.INT32, [batch, 50])}
    # The plugin's inputs: boxes [N, A, 4] in the declared coding and scores [N, A, C], as documented.
    inferred = onnx.shape_inference.infer_shapes(saved)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    anchors, classes = (2100, 80) if layout == "boxes_scores" else (ANCHORS, CLASSES)
    assert shapes[node.input[0]][1:] == [anchors, 4] and shapes[node.input[1]][1:] == [anchors, classes]
    raw_out = run(proto, feeds)
    names = ["boxes", "scores"] if layout == "boxes_scores" else ["output0"]
    want_boxes, want_scores = split_head(layout, [raw_out[n] for n in names])
    got_boxes, got_scores = plugin_inputs(surgeon.load(saved), feeds)
    np.testing.assert_array_equal(got_boxes, want_boxes)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)


def test_trt_model_is_checked_everywhere_but_the_plugin(tmp_path):
    """The plugin op passes the save check; a real fault elsewhere in the same model still fails it."""
    model = surgeon.load(build_detector("yolov8"))
    insert(model, layout="yolov8", backend="efficient_nms_trt")
    surgeon.save(model, tmp_path / "ok.onnx")
    broken = surgeon.load(tmp_path / "ok.onnx")
    transpose = next(n for n in broken.graph.nodes if n.op == "Transpose")
    transpose.inputs[0] = gs.Variable("nobody_makes_this", np.float32)  # read a tensor nothing produces
    with pytest.raises(ExportError) as excinfo:
        surgeon.save(broken, tmp_path / "broken.onnx")
    assert str(excinfo.value).startswith("error: the edited model fails the ONNX checker: ")
    assert "nobody_makes_this" in str(excinfo.value)
    assert not (tmp_path / "broken.onnx").exists()


# -- errors: full strings, and the model unchanged --------------------------------------------------


@pytest.mark.parametrize("source, params, message", [
    ("v8", dict(layout="yolov8", output="output1"),
     "error: output 'output1': no tensor of that name in the model\n"
     "  hint: did you mean 'output0'?"),
    ("tiny", dict(layout="boxes_scores", boxes="box", scores="scores", box_format="xyxy"),
     "error: boxes 'box': no tensor of that name in the model\n"
     "  hint: did you mean 'boxes'?"),
    ("tiny", dict(layout="boxes_scores", boxes="boxes", scores="nothing_like_it", box_format="xyxy"),
     "error: scores 'nothing_like_it': no tensor of that name in the model\n"
     "  hint: the graph outputs are 'boxes', 'scores'"),
    ("v8", dict(layout="yolov8", output="cls_w"),
     "error: output 'cls_w' is a constant, not a tensor the model computes\n"
     "  hint: name the detector head's output tensor"),
    ("tiny", dict(layout="yolov8", output="scores"),
     "error: 'scores' has shape [N, 2100, 80], which cannot be a yolov8 head [N, 4 + classes, anchors]: "
     "dimension 1 (4 + classes) is 2100 but dimension 2 (anchors) is only 80; it looks like [N, anchors, values]\n"
     "  hint: heads [N, anchors, 5 + classes] (with objectness) take layout: yolov5; "
     "separate boxes and scores tensors take layout: boxes_scores"),
    ("v8static", dict(layout="yolov5"),
     "error: 'output0' has shape [N, 7, 256], which cannot be a yolov5 head [N, anchors, 5 + classes]: "
     "dimension 2 (5 + classes) is 256 but dimension 1 (anchors) is only 7; it looks like [N, values, anchors]\n"
     "  hint: for [N, 4 + classes, anchors] heads without objectness use layout: yolov8"),
    ("tiny", dict(layout="boxes_scores", boxes="scores", scores="boxes", box_format="xyxy"),
     "error: 'scores' has shape [N, 2100, 80], which cannot be boxes [N, anchors, 4]: "
     "dimension 2 is 80, expected 4 (the box coordinates)\n"
     "  hint: check that 'boxes' and 'scores' are not swapped"),
    ("tiny", dict(layout="yolov5", output="images"),
     "error: 'images' has shape [N, 3, 320, 320], which cannot be a yolov5 head [N, anchors, 5 + classes]: "
     "it has 4 dimensions, expected 3\n"
     "  hint: check 'layout' and the tensor name"),
    ("pair", dict(layout="boxes_scores", boxes="boxes", scores="scores", box_format="xyxy"),
     "error: dimension 1 of 'scores' is 12 but dimension 1 of 'boxes' is 10; both are the number of anchors\n"
     "  hint: boxes must be [N, anchors, 4] and scores [N, anchors, classes] for the same anchors"),
    ("pair", dict(layout="boxes_scores", boxes="boxes", box_format="xyxy"),
     "error: layout boxes_scores needs 'scores'\n"
     "  hint: name the boxes [N, anchors, 4] and scores [N, anchors, classes] tensors; "
     "the graph outputs are 'boxes', 'scores'"),
    ("v8", dict(layout="yolov8", iou_threshold=1.5),
     "error: parameter 'iou_threshold': must be between 0 and 1, got 1.5\n"
     "  hint: thresholds compare IoUs and confidence scores, which lie in [0, 1]"),
    ("v8", dict(layout="yolov8", score_threshold=-0.1),
     "error: parameter 'score_threshold': must be between 0 and 1, got -0.1\n"
     "  hint: thresholds compare IoUs and confidence scores, which lie in [0, 1]"),
    ("v8", dict(layout="yolov8", max_detections=0),
     "error: parameter 'max_detections': must be at least 1, got 0\n"
     "  hint: it is the number of detections kept per image (e.g. 100)"),
    ("tiny", dict(layout="boxes_scores", boxes="boxes", scores="scores"),
     "error: layout boxes_scores needs box_format\n"
     "  hint: set box_format: xyxy (corners) or cxcywh (center, size) to say how the boxes tensor is encoded"),
    ("tiny", dict(layout="yolov8"),
     "error: layout yolov8 needs 'output': the model has 2 graph outputs\n"
     "  hint: name the raw head tensor [N, 4 + classes, anchors]; the graph outputs are 'boxes', 'scores'"),
    ("tiny", dict(layout="boxes_scores", output="boxes", box_format="xyxy"),
     "error: 'output' is for layouts yolov8 and yolov5; layout boxes_scores takes 'boxes' and 'scores'\n"
     "  hint: replace 'output' with 'boxes: <boxes tensor>' and 'scores: <scores tensor>'"),
    ("v8", dict(layout="yolov8", outputs={"num_det": "n"}),
     "error: 'outputs' has no key 'num_det'\n"
     "  hint: did you mean 'num_dets'?"),
    ("v8", dict(layout="yolov8", outputs={"num_dets": "output0"}),
     "error: cannot name output num_dets 'output0': the model already has a tensor of that name\n"
     "  hint: choose another name with 'outputs: {num_dets: <name>}'"),
    ("v8", dict(layout="yolov8", outputs={"num_dets": "x", "det_boxes": "x"}),
     "error: outputs num_dets and det_boxes are both named 'x'\n"
     "  hint: give each detection output its own name"),
    ("v8int", dict(layout="yolov8"),
     "error: 'output0' has dtype int32; a yolov8 head must be a float tensor\n"
     "  hint: name the detector's raw float output"),
    ("v8op10", dict(layout="yolov8"),
     "error: insert_nms needs default opset 11 or newer; the model has opset 10\n"
     "  hint: convert the model first (onnx.version_converter, or an opset-conversion step)"),
])
def test_errors(source, params, message):
    protos = {
        "v8": lambda: build_detector("yolov8"),
        "v8static": lambda: build_detector("yolov8", symbolic=False),
        "v8int": lambda: build_detector("yolov8", dtype=onnx.TensorProto.INT32),
        "v8op10": lambda: build_detector("yolov8", opset=10),
        "tiny": lambda: tiny_yolo("tiny_yolo_dynamo.onnx", None),
        "pair": lambda: onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
            g (float[1, 10, 4] b, float[1, 12, 3] s) => (float[1, 10, 4] boxes, float[1, 12, 3] scores) {
                boxes = Identity(b)
                scores = Identity(s)
            }"""),
    }
    model = surgeon.load(protos[source]())
    before = proto_bytes(model)
    with pytest.raises(PassError) as excinfo:
        insert(model, **params)
    assert str(excinfo.value) == message
    assert proto_bytes(model) == before


def test_inserting_twice_is_refused_and_changes_nothing():
    model = surgeon.load(build_detector("yolov8"))
    insert(model, layout="yolov8", output="output0")
    before = proto_bytes(model)
    with pytest.raises(PassError) as excinfo:
        insert(model, layout="yolov8", output="output0")
    assert str(excinfo.value) == (
        "error: cannot name output num_dets 'num_dets': the model already has a tensor of that name\n"
        "  hint: choose another name with 'outputs: {num_dets: <name>}' (or does the model already end in NMS?)")
    assert proto_bytes(model) == before


# -- the docstring example and the ready recipes --------------------------------------------------------


def test_docstring_example_runs_on_tiny_yolo():
    spec = surgeon.registry.get("insert_nms")
    recipe = surgeon.parse_recipe(spec.example())
    proto = tiny_yolo("tiny_yolo_legacy.onnx", None)
    model = surgeon.load(proto)
    surgeon.apply(recipe, model)
    feeds = {"images": tiny_yolo_images(2)}
    raw = run(proto, feeds)
    boxes, scores = decode("boxes_scores", [raw["boxes"], raw["scores"]], "xyxy")
    expected = reference_nms(boxes, scores, iou_threshold=0.45, score_threshold=0.54, max_detections=100)
    assert all(len(d.scores) > 0 for d in expected)
    assert_same_detections(run(model, feeds), expected, 100)


@functools.cache
def real_yolov8() -> onnx.ModelProto:
    """tiny_yolo_legacy's real weights behind a YOLOv8-layout head output0 [N, 84, 2100]."""
    return yolov8_from_tiny_yolo(tiny_yolo("tiny_yolo_legacy.onnx", None))


@pytest.mark.parametrize("source", ["tiny_yolo", "built"])
def test_recipe_yolov8_nms(source):
    if source == "tiny_yolo":
        proto, feeds = real_yolov8(), {"images": tiny_yolo_images(1)}
    else:
        proto, feeds = build_detector("yolov8"), {"images": blob_images(3, seed=1)}
    model = surgeon.load(proto)
    surgeon.apply(RECIPES / "yolov8_nms.yaml", model)
    boxes, scores = decode("yolov8", [run(proto, feeds)["output0"]])
    expected = reference_nms(boxes, scores, iou_threshold=0.45, score_threshold=0.25, max_detections=100,
                             multi_label=False)
    assert sum(len(d.scores) for d in expected) > 0
    assert_same_detections(run(model, feeds), expected, 100)


def test_recipe_yolov8_nms_trt(tmp_path):
    model = surgeon.load(real_yolov8())
    surgeon.apply(RECIPES / "yolov8_nms_trt.yaml", model)
    surgeon.save(model, tmp_path / "trt.onnx")
    node = trt_node(onnx.load(tmp_path / "trt.onnx"))
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["box_coding"] == 1 and attrs["max_output_boxes"] == 100 and attrs["class_agnostic"] == 0


def test_recipe_yolov8_deploy():
    """uint8 BGR NHWC frames in, detections out: the same as numpy preprocessing + model + reference NMS."""
    proto = real_yolov8()
    model = surgeon.load(proto)
    surgeon.apply(RECIPES / "yolov8_deploy.yaml", model)
    assert [(t.name, np.dtype(t.dtype).name, t.shape) for t in model.graph.inputs] == [
        ("images", "uint8", ["N", 320, 320, 3])]
    rng = np.random.default_rng(3)
    frames = np.kron(rng.integers(0, 256, (2, 10, 10, 3)), np.ones((32, 32, 1))).astype(np.uint8)
    floats = frames[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) * np.float32(0.00392156862)
    boxes, scores = decode("yolov8", [run(proto, {"images": np.ascontiguousarray(floats)})["output0"]])
    expected = reference_nms(boxes, scores, iou_threshold=0.45, score_threshold=0.25, max_detections=100,
                             multi_label=False)
    assert all(len(d.scores) > 0 for d in expected)
    assert_same_detections(run(model, {"images": frames}), expected, 100)


def test_swapped_boxes_and_scores_are_caught_through_shape_inference():
    """tiny_yolo_legacy declares its outputs [N, Concatboxes_dim_1, Concatboxes_dim_2]: only
    shape inference knows that 'scores' ends in 80 classes, not 4 coordinates."""
    model = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    before = to_proto(model).SerializeToString()
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "insert_nms", layout="boxes_scores", boxes="scores", scores="boxes",
                         box_format="xyxy")
    assert str(exc.value) == (
        "error: 'scores' has shape [N, Concatscores_dim_1, 80], which cannot be boxes [N, anchors, 4]: "
        "dimension 2 is 80, expected 4 (the box coordinates)\n"
        "  hint: check that 'boxes' and 'scores' are not swapped")
    assert to_proto(model).SerializeToString() == before
