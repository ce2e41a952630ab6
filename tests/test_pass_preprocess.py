"""add_preprocess: raw camera images in, checked against numpy preprocessing + the original model."""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import pytest
from nms_reference import assert_same_detections, decode, reference_nms
from util import real_model, run, tolerance

import surgeon
from surgeon.errors import PassError
from surgeon.io.export import to_proto

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def numpy_preprocess(images: np.ndarray, *, dtype: str = "uint8", layout: str = "NHWC",
                     channel_order: str = "RGB", scale: float = 1.0, mean=None, std=None) -> np.ndarray:
    """What the inserted nodes must compute, step by step in float32."""
    x = images.astype(np.float32)
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    if channel_order == "BGR":
        x = x[:, ::-1]
    if scale != 1.0:
        x = x * np.float32(scale)
    if mean is not None:
        x = x - np.array(mean, np.float32)[:, None, None]
    if std is not None:
        x = x / np.array(std, np.float32)[:, None, None]
    return np.ascontiguousarray(x)


def camera_images(n: int, dtype: str, layout: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, 320, 320, 3) if layout == "NHWC" else (n, 3, 320, 320)
    if dtype == "uint8":
        return rng.integers(0, 256, shape).astype(np.uint8)
    return rng.uniform(0, 1, shape).astype(dtype)


def tiny_yolo() -> onnx.ModelProto:
    return onnx.load(real_model("tiny_yolo_legacy.onnx"))


@pytest.mark.parametrize("options, ops", [
    (dict(dtype="uint8", layout="NHWC", channel_order="BGR", scale=0.00392156862, mean=MEAN, std=STD),
     ["Cast", "Transpose", "Gather", "Mul", "Sub", "Div"]),
    (dict(dtype="uint8", layout="NCHW", channel_order="RGB", scale=0.00392156862), ["Cast", "Mul"]),
    (dict(dtype="float32", layout="NHWC"), ["Transpose"]),
    (dict(dtype="float32", layout="NCHW", channel_order="BGR"), ["Gather"]),
    (dict(dtype="float16", layout="NCHW", mean=[0.5], std=[0.25]), ["Cast", "Sub", "Div"]),
    (dict(dtype="uint8", layout="NHWC", std=[50.0, 60.0, 70.0]), ["Cast", "Transpose", "Div"]),
    (dict(dtype="float32", layout="NCHW", scale=2.0), ["Mul"]),
    (dict(dtype="float32", layout="NCHW", mean=[0.1, 0.2, 0.3]), ["Sub"]),
], ids=["full", "uint8-scale", "nhwc", "bgr", "float16-mean-std", "std-only", "scale-only", "mean-only"])
def test_matches_numpy_preprocessing_and_original_model(options, ops):
    proto = tiny_yolo()
    model = surgeon.load(proto)
    report = surgeon.run_pass(model, "add_preprocess", input="images", **options)
    assert [a.op for a in report.added] == ops
    (inp,) = model.graph.inputs
    layout = options["layout"]
    assert (inp.name, np.dtype(inp.dtype).name) == ("images", options["dtype"])
    assert inp.shape == (["N", 320, 320, 3] if layout == "NHWC" else ["N", 3, 320, 320])

    images = camera_images(2, options["dtype"], layout)
    want = run(proto, {"images": numpy_preprocess(images, **options)})
    got = run(model, {"images": images})
    for name, expected in want.items():
        rtol, atol = tolerance(expected.dtype)
        np.testing.assert_allclose(got[name], expected, rtol=rtol, atol=atol, err_msg=name)


