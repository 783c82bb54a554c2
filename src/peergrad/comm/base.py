"""The Communicator protocol shared by the simulated and the distributed engines.

Every per-worker tensor carries a leading *worker axis*: ``x`` has shape ``[w, D]`` where
``w = n`` on the simulated engine (all workers in one process) and ``w = 1`` on the
distributed engine (one worker per process). Element-wise algorithm math is therefore the same
on both engines; only the three operations below touch the worker axis:

- ``mix(x, W)``: gossip, row i becomes ``sum_j W[i, j] * x[j]`` (W_ij is the weight worker i
  gives to the value it receives from worker j);
- ``mean(x)``: exact average over all workers (an all-reduce), returned on every worker;
  ``mean_start(x, out=)`` posts the same all-reduce without waiting, ``wait_for(out)`` waits
  for it and ``synchronize()`` for every one posted (overlap, e.g. Streaming DiLoCo's outer
  step);
- ``all_gather(payload)``: every worker's flat payload ``[w, P]`` seen by every worker
  (``[w, n, P]``), for compressed messages that cannot be averaged on the wire (top-k, sign);
- ``all_to_all(payload)``: ``[w, n, P] -> [w, n, P]``, slot j of worker i goes to worker j
  (the first phase of the reduce-scatter exchange, :mod:`peergrad.comm.compressed`);
- per-worker reductions (``worker_sum``, ``worker_dot``, ``worker_norm``) that reduce every axis
  but axis 0 and need no communication.

Byte accounting: ``bytes_sent`` (float64 ``[w]``, bytes) is what each local worker has put on the
wire so far (on the distributed engine, exactly the tensors it hands to ``torch.distributed``;
compressed messages cross the wire packed, see :mod:`peergrad.comm.compressed`). A gossip round
costs worker i ``out_degree(i) * message_bytes``; an all-reduce costs every worker
``2 (n - 1) / n * message_bytes`` (ring all-reduce, the bandwidth-optimal schedule); a ring
all-gather of a ``P``-element payload costs every worker ``(n - 1) * P * itemsize``, and so does
an all-to-all of ``P``-element slots (its ``n - 1`` slots for the other workers).
``simulated_comm_time_s`` (seconds) accumulates the time of every communication under a
:class:`NetworkModel`, identical on both engines.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Generic, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

# The network model is the system's (peergrad.system.network, issue 25): comm/ builds on
# system/, never the other way round; these names stay importable from here.
from peergrad.system.network import NetworkModel as NetworkModel
from peergrad.system.network import allgather_bytes as allgather_bytes
from peergrad.system.network import allreduce_bytes as allreduce_bytes
from peergrad.system.network import alltoall_bytes as alltoall_bytes
from peergrad.topology import MixingMatrix, Topology


def message_nbytes(x: Tensor, message_bytes: int | None = None) -> int:
    """Bytes of one worker's row of ``x`` (shape ``[w, ...]``) as it would cross the wire, or
    ``message_bytes`` when given (a caller's override of the message size, as in ``mix``)."""
    if message_bytes is not None:
        return int(message_bytes)
    return int(x[0].numel() * x.element_size()) if x.shape[0] > 0 else 0


def check_out(x: Tensor, out: Tensor, what: str) -> None:
    """``ValueError`` unless ``out`` has ``x``'s shape, dtype and device (``mean_start``)."""
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(
            f"{what}: out must have the shape, dtype and device of x {tuple(x.shape)} "
            f"{x.dtype} {x.device}, got {tuple(out.shape)} {out.dtype} {out.device}"
        )


def post_key(x: Tensor, out: Tensor, posted: Container[tuple[object, ...]]) -> tuple[object, ...]:
    """The key (:func:`memory_key`) of a new ``mean_start`` of ``x`` into ``out``, for the
    communicator's table ``posted`` of means in flight. ``ValueError`` when ``out`` is unlike
    ``x`` (:func:`check_out`) or a mean posted into it is still in flight."""
    check_out(x, out, "mean_start")
    key = memory_key(out)
    if key in posted:
        raise ValueError(
            "mean_start: a mean posted into this out is still in flight; call "
            "comm.wait_for(out) first"
        )
    return key


def memory_key(t: Tensor) -> tuple[object, ...]:
    """The memory a tensor covers, as a key: data pointer, shape, strides, dtype, device. Two
    views of the same region (``buf[:, a:b]`` made twice) have equal keys."""
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device)


