"""How the tensors of an edited model correspond to the original's: what verification compares.

Every built-in pass declares a verification contract
(:mod:`surgeon.passes.contract`); the runner lets each step's contract update
one :class:`Correspondence` as the recipe runs, and :func:`surgeon.verify.verify`
reads it. It says, in terms of the edited model's tensor names:

- what the original computes for each edited tensor (:meth:`Correspondence.expr`):
  the original's tensor of the same name by default, a renamed one, or a value
  *derived* in numpy from original tensors (e.g. the reference NMS of the raw
  head outputs);
- how an edited graph input is fed to the original (:attr:`Correspondence.inputs`):
  as is, or transformed in numpy the way the pass says (a cast, the
  preprocessing that ``add_preprocess`` put in the graph);
- which intermediate tensors of the edited model are compared too
  (:attr:`Correspondence.extra`), which outputs cannot be compared and why
  (:attr:`Correspondence.skipped`), which tensors start a deliberate change
  (:attr:`Correspondence.changed_from`: outputs downstream are not compared);
- the tolerance the edits call for (:attr:`Correspondence.tolerance`).

It lives in ``graph/`` because both the passes (which build it) and
``verify`` (which reads it) need it, and it depends on nothing of either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TOLERANCES = ("dtype", "reassociated", "fp16")
"""Tolerance policies, loosest last: the dtype's default; float arithmetic reordered
(fused weights: rtol 1e-4, atol 1e-4 of the output's scale); float16 computation
(rtol 1e-2, atol 1e-2 of the output's scale). Under the two scale-relative ones, an output a final
Sigmoid/Tanh/HardSigmoid/Softmax produces and that is beyond its tolerance is checked on the
activation's input (surgeon.verify). A recipe gets the loosest its steps declare."""


@dataclass(frozen=True)
class Tensor:
    """The original model's tensor ``name`` (a graph output, or an intermediate tensor that
    verification exposes as an output)."""

    name: str

    def describe(self) -> str:
        return f"'{self.name}'"


@dataclass(frozen=True, eq=False)
class Derived:
    """A value computed in numpy from original tensors: ``fn(*values of args)``.

    ``fn`` may return a dict; :class:`Pick` takes one entry (several outputs of one
    reference computation, evaluated once)."""

    fn: Callable[..., Any]
    args: tuple[Expr, ...]
    what: str
    """What the computation is, for the report ("reference NMS of 'output0'")."""

    def describe(self) -> str:
        return self.what


@dataclass(frozen=True, eq=False)
class Pick:
    """Entry ``key`` of a :class:`Derived` that returns a dict."""

    base: Derived
    key: str

    def describe(self) -> str:
        return f"{self.key} of the {self.base.what}"


Expr = Tensor | Derived | Pick


def tensors_of(expr: Expr) -> list[str]:
    """The original tensors an expression reads."""
    if isinstance(expr, Tensor):
        return [expr.name]
    if isinstance(expr, Pick):
        return tensors_of(expr.base)
    return [name for arg in expr.args for name in tensors_of(arg)]


def evaluate(expr: Expr, values: dict[str, Any], cache: dict[int, Any]) -> Any:
    """The value of ``expr`` given the original's tensor ``values``; ``cache`` shares Derived results."""
    if isinstance(expr, Tensor):
        return values[expr.name]
    if isinstance(expr, Pick):
        return evaluate(expr.base, values, cache)[expr.key]
    key = id(expr)
    if key not in cache:
        cache[key] = expr.fn(*(evaluate(a, values, cache) for a in expr.args))
    return cache[key]


@dataclass(frozen=True)
class InputFeed:
    """How an edited graph input is fed to the original: ``transform(edited array)`` becomes the
    original's input ``original`` (then cast to its dtype)."""

    original: str
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    what: str = ""
    """The transform in words ("cast", "uint8 NHWC BGR -> x * 0.0039 NCHW RGB"); empty: as is."""

    def then(self, transform: Callable[[np.ndarray], np.ndarray], what: str) -> InputFeed:
        """This feed after a new pass put ``transform`` in front of the input."""
        inner = self.transform
        composed = transform if inner is None else (lambda x: inner(transform(x)))
        return InputFeed(self.original, composed, what if not self.what else f"{what}, then {self.what}")


@dataclass
class Correspondence:
    """The composed verification contract of a recipe's steps (see the module docstring)."""

    exprs: dict[str, Expr | None] = field(default_factory=dict)
    """Edited tensor name -> what the original computes for it; ``None``: nothing (a new
    tensor). Names not listed are the original's tensor of the same name."""
    inputs: dict[str, InputFeed] = field(default_factory=dict)
    """Edited graph inputs fed through a transform; others are fed as is, or (an input
    that is an intermediate tensor of the original, after ``extract``) get the original's value."""
    extra: dict[str, str] = field(default_factory=dict)
    """Intermediate tensors of the edited model compared too -> why."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Edited graph outputs that cannot be compared -> why (e.g. a TensorRT plugin computes them)."""
    changed_from: dict[str, str] = field(default_factory=dict)
    """Edited tensors whose value a step changed on purpose -> which step; graph outputs
    downstream of them are not compared (the tensors themselves are, when an expression says how)."""
    exact: set[str] = field(default_factory=set)
    """Edited tensors compared at float32 tolerance whatever the policy (detections)."""
    tolerance: str = "dtype"
    notes: list[str] = field(default_factory=list)
    contracts: list[str] = field(default_factory=list)
    """One line per step: the contract it was verified by."""

    def expr(self, name: str) -> Expr | None:
        return self.exprs.get(name, Tensor(name))

    def feed(self, name: str) -> InputFeed:
        """How edited input ``name`` reaches the original so far (as is, to the tensor it corresponds to)."""
        if name in self.inputs:
            return self.inputs[name]
        expr = self.expr(name)
        return InputFeed(expr.name if isinstance(expr, Tensor) else name)

    def rename(self, renames: dict[str, str]) -> None:
        """Tensors renamed by a step (old -> new): their correspondence follows the new names."""
        if not renames:
            return
        moved = {new: self.expr(old) for old, new in renames.items()}
        feeds = {new: self.inputs[old] for old, new in renames.items() if old in self.inputs}
        for table in (self.extra, self.skipped, self.changed_from):
            for old, new in renames.items():
                if old in table:
                    table[new] = table.pop(old)
        for old, new in renames.items():
            if old in self.exact:
                self.exact.discard(old)
                self.exact.add(new)
        targets = set(renames.values())
        for old in renames:
            if old not in targets:
                self.exprs[old] = None  # the old name is gone: a tensor named so later is new
                self.inputs.pop(old, None)
        self.exprs.update(moved)
        self.inputs.update(feeds)

    def loosen(self, tolerance: str) -> None:
        if TOLERANCES.index(tolerance) > TOLERANCES.index(self.tolerance):
            self.tolerance = tolerance


__all__ = ["Correspondence", "Derived", "Expr", "InputFeed", "Pick", "TOLERANCES", "Tensor", "evaluate",
           "tensors_of"]
