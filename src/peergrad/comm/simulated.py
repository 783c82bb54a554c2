"""Simulated engine: all n workers in one process, stacked on a leading worker axis ``[n, ...]``.

``mix`` costs O(edges x D), never O(n^2 x D):

- circulant matrices (ring, exponential, one-peer exponential) are applied as a weighted sum of
  ``torch.roll`` shifts of the worker axis, ``(W x)_i = sum_s w_s x_{(i - s) mod n}``;
- the complete graph (W = J) is a mean over the worker axis;
- every other matrix is a sparse CSR product (``torch.sparse.mm``), or a dense product when
  n <= 32 (then n^2 D flops cost less than the sparse kernel's per-call overhead).

With a :class:`~peergrad.system.SystemClock` (``clock=``; issue 26, design §8) every accounted
communication is also reported to the clock, which advances one simulated time per worker:

- ``mix``/``mix_start``/``account_gossip``: ``clock.gossip`` over W's directed edges
  (:func:`~peergrad.topology.graph_edges`, cached per W) with the message's bytes on each edge;
  rounds issued between :meth:`SimulatedCommunicator.begin_step` and
  :meth:`SimulatedCommunicator.compute` are ``pre_gradient`` (they left before the gradient,
  see :meth:`peergrad.algorithms.Algorithm.pre_gradient`) and overlap the computation;
- ``mean``/``account_mean``: ``clock.all_reduce``; ``mean_start``: ``clock.all_reduce_start``
  (the all-reduce runs behind the computation) and ``wait_for``/``synchronize``: ``clock.wait``
  for it; ``all_gather``: ``clock.all_gather``; ``all_to_all``: ``clock.all_to_all``;
- ``begin_step``: ``clock.begin_step`` (who is present); ``compute``: ``clock.compute``.

``simulated_comm_time_s`` keeps its closed alpha-beta formula (the nominal schedule on identical
links) and :attr:`SimulatedCommunicator.simulated_time_s` is the clock's (slowest worker's)
time. Without a clock nothing of this happens and every number is as before.

Failures (the clock's profile has ``failures.link_drop_prob``, ``failures.leave_prob`` or
``failures.offline``), the model of issue 26 item 3:

- *gossip*: each round (each ``mix``/``mix_start`` call) draws its surviving edges
  (``clock.surviving_edges``: link drops, absent endpoints) and mixes with the
  Metropolis–Hastings weights of the surviving graph (:func:`~peergrad.topology.surviving_weights`:
  symmetric, doubly stochastic; an absent or isolated worker keeps its row), applied in edge-list
  form at O(E D) (a sparse product; dense when n <= 32), never an ``[n, n]`` matrix at large n.
  A round in which every edge survives uses W itself (ours: the user's weights whenever nothing
  failed). Only undirected W can be used (a directed W cannot stay doubly stochastic when an
  edge drops): a directed W raises ``ValueError`` naming the profile option and the topology;
- *mean* (an all-reduce, ``record`` true, which is the default for accounted calls): the
  average over the present workers (the quorum semantics of fault-tolerant all-reduce), on
  every row; metric means (``account=False`` without ``record=True``) still average all n;
- *all_gather*: only the present workers' payloads, ``[n, m, P]`` with m present workers in
  id order, so the callers that average or reduce the gathered payloads
  (:func:`~peergrad.comm.compressed.compressed_mean`, Armijo's step agreement) do so over the
  present workers with no change; ``mean_start`` is ``mean`` computed at the post, so it
  averages the present workers too;
- *all_to_all*: refused (``ValueError``) while a worker is absent: a personalised exchange has
  no meaning without every worker (the reduce-scatter exchange of
  :func:`~peergrad.comm.compressed.compressed_mean` therefore refuses churn);
- an absent worker neither computes nor sends and keeps its state: the step loop saves its rows
  with :meth:`SimulatedCommunicator.hold_absent` after ``begin_step`` and puts them back after
  ``algorithm.step`` (:meth:`AbsentRows.restore`). Rows returned for absent workers by ``mean``
  and ``mix`` are therefore not used;
- ``bytes_sent`` counts what is sent: surviving edges only, collectives among the present
  workers (``allreduce_bytes(nbytes, m)``); ``simulated_comm_time_s`` stays the nominal formula.

Whether an algorithm can run under failures is declared by ``Algorithm.failures``; check before
any work with :func:`peergrad.algorithms.check_failures`.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from peergrad.comm.base import (
    AllReduceAccounting,
    Decode,
    GossipRounds,
    NetworkModel,
    Workspace,
    memory_key,
    message_nbytes,
    post_key,
)
from peergrad.topology import MixingMatrix, Topology, graph_edges, surviving_weights

if TYPE_CHECKING:
    from peergrad.system.clock import SystemClock

DENSE_MAX_WORKERS = 32


class SimulatedCommunicator(AllReduceAccounting, GossipRounds["_Round"]):
    """Communicator for the simulated engine (worker axis of size ``n``).

    Args:
        topology: the gossip schedule W(k); ``topology.n`` is the number of workers n.
        network: latency/bandwidth model for ``simulated_comm_time_s`` (default: the clock
            profile's links when they are uniform, else ``NetworkModel()``).
        clock: a :class:`~peergrad.system.SystemClock` for n workers to report every accounted
            communication to (module docstring); ``None`` (default): no clock, no failures.

    Attributes:
        bytes_sent: float64 ``[n]`` on the CPU, cumulative bytes each worker has sent.
        simulated_comm_time_s: cumulative modelled communication time, seconds (closed
            alpha-beta formula, with or without a clock).
        rounds: number of communication calls so far (gossip rounds + all-reduces).
        clock: the clock, or None.

    Raises:
        ValueError: if the clock is for another number of workers.
    """

    def __init__(
        self,
        topology: Topology,
        *,
        network: NetworkModel | None = None,
        clock: SystemClock | None = None,
    ) -> None:
        if clock is not None and clock.n_workers != topology.n:
            raise ValueError(
                f"the system clock is for {clock.n_workers} workers but topology "
                f"{topology.name!r} has n = {topology.n}"
            )
        if network is None and clock is not None and clock.profile.links.is_uniform:
            links = clock.profile.links
            network = NetworkModel(links.latency_s, links.bandwidth_bytes_per_s)
        self.topology = topology
        self.n_workers = topology.n
        self.network = network if network is not None else NetworkModel()
        self.clock = clock
        self._failures = clock is not None and clock.profile.failures.any
        self._edges: weakref.WeakKeyDictionary[MixingMatrix, tuple[Tensor, Tensor]] = (
            weakref.WeakKeyDictionary()
        )
        self._pre_gradient = False  # between begin_step and compute: rounds leave pre-gradient
        self._present: Tensor | None = None  # bool [n] while some worker is absent, else None
        self.bytes_sent = torch.zeros(self.n_workers, dtype=torch.float64)
        self.simulated_comm_time_s = 0.0
        self.rounds = 0
        self.workspace = Workspace()
        self._out_degrees: weakref.WeakKeyDictionary[MixingMatrix, Tensor] = (
            weakref.WeakKeyDictionary()
        )
        self._worker_ids = torch.arange(self.n_workers)
        #: outs of ``mean_start`` not yet waited for, by memory (:func:`memory_key`), with the
        #: handle of their clock all-reduce (None: no clock, or not accounted)
        self._posted: dict[tuple[object, ...], tuple[Tensor, int | None]] = {}

    @property
    def worker_ids(self) -> Tensor:
        return self._worker_ids

    @property
    def simulated_time_s(self) -> float | None:
        """The clock's simulated wall-clock time (slowest worker: compute + communication +
        waiting), seconds; ``None`` without a clock."""
        return None if self.clock is None else self.clock.simulated_time_s

    @property
    def present(self) -> Tensor | None:
        """bool ``[n]``: the workers present in this step, or ``None`` when all are."""
        return self._present

    def edges(self, W: MixingMatrix) -> tuple[Tensor, Tensor]:
        """W's directed edges ``(src, dst)`` (int64 ``[E]``, by src then dst), cached per W."""
        e = self._edges.get(W)
        if e is None:
            e = self._edges[W] = graph_edges(W)
        return e

    @property
    def _draws_rounds(self) -> bool:
        """Whether gossip rounds draw their surviving graph (the clock's profile has failures)."""
        return self._failures

    def _draw_round(self, W: MixingMatrix) -> _Round | None:
        """This round's surviving graph of W and its Metropolis–Hastings weights (failures);
        ``None`` when every edge survived (the round then uses W itself)."""
        assert self.clock is not None
        if not W.symmetric:
            options = " and ".join(self.clock.profile.failures.options)
            raise ValueError(
                f"{options} in the system profile needs an "
                f"undirected topology, but {self.topology.name!r} is directed ({W.name!r}); "
                "use an undirected graph such as ring, torus or erdos-renyi"
            )
        src, dst = self.edges(W)
        up = self.clock.surviving_edges(src, dst)
        if bool(up.all()):
            return None
        s, d = src[up], dst[up]
        s, d, w, diag = surviving_weights(self.n_workers, s, d)
        return _Round(s, d, w, diag, self.workspace)

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
        return self._start_round(x, W, message_bytes, decode, account)

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
        # not ``self.mix_start``: a subclass overriding both (to record messages) sees one call
        return self._start_round(x, W, message_bytes, decode, account).wait(out)

    def _start_round(
        self,
        x: Tensor,
        W: MixingMatrix,
        message_bytes: int | None,
        decode: Decode | None,
        account: bool,
    ) -> SimulatedPendingMix:
        """Check ``x`` and W, draw and charge the round (:meth:`_begin_round`): the round that
        ``mix`` and ``mix_start`` form at ``wait``."""
        self._check(x, "mix")
        if W.n != self.n_workers:
            raise ValueError(f"mix: W is {W.n}x{W.n} but there are n = {self.n_workers} workers")
        survivors = self._begin_round(W, message_nbytes(x, message_bytes), account)
        return SimulatedPendingMix(W, x, decode, survivors)

    def _begin_round(self, W: MixingMatrix, nbytes: float, account: bool) -> _Round | None:
        """Draw the round's surviving graph (failures only) and charge it when ``account``;
        an unaccounted round is kept for the :meth:`account_gossip` that charges it later
        (:class:`~peergrad.comm.base.GossipRounds`)."""
        survivors = self._new_round(W, account=account)
        if account:
            self._account_gossip(W, nbytes, survivors)
        return survivors

    # ------------------------------------------------------------------ accounting
    # account_gossip: GossipRounds's (under failures: the edges of the last unaccounted round
    # over this W, else a fresh draw of the surviving edges); the clock hears of it here.
    def _account_gossip(self, W: MixingMatrix, nbytes: float, survivors: _Round | None) -> None:
        sent = self.out_degrees(W) * nbytes
        self.simulated_comm_time_s += self.network.gossip_time_s(float(sent.max()))
        self.rounds += 1
        if survivors is None:
            self.bytes_sent += sent
            if self.clock is not None:
                src, dst = self.edges(W)
                self.clock.gossip(src, dst, nbytes, pre_gradient=self._pre_gradient)
            return
        assert self.clock is not None
        count = torch.bincount(survivors.src, minlength=self.n_workers)
        self.bytes_sent += count.to(torch.float64) * nbytes
        self.clock.gossip(survivors.src, survivors.dst, nbytes, pre_gradient=self._pre_gradient)

    def account_mean(self, nbytes: float) -> None:
        """Charge one all-reduce of ``nbytes`` per worker (under churn: among the present;
        :class:`~peergrad.comm.base.AllReduceAccounting`) and report it to the clock."""
        super().account_mean(nbytes)
        if self.clock is not None:
            self.clock.all_reduce(nbytes)

    def account_all_gather(self, nbytes: float) -> None:
        """Charge one all-gather of ``nbytes`` per worker (under churn: among the present;
        :class:`~peergrad.comm.base.AllReduceAccounting`) and report it to the clock."""
        super().account_all_gather(nbytes)
        if self.clock is not None:
            self.clock.all_gather(nbytes)

    def account_all_to_all(self, nbytes: float) -> None:
        """Charge one all-to-all of ``nbytes`` per slot (each worker ``(n - 1) * nbytes``;
        :class:`~peergrad.comm.base.AllReduceAccounting`) and report it to the clock."""
        super().account_all_to_all(nbytes)
        if self.clock is not None:
            self.clock.all_to_all(nbytes)

    def broadcast(self, x: Tensor, src: int = 0) -> Tensor:
        """Overwrite every row of ``x`` in place with row ``src``; not accounted."""
        self._check(x, "broadcast")
        if not 0 <= src < self.n_workers:
            raise ValueError(f"src must be in [0, {self.n_workers - 1}], got {src}")
        x.copy_(x[src : src + 1].clone().expand_as(x))
        return x

    def begin_step(self, step: int) -> None:
        """Start step ``step``. Without a clock nothing happens (kept for engine symmetry);
        with one, ``clock.begin_step()`` decides who is present, and the communication issued
        until :meth:`compute` is pre-gradient (it overlaps the gradient computation)."""
        if self.clock is None:
            return
        present = self.clock.begin_step()
        # without failures every worker is always present: no need to look
        self._present = None if not self._failures or bool(present.all()) else present
        self._pre_gradient = True

    def compute(self) -> None:
        """The workers compute their gradients now: ``clock.compute()`` (their step times); the
        communication issued from here on is after the gradient. Call it once per step, after
        :meth:`begin_step` and the algorithm's ``pre_gradient``. No-op without a clock."""
        if self.clock is None:
            return
        self.clock.compute()
        self._pre_gradient = False

    def hold_absent(self, x: Tensor, state: Any) -> AbsentRows | None:
        """Save the rows of the workers absent in this step (``None`` when all are present).

        Saved: ``x``'s absent rows and those of every floating-point tensor of ``state`` (a
        dataclass; tensors in its fields, or in lists/tuples there) whose leading axis has
        size n. Integer tensors (shared generator states) and scalars (``step``) are shared by
        all workers and keep advancing (ours: a returning worker re-synchronises them, which
        costs a few bytes). :meth:`AbsentRows.restore` puts the rows back after the step.
        """
        if self._present is None:
            return None
        rows = (~self._present).nonzero()[:, 0].to(x.device)
        saved = {}
        if dataclasses.is_dataclass(state):
            for f in dataclasses.fields(state):
                kept = _take_rows(getattr(state, f.name), rows, self.n_workers)
                if kept is not None:
                    saved[f.name] = kept
        return AbsentRows(rows, x.index_select(0, rows), saved, self.n_workers)

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
            self.account_mean(message_nbytes(x, message_bytes))
        quorum = account if record is None else record
        if self._present is not None and quorum:
            return x[self._present.to(x.device)].mean(dim=0, keepdim=True).expand_as(x)
        return x.mean(dim=0, keepdim=True).expand_as(x)

    def mean_start(
        self,
        x: Tensor,
        *,
        out: Tensor,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> None:
        """Post the average of ``x`` into ``out`` (:meth:`Communicator.mean_start`): here it is
        ``out.copy_(mean(x, ...))`` at once, charged as :meth:`mean` (bytes, rounds, the
        nominal time; under churn: the present workers' average). With a clock the
        all-reduce is posted with ``clock.all_reduce_start`` (it costs no time until
        :meth:`wait_for`). ``out`` stays posted until :meth:`wait_for` (or
        :meth:`synchronize`), so that posting into it again raises ``ValueError`` here as on
        the distributed engine, where the all-reduce is then still in flight."""
        key = post_key(x, out, self._posted)
        handle = None
        if account and self.clock is not None:
            self._check(x, "mean_start")
            nbytes = message_nbytes(x, message_bytes)
            AllReduceAccounting.account_mean(self, nbytes)  # the bytes; the clock: below
            handle = self.clock.all_reduce_start(nbytes)
            record = True if record is None else record  # mean's quorum for account=True
            account = False
        mean = self.mean(x, message_bytes=message_bytes, account=account, record=record)
        out.copy_(mean)
        self._posted[key] = (out, handle)

    def wait_for(self, out: Tensor) -> Tensor:
        """``out`` (the mean was computed at the post); it is no longer posted. With a clock:
        ``clock.wait`` for its all-reduce (the workers wait for what is left of it)."""
        posted = self._posted.pop(memory_key(out), None)
        if posted is not None:
            self._wait_clock(posted[1])
        return out

    def synchronize(self) -> None:
        """Wait for every posted mean (:meth:`wait_for`, in posting order): the results are
        already in their ``out`` on this engine; with a clock the workers wait for the
        all-reduces in flight."""
        posted = list(self._posted.values())
        self._posted.clear()
        for _, handle in posted:
            self._wait_clock(handle)

    def _wait_clock(self, handle: int | None) -> None:
        """``clock.wait(handle)`` unless it is no longer in flight there (a clock restored
        from a checkpoint since the post)."""
        if handle is not None and self.clock is not None and handle in self.clock.in_flight:
            self.clock.wait(handle)

    def all_to_all(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        """``[n, n, P] -> [n, n, P]``: the transpose of the first two axes (a read-only view);
        row i, slot j is worker j's slot i.

        ``message_bytes`` overrides the size of one slot (default ``P * itemsize``; each worker
        is charged ``n - 1`` of them); ``account=False``: nothing is charged. ``ValueError``
        for a payload that is not ``[n, n, P]`` or while workers are absent (churn).
        """
        self._check(payload, "all_to_all")
        if payload.dim() != 3 or payload.shape[1] != self.n_workers:
            raise ValueError(
                f"all_to_all: payload must be [w, n, P] with n = {self.n_workers}, got "
                f"{tuple(payload.shape)}"
            )
        if self._present is not None:
            raise ValueError(
                "all_to_all needs every worker, but some are absent in this step (churn: "
                "failures.leave_prob / failures.offline in the system profile)"
            )
        if account:
            self.account_all_to_all(message_nbytes(payload[:, 0], message_bytes))
        return payload.transpose(0, 1)

    def all_gather(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        """``[n, P] -> [n, n, P]``: an expanded (read-only) view, no n^2 memory.

        While workers are absent (clock with churn): ``[n, m, P]``, the m present workers'
        payloads in id order (module docstring).

        ``message_bytes`` overrides the size of one worker's payload (default ``P * itemsize``);
        ``account=False``: nothing is charged.
        """
        self._check(payload, "all_gather")
        if payload.dim() != 2:
            raise ValueError(f"all_gather: payload must be [w, P], got {tuple(payload.shape)}")
        if account:
            self.account_all_gather(message_nbytes(payload, message_bytes))
        if self._present is not None:  # only the present workers' payloads: [n, m, P]
            payload = payload[self._present.to(payload.device)]
        return payload.unsqueeze(0).expand(self.n_workers, *payload.shape)


@dataclass
class SimulatedPendingMix:
    W: MixingMatrix
    x: Tensor
    decode: Decode | None = None
    #: the round's surviving graph under failures (then W's weights are not used)
    survivors: _Round | None = None

    def wait(self, out: Tensor | None = None) -> Tensor:
        values = self.x if self.decode is None else self.decode(self.x)
        if self.survivors is not None:
            return self.survivors.apply(values, out)
        return apply_mixing(self.W, values, out)


@dataclass(frozen=True)
class _Round:
    """One gossip round's surviving graph in edge-list form: ``src``, ``dst`` int64 ``[E']``,
    ``weight`` float64 ``[E']`` (``W'[dst, src]``), ``diag`` float64 ``[n]`` (``W'[i, i]``).
    ``scratch``: the communicator's :class:`Workspace` (one ``[n, D]`` gather buffer)."""

    src: Tensor
    dst: Tensor
    weight: Tensor
    diag: Tensor
    scratch: Workspace | None = dataclasses.field(default=None, compare=False, repr=False)

    def apply(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """``W' @ x`` over the leading axis in O(E' D): dense when n <= 32, else on the CPU a
        sum over the rows' entry slots (:meth:`_slots`), elsewhere a sparse product."""
        n = self.diag.numel()
        if out is None:
            out = torch.empty_like(x)
        elif out.shape != x.shape:
            raise ValueError(
                f"out must have the shape of x {tuple(x.shape)}, got {tuple(out.shape)}"
            )
        flat = x.reshape(n, -1)
        dev, dt = x.device, x.dtype
        if n <= DENSE_MAX_WORKERS:
            M = torch.diag(self.diag)
            M[self.dst, self.src] = self.weight
            torch.mm(M.to(dev, dt), flat, out=out.view(flat.shape))
            return out
        ids = torch.arange(n)
        rows, cols = torch.cat([self.dst, ids]), torch.cat([self.src, ids])
        values = torch.cat([self.weight, self.diag])
        if _SLOT_DTYPES.get(dt) and dev.type == "cpu" and out.is_contiguous() and flat.numel():
            slots = _slots(n, rows, cols, values)
            if slots is not None:
                _apply_slots(flat, out.view(flat.shape), *slots, dt, self.scratch)
                return out
        index = torch.stack([rows, cols])
        A = torch.sparse_coo_tensor(index, values, (n, n)).coalesce().to(dev, dt)
        return out.copy_(torch.sparse.mm(A, flat).reshape(x.shape))


#: dtypes whose CPU sparse product is one fused multiply-add per entry (BLAS ``axpy``)
_SLOT_DTYPES = {torch.float32: True, torch.float64: True}


def _slots(
    n: int, rows: Tensor, cols: Tensor, values: Tensor
) -> tuple[Tensor, Tensor, list[Tensor]] | None:
    """The entries of a sparse ``[n, n]`` matrix (``rows``, ``cols``, ``values``; no two
    alike) by slot: the k-th entry of each row in column order, the order in which the CPU
    sparse product (``torch.sparse.mm`` of a coalesced COO matrix: one ``axpy`` per entry, in
    row-then-column order) accumulates it. Returns ``cols`` and ``values`` as ``[K, n]``
    (K = most entries in a row; a row with fewer has value 0 at its missing slots) and per slot
    the rows that have no entry there; ``None`` if an entry repeats."""
    key, order = torch.sort(rows * n + cols)
    if bool((key[1:] == key[:-1]).any()):
        return None
    rows, cols, values = rows[order], cols[order], values[order]
    counts = torch.bincount(rows, minlength=n)
    slot = torch.arange(rows.numel()) - (torch.cumsum(counts, 0) - counts)[rows]
    k = int(counts.max())
    col_k = torch.arange(n).repeat(k, 1)
    val_k = torch.zeros(k, n, dtype=values.dtype)
    col_k[slot, rows] = cols
    val_k[slot, rows] = values
    missing = [(counts <= j).nonzero()[:, 0] for j in range(k)]
    return col_k, val_k, missing


def _apply_slots(
    flat: Tensor,
    out: Tensor,
    col_k: Tensor,
    val_k: Tensor,
    missing: list[Tensor],
    dtype: torch.dtype,
    scratch: Workspace | None,
) -> Tensor:
    """``out = A @ flat`` from :func:`_slots`: starting from zero, slot by slot, every row adds
    ``value * flat[col]`` with one ``addcmul_`` (a fused multiply-add, as the sparse product's
    ``axpy``), so the result is bit for bit the sparse product's; a row without an entry in a
    slot adds ``0 * 0`` (its gathered row is zeroed, so a non-finite value elsewhere stays
    where the sparse product puts it). Vectorised over the rows: K gathers of ``[n, D]``."""
    buf = scratch(flat, "failure-mix") if scratch is not None else torch.empty_like(flat)
    vals = val_k.to(dtype)
    out.zero_()
    for j in range(col_k.shape[0]):
        torch.index_select(flat, 0, col_k[j], out=buf)
        if missing[j].numel():
            buf.index_fill_(0, missing[j], 0)
        out.addcmul_(vals[j].unsqueeze(1), buf)
    return out


@dataclass
class AbsentRows:
    """The rows of the absent workers saved by :meth:`SimulatedCommunicator.hold_absent`:
    ``rows`` (int64 ``[a]``), ``x`` (``[a, D]``) and, per state field, the saved rows."""

    rows: Tensor
    x: Tensor
    state: dict[str, Any]
    n_workers: int

    def restore(self, x: Tensor, state: Any) -> None:
        """Write the saved rows back into ``x`` and into the same fields of ``state`` (the
        state the step returned; its tensors may be new objects)."""
        x.index_copy_(0, self.rows, self.x)
        for name, kept in self.state.items():
            _put_rows(getattr(state, name), self.rows, kept)


def _is_rows(t: object, n: int) -> bool:
    return isinstance(t, Tensor) and t.dim() >= 1 and t.shape[0] == n and t.is_floating_point()


def _take_rows(value: object, rows: Tensor, n: int) -> Any:
    if _is_rows(value, n):
        assert isinstance(value, Tensor)
        return value.index_select(0, rows.to(value.device))
    if isinstance(value, list | tuple):
        kept = [_take_rows(v, rows, n) for v in value]
        return kept if any(k is not None for k in kept) else None
    return None


def _put_rows(value: object, rows: Tensor, kept: Any) -> None:
    if isinstance(kept, Tensor):
        assert isinstance(value, Tensor)
        value.index_copy_(0, rows.to(value.device), kept)
    elif isinstance(kept, list):
        assert isinstance(value, list | tuple)
        for v, k in zip(value, kept, strict=True):
            if k is not None:
                _put_rows(v, rows, k)


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
