"""What kind of op a node runs (ONNX's own, or a plugin op hiding in the
default domain) and which default-opset version an import list declares:
the questions the saver, the opset converter and the inliner all ask."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import onnx.defs

DEFAULT_DOMAINS = ("", "ai.onnx")
"""The two spellings of ONNX's own (default) domain."""


def is_plugin_op(domain: str | None, op: str, local_functions: Collection[str] = ()) -> bool:
    """A default-domain op that ONNX does not define and no local function named ``op`` provides.

    TensorRT finds plugins (``EfficientNMS_TRT``...) by op name alone, so
    exporters leave them in the default domain, where onnx's checker and
    converter have no schema for them. ``local_functions``: names of the
    model's local functions, when a call of one should not count as a plugin.
    """
    return (domain or "") in DEFAULT_DOMAINS and op not in local_functions and not onnx.defs.has(op)


ONNXRUNTIME_DOMAINS = ("com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc", "ai.onnx.ml",
                       "ai.onnx.training", "ai.onnx.preview.training")
"""Domains whose ops onnxruntime itself implements (beside ONNX's default one)."""


def is_foreign_op(domain: str | None, op: str, local_functions: Collection[tuple[str, str]] = ()) -> bool:
    """An op that neither ONNX, onnxruntime's own domains nor a local function of the model defines.

    Only the runtime it was written for runs it: a TensorRT plugin (``FeedForward_TRT``,
    often in the default domain), a custom op (``devtech::FooOp``) from a library
    onnxruntime does not load. ``local_functions``: ``(domain, name)`` of the model's
    local functions (onnxruntime inlines those).
    """
    domain = domain or ""
    if (domain, op) in local_functions:
        return False
    if domain in DEFAULT_DOMAINS or domain == "ai.onnx.ml":
        return not onnx.defs.has(op, "" if domain in DEFAULT_DOMAINS else domain)
    return domain not in ONNXRUNTIME_DOMAINS


def default_opset(imports: Iterable) -> int | None:
    """The version of the default domain among opset imports (``OperatorSetIdProto``s), or None."""
    return next((o.version for o in imports if o.domain in DEFAULT_DOMAINS), None)
