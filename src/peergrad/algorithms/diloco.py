"""DiLoCo and Streaming DiLoCo: H inner AdamW steps, then an outer Nesterov step on the averaged
pseudo-gradient; the model synchronised in fragments, the all-reduce overlapped, blended and
optionally compressed.

Papers: A. Douillard et al., "DiLoCo: Distributed Low-Communication Training of Language
Models", arXiv:2311.08105, 2023; A. Douillard et al., "Streaming DiLoCo with overlapping
communication: Towards a Distributed Free Lunch", arXiv:2501.18512, 2025 (both preprints; later
venues not checked [R?]). Compressed outer steps with error feedback follow SparseLoCo's
top-k + EF recipe [R?, not checked].

Update rule (one ``step`` = one minibatch per worker; shapes ``[w, D]``; ``t = state.step + 1``;
``H = period``, ``P = fragments``, ``tau = overlap_steps``, ``alpha = blend``, ``mu`` =
``block_momentum``, ``zeta`` = ``block_lr``; ``[:, F_p]`` = the columns of fragment p)::

    inner step (every iteration, no communication): LocalSGD's local update, by default
        adamw: x <- (1 - lr * weight_decay) * x, then torch.optim.Adam's step on g with
               β₁ = momentum, β₂ = b2, eps (torch.optim.AdamW's update, equal to it on
               one worker up to rounding);
               every worker keeps its own inner moments (local_state "keep")
    post, fragment p at the iterations t >= 1 with (t - o_p) % H == 0,
          o_p = ((p + 1) * H // P) % H:
        delta   <- anchor[:, F_p] - x[:, F_p]          (pseudo-gradient, worker i's own)
        outer_compressor "none":  delta_bar <- mean_i delta_i        (one all-reduce)
        otherwise (C = the outer compressor):
            delta   <- delta + e[:, F_p]               (outer_error_feedback)
            c       <- C(delta);  e[:, F_p] <- delta - c   (outer_error_feedback)
            delta_bar <- compressed_mean(comm, C, c, exchange=outer_exchange)
    apply, fragment p at t_post + tau (tau = 0: right after its post):
        u[:, F_p] <- mu * u[:, F_p] + delta_bar
        outer     <- anchor[:, F_p] - zeta * (delta_bar + mu * u[:, F_p])  (block_nesterov)
                     anchor[:, F_p] - zeta * u[:, F_p]                       (classical)
        anchor[:, F_p] <- outer
        x[:, F_p] <- alpha * x[:, F_p] + (1 - alpha) * outer       (alpha = 0: x <- outer)

The outer step is ``torch.optim.SGD(lr=block_lr, momentum=block_momentum, nesterov=
block_nesterov)`` applied at ``anchor`` with ``delta_bar`` as its gradient, bit for bit
(:func:`~peergrad.algorithms.local_sgd.outer_sgd_step`; tested with foreach on and off).
``anchor`` is the outer parameters θ: identical on every worker when the workers start from the
same x (``peergrad train`` and ``DistributedOptimizer`` broadcast worker 0's x).

Fragments (Streaming DiLoCo): P contiguous groups of the model's parameter tensors
(``segments``, filled from the model by ``bind_run`` when P > 1): the split into P non-empty
contiguous groups whose largest numel is smallest; among those, the one that fills the earlier
fragments as far as possible (:func:`fragment_groups`). Fragment p syncs every H iterations,
first at ``(p + 1) * H // P`` (or H when that is 0): staggered over the period, the last
fragment at H, 2H, ... With P = 1 the whole model syncs at H, 2H, ... as ``local-sgd``.

Overlap: with tau > 0 a fragment's average is posted with ``comm.mean_start`` at the end of
iteration t and waited for (``comm.wait_for``) at the end of iteration t + tau; on the
distributed engine the all-reduce runs behind those tau inner steps. The result buffer is
``state.inflight`` (the fragment's columns), so a checkpoint holds it: ``peergrad train`` and
``DistributedOptimizer.state_dict`` call ``comm.synchronize()`` before reading the state, and a
resumed run applies the saved average at t + tau as the uninterrupted run does. A compressed
outer exchange (all-gather, compressed all-reduce) runs blocking at the post and its result is
applied tau steps later (same iterates; not overlapped).

Communication (bytes per worker and sync of fragment p, ``D_p`` its numel, ``b`` the itemsize):
``2 (n - 1) / n * D_p * b`` (all-reduce) uncompressed; compressed as
:func:`~peergrad.comm.compressed.compressed_mean` charges it: ``(n - 1) * C.nbytes(D_p)`` for an
all-gather, ``2 (n - 1) / n * k * b`` for the all-reduce of a linear compressor's k values,
``2 (n - 1) * C.nbytes(S)`` for the reduce-scatter (S the shard width; it compresses each
averaged shard again, so it is exact only for the identity). Random compressors draw from the
generator in ``state.rng``, shared by all workers (also the reduce-scatter's).

Equivalent forms (tested in ``tests/test_diloco.py``): P = 1, tau = 0, alpha = 0, no compression
is ``local-sgd`` with the same local update, ``nesterov_style="torch"``, ``block_nesterov`` and
``local_state="keep"`` up to rounding (local-sgd forms ``anchor - mean_i x_i``, DiLoCo
``mean_i (anchor - x_i)``: equal in exact arithmetic, a few ulps apart in floating point); with
``block_momentum = 0`` and ``block_lr = 1`` it is plain K-step model averaging (up to rounding);
the identity outer compressor equals "none" bit for bit.

``DistributedOptimizer``: coordinate-wise (per-group ``lr``/``weight_decay``, buckets stepped
from the gradient hooks) with one fragment, no overlap and no outer compressor; otherwise it
steps the whole buffer at once (fragments, the in-flight buffer and compressors span it).

Defaults and deviations ([D] = library decision, [R?] = recalled, not checked in the papers):
``lr = 1e-3`` [D] (inner; the paper used a schedule [R?]); ``momentum`` (β₁) 0.9; ``b2 = 0.95``
[R?]; ``weight_decay = 0.1`` [R?]; ``period = 50`` [D] (the paper's H = 500); outer lr 0.7 and
Nesterov momentum 0.9 (the paper's); ``blend = 0``, DiLoCo's replacement (Streaming DiLoCo's α
mixes local and outer values; its recommended α is not checked [R?]); outer gradients in 4 bits
as in Streaming DiLoCo are ``outer_compressor="int4"`` (per-chunk absmax scales; the
paper's exact 4-bit format is not checked [R?]).
The fragments' stagger (offsets o_p) and their balance rule are ours [D]; the paper's exact
schedule is [R?]. No inner learning-rate schedule (give one with ``--lr-schedule`` or a torch
scheduler).

Raises ``ValueError`` (one line, naming the option and its range) for ``period < 1``,
``fragments`` < 1 or more than the model's parameter tensors (``segments``), ``overlap_steps``
outside [0, period - 1], ``blend`` outside [0, 1], an unknown ``outer_compressor``, the
unscaled ``sign`` (it carries no magnitude), ``outer_ratio`` outside (0, 1], ``outer_levels <
1``, an ``outer_exchange`` the compressor refuses, ``outer_exchange`` or
``outer_error_feedback`` without an outer compressor, and ``local-sgd`` options DiLoCo does not
have (``local_state`` other than keep, ``nesterov_style`` other than torch, ``warmup_steps`` >
0, ``warmup_sync``/``first_sync`` other than models/period, ``gossip``); plus
:class:`~peergrad.algorithms.local_sgd.LocalSGD`'s checks.

Under failures (absent workers): refused; see ``failures_note``. On the elastic engine
(``--elastic``, torchft): supported (``elastic_note``): a rejoining worker takes the anchor and
the outer state from a live peer, and a compressed outer exchange then runs over the workers
present (the ``reduce-scatter`` exchange needs all of them and stops the run otherwise).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms.base import Closure, check_unit_interval
from peergrad.algorithms.local_sgd import LocalSGD, LocalSGDState, outer_sgd_step
from peergrad.comm.base import Communicator
from peergrad.comm.compressed import check_exchange, compressed_mean
from peergrad.compress import (
    COMPRESSORS,
    Compressor,
    for_error_feedback,
    load_generator,
    make_compressor,
    new_generator_state,
)

#: The options DiLoCo fixes, with the reason shown when another value is given.
FIXED: tuple[tuple[str, Any, str], ...] = (
    ("local_state", "keep", "every worker keeps its own inner optimizer state"),
    ("nesterov_style", "torch", "the outer step is torch.optim.SGD's"),
    ("warmup_steps", 0, "no warm-up phase of synchronous steps"),
    ("warmup_sync", "models", "no warm-up phase"),
    ("first_sync", "period", "fragment p syncs at (t - o_p) % period == 0"),
    ("gossip", False, "the outer step averages exactly"),
)


def fragment_groups(segments: Sequence[int], fragments: int) -> tuple[tuple[int, int], ...]:
    """``fragments`` contiguous, non-empty groups of the parameter tensors ``segments`` (their
    numels, in buffer order), as ``(first, stop)`` tensor-index ranges.

    The rule: the smallest cap L (numel) such that the tensors fit in ``fragments`` contiguous
    groups of at most L each; then, from the first tensor on, each group takes as many tensors
    as fit in L while leaving at least one tensor for every later group. Every group is
    non-empty and at most L, and no contiguous split has a smaller largest group.
    ``ValueError`` when there are fewer tensors than fragments."""
    sizes = [int(s) for s in segments]
    if not 1 <= fragments <= len(sizes):
        raise ValueError(
            f"fragments must be an integer in [1, {len(sizes)}] (the model's parameter "
            f"tensors), got {fragments!r}"
        )

    def groups_needed(cap: int) -> int:
        count, used = 1, 0
        for s in sizes:
            if used + s > cap:
                count, used = count + 1, 0
            used += s
        return count

    low, high = max(sizes), sum(sizes)
    while low < high:  # the smallest cap that P groups can meet
        mid = (low + high) // 2
        if groups_needed(mid) <= fragments:
            high = mid
        else:
            low = mid + 1
    out, i = [], 0
    for p in range(fragments):
        start, used = i, sizes[i]
        i += 1
        left = fragments - p - 1
        while i < len(sizes) - left and (p == fragments - 1 or used + sizes[i] <= low):
            used += sizes[i]
            i += 1
        out.append((start, i))
    return tuple(out)


@functools.lru_cache(maxsize=64)
def fragment_columns(
    segments: tuple[int, ...] | None, fragments: int, D: int
) -> tuple[tuple[int, int], ...]:
    """The fragments' column ranges ``[start, stop)`` of a ``[w, D]`` buffer
    (:func:`fragment_groups` of ``segments``); one fragment is ``((0, D),)``. ``ValueError``
    when P > 1 has no segments or the segments do not sum to D."""
    if fragments == 1:
        return ((0, D),)
    if segments is None:
        raise ValueError(
            f"fragments={fragments} needs segments (the parameter tensors' numels); peergrad "
            "train and DistributedOptimizer fill them from the model, otherwise pass "
            "segments=(...)"
        )
    if sum(segments) != D:
        raise ValueError(f"segments sum to {sum(segments)} but x has D = {D} entries")
    starts = [0]
    for s in segments:
        starts.append(starts[-1] + s)
    return tuple((starts[a], starts[b]) for a, b in fragment_groups(segments, fragments))


@dataclasses.dataclass
class DiLoCoState(LocalSGDState):
    """:class:`~peergrad.algorithms.local_sgd.LocalSGDState` (``anchor`` ``[w, D]``: the outer
    parameters θ; ``block_buffer`` ``[w, D]``: the outer momentum, torch.optim.SGD's buffer;
    both always present) plus ``inflight`` ``[w, D]`` (``overlap_steps > 0``, else ``None``):
    the averaged pseudo-gradients posted and not yet applied, each fragment in its columns
    (written by the all-reduce until it is waited for); ``error`` ``[w, D]``
    (``outer_error_feedback``, else ``None``): the error-feedback memory e; ``rng`` (an outer
    compressor, else ``None``): uint8 state of the compressor's generator, shared by all
    workers."""

    inflight: Tensor | None
    error: Tensor | None
    rng: Tensor | None


@dataclasses.dataclass(frozen=True)
class DiLoCo(LocalSGD):
    """DiLoCo / Streaming DiLoCo (see the module docstring).

    Options:

    - ``lr`` > 0: the inner step size; default 1e-3 [D].
    - ``momentum`` in [0, 1): the inner Adam's β₁ (heavy-ball momentum for local_update=sgd);
      default 0.9.
    - ``weight_decay`` >= 0: the inner decoupled weight decay (adamw); default 0.1 [R?].
    - ``period`` integer >= 1: H, the inner steps between two syncs of a fragment; default 50
      [D] (the paper's 500).
    - ``block_momentum`` in [0, 1), or None: the outer momentum; default 0.9 (None: 1 - 1/n).
    - ``block_lr`` > 0: the outer learning rate; default 0.7.
    - ``block_nesterov`` true or false: the outer momentum in Nesterov's form; default true.
    - ``nesterov_style`` torch only: the outer step is torch.optim.SGD's, bit for bit.
    - ``local_update`` one of sgd, adam, amsgrad, adamw: the inner optimizer; default adamw.
    - ``b2`` in [0, 1): the inner Adam's β₂; default 0.95 [R?].
    - ``local_state`` keep only: every worker keeps its inner optimizer state across syncs.
    - ``warmup_steps`` 0 only: DiLoCo has no synchronous warm-up phase.
    - ``warmup_sync`` models only: no warm-up phase (local-sgd's option).
    - ``first_sync`` period only: the fragments' schedule is fixed by period and fragments.
    - ``gossip`` false only: the outer step averages exactly (all-reduce).
    - ``fragments`` integer in [1, number of parameter tensors]: P, streaming fragments
      (contiguous groups of parameter tensors, numel-balanced) synced on staggered schedules;
      default 1.
    - ``overlap_steps`` integer in [0, period - 1]: tau, inner steps between a fragment's post
      and the application of its outer step (the all-reduce runs behind them); default 0.
    - ``blend`` in [0, 1]: alpha; at application x <- alpha * x + (1 - alpha) * outer; default
      0 (DiLoCo's replacement by the outer parameters).
    - ``outer_compressor`` none or a name of peergrad.compress.COMPRESSORS but sign: the
      compressor of the pseudo-gradients; default none (exact all-reduce).
    - ``outer_ratio`` in (0, 1]: the kept fraction of top-k / random-k outer compression;
      default 0.01.
    - ``outer_levels`` integer >= 1: QSGD's levels for the outer compression; default 16.
    - ``outer_error_feedback`` true or false: error feedback on the compressed pseudo-gradient
      (e <- delta + e - C(delta + e); unbiased compressors used as C / (1 + ω)); default false.
    - ``outer_exchange`` a name of peergrad.comm.compressed.EXCHANGES: how compressed
      pseudo-gradients are averaged (auto, allreduce, allgather, reduce-scatter; see
      compressed_mean); default auto.
    - ``outer_seed`` integer: seed of the outer compressor's generator (shared by all workers).
    - ``segments`` tuple of integers, or None: the parameter tensors' numels (fragments > 1);
      None: filled from the model by peergrad train and DistributedOptimizer.
    """

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.1
    period: int = 50
    block_momentum: float | None = 0.9
    block_lr: float = 0.7
    block_nesterov: bool = True
    nesterov_style: str = "torch"
    local_update: str = "adamw"
    b2: float = 0.95
    local_state: str = "keep"
    fragments: int = 1
    overlap_steps: int = 0
    blend: float = 0.0
    outer_compressor: str = "none"
    outer_ratio: float = 0.01
    outer_levels: int = 16
    outer_error_feedback: bool = False
    outer_exchange: str = "auto"
    outer_seed: int = 0
    segments: tuple[int, ...] | None = None

    name: ClassVar[str] = "diloco"
    failures: ClassVar[str] = "refused"
    failures_note: ClassVar[str] = (
        "the outer parameters (anchor) must stay identical on every worker, and an absent "
        "worker would miss outer steps and keep a stale anchor for the rest of the run"
    )
    #: On the elastic engine a worker that leaves is gone and one that rejoins receives a live
    #: peer's anchor, outer momentum and inner state, so the anchors stay identical.
    elastic: ClassVar[str | None] = "supported"
    elastic_note: ClassVar[str] = (
        "the outer all-reduce averages the pseudo-gradients of the workers present; a "
        "rejoining worker receives a live peer's anchor, outer momentum and inner optimizer "
        "state, so the anchors stay identical on every worker"
    )
    paper: ClassVar[str] = (
        "Douillard et al. 2023, arXiv:2311.08105 (DiLoCo); 2025, arXiv:2501.18512 (Streaming)"
    )
    summary: ClassVar[str] = (
        "DiLoCo: H inner AdamW steps, outer Nesterov on the averaged pseudo-gradient; streaming "
        "fragments, overlap, compressed outer steps"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.segments is not None:  # JSON gives a list
            object.__setattr__(self, "segments", tuple(int(s) for s in self.segments))
        for option, value, why in FIXED:
            if getattr(self, option, value) != value:
                raise ValueError(
                    f"{option} must be {value!r} for diloco ({why}), got "
                    f"{getattr(self, option)!r}; use local-sgd for other values"
                )
        self._check_streaming()
        self._check_outer()

    def _check_streaming(self) -> None:
        P = self.fragments
        most = len(self.segments) if self.segments is not None else None
        if (
            isinstance(P, bool)
            or not isinstance(P, int)
            or P < 1
            or (most is not None and P > most)
        ):
            bound = ">= 1" if most is None else f"in [1, {most}] (the model's parameter tensors)"
            raise ValueError(f"fragments must be an integer {bound}, got {P!r}")
        tau = self.overlap_steps
        if isinstance(tau, bool) or not isinstance(tau, int) or not 0 <= tau < self.period:
            raise ValueError(
                f"overlap_steps must be an integer in [0, period - 1] = [0, {self.period - 1}], "
                f"got {tau!r}"
            )
        check_unit_interval("blend", self.blend, closed_right=True)

    def _check_outer(self) -> None:
        name = self.outer_compressor
        if name not in ("none", *COMPRESSORS):
            raise ValueError(
                f"outer_compressor must be none or one of {', '.join(COMPRESSORS)}; got {name!r}"
            )
        if name == "sign":
            raise ValueError(
                "outer_compressor='sign' cannot carry the pseudo-gradient (1 bit per entry, no "
                "magnitude, 0 decoded as +1); use scaled-sign or another compressor"
            )
        r = self.outer_ratio
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 < r <= 1:
            raise ValueError(f"outer_ratio must be in (0, 1], got {r!r}")
        lv = self.outer_levels
        if isinstance(lv, bool) or not isinstance(lv, int) or lv < 1:
            raise ValueError(f"outer_levels must be an integer >= 1, got {lv!r}")
        if name == "none":
            if self.outer_exchange != "auto" or self.outer_error_feedback:
                raise ValueError(
                    f"outer_exchange={self.outer_exchange!r} and outer_error_feedback="
                    f"{self.outer_error_feedback!r} need an outer_compressor (now none: an exact "
                    "all-reduce); set outer_compressor or leave them at auto and false"
                )
            return
        try:
            check_exchange(self.outer_exchange, self.outer_compressor_for(), generator=True)
        except ValueError as exc:  # "exchange ..." -> "outer_exchange ..."
            raise ValueError(f"outer_{exc}") from None

    # ------------------------------------------------------------------ declarations
    @property
    def coordinatewise(self) -> bool:  # type: ignore[override]
        """True for one fragment, no overlap and no outer compressor (then every coordinate's
        outer step is its own); fragments, an in-flight buffer and compressors span the whole
        buffer."""
        return self.fragments == 1 and self.overlap_steps == 0 and self.outer_compressor == "none"

    def uses_topology(self) -> bool:
        """False: the pseudo-gradients are averaged exactly (or compressed) over all workers."""
        return False

    # ------------------------------------------------------------------ schedule
    def fragment_offset(self, p: int) -> int:
        """o_p: fragment p posts at the iterations t >= 1 with ``(t - o_p) % period == 0``."""
        return ((p + 1) * self.period // self.fragments) % self.period

    def posting(self, t: int) -> list[int]:
        """The fragments posted at the end of iteration ``t`` (1-based; none for t < 1)."""
        if t < 1:
            return []
        H = self.period
        return [p for p in range(self.fragments) if (t - self.fragment_offset(p)) % H == 0]

    def fragment_bounds(self, D: int) -> tuple[tuple[int, int], ...]:
        """The fragments' column ranges of a ``[w, D]`` buffer (:func:`fragment_columns`)."""
        return fragment_columns(self.segments, self.fragments, D)

    def outer_compressor_for(self) -> Compressor | None:
        """The compressor of the pseudo-gradients (``None`` for "none"); with
        ``outer_error_feedback`` an unbiased one is used as ``C / (1 + ω)``
        (:func:`~peergrad.compress.for_error_feedback`)."""
        if self.outer_compressor == "none":
            return None
        C = make_compressor(self.outer_compressor, ratio=self.outer_ratio, levels=self.outer_levels)
        return for_error_feedback(C) if self.outer_error_feedback else C

    # ------------------------------------------------------------------ state
    def init(self, x: Tensor, comm: Communicator) -> DiLoCoState:
        self.fragment_bounds(x.shape[1])  # ValueError for missing or wrong segments
        return DiLoCoState(
            step=0,
            moment_steps=0,
            momentum_buffer=torch.zeros_like(x),
            second_moment=torch.zeros_like(x) if self.local_update != "sgd" else None,
            max_second_moment=torch.zeros_like(x) if self.local_update == "amsgrad" else None,
            anchor=x.clone(),
            block_buffer=torch.zeros_like(x),
            inflight=torch.zeros_like(x) if self.overlap_steps > 0 else None,
            error=torch.zeros_like(x) if self.outer_error_feedback else None,
            rng=new_generator_state(self.outer_seed) if self.outer_compressor != "none" else None,
        )

    def _check_diloco_state(self, state: DiLoCoState) -> None:
        want = {
            "second_moment": self.local_update != "sgd",
            "max_second_moment": self.local_update == "amsgrad",
            "inflight": self.overlap_steps > 0,
            "error": self.outer_error_feedback,
            "rng": self.outer_compressor != "none",
        }
        wrong = [k for k, v in want.items() if (getattr(state, k) is not None) != v]
        if wrong or state.anchor is None or state.block_buffer is None:
            raise ValueError(
                f"{self.name}: the state was made by init for other options ({', '.join(wrong)} "
                f"present or missing); with local_update={self.local_update!r}, overlap_steps="
                f"{self.overlap_steps}, outer_compressor={self.outer_compressor!r} call init again"
            )

    # ------------------------------------------------------------------ step
    def step(  # type: ignore[override]
        self,
        x: Tensor,
        g: Tensor,
        state: DiLoCoState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> DiLoCoState:
        t = state.step + 1
        self._check_diloco_state(state)
        moment_steps = self._local_step(x, g, state, comm)
        bounds = self.fragment_bounds(x.shape[1])
        tau = self.overlap_steps
        for p in self.posting(t - tau) if tau > 0 else ():
            self._apply(x, state, bounds[p], self._wait(state, bounds[p], comm), comm)
        posting = self.posting(t)
        C = self.outer_compressor_for() if posting else None
        gen = load_generator(state.rng) if C is not None and state.rng is not None else None
        for p in posting:
            mean = self._post(x, state, bounds[p], comm, C, gen)
            if mean is not None:  # tau = 0: applied at once
                self._apply(x, state, bounds[p], mean, comm)
        rng = gen.get_state() if gen is not None else state.rng
        return dataclasses.replace(state, step=t, moment_steps=moment_steps, rng=rng)

    def _post(
        self,
        x: Tensor,
        state: DiLoCoState,
        cols: tuple[int, int],
        comm: Communicator,
        C: Compressor | None,
        gen: torch.Generator | None,
    ) -> Tensor | None:
        """Average fragment ``cols``'s pseudo-gradient: returned (tau = 0) or left in flight
        into ``state.inflight`` (tau > 0, ``None`` returned)."""
        a, b = cols
        assert state.anchor is not None
        anchor = state.anchor[:, a:b]
        delta = torch.sub(anchor, x[:, a:b], out=comm.workspace(anchor, "diloco.delta"))
        if C is None:
            if state.inflight is None:
                return comm.mean(delta)
            out = state.inflight[:, a:b]
            comm.mean_start(delta, out=out)
            return None
        if state.error is not None:
            delta.add_(state.error[:, a:b])
        msg = C.compress(delta, gen, worker_ids=comm.worker_ids, n_workers=comm.n_workers)
        if state.error is not None:
            state.error[:, a:b] = delta - C.decompress(msg)
        mean = compressed_mean(comm, C, msg, exchange=self.outer_exchange, generator=gen)
        if state.inflight is None:
            return mean
        state.inflight[:, a:b].copy_(mean)  # blocking exchange, applied tau steps later
        return None

    @staticmethod
    def _wait(state: DiLoCoState, cols: tuple[int, int], comm: Communicator) -> Tensor:
        """Fragment ``cols``'s averaged pseudo-gradient, once its all-reduce is done."""
        assert state.inflight is not None
        out = state.inflight[:, cols[0] : cols[1]]
        return comm.wait_for(out)

    def _apply(
        self,
        x: Tensor,
        state: DiLoCoState,
        cols: tuple[int, int],
        mean: Tensor,
        comm: Communicator,
    ) -> None:
        """The outer step of fragment ``cols`` with the averaged pseudo-gradient ``mean``, then
        the blend of x with the new outer parameters."""
        a, b = cols
        assert state.anchor is not None and state.block_buffer is not None
        anchor, u = state.anchor[:, a:b], state.block_buffer[:, a:b]
        mu, zeta = self.resolved_block_momentum(comm.n_workers), self.block_lr
        xs = x[:, a:b]
        if self.blend == 0:
            outer_sgd_step(xs, anchor, mean, u, mu, zeta, self.block_nesterov, comm)
            return
        outer = comm.workspace(anchor, "diloco.outer")
        outer_sgd_step(outer, anchor, mean, u, mu, zeta, self.block_nesterov, comm)
        xs.mul_(self.blend).add_(outer, alpha=1.0 - self.blend)
