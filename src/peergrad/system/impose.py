"""Imposing a system profile on real processes (the distributed engine; issue 26 item 5).

:class:`ImposedSystem` is the part of :class:`peergrad.comm.distributed.DistributedCommunicator`
that does not need ``torch.distributed``: for worker ``rank`` of n it says how long to sleep, and
when each outgoing message may leave, so that real processes follow the same system model as
the simulated clock (:mod:`peergrad.system.clock`). Every process keeps a *mirror* of the
simulated :class:`~peergrad.system.SystemClock` for all n workers, seeded identically and called
in the same order as the simulated engine calls its clock (``begin_step``, ``compute``,
``surviving_edges`` per gossip round), so the same profile and seed give the same stragglers,
jitter and dropped links on both engines, and every process agrees on them without a message.

What is imposed, *on top of* the real computation and the real network (units: seconds, bytes,
bytes/s):

- *compute*, two modes (ours):

  - the profile gives a step time (``compute.step_ms``, or FLOPs and a throughput): the
    profile's compute time of this worker in this step, ``step_s / speed_i x jitter x
    straggler`` (the clock's draw), is slept in full in ``compute()``, before the real
    gradient: the step costs the real gradient time *plus* the profile's;
  - the profile gives no step time (computation left out, ``step_s == 0``): speed factors,
    jitter and stragglers are *relative to the measured compute*: with ``f_i`` the clock's
    factor (``jitter x straggler / speed_i``), the worker sleeps ``(f_i - 1) x g`` where ``g`` is
    the measured time from ``compute()`` to the end of the compute phase (the next
    communication, or the next step when the step sends nothing). The sleep happens then, at
    the end of the compute phase, when ``g`` is known. A factor below 1 (a faster worker)
    imposes nothing: a process cannot be made faster than it is. So a 4x persistent straggler
    (``persistent_stragglers = [3]``) makes worker 3's compute phase 4 times as long as it
    measured.

- *gossip links*: this worker's messages of a round leave one after another on its link, as in
  the clock: the k-th (in destination id order, :func:`peergrad.topology.graph_edges`) may leave
  ``latency_k + sum_{l <= k} bytes_l / bandwidth_l`` after the round's departure, which is the
  call time (the step start for the rounds posted before the gradient, so they overlap the
  compute as in the clock) or, if the previous round's link time has not passed yet, its end
  (``link_free``). The receives are posted at once; each send is posted at its time (then the
  real transfer adds the real network's latency and bytes/bandwidth). Sends that become due
  during the real gradient computation are posted when the worker next talks to the
  communicator (at the latest when it waits for the round), so they leave up to one real
  compute late; a worker that must block (a wait, a collective) first posts all its pending
  sends, sleeping until each is due. Not modelled as in the clock: the sender is blocked while
  it sleeps for its own pending sends before a blocking operation (the clock lets it go on).
- *collectives*: before a real all-reduce (all-gather) of b bytes per worker, every worker
  sleeps the clock's cost of the ring collective on the slowest link of the profile's ring
  (workers in id order): ``2 (n - 1) alpha_max + 2 (n - 1) / n x b / beta_min``
  (``(n - 1) (alpha_max + b / beta_min)``). The barrier is the real collective's own.
- *asynchronous all-reduce* (``mean_start`` then ``wait_for``; the clock's
  ``all_reduce_start``/``wait``): the real all-reduce is posted at once and nothing is slept
  at the post; the wait sleeps until ``done + ring``, with ``done`` the moment the real
  all-reduce completed (its completion callback) and ``ring`` the cost above, nothing when that
  moment has passed (the computation since the post hid it). So, as for the blocking one, the
  imposed time is the clock's plus the real all-reduce's: the real completion comes after the
  last worker's post, where the clock starts the collective. Gaps (ours): two all-reduces in
  flight at once are each counted from their own real completion, not queued one after the
  other's modelled time as in the clock; a backend without completion callbacks counts from
  the wait's end (no overlap credited); on NCCL the callback marks the completion of the
  stream's work as the backend reports it (an approximation of the device time).
- *link drops* (``failures.link_drop_prob``): every process draws the round's surviving edges
  from its mirror clock (the same draw as the simulated engine's) and mixes with the
  Metropolis–Hastings weights of the surviving graph
  (:func:`peergrad.topology.surviving_weights`); a dropped link carries no message.
- *churn* (``failures.leave_prob``, ``failures.offline``) is not imposed: refused with one line
  (an absent process would have to keep its state and skip collectives).

To *predict* such a run with the simulated clock, give the clock the measured compute plus the
profile's and links of the measured latency plus the profile's (``benchmarks/system_reality.py``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from peergrad.system.clock import SystemClock
from peergrad.system.network import NetworkModel
from peergrad.system.profile import SystemProfile
from peergrad.topology import MixingMatrix, graph_edges, surviving_weights

__all__ = ["ImposedSystem", "RankRound"]


@dataclass(frozen=True)
class RankRound:
    """One gossip round's surviving graph seen from one worker: the peers it sends to, the
    ``(peer, weight)`` pairs it receives from and its own weight (``W'[i, i]``)."""

    out_peers: tuple[int, ...]
    in_peers: tuple[tuple[int, float], ...]
    self_weight: float


class ImposedSystem:
    """The sleeps and send times that impose ``profile`` on worker ``rank`` (module docstring).

    Args:
        profile: the system profile for n workers; its step time must be known.
        rank: this worker's id in ``0..n-1``.
        seed: seed of the mirror clock (default ``profile.seed``), as for :class:`SystemClock`.

    Raises:
        ValueError: churn in the profile (``failures.leave_prob``/``failures.offline``), a rank
            outside ``0..n-1``, or a pending step time.
    """

    def __init__(self, profile: SystemProfile, rank: int, *, seed: int | None = None) -> None:
        n = profile.n_workers
        if not 0 <= rank < n:
            raise ValueError(f"rank {rank} is not a worker of the profile (n = {n})")
        f = profile.failures
        if f.leave_prob > 0 or f.offline:
            churn = [o for o in f.options if o != "failures.link_drop_prob"]
            raise ValueError(
                f"{' and '.join(churn)} in the system profile: the distributed engine does not "
                "impose churn (absent workers); use --engine simulated or remove it"
            )
        step_s = profile.step_s
        if step_s is None:
            raise ValueError(
                "the system profile gives compute.device_flops but no flops_per_step; call "
                "profile.with_flops_per_step(count_step_flops(model, batch, loss_fn)) first"
            )
        self.profile = profile
        self.rank = rank
        self.n_workers = n
        #: True: compute factors relative to the measured compute (the profile has no step time).
        self.relative = step_s == 0.0
        mirror = profile
        if self.relative:  # a 1 s step: the clock's compute time is then the factor itself
            mirror = replace(profile, compute=replace(profile.compute, step_ms=1000.0))
        self.clock = SystemClock(mirror, seed=seed)
        self.link_drops = f.link_drop_prob > 0
        lat, bw = profile.links.matrices(n)
        self._lat = lat[rank].clone()
        self._bw = bw[rank].clone()
        ids = torch.arange(n)
        nxt = torch.roll(ids, -1)
        self.ring = NetworkModel(float(lat[ids, nxt].max()), float(bw[ids, nxt].min()))
        self._edges: weakref.WeakKeyDictionary[MixingMatrix, tuple[Tensor, Tensor]] = (
            weakref.WeakKeyDictionary()
        )

    # ------------------------------------------------------------------ compute
    def begin_step(self) -> None:
        """A step starts: the mirror clock's ``begin_step`` (keeps the draws in step)."""
        self.clock.begin_step()

    def compute(self) -> float:
        """The mirror clock computes one step. Returns this worker's compute time in seconds
        (absolute mode) or its factor ``f_i`` (relative mode, :attr:`relative`)."""
        before = float(self.clock.compute_s[self.rank])
        self.clock.compute()
        return float(self.clock.compute_s[self.rank]) - before

    # ------------------------------------------------------------------ gossip
    def edges(self, W: MixingMatrix) -> tuple[Tensor, Tensor]:
        """W's directed edges ``(src, dst)`` as the simulated engine lists them, cached per W."""
        e = self._edges.get(W)
        if e is None:
            e = self._edges[W] = graph_edges(W)
        return e

    def send_offsets(self, peers: list[int], nbytes: float) -> tuple[list[float], float]:
        """When each of this worker's messages of one round may leave, in seconds after the
        round's departure, and how long the round keeps the link busy.

        ``peers`` are the destinations; the messages are serialised in increasing id order (as
        the clock does with :func:`graph_edges`). Returns ``(offsets, busy_s)`` with
        ``offsets[k] = latency[rank, peers[k]] + cumulative serialisation`` and ``busy_s`` the
        total serialisation.
        """
        if not peers:
            return [], 0.0
        order = sorted(range(len(peers)), key=lambda k: peers[k])
        dst = torch.tensor([peers[k] for k in order], dtype=torch.int64)
        cum = torch.cumsum(float(nbytes) / self._bw[dst], 0)
        ready = self._lat[dst] + cum
        offsets = [0.0] * len(peers)
        for pos, k in enumerate(order):
            offsets[k] = float(ready[pos])
        return offsets, float(cum[-1])

    def draw_round(self, W: MixingMatrix) -> RankRound | None:
        """This gossip round's surviving graph (link drops; the simulated engine's draw), seen
        from this worker; ``None`` when every link is up (the round then uses W itself).

        Raises:
            ValueError: if W is directed (it cannot stay doubly stochastic when a link drops).
        """
        if not W.symmetric:
            raise ValueError(
                "failures.link_drop_prob in the system profile needs an undirected topology, "
                f"but {W.name!r} is directed; use an undirected graph such as ring, torus or "
                "erdos-renyi"
            )
        src, dst = self.edges(W)
        up = self.clock.surviving_edges(src, dst)
        if bool(up.all()):
            return None
        s, d, w, diag = surviving_weights(self.n_workers, src[up], dst[up])
        i = self.rank
        out_peers = tuple(int(j) for j in d[s == i])
        into = d == i
        in_peers = tuple((int(j), float(wt)) for j, wt in zip(s[into], w[into], strict=True))
        return RankRound(out_peers, in_peers, float(diag[i]))

    # ------------------------------------------------------------------ collectives
    def all_reduce_s(self, nbytes: float) -> float:
        """Seconds of the ring all-reduce of ``nbytes`` per worker on the profile's slowest
        ring link (the clock's cost)."""
        return self.ring.allreduce_time_s(float(nbytes), self.n_workers) if nbytes > 0 else 0.0

    def all_gather_s(self, nbytes: float) -> float:
        """Seconds of the ring all-gather of ``nbytes`` per worker on the slowest ring link."""
        return self.ring.allgather_time_s(float(nbytes), self.n_workers) if nbytes > 0 else 0.0
