"""The simulated system clock: one time per worker, advanced by compute and by the messages sent.

:class:`SystemClock` keeps ``t`` (float64 ``[n]``, seconds): the wall-clock time at which worker
i has finished everything it did so far. A step is driven from outside (by the communicator and
the training loop, not by the algorithm)::

    present = clock.begin_step()          # who is here this step (churn)
    clock.compute()                       # every present worker's step time
    up = clock.surviving_edges(src, dst)  # this round's link drops (and absent endpoints)
    clock.gossip(src[up], dst[up], nbytes)
    clock.all_reduce(nbytes)              # or all_gather / all_to_all, for the collectives
    h = clock.all_reduce_start(nbytes)    # an all-reduce in flight ...
    clock.wait(h)                         # ... waited for later (steps of compute between)

The model (units: seconds, bytes, bytes/s; every choice marked "ours" is a modelling decision
of this module, not of a paper):

- *compute*: ``t_i += step_s / speed_i * jitter * straggler`` for every present worker (see
  :class:`peergrad.system.ComputeProfile`; transient stragglers as in AD-PSGD, Lian et al.,
  ICML 2018, arXiv:1710.06952).
- *gossip* (one round, directed edges ``src -> dst`` with per-edge bytes): a max-plus update.
  Sender j's messages leave one after another on its link, in the order its edges appear in the
  call (ours; :func:`peergrad.topology.graph_edges` lists them by destination id); the k-th
  finishes transmitting ``ser_k = sum_{l <= k} bytes_l / bandwidth_{j, dst_l}`` after j's
  departure (``cumbytes / bandwidth`` when j's links share one bandwidth) and arrives
  ``latency_{j, dst_k}`` later. Receiver i's time becomes
  ``max(t_i, max over its messages of depart_j + latency_ji + ser_ji)`` (slow, high-latency
  links are where Lian et al., NeurIPS 2017, arXiv:1705.09056, show decentralized training
  winning). Vectorised: a segmented cumulative sum over the edges grouped by sender (a stable
  sort first unless they already are, as :func:`peergrad.topology.graph_edges` lists them) and
  ``scatter_reduce(..., "amax")`` over the edges: O(E) per round, no Python loop over edges or
  workers. What depends only on the edge list, the profile and the message size (the grouping
  by sender, each edge's latency and bandwidth, the delays ``latency + ser``, each link's busy
  time) is computed once per edge list and size and cached: a round over the communicator's
  per-W edges is then a handful of [n]- and [E]-sized operations. A worker does not wait for
  its own sends to complete (buffered sends), but its link stays busy: the next round's
  messages leave at ``max(t_j, link_free_j)`` (ours).
- *pre-gradient* messages (``pre_gradient=True``: they depend only on x, and the engines post
  them before the gradient) leave from the sender's *step start* (its time at
  :meth:`begin_step`, before :meth:`compute`), so their transfer overlaps the computation: the
  receiver waits only for what arrives after its own compute. The clock keeps a second
  per-worker time for this communication stream (``t_pre``): it starts at the step start and is
  advanced by the arrivals of pre-gradient rounds, so several pre-gradient rounds in one step
  follow each other without waiting for the compute. Call order: the engines post these rounds
  *before* the gradient, so they are reported between :meth:`begin_step` and :meth:`compute`;
  the clock then holds their arrivals and applies them when :meth:`compute` has added the step
  time (``t_i <- max(t_i + compute_i, arrivals_i)``). A pre-gradient round reported after
  :meth:`compute` applies at once (same result). Held arrivals are also applied by any other
  communication and by the next :meth:`begin_step` (a step without :meth:`compute`).
- *all-reduce*: a barrier over the present workers (all reach ``T = max t_i``), then the ring
  all-reduce of Patarasuk & Yuan, "Bandwidth optimal all-reduce algorithms for clusters of
  workstations", JPDC 69(2), 2009, over the present workers in id order, costed on the slowest
  link of the ring: ``2 (m - 1) alpha_max + 2 (m - 1) / m * bytes / beta_min`` with m present
  workers (exactly :meth:`NetworkModel.allreduce_time_s`); *all-gather* likewise with
  ``(m - 1) (alpha_max + bytes / beta_min)``, and *all-to-all* (one ``bytes`` slot per pair,
  a pairwise exchange) with the same ``(m - 1) (alpha_max + bytes / beta_min)``.
- *asynchronous all-reduce* (:meth:`SystemClock.all_reduce_start`, later :meth:`SystemClock.wait`;
  e.g. Streaming DiLoCo's outer all-reduce running behind tau inner steps): the post moves no
  worker's time. The collective is the blocking all-reduce's ring over the workers present at
  the post; it starts at ``S = P``, when the last of them posted (``P``: their largest ``t_i``
  at the post; a barrier nobody waits at yet) and ends at ``F = S + duration``. The
  collectives have a stream of their own per worker (``coll_free``; ours, like ``t_pre``): one
  posted while others are in flight on its members starts after them
  (``S = max(P, coll_free)``: two in flight queue), and a blocking collective queues after
  them likewise; compute and gossip do not use it (ours: no contention between collectives and
  gossip). At the wait every worker present then goes to ``max(t_i, F)`` (under churn: also
  one that returned since the post; one absent is not held): of its increase
  ``max(P - t_i, 0)`` is idle and the rest communication, so a wait right after the post is
  :meth:`SystemClock.all_reduce` bit for bit; nothing when ``t_i >= F`` (fully overlapped).
  Identical workers, compute ``c`` per step, a wait tau steps after the post: the wait costs
  ``max(0, duration - tau c)``. Held pre-gradient arrivals are applied at the post (as by any
  collective), not at the wait (they keep overlapping the next compute).
- *failures*: at :meth:`begin_step` each worker is present or not (scheduled intervals, random
  churn); an absent worker neither computes nor sends nor receives, and its clock cannot lag
  behind: it is advanced to the earliest present worker's time (ours: a worker that returns
  starts with the others), that wait counted as ``absent_s``. :meth:`surviving_edges` draws the
  round's link drops (one draw per undirected pair, shared by both directions, so that the
  surviving graph stays undirected; the mixing matrix of that graph comes from
  :func:`peergrad.topology.surviving_weights`).

Accounting per worker (float64 ``[n]``, seconds): ``compute_s``; ``comm_s`` and ``idle_s`` split
each wait in a round: of the increase ``delta_i`` of ``t_i``, ``min(delta_i, D_i)`` is
communication, with ``D_i`` the longest transfer (latency plus serialisation) among the
messages i receives, and the rest is idle (waiting for slower senders or a barrier);
``absent_s``. Always ``compute_s + comm_s + idle_s + absent_s == t`` (to rounding).
:attr:`SystemClock.simulated_time_s` is ``max_i t_i``, the slowest worker.

With identical workers, no compute and uniform links, the slowest worker's time equals the
closed alpha-beta formula of :class:`peergrad.system.network.NetworkModel` exactly (same float
operations) on every regular graph: a gossip round adds ``latency + max_bytes / bandwidth``,
an all-reduce ``allreduce_time_s``.

Not modelled: network contention (two flows through one switch), receive-side serialisation,
message loss, and link occupancy by the collectives (beyond their own stream: a collective
and a gossip round do not slow each other down).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

from peergrad.system.inflight import InFlight, wait_split
from peergrad.system.network import NetworkModel
from peergrad.system.profile import SystemProfile

__all__ = ["SystemClock"]

_STATE_VERSION = 2  # 2: the collective stream and the collectives in flight (1 still loads)
_TIMES = ("t", "t_pre", "link_free", "coll_free", "compute_s", "comm_s", "idle_s", "absent_s")
_MAX_PLANS = 32  # edge lists cached (one per mixing matrix in practice)
_MAX_SEEN = 64  # edge lists seen once, remembered by weak reference
_MAX_COSTS = 8  # message sizes cached per edge list


class _Route:
    """What a round over one edge list needs that depends only on the edges and the profile:
    the edges grouped by sender, their latency and bandwidth, who sends."""

    __slots__ = ("all_send", "bw", "d", "lat", "order", "s", "sent")

    def __init__(self, clock: SystemClock, src: Tensor, dst: Tensor) -> None:
        if bool((src[1:] >= src[:-1]).all()):  # already grouped by sender (graph_edges)
            self.order: Tensor | None = None
            self.s, self.d = src, dst
        else:
            self.order = torch.argsort(src, stable=True)
            self.s, self.d = src[self.order], dst[self.order]
        self.lat: Tensor | None = None
        self.bw: Tensor | None = None
        if not clock._uniform:
            assert clock._lat is not None and clock._bw is not None
            self.lat, self.bw = clock._lat[self.s, self.d], clock._bw[self.s, self.d]
        self.sent = torch.zeros(clock.n_workers, dtype=torch.bool).index_fill_(0, self.s, True)
        self.all_send = bool(self.sent.all())


class _Plan:
    """The clock's cache for one edge list ``(src, dst)`` (kept while they are not modified in
    place): its :class:`_Route`, the pairs of its link-drop draw, and per message size the
    round's delays (:meth:`SystemClock._costs`)."""

    __slots__ = ("costs", "dst", "pairs", "route", "src", "versions")

    def __init__(self, src: Tensor, dst: Tensor) -> None:
        self.src, self.dst = src, dst
        self.versions = (src._version, dst._version)
        self.route: _Route | None = None
        self.pairs: tuple[int, Tensor] | None = None
        self.costs: dict[float, tuple[Tensor, Tensor, Tensor, Tensor]] = {}


