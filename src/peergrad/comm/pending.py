"""Operations of the distributed engine in flight: a gossip round (:class:`PendingMix`) and an
all-reduce average posted with ``mean_start`` (:class:`PendingMean`).

Split out of :mod:`peergrad.comm.distributed` (which keeps every call into
``torch.distributed``, and re-exports :class:`PendingMix`): what happens at the wait needs only
the communicator's bounded wait (``_wait``) and its pacing (``_end_compute``, ``_flush_sends``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from peergrad.comm.base import Decode
from peergrad.topology import MixingMatrix

__all__ = ["PendingMean", "PendingMix"]


class _Owner(Protocol):
    """What a pending operation needs of its distributed communicator."""

    rank: int
    n_workers: int
    system: Any

    def _end_compute(self) -> None: ...

    def _flush_sends(self) -> None: ...

    def _sleep_until(self, deadline: float) -> None: ...

    def _wait(self, work: object, what: str, peers: list[int]) -> None: ...


def _before_wait(comm: _Owner) -> None:
    """A blocking wait ends the compute phase and first posts the held gossip sends (a peer may
    be waiting for them)."""
    if comm.system is not None:
        comm._end_compute()
        comm._flush_sends()


@dataclass
class PendingMix:
    """A gossip in flight: call :meth:`wait` for ``W x`` (``W decode(x)`` with ``decode``),
    shape ``[1, ...]``."""

    comm: _Owner
    W: MixingMatrix
    x: Tensor
    requests: list[tuple[int, object]]  # (peer, work handle) for every posted receive
    sends: list[tuple[int, object]]
    buffers: list[tuple[int, float, Tensor]]  # (peer j, W_ij, receive buffer)
    decode: Decode | None = None
    self_weight: float | None = None  # W'[i, i] of a round with dropped links, else W's

    done: bool = False

    def wait(self, out: Tensor | None = None) -> Tensor:
        if self.done:  # a second wait on gloo would block for a message that never comes
            raise RuntimeError("PendingMix.wait() was already called for this gossip round")
        self.done = True
        comm = self.comm
        _before_wait(comm)
        for peer, work in self.requests:
            comm._wait(work, f"gossip receive from worker {peer}", [peer])
        for peer, work in self.sends:
            comm._wait(work, f"gossip send to worker {peer}", [peer])
        i = comm.rank
        decode = self.decode if self.decode is not None else (lambda rows: rows)
        own = decode(self.x)
        if out is None:
            out = torch.empty_like(own)
        weight = self.W.self_weight(i) if self.self_weight is None else self.self_weight
        torch.mul(own, weight, out=out)
        for _, weight, buf in self.buffers:
            out.add_(decode(buf.view_as(self.x)), alpha=weight)
        return out


@dataclass
class PendingMean:
    """An all-reduce (sum) in flight into ``staged``: ``out`` itself, or a contiguous (NCCL:
    device) copy of it. :meth:`finish` waits, copies back and divides by n, as ``mean`` does.

    Under a system profile (``delay_s > 0``: the profile's ring time of this all-reduce) the
    modelled time runs behind the computation, as in the clock's asynchronous all-reduce:
    :meth:`watch` notes when the real all-reduce completes (``done_at``, ``time.monotonic()``,
    set from the backend's completion callback), and :meth:`finish` then sleeps until
    ``done_at + delay_s``, nothing when that has passed already (the all-reduce was
    overlapped). The blocking ``mean`` sleeps ``delay_s`` before the real all-reduce; both
    impose the model's time plus the real all-reduce's (:mod:`peergrad.system.impose`).
    """

    out: Tensor
    staged: Tensor
    work: object
    delay_s: float = 0.0
    done_at: float | None = None

    def watch(self) -> None:
        """Record ``done_at`` when the real all-reduce completes (``delay_s > 0`` only). A
        backend without completion futures leaves it ``None``: :meth:`finish` then counts
        from its own wait's end (the overlap is not credited)."""
        if self.delay_s <= 0:
            return
        try:
            future = self.work.get_future()  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):
            return
        future.add_done_callback(self._done)

    def _done(self, _: object) -> None:
        self.done_at = time.monotonic()

    def finish(self, comm: _Owner) -> Tensor:
        _before_wait(comm)
        comm._wait(self.work, "all-reduce", list(range(comm.n_workers)))
        if self.delay_s > 0:  # the profile's ring time, counted from the real completion
            done = self.done_at if self.done_at is not None else time.monotonic()
            comm._sleep_until(done + self.delay_s)
        if self.staged is not self.out:
            self.out.copy_(self.staged)
        return self.out.div_(comm.n_workers)
