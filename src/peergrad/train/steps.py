"""The step loop, the same on both engines.

One step: the schedule sets the step size; every local worker draws its minibatch from its shard
and reads it; all local workers' gradients come from one call (``vmap`` over the stacked
parameters ``x: [w, D]`` on the simulated engine, plain autograd for the one worker of a
distributed process); the algorithm does its local math and its communication through the
communicator; with ``buffers="average"``, a step that communicated also averages the model
buffers. Then the :class:`~peergrad.train.recorder.Recorder` guards, records and saves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from peergrad.algorithms import Algorithm
from peergrad.algorithms.base import LossClosure
from peergrad.comm.base import Communicator
from peergrad.train.recorder import Recorder, clock
from peergrad.train.sampler import ShardSampler

__all__ = ["Session", "run_steps"]


@dataclasses.dataclass
class Session:
    """The state of a run between steps (all of it is in a checkpoint, see the recorder).

    ``algorithm`` holds the base step size; ``schedule.apply(algorithm, k)`` is step k's.
    ``x`` ``[w, D]``, ``buffers`` (``{name: [w, ...]}``), ``state`` and ``sampler`` belong to
    this process's workers. ``grad(x, xb, yb, out) -> (g, losses)`` and ``loss(x, xb, yb)`` are
    the task's per-worker functions (``grad`` updates ``buffers``); ``read(idx)`` reads a batch
    (set once the sampler is where the run starts).
    """

    algorithm: Algorithm
    schedule: Any  # peergrad.train.schedules.LRSchedule
    comm: Communicator
    sampler: ShardSampler
    grad: Callable[..., tuple[Tensor, Tensor]]
    loss: Callable[[Tensor, Tensor, Tensor], Tensor]
    x: Tensor
    state: Any
    buffers: dict[str, Tensor]
    average_buffers: Callable[[dict[str, Tensor], Communicator], Any] | None
    device: torch.device
    read: Callable[[Tensor], tuple[Tensor, Tensor]] | Any = None
    #: True once Ctrl-C asked the run to stop (read between steps; see
    #: :func:`peergrad.train.guard.sigint_between_steps`)
    stop_requested: Callable[[], bool] = lambda: False

    def lr_at(self, step: int) -> float | None:
        """The step size of step ``step`` (None when the algorithm has no ``lr``)."""
        lr = getattr(self.schedule.apply(self.algorithm, step), "lr", None)
        return float(lr) if lr is not None else None


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
    # the simulated engine's system clock (SimulatedCommunicator.compute / hold_absent)
    compute = getattr(s.comm, "compute", None)
    hold_absent = getattr(s.comm, "hold_absent", None)
    step = start
    for step in range(start + 1, total + 1):
        if s.stop_requested():
            raise KeyboardInterrupt  # Ctrl-C, taken between steps
        t0 = clock()
        algorithm = s.schedule.apply(s.algorithm, step)
        rounds = getattr(s.comm, "rounds", 0)
        s.comm.begin_step(step)
        # absent workers (system profile churn) keep x and their state: rows saved here
        held = hold_absent(s.x, s.state) if hold_absent is not None else None
        pending = algorithm.pre_gradient(s.x, s.state, s.comm)
        if compute is not None:
            compute()  # the rounds started so far left before the gradient (pre_gradient)
        xb, yb = s.read(s.sampler.next().to(s.device))
        g, losses = s.grad(s.x, xb, yb, out=g_out)
        # line searches get the loss at x from the gradient pass, trials from s.loss
        closure = LossClosure(lambda xt, xb=xb, yb=yb: s.loss(xt, xb, yb), losses)
        s.state = algorithm.step(s.x, g, s.state, s.comm, closure=closure, pending=pending)
        if held is not None:
            held.restore(s.x, s.state)
        if s.average_buffers is not None and getattr(s.comm, "rounds", 0) != rounds:
            s.average_buffers(s.buffers, s.comm)
        if s.device.type == "cuda":
            torch.cuda.synchronize(s.device)
        recorder.after_step(step, losses, g, clock() - t0)
        if stop_after is not None and stop_after <= step < total:
            break
    return step
