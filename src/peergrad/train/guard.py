"""The run's safety nets: the NaN/Inf guard and Ctrl-C.

Every step :func:`nonfinite_codes` checks each worker's loss and parameters (the algorithm state
before every checkpoint); the first non-finite value stops the run with :class:`NonFiniteError`
naming the step, the worker(s) and what went bad. Ctrl-C during the steps becomes
:class:`TrainingInterrupted`, which names the step reached and the last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from peergrad.comm import worker_sum

__all__ = [
    "NONFINITE_SYNC_EVERY",
    "NonFiniteError",
    "TrainingInterrupted",
    "describe_nonfinite",
    "interrupt_as",
    "sigint_between_steps",
    "nonfinite_codes",
]


class NonFiniteError(RuntimeError):
    """A worker's loss, gradient or parameters became NaN or infinite; the message names the step,
    the worker(s) and what went bad, and where the last good checkpoint is."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped :func:`train`; a ``KeyboardInterrupt`` that knows where.

    ``step``: the last step done; ``total``: the run's last step; ``checkpoint_step``: the step
    of the last checkpoint saved (None: none); ``run_dir``: the run folder (None: none written);
    ``checkpoint_every``: the run's setting. ``str()`` is one line saying so, with the
    ``--resume`` command when there is a checkpoint.
    """

    def __init__(
        self,
        step: int,
        total: int,
        checkpoint_step: int | None,
        run_dir: Path | None,
        checkpoint_every: int | None = None,
    ) -> None:
        self.step, self.total = step, total
        self.checkpoint_step, self.run_dir = checkpoint_step, run_dir
        self.checkpoint_every = checkpoint_every
        super().__init__(self.describe())

    def describe(self) -> str:
        """``interrupted at step 37 of 100; last checkpoint: step 30 in DIR; continue with:
        peergrad train --resume DIR`` (or why it cannot be resumed)."""
        text = f"interrupted at step {self.step} of {self.total}; "
        if self.checkpoint_step is not None and self.run_dir is not None:
            return (
                f"{text}last checkpoint: step {self.checkpoint_step} in {self.run_dir}; "
                f"continue with: peergrad train --resume {self.run_dir}"
            )
        if self.checkpoint_every is not None:
            return (
                f"{text}no checkpoint was saved yet (--checkpoint-every {self.checkpoint_every}), "
                "so it cannot be resumed"
            )
        return text + "no checkpoint was saved, so it cannot be resumed (use --checkpoint-every N)"


#: Distributed engine: steps between the NaN/Inf guard's comparisons of notes across ranks (it
#: also compares before every record and checkpoint).
NONFINITE_SYNC_EVERY = 10

#: Bits of the per-worker non-finite code (see :func:`nonfinite_codes`).
_BAD_WHAT = ((1, "loss"), (2, "gradient"), (4, "parameters"), (8, "algorithm state"))


def _float_tensors(obj: Any) -> list[Tensor]:
    """The floating-point tensors inside a state (dataclasses, lists, tuples, dicts)."""
    if isinstance(obj, Tensor):
        return [obj] if obj.is_floating_point() else []
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in _float_tensors(item)]
    return []


def nonfinite_codes(
    losses: Tensor, x: Tensor, g: Tensor | None = None, state: Any = None
) -> Tensor:
    """Per-worker code ``[w]``: bits 1 = loss, 2 = gradient, 4 = parameters, 8 = algorithm state
    non-finite (ORed).

    The check every step costs one reduction over ``x`` (``[w, D]``): a row holding a NaN or an
    infinity sums to NaN or infinity (a finite row whose sum overflows, with entries near the
    dtype's largest value, also counts: that is a blow-up too). ``g`` (checked exactly, e.g. to
    say what went bad once a flag is up) and ``state`` (every floating-point tensor; those with a
    leading axis of size w are attributed per worker, others to every worker) are checked only
    when given.
    """
    codes = (~torch.isfinite(losses.detach())).to(torch.int64)
    codes += 4 * (~torch.isfinite(worker_sum(x))).to(torch.int64)
    if g is not None:
        codes += 2 * (~torch.isfinite(g).reshape(g.shape[0], -1).all(dim=1)).to(torch.int64)
    if state is not None:
        bad = torch.zeros(x.shape[0], dtype=torch.bool, device=codes.device)
        for t in _float_tensors(state):
            if t.dim() >= 1 and t.shape[0] == x.shape[0]:
                bad |= ~torch.isfinite(t).reshape(t.shape[0], -1).all(dim=1).to(bad.device)
            elif not bool(torch.isfinite(t).all()):
                bad[:] = True
        codes += 8 * bad.to(torch.int64)
    return codes


def describe_nonfinite(codes: Tensor) -> str:
    """``"worker 2 (loss, gradient), worker 5 (parameters)"`` from global codes ``[n]``."""
    parts = []
    for i in torch.nonzero(codes).flatten().tolist():
        what = ", ".join(name for bit, name in _BAD_WHAT if int(codes[i]) & bit)
        parts.append(f"worker {i} ({what})")
    return ", ".join(parts)


@contextlib.contextmanager
def interrupt_as(make: Callable[[], TrainingInterrupted]) -> Iterator[None]:
    """Turn a plain ``KeyboardInterrupt`` (Ctrl-C) inside the block into ``make()``."""
    try:
        yield
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        raise make() from None


@contextlib.contextmanager
def sigint_between_steps() -> Iterator[Callable[[], bool]]:
    """Inside the block the first Ctrl-C (SIGINT) only sets a flag, which the step loop reads
    between steps (``yield``-ed as a function); the loop then raises ``KeyboardInterrupt`` there.
    A second Ctrl-C interrupts at once.

    Why: a ``KeyboardInterrupt`` raised wherever the signal lands can land in a finalizer that
    the garbage collector runs (the vmap'd gradient makes many short-lived cycles), where Python
    prints "Exception ignored" and carries on, so a run could ignore Ctrl-C. Outside the main
    thread, or when SIGINT does not have Python's default handler (ignored, or the caller's
    own), nothing is changed and the flag stays False."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: False
        return
    hits: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if hits:
            raise KeyboardInterrupt
        hits.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous)
