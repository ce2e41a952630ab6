"""Running a whole pass inside another pass.

A built-in pass never imports another built-in pass module, so the layers
stay one-way and each module reads on its own. A pass that does another
pass's whole job as one of its steps (``set_outputs`` and ``extract`` clean
up after themselves, ``simplify`` cleans up every round) asks the registry
for it by name through :func:`call_pass`.
"""

from __future__ import annotations

from typing import Any

from surgeon.passes.registry import registry
from surgeon.passes.result import PassResult


def call_pass(model: Any, name: str, /, **params: Any) -> PassResult:
    """Run the pass ``name`` on ``model`` as part of the calling pass, and return its result.

    Unlike :func:`surgeon.run_pass` it takes no snapshot and makes no step
    report: the calling pass's own step reports what changed, once.
    """
    return registry.get(name).call(model, params)
