"""Sample inputs for a model, and one onnxruntime run that measures its intermediate tensors.

``to_fp16`` keeps in float32 the nodes whose values float16 cannot hold; for
activations it needs their magnitudes on real-looking inputs. onnxruntime
exposes intermediate tensors only in a debug build (an environment switch),
so :func:`activation_peaks` exports the graph, lists the tensors it wants as
extra graph outputs and runs it once.

The weights are never copied for the run: external weights stay in their
files and onnxruntime reads them from the model's folder
(``session.model_external_initializers_file_folder_path``); in-memory weights
go into the exported protobuf, as they would to save. onnxruntime holds every
exposed tensor of the run at once, so the run costs about the model's weights
(1.2x on a chain of MatMuls with 256 MiB of external weights, 1.5x when each
weight is transposed first) plus all its activations for one input.

Sample inputs come from :mod:`surgeon.io.samples`, the same synthesis verification uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from surgeon.errors import SurgeonError
from surgeon.graph.ops import drop_foreign_nodes, proto_node_label
from surgeon.io import samples
from surgeon.io.model import Model
from surgeon.io.runtime import cpu_session, load_arrays

ACTIVATION_BATCH = 1
"""A symbolic batch dim gets 1 here: the run measures magnitudes, which a larger batch does not change
much, and it holds every exposed tensor at once."""


class ActivationRunError(SurgeonError):
    """The float32 model could not be run on the sample inputs."""


def load_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file, by name."""
    return load_arrays(path, "sample inputs", "check the path of the .npz file")


def activation_peaks(model: Model, names: Iterable[str], feeds: dict[str, np.ndarray] | None = None
                     ) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
    """Largest finite magnitude of each tensor in ``names`` (tensors of the main graph) when onnxruntime
    runs ``model`` on ``feeds``, the feeds used, and the ops onnxruntime cannot run (a custom op, a
    TensorRT plugin: labels; the run stops at them, so nothing computed from them is measured).
    Without ``feeds``, :mod:`surgeon.io.samples` makes them (as verification does, with a batch of 1),
    trying image sizes in turn until the model runs. Tensors that are not float, or hold no finite
    value, are left out. Raises :class:`ActivationRunError` when onnxruntime cannot load or run the model."""
    import onnxruntime as ort

    from surgeon.io.export import to_proto

    names = list(dict.fromkeys(names))
    proto = to_proto(model)
    # A custom op or TensorRT plugin has no kernel here: the part of the graph before it still runs.
    skipped = drop_foreign_nodes(proto)
    computed = {t for n in proto.graph.node for t in n.output if t}
    graph_inputs = {i.name for i in proto.graph.input}
    declared = {o.name for o in proto.graph.output}
    wanted = [n for n in names if n not in graph_inputs and (not skipped or n in computed)]
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in declared)
    specs = samples.input_specs(proto)
    # Basic optimizations fold what is computed from weights alone (a Transpose of each weight) once, at load,
    # instead of holding a copy per node at run time (1.5x instead of 2x the weights on tests/test_memory.py's
    # transposed MatMul chain); exposed tensors are graph outputs, which no optimization removes or changes.
    try:
        session = cpu_session(proto.SerializeToString(), optimization="basic", weights_folder=model.base_dir)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/NotImplemented types
        raise ActivationRunError(f"onnxruntime cannot load the float32 model: {_short(exc)}",
                                 hint="onnxruntime cannot run custom ops without their library") from None
    del proto
    known = {i.name for i in session.get_inputs()}
    run_options = ort.RunOptions()
    run_options.log_severity_level = 4
    tries = [feeds] if feeds is not None else [
        samples.sample_feeds(specs, samples.resolve_dims(specs, batch=ACTIVATION_BATCH, image_size=size),
                             image_size=size)
        for size in _image_sizes(specs)]
    failure = ""
    for tried in tries:
        missing = sorted(known - set(tried))
        if missing:
            raise ActivationRunError(f"the sample inputs have no array for input(s) {', '.join(missing)}",
                                     hint="the .npz file must hold every graph input, by name: "
                                          + ", ".join(sorted(known)))
        try:
            values = session.run(wanted, {k: v for k, v in tried.items() if k in known}, run_options)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException types
            shapes = ", ".join(f"{k} {list(np.shape(v))}" for k, v in tried.items())
            failure = failure or f"({shapes}): {_short(exc)}"
            continue
        peaks = {name: _peak(v) for name, v in zip(wanted, values)}
        peaks.update({k: _peak(v) for k, v in tried.items() if k in set(names)})
        return {k: v for k, v in peaks.items() if v is not None}, tried, [proto_node_label(n) for n in skipped]
    raise ActivationRunError(f"onnxruntime cannot run the float32 model on the sample inputs {failure}",
                             hint="give sample inputs the model accepts as a .npz file (inputs: <file.npz>)")


def _image_sizes(specs: list[samples.InputSpec]) -> list[int]:
    """The image sizes to try in turn when an image-like input has a symbolic height or width, else one."""
    symbolic = any(s.image_like and s.shape is not None and not all(isinstance(d, int) for d in s.shape[2:])
                   for s in specs)
    return list(samples.IMAGE_SIZES[:3]) if symbolic else [samples.IMAGE_SIZE]


def _peak(value: Any) -> float | None:
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.size == 0:
        return None
    magnitude = np.abs(value, dtype=np.float32)
    finite = np.isfinite(magnitude)
    if not finite.all():
        magnitude = magnitude[finite]
    return float(magnitude.max()) if magnitude.size else None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."
