"""The state of a run between steps (:class:`Session`).

:func:`peergrad.train.train` builds one; the step loop (:mod:`peergrad.train.steps`) advances it
and the :class:`~peergrad.train.recorder.Recorder` records and checkpoints it. Its own module so
that the loop and the recorder both read it without importing each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from peergrad.algorithms import Algorithm
from peergrad.comm.base import Communicator
from peergrad.train.sampler import ShardSampler

__all__ = ["Session"]


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
