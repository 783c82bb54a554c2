"""Simulated engine: all n workers in one process, stacked on a leading worker axis ``[n, ...]``.

``mix`` costs O(edges x D), never O(n^2 x D):

- circulant matrices (ring, exponential, one-peer exponential) are applied as a weighted sum of
  ``torch.roll`` shifts of the worker axis, ``(W x)_i = sum_s w_s x_{(i - s) mod n}``;
- the complete graph (W = J) is a mean over the worker axis;
- every other matrix is a sparse CSR product (``torch.sparse.mm``), or a dense product when
  n <= 32 (then n^2 D flops cost less than the sparse kernel's per-call overhead).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from peergrad.comm.base import (
    AllReduceAccounting,
    Decode,
    NetworkModel,
    Workspace,
    message_nbytes,
)
from peergrad.topology import MixingMatrix, Topology

DENSE_MAX_WORKERS = 32


class SimulatedCommunicator(AllReduceAccounting):
    """Communicator for the simulated engine (worker axis of size ``n``).

    Args:
        topology: the gossip schedule W(k); ``topology.n`` is the number of workers n.
        network: latency/bandwidth model for ``simulated_comm_time_s``.

    Attributes:
        bytes_sent: float64 ``[n]`` on the CPU, cumulative bytes each worker has sent.
        simulated_comm_time_s: cumulative modelled communication time, seconds.
        rounds: number of communication calls so far (gossip rounds + all-reduces).
    """

    def __init__(self, topology: Topology, *, network: NetworkModel | None = None) -> None:
        self.topology = topology
        self.n_workers = topology.n
        self.network = network if network is not None else NetworkModel()
        self.bytes_sent = torch.zeros(self.n_workers, dtype=torch.float64)
        self.simulated_comm_time_s = 0.0
        self.rounds = 0
        self.workspace = Workspace()
        self._out_degrees: weakref.WeakKeyDictionary[MixingMatrix, Tensor] = (
            weakref.WeakKeyDictionary()
        )
        self._worker_ids = torch.arange(self.n_workers)

    @property
    def worker_ids(self) -> Tensor:
        return self._worker_ids

    def _check(self, x: Tensor, what: str) -> None:
        if x.dim() < 1 or x.shape[0] != self.n_workers:
            raise ValueError(
                f"{what}: x must have the worker axis first with size n = {self.n_workers}, "
                f"got shape {tuple(x.shape)}"
            )

    def out_degrees(self, W: MixingMatrix) -> Tensor:
        """Out-degree of every worker in W (float64 ``[n]``), cached per matrix."""
        deg = self._out_degrees.get(W)
        if deg is None:
            deg = torch.tensor(W.out_degrees, dtype=torch.float64)
            self._out_degrees[W] = deg
        return deg

    def mix_start(
        self,
        x: Tensor,
        W: MixingMatrix,
        *,
        message_bytes: int | None = None,
        decode: Decode | None = None,
        account: bool = True,
    ) -> SimulatedPendingMix:
        """Start a gossip round (accounted now); ``wait(out)`` returns ``W @ x``
        (``W @ decode(x)`` with ``decode``, see :meth:`mix`).

        The simulated engine has nothing in flight, so the product is formed at ``wait``; ``x``
        must not change in between (as on the distributed engine). ``account=False``: nothing
        is charged (the caller accounts the round itself, see :meth:`account_gossip`).
        """
        self._check_mix(x, W)
        if account:
            self.account_gossip(W, _nbytes(x, message_bytes))
        return SimulatedPendingMix(W, x, decode)

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
        """Return ``W @ x`` over the worker axis; ``x`` (``[n, ...]``) is not modified.

        ``message_bytes`` overrides the size of one worker's message; by default it is the size
        of one row of ``x``. ``out`` (shape of the result, not overlapping ``x``) receives the
        result instead of a new tensor. ``decode``: the rows of ``x`` are wire payloads and the
        result is ``W @ decode(x)`` (compressed gossip, see
        :func:`peergrad.comm.compressed.compressed_mix`). ``account=False``: nothing is charged.
        """
        self._check_mix(x, W)
        if account:
            self.account_gossip(W, _nbytes(x, message_bytes))
        return apply_mixing(W, x if decode is None else decode(x), out)

    def _check_mix(self, x: Tensor, W: MixingMatrix) -> None:
        self._check(x, "mix")
        if W.n != self.n_workers:
            raise ValueError(f"mix: W is {W.n}x{W.n} but there are n = {self.n_workers} workers")

    # ------------------------------------------------------------------ accounting
    def account_gossip(self, W: MixingMatrix, nbytes: float) -> None:
        """Charge one gossip round over W of ``nbytes`` per message (bytes, time, one round)."""
        sent = self.out_degrees(W) * nbytes
        self.bytes_sent += sent
        self.simulated_comm_time_s += self.network.gossip_time_s(float(sent.max()))
        self.rounds += 1

    def broadcast(self, x: Tensor, src: int = 0) -> Tensor:
        """Overwrite every row of ``x`` in place with row ``src``; not accounted."""
        self._check(x, "broadcast")
        if not 0 <= src < self.n_workers:
            raise ValueError(f"src must be in [0, {self.n_workers - 1}], got {src}")
        x.copy_(x[src : src + 1].clone().expand_as(x))
        return x

    def begin_step(self, step: int) -> None:
        """Nothing to publish on the simulated engine (kept for engine symmetry)."""

    def mean(
        self,
        x: Tensor,
        *,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> Tensor:
        """Exact average over workers, broadcast to ``[n, ...]`` (a read-only broadcast view).

        ``account=False`` is for metrics (consensus distance, evaluation of x̄): nothing is
        charged to ``bytes_sent`` or ``simulated_comm_time_s``. ``record`` is accepted for
        symmetry with the distributed engine (there is no wire log here).
        """
        self._check(x, "mean")
        if account:
            self.account_mean(_nbytes(x, message_bytes))
        return x.mean(dim=0, keepdim=True).expand_as(x)

    def all_gather(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        """``[n, P] -> [n, n, P]``: an expanded (read-only) view, no n^2 memory.

        ``message_bytes`` overrides the size of one worker's payload (default ``P * itemsize``);
        ``account=False``: nothing is charged.
        """
        self._check(payload, "all_gather")
        if payload.dim() != 2:
            raise ValueError(f"all_gather: payload must be [w, P], got {tuple(payload.shape)}")
        if account:
            self.account_all_gather(_nbytes(payload, message_bytes))
        return payload.unsqueeze(0).expand(self.n_workers, *payload.shape)


@dataclass
class SimulatedPendingMix:
    W: MixingMatrix
    x: Tensor
    decode: Decode | None = None

    def wait(self, out: Tensor | None = None) -> Tensor:
        return apply_mixing(self.W, self.x if self.decode is None else self.decode(self.x), out)


def _nbytes(x: Tensor, message_bytes: int | None) -> int:
    return message_nbytes(x) if message_bytes is None else int(message_bytes)


def apply_mixing(W: MixingMatrix, x: Tensor, out: Tensor | None = None) -> Tensor:
    """``W @ x`` over the leading axis of ``x`` (``[n, ...]``) in O(edges x D).

    Writes into ``out`` (same shape as ``x``, must not overlap it) when given, else into a new
    tensor; ``x`` is never modified.
    """
    if out is None:
        out = torch.empty_like(x)
    elif out.shape != x.shape:
        raise ValueError(f"out must have the shape of x {tuple(x.shape)}, got {tuple(out.shape)}")
    if W.is_complete:
        return out.copy_(x.mean(dim=0, keepdim=True).expand_as(x))
    if W.shifts is not None:
        # (W x)_i = sum_s w_s x_{(i - s) mod n}: slices of the worker axis, no temporaries.
        n = x.shape[0]
        self_weight = dict(W.shifts).get(0, 0.0)
        torch.mul(x, self_weight, out=out)
        for offset, weight in W.shifts:
            if offset % n == 0:
                continue
            s = offset % n
            out[s:].add_(x[: n - s], alpha=weight)
            out[:s].add_(x[n - s :], alpha=weight)
        return out
    flat = x.reshape(x.shape[0], -1)
    if W.n <= DENSE_MAX_WORKERS:
        # Small graphs: a dense GEMM (n^2 D flops) beats the sparse kernel's per-call overhead.
        torch.mm(W.torch_dense(x.device, x.dtype), flat, out=out.view(flat.shape))
        return out
    product = torch.sparse.mm(W.torch_sparse(x.device, x.dtype), flat)
    return out.copy_(product.reshape(x.shape))
