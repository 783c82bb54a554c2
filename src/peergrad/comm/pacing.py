"""Pacing real processes to a system profile (the distributed engine; issue 26 item 5).

Split out of :mod:`peergrad.comm.distributed` (issue 25), which keeps every call into
``torch.distributed``: :class:`ImposedPacing` is the communicator's part that sleeps and holds
messages back so that the real processes follow a :class:`~peergrad.system.SystemProfile`: the
profile's compute (:meth:`ImposedPacing.compute`), each gossip send posted at the time the
profile's links say, and a sleep of the profile's ring cost before each accounted collective.
The model and what it leaves out: :mod:`peergrad.system.impose`, whose
:class:`~peergrad.system.impose.ImposedSystem` says how long to sleep; this mixin does the
sleeping and the posting of the held sends (through the communicator's ``_isend``).
"""

from __future__ import annotations

import bisect
import time
from typing import Protocol

from torch import Tensor

from peergrad.comm.base import PeerFailure
from peergrad.system.impose import ImposedSystem
from peergrad.system.profile import SystemProfile

__all__ = ["ImposedPacing"]


class _Round(Protocol):
    """A gossip round in flight, as far as pacing is concerned: the sends it posted."""

    sends: list[tuple[int, object]]


class ImposedPacing:
    """The sleeps and the held-back sends of a system profile imposed on this process.

    The communicator calls :meth:`_impose` once, :meth:`_end_compute` before each
    communication, :meth:`_send_times` and :meth:`_hold_sends` for every gossip round and
    :meth:`_before_collective` before a blocking operation; it provides ``_isend`` (post one
    send) and ``_fail`` (the :class:`~peergrad.comm.base.PeerFailure` of a failed post).
    """

    rank: int
    n_workers: int
    _nccl: bool

    def _isend(self, payload: Tensor, peer: int) -> object:
        raise NotImplementedError

    def _fail(self, what: str, peers: list[int], exc: BaseException) -> PeerFailure:
        raise NotImplementedError

    def _impose(self, profile: SystemProfile | None) -> None:
        """Impose ``profile`` (None: nothing is imposed; every method here is then a no-op)."""
        if profile is not None and profile.n_workers != self.n_workers:
            raise ValueError(
                f"the system profile is for {profile.n_workers} workers but there are "
                f"n = {self.n_workers}"
            )
        self.system = ImposedSystem(profile, self.rank) if profile is not None else None
        self._link_free = 0.0  # time.monotonic() at which this worker's link is free again
        # sends posted later (link delays): (due time, order, peer, payload, owning round)
        self._due: list[tuple[float, int, int, Tensor, _Round]] = []
        self._order = 0  # tie-break of equal due times: posting order
        self._compute: tuple[float, float] | None = None  # (start, factor): relative mode
        #: relative mode: the measured compute phases (seconds, before the imposed sleeps)
        self.compute_phase_s = 0.0
        self.compute_phases = 0

    def compute(self) -> None:
        """The gradient is computed now (called by the training loop after ``begin_step`` and
        the pre-gradient rounds). With a system profile giving a step time: sleep this
        worker's compute time of the profile for this step, seconds. With one that gives none
        (relative speeds): start timing the compute phase; the extra ``(f - 1) x measured``
        seconds are slept when it ends (:mod:`peergrad.system.impose`). No-op without a
        profile."""
        if self.system is None:
            return
        self._end_compute()
        value = self.system.compute()
        if self.system.relative:
            self._compute = (time.monotonic(), value)
        else:
            self._sleep_until(time.monotonic() + value)

    def _end_compute(self) -> None:
        """End a relative-mode compute phase: sleep ``(f - 1)`` times its measured length."""
        if self._compute is None:
            return
        start, factor = self._compute
        self._compute = None
        now = time.monotonic()
        self.compute_phase_s += now - start
        self.compute_phases += 1
        if factor > 1.0:
            self._sleep_until(now + (factor - 1.0) * (now - start))

    def _send_times(self, out_peers: list[int], nbytes: float) -> list[tuple[float, int]]:
        """``(due time, peer)`` of this round's sends under the profile's links, in posting
        order; empty without a profile, without sends, or on NCCL (a round's sends and
        receives must be posted in one group there: this sleeps until the last one is due and
        the caller posts them all at once)."""
        if self.system is None or not out_peers:
            return []
        offsets, busy = self.system.send_offsets(out_peers, nbytes)
        depart = max(time.monotonic(), self._link_free)
        self._link_free = depart + busy
        delayed = [(depart + o, j) for o, j in zip(offsets, out_peers, strict=True)]
        if self._nccl:  # NCCL needs a round's sends and receives in one group: post all
            self._sleep_until(max(d for d, _ in delayed))  # at the last one's time
            return []
        return delayed

    def _hold_sends(
        self, delayed: list[tuple[float, int]], payload: Tensor, pending: _Round
    ) -> None:
        """Queue the sends of ``pending`` at their due times (:meth:`_send_times`); each leaves
        at its time (posted by :meth:`_sleep_until` or the next communication)."""
        for due, j in delayed:
            self._order += 1
            bisect.insort(self._due, (due, self._order, j, payload, pending))
        if delayed:
            self._post_due(time.monotonic())

    def _sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` (``time.monotonic()`` seconds), posting the sends that
        fall due on the way, each at its time."""
        while True:
            now = time.monotonic()
            due = self._due[0][0] if self._due else float("inf")
            if due <= now:
                self._post_due(now)
                continue
            until = min(due, deadline)
            if until <= now:
                return
            time.sleep(until - now)

    def _post_due(self, now: float) -> None:
        """Post every pending send whose time has come (in due order)."""
        while self._due and self._due[0][0] <= now:
            _, _, peer, payload, pending = self._due.pop(0)
            try:
                work = self._isend(payload, peer)
            except Exception as exc:
                raise self._fail("posting a gossip send", [peer], exc) from exc
            pending.sends.append((peer, work))

    def _flush_sends(self) -> None:
        """Post every pending send, sleeping until each is due (before a blocking wait)."""
        if self._due:
            self._sleep_until(self._due[-1][0])
            self._post_due(float("inf"))

    def _before_collective(self, seconds: float) -> None:
        """End the compute phase, post the pending sends, sleep the modelled collective."""
        self._end_compute()
        self._flush_sends()
        if seconds > 0:
            self._sleep_until(time.monotonic() + seconds)
