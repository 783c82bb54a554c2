"""The simulated clock's asynchronous collectives: an all-reduce in flight and the wait for it.

Split out of :mod:`peergrad.system.clock` (its model bullet *asynchronous all-reduce* says what
is modelled): :class:`InFlight` is one collective posted with
:meth:`~peergrad.system.SystemClock.all_reduce_start` and not yet waited for, and
:func:`wait_split` is what :meth:`~peergrad.system.SystemClock.wait` does to the waiting
workers' times. Units: seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["InFlight", "wait_split"]


@dataclass(frozen=True)
class InFlight:
    """A collective in flight on the clock's collective stream.

    Attributes:
        posted: when the last member posted (the largest member time at the post), seconds.
        start: when it starts, seconds: ``posted``, or the end of the collective before it on
            a member's stream if that is later (queued).
        finish: ``start + duration``, seconds (the same float operation as the blocking
            all-reduce's ``barrier + duration``).
        duration: the ring's time, seconds (``NetworkModel.allreduce_time_s`` on the ring's
            slowest link); 0 for a collective that costs nothing (no bytes, one member).
        members: bool ``[n]``, the workers present at the post; ``None`` when all were.
    """

    posted: float
    start: float
    finish: float
    duration: float
    members: Tensor | None

    def to_state(self) -> dict[str, Any]:
        """A plain copy for :meth:`SystemClock.state_dict` (``members`` cloned)."""
        members = None if self.members is None else self.members.clone()
        return {
            "posted": self.posted,
            "start": self.start,
            "finish": self.finish,
            "duration": self.duration,
            "members": members,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> InFlight:
        """The inverse of :meth:`to_state`."""
        members = state["members"]
        return cls(
            float(state["posted"]),
            float(state["start"]),
            float(state["finish"]),
            float(state["duration"]),
            None if members is None else members.clone().to(torch.bool),
        )


def wait_split(
    t: Tensor, entry: InFlight, waiting: Tensor | None
) -> tuple[Tensor, Tensor, Tensor] | None:
    """The waiting workers' new times and the split of their waits, or ``None`` if nobody
    waits (every waiting worker is already past ``entry.finish``).

    ``t``: float64 ``[n]`` times; ``waiting``: bool ``[n]`` (``None``: every worker). A waiting
    worker i with ``t_i < finish`` goes to ``finish``. Of its increase, when it waits from
    before the start (``t_i <= start``), ``max(posted - t_i, 0)`` is idle (waiting for the last
    member to post) and ``duration + (start - max(posted, t_i))`` communication (the
    collective, after those queued before it on the stream): exactly the blocking
    all-reduce's ``barrier - t_i`` and ``duration`` when nothing was queued, so a wait right
    after the post is that all-reduce, bit for bit. From inside the collective
    (``start < t_i < finish``) the whole ``finish - t_i`` is communication. Returns
    ``(new_t, comm, idle)``, float64 ``[n]`` (zeros where nobody waits).
    """
    late = t < entry.finish
    if waiting is not None:
        late &= waiting
    if not bool(late.any()):
        return None
    zero = torch.zeros_like(t)
    early = t <= entry.start
    queued = (entry.start - t.clamp(min=entry.posted)).add_(entry.duration)
    comm = torch.where(early, queued, entry.finish - t)
    idle = torch.where(early, (entry.posted - t).clamp_(min=0.0), zero)
    comm = torch.where(late, comm, zero)
    idle = torch.where(late, idle, zero)
    new_t = torch.where(late, torch.full_like(t, entry.finish), t)
    return new_t, comm, idle
