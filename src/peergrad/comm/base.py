"""The Communicator protocol shared by the simulated and the distributed engines.

Every per-worker tensor carries a leading *worker axis*: ``x`` has shape ``[w, D]`` where
``w = n`` on the simulated engine (all workers in one process) and ``w = 1`` on the
distributed engine (one worker per process). Element-wise algorithm math is therefore the same
on both engines; only the three operations below touch the worker axis:

- ``mix(x, W)``: gossip, row i becomes ``sum_j W[i, j] * x[j]`` (W_ij is the weight worker i
  gives to the value it receives from worker j);
- ``mean(x)``: exact average over all workers (an all-reduce), returned on every worker;
- ``all_gather(payload)``: every worker's flat payload ``[w, P]`` seen by every worker
  (``[w, n, P]``), for compressed messages that cannot be averaged on the wire (top-k, sign);
- per-worker reductions (``worker_sum``, ``worker_dot``, ``worker_norm``) that reduce every axis
  but axis 0 and need no communication.

Byte accounting: ``bytes_sent`` (float64 ``[w]``, bytes) is what each local worker has put on the
wire so far (on the distributed engine, exactly the tensors it hands to ``torch.distributed``;
compressed messages cross the wire packed, see :mod:`peergrad.comm.compressed`). A gossip round
costs worker i ``out_degree(i) * message_bytes``; an all-reduce costs every worker
``2 (n - 1) / n * message_bytes`` (ring all-reduce, the bandwidth-optimal schedule); a ring
all-gather of a ``P``-element payload costs every worker ``(n - 1) * P * itemsize``.
``simulated_comm_time_s`` (seconds) accumulates the time of every communication under a
:class:`NetworkModel`, identical on both engines.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from peergrad.topology import MixingMatrix, Topology


@dataclass(frozen=True)
class NetworkModel:
    """Latency/bandwidth (alpha-beta) model of the network, used for ``simulated_comm_time_s``.

    Args:
        latency_s: per-message start-up latency alpha, seconds, ``>= 0``.
        bandwidth_bytes_per_s: link bandwidth beta, bytes per second, ``> 0``. Every worker has one
            full-duplex link; the messages of one worker in one round are sent one after another.

    A gossip round in which the busiest worker sends ``b`` bytes takes ``latency_s + b / bandwidth``
    (all workers send in parallel). A ring all-reduce of ``m`` bytes on n workers takes
    ``2 (n - 1) * latency_s + 2 (n - 1) / n * m / bandwidth`` (Patarasuk & Yuan 2009).
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

    def allreduce_time_s(self, message_bytes: float, n: int) -> float:
        if n <= 1 or message_bytes <= 0:
            return 0.0
        return 2 * (n - 1) * self.latency_s + allreduce_bytes(message_bytes, n) / (
            self.bandwidth_bytes_per_s
        )


def allreduce_bytes(message_bytes: float, n: int) -> float:
    """Bytes each worker sends in a ring all-reduce of ``message_bytes`` over ``n`` workers."""
    return 0.0 if n <= 1 else 2.0 * (n - 1) / n * message_bytes


def message_nbytes(x: Tensor, message_bytes: int | None = None) -> int:
    """Bytes of one worker's row of ``x`` (shape ``[w, ...]``) as it would cross the wire, or
    ``message_bytes`` when given (a caller's override of the message size, as in ``mix``)."""
    if message_bytes is not None:
        return int(message_bytes)
    return int(x[0].numel() * x.element_size()) if x.shape[0] > 0 else 0


def allgather_bytes(message_bytes: float, n: int) -> float:
    """Bytes each worker sends in a ring all-gather of ``message_bytes`` per worker."""
    return 0.0 if n <= 1 else float(n - 1) * message_bytes


class AllReduceAccounting:
    """The byte, time and round counters of the all-reduce and the all-gather, shared by both
    engines (their counters are per local worker: ``bytes_sent`` ``[w]``)."""

    n_workers: int
    network: NetworkModel
    bytes_sent: Tensor
    simulated_comm_time_s: float
    rounds: int

    def account_mean(self, nbytes: float) -> None:
        """Charge one all-reduce of ``nbytes`` per worker."""
        self.bytes_sent += allreduce_bytes(nbytes, self.n_workers)
        self.simulated_comm_time_s += self.network.allreduce_time_s(nbytes, self.n_workers)
        self.rounds += 1

    def account_all_gather(self, nbytes: float) -> None:
        """Charge one all-gather of ``nbytes`` per worker."""
        self.bytes_sent += allgather_bytes(nbytes, self.n_workers)
        self.simulated_comm_time_s += self.network.allgather_time_s(nbytes, self.n_workers)
        self.rounds += 1


class PeerFailure(RuntimeError):
    """A peer died or stopped answering; the message names the step and the peer(s)."""