def test_structure_and_names():
    model = surgeon.load(tiny_yolo())
    first_conv = model.graph.nodes[0]
    report = surgeon.run_pass(model, "add_preprocess", channel_order="BGR", scale=0.00392156862,
                              mean=MEAN, std=STD)
    nodes = model.graph.nodes[:6]
    assert [(n.name, n.op) for n in nodes] == [
        ("add_preprocess/images/Cast", "Cast"), ("add_preprocess/images/Transpose", "Transpose"),
        ("add_preprocess/images/Gather", "Gather"), ("add_preprocess/images/Mul", "Mul"),
        ("add_preprocess/images/Sub", "Sub"), ("add_preprocess/images/Div", "Div")]
    assert nodes[0].inputs[0] is model.graph.inputs[0]
    assert nodes[1].attrs["perm"] == [0, 3, 1, 2]
    assert nodes[2].inputs[1].values.tolist() == [2, 1, 0] and nodes[2].attrs["axis"] == 1
    np.testing.assert_allclose(nodes[4].inputs[1].values.ravel(), MEAN)
    assert nodes[4].inputs[1].values.shape == (3, 1, 1)
    # The model's own first node still reads the old tensor, now internal and renamed.
    assert first_conv.inputs[0] is nodes[5].outputs[0]
    assert first_conv.inputs[0].name == "images_preprocessed"
    assert report.notes == ["input 'images' is now uint8 [N, 320, 320, 3] (NHWC, BGR)"]
    assert report.details == {"input": "images", "dtype": "uint8", "layout": "NHWC", "channel_order": "BGR",
                              "scale": 0.00392156862, "mean": MEAN, "std": STD, "model_dtype": "float32"}


def test_saved_model_passes_the_checker(tmp_path):
    model = surgeon.load(tiny_yolo())
    surgeon.run_pass(model, "add_preprocess", channel_order="BGR", scale=0.00392156862)
    assert surgeon.save(model, tmp_path / "pre.onnx").warnings == []


def test_input_captured_by_if_branches():
    """The image is read only inside If bodies (outer-scope capture): they read the preprocessed tensor."""
    proto = onnx.parser.parse_model(textwrap.dedent("""
        <ir_version: 8, opset_import: ["" : 17]>
        branchy (float[N, 3, H, W] x, bool flag) => (float[N, 3, H, W] y) {
            y = If(flag) <
                then_branch = then_g () => (float[N, 3, H, W] a) { a = Relu(x) },
                else_branch = else_g () => (float[N, 3, H, W] b) { b = Neg(x) }
            >
        }
    """))
    model = surgeon.load(proto)
    surgeon.run_pass(model, "add_preprocess", input="x", channel_order="BGR", scale=0.5, mean=[1.0, 2.0, 3.0])
    assert model.graph.inputs[0].shape == ["N", "H", "W", 3]
    images = camera_images(2, "uint8", "NHWC")[:, :5, :7]
    for flag in (True, False):
        want = run(proto, {"x": numpy_preprocess(images, channel_order="BGR", scale=0.5, mean=[1.0, 2.0, 3.0]),
                           "flag": np.array(flag)})
        got = run(model, {"x": images, "flag": np.array(flag)})
        np.testing.assert_array_equal(got["y"], want["y"])


