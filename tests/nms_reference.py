"""A plain numpy reference for insert_nms: decode a detector head, greedy NMS, top K.

Written to be obviously correct, not fast: one Python loop per candidate box.
Semantics follow the ONNX NonMaxSuppression spec as onnxruntime implements it:
a candidate needs ``score > score_threshold``; candidates are visited by
descending score (ties: lower anchor first); a candidate is dropped when its
IoU with an already kept box of the same class is ``> iou_threshold``; at most
K boxes are kept per class. The detections of all classes are then ranked by
score (ties: lower class, then lower anchor) and the first K are returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    """The detections of one image, best first."""

    boxes: np.ndarray    # [n, 4] x1, y1, x2, y2
    scores: np.ndarray   # [n]
    classes: np.ndarray  # [n]


def split_head(layout: str, raw: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Raw head outputs -> boxes [N, A, 4] as encoded in the head, and scores [N, A, C]."""
    if layout == "yolov8":
        (head,) = raw
        return head[:, :4, :].transpose(0, 2, 1), head[:, 4:, :].transpose(0, 2, 1)
    if layout == "yolov5":
        (head,) = raw
        return head[:, :, :4], head[:, :, 4:5] * head[:, :, 5:]
    boxes, scores = raw
    return boxes, scores


def decode(layout: str, raw: list[np.ndarray], box_format: str = "cxcywh") -> tuple[np.ndarray, np.ndarray]:
    """Raw head outputs -> boxes [N, A, 4] as corners (x1, y1, x2, y2) and scores [N, A, C], float32."""
    boxes, scores = split_head(layout, [r.astype(np.float32) for r in raw])
    if box_format == "cxcywh":
        center, half = boxes[..., :2], boxes[..., 2:] * np.float32(0.5)
        boxes = np.concatenate([center - half, center + half], axis=-1)
    return boxes, scores


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over union of one corner box with each of ``others`` [n, 4] (float64)."""
    box, others = box.astype(np.float64), others.astype(np.float64).reshape(-1, 4)
    inter_w = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    inter_h = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.where((inter_w > 0) & (inter_h > 0), inter_w * inter_h, 0.0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / (area + areas - inter)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, score_threshold: float,
               max_keep: int) -> list[int]:
    """Indices of the boxes kept by greedy NMS over one class, best first."""
    candidates = [i for i in range(len(scores)) if scores[i] > np.float32(score_threshold)]
    candidates.sort(key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in candidates:
        if len(kept) == max_keep:
            break
        if not kept or np.all(iou(boxes[i], boxes[kept]) <= iou_threshold):
            kept.append(i)
    return kept


def reference_nms(boxes: np.ndarray, scores: np.ndarray, *, iou_threshold: float, score_threshold: float,
                  max_detections: int, class_agnostic: bool = False, multi_label: bool = True) -> list[Detections]:
    """Per image: detections from corner boxes [N, A, 4] and scores [N, A, C].

    ``multi_label=False``: an anchor is a candidate only under its best class (first on ties),
    as Ultralytics' non_max_suppression(multi_label=False) does."""
    result = []
    for img_boxes, img_scores in zip(boxes, scores):
        if not multi_label and not class_agnostic:
            best = [int(np.argmax(row)) for row in img_scores]
            img_scores = np.array([[row[c] if c == b else 0.0 for c in range(len(row))]
                                   for row, b in zip(img_scores, best)], np.float32).reshape(img_scores.shape)
        found = []  # (score, class, anchor)
        if class_agnostic:
            best = img_scores.argmax(axis=1)
            best_scores = img_scores.max(axis=1)
            for a in greedy_nms(img_boxes, best_scores, iou_threshold, score_threshold, max_detections):
                found.append((best_scores[a], int(best[a]), a))
        else:
            for c in range(img_scores.shape[1]):
                for a in greedy_nms(img_boxes, img_scores[:, c], iou_threshold, score_threshold, max_detections):
                    found.append((img_scores[a, c], c, a))
        found.sort(key=lambda f: (-f[0], f[1], f[2]))
        found = found[:max_detections]
        result.append(Detections(
            boxes=np.array([img_boxes[a] for _, _, a in found], np.float32).reshape(-1, 4),
            scores=np.array([s for s, _, _ in found], np.float32),
            classes=np.array([c for _, c, _ in found], np.int64),
        ))
    return result


def assert_same_detections(outputs: dict[str, np.ndarray], expected: list[Detections], k: int,
                           names: dict[str, str] | None = None) -> None:
    """The four insert_nms outputs match the reference, image by image; padding is zero."""
    names = {key: key for key in ("num_dets", "det_boxes", "det_scores", "det_classes")} | (names or {})
    num, boxes = outputs[names["num_dets"]], outputs[names["det_boxes"]]
    scores, classes = outputs[names["det_scores"]], outputs[names["det_classes"]]
    n_images = len(expected)
    assert num.shape == (n_images, 1) and num.dtype == np.int32
    assert boxes.shape == (n_images, k, 4) and boxes.dtype == np.float32
    assert scores.shape == (n_images, k) and scores.dtype == np.float32
    assert classes.shape == (n_images, k) and classes.dtype == np.int32
    for i, want in enumerate(expected):
        n = len(want.scores)
        assert num[i, 0] == n, f"image {i}: {num[i, 0]} detections, the reference has {n}"
        np.testing.assert_array_equal(classes[i, :n], want.classes, err_msg=f"image {i}: classes")
        np.testing.assert_allclose(scores[i, :n], want.scores, rtol=1e-6, atol=1e-6, err_msg=f"image {i}: scores")
        np.testing.assert_allclose(boxes[i, :n], want.boxes, rtol=1e-5, atol=1e-4, err_msg=f"image {i}: boxes")
        assert not boxes[i, n:].any() and not scores[i, n:].any() and not classes[i, n:].any(), \
            f"image {i}: padding after {n} detections is not zero"
