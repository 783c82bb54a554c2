"""Heartbeats and failure reports of the distributed engine (issue 25: split out of
:mod:`peergrad.comm.distributed`, which keeps every call into ``torch.distributed``).

Every wait of a :class:`~peergrad.comm.distributed.DistributedCommunicator` is bounded by its
``timeout_s``. When a peer dies or stops answering, :class:`~peergrad.comm.base.PeerFailure`
names the step, the operation and the missing peer(s), instead of a bare error from inside the
backend. Every worker publishes a heartbeat in the process group's store (a key per worker, the
step announced at every ``begin_step``) and, when it gives up, a failure key. A worker that gives
up waits a short grace period (:func:`report_grace_s`) for the others to do the same: the workers
that are alive but blocked on the missing one (directly, or in the same collective) time out too
and report, so they are excluded, and the report names only the peers that neither reported a
failure nor got past this worker's step.

:class:`PeerWatch` is the communicator's part that does this; it needs only the store (any
object with torch's ``Store`` methods used here, :class:`KeyValueStore`), not
``torch.distributed`` itself.
"""

from __future__ import annotations

import datetime
import time
from typing import Protocol

from peergrad.comm.base import PeerFailure

__all__ = ["FAILED_PREFIX", "HEARTBEAT_PREFIX", "KeyValueStore", "PeerWatch", "report_grace_s"]

HEARTBEAT_PREFIX = "peergrad/heartbeat/"
FAILED_PREFIX = "peergrad/failed/"


def report_grace_s(timeout_s: float) -> float:
    """Seconds a worker that gave up waits for the other blocked workers to report before it
    names the missing peers: ``min(2, timeout_s / 2)``. A worker hosting the store must live
    that long after its own report (the ``peergrad`` CLI waits ``min(3, timeout_s)``)."""
    return min(2.0, timeout_s / 2)


class KeyValueStore(Protocol):
    """The methods of ``torch.distributed.Store`` that the heartbeats use."""

    def set(self, key: str, value: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def check(self, keys: list[str]) -> bool: ...

    def delete_key(self, key: str) -> bool: ...


class PeerWatch:
    """Heartbeats in the rendezvous store and the :class:`PeerFailure` that names the missing
    peers (module docstring). The communicator calls :meth:`_watch_peers` once, then
    :meth:`_publish_heartbeat` at every step, :meth:`_wait` for every work handle and
    :meth:`_fail` when posting an operation raises."""

    rank: int
    n_workers: int
    timeout_s: float
    timeout: datetime.timedelta
    current_step: int
    _store: KeyValueStore | None

    def _watch_peers(self, store: KeyValueStore | None) -> None:
        """Start watching through ``store`` (None: no heartbeats, failures name the peers of
        the operation); a fresh run forgets an earlier run's heartbeat and failure."""
        self._store = store
        self.current_step = 0
        self.timeout = datetime.timedelta(seconds=self.timeout_s)
        if store is not None:
            store.set(f"{HEARTBEAT_PREFIX}{self.rank}", "0")
            store.delete_key(f"{FAILED_PREFIX}{self.rank}")

    def _publish_heartbeat(self, step: int) -> None:
        """Record the step (for error messages) and announce it in the store."""
        self.current_step = step
        if self._store is not None:
            try:
                self._store.set(f"{HEARTBEAT_PREFIX}{self.rank}", str(step))
            except Exception as exc:
                raise PeerFailure(
                    f"worker {self.rank}: the rendezvous store is unreachable at step {step} "
                    f"(its host, worker 0 or the torchrun agent, stopped): {exc}"
                ) from exc

    def last_seen(self) -> dict[int, tuple[int | None, bool]] | None:
        """For every other worker: (last step it announced or None, whether it reported a failure).

        None when there is no store or it cannot be reached.
        """
        if self._store is None:
            return None
        seen: dict[int, tuple[int | None, bool]] = {}
        try:
            for j in range(self.n_workers):
                if j == self.rank:
                    continue
                beat, failed = f"{HEARTBEAT_PREFIX}{j}", f"{FAILED_PREFIX}{j}"
                step = int(self._store.get(beat)) if self._store.check([beat]) else None
                seen[j] = (step, bool(self._store.check([failed])))
        except Exception:  # the store's host may be the process that died
            return None
        return seen

    def _silent_peers(
        self,
    ) -> tuple[dict[int, tuple[int | None, bool]] | None, dict[int, int | None]]:
        """The heartbeats, and the peers that neither reported a failure nor announced a step
        past this worker's (with their last step, None if never seen).

        Alive workers blocked on the missing peer time out at about the same time as this one
        and report a failure; so while more than one peer is silent, poll the store for up to
        :func:`report_grace_s` seconds. ``(None, {})`` without a reachable store.
        """
        deadline = time.monotonic() + report_grace_s(self.timeout_s)
        while True:
            seen = self.last_seen()
            if seen is None:
                return None, {}
            silent = {
                j: st
                for j, (st, failed) in seen.items()
                if not failed and (st is None or st <= self.current_step)
            }
            if len(silent) <= 1 or time.monotonic() >= deadline:
                return seen, silent
            time.sleep(0.05)

    def _fail(self, what: str, peers: list[int], exc: BaseException) -> PeerFailure:
        """Build the error: suspects are peers that went silent without reporting a failure
        (alive workers blocked on them report one, see :meth:`_silent_peers`)."""
        if self._store is not None:
            try:  # tell the others this worker stopped because of an error, not silently
                self._store.set(f"{FAILED_PREFIX}{self.rank}", str(self.current_step))
            except Exception:
                pass
        seen, silent = self._silent_peers()
        if seen is None:
            suspects = ", ".join(str(p) for p in peers) or "unknown"
            detail = "heartbeats unavailable"
        else:
            behind = {j: st for j, (st, _) in seen.items() if st is None or st < self.current_step}
            chosen = silent or behind or {j: seen[j][0] for j in peers if j in seen}
            suspects = (
                ", ".join(
                    f"{j} (last seen at step {st})" if st is not None else f"{j} (never seen)"
                    for j, st in sorted(chosen.items())
                )
                or "unknown"
            )
            detail = f"this worker is at step {self.current_step}"
        text = str(exc).strip()
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
        return PeerFailure(
            f"worker {self.rank}: {what} failed at step {self.current_step}; missing or "
            f"unresponsive peer(s): {suspects}; {detail} (backend: {reason})"
        )

    def _wait(self, work: object, what: str, peers: list[int]) -> None:
        """Wait for a work handle at most ``timeout``; :class:`PeerFailure` when it fails."""
        try:
            finished = work.wait(self.timeout)  # type: ignore[attr-defined]
        except Exception as exc:  # gloo raises RuntimeError / DistBackendError subclasses
            raise self._fail(what, peers, exc) from exc
        if finished is False:
            raise self._fail(what, peers, TimeoutError(f"no answer within {self.timeout}"))