def _edge_bytes(
    src: Tensor, dst: Tensor, nbytes: float | Tensor
) -> tuple[float | None, Tensor | None]:
    """A gossip round's message sizes, checked (:meth:`SystemClock.gossip`): ``(size, None)``
    for one number of bytes on every edge, else ``(None, b)`` with ``b`` float64 ``[E]``."""
    if src.dim() != 1 or src.shape != dst.shape:
        raise ValueError(
            f"gossip: src and dst must be int64 [E], got {tuple(src.shape)} and {tuple(dst.shape)}"
        )
    if isinstance(nbytes, (int, float)):
        return float(nbytes), None
    b = torch.as_tensor(nbytes, dtype=torch.float64)
    if b.dim() == 0:
        b = b.expand(src.shape)
    elif b.shape != src.shape:
        raise ValueError(f"gossip: nbytes must be a number or [E], got {tuple(b.shape)}")
    return None, b


class SystemClock:
    """Per-worker simulated time under a :class:`SystemProfile` (model: module docstring).

    Args:
        profile: the system; its step time must be known (a profile giving only
            ``device_flops`` needs :meth:`SystemProfile.with_flops_per_step` first).
        seed: seed of the clock's own ``torch.Generator`` (default ``profile.seed``); the same
            profile, seed and sequence of calls give the same clock, bit for bit.

    Attributes (read them, do not write them):
        t: float64 ``[n]``, each worker's time, seconds.
        compute_s, comm_s, idle_s, absent_s: float64 ``[n]``, cumulative split of ``t``.
        present: bool ``[n]``, the workers present in the current step.
        coll_free: float64 ``[n]``, when each worker's collective stream is free (the finish
            of the last asynchronous all-reduce it is a member of), seconds.
        in_flight: the handles of the asynchronous all-reduces not yet waited for.
        step: number of :meth:`begin_step` calls; rounds: number of communication calls.

    Everything that depends only on an edge list and the profile (the edges grouped by sender,
    their latencies and bandwidths, and per message size the delays of a round) is computed
    once per list: an edge list passed a second time (the same ``src`` and ``dst`` tensors, not
    modified in place since, as the communicator's per-W edges) is cached. This changes no
    number: the cached values are the ones the round would compute.

    Raises:
        ValueError: if the profile's step time is pending.
    """

    def __init__(self, profile: SystemProfile, *, seed: int | None = None) -> None:
        step_s = profile.step_s
        if step_s is None:
            raise ValueError(
                "the system profile gives compute.device_flops but no flops_per_step; call "
                "profile.with_flops_per_step(count_step_flops(model, batch, loss_fn)) first"
            )
        n = profile.n_workers
        self.profile = profile
        self.n_workers = n
        self._generator = torch.Generator().manual_seed(profile.seed if seed is None else seed)
        self._step_time = step_s / profile.speeds()
        c, f = profile.compute, profile.failures
        self._sigma = c.jitter_sigma
        self._p_slow = c.straggler_prob
        self._slowdown = c.straggler_slowdown
        self._p_drop = f.link_drop_prob
        self._p_leave = f.leave_prob
        self._mean_down = f.mean_downtime_steps
        self._log_stay = torch.log1p(torch.tensor(-1.0 / self._mean_down, dtype=torch.float64))
        self._off_worker = torch.tensor([o.worker for o in f.offline], dtype=torch.int64)
        self._off_start = torch.tensor([o.start_step for o in f.offline], dtype=torch.int64)
        self._off_stop = torch.tensor([o.stop_step for o in f.offline], dtype=torch.int64)
        self._churn = self._p_leave > 0 or bool(f.offline)
        links = profile.links
        self._uniform = links.is_uniform
        self._network = NetworkModel(links.latency_s, links.bandwidth_bytes_per_s)
        self._lat: Tensor | None = None
        self._bw: Tensor | None = None
        # non-uniform links: the collectives' ring with every worker present (first use)
        self._ring_network: NetworkModel | None = None
        if not self._uniform:
            self._lat, self._bw = links.matrices(n)
        self._plans: dict[tuple[int, int], _Plan] = {}
        self._seen: dict[tuple[int, int], tuple[Any, Any, tuple[int, int]]] = {}
        self._inf = torch.full((n,), float("inf"), dtype=torch.float64)
        self._zeros = torch.zeros(n, dtype=torch.float64)
        self.t = torch.zeros(n, dtype=torch.float64)
        self.t_pre = torch.zeros(n, dtype=torch.float64)
        self.link_free = torch.zeros(n, dtype=torch.float64)
        self.coll_free = torch.zeros(n, dtype=torch.float64)  # the collective stream
        self._in_flight: dict[int, InFlight] = {}  # all_reduce_start's, by handle
        self._next_handle = 0
        self.compute_s = torch.zeros(n, dtype=torch.float64)
        self.comm_s = torch.zeros(n, dtype=torch.float64)
        self.idle_s = torch.zeros(n, dtype=torch.float64)
        self.absent_s = torch.zeros(n, dtype=torch.float64)
        self.present = torch.ones(n, dtype=torch.bool)
        self._all_present = True
        self._down = torch.zeros(n, dtype=torch.int64)  # steps of absence left (random churn)
        # Pre-gradient rounds reported before compute(): their arrivals wait for compute().
        self._computed = True  # no step in progress: nothing to wait for
        self._pre_arrive = torch.zeros(n, dtype=torch.float64)
        self._pre_longest = torch.zeros(n, dtype=torch.float64)
        self._pre_pending = False
        self.step = 0
        self.rounds = 0

    # ------------------------------------------------------------------ queries
    @property
    def simulated_time_s(self) -> float:
        """The slowest worker's time ``max_i t_i``, seconds."""
        return float(self.t.max())

    def summary(self) -> dict[str, float]:
        """``simulated_time_s`` and the mean and max over workers of each time split."""
        out = {"simulated_time_s": self.simulated_time_s}
        for name in ("compute_s", "comm_s", "idle_s", "absent_s"):
            v: Tensor = getattr(self, name)
            out[f"{name}_mean"] = float(v.mean())
            out[f"{name}_max"] = float(v.max())
        return out

    # ------------------------------------------------------------------ step
    def begin_step(self) -> Tensor:
        """Start a step: decide who is present (scheduled absences, random churn).

        Returns a bool ``[n]`` copy of :attr:`present`. Also records every worker's step start
        (the departure time of pre-gradient messages).
        """
        self._settle_pre()
        if self._churn:  # without churn every worker is always present: nothing to draw
            self._draw_presence()
        self.t_pre = self.t.clone()
        self._computed = False
        self.step += 1
        return self.present.clone()

    def _draw_presence(self) -> None:
        """This step's :attr:`present` (random churn, then scheduled absences); an absent
        worker's clock is advanced to the earliest present worker's time."""
        n, k = self.n_workers, self.step
        absent = torch.zeros(n, dtype=torch.bool)
        if self._p_leave > 0:
            u = torch.rand(n, generator=self._generator, dtype=torch.float64)
            v = torch.rand(n, generator=self._generator, dtype=torch.float64)
            leave = (self._down == 0) & (u < self._p_leave)
            if self._mean_down > 1:
                # Geometric on {1, 2, ...} with mean m: 1 + floor(log(U) / log(1 - 1/m)).
                duration = 1 + torch.floor(torch.log1p(-v) / self._log_stay).to(torch.int64)
            else:
                duration = torch.ones(n, dtype=torch.int64)
            self._down = torch.where(leave, duration, self._down)
            absent |= self._down > 0
            self._down = (self._down - 1).clamp_(min=0)
        if self._off_worker.numel():
            active = (self._off_start <= k) & (k < self._off_stop)
            absent[self._off_worker[active]] = True
        self.present = ~absent
        self._all_present = not bool(absent.any())
        if not self._all_present and bool(self.present.any()):
            ref = self.t[self.present].min()
            wait = torch.where(absent, (ref - self.t).clamp(min=0), self._zeros)
            self.t += wait
            self.absent_s += wait

    def compute(self) -> None:
        """Every present worker computes one step (jitter and transient stragglers drawn now);
        then the pre-gradient rounds reported since :meth:`begin_step` arrive (they overlapped
        the computation)."""
        dt = self._step_time
        if self._sigma > 0:
            z = torch.randn(self.n_workers, generator=self._generator, dtype=torch.float64)
            # dt * exp(sigma z - sigma^2 / 2), in place in z (the same float operations)
            dt = z.mul_(self._sigma).sub_(0.5 * self._sigma**2).exp_().mul_(dt)
        if self._p_slow > 0:
            u = torch.rand(self.n_workers, generator=self._generator, dtype=torch.float64)
            dt = torch.where(u < self._p_slow, dt * self._slowdown, dt)
        if not self._all_present:
            dt = torch.where(self.present, dt, self._zeros)
        self.t += dt
        self.compute_s += dt
        self._computed = True
        self._settle_pre()

    def _settle_pre(self) -> None:
        """Apply the held arrivals of pre-gradient rounds: ``t <- max(t, arrivals)``, the wait
        split into communication (up to the longest transfer received) and idle time."""
        if not self._pre_pending:
            return
        new_t = torch.maximum(self.t, self._pre_arrive)
        waited = new_t - self.t
        comm = torch.minimum(waited, self._pre_longest)
        self.comm_s += comm
        self.idle_s += waited - comm
        self.t = new_t
        self._pre_arrive.zero_()
        self._pre_longest.zero_()
        self._pre_pending = False

    # ------------------------------------------------------------------ edge lists
    def _plan(self, src: Tensor, dst: Tensor) -> _Plan:
        """The cache of the edge list ``(src, dst)``: the stored one when these very tensors
        were passed before (and not modified in place since), else a fresh one, stored from
        the second time they are passed (a list seen once, such as a round's surviving edges,
        is only remembered by weak reference)."""
        key = (id(src), id(dst))
        versions = (src._version, dst._version)
        plan = self._plans.get(key)
        if plan is not None:
            if plan.src is src and plan.dst is dst and plan.versions == versions:
                return plan
            del self._plans[key]
        plan = _Plan(src, dst)
        seen = self._seen.pop(key, None)
        if seen is not None and seen[0]() is src and seen[1]() is dst and seen[2] == versions:
            if len(self._plans) >= _MAX_PLANS:
                del self._plans[next(iter(self._plans))]
            self._plans[key] = plan
        else:
            if len(self._seen) >= _MAX_SEEN:
                del self._seen[next(iter(self._seen))]
            self._seen[key] = (weakref.ref(src), weakref.ref(dst), versions)
        return plan

    def _costs(self, route: _Route, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(delay, ser, busy, longest)`` of a round over ``route`` with ``x`` (float64
        ``[E]``, in route order) the bytes of each message, or their serialisation times on
        non-uniform links: per edge the transfer time (latency plus serialisation since its
        sender's departure) and the serialisation alone; per worker its link's busy time and
        the longest transfer it receives."""
        s, d = route.s, route.d
        # Segmented cumulative sum over each sender's messages: serialisation on its link.
        cs = torch.cumsum(x, 0)
        first = self._inf.scatter_reduce(0, s, cs - x, "amin", include_self=True)
        cum = cs - first[s]
        if self._uniform:
            ser = cum / self._network.bandwidth_bytes_per_s
            delay = self._network.latency_s + ser
        else:
            assert route.lat is not None
            ser = cum
            delay = route.lat + ser
        busy = self._zeros.scatter_reduce(0, s, ser, "amax", include_self=True)
        longest = self._zeros.scatter_reduce(0, d, delay, "amax", include_self=True)
        return delay, ser, busy, longest

    # ------------------------------------------------------------------ failures
    def surviving_edges(self, src: Tensor, dst: Tensor) -> Tensor:
        """This round's surviving edges among ``(src, dst)`` (int64 ``[E]``): bool ``[E]``.

        An edge survives iff both endpoints are present and its link is up; each undirected
        pair ``{i, j}`` is dropped with probability ``link_drop_prob`` by one draw shared by
        both directions (ours), so the surviving graph of an undirected graph is undirected.
        """
        keep = torch.ones(src.shape, dtype=torch.bool)
        if not self._all_present:
            keep &= self.present[src] & self.present[dst]
        if self._p_drop > 0 and src.numel():
            plan = self._plan(src, dst)
            if plan.pairs is None:
                n = self.n_workers
                pair = torch.minimum(src, dst) * n + torch.maximum(src, dst)
                unique, inverse = torch.unique(pair, return_inverse=True)
                plan.pairs = (unique.numel(), inverse)
            count, inverse = plan.pairs
            up = torch.rand(count, generator=self._generator, dtype=torch.float64)
            keep &= (up >= self._p_drop)[inverse]
        return keep

    # ------------------------------------------------------------------ communication
    def gossip(
        self, src: Tensor, dst: Tensor, nbytes: float | Tensor, *, pre_gradient: bool = False
    ) -> None:
        """One gossip round: ``src[e]`` sends ``nbytes`` (a number or float ``[E]``) to ``dst[e]``.

        ``src`` and ``dst`` are int64 ``[E]`` CPU tensors (the clock lives on the CPU whatever
        the engine's device); a sender's messages leave in the order they appear.

        Edges with an absent endpoint are ignored (an absent worker neither sends nor
        receives); drop failed links with :meth:`surviving_edges` first. ``pre_gradient``:
        the messages leave from the senders' step start; reported before :meth:`compute`, their
        arrivals are held until it (see the module docstring).

        Raises:
            ValueError: if ``src``, ``dst`` and ``nbytes`` do not have one shape ``[E]``.
        """
        size, b = _edge_bytes(src, dst, nbytes)
        self.rounds += 1
        held = pre_gradient and not self._computed
        if not held:
            self._settle_pre()
        if self._all_present:
            plan = self._plan(src, dst)
        else:
            keep = self.present[src] & self.present[dst]
            src, dst = src[keep], dst[keep]
            if b is not None:
                b = b[keep]
            plan = _Plan(src, dst)
        if src.numel() == 0:
            return
        route = plan.route
        if route is None:
            route = plan.route = _Route(self, src, dst)
        costs = plan.costs.get(size) if size is not None else None  # type: ignore[arg-type]
        if costs is None:
            if b is None:
                b = torch.full(src.shape, size, dtype=torch.float64)  # type: ignore[arg-type]
            elif route.order is not None:
                b = b[route.order]
            x = b if self._uniform else b / route.bw  # type: ignore[operator]
            costs = self._costs(route, x)
            if size is not None:
                if len(plan.costs) >= _MAX_COSTS:
                    del plan.costs[next(iter(plan.costs))]
                plan.costs[size] = costs
        delay, ser, busy, longest = costs
        s, d = route.s, route.d
        ready = self.t_pre if pre_gradient else self.t
        depart = torch.maximum(ready, self.link_free)
        arrive = torch.index_select(depart, 0, s).add_(delay)
        if held:  # before compute(): applied by _settle_pre
            self._pre_arrive.scatter_reduce_(0, d, arrive, "amax", include_self=True)
            self._pre_longest.scatter_reduce_(0, d, delay, "amax", include_self=True)
            self._pre_pending = True
        else:
            new_t = self.t.scatter_reduce(0, d, arrive, "amax", include_self=True)
            waited = new_t - self.t
            comm = torch.minimum(waited, longest)
            self.comm_s += comm
            self.idle_s += waited.sub_(comm)
            self.t = new_t
        if pre_gradient:
            self.t_pre = self.t_pre.scatter_reduce(0, d, arrive, "amax", include_self=True)
        if route.all_send:
            self.link_free = depart.add_(busy)
        else:
            self.link_free = torch.where(route.sent, depart.add_(busy), self.link_free)

    def all_reduce(self, nbytes: float) -> None:
        """A barrier over the present workers, then a ring all-reduce of ``nbytes`` per worker
        on the slowest link of the ring (Patarasuk & Yuan 2009)."""
        self._collective(float(nbytes), NetworkModel.allreduce_time_s)

    def all_gather(self, nbytes: float) -> None:
        """A barrier over the present workers, then a ring all-gather of ``nbytes`` per worker
        on the slowest link of the ring."""
        self._collective(float(nbytes), NetworkModel.allgather_time_s)

    def all_to_all(self, nbytes: float) -> None:
        """A barrier over the present workers, then an all-to-all of one ``nbytes`` slot per
        pair (pairwise exchange, :meth:`NetworkModel.alltoall_time_s`) on the slowest link of
        the ring (ours: the same links as the other collectives)."""
        self._collective(float(nbytes), NetworkModel.alltoall_time_s)

    def _ring(self, nbytes: float, cost: Any) -> tuple[Tensor, float] | None:
        """The members of a collective (the present workers, int64 ids) and its duration on
        the slowest link of their ring, or ``None`` when it costs nothing (no bytes, or at
        most one member)."""
        members = (
            torch.arange(self.n_workers) if self._all_present else self.present.nonzero()[:, 0]
        )
        m = members.numel()
        if nbytes <= 0 or m <= 1:
            return None
        network = self._network
        if not self._uniform:
            if not self._all_present:
                network = self._ring_links(members)
            else:
                if self._ring_network is None:
                    self._ring_network = self._ring_links(members)
                network = self._ring_network
        return members, cost(network, nbytes, m)

    def _collective(self, nbytes: float, cost: Any) -> None:
        self._settle_pre()
        self.rounds += 1
        ring = self._ring(nbytes, cost)
        if ring is None:
            return
        members, duration = ring
        # queued after the all-reduces in flight (that wait is communication): start > barrier
        if self._all_present:
            barrier = self.t.max()
            start = float(barrier)
            if self._in_flight:
                start = max(start, float(self.coll_free.max()))
            self.idle_s += barrier - self.t
            self.t = torch.full_like(self.t, start + duration)
            self.comm_s += duration + (start - float(barrier))
        else:
            barrier = self.t[members].max()
            start = float(barrier)
            if self._in_flight:
                start = max(start, float(self.coll_free[members].max()))
            self.idle_s[members] += barrier - self.t[members]
            self.t[members] = start + duration
            self.comm_s[members] += duration + (start - float(barrier))

    # ------------------------------------------------------------------ asynchronous
    @property
    def in_flight(self) -> tuple[int, ...]:
        """The handles of the asynchronous all-reduces not yet waited for, in posting order."""
        return tuple(self._in_flight)

    def all_reduce_start(self, nbytes: float) -> int:
        """Post a ring all-reduce of ``nbytes`` per worker over the present workers without
        waiting for it (model: module docstring, *asynchronous all-reduce*): no worker's time
        moves; it starts when the last present worker has posted (and the members' collective
        stream is free) and lasts what :meth:`all_reduce` would cost. Returns its handle, for
        :meth:`wait`."""
        self._settle_pre()
        self.rounds += 1
        handle = self._next_handle
        self._next_handle += 1
        ring = self._ring(float(nbytes), NetworkModel.allreduce_time_s)
        if ring is None:  # nothing to wait for
            self._in_flight[handle] = InFlight(0.0, 0.0, 0.0, 0.0, None)
            return handle
        members, duration = ring
        queued = bool(self._in_flight)  # after the all-reduces in flight on its members
        mask = None if self._all_present else self.present.clone()
        if mask is None:
            posted = float(self.t.max())
            start = max(posted, float(self.coll_free.max())) if queued else posted
            self.coll_free.fill_(start + duration)
        else:
            posted = float(self.t[members].max())
            start = max(posted, float(self.coll_free[members].max())) if queued else posted
            self.coll_free[members] = start + duration
        self._in_flight[handle] = InFlight(posted, start, start + duration, duration, mask)
        return handle

    def wait(self, handle: int) -> None:
        """Wait for the all-reduce ``handle`` of :meth:`all_reduce_start`: every present worker
        goes to ``max(t_i, finish)``, the increase split into idle (waiting for the last member
        to post) and communication as in :meth:`all_reduce` (module docstring).

        Raises:
            ValueError: if ``handle`` is not in flight (never posted, or already waited for).
        """
        entry = self._in_flight.pop(handle, None)
        if entry is None:
            raise ValueError(
                f"wait: no all-reduce with handle {handle} is in flight (in flight: "
                f"{list(self._in_flight)}); each handle of all_reduce_start is waited for once"
            )
        split = wait_split(self.t, entry, None if self._all_present else self.present)
        if split is None:
            return
        self.t, comm, idle = split
        self.comm_s += comm
        self.idle_s += idle

    def wait_all(self) -> None:
        """:meth:`wait` for every all-reduce in flight, in posting order."""
        for handle in list(self._in_flight):
            self.wait(handle)

    def _ring_links(self, members: Tensor) -> NetworkModel:
        """The ring over ``members`` (in id order) costed on its slowest link."""
        assert self._lat is not None and self._bw is not None
        nxt = torch.roll(members, -1)
        return NetworkModel(
            float(self._lat[members, nxt].max()), float(self._bw[members, nxt].min())
        )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly: times, splits, presence, churn counters,
        link occupancy, the collective stream and the all-reduces in flight (a list of
        ``{"handle", "start", "finish", "duration", "members"}``), counters and the generator
        state (tensors are copies)."""
        state: dict[str, Any] = {name: getattr(self, name).clone() for name in _TIMES}
        state.update(
            version=_STATE_VERSION,
            n_workers=self.n_workers,
            profile=repr(self.profile),
            present=self.present.clone(),
            down=self._down.clone(),
            pre_arrive=self._pre_arrive.clone(),
            pre_longest=self._pre_longest.clone(),
            pre_pending=self._pre_pending,
            computed=self._computed,
            step=self.step,
            rounds=self.rounds,
            generator=self._generator.get_state(),
            in_flight=[{"handle": h, **e.to_state()} for h, e in self._in_flight.items()],
            next_handle=self._next_handle,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (also version 1's, saved before the asynchronous
        all-reduce: nothing in flight then).

        Raises:
            ValueError: if it was saved by a clock of another profile or number of workers.
        """
        version = state.get("version")
        if version not in (1, _STATE_VERSION) or state.get("n_workers") != self.n_workers:
            raise ValueError(
                f"clock state is for n_workers = {state.get('n_workers')} (version "
                f"{state.get('version')}), this clock has n_workers = {self.n_workers}"
            )
        if state.get("profile") != repr(self.profile):
            raise ValueError("clock state was saved under another system profile")
        for name in _TIMES:
            saved = self._zeros if version == 1 and name == "coll_free" else state[name]
            setattr(self, name, saved.clone().to(torch.float64))
        self._in_flight = {
            int(e["handle"]): InFlight.from_state(e) for e in state.get("in_flight", [])
        }
        self._next_handle = int(state.get("next_handle", 0))
        self.present = state["present"].clone().to(torch.bool)
        self._all_present = bool(self.present.all())
        self._down = state["down"].clone().to(torch.int64)
        self._pre_arrive = state["pre_arrive"].clone().to(torch.float64)
        self._pre_longest = state["pre_longest"].clone().to(torch.float64)
        self._pre_pending = bool(state["pre_pending"])
        self._computed = bool(state["computed"])
        self.step = int(state["step"])
        self.rounds = int(state["rounds"])
        self._generator.set_state(state["generator"])