class Workspace:
    """Reusable scratch tensors, one per (slot, shape, dtype, device).

    Hot paths on ``[n, D]`` buffers of several megabytes lose much of their time to fresh
    allocations (page faults on first touch); algorithms ask for a scratch tensor instead:
    ``comm.mix(x, W, out=comm.workspace(x, "mix"))``. A scratch tensor's contents are undefined
    and it is valid until the next request of the same slot.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, tuple[int, ...], torch.dtype, torch.device], Tensor] = {}

    def __call__(self, like: Tensor, slot: str = "default") -> Tensor:
        key = (slot, tuple(like.shape), like.dtype, like.device)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = torch.empty_like(like, memory_format=torch.contiguous_format)
        return buf


Decode = Callable[[Tensor], Tensor]
"""Turns wire payload rows ``[m, P]`` into the values they carry ``[m, ...]`` (see ``mix``)."""


class PendingMix(Protocol):
    def wait(self, out: Tensor | None = None) -> Tensor: ...


class MixFromStart:
    """``mix`` as ``mix_start(...).wait(out)``, for communicators (and wrappers of one) whose
    blocking gossip is the asynchronous one waited for at once."""

    mix_start: Callable[..., PendingMix]  # the subclass's; same arguments as ``mix`` but ``out``

    def mix(
        self,
        x: Tensor,
        W: MixingMatrix,
        *,
        message_bytes: int | None = None,
        out: Tensor | None = None,
        decode: Decode | None = None,
        account: bool = True,
    ) -> Tensor:
        """``W @ x`` over the worker axis (see :meth:`Communicator.mix`): the round started by
        ``mix_start`` with the same arguments, waited for into ``out``."""
        pending = self.mix_start(x, W, message_bytes=message_bytes, decode=decode, account=account)
        return pending.wait(out)


@runtime_checkable
class Communicator(Protocol):
    """What an algorithm may do across workers. See the module docstring for the conventions."""

    topology: Topology
    n_workers: int
    network: NetworkModel
    bytes_sent: Tensor
    simulated_comm_time_s: float
    workspace: Workspace

    @property
    def worker_ids(self) -> Tensor:
        """Global indices (int64 ``[w]``) of the workers held by this communicator."""
        ...

    def mix(
        self,
        x: Tensor,
        W: MixingMatrix,
        *,
        message_bytes: int | None = None,
        out: Tensor | None = None,
        decode: Decode | None = None,
        account: bool = True,
    ) -> Tensor:
        """Gossip: return ``W @ x`` over the worker axis (``x`` is ``[w, ...]``, not modified).

        ``out`` (shape of the result, not overlapping ``x``) receives the result when given.

        ``decode`` (compressed gossip, :func:`peergrad.comm.compressed.compressed_mix`): the rows
        of ``x`` are wire payloads (e.g. packed bytes ``uint8 [w, P]``), sent as they are; every
        worker's row, its own and each one received, is decoded with ``decode`` (``[m, P] ->
        [m, ...]``) before the weighted sum, so the result is ``W @ decode(x)``. Bytes are those
        of the payload row (``P * itemsize``) unless ``message_bytes`` says otherwise.
        ``account=False`` charges nothing: the caller charges the round with
        :meth:`account_gossip` (``mix_start`` takes the same arguments but ``out``).
        """
        ...

    def account_gossip(self, W: MixingMatrix, nbytes: float) -> None:
        """Charge one gossip round over W of ``nbytes`` bytes per message."""
        ...

    def account_mean(self, nbytes: float) -> None:
        """Charge one all-reduce of ``nbytes`` bytes per worker."""
        ...

    def account_all_gather(self, nbytes: float) -> None:
        """Charge one all-gather of ``nbytes`` bytes per worker."""
        ...

    def mean(
        self,
        x: Tensor,
        *,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> Tensor:
        """Exact average over all n workers, broadcast back to shape ``[w, ...]``.

        Read-only and short-lived: a broadcast view on the simulated engine, a buffer that the
        next ``mean`` of the same shape reuses on the distributed engine; copy what you keep.

        ``account=False`` (metrics only) charges nothing to the byte and time counters;
        ``record`` (default ``account``) logs the tensor in the distributed engine's wire log.
        """
        ...

    def all_gather(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        """Every worker's payload: ``[w, P] -> [w, n, P]``; row i, slot j is worker j's payload.

        Read-only (a broadcast view on the simulated engine); copy what you keep. Accounted as a
        ring all-gather: each worker sends ``(n - 1) * message_bytes`` (default: one payload row,
        ``P * itemsize``); time ``network.allgather_time_s``.
        """
        ...


def worker_sum(x: Tensor) -> Tensor:
    """Sum over every axis but the worker axis: ``[w, ...] -> [w]``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def worker_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-worker inner product ``<a_i, b_i>``: ``[w, ...] x [w, ...] -> [w]``."""
    if a.shape != b.shape:
        raise ValueError(
            f"worker_dot needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return torch.einsum("wd,wd->w", a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))


def worker_norm(x: Tensor) -> Tensor:
    """Per-worker Euclidean norm ``||x_i||_2``: ``[w, ...] -> [w]``."""
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)
