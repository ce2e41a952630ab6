"""add_preprocess: accept camera/decoder images (uint8, NHWC, BGR) at a model's float input."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnx_graphsurgeon as gs

from surgeon.errors import PassError, suggestion_hint
from surgeon.graph.builder import GraphBuilder
from surgeon.graph.constants import DTYPES
from surgeon.graph.correspondence import Correspondence
from surgeon.io.model import Model
from surgeon.passes.contract import Contract, verified_by
from surgeon.passes.result import PassResult

if TYPE_CHECKING:
    from surgeon.passes.runner import StepReport


def preprocess_reference(x: np.ndarray, *, layout: str, channel_order: str, scale: float,
                         mean: list[float] | None, std: list[float] | None, model_dtype: str) -> np.ndarray:
    """What the inserted nodes compute, in numpy: the model's old input from the new one (Rule 1)."""
    dtype = np.dtype(model_dtype)
    y = np.asarray(x).astype(dtype)
    if layout == "NHWC":
        y = y.transpose(0, 3, 1, 2)
    if channel_order == "BGR":
        y = y[:, ::-1]
    if scale != 1.0:
        y = y * np.asarray(scale, dtype)
    if mean is not None:
        y = y - np.asarray(_per_channel(mean), dtype)
    if std is not None:
        y = y / np.asarray(_per_channel(std), dtype)
    return np.ascontiguousarray(y, dtype)


def _preprocess_contract(plan: Correspondence, report: StepReport, model: Model) -> None:
    d = report.details
    options = {k: d[k] for k in ("layout", "channel_order", "scale", "mean", "std", "model_dtype")}
    what = (f"{d['dtype']} {d['layout']} {d['channel_order']} -> NCHW RGB {d['model_dtype']}"
            + (f" x {d['scale']:g}" if d["scale"] != 1.0 else "")
            + (f" - mean {d['mean']}" if d["mean"] is not None else "")
            + (f" / std {d['std']}" if d["std"] is not None else ""))
    # The old input now lives on as '<input>_preprocessed' (the runner followed that rename).
    previous = plan.feed(report.tensors_renamed.get(d["input"], d["input"]))
    plan.inputs[d["input"]] = previous.then(lambda x: preprocess_reference(x, **options), what)


@verified_by(Contract("the original is fed the new input preprocessed in numpy exactly as the inserted nodes "
                      "do (preprocess_reference); outputs equal at the dtype's tolerances",
                      update=_preprocess_contract))