@pytest.mark.parametrize("model_text, params, message", [
    (None, dict(input="image"),
     "error: input 'image': the model has no graph input of that name\n"
     "  hint: did you mean 'images'?"),
    (None, dict(input="boxes"),
     "error: input 'boxes' is not a graph input of the model\n"
     "  hint: add_preprocess changes a graph input; the graph inputs are 'images'"),
    ("two_inputs", dict(),
     "error: add_preprocess needs 'input': the model has 2 graph inputs\n"
     "  hint: name the image input; the graph inputs are 'x', 'ids'"),
    ("two_inputs", dict(input="ids"),
     "error: input 'ids' has dtype int64; add_preprocess feeds a float image input\n"
     "  hint: the model must take a float image [N, C, H, W]"),
    ("two_inputs", dict(input="x"),
     "error: input 'x' has 3 dimensions; add_preprocess expects an image input [N, C, H, W]\n"
     "  hint: name the model's image input"),
    (None, dict(mean=[0.5, 0.5]),
     "error: mean has 2 values but input 'images' has 3 channels\n"
     "  hint: give one value per channel, or a single value for all"),
    (None, dict(std=[0.2, 0.0, 0.2]),
     "error: std has a zero ([0.2, 0.0, 0.2]): the input would be divided by zero\n"
     "  hint: std values are standard deviations, e.g. [0.229, 0.224, 0.225]"),
    (None, dict(scale=0.0),
     "error: scale must be a finite, non-zero number, got 0.0\n"
     "  hint: for uint8 images in [0, 255] use 0.00392156862 (1/255)"),
    ("gray", dict(channel_order="BGR"),
     "error: channel_order BGR needs 3 channels, but input 'x' has 1\n"
     "  hint: use channel_order: RGB for inputs that are not 3-channel color images"),
    (None, dict(dtype="float32", layout="NCHW"),
     "error: add_preprocess would not change input 'images': it is already float32 NCHW RGB and no scale, "
     "mean or std is given\n"
     "  hint: set dtype (e.g. uint8), layout: NHWC, channel_order: BGR, scale, mean or std"),
])
def test_errors_leave_the_model_unchanged(model_text, params, message):
    texts = {
        "two_inputs": """<ir_version: 8, opset_import: ["" : 17]>
            g (float[N, 3, 8] x, int64[N] ids) => (float[N, 3, 8] y) { y = Identity(x) }""",
        "gray": """<ir_version: 8, opset_import: ["" : 17]>
            g (float[N, 1, 8, 8] x) => (float[N, 1, 8, 8] y) { y = Identity(x) }""",
    }
    model = surgeon.load(tiny_yolo() if model_text is None else onnx.parser.parse_model(texts[model_text]))
    before = to_proto(model).SerializeToString()
    with pytest.raises(PassError) as excinfo:
        surgeon.run_pass(model, "add_preprocess", **params)
    assert str(excinfo.value) == message
    assert to_proto(model).SerializeToString() == before


def test_docstring_example_runs_on_tiny_yolo():
    spec = surgeon.registry.get("add_preprocess")
    recipe = surgeon.parse_recipe(spec.example())
    proto = tiny_yolo()
    model = surgeon.load(proto)
    surgeon.apply(recipe, model)
    images = camera_images(1, "uint8", "NHWC")
    want = run(proto, {"images": numpy_preprocess(images, channel_order="BGR", scale=0.00392156862,
                                                  mean=MEAN, std=STD)})
    got = run(model, {"images": images})
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)


def test_composes_with_insert_nms_in_one_recipe():
    """uint8 NHWC BGR frames in, detections out: equal to numpy preprocessing + model + reference NMS."""
    recipe = surgeon.parse_recipe(textwrap.dedent("""
        version: 1
        steps:
          - pass: add_preprocess
            with: {input: images, dtype: uint8, layout: NHWC, channel_order: BGR, scale: 0.05}
          - pass: insert_nms
            with: {layout: boxes_scores, boxes: boxes, scores: scores, box_format: xyxy,
                   score_threshold: 0.7, iou_threshold: 0.3, max_detections: 50}
    """))
    proto = tiny_yolo()
    model = surgeon.load(proto)
    surgeon.apply(recipe, model)
    assert [(t.name, np.dtype(t.dtype).name) for t in model.graph.inputs] == [("images", "uint8")]
    assert [t.name for t in model.graph.outputs] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    # Blocky frames: random-weight tiny_yolo scores them confidently, so NMS has work to do.
    rng = np.random.default_rng(3)
    frames = np.kron(rng.integers(0, 256, (3, 10, 10, 3)), np.ones((32, 32, 1))).astype(np.uint8)
    raw = run(proto, {"images": numpy_preprocess(frames, channel_order="BGR", scale=0.05)})
    boxes, scores = decode("boxes_scores", [raw["boxes"], raw["scores"]], "xyxy")
    expected = reference_nms(boxes, scores, iou_threshold=0.3, score_threshold=0.7, max_detections=50)
    assert all(len(d.scores) > 0 for d in expected)
    assert_same_detections(run(model, {"images": frames}), expected, 50)
