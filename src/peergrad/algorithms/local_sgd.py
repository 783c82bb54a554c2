"""Local SGD (K-step averaging) with block momentum: K-AVG, BMUF, SlowMo, post-local SGD.

Paper: Cong and Liu, "Accelerate Distributed Stochastic Descent for Nonconvex Optimization with
Momentum", MLHPC/AI4S workshop at SC20, 2020, pp. 29-39, DOI 10.1109/MLHPCAI4S51975.2020.00011,
arXiv:2110.00625 (only the abstract was consulted for the spec).
Related forms covered by the same template (spec ``compression-momentum-adam.md`` §4): K-AVG
(Zhou & Cong, IJCAI 2018, arXiv:1708.01012), local SGD and post-local SGD (Lin, Stich, Patel,
Jaggi, ICLR 2020, arXiv:1808.07217), BMUF (Chen & Huo, ICASSP 2016), SlowMo (Wang, Tantia,
Ballas, Rabbat, ICLR 2020, arXiv:1910.00643) and CNTK's ``BlockMomentumSGD``.

Update rule (one ``step`` = one minibatch per worker; shapes ``[w, D]``; ``t = state.step + 1``;
``mu`` = :meth:`LocalSGD.resolved_block_momentum`, ``zeta`` = ``block_lr``)::

    local step (every iteration; no communication but the warm-up's gradient average):
        sgd:            x <- x - lr * heavy_ball(buf, g + weight_decay * x, momentum, nesterov)
        adam/amsgrad:   m <- EMA_momentum(g), v <- EMA_b2(g**2) [, v_max <- max(v_max, v)],
                        x <- x - lr / (1 - momentum**s) * m / (sqrt(v / (1 - b2**s)) + eps)
                        (torch.optim.Adam's bias-corrected step; s counts the moment updates
                        since the buffers were last zeroed)
        adamw:          x <- (1 - lr * weight_decay) * x, then the adam step on g (decoupled
                        weight decay, torch.optim.AdamW; Loshchilov & Hutter, ICLR 2019,
                        arXiv:1711.05101); the other local updates add weight_decay * x to g
    warm-up (t <= warmup_steps), by ``warmup_sync``:
        "models":     every warm-up iteration ends with a sync (K = 1), as below
        "gradients":  g <- mean_i g_i before the local step (DDP's all-reduce of the
                      gradients: one all-reduce of D; identical x and local buffers on every
                      worker); no sync, no reset, no block step; at t = warmup_steps the
                      anchor <- x (the first block starts where the warm-up ended)
        "none":       no communication (torch's PeriodicModelAverager alone); the first block
                      then spans the warm-up too (its anchor is the initial x)
    sync (after the warm-up: t - warmup_steps = period, 2 period, ... with ``first_sync``
          "period"; = 1, 1 + period, 1 + 2 period, ... with "immediate", torch's schedule):
        x_bar <- mean_i x_i                (one all-reduce; ``gossip=True``: x_bar <- W x, one
                                            gossip round with W(s) of the s-th sync)
        local buffers: "keep" | "reset" (zeroed) | "average" (sent in the same message as x)
        block step (skipped when mu == 0 and zeta == 1, i.e. plain K-AVG):
            d      <- anchor - x_bar       (block gradient; anchor = where this block started)
            u      <- mu * u + zeta * d
            x      <- anchor - u                      (classical, BMUF-CBM)
            x      <- anchor - zeta * d - mu * u      (block_nesterov, BMUF-NBM; nesterov_style
                                                       "bmuf")
            x      <- anchor - (1 + mu) * u           (block_nesterov, nesterov_style "cntk")
            nesterov_style "torch" (torch.optim.SGD(lr=zeta, momentum=mu, nesterov=
            block_nesterov) applied at the anchor with d as its gradient, bit for bit; u is
            torch's momentum buffer, unscaled by zeta):
                   u <- mu * u + d;  x <- anchor - zeta * (d + mu * u)   (block_nesterov)
                                     x <- anchor - zeta * u              (classical)
            anchor <- x

Equivalent forms (tested in ``tests/test_local_sgd.py``, spec §4.4): ``period=1``, ``mu = 0``,
``zeta = 1`` is synchronous SGD (``allreduce``); ``mu = 0``, ``zeta = 1`` is plain model
averaging (K-AVG); SlowMo with a constant lr is ``mu = beta``, ``zeta = alpha``; CNTK's classical
block momentum with ``bm``, ``blr`` is ``mu = bm``, ``zeta = (1 - bm) * n * blr``; the BMUF
paper's NBM recursion is ``block_nesterov`` with the "bmuf" style; ``period=1``, ``zeta = 1`` and
plain local SGD is all-reduce SGD with heavy-ball momentum ``mu``. Post-local SGD is
``warmup_steps = t'``, ``block_momentum = 0``. PyTorch's own forms (tested against torch on 4
gloo processes, ``tests/test_torch_local_sgd.py``; the mapping: docs/guide/torch-local-sgd.md):
``torch.optim.SGD`` + ``PeriodicModelAverager(period=K, warmup_steps=W)`` is ``period=K``,
``block_momentum=0``, ``local_state="keep"``, ``warmup_steps=W``, ``warmup_sync="none"``,
``first_sync="immediate"``; DDP with ``post_localSGD_hook`` (``start_localSGD_iter=W``, no
post-local gradient all-reduce) + ``PostLocalSGDOptimizer`` is the same with
``warmup_sync="gradients"`` (the preset ``post-local-sgd``). With ``gossip=True``
(decentralized local SGD, [D]) one gossip round does not reach consensus, so every worker keeps
its own anchor and block momentum; a doubly stochastic W preserves the workers' mean at the
sync.

Communication: nothing on local steps; one all-reduce (or one gossip round) per sync of ``D``
values, or ``(1 + B) D`` with ``local_state="average"`` (B = 1 momentum buffer for SGD with
momentum, 2 for Adam, 3 for AMSGrad), so ``bytes_sent`` grows only at syncs; with
``warmup_sync="gradients"`` also one all-reduce of the ``D`` gradient values per warm-up
iteration (whatever ``local_state``), with "none" nothing during the warm-up.

Defaults and deviations ([D] = library decision, [R]/[R?] = recalled, not checked in the paper):
``period = 8`` [D]; ``block_momentum = None`` means the BMUF rule ``1 - 1/n`` [R]; ``block_lr =
1``; ``local_state = "reset"`` (CNTK's default) [D]; Cong & Liu's exact normalisation of d (by K
or by lr), their Nesterov form and their local-momentum policy are not known ([R?]/[U], spec §4.2
and §7); this implementation uses the un-normalised BMUF form. SlowMo's ``1/lr`` normalisation
only matters with a learning-rate schedule, which the library does not have, so it is not
offered. Averaging is uniform (no sample-count weights). The block step is applied at every sync,
warm-up syncs included (``warmup_sync="models"``). With ``local_state="reset"`` and ``period =
1`` the local momentum is zeroed after every step, i.e. has no effect; use "keep" or "average"
there. For the Adam local updates ``momentum`` is β₁ (set it, e.g. 0.9: its default 0 gives
RMSProp with bias correction).

State that ``init`` allocated for other options (e.g. no block buffers because mu = 0 and
zeta = 1, or no Adam moments) does not fit a changed ``block_momentum``/``block_lr``/
``local_update``: ``step`` then raises ``ValueError`` (call ``init`` again).

Raises ``ValueError`` for ``lr <= 0``, ``momentum``, ``block_momentum`` or ``b2`` outside
[0, 1), ``weight_decay < 0``, ``period < 1``, ``warmup_steps < 0``, ``block_lr <= 0``,
``eps <= 0``, an unknown ``local_update``, ``local_state``, ``nesterov_style``, ``warmup_sync``
or ``first_sync``, Nesterov local momentum with an Adam local update, ``warmup_sync="gradients"``
with ``gossip=True``, and (``gossip=True``) a W(k) that is not doubly stochastic.

Under failures (a system profile's dropped links or absent workers): a sync averages over the
present workers (gossip=True: the surviving W); a returning worker rejoins at the next sync, with a
stale anchor and block momentum when those are used. A ``warmup_sync="gradients"`` warm-up
averages the present workers' gradients (as ``allreduce``); a returning worker keeps its stale x
until the first sync.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms.base import (
    Closure,
    SGDAlgorithm,
    check_choice,
    check_positive,
    check_unit_interval,
    require_doubly_stochastic,
)
from peergrad.comm.base import Communicator
from peergrad.transforms import (
    adaptive_denominator,
    adaptive_step,
    add_weight_decay,
    amsgrad_max,
    ema_first_moment,
    ema_second_moment,
    heavy_ball,
)

LOCAL_UPDATES = ("sgd", "adam", "amsgrad", "adamw")
LOCAL_STATES = ("keep", "reset", "average")
NESTEROV_STYLES = ("bmuf", "cntk", "torch")
WARMUP_SYNCS = ("models", "gradients", "none")
FIRST_SYNCS = ("period", "immediate")


@dataclasses.dataclass
class LocalSGDState:
    """``step``: iterations done; ``moment_steps``: local Adam updates since the moments were
    last zeroed (bias correction; unused by SGD); ``momentum_buffer`` ``[w, D]``: heavy-ball
    buffer (SGD) or first moment m (Adam); ``second_moment``, ``max_second_moment`` ``[w, D]``:
    Adam's v and AMSGrad's running max (``None`` when unused); ``anchor`` ``[w, D]``: the point
    the current block started from, ``block_buffer`` ``[w, D]``: the block momentum u (both
    ``None`` for plain averaging, mu = 0 and zeta = 1)."""

    step: int
    moment_steps: int
    momentum_buffer: Tensor
    second_moment: Tensor | None
    max_second_moment: Tensor | None
    anchor: Tensor | None
    block_buffer: Tensor | None


@dataclasses.dataclass(frozen=True)
class LocalSGD(SGDAlgorithm):
    """K local steps, then averaging and a block-momentum step (see the module docstring).

    Hyper-parameters: ``lr``, ``momentum`` (heavy-ball, or Adam's β₁), ``nesterov`` (local,
    SGD only), ``weight_decay``; ``period`` (K >= 1); ``block_momentum`` (mu in [0, 1), or
    ``None`` for ``1 - 1/n``); ``block_lr`` (zeta > 0); ``block_nesterov``; ``nesterov_style``
    ("bmuf" | "cntk" | "torch"); ``local_update`` ("sgd" | "adam" | "amsgrad" | "adamw"); ``b2``,
    ``eps`` (Adam);
    ``local_state`` ("keep" | "reset" | "average"); ``warmup_steps`` (post-local SGD's
    synchronous phase) with ``warmup_sync`` ("models" | "gradients" | "none") and ``first_sync``
    ("period" | "immediate"); ``gossip`` (average by one gossip round over the topology instead
    of an all-reduce).

    Options:

    - ``lr`` > 0: the local step size γ; default 0.1.
    - ``momentum`` in [0, 1): local heavy-ball momentum (sgd) or Adam's β₁ (adam, amsgrad);
      default 0: in Cong & Liu each learner runs plain SGD and momentum is applied only at the
      block level (with local_update=adam pass --momentum 0.9 for Adam's β₁).
    - ``nesterov`` true or false: Nesterov's form of the local momentum (local_update=sgd only).
    - ``period`` integer >= 1: K, local steps between syncs; default 8.
    - ``block_momentum`` in [0, 1), or None: μ, the block momentum; None: the BMUF rule 1 - 1/n.
    - ``block_lr`` > 0: ζ, the block learning rate; default 1.
    - ``block_nesterov`` true or false: the Nesterov form of the block momentum.
    - ``nesterov_style`` one of bmuf, cntk, torch: which block-momentum form (BMUF-NBM, CNTK's,
      or torch.optim.SGD's with lr = block_lr applied to the block gradient, bit for bit).
    - ``local_update`` one of sgd, adam, amsgrad, adamw: the local optimizer (adam, amsgrad,
      adamw: torch's bias-corrected Adam with β₁ = momentum, ``b2``, ``eps``; adamw decouples
      weight_decay as torch.optim.AdamW).
    - ``b2`` in [0, 1): β₂ of the local Adam; default 0.999.
    - ``eps`` > 0: ε of the local Adam; default 1e-8.
    - ``local_state`` one of reset, keep, average: what the local optimizer's buffers do at a
      sync; reset (default, CNTK), keep, or average (sent with x).
    - ``warmup_steps`` integer >= 0: the first warmup_steps iterations are synchronous
      (post-local SGD), communicating as warmup_sync says; default 0.
    - ``warmup_sync`` one of models, gradients, none: what a warm-up iteration communicates;
      models (default): K = 1, a sync after every local step; gradients: the gradients are
      averaged before the local step (DDP's all-reduce, so x and the local buffers stay
      identical on every worker; torch's post_localSGD_hook); none: nothing (torch's
      PeriodicModelAverager on its own).
    - ``first_sync`` one of period, immediate: when the syncs after the warm-up fall; period
      (default): K steps after it ends, then every K; immediate: the first iteration after it
      ends with a sync, then every K (torch's PeriodicModelAverager).
    - ``gossip`` true or false: average by one gossip round over --topology instead of an exact
      all-reduce.
    """

    period: int = 8
    block_momentum: float | None = None
    block_lr: float = 1.0
    block_nesterov: bool = False
    nesterov_style: str = "bmuf"
    local_update: str = "sgd"
    b2: float = 0.999
    eps: float = 1e-8
    local_state: str = "reset"
    warmup_steps: int = 0
    warmup_sync: str = "models"
    first_sync: str = "period"
    gossip: bool = False

    name: ClassVar[str] = "local-sgd"
    failures_note: ClassVar[str] = (
        "a sync averages over the present workers (gossip=True: the surviving W); a returning "
        "worker rejoins at the next sync, with a stale anchor and block momentum when those are "
        "used"
    )
    paper: ClassVar[str] = "Cong & Liu, MLHPC 2020, arXiv:2110.00625 (BMUF, SlowMo, local SGD)"
    summary: ClassVar[str] = (
        "local SGD: K local steps, then exact averaging (or gossip) and a block-momentum step"
    )

    coordinatewise: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("period", "warmup_steps"):
            value = getattr(self, name)
            low = 1 if name == "period" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.block_momentum is not None:
            check_unit_interval("block_momentum", self.block_momentum)
        check_positive("block_lr", self.block_lr)
        check_choice("nesterov_style", self.nesterov_style, NESTEROV_STYLES)
        check_choice("local_update", self.local_update, LOCAL_UPDATES)
        check_choice("local_state", self.local_state, LOCAL_STATES)
        check_choice("warmup_sync", self.warmup_sync, WARMUP_SYNCS)
        check_choice("first_sync", self.first_sync, FIRST_SYNCS)
        if self.gossip and self.warmup_sync == "gradients":
            raise ValueError(
                "warmup_sync='gradients' (an exact all-reduce of the gradients) needs "
                "gossip=False; with gossip=True use warmup_sync 'models' or 'none'"
            )
        check_unit_interval("b2", self.b2)
        check_positive("eps", self.eps)
        if self.nesterov and self.local_update != "sgd":
            raise ValueError(
                f"nesterov (local Nesterov momentum) needs local_update='sgd', got "
                f"local_update={self.local_update!r}; for block Nesterov use block_nesterov"
            )

    # ------------------------------------------------------------------ schedule
    def resolved_block_momentum(self, n_workers: int) -> float:
        """mu: ``block_momentum``, or the BMUF rule ``1 - 1/n`` when it is ``None``."""
        return 1.0 - 1.0 / n_workers if self.block_momentum is None else self.block_momentum

    def is_sync(self, t: int) -> bool:
        """Whether iteration ``t`` (1-based) ends with a sync (an average of the models)."""
        if t <= self.warmup_steps:
            return self.warmup_sync == "models"
        offset = 1 if self.first_sync == "immediate" else 0
        return (t - self.warmup_steps - offset) % self.period == 0

    def averages_gradient(self, t: int) -> bool:
        """Whether iteration ``t`` averages the gradients before its local step (a warm-up
        iteration with ``warmup_sync="gradients"``)."""
        return t <= self.warmup_steps and self.warmup_sync == "gradients"

    def syncs_done(self, t: int) -> int:
        """Number of syncs (model averages) in iterations ``1..t``."""
        warm = min(t, self.warmup_steps) if self.warmup_sync == "models" else 0
        after = max(0, t - self.warmup_steps)
        if self.first_sync == "immediate":
            return warm + (after + self.period - 1) // self.period
        return warm + after // self.period

    def uses_block_step(self, n_workers: int) -> bool:
        return not (self.resolved_block_momentum(n_workers) == 0 and self.block_lr == 1)

    def uses_topology(self) -> bool:
        """Only with ``gossip=True``; by default a sync is an exact all-reduce."""
        return self.gossip

    def check_topology(self, comm: Communicator) -> None:
        if self.gossip:
            require_doubly_stochastic(comm, f"{self.name} with gossip=True")

    # ------------------------------------------------------------------ state
    def init(self, x: Tensor, comm: Communicator) -> LocalSGDState:
        adam = self.local_update != "sgd"
        block = self.uses_block_step(comm.n_workers)
        return LocalSGDState(
            step=0,
            moment_steps=0,
            momentum_buffer=torch.zeros_like(x),
            second_moment=torch.zeros_like(x) if adam else None,
            max_second_moment=torch.zeros_like(x) if self.local_update == "amsgrad" else None,
            anchor=x.clone() if block else None,
            block_buffer=torch.zeros_like(x) if block else None,
        )

    def local_buffers(self, state: LocalSGDState) -> list[Tensor]:
        """The base optimizer's buffers that the local-state policy acts on."""
        if self.local_update == "sgd":
            return [state.momentum_buffer] if self.momentum > 0 else []
        extra = [state.second_moment, state.max_second_moment]
        return [state.momentum_buffer, *(b for b in extra if b is not None)]

    def _check_state(self, state: LocalSGDState, comm: Communicator) -> None:
        block = self.uses_block_step(comm.n_workers)
        adam = self.local_update != "sgd"
        amsgrad = self.local_update == "amsgrad"
        if (
            (state.anchor is not None) != block
            or (state.second_moment is not None) != adam
            or (state.max_second_moment is not None) != amsgrad
        ):
            raise ValueError(
                f"{self.name}: the state was made by init for other options (block step "
                f"{state.anchor is not None}, Adam moments {state.second_moment is not None}); "
                f"with block_momentum={self.block_momentum}, block_lr={self.block_lr}, "
                f"local_update={self.local_update!r} call init again"
            )

    # ------------------------------------------------------------------ step
    def _local_step(self, x: Tensor, g: Tensor, state: LocalSGDState, comm: Communicator) -> int:
        """One local update of x in place; returns the new ``moment_steps``."""
        if self.local_update == "adamw":
            if self.weight_decay:  # decoupled, as torch.optim.AdamW: before the moments
                x.mul_(1.0 - self.lr * self.weight_decay)
        else:
            g = add_weight_decay(g, x, self.weight_decay)
        if self.local_update == "sgd":
            d = heavy_ball(state.momentum_buffer, g, self.momentum, self.nesterov)
            x.sub_(d, alpha=self.lr)
            return state.moment_steps
        s = state.moment_steps + 1
        v = state.second_moment
        assert v is not None
        ema_first_moment(state.momentum_buffer, g, self.momentum)
        ema_second_moment(v, g, self.b2)
        if state.max_second_moment is not None:
            v = amsgrad_max(state.max_second_moment, v)
        bc1, bc2_sqrt = 1.0 - self.momentum**s, math.sqrt(1.0 - self.b2**s)
        denom = adaptive_denominator(
            v, self.eps * bc2_sqrt, "add", out=comm.workspace(x, "local_sgd.denom")
        )
        adaptive_step(x, state.momentum_buffer, denom, self.lr * bc2_sqrt / bc1)
        return s

    def _average(self, x: Tensor, state: LocalSGDState, comm: Communicator, t: int) -> None:
        """x (and, for "average", the local buffers) <- their mean, in one message."""
        parts = [x] + (self.local_buffers(state) if self.local_state == "average" else [])
        w, D = x.shape
        send = x
        if len(parts) > 1:
            send = comm.workspace(x[:, :1].expand(w, len(parts) * D), "local_sgd.send")
            for k, p in enumerate(parts):
                send[:, k * D : (k + 1) * D].copy_(p)
        if self.gossip:
            W = comm.topology.at(self.syncs_done(t) - 1)
            avg = comm.mix(send, W, out=comm.workspace(send, "local_sgd.recv"))
        else:
            avg = comm.mean(send)
        for k, p in enumerate(parts):
            p.copy_(avg[:, k * D : (k + 1) * D])

    def _block_step(self, x: Tensor, state: LocalSGDState, comm: Communicator) -> None:
        """x holds x_bar; apply the block momentum from ``state.anchor`` (in place)."""
        anchor, u = state.anchor, state.block_buffer
        assert anchor is not None and u is not None
        mu, zeta = self.resolved_block_momentum(comm.n_workers), self.block_lr
        d = torch.sub(anchor, x, out=comm.workspace(x, "local_sgd.block_grad"))
        if self.nesterov_style == "torch":
            outer_sgd_step(x, anchor, d, u, mu, zeta, self.block_nesterov, comm, overwrite_d=True)
            return
        u.mul_(mu).add_(d, alpha=zeta)
        if not self.block_nesterov:
            torch.sub(anchor, u, out=x)
        elif self.nesterov_style == "bmuf":
            torch.sub(anchor, u, alpha=mu, out=x).sub_(d, alpha=zeta)
        else:
            torch.sub(anchor, u, alpha=1.0 + mu, out=x)
        anchor.copy_(x)

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: LocalSGDState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> LocalSGDState:
        t = state.step + 1
        self._check_state(state, comm)
        moment_steps = self._local_step(x, self.warmup_gradient(g, t, comm), state, comm)
        if self.is_sync(t):
            self._average(x, state, comm, t)
            if self.local_state == "reset":
                for buf in self.local_buffers(state):
                    buf.zero_()
                moment_steps = 0
            if state.anchor is not None:
                self._block_step(x, state, comm)
        else:
            self.end_warmup(x, state, t)
        return dataclasses.replace(state, step=t, moment_steps=moment_steps)

    def warmup_gradient(self, g: Tensor, t: int, comm: Communicator) -> Tensor:
        """``mean_i g_i`` (one all-reduce of D) when iteration ``t`` averages the gradients
        (:meth:`averages_gradient`), else ``g``; shape ``[w, D]`` either way."""
        return comm.mean(g) if self.averages_gradient(t) else g

    def end_warmup(self, x: Tensor, state: LocalSGDState, t: int) -> None:
        """After the last iteration of a ``warmup_sync="gradients"`` warm-up, the first block
        starts from the (common) x: ``anchor <- x`` when there is an anchor."""
        if t == self.warmup_steps and self.warmup_sync == "gradients":
            if state.anchor is not None:
                state.anchor.copy_(x)


def outer_sgd_step(
    x: Tensor,
    anchor: Tensor,
    d: Tensor,
    u: Tensor,
    mu: float,
    zeta: float,
    nesterov: bool,
    comm: Communicator,
    *,
    overwrite_d: bool = False,
) -> None:
    """``torch.optim.SGD(lr=zeta, momentum=mu, nesterov=nesterov)`` applied at ``anchor`` to the
    block gradient ``d`` as its gradient, written into ``x`` and ``anchor`` (all ``[w, D]``).

    The same operations in the same order as torch's single-tensor and foreach SGD (dampening 0,
    no weight decay), so the result is bit-for-bit torch's::

        u <- mu * u + d                           (torch: buf.mul_(mu).add_(d); a zero u on
                                                   the first block equals torch's clone(d))
        step <- d + mu * u   (nesterov)   |   u   (classical)
        anchor <- anchor - zeta * step;  x <- anchor

    ``u`` is torch's momentum buffer (not scaled by zeta, unlike the "bmuf"/"cntk" forms).
    ``overwrite_d=True`` lets the Nesterov step be written into ``d`` (a scratch buffer the
    caller owns), as torch writes it into ``.grad``; otherwise into a workspace. Memory passes
    over D (reads + writes): 13 with ``overwrite_d``, torch's 11 plus ``x <- anchor``
    (``benchmarks/outer_step.py`` times it against torch's step).
    """
    u.mul_(mu).add_(d)
    step = u
    if nesterov and overwrite_d:
        step = d.add_(u, alpha=mu)  # torch: grad.add_(buf, alpha=momentum)
    elif nesterov:
        step = torch.add(d, u, alpha=mu, out=comm.workspace(x, "local_sgd.outer_step"))
    anchor.add_(step, alpha=-zeta)  # torch: param.add_(grad, alpha=-lr)
    x.copy_(anchor)
