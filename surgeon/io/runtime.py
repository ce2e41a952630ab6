"""onnxruntime, opened one way for every part of surgeon that runs a model.

Verification, constant folding, ``to_fp16``'s activation run and the
contracts of ``insert_node`` and ``merge`` all run models on the CPU. Each
session here is quiet (onnxruntime's own log lines never reach the terminal:
surgeon reports failures itself) and, by default, has no memory arena (one
run needs none, and an arena keeps and rounds up what a large run allocated
after the session is gone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from surgeon.errors import SurgeonError

OPTIMIZATION = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "all": "ORT_ENABLE_ALL"}


def cpu_session(source: str | Path | bytes, *, optimization: Literal["none", "basic", "all"] = "none",
                arena: bool = False, weights_folder: str | Path | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for a model file or serialized model.

    ``optimization``: "none" (the default) runs the graph as written, so an optimization
    can neither hide a difference nor create one. ``weights_folder``: where external
    weights are, for a serialized model that names them.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION[optimization])
    if weights_folder is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(weights_folder))
    return ort.InferenceSession(str(source) if isinstance(source, Path) else source, options,
                                providers=["CPUExecutionProvider"])


def load_arrays(path: str | Path, what: str, missing_hint: str) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file, by name; ``what`` names them in errors ("verification inputs")."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise SurgeonError(f"{what} not found: {path}", hint=missing_hint) from None
    except Exception as exc:  # numpy raises ValueError, OSError, BadZipFile... for a bad file
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise SurgeonError(f"cannot read {what} {path}: {text if len(text) < 300 else text[:297] + '...'}",
                           hint="save them with numpy.savez(path, input_name=array, ...)") from None
