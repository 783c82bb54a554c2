"""Learning-rate schedules for every algorithm (``--lr-schedule``, ``--warmup-steps``).

A schedule multiplies the algorithm's step size ``lr`` (the *base* value: ``--lr`` or the
algorithm's default) by a factor that depends only on the step. The factors are those of
:mod:`torch.optim.lr_scheduler` driving a dummy optimizer (one zero-size parameter, ``lr=1``), in
torch's per-iteration convention ``optimizer.step(); scheduler.step()``: the lr used at step ``k``
(1-based) is the optimizer's lr after ``k - 1`` calls of ``scheduler.step()``. So a peergrad run
follows exactly the sequence a PyTorch user gets from the same scheduler.

With ``T`` the run's steps and ``W`` the warm-up steps (``0 <= W < T``), the factor at step ``k``:

* warm-up, ``k <= W``: ``k / (W + 1)`` (torch ``LinearLR(start_factor=1/(W+1), end_factor=1,
  total_iters=W)``), so it rises linearly from ``1/(W+1)`` and reaches 1 at step ``W + 1``;
* then the main schedule at its own step ``j = k - W - 1`` (0-based; torch ``SequentialLR`` with
  milestone ``W``), over the remaining ``R = T - W`` steps:

  ========================  ==============================================  ====================
  ``constant``              ``1``                                           (no scheduler)
  ``step:EVERY,GAMMA``      ``GAMMA ** (j // EVERY)``                       ``StepLR``
  ``multistep:M1,...,G``    ``G ** (number of milestones Mi <= j)``         ``MultiStepLR``
  ``cosine``                ``(1 + cos(pi * j / R)) / 2``, to 0 at ``j=R``  ``CosineAnnealingLR``
  ``linear``                ``1 - j / R``, to 0 at ``j = R``                ``LinearLR``
  ========================  ==============================================  ====================

  ``EVERY`` and the milestones count the steps after the warm-up. ``cosine`` and ``linear`` reach
  0 just after the last step, so every step of the run has a positive lr.

Methods with a step-size rule of their own (Armijo's line search, generic Adam's ``alpha_t``) get
the schedule as a multiplier of their base value.

Importing this module imports no torch (:meth:`LRSchedule.parse` is part of the torch-free checks
of :func:`peergrad.train.checks.check_fields`); the factors import it on first use.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from array import array
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch.optim import lr_scheduler

__all__ = ["SCHEDULES", "LRSchedule"]

#: The schedule names of ``--lr-schedule`` (``step`` and ``multistep`` take parameters).
SCHEDULES: tuple[str, ...] = ("constant", "step", "multistep", "cosine", "linear")

_FORMS = "constant, step:EVERY,GAMMA, multistep:M1,M2,...,GAMMA, cosine, linear"


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"--lr-schedule {spec!r}: {why}; allowed: {_FORMS}")


def _positive_int(spec: str, text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _bad(spec, f"{what} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise _bad(spec, f"{what} must be a positive integer, got {text!r}")
    return value


def _gamma(spec: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(spec, f"GAMMA must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise _bad(spec, f"GAMMA must be a positive number, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class LRSchedule:
    """A learning-rate schedule over a run of ``total_steps`` steps (see the module docstring).

    Build it with :meth:`parse`. :meth:`factor` is a pure function of the step (the same value
    whenever and in whatever order it is asked, so a resumed run continues the schedule exactly);
    :meth:`apply` gives the algorithm with its scheduled ``lr``.

    Attributes:
        name: one of :data:`SCHEDULES`.
        params: the numbers after ``NAME:`` (``(EVERY, GAMMA)``, ``(M1, ..., GAMMA)``, or ``()``).
        warmup_steps: ``W``, the steps of linear warm-up (``0 <= W < total_steps``).
        total_steps: ``T``, the run's steps.
    """

    name: str
    params: tuple[float, ...]
    warmup_steps: int
    total_steps: int
    # factor(k) for k = 1..len(_table): filled lazily by stepping the torch scheduler.
    _table: array = dataclasses.field(
        default_factory=lambda: array("d"), init=False, repr=False, compare=False
    )
    _state: list[Any] = dataclasses.field(
        default_factory=list, init=False, repr=False, compare=False
    )

    @classmethod
    def parse(cls, spec: str, *, warmup_steps: int, total_steps: int) -> LRSchedule:
        """The schedule of ``--lr-schedule SPEC --warmup-steps W`` for a run of ``total_steps``.

        Raises:
            ValueError: ``spec`` does not parse (the message names ``--lr-schedule`` and the
                allowed forms), or ``warmup_steps`` is negative or not less than
                ``total_steps`` (the message names ``--warmup-steps``).
            TypeError: ``spec`` is not a string or a step count is not an int.
        """
        if not isinstance(spec, str):
            raise TypeError(f"--lr-schedule must be a string, got {type(spec).__name__}")
        for flag, value in (("--warmup-steps", warmup_steps), ("total_steps", total_steps)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{flag} must be an int, got {value!r}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if warmup_steps < 0:
            raise ValueError(f"--warmup-steps must be >= 0, got {warmup_steps}")
        if warmup_steps >= total_steps:
            raise ValueError(
                f"--warmup-steps {warmup_steps} must be less than the run's {total_steps} steps "
                "(the warm-up would be the whole run)"
            )
        name, sep, rest = spec.strip().partition(":")
        name = name.strip().lower()
        if name not in SCHEDULES:
            raise _bad(spec, f"unknown schedule {name!r}")
        parts = [p.strip() for p in rest.split(",")] if sep else []
        params: tuple[float, ...]
        if name in ("constant", "cosine", "linear"):
            if sep:
                raise _bad(spec, f"{name} takes no parameters")
            params = ()
        elif name == "step":
            if len(parts) != 2:
                raise _bad(spec, "step needs EVERY,GAMMA")
            params = (_positive_int(spec, parts[0], "EVERY"), _gamma(spec, parts[1]))
        else:
            if len(parts) < 2:
                raise _bad(spec, "multistep needs at least one milestone and GAMMA")
            milestones = [_positive_int(spec, p, "a milestone") for p in parts[:-1]]
            if any(b <= a for a, b in zip(milestones, milestones[1:], strict=False)):
                raise _bad(spec, "milestones must increase")
            params = (*milestones, _gamma(spec, parts[-1]))
        return cls(name, params, warmup_steps, total_steps)

    @property
    def is_constant(self) -> bool:
        """True when every factor is 1 (``constant`` without warm-up)."""
        return self.name == "constant" and self.warmup_steps == 0

    def _main(self, optimizer: torch.optim.Optimizer) -> lr_scheduler.LRScheduler:
        from torch.optim import lr_scheduler

        remaining = self.total_steps - self.warmup_steps
        if self.name == "step":
            return lr_scheduler.StepLR(
                optimizer, step_size=int(self.params[0]), gamma=self.params[1]
            )
        if self.name == "multistep":
            return lr_scheduler.MultiStepLR(
                optimizer, milestones=[int(m) for m in self.params[:-1]], gamma=self.params[-1]
            )
        if self.name == "cosine":
            return lr_scheduler.CosineAnnealingLR(optimizer, T_max=remaining, eta_min=0.0)
        if self.name == "linear":
            return lr_scheduler.LinearLR(
                optimizer, start_factor=1.0, end_factor=0.0, total_iters=remaining
            )
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)

    def _scheduler(self) -> tuple[torch.optim.Optimizer, lr_scheduler.LRScheduler]:
        import torch
        from torch.optim import lr_scheduler

        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(0))], lr=1.0)
        main = self._main(optimizer)
        if self.warmup_steps == 0:
            scheduler = main
        else:
            warm = lr_scheduler.LinearLR(
                optimizer,
                start_factor=1.0 / (self.warmup_steps + 1),
                end_factor=1.0,
                total_iters=self.warmup_steps,
            )
            scheduler = lr_scheduler.SequentialLR(
                optimizer, [warm, main], milestones=[self.warmup_steps]
            )
        optimizer.step()  # torch's order (optimizer first); the parameter has no gradient
        return optimizer, scheduler

    def factor(self, step: int) -> float:
        """The multiplier of the base lr at ``step`` (1-based, ``1 <= step <= total_steps``).

        It is torch's scheduler lr after ``step - 1`` calls of ``scheduler.step()``. Values are
        computed once, by stepping the scheduler up to the highest step asked for, and kept
        (8 bytes a step): stepping costs about 10 µs, less than any training step, and torch's
        recursive formulas then give exactly the values a PyTorch loop would see.

        Raises:
            ValueError: ``step`` outside ``1..total_steps``.
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an int, got {step!r}")
        if not 1 <= step <= self.total_steps:
            raise ValueError(f"step must lie in 1..{self.total_steps}, got {step}")
        if self.is_constant:
            return 1.0
        table = self._table
        if len(table) < step:
            if not self._state:
                self._state.extend(self._scheduler())
            optimizer, scheduler = self._state
            group = optimizer.param_groups[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # SequentialLR's epoch notice
                while len(table) < step:
                    if table:
                        scheduler.step()
                    table.append(float(group["lr"]))
        return table[step - 1]

    def apply(self, algorithm: Any, step: int) -> Any:
        """``algorithm`` with ``lr`` multiplied by :meth:`factor` (``step``).

        Pass the algorithm as configured (its ``lr`` is the base), not the result of an earlier
        :meth:`apply`. Returns ``algorithm`` itself when the factor is 1, else
        ``dataclasses.replace(algorithm, lr=algorithm.lr * factor)``: every other field is kept.

        Raises:
            TypeError: ``algorithm`` is not a dataclass with an ``lr`` field.
        """
        if not dataclasses.is_dataclass(algorithm) or "lr" not in {
            f.name for f in dataclasses.fields(algorithm)
        }:
            raise TypeError(
                f"--lr-schedule needs an algorithm with an lr field, got {type(algorithm).__name__}"
            )
        f = self.factor(step)
        if f == 1.0:
            return algorithm
        # is_dataclass narrowed the Any argument to DataclassInstance | type[DataclassInstance]
        return dataclasses.replace(algorithm, lr=algorithm.lr * f)  # type: ignore[type-var, union-attr]
