"""What a pass tells about its work.

The runner already sees what changed in the graph (it diffs the graph around
each pass: nodes removed, added or rewired, attributes, constant values,
tensor types and names, graph inputs and outputs; see
:mod:`surgeon.passes.runner`), so a pass only reports what the runner cannot
see: tensors it renamed by replacing them, changes outside the graph, things
it skipped and why. A pass written as a bare gs script may return nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import InitVar, dataclass, field
from typing import Any


@dataclass
class PassResult:
    renamed: dict[str, str] = field(default_factory=dict)
    """Tensor renames, old name -> new name (verify follows graph outputs through these).
    The runner sees a tensor that keeps its object and changes its name by itself."""
    changed: bool = False
    """Set it when you changed something the runner cannot see: model-level data
    (metadata, opset imports, IR version), initializers no node reads, or an
    in-place edit of a large constant the runner's sampling may miss. The step
    counts as a change (``expect: {changed: true}``) even if the graph diff is empty."""
    notes: list[str] = field(default_factory=list)
    """Human-readable lines for the summary (e.g. why a node could not be folded)."""
    headline: list[str] = field(default_factory=list)
    """Short phrases appended to the step's one-line summary after what the
    runner saw, e.g. ``"folded 4 nodes"``."""
    details: dict[str, Any] = field(default_factory=dict)
    """Pass-specific structured data, copied into the JSON report."""
    folded: InitVar[int | None] = None
    """Deprecated: ``PassResult(folded=N)`` still works (it becomes
    ``details["folded"]`` and "folded N nodes" in the summary); report pass-specific
    counts in ``details`` and ``headline`` instead."""

    def __post_init__(self, folded: int | None) -> None:
        if folded is None:
            return
        warnings.warn("PassResult(folded=...) is deprecated: put the count in details and a phrase in headline",
                      DeprecationWarning, stacklevel=3)
        self.details.setdefault("folded", folded)
        if folded:
            self.headline.append(f"folded {folded} node" + ("" if folded == 1 else "s"))
