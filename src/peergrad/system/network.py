"""The alpha-beta network model and the byte counts of the ring collectives.

:class:`NetworkModel` turns message sizes into ``simulated_comm_time_s`` (both communicators) and
is the uniform-link special case of a :class:`~peergrad.system.SystemProfile`'s links.

Why it lives here and not in :mod:`peergrad.comm.base`, where it was defined first (issue 25):
the communicators drive the system clock (design §8), so ``comm/`` builds on ``system/`` and
``system/`` must not import ``comm/``. The network model is a model of the system, used by the
profile, the clock and the imposed system as much as by the communicators, so it moved down to
the lower package; :mod:`peergrad.comm.base` and :mod:`peergrad.comm` re-export it (and the
byte formulas) under their old names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["NetworkModel", "allgather_bytes", "allreduce_bytes", "alltoall_bytes"]


@dataclass(frozen=True)
class NetworkModel:
    """Latency/bandwidth (alpha-beta) model of the network, used for ``simulated_comm_time_s``.

    Args:
        latency_s: per-message start-up latency alpha, seconds, ``>= 0``.
        bandwidth_bytes_per_s: link bandwidth beta, bytes per second, ``> 0``. Every worker has one
            full-duplex link; the messages of one worker in one round are sent one after another.

    A gossip round in which the busiest worker sends ``b`` bytes takes ``latency_s + b / bandwidth``
    (all workers send in parallel). A ring all-reduce of ``m`` bytes on n workers takes
    ``2 (n - 1) * latency_s + 2 (n - 1) / n * m / bandwidth`` (Patarasuk & Yuan 2009). A ring
    all-gather of one ``m``-byte payload per worker, and an all-to-all of one ``m``-byte slot
    per pair of workers, take ``(n - 1) * (latency_s + m / bandwidth)``.
    """

    latency_s: float = 1e-3
    bandwidth_bytes_per_s: float = 10e9 / 8

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise ValueError(f"latency_s must be a finite number >= 0, got {self.latency_s}")
        if not (math.isfinite(self.bandwidth_bytes_per_s) and self.bandwidth_bytes_per_s > 0):
            raise ValueError(
                "bandwidth_bytes_per_s must be a finite number > 0, "
                f"got {self.bandwidth_bytes_per_s}"
            )

    @classmethod
    def from_ms_gbps(cls, latency_ms: float, bandwidth_gbps: float) -> NetworkModel:
        """Build from the CLI's units: milliseconds and gigabits per second."""
        if not (math.isfinite(bandwidth_gbps) and bandwidth_gbps > 0):
            raise ValueError(f"--bandwidth-gbps must be > 0, got {bandwidth_gbps}")
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise ValueError(f"--latency-ms must be >= 0, got {latency_ms}")
        return cls(latency_s=latency_ms * 1e-3, bandwidth_bytes_per_s=bandwidth_gbps * 1e9 / 8)

    def gossip_time_s(self, max_bytes_per_worker: float) -> float:
        if max_bytes_per_worker <= 0:
            return 0.0
        return self.latency_s + max_bytes_per_worker / self.bandwidth_bytes_per_s

    def allgather_time_s(self, message_bytes: float, n: int) -> float:
        """Ring all-gather of one ``message_bytes`` payload per worker: ``n - 1`` rounds, each of
        one latency plus one payload on the wire."""
        if n <= 1 or message_bytes <= 0:
            return 0.0
        return (n - 1) * (self.latency_s + message_bytes / self.bandwidth_bytes_per_s)

    def alltoall_time_s(self, message_bytes: float, n: int) -> float:
        """All-to-all of one ``message_bytes`` slot from every worker to every other one, as a
        pairwise exchange (ours: the schedule gloo and MPI use for large slots): ``n - 1``
        rounds, in round r worker i sends its slot for worker ``(i + r) mod n`` and receives
        the one of worker ``(i - r) mod n``, each round one latency plus one slot on the wire.
        The same cost as :meth:`allgather_time_s`: each worker sends ``n - 1`` slots either way.
        """
        if n <= 1 or message_bytes <= 0:
            return 0.0
        return (n - 1) * (self.latency_s + message_bytes / self.bandwidth_bytes_per_s)

    def allreduce_time_s(self, message_bytes: float, n: int) -> float:
        if n <= 1 or message_bytes <= 0:
            return 0.0
        return 2 * (n - 1) * self.latency_s + allreduce_bytes(message_bytes, n) / (
            self.bandwidth_bytes_per_s
        )


def allreduce_bytes(message_bytes: float, n: int) -> float:
    """Bytes each worker sends in a ring all-reduce of ``message_bytes`` over ``n`` workers."""
    return 0.0 if n <= 1 else 2.0 * (n - 1) / n * message_bytes


def allgather_bytes(message_bytes: float, n: int) -> float:
    """Bytes each worker sends in a ring all-gather of ``message_bytes`` per worker."""
    return 0.0 if n <= 1 else float(n - 1) * message_bytes


def alltoall_bytes(message_bytes: float, n: int) -> float:
    """Bytes each worker sends in an all-to-all of one ``message_bytes`` slot per destination:
    its ``n - 1`` slots for the other workers (its own slot stays local)."""
    return 0.0 if n <= 1 else float(n - 1) * message_bytes
