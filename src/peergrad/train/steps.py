"""The step loop, the same on both engines.

One step: the schedule sets the step size; every local worker draws its minibatch from its shard
and reads it; all local workers' gradients come from one call (``vmap`` over the stacked
parameters ``x: [w, D]`` on the simulated engine, plain autograd for the one worker of a
distributed process); the algorithm does its local math and its communication through the
communicator; with ``buffers="average"``, a step that communicated also averages the model
buffers. Then the :class:`~peergrad.train.recorder.Recorder` guards, records and saves.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from peergrad.algorithms.base import LossClosure
from peergrad.train.recorder import Recorder, clock

if TYPE_CHECKING:
    from peergrad.train.session import Session

__all__ = ["one_step", "run_steps"]


def __getattr__(name: str) -> object:
    """``Session`` moved to :mod:`peergrad.train.session` (re-exported here for one release)."""
    if name == "Session":
        warnings.warn(
            "peergrad.train.steps.Session moved to peergrad.train.session.Session; import it "
            "from there (the old path goes away in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        from peergrad.train.session import Session

        return Session
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_steps(
    s: Session, recorder: Recorder, start: int, total: int, stop_after: int | None
) -> int:
    """Steps ``start + 1 .. total`` (or up to ``stop_after``); return the last step done.

    When the loop stops before ``total`` (``stop_after``, an error, Ctrl-C) the recorder's logs
    are closed here (:meth:`Recorder.close`); after the last step :meth:`Recorder.finish` does."""
    step = start
    try:
        step = _steps(s, recorder, start, total, stop_after)
    finally:
        if step < total:
            recorder.close()
    return step


def _steps(s: Session, recorder: Recorder, start: int, total: int, stop_after: int | None) -> int:
    g_out = torch.empty_like(s.x)  # reused every step (see Algorithm.step on g's lifetime)
    step = start
    for step in range(start + 1, total + 1):
        if s.stop_requested():
            raise KeyboardInterrupt  # Ctrl-C, taken between steps
        t0 = clock()
        s.comm.begin_step(step)  # type: ignore[attr-defined]  # on both communicators
        losses, g = one_step(s, step, g_out)
        recorder.after_step(step, losses, g, clock() - t0)
        if stop_after is not None and stop_after <= step < total:
            break
    return step


def one_step(s: Session, step: int, g_out: Tensor) -> tuple[Tensor, Tensor]:
    """Step ``step`` of the session after ``comm.begin_step``: the step size, the minibatch, the
    gradients and the algorithm's update of ``s.x`` / ``s.state`` (buffers averaged when due);
    returns ``(losses [w], g [w, D])``. Shared by :func:`run_steps` and the elastic loop."""
    # the simulated engine's system clock (SimulatedCommunicator.compute / hold_absent)
    compute = getattr(s.comm, "compute", None)
    hold_absent = getattr(s.comm, "hold_absent", None)
    algorithm = s.schedule.apply(s.algorithm, step)
    rounds = getattr(s.comm, "rounds", 0)
    # absent workers (system profile churn) keep x and their state: rows saved here
    held = hold_absent(s.x, s.state) if hold_absent is not None else None
    pending = algorithm.pre_gradient(s.x, s.state, s.comm)
    if compute is not None:
        compute()  # the rounds started so far left before the gradient (pre_gradient)
    xb, yb = s.read(s.sampler.next().to(s.device))
    g, losses = s.grad(s.x, xb, yb, out=g_out)
    # line searches get the loss at x from the gradient pass, trials from s.loss
    closure = LossClosure(lambda xt, xb=xb, yb=yb: s.loss(xt, xb, yb), losses)  # type: ignore[misc]
    s.state = algorithm.step(s.x, g, s.state, s.comm, closure=closure, pending=pending)
    if held is not None:
        held.restore(s.x, s.state)
    if s.average_buffers is not None and getattr(s.comm, "rounds", 0) != rounds:
        s.average_buffers(s.buffers, s.comm)
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
    return losses, g