class AllReduceAccounting:
    """The byte, time and round counters of the collectives (all-reduce, all-gather,
    all-to-all), shared by both engines (their counters are per local worker: ``bytes_sent``
    ``[w]``).

    This is the one place the collectives are charged (issue 25): the simulated communicator
    adds only its clock calls. While some workers are absent (``_present``, the simulated engine
    under churn) a collective is one among the m present workers: its bytes are charged to them
    only, as a collective of m workers; the time stays the nominal n-worker formula.
    """

    n_workers: int
    network: NetworkModel
    bytes_sent: Tensor
    simulated_comm_time_s: float
    rounds: int
    #: bool ``[w]`` of the workers present in this step while some are absent, else None
    _present: Tensor | None = None

    def account_mean(self, nbytes: float) -> None:
        """Charge one all-reduce of ``nbytes`` per worker (under churn: among the present)."""
        self._charge_collective(nbytes, allreduce_bytes, NetworkModel.allreduce_time_s)

    def account_all_gather(self, nbytes: float) -> None:
        """Charge one all-gather of ``nbytes`` per worker (under churn: among the present)."""
        self._charge_collective(nbytes, allgather_bytes, NetworkModel.allgather_time_s)

    def account_all_to_all(self, nbytes: float) -> None:
        """Charge one all-to-all of ``nbytes`` per slot: each worker sends ``(n - 1) * nbytes``
        (under churn: among the present), time ``NetworkModel.alltoall_time_s``."""
        self._charge_collective(nbytes, alltoall_bytes, NetworkModel.alltoall_time_s)

    def _charge_collective(
        self,
        nbytes: float,
        sent: Callable[[float, int], float],
        duration: Callable[[NetworkModel, float, int], float],
    ) -> None:
        n = self.n_workers
        if self._present is None:
            self.bytes_sent += sent(nbytes, n)
        else:
            self.bytes_sent[self._present] += sent(nbytes, int(self._present.sum()))
        self.simulated_comm_time_s += duration(self.network, nbytes, n)
        self.rounds += 1


RoundT = TypeVar("RoundT")


