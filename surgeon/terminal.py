"""The command line's progress display: :class:`surgeon.progress.Progress` drawn with tqdm.

Only ``surgeon.cli`` creates it, and only when stderr is a terminal and
``-q`` is not given; the library itself never draws. A stage appears only
once it has run for ``delay`` seconds (fast runs show nothing at all): as a
bar when its work is countable, otherwise as a spinner with the elapsed
time. A background thread redraws open stages every ``tick`` seconds, so a
long call that reports nothing (onnx's checker, one slow pass) still shows
time passing. Bars are cleared when their stage ends and when the display
closes, so an error message printed afterwards starts on a clean line.

Long calls into C++ (onnx's checker, protobuf parsing) hold the GIL, so the
ticker cannot draw while they run. A stage opened inside one already drawn
(checking inside writing) is therefore drawn at once: the run is known to
be slow, and the line names what it is waiting for.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TextIO

from tqdm import tqdm

from surgeon.progress import Progress, Task

SPINNER = "|/-\\"
_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}]{postfix}"
_SPIN = "{desc} [{elapsed}]{postfix}"


class TerminalProgress(Progress):
    """Draws stages on ``stream`` (a terminal); use as a context manager, or call :meth:`close`."""

    def __init__(self, stream: TextIO, *, delay: float = 1.0, tick: float = 0.1) -> None:
        self.stream, self.delay, self.tick = stream, delay, tick
        self.lock = threading.RLock()  # the main thread reports, the ticker redraws
        self.open: list[_TerminalTask] = []
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def task(self, name: str, *, total: int | None = None, unit: str = "") -> Task:
        t = _TerminalTask(self, name, total, unit)
        with self.lock:
            for outer in self.open:
                if outer.bar is None:
                    outer.redraw()  # due by now, even if a call holding the GIL kept the ticker away
            t.eager = any(outer.bar is not None for outer in self.open)
            self.open.append(t)
            t.redraw()
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._run, name="surgeon-progress", daemon=True)
                self._ticker.start()
        return t

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            with self.lock:
                for t in list(self.open):
                    t.redraw()

    def close(self) -> None:
        """Stop redrawing and clear whatever is still shown."""
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join()
        with self.lock:
            for t in reversed(self.open):
                t.close()
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TerminalTask(Task):
    def __init__(self, owner: TerminalProgress, name: str, total: int | None, unit: str) -> None:
        self.owner, self.name, self.total, self.unit = owner, name, total, unit or "it"
        self.started = time.monotonic()
        self.done = 0
        self.text = ""
        self.frame = 0
        self.eager = False
        self.bar: tqdm | None = None

    def advance(self, n: int = 1) -> None:
        with self.owner.lock:
            self.done += n
            if self.bar is not None:
                self.bar.update(n)
            else:
                self._show_when_due()

    def describe(self, text: str) -> None:
        with self.owner.lock:
            self.text = text
            if self.bar is not None:
                self.bar.set_postfix_str(text, refresh=False)

    def redraw(self) -> None:
        """Called by the ticker, under the owner's lock."""
        if self.bar is None:
            self._show_when_due()
            return
        if self.total is None:
            self.frame += 1
            self.bar.set_description_str(self._spun(), refresh=False)
        self.bar.refresh()

    def _spun(self) -> str:
        return f"{SPINNER[self.frame % len(SPINNER)]} {self.name}"

    def _show_when_due(self) -> None:
        if self.owner._stop.is_set() or (not self.eager and time.monotonic() - self.started < self.owner.delay):
            return
        position = self.owner.open.index(self)  # a stage opened inside another is drawn below it
        counted = self.total is not None
        ncols, nrows = _size(self.owner.stream)
        self.bar = tqdm(
            file=self.owner.stream, total=self.total, initial=self.done, unit=self.unit, leave=False,
            desc=self.name if counted else self._spun(), bar_format=_BAR if counted else _SPIN,
            postfix=self.text or None, position=position, mininterval=0.05, ncols=ncols, nrows=nrows,
        )
        self.bar.start_t -= time.monotonic() - self.started  # elapsed counts from the stage's start
        self.bar.refresh()

    def close(self) -> None:
        with self.owner.lock:
            if self in self.owner.open:
                self.owner.open.remove(self)
            if self.bar is not None:
                self.bar.close()
                self.bar = None


def _size(stream: TextIO) -> tuple[int, int]:
    """tqdm's ncols and nrows: the terminal's, or 80 x 24 when it reports none (a pseudo-terminal
    nobody sized reports 0 x 0, and tqdm then draws nothing at all)."""
    try:
        columns, lines = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        columns = lines = 0
    return columns or 80, lines or 24
