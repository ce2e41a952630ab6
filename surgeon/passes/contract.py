"""Verification contracts: how each pass says its effect is checked.

Every built-in pass declares one, next to its function::

    @verified_by(EQUAL)
    def cleanup(model: Model) -> PassResult: ...

    @verified_by(Contract("the detections equal a numpy reference NMS of the original's raw outputs",
                          update=_nms_contract))
    def insert_nms(model: Model, *, ...) -> PassResult: ...

As a recipe runs, the runner lets each step's contract update one
:class:`~surgeon.graph.correspondence.Correspondence` (what each edited tensor
is in terms of the original, how inputs are fed, at which tolerance), so
``--verify`` compares the edited model with the original for every step: renames
are followed by the runner for every contract; ``update`` adds what the pass
alone knows. A plugin pass may declare a contract the same way; one that does
not is verified as "outputs equal", with a note saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from surgeon.graph.correspondence import TOLERANCES, Correspondence

if TYPE_CHECKING:
    from surgeon.io.model import Model
    from surgeon.passes.runner import StepReport

ATTRIBUTE = "__surgeon_contract__"


@dataclass(frozen=True)
class Contract:
    """How a pass's effect is verified.

    ``what``: the comparison in words (reported per step). ``tolerance``: one of
    ``dtype`` (the output dtype's default), ``reassociated`` (float arithmetic
    reordered, e.g. weights fused), ``fp16`` (computation in float16; relative to
    each output's scale, or checked on the input of a final bounded activation).
    ``update(correspondence, report, model)`` runs after the step and records
    what the pass changed on purpose (the model is the edited one, right after
    the step). ``verify_by_default``: a recipe with this pass is verified even
    without ``--verify`` (precision changes)."""

    what: str
    tolerance: str = "dtype"
    update: Callable[[Correspondence, StepReport, Model], None] | None = None
    verify_by_default: bool = False

    def __post_init__(self) -> None:
        if self.tolerance not in TOLERANCES:
            raise ValueError(f"tolerance must be one of {', '.join(TOLERANCES)}, not {self.tolerance!r}")


EQUAL = Contract("outputs equal the original's at the dtype's tolerances")
"""Semantics-preserving passes."""

INTERFACE = Contract("each output equals the original's tensor of that name (exposed as an output when it is "
                     "an intermediate one); renamed tensors are followed")
"""Passes that rename tensors or choose which tensors are the graph's inputs and outputs."""

REASSOCIATED = Contract("outputs equal the original's; float arithmetic is reordered (weights fused or ops "
                        "decomposed), so floats compare at rtol 1e-4 and atol 1e-4 of each output's scale",
                        tolerance="reassociated")
"""Semantics-preserving passes that reorder float arithmetic (fusing weights, decomposing ops)."""

FP16 = Contract("outputs equal the original's at float16 tolerances (rtol 1e-2, atol 1e-2 of each output's "
                "scale; an output of a final Sigmoid, Tanh, HardSigmoid or Softmax beyond that is checked on the "
                "activation's input, and allowed what that input's tolerance moves it)",
                tolerance="fp16", verify_by_default=True)
"""Passes that compute in float16."""

REMOVED = Contract("outputs equal the original's: the removed nodes are expected to be pass-through "
                   "placeholders (an original that cannot run, e.g. with a custom op, needs --reference)")
"""Passes that remove nodes standing in for an identity (placeholders, plugin stubs)."""

UNDECLARED = Contract("outputs equal the original's (the pass declares no verification contract)")


def verified_by(contract: Contract) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: declare how a pass is verified (``PassSpec.contract`` reads it)."""
    if not isinstance(contract, Contract):
        raise TypeError(f"verified_by takes a surgeon Contract, not {type(contract).__name__}")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        setattr(func, ATTRIBUTE, contract)
        return func

    return decorate


def contract_of(func: Callable[..., Any]) -> Contract | None:
    found = getattr(func, ATTRIBUTE, None)
    return found if isinstance(found, Contract) else None


def record(correspondence: Correspondence, contract: Contract | None, report: StepReport, model: Model) -> None:
    """Update ``correspondence`` with what one step did (called by the runner after each step)."""
    step = report.step
    correspondence.rename({**report.tensors_renamed, **report.renamed})
    if contract is None:
        contract = UNDECLARED
        correspondence.notes.append(f"{step.label}: pass '{step.pass_name}' declares no verification contract; "
                                    "its outputs are expected to equal the original's")
    correspondence.loosen(contract.tolerance)
    correspondence.contracts.append(f"{step.label}: {contract.what}")
    if contract.update is not None:
        contract.update(correspondence, report, model)


__all__ = ["Contract", "EQUAL", "FP16", "INTERFACE", "REASSOCIATED", "REMOVED", "UNDECLARED", "contract_of",
           "record", "verified_by"]
