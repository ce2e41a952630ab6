"""Progress reports: how the library says what it is doing, without drawing anything.

Stages that can take a while (loading, each recipe step, writing, checking,
verifying) report through a :class:`Progress` that the caller passes as
``progress=`` (``surgeon.apply``, ``surgeon.save``, ``surgeon.verify``,
``workflow.apply_file``). The library never draws: without ``progress=``
the reports go nowhere. The command line passes a terminal display
(``surgeon/terminal.py``, the only module that imports a progress-bar
library) when stderr is a terminal and ``-q`` is not given. Any object with
the same two methods works, e.g. to feed a GUI or a log::

    class Log(surgeon.progress.Progress):
        def task(self, name, *, total=None, unit=""):
            print("start", name)
            return surgeon.progress.Task()

Library code reports like this (``total`` when the work is countable)::

    with task(progress, "steps", total=len(steps), unit="step") as t:
        for step in steps:
            t.describe(step.label)
            ...
            t.advance()
"""

from __future__ import annotations


class Task:
    """One stage in progress, opened by :meth:`Progress.task`. This base class ignores everything."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units of the stage's ``total`` are done."""

    def describe(self, text: str) -> None:
        """What the stage is doing now (e.g. the step being run)."""

    def close(self) -> None:
        """The stage is over (done or failed); a display removes it."""

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Progress:
    """Receives the library's progress reports; this base class ignores them."""

    def task(self, name: str, *, total: int | None = None, unit: str = "") -> Task:
        """A stage starts: ``name`` says what it is; ``total`` counts its units of work
        (``unit``: "step", "node"...) or is None when the work cannot be counted."""
        return _SILENT_TASK


_SILENT_TASK = Task()
SILENT = Progress()
"""The default: every report goes nowhere."""


def task(progress: Progress | None, name: str, *, total: int | None = None, unit: str = "") -> Task:
    """Open a stage on ``progress``, or on :data:`SILENT` when it is None."""
    return (progress or SILENT).task(name, total=total, unit=unit)


__all__ = ["SILENT", "Progress", "Task", "task"]
