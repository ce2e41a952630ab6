"""User-facing errors.

Every error a user can cause (a bad recipe, a bad model, a selector that
matches nothing) is a :class:`SurgeonError`. The CLI prints it without a
traceback and exits 1; anything else that escapes is a bug (exit 3).

An error carries one or more :class:`Diagnostic` entries, rendered like a
compiler's: ``recipe.yaml:7:11: error: unknown pass 'remove_nodes'`` followed
by ``  hint: did you mean 'remove_node'?``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a text file (1-based line and column)."""

    file: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts = [self.file or "<recipe>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


@dataclass(frozen=True)
class Diagnostic:
    """One problem: what went wrong, where, and how to fix it."""

    message: str
    location: Location | None = None
    hint: str | None = None
    severity: str = "error"

    @property
    def position(self) -> tuple[int, int]:
        """Sort key: line and column (a diagnostic without a place sorts first)."""
        if self.location is None:
            return (0, 0)
        return (self.location.line or 0, self.location.column or 0)

    def render(self) -> str:
        head = f"{self.severity}: {self.message}"
        if self.location is not None:
            head = f"{self.location}: {head}"
        if self.hint:
            head += "\n" + "\n".join("  hint: " + line if i == 0 else "        " + line
                                     for i, line in enumerate(self.hint.splitlines()))
        return head


class SurgeonError(Exception):
    """Base class of every error the user can fix (CLI exit code 1)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        location: Location | None = None,
        hint: str | None = None,
        diagnostics: Sequence[Diagnostic] | None = None,
    ) -> None:
        diags = list(diagnostics or [])
        if message is not None:
            diags.insert(0, Diagnostic(message, location, hint))
        if not diags:
            raise ValueError("a SurgeonError needs a message or diagnostics")
        self.diagnostics: list[Diagnostic] = diags
        super().__init__(self.render())

    @property
    def message(self) -> str:
        return self.diagnostics[0].message

    @property
    def hint(self) -> str | None:
        return self.diagnostics[0].hint

    @property
    def location(self) -> Location | None:
        return self.diagnostics[0].location

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()


class ModelLoadError(SurgeonError):
    """The model file cannot be read: missing, not ONNX, truncated, missing weights."""


class RecipeError(SurgeonError):
    """The recipe is invalid. Holds every problem found, not only the first."""


class PassError(SurgeonError):
    """A pass refused its parameters or the model (raised before it mutates)."""


class StepError(SurgeonError):
    """A recipe step failed; names the step and its recipe location."""


class ExportError(SurgeonError):
    """The edited model cannot be written or does not validate."""


class UsageError(SurgeonError):
    """The command line itself is wrong (CLI exit code 2)."""


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Closest matches of ``word`` among ``candidates`` (case-insensitive), best first."""
    # Keys from YAML can be anything (null, numbers): compare their text.
    word = str(word)
    cands = sorted({str(c) for c in candidates if c is not None and str(c)})
    lowered = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=cutoff)
    # Substring matches catch "Foo" -> "FooOp" which difflib scores low.
    for c in cands:
        if len(hits) >= n:
            break
        if word and word.lower() in c.lower() and c.lower() not in hits:
            hits.append(c.lower())
    return [lowered[h] for h in hits]


def suggestion_hint(word: str, candidates: Iterable[str], what: str = "") -> str | None:
    """A ``did you mean 'x'?`` hint, or None when nothing is close."""
    hits = did_you_mean(word, candidates)
    if not hits:
        return None
    quoted = ", ".join(f"'{h}'" for h in hits)
    return f"did you mean {quoted}?" if not what else f"did you mean {what} {quoted}?"


LISTING = {
    "tensor": "surgeon inspect MODEL --tensors --name TEXT",
    "node": "surgeon inspect MODEL --nodes --name TEXT",
    "pass": "surgeon passes",
}
"""The command that lists the real names of each kind (for hints when no name is close)."""


def name_hint(word: str, candidates: Iterable[str], kind: str, *, listed: int = 8) -> str:
    """A hint for a ``kind`` name ("tensor", "node"...) that does not exist: ``did you mean``
    the close ones; else every real name when there are at most ``listed``; else the command
    that lists them."""
    close = suggestion_hint(word, candidates)
    if close:
        return close
    names = sorted({str(c) for c in candidates if c is not None and str(c)})
    if names and len(names) <= listed:
        return f"no {kind} name is close; the {kind}s are: " + ", ".join(f"'{n}'" for n in names)
    how = LISTING.get(kind)
    return (f"no {kind} name is close to '{word}'" + (f"; list them with '{how}'" if how else "")
            + " (names are case-sensitive)")


def first_line(exc: BaseException) -> str:
    """The first line of a library's exception text (onnx and onnxruntime write pages), or its type name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
