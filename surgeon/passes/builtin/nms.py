"""insert_nms: put non-maximum suppression at the end of a detector's graph.

Exported detectors end at raw boxes and per-class scores. This pass decodes
the common head layouts and appends NMS, so that the model outputs filtered
detections in TensorRT's EfficientNMS convention whichever backend is used:

    num_dets    [N, 1]     int32    valid detections per image
    det_boxes   [N, K, 4]  float32  x1, y1, x2, y2
    det_scores  [N, K]     float32  sorted by score, descending
    det_classes [N, K]     int32

with ``K = max_detections``, zero after ``num_dets``.

The ``onnx`` backend uses standard ops only. ``NonMaxSuppression`` returns a
variable-length list of ``(image, class, anchor)`` triples; to get a fixed
``K`` per image without loops, the kept scores are scattered back into a
dense ``[N, classes, anchors]`` tensor of zeros, which is flattened, padded
with ``K`` zeros (so ``TopK`` always has ``K`` candidates) and ranked with
``TopK``. Kept scores are above ``score_threshold >= 0`` and so above zero:
the positive entries of the top ``K`` are exactly the detections, and their
flat index gives class (``index // anchors``) and anchor (``index % anchors``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import onnx_graphsurgeon as gs

from surgeon.errors import PassError, suggestion_hint
from surgeon.graph.builder import GraphBuilder
from surgeon.graph.correspondence import Correspondence, Derived, Pick
from surgeon.graph.shapes import infer_value_infos
from surgeon.graph.walk import walk_graphs
from surgeon.io.model import Model
from surgeon.passes.contract import Contract, verified_by
from surgeon.passes.result import PassResult
from surgeon.passes.spec import Max, Min

if TYPE_CHECKING:
    from surgeon.passes.runner import StepReport

OUTPUT_KEYS = ("num_dets", "det_boxes", "det_scores", "det_classes")
MIN_OPSET = 11  # NonMaxSuppression, TopK, ScatterND and Pad in their input-driven forms
INT64_MAX = np.iinfo(np.int64).max
_Threshold = Annotated[float, Min(0, hint="thresholds compare IoUs and confidence scores, which lie in [0, 1]"),
                       Max(1)]

LAYOUT_SHAPES = {
    "yolov8": "[N, 4 + classes, anchors]",
    "yolov5": "[N, anchors, 5 + classes]",
    "boxes": "[N, anchors, 4]",
    "scores": "[N, anchors, classes]",
}


@verified_by(Contract("the raw head outputs equal the original's, and the detections equal a numpy reference NMS "
                      "(reference_detections) of the original's raw outputs", update=lambda *a: _nms_contract(*a)))
def insert_nms(
    model: Model,
    *,
    layout: Literal["yolov8", "yolov5", "boxes_scores"],
    output: str | None = None,
    boxes: str | None = None,
    scores: str | None = None,
    box_format: Literal["cxcywh", "xyxy"] | None = None,
    backend: Literal["onnx", "efficient_nms_trt"] = "onnx",
    iou_threshold: _Threshold = 0.45,
    score_threshold: _Threshold = 0.25,
    max_detections: Annotated[int, Min(1, hint="it is the number of detections kept per image (e.g. 100)")] = 100,
    class_agnostic: bool = False,
    multi_label: bool = True,
    outputs: dict[str, str] | None = None,
    keep_raw: bool = False,
) -> PassResult:
    """Decode a detector head and append NMS, giving fixed-size detection outputs.

    Parameters:
        layout: ``yolov8`` is one tensor [N, 4 + classes, anchors] (cx, cy, w,
            h, class scores; YOLOv8/v11 as Ultralytics exports them);
            ``yolov5`` is one tensor [N, anchors, 5 + classes] (box,
            objectness, class scores; score = objectness x class score);
            ``boxes_scores`` is two tensors, boxes [N, anchors, 4] and scores
            [N, anchors, classes].
        output: the raw head tensor (yolov8, yolov5); default: the model's
            only graph output.
        boxes: the boxes tensor (boxes_scores).
        scores: the scores tensor (boxes_scores).
        box_format: encoding of the raw boxes, ``cxcywh`` (center, size) or
            ``xyxy`` (corners); default cxcywh for yolov8 and yolov5, required
            for boxes_scores.
        backend: ``onnx`` (standard ops, runs anywhere) or
            ``efficient_nms_trt`` (one TensorRT EfficientNMS_TRT plugin node).
        iou_threshold: boxes overlapping a kept box of the same class (any
            class when class_agnostic) with an IoU above this are dropped; 0 to 1.
        score_threshold: candidates need a score above this; 0 to 1.
        max_detections: K, detections kept per image (the outputs' second dimension).
        class_agnostic: suppress across classes (each box takes its best class).
        multi_label: true: an anchor is a candidate under every class whose
            score passes score_threshold (ONNX NonMaxSuppression's and
            TensorRT EfficientNMS's own semantics); false: only under its best
            class (Ultralytics' default, multi_label=False in its
            non_max_suppression), so one object gives at most one detection per
            anchor. Ignored when class_agnostic (which takes the best class).
        outputs: new names of the outputs, by key: num_dets, det_boxes,
            det_scores, det_classes.
        keep_raw: keep the raw tensors as graph outputs too.

    Rules:
        1. Everything is checked before the graph changes: the tensors exist in
           the main graph, their shapes can match the layout (static
           dimensions are checked, symbolic ones accepted), thresholds are in
           [0, 1], max_detections is at least 1, the new output names are free,
           and the model's default opset is 11 or newer.
        2. The head is decoded with Slice/Transpose (and objectness x class
           score for yolov5); inputs that are not float32 are cast to float32.
        3. ``onnx`` backend: ``NonMaxSuppression`` per class (one pass over
           the best class per box when class_agnostic) with
           max_output_boxes_per_class = K, then the K best of all classes per
           image by ``TopK``; ties go to the lower class, then the lower anchor.
           cxcywh boxes are converted to corners after selection.
        4. ``efficient_nms_trt`` backend: one ``EfficientNMS_TRT`` node (default
           domain, plugin_version "1", background_class -1, score_activation 0,
           box_coding 0 for xyxy and 1 for cxcywh) on boxes [N, anchors, 4]
           and scores [N, anchors, classes]. onnxruntime cannot run it;
           TensorRT's ONNX parser loads it as a plugin.
        5. ``multi_label`` (default true, so recipes written before it keep
           their detections, and the backends' own per-class semantics apply):
           with false, every anchor's scores are zeroed except at its best
           class (the first one on ties, as ArgMax and Ultralytics' ``max``
           pick) before NMS, so an anchor can only be detected as its best
           class; NMS then runs per class as in 3 and 4. Set it to false to
           get the detections of Ultralytics' ``predict``.
        6. Both backends produce the same outputs: num_dets [N, 1] int32,
           det_boxes [N, K, 4] float32 (x1, y1, x2, y2), det_scores [N, K]
           float32 and det_classes [N, K] int32, sorted by score, zero after
           num_dets. They are appended to the graph outputs; the raw tensors
           are removed from the graph outputs unless keep_raw is true.

    Example:
        version: 1
        steps:
          - pass: insert_nms
            with:
              layout: boxes_scores
              boxes: boxes
              scores: scores
              box_format: xyxy
              score_threshold: 0.54
              iou_threshold: 0.45
              max_detections: 100

    Reports:
        the added nodes (by the runner); a note with the new outputs and one
        per raw output removed from the graph outputs; details with the
        backend, the output names, the raw tensors and the NMS settings.
    """
    names = _output_names(outputs)
    if box_format is None:
        if layout == "boxes_scores":
            raise PassError("layout boxes_scores needs box_format",
                            hint="set box_format: xyxy (corners) or cxcywh (center, size) "
                                 "to say how the boxes tensor is encoded")
        box_format = "cxcywh"
    if model.opset < MIN_OPSET:
        raise PassError(f"insert_nms needs default opset {MIN_OPSET} or newer; the model has opset {model.opset}",
                        hint="convert the model first (onnx.version_converter, or an opset-conversion step)")
    raw = _find_raw(model, layout, output, boxes, scores)
    _check_names_free(model, names)

    b = GraphBuilder(model.graph, model.opset, "insert_nms")
    # NonMaxSuppression wants scores [N, C, A]; EfficientNMS_TRT wants [N, A, C].
    boxes_t, scores_t = _decode(b, layout, raw, scores_nca=backend == "onnx")
    batch = raw[0].shape[0] if raw[0].shape else None
    k = max_detections
    outs = [gs.Variable(names["num_dets"], np.int32, [batch, 1]),
            gs.Variable(names["det_boxes"], np.float32, [batch, k, 4]),
            gs.Variable(names["det_scores"], np.float32, [batch, k]),
            gs.Variable(names["det_classes"], np.int32, [batch, k])]
    if not multi_label and not class_agnostic:
        scores_t = _best_class_only(b, scores_t, axis=1 if backend == "onnx" else 2)
    if backend == "onnx":
        _onnx_nms(b, boxes_t, scores_t, outs, box_format=box_format, iou=iou_threshold,
                  score=score_threshold, k=k, agnostic=class_agnostic)
    else:
        _trt_nms(b, boxes_t, scores_t, outs, box_format=box_format, iou=iou_threshold,
                 score=score_threshold, k=k, agnostic=class_agnostic)

    result = PassResult()
    raw_outputs = [t for t in model.graph.outputs if any(t is r for r in raw)]
    if not keep_raw and raw_outputs:
        model.graph.outputs = [t for t in model.graph.outputs if not any(t is r for r in raw_outputs)]
        result.notes.append("removed raw graph output(s) " + ", ".join(f"'{t.name}'" for t in raw_outputs))
    model.graph.outputs.extend(outs)
    result.notes.insert(0, "detection outputs: " + ", ".join(
        f"{t.name} {_shape_text(t.shape)} {np.dtype(t.dtype).name}" for t in outs))
    result.details = {"backend": backend, "outputs": dict(names), "raw": [t.name for t in raw], "layout": layout,
                      "box_format": box_format, "iou_threshold": iou_threshold, "score_threshold": score_threshold,
                      "max_detections": k, "class_agnostic": class_agnostic, "multi_label": multi_label,
                      "keep_raw": keep_raw}
    return result


# -- validation ------------------------------------------------------------------------


def _output_names(outputs: dict[str, str] | None) -> dict[str, str]:
    names = {k: k for k in OUTPUT_KEYS}
    for key, value in (outputs or {}).items():
        if key not in names:
            raise PassError(f"'outputs' has no key '{key}'",
                            hint=suggestion_hint(key, OUTPUT_KEYS) or "its keys are: " + ", ".join(OUTPUT_KEYS))
        if not value:
            raise PassError(f"'outputs.{key}' is empty", hint="give the output a name, or leave the key out")
        names[key] = value
    seen: dict[str, str] = {}
    for key, value in names.items():
        if value in seen:
            raise PassError(f"outputs {seen[value]} and {key} are both named '{value}'",
                            hint="give each detection output its own name")
        seen[value] = key
    return names


def _find_raw(model: Model, layout: str, output: str | None, boxes: str | None,
              scores: str | None) -> list[gs.Tensor]:
    """The raw head tensors named by the parameters, checked against the layout."""
    if layout == "boxes_scores":
        if output is not None:
            raise PassError("'output' is for layouts yolov8 and yolov5; layout boxes_scores takes 'boxes' and 'scores'",
                            hint="replace 'output' with 'boxes: <boxes tensor>' and 'scores: <scores tensor>'")
        if boxes is None or scores is None:
            missing = [p for p, v in (("boxes", boxes), ("scores", scores)) if v is None]
            outs = ", ".join(f"'{t.name}'" for t in model.graph.outputs)
            raise PassError(f"layout boxes_scores needs {' and '.join(repr(m) for m in missing)}",
                            hint=f"name the boxes [N, anchors, 4] and scores [N, anchors, classes] tensors; "
                                 f"the graph outputs are {outs}")
        b, s = _tensor(model, boxes, "boxes"), _tensor(model, scores, "scores")
        _check_shape(b, "boxes", _known_shape(model, b))
        _check_shape(s, "scores", _known_shape(model, s))
        for axis, what in ((0, "the batch size"), (1, "the number of anchors")):
            db, ds = _dim(b, axis), _dim(s, axis)
            if isinstance(db, int) and isinstance(ds, int) and db != ds:
                raise PassError(
                    f"dimension {axis} of '{s.name}' is {ds} but dimension {axis} of '{b.name}' is {db}; "
                    f"both are {what}",
                    hint="boxes must be [N, anchors, 4] and scores [N, anchors, classes] for the same anchors")
        return [b, s]
    if boxes is not None or scores is not None:
        raise PassError(f"'boxes' and 'scores' are for layout boxes_scores; layout {layout} takes 'output'",
                        hint=f"name the single raw head tensor with 'output' ({LAYOUT_SHAPES[layout]})")
    if output is None:
        if len(model.graph.outputs) != 1:
            outs = ", ".join(f"'{t.name}'" for t in model.graph.outputs)
            raise PassError(f"layout {layout} needs 'output': the model has {len(model.graph.outputs)} graph outputs",
                            hint=f"name the raw head tensor {LAYOUT_SHAPES[layout]}; the graph outputs are {outs}")
        t = model.graph.outputs[0]
    else:
        t = _tensor(model, output, "output")
    _check_shape(t, layout, _known_shape(model, t))
    return [t]


def _tensor(model: Model, name: str, param: str) -> gs.Tensor:
    tensors = model.graph.tensors()
    t = tensors.get(name)
    if t is not None and isinstance(t, gs.Variable):
        return t
    if t is not None:
        raise PassError(f"{param} '{name}' is a constant, not a tensor the model computes",
                        hint="name the detector head's output tensor")
    for sub in list(walk_graphs(model.graph))[1:]:
        if name in sub.tensors():
            raise PassError(f"{param} '{name}' is inside a subgraph ('{sub.name}'); insert_nms works on "
                            "tensors of the main graph",
                            hint="name the main-graph tensor that carries the head's output "
                                 "(e.g. the output of the If/Loop node)")
    candidates = [t.name for t in model.graph.outputs] + [n for n, t in tensors.items()
                                                          if isinstance(t, gs.Variable)]
    outs = ", ".join(f"'{t.name}'" for t in model.graph.outputs)
    raise PassError(f"{param} '{name}': no tensor of that name in the model",
                    hint=suggestion_hint(name, candidates) or f"the graph outputs are {outs}")


def _dim(t: gs.Tensor, axis: int) -> int | str | None:
    return t.shape[axis] if t.shape is not None and len(t.shape) > axis else None


def _shape_text(shape: Any) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _known_shape(model: Model, t: gs.Tensor) -> list | None:
    """The tensor's declared shape, with dims it leaves symbolic filled in from shape inference.

    The legacy exporter declares detector outputs as [N, Concatboxes_dim_1, ...]:
    without inference, boxes and scores swapped by mistake would pass every check.
    """
    declared = list(t.shape) if t.shape is not None else None
    if declared is not None and all(isinstance(d, int) for d in declared):
        return declared
    vi = infer_value_infos(model)[0].get(t.name)
    if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return declared
    inferred = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    if declared is None or len(declared) != len(inferred):
        return declared if declared is not None else inferred
    return [d if isinstance(d, int) or i is None else i for d, i in zip(declared, inferred)]


def _check_shape(t: gs.Tensor, role: str, shape: list | None) -> None:
    """Refuse a tensor whose rank, dtype or known dimensions cannot match ``role``."""
    expected = LAYOUT_SHAPES[role]
    what = f"a {role} head {expected}" if role in ("yolov8", "yolov5") else f"{role} {expected}"
    where = f"'{t.name}' has shape {_shape_text(shape)}, which cannot be {what}"
    if t.dtype is not None and not np.issubdtype(np.dtype(t.dtype), np.floating):
        what_t = f"a {role} head" if role in ("yolov8", "yolov5") else role
        raise PassError(f"'{t.name}' has dtype {np.dtype(t.dtype).name}; {what_t} must be a float tensor",
                        hint="name the detector's raw float output")
    if shape is None:
        return  # unknown shape: checked by the runtime
    if len(shape) != 3:
        raise PassError(f"{where}: it has {len(shape)} dimensions, expected 3",
                        hint="check 'layout' and the tensor name")
    d1, d2 = shape[1], shape[2]
    static = isinstance(d1, int) and isinstance(d2, int)
    if role == "yolov8":
        if isinstance(d1, int) and d1 < 5:
            raise PassError(f"{where}: dimension 1 is {d1}, expected 4 + the number of classes (5 or more)",
                            hint="check 'layout' and the tensor name")
        if static and d1 > d2:
            raise PassError(
                f"{where}: dimension 1 (4 + classes) is {d1} but dimension 2 (anchors) is only {d2}; "
                f"it looks like [N, anchors, values]",
                hint="heads [N, anchors, 5 + classes] (with objectness) take layout: yolov5; "
                     "separate boxes and scores tensors take layout: boxes_scores")
    elif role == "yolov5":
        if isinstance(d2, int) and d2 < 6:
            raise PassError(f"{where}: dimension 2 is {d2}, expected 5 + the number of classes (6 or more)",
                            hint="check 'layout' and the tensor name")
        if static and d2 > d1:
            raise PassError(
                f"{where}: dimension 2 (5 + classes) is {d2} but dimension 1 (anchors) is only {d1}; "
                f"it looks like [N, values, anchors]",
                hint="for [N, 4 + classes, anchors] heads without objectness use layout: yolov8")
    elif role == "boxes":
        if isinstance(d2, int) and d2 != 4:
            raise PassError(f"{where}: dimension 2 is {d2}, expected 4 (the box coordinates)",
                            hint="check that 'boxes' and 'scores' are not swapped")


def _check_names_free(model: Model, names: dict[str, str]) -> None:
    taken = {t.name for g in walk_graphs(model.graph) for t in g.tensors().values()}
    for key, value in names.items():
        if value in taken:
            hint = f"choose another name with 'outputs: {{{key}: <name>}}'"
            if value == key:
                hint += " (or does the model already end in NMS?)"
            raise PassError(f"cannot name output {key} '{value}': the model already has a tensor of that name",
                            hint=hint)


# -- building ----------------------------------------------------------------------------


def _decode(b: GraphBuilder, layout: str, raw: list[gs.Tensor], scores_nca: bool) -> tuple[gs.Tensor, gs.Tensor]:
    """Boxes [N, A, 4] and scores ([N, C, A] if ``scores_nca`` else [N, A, C]), float32."""
    raw = [t if t.dtype is not None and np.dtype(t.dtype) == np.float32
           else b.op("Cast", [t], {"to": np.float32}, name="cast_float") for t in raw]
    if layout == "yolov8":
        head = raw[0]
        boxes = b.op("Transpose", [b.slice(head, 0, 4, 1, "boxes")], {"perm": [0, 2, 1]}, name="boxes_nac")
        scores, nca = b.slice(head, 4, INT64_MAX, 1, "scores"), True
    elif layout == "yolov5":
        head = raw[0]
        obj = b.slice(head, 4, 5, 2, "objectness")
        cls = b.slice(head, 5, INT64_MAX, 2, "class_scores")
        boxes, scores, nca = b.slice(head, 0, 4, 2, "boxes"), b.op("Mul", [obj, cls], name="scores"), False
    else:
        boxes, scores, nca = raw[0], raw[1], False
    if nca != scores_nca:
        scores = b.op("Transpose", [scores], {"perm": [0, 2, 1]}, name="scores_nca" if scores_nca else "scores_nac")
    return boxes, scores


def _best_class_only(b: GraphBuilder, scores: gs.Tensor, axis: int) -> gs.Tensor:
    """Scores with every class but each anchor's best one (first on ties) set to zero."""
    best = b.op("ArgMax", [scores], {"axis": axis, "keepdims": 1}, name="best_label")
    best_score = b.op("GatherElements", [scores, best], {"axis": axis}, name="best_label_score")
    zeros = b.op("ConstantOfShape", [b.op("Shape", [scores], name="label_scores_shape")],
                 {"value": gs.Constant("", np.zeros([1], np.float32))}, name="label_zeros")
    return b.op("ScatterElements", [zeros, best, best_score], {"axis": axis}, name="best_label_only")


def _onnx_nms(b: GraphBuilder, boxes: gs.Tensor, scores: gs.Tensor, outs: list[gs.Variable], *,
              box_format: str, iou: float, score: float, k: int, agnostic: bool) -> None:
    num_dets, det_boxes, det_scores, det_classes = outs
    if agnostic:
        best = b.op("ArgMax", [scores], {"axis": 1, "keepdims": 1}, name="best_class")  # [N, 1, A]
        scores = b.op("GatherElements", [scores, best], {"axis": 1}, name="best_score")
    selected = b.op("NonMaxSuppression", [
        boxes, scores,
        b.const("max_output_boxes_per_class", [k], np.int64),
        b.const("iou_threshold", [iou], np.float32),
        b.const("score_threshold", [score], np.float32),
    ], {"center_point_box": int(box_format == "cxcywh")}, name="NonMaxSuppression")  # [M, 3]
    kept = b.op("GatherND", [scores, selected], name="kept_scores")  # [M]
    zeros = b.op("ConstantOfShape", [b.op("Shape", [scores], name="scores_shape")],
                 {"value": gs.Constant("", np.zeros([1], np.float32))}, name="zeros")
    dense = b.op("ScatterND", [zeros, selected, kept], name="kept_dense")  # [N, C, A], 0 where dropped
    flat = b.op("Reshape", [dense, b.const("flat_shape", [0, -1], np.int64)], name="kept_flat")
    # K trailing zeros: TopK always has K candidates, however few boxes survive.
    padded = b.op("Pad", [flat, b.const("pads", [0, 0, 0, k], np.int64)], name="kept_padded")
    # Scores of the slots after the detections are padding zeros: they are det_scores as they are.
    top_index = gs.Variable(b.name("TopK_indices"))
    b.op("TopK", [padded, b.const("k", [k], np.int64)], {"axis": 1, "largest": 1, "sorted": 1},
         [det_scores, top_index], name="TopK")
    valid = b.op("Greater", [det_scores, b.const("zero", 0.0, np.float32)], name="valid")  # [N, K]
    anchors = b.op("Gather", [b.op("Shape", [boxes], name="boxes_shape"), b.const("anchor_axis", [1], np.int64)],
                   {"axis": 0}, name="num_anchors")
    anchor = b.op("Mod", [top_index, anchors], name="anchor")
    if agnostic:
        best_flat = b.op("Reshape", [best, b.const("best_shape", [0, -1], np.int64)], name="best_class_flat")
        cls = b.op("GatherElements", [best_flat, anchor], {"axis": 1}, name="class")
    else:
        cls = b.op("Div", [top_index, anchors], name="class")
    cls = b.op("Where", [valid, cls, b.const("zero_class", 0, np.int64)], name="class_valid")
    b.op("Cast", [cls], {"to": np.int32}, outputs=[det_classes], name="det_classes")
    b.reduce_sum(b.op("Cast", [valid], {"to": np.int32}, name="valid_int"), 1, "num_dets", [num_dets])
    index = b.op("Expand", [b.op("Reshape", [anchor, b.const("anchor_shape", [0, 0, 1], np.int64)],
                                 name="anchor_3d"),
                            b.const("box_expand", [1, 1, 4], np.int64)], name="box_index")  # [N, K, 4]
    picked = b.op("GatherElements", [boxes, index], {"axis": 1}, name="picked_boxes")
    if box_format == "cxcywh":
        center = b.slice(picked, 0, 2, 2, "center")
        half = b.op("Mul", [b.slice(picked, 2, 4, 2, "size"), b.const("half", 0.5, np.float32)], name="half_size")
        picked = b.op("Concat", [b.op("Sub", [center, half], name="top_left"),
                                 b.op("Add", [center, half], name="bottom_right")], {"axis": 2}, name="corners")
    valid_3d = b.op("Reshape", [valid, b.const("valid_shape", [0, 0, 1], np.int64)], name="valid_3d")
    b.op("Where", [valid_3d, picked, b.const("zero_box", 0.0, np.float32)], outputs=[det_boxes], name="det_boxes")


def _trt_nms(b: GraphBuilder, boxes: gs.Tensor, scores: gs.Tensor, outs: list[gs.Variable], *,
             box_format: str, iou: float, score: float, k: int, agnostic: bool) -> None:
    attrs = {
        # TensorRT's plugin reads its fields from these attributes (efficientNMSPlugin README).
        "score_threshold": float(score),
        "iou_threshold": float(iou),
        "max_output_boxes": int(k),
        "background_class": -1,
        "score_activation": 0,
        "class_agnostic": int(agnostic),
        "box_coding": int(box_format == "cxcywh"),
        "plugin_version": "1",
    }
    b.op("EfficientNMS_TRT", [boxes, scores], attrs, outs)


# -- the reference, for verification ----------------------------------------------------------


def reference_detections(raw: list[np.ndarray], *, layout: str, box_format: str, iou_threshold: float,
                         score_threshold: float, max_detections: int, class_agnostic: bool,
                         multi_label: bool) -> dict[str, np.ndarray]:
    """The four outputs insert_nms computes, in numpy, from the raw head arrays (the contract's reference).

    Follows onnxruntime's NonMaxSuppression: a candidate needs score > score_threshold;
    per class, candidates by descending score (ties: lower anchor) are kept unless their
    IoU with a kept box is > iou_threshold (float32 arithmetic, corners normalized for
    xyxy, boxes of non-positive area never suppress), at most K per class; then the K
    best of all classes (ties: lower class, then lower anchor), padded with zeros.
    """
    arrays = [np.asarray(r).astype(np.float32) for r in raw]
    if layout == "yolov8":
        boxes, scores = arrays[0][:, :4, :].transpose(0, 2, 1), arrays[0][:, 4:, :].transpose(0, 2, 1)
    elif layout == "yolov5":
        boxes, scores = arrays[0][:, :, :4], arrays[0][:, :, 4:5] * arrays[0][:, :, 5:]
    else:
        boxes, scores = arrays[0], arrays[1]
    n, k = boxes.shape[0], max_detections
    num = np.zeros((n, 1), np.int32)
    det_boxes = np.zeros((n, k, 4), np.float32)
    det_scores = np.zeros((n, k), np.float32)
    det_classes = np.zeros((n, k), np.int32)
    for i in range(n):
        img_scores = scores[i]  # [A, C]
        best = img_scores.argmax(axis=1)
        if class_agnostic:
            per_class = [(best, img_scores.max(axis=1))]
        else:
            if not multi_label:
                only = np.zeros_like(img_scores)
                rows = np.arange(len(best))
                only[rows, best] = img_scores[rows, best]
                img_scores = only
            per_class = [(np.full(len(best), c), img_scores[:, c]) for c in range(img_scores.shape[1])]
        found = []  # (score, class, anchor)
        for labels, class_scores in per_class:
            for a in _greedy(boxes[i], class_scores, box_format, iou_threshold, score_threshold, k):
                found.append((class_scores[a], int(labels[a]), a))
        found.sort(key=lambda f: (-f[0], f[1], f[2]))
        found = found[:k]
        num[i, 0] = len(found)
        for j, (score, label, a) in enumerate(found):
            box = boxes[i, a]
            if box_format == "cxcywh":
                half = box[2:] * np.float32(0.5)
                box = np.concatenate([box[:2] - half, box[:2] + half])
            det_boxes[i, j], det_scores[i, j], det_classes[i, j] = box, score, label
    return {"num_dets": num, "det_boxes": det_boxes, "det_scores": det_scores, "det_classes": det_classes}


def _greedy(boxes: np.ndarray, scores: np.ndarray, box_format: str, iou: float, threshold: float,
            keep: int) -> list[int]:
    """Greedy NMS of one class as onnxruntime runs it; indices kept, best first."""
    candidates = np.flatnonzero(scores > np.float32(threshold))
    order = candidates[np.lexsort((candidates, -scores[candidates]))]
    if box_format == "cxcywh":
        half = boxes[:, 2:] / np.float32(2)
        lo, hi = boxes[:, :2] - half, boxes[:, :2] + half
    else:
        lo = np.minimum(boxes[:, :2], boxes[:, 2:])
        hi = np.maximum(boxes[:, :2], boxes[:, 2:])
    area = (hi[:, 0] - lo[:, 0]) * (hi[:, 1] - lo[:, 1])
    kept: list[int] = []
    for a in order:
        if len(kept) == keep:
            break
        if kept:
            ks = np.asarray(kept)
            inter_lo, inter_hi = np.maximum(lo[ks], lo[a]), np.minimum(hi[ks], hi[a])
            size = np.maximum(inter_hi - inter_lo, np.float32(0))
            inter = size[:, 0] * size[:, 1]
            union = area[ks] + area[a] - inter
            with np.errstate(divide="ignore", invalid="ignore"):
                suppress = (inter > 0) & (area[ks] > 0) & (area[a] > 0) & (union > 0) & (inter / union > iou)
            if suppress.any():
                continue
        kept.append(int(a))
    return kept


def _nms_contract(plan: Correspondence, report: StepReport, model: Model) -> None:
    d = report.details
    raw_exprs = [plan.expr(name) for name in d["raw"]]
    names = d["outputs"]
    if any(e is None for e in raw_exprs):
        for key in OUTPUT_KEYS:
            plan.exprs[names[key]] = None
        return
    for name in d["raw"]:
        plan.extra.setdefault(name, "the raw head output insert_nms reads")
    if d["backend"] != "onnx":
        for key in OUTPUT_KEYS:
            plan.skipped[names[key]] = "computed by the TensorRT plugin EfficientNMS_TRT, which onnxruntime " \
                                       "cannot run (the raw head outputs it reads are compared)"
        return
    options = {k: d[k] for k in ("layout", "box_format", "iou_threshold", "score_threshold", "max_detections",
                                 "class_agnostic", "multi_label")}
    reference = Derived(lambda *raw: reference_detections(list(raw), **options),
                        tuple(e for e in raw_exprs if e is not None),
                        "reference NMS of " + ", ".join(e.describe() for e in raw_exprs if e is not None))
    for key in OUTPUT_KEYS:
        plan.exprs[names[key]] = Pick(reference, key)


__all__ = ["insert_nms", "OUTPUT_KEYS", "reference_detections"]
