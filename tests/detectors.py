"""Small detectors for insert_nms tests, with weights arranged so that the scores mean something.

``build_detector`` makes a YOLO-style head over a 64 x 64 RGB image: the image
is average-pooled into a 16 x 16 grid (256 anchors, stride 4); each cell
predicts a box around its center (size 6 to 14 pixels, so neighbouring boxes
overlap) and one score per class, where class c is "this cell is mostly
color channel c" (red, green, blue). ``blob_images`` paints colored
rectangles on dark noise, so anchors inside a rectangle get clearly high,
overlapping, distinct scores for its color; two-color rectangles (yellow,
cyan, magenta) score for two classes at the same anchors. The outputs are laid out as Ultralytics exports them:

- ``yolov8``: ``output0`` [N, 4 + C, A] (cx, cy, w, h, class scores);
- ``yolov5``: ``output0`` [N, A, 5 + C] (cx, cy, w, h, objectness, class
  scores); objectness says "this cell is brighter than the background".

``yolov8_from_tiny_yolo`` turns the real ``tiny_yolo_*.onnx`` models (boxes
xyxy + scores) into the yolov8 layout, so the yolov8 recipes run on real weights.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = 3
IMAGE = 64
STRIDE = 4
GRID = IMAGE // STRIDE
ANCHORS = GRID * GRID
COLORS = [(0,), (1,), (2,), (0, 1), (1, 2), (0, 2)]


def _const(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values), name)


def build_detector(layout: str, *, batch: int | str = "N", symbolic: bool = True, opset: int = 17,
                   dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """A detector ``images [batch, 3, 64, 64] -> output0`` in the ``layout`` (yolov8 or yolov5).

    ``symbolic`` declares the output's classes and anchors dimensions as
    symbols instead of numbers; ``dtype`` is the output's element type
    (float16 to test the cast).
    """
    gy, gx = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    centers = np.stack([gx.ravel(), gy.ravel()]) * STRIDE + STRIDE / 2            # [2, A]
    # box = sigmoid(raw) * box_scale + box_offset: center +-2 px, size 6..14 px.
    box_scale = np.array([4, 4, 8, 8], np.float32).reshape(1, 4, 1)
    box_offset = np.concatenate([centers - 2, np.full((2, ANCHORS), 6)]).astype(np.float32)[None]
    box_w = np.array([[1, -1, 0], [0, 1, -1], [2, 1, 1], [1, 2, 1]], np.float32).reshape(4, 3, 1, 1)
    # class c: channel c well above the other two.
    cls_w = (np.eye(3) * 14 - 4).astype(np.float32).reshape(3, 3, 1, 1)
    cls_b = np.full(3, -3.0, np.float32)
    obj_w = np.full((1, 3, 1, 1), 6.0, np.float32)
    obj_b = np.array([-3.0], np.float32)

    inits = [
        _const("box_w", box_w), _const("box_b", np.zeros(4, np.float32)),
        _const("box_scale", box_scale), _const("box_offset", box_offset),
        _const("cls_w", cls_w), _const("cls_b", cls_b),
        _const("obj_w", obj_w), _const("obj_b", obj_b),
        _const("grid_shape4", np.array([0, 4, -1], np.int64)),
        _const("grid_shape1", np.array([0, 1, -1], np.int64)),
        _const("grid_shapeC", np.array([0, CLASSES, -1], np.int64)),
    ]
    nodes = [
        helper.make_node("AveragePool", ["images"], ["cells"], kernel_shape=[STRIDE, STRIDE], strides=[STRIDE, STRIDE]),
        helper.make_node("Conv", ["cells", "box_w", "box_b"], ["box_logits"]),
        helper.make_node("Sigmoid", ["box_logits"], ["box_unit"]),
        helper.make_node("Reshape", ["box_unit", "grid_shape4"], ["box_flat"]),
        helper.make_node("Mul", ["box_flat", "box_scale"], ["box_scaled"]),
        helper.make_node("Add", ["box_scaled", "box_offset"], ["box"]),                # [N, 4, A]
        helper.make_node("Conv", ["cells", "cls_w", "cls_b"], ["cls_logits"]),
        helper.make_node("Sigmoid", ["cls_logits"], ["cls_grid"]),
        helper.make_node("Reshape", ["cls_grid", "grid_shapeC"], ["cls"]),              # [N, C, A]
    ]
    if layout == "yolov8":
        nodes.append(helper.make_node("Concat", ["box", "cls"], ["head"], axis=1))
        dims = [batch, "outputs" if symbolic else 4 + CLASSES, "anchors" if symbolic else ANCHORS]
    elif layout == "yolov5":
        nodes += [
            helper.make_node("Conv", ["cells", "obj_w", "obj_b"], ["obj_logits"]),
            helper.make_node("Sigmoid", ["obj_logits"], ["obj_grid"]),
            helper.make_node("Reshape", ["obj_grid", "grid_shape1"], ["obj"]),
            helper.make_node("Concat", ["box", "obj", "cls"], ["head_t"], axis=1),
            helper.make_node("Transpose", ["head_t"], ["head"], perm=[0, 2, 1]),
        ]
        dims = [batch, "anchors" if symbolic else ANCHORS, "outputs" if symbolic else 5 + CLASSES]
    else:
        raise ValueError(layout)
    nodes.append(helper.make_node("Cast", ["head"], ["output0"], to=dtype))
    graph = helper.make_graph(
        nodes, f"{layout}_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, IMAGE, IMAGE])],
        [helper.make_tensor_value_info("output0", dtype, dims)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8,
                              producer_name="surgeon-tests")
    onnx.checker.check_model(model, full_check=True)
    return model


def blob_images(n: int, seed: int = 0, blobs: int = 4) -> np.ndarray:
    """``n`` images [n, 3, 64, 64] in [0, 1]: dark noise with ``blobs`` bright colored rectangles.

    Image 1 (when n > 1) has no rectangle, so some images have no detection.
    """
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.25, (n, 3, IMAGE, IMAGE))
    for i in range(n):
        if i == 1:
            continue
        for _ in range(blobs):
            h, w = rng.integers(8, 24, 2)
            y, x = rng.integers(0, IMAGE - h), rng.integers(0, IMAGE - w)
            # One channel (red, green, blue: one class) or two (yellow, cyan, magenta: two classes at once).
            channels = COLORS[rng.integers(0, len(COLORS))]
            images[i, :, y:y + h, x:x + w] *= 0.5
            for c in channels:
                images[i, c, y:y + h, x:x + w] = rng.uniform(0.7, 1.0, (h, w))
    return images.astype(np.float32)


def yolov8_from_tiny_yolo(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the outputs boxes [N, A, 4] (xyxy) and scores [N, A, C] by output0 [N, 4 + C, A] (cxcywh)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    g.initializer.extend([_const("v8_half", np.float32(0.5)),
                          _const("v8_lo", np.array([0], np.int64)), _const("v8_mid", np.array([2], np.int64)),
                          _const("v8_hi", np.array([4], np.int64)), _const("v8_axis", np.array([2], np.int64))])
    g.node.extend([
        helper.make_node("Slice", ["boxes", "v8_lo", "v8_mid", "v8_axis"], ["v8_xy1"]),
        helper.make_node("Slice", ["boxes", "v8_mid", "v8_hi", "v8_axis"], ["v8_xy2"]),
        helper.make_node("Add", ["v8_xy1", "v8_xy2"], ["v8_sum"]),
        helper.make_node("Mul", ["v8_sum", "v8_half"], ["v8_center"]),
        helper.make_node("Sub", ["v8_xy2", "v8_xy1"], ["v8_size"]),
        helper.make_node("Concat", ["v8_center", "v8_size", "scores"], ["v8_head"], axis=2),
        helper.make_node("Transpose", ["v8_head"], ["output0"], perm=[0, 2, 1]),
    ])
    batch = g.output[0].type.tensor_type.shape.dim[0]
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("output0", TensorProto.FLOAT,
                                                  [batch.dim_param or batch.dim_value, "outputs", "anchors"]))
    return out


def with_batch(model: onnx.ModelProto, n: int) -> onnx.ModelProto:
    """The model with its first input and output dimension fixed to ``n`` (a fully static-batch model)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in list(out.graph.input) + list(out.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = n
    return out