class GossipRounds(Generic[RoundT]):
    """The gossip rounds a communicator draws and charges, shared by both engines (issue 25).

    Under link failures every gossip round has its own surviving graph (a ``RoundT``, or
    ``None`` when every link is up and the round uses W itself). A round started with
    ``account=False`` is kept until the :meth:`account_gossip` that charges it, which then
    charges that round's surviving links; an ``account_gossip`` with no such round over its W
    draws a fresh one. The engine says whether rounds are drawn (``_draws_rounds``), how
    (``_draw_round``) and what charging one does (``_account_gossip``).
    """

    #: the last round started unaccounted, with its W, until an ``account_gossip`` takes it
    _unaccounted: tuple[MixingMatrix, RoundT | None] | None = None

    @property
    def _draws_rounds(self) -> bool:
        raise NotImplementedError

    def _draw_round(self, W: MixingMatrix) -> RoundT | None:
        raise NotImplementedError

    def _account_gossip(self, W: MixingMatrix, nbytes: float, survivors: RoundT | None) -> None:
        raise NotImplementedError

    def _new_round(self, W: MixingMatrix, *, account: bool) -> RoundT | None:
        """This round's surviving graph (``None`` when rounds are not drawn or every link is
        up); a round started unaccounted is kept for the :meth:`account_gossip` that charges
        it. Charging an accounted round is the caller's (``_account_gossip``)."""
        if not self._draws_rounds:
            return None
        survivors = self._draw_round(W)
        if not account:
            self._unaccounted = (W, survivors)
        return survivors

    def account_gossip(self, W: MixingMatrix, nbytes: float) -> None:
        """Charge one gossip round over W of ``nbytes`` per message (bytes, time, one round).

        Under failures the charged links are those of the last unaccounted round over this W,
        else of a fresh draw of the surviving links."""
        survivors = None
        if self._draws_rounds:
            kept, self._unaccounted = self._unaccounted, None
            survivors = kept[1] if kept is not None and kept[0] is W else self._draw_round(W)
        self._account_gossip(W, nbytes, survivors)


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

    def mix_start(
        self,
        x: Tensor,
        W: MixingMatrix,
        *,
        message_bytes: int | None = None,
        decode: Decode | None = None,
        account: bool = True,
    ) -> PendingMix:
        """Start a gossip round over W; ``wait(out)`` on the result returns what :meth:`mix`
        returns. ``x`` must not change until then (on the distributed engine the messages may
        still be in flight). Same arguments as :meth:`mix` but ``out``."""
        ...

    def broadcast(self, x: Tensor, src: int = 0) -> Tensor:
        """Overwrite ``x`` (``[w, ...]``) in place with worker ``src``'s row; not accounted.
        ``ValueError`` when ``src`` is not in ``[0, n_workers - 1]``."""
        ...

    def begin_step(self, step: int) -> None:
        """Start step ``step`` (called by the training loop and the optimizer before the
        algorithm's ``pre_gradient``): under a system profile, who is present and where the
        step's clock starts; the distributed engine also publishes its heartbeat."""
        ...

    def compute(self) -> None:
        """The gradient is computed now (after :meth:`begin_step` and the pre-gradient rounds):
        under a system profile, the workers' compute time; a no-op without one."""
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

    def account_all_to_all(self, nbytes: float) -> None:
        """Charge one all-to-all of ``nbytes`` bytes per slot (``(n - 1) * nbytes`` per worker)."""
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

    def mean_start(
        self,
        x: Tensor,
        *,
        out: Tensor,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> None:
        """Post the all-reduce average of ``x`` (``[w, ...]``) into ``out`` without waiting.

        ``out`` (shape and dtype of ``x``; it may be ``x`` itself) holds, after
        :meth:`wait_for`, what ``mean(x, message_bytes=, account=, record=)`` returns, bit for
        bit (every row the average; under churn the present workers' average, as ``mean``).
        ``x`` is read at the post: the caller may change it as soon as this returns (not
        ``out``, which belongs to the collective until :meth:`wait_for`). Bytes, time and the
        wire log are charged at the post, exactly as ``mean`` charges them. Several posts may be
        in flight at once into different ``out`` tensors, waited for in any order.

        Raises ``ValueError`` when ``out``'s shape or dtype differs from ``x``'s, or a mean
        posted into the same memory (``out``'s data pointer, shape, strides and dtype) has not
        been waited for.
        """
        ...

    def wait_for(self, out: Tensor) -> Tensor:
        """Block until the mean posted into ``out`` (:meth:`mean_start`; the same tensor or an
        equal view of the same memory) is done and return ``out``. Returns ``out`` at once when
        nothing is in flight into it (the simulated engine computes at the post)."""
        ...

    def synchronize(self) -> None:
        """Wait for every mean posted with :meth:`mean_start` (before a checkpoint or a
        ``state_dict``, or before reading any ``out``)."""
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

    def all_to_all(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        """Personalised exchange: ``[w, n, P] -> [w, n, P]``; slot j of worker i's payload goes
        to worker j, so row i, slot j of the result is what worker j sent to worker i.

        Read-only (a view on the simulated engine); copy what you keep. Accounted as a pairwise
        exchange: each worker sends its ``n - 1`` slots for the others, ``(n - 1) *
        message_bytes`` (default: one slot, ``P * itemsize``); time
        ``network.alltoall_time_s``. ``ValueError`` for a payload that is not ``[w, n, P]``, or
        while workers are absent (churn: an all-to-all needs every worker).
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
    norms: Tensor = torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)
    return norms
