"""Keeping Python's cyclic garbage collector off a loaded model's objects.

A 100,000-node model is a few million Python objects (nodes, tensors, their
synchronized lists), all alive as long as the model. Every full collection
walks all of them, and anything that allocates many small objects (a pass,
the exporter, reading a protobuf's fields) triggers full collections: on a
100,000-node chain they were half the time of a whole ``surgeon apply``.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def long_lived() -> Iterator[None]:
    """Treat every object alive now as permanent until the block ends (``gc.freeze``).

    Objects made inside the block are collected as usual, so garbage a pass
    leaves behind is still freed; only the existing objects (the model) are
    skipped. Nested blocks, and code that froze objects itself, leave the
    freeze to the outermost one.
    """
    global _active
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    _active = True
    try:
        yield
    finally:
        _active = False
        gc.unfreeze()


_active = False


def also_long_lived() -> None:
    """Inside :func:`long_lived`, treat every object alive now as permanent too (e.g. the
    runner's snapshot of a large graph, a million small tuples kept through a whole step,
    which every full collection would rescan). Outside it, nothing happens."""
    if _active:
        gc.freeze()
