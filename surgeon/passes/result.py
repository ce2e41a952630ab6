"""What a pass tells about its work.

The runner already sees which nodes appeared, disappeared or were rewired
(it diffs the graph around each pass), so a pass only reports what the
runner cannot see: tensors it renamed, values it folded, things it skipped and
why. A pass written as a bare gs script may return nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PassResult:
    renamed: dict[str, str] = field(default_factory=dict)
    """Tensor renames, old name -> new name (verify follows graph outputs through these)."""
    folded: int = 0
    """Number of nodes replaced by constants."""
    notes: list[str] = field(default_factory=list)
    """Human-readable lines for the summary (e.g. why a node could not be folded)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Pass-specific structured data, copied into the JSON report."""