def add_preprocess(
    model: Model,
    *,
    input: str | None = None,
    dtype: Literal["uint8", "float16", "float32"] = "uint8",
    layout: Literal["NCHW", "NHWC"] = "NHWC",
    channel_order: Literal["RGB", "BGR"] = "RGB",
    scale: float = 1.0,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> PassResult:
    """Make a float NCHW RGB image input take raw images (e.g. uint8 NHWC BGR), preprocessing in the graph.

    Parameters:
        input: the model's image input [N, C, H, W]; default: its only graph input.
        dtype: dtype of the new graph input (uint8 for decoded camera frames).
        layout: layout of the new graph input; the model itself stays NCHW.
        channel_order: channel order of the new input; BGR is flipped to the
            model's RGB (needs 3 channels).
        scale: factor applied after the cast, e.g. 0.00392156862 (1/255).
        mean: per-channel (or one) value subtracted after scaling.
        std: per-channel (or one) value divided by last.

    Rules:
        1. The model computes on ``(cast(x) * scale - mean) / std`` of the new
           input ``x`` after it is transposed to NCHW and, for BGR, its channels
           reversed: Cast, Transpose, Gather (channel flip), Mul, Sub and Div
           are inserted in that order, each only when it does something.
        2. The graph input keeps its name; it gets the new dtype and, for
           NHWC, the shape [N, H, W, C] with symbolic dimensions kept. The old
           input tensor becomes an internal tensor named ``<input>_preprocessed``
           (or a free variant), read by the same nodes as before, in subgraphs too.
        3. Arithmetic runs in the model input's float dtype.
        4. Everything is checked first: the input exists and is a float rank-4
           input, mean and std have one value or one per channel, std has no
           zero, scale is finite and not zero, and the parameters change
           something (otherwise the step is an error, not a silent no-op).

    Example:
        version: 1
        steps:
          - pass: add_preprocess
            with:
              input: images
              dtype: uint8
              layout: NHWC
              channel_order: BGR
              scale: 0.00392156862
              mean: [0.485, 0.456, 0.406]
              std: [0.229, 0.224, 0.225]

    Reports:
        the added nodes (by the runner); a note with the new input's dtype and shape.
    """
    old = _find_input(model, input)
    _check(old, dtype, layout, channel_order, scale, mean, std)
    model_dtype = np.dtype(old.dtype)
    shape = list(old.shape) if old.shape is not None else None

    b = GraphBuilder(model.graph, model.opset, f"add_preprocess/{old.name}", at_front=True)
    name = old.name
    new_shape = None
    if shape is not None:
        new_shape = [shape[0], shape[2], shape[3], shape[1]] if layout == "NHWC" else shape
    new = gs.Variable(name, DTYPES[dtype].np, new_shape)
    old.name = b.free(f"{name}_preprocessed")

    x: gs.Tensor = new
    steps: list[tuple[str, list, dict]] = []
    if DTYPES[dtype].np != model_dtype:
        steps.append(("Cast", [], {"to": model_dtype.type}))
    if layout == "NHWC":
        steps.append(("Transpose", [], {"perm": [0, 3, 1, 2]}))
    if channel_order == "BGR":
        steps.append(("Gather", [b.const("bgr_to_rgb", [2, 1, 0], np.int64)], {"axis": 1}))
    if scale != 1.0:
        steps.append(("Mul", [b.const("scale", scale, model_dtype)], {}))
    if mean is not None:
        steps.append(("Sub", [b.const("mean", _per_channel(mean), model_dtype)], {}))
    if std is not None:
        steps.append(("Div", [b.const("std", _per_channel(std), model_dtype)], {}))
    for i, (op, extra, attrs) in enumerate(steps):
        last = i == len(steps) - 1
        x = b.op(op, [x, *extra], attrs, [old] if last else 1)
    model.graph.inputs = [new if t is old else t for t in model.graph.inputs]
    shape_text = "[" + ", ".join("?" if d is None else str(d) for d in new_shape) + "]" if new_shape else "[?]"
    return PassResult(notes=[f"input '{name}' is now {dtype} {shape_text} ({layout}, {channel_order})"],
                      details={"input": name, "dtype": dtype, "layout": layout, "channel_order": channel_order,
                               "scale": scale, "mean": mean, "std": std, "model_dtype": model_dtype.name})


def _find_input(model: Model, name: str | None) -> gs.Variable:
    inputs = model.graph.inputs
    names = [t.name for t in inputs]
    if name is None:
        if len(inputs) != 1:
            raise PassError(f"add_preprocess needs 'input': the model has {len(inputs)} graph inputs",
                            hint="name the image input; the graph inputs are " + ", ".join(f"'{n}'" for n in names))
        return inputs[0]
    for t in inputs:
        if t.name == name:
            return t
    if name in model.graph.tensors():
        raise PassError(f"input '{name}' is not a graph input of the model",
                        hint="add_preprocess changes a graph input; the graph inputs are "
                             + ", ".join(f"'{n}'" for n in names))
    raise PassError(f"input '{name}': the model has no graph input of that name",
                    hint=suggestion_hint(name, names) or "the graph inputs are " + ", ".join(f"'{n}'" for n in names))


def _check(old: gs.Variable, dtype: str, layout: str, channel_order: str, scale: float,
           mean: list[float] | None, std: list[float] | None) -> None:
    if old.dtype is None or not np.issubdtype(np.dtype(old.dtype), np.floating):
        got = "no dtype" if old.dtype is None else f"dtype {np.dtype(old.dtype).name}"
        raise PassError(f"input '{old.name}' has {got}; add_preprocess feeds a float image input",
                        hint="the model must take a float image [N, C, H, W]")
    if old.shape is not None and len(old.shape) != 4:
        raise PassError(f"input '{old.name}' has {len(old.shape)} dimensions; add_preprocess expects an image "
                        "input [N, C, H, W]",
                        hint="name the model's image input")
    channels = old.shape[1] if old.shape is not None else None
    if not math.isfinite(scale) or scale == 0:
        raise PassError(f"scale must be a finite, non-zero number, got {scale}",
                        hint="for uint8 images in [0, 255] use 0.00392156862 (1/255)")
    for pname, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        if isinstance(channels, int) and len(values) not in (1, channels):
            raise PassError(f"{pname} has {len(values)} values but input '{old.name}' has {channels} channels",
                            hint="give one value per channel, or a single value for all")
        if not values or not all(math.isfinite(v) for v in values):
            raise PassError(f"{pname} must be a list of finite numbers, got {values}")
    if std is not None and any(v == 0 for v in std):
        raise PassError(f"std has a zero ({std}): the input would be divided by zero",
                        hint="std values are standard deviations, e.g. [0.229, 0.224, 0.225]")
    if channel_order == "BGR" and isinstance(channels, int) and channels != 3:
        raise PassError(f"channel_order BGR needs 3 channels, but input '{old.name}' has {channels}",
                        hint="use channel_order: RGB for inputs that are not 3-channel color images")
    if (DTYPES[dtype].np == np.dtype(old.dtype) and layout == "NCHW" and channel_order == "RGB"
            and scale == 1.0 and mean is None and std is None):
        raise PassError(f"add_preprocess would not change input '{old.name}': it is already "
                        f"{dtype} NCHW RGB and no scale, mean or std is given",
                        hint="set dtype (e.g. uint8), layout: NHWC, channel_order: BGR, scale, mean or std")


def _per_channel(values: list[float]) -> list:
    """[C] values as [C, 1, 1], to broadcast over the channels of an NCHW image."""
    return [[[v]] for v in values]
