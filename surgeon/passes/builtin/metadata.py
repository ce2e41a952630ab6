"""set_metadata: edit the model-level fields that describe a model (producer, version, metadata_props)."""

from __future__ import annotations

from typing import Annotated

from surgeon.errors import PassError, suggestion_hint
from surgeon.io.model import Model
from surgeon.passes.contract import EQUAL, verified_by
from surgeon.passes.result import PassResult
from surgeon.passes.spec import Max, Min

INT64_MAX = 2**63 - 1


@verified_by(EQUAL)
def set_metadata(model: Model, *, producer_name: str | None = None, producer_version: str | None = None,
                 doc_string: str | None = None,
                 model_version: Annotated[int, Min(0), Max(INT64_MAX)] | None = None, domain: str | None = None,
                 props: dict[str, str] | None = None, remove: list[str] | None = None,
                 allow_missing: bool = False) -> PassResult:
    """Set or remove model-level metadata: producer, version, doc string, ``metadata_props``.

    Parameters:
        producer_name: tool that produced the model (ModelProto.producer_name).
        producer_version: version of that tool.
        doc_string: the model's doc string ("" clears it).
        model_version: the model's own version number (an integer, 0 or more).
        domain: the model's domain, a reverse-DNS name such as com.example.
        props: metadata_props entries to add or overwrite, key: value (both
            strings; quote values such as '1.10' that YAML would read as numbers).
        remove: metadata_props keys to delete.
        allow_missing: a key in ``remove`` that the model does not have is
            not an error.

    Rules:
        1. Only the fields given change; every other model field, the graph,
           the weights and the functions stay exactly as they were.
        2. ``props`` keeps the existing order of the keys it overwrites and
           appends new keys in the order written.
        3. Removing a key the model does not have is an error with the closest
           existing keys (a recipe written for another export of the model
           should not silently do nothing), unless ``allow_missing``.
        4. A key both set in ``props`` and listed in ``remove``, an empty key,
           and a step that gives no field at all are errors.
        5. Setting a field to the value it already has is allowed and changes
           nothing (the step is idempotent).

    Example:
        version: 1
        steps:
          - pass: set_metadata
            with:
              producer_name: surgeon
              model_version: 2
              props: {license: Apache-2.0, source: 'model.onnx, legacy exporter'}

    Reports:
        which fields and keys were set, overwritten or removed.
    """
    fields = {"producer_name": producer_name, "producer_version": producer_version,
              "doc_string": doc_string, "model_version": model_version, "domain": domain}
    given = {k: v for k, v in fields.items() if v is not None}
    props = dict(props or {})
    remove = list(remove or [])
    if not given and not props and not remove:
        raise PassError("set_metadata was given nothing to set or remove",
                        hint="give at least one of: " + ", ".join([*fields, "props", "remove"]))
    if "" in props or "" in remove:
        raise PassError("metadata keys cannot be empty", hint="give every entry of props/remove a name")
    both = sorted(set(props) & set(remove))
    if both:
        raise PassError(f"key(s) {', '.join(repr(k) for k in both)} are both set in 'props' and listed in "
                        "'remove'", hint="keep each key in only one of them")
    current = model.metadata_props
    missing = [k for k in dict.fromkeys(remove) if k not in current]
    if missing and not allow_missing:
        hint = suggestion_hint(missing[0], current)
        existing = ", ".join(repr(k) for k in current) or "none"
        raise PassError(
            f"cannot remove metadata key {missing[0]!r}: the model has no such key",
            hint=(hint + "\n" if hint else "") + f"the model's metadata keys: {existing}; "
                 "set allow_missing: true if the key may legitimately be absent",
        )

    result = PassResult()
    changed = []
    for name, value in given.items():
        if getattr(model, name) != value:
            setattr(model, name, value)
            changed.append(name)
    updated = {k: v for k, v in current.items() if k not in remove}
    for key, value in props.items():
        if current.get(key) != value:
            changed.append(f"props.{key}")
        updated[key] = value
    removed = [k for k in dict.fromkeys(remove) if k in current]
    if updated != current:
        model.metadata_props = updated
    if changed:
        result.notes.append("set " + ", ".join(changed))
    if removed:
        result.notes.append("removed metadata key(s) " + ", ".join(removed))
    if missing:
        result.notes.append("metadata key(s) not present (allowed: allow_missing): " + ", ".join(missing))
    result.details = {"set": changed, "removed": removed}
    result.changed = bool(changed or removed)  # model-level data: the runner does not see it
    return result
