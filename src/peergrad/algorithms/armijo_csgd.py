"""Armijo compressed SGD: compressed SGD with memory, an Armijo step and a scaled descent step.

Paper: A. Subramaniam, A. Magesh, V. V. Veeravalli, "Adaptive Step-Size Methods for Compressed
SGD", arXiv:2207.10046 (2022), ICASSP 2023; journal version "... With Memory Feedback", IEEE
Trans. Signal Processing 72 (2024). Line search: S. Vaswani et al., "Painless Stochastic
Gradient", NeurIPS 2019, arXiv:1905.09997. Spec: compression-momentum-adam.md §3.2-§3.7.

Update rule (worker i, shapes ``[w, D]``, per-worker scalars ``[w]``; C from ``compressor``,
``ratio``, ``levels``, used as C / (1 + ω) when it is unbiased with variance ω and
``memory=True``; δ = ``C.delta(D)``; a(eta) from ``scale`` / ``scale_rule``, below)::

    d     <- heavy_ball(buf, g + weight_decay * x, momentum, nesterov)   (d = g by default)
    eta0  <- lr at step 0; then min(eta_prev * gamma_reset ** (1 / batches_per_epoch), eta_max)
             (reset="grow"), or eta_max at every step (reset="max")
    ell   <- closure.loss (the gradient pass's loss at x; closure(x) for a plain callable)
             + weight_decay / 2 * ||x||^2                                (no communication)
    L_m   <- 2 (closure(x - e) + wd / 2 ||x - e||^2 - ell + <g_wd, e>) / ||e||^2,
    tau   <- ||e|| / step_norm            (scale_rule="lag" only, where e != 0; else 0 and 0)
    eta   <- eta0 * beta_b ** j, the first j = 0..max_backtracks with
             closure(trial(eta)) + wd / 2 ||trial||^2 <= ell - c * eta * <g_wd, d>,
             trial(eta) = x - eta * d (search_on="uncompressed")
                        or x - C(e + eta / a(eta) * d) (search_on="compressed");
             fail_step if none passes; eta0 unchecked when ||g_wd|| < skip_tol
    eta   <- min_j / mean_j eta_j over all workers (agree_step="min"/"mean"; all-gather)
    s     <- (eta * (lr / lr0) / a(eta)) * d;  step_norm <- ||s||
    p     <- e + s                            (memory=True; p <- s when memory=False)
    Delta <- C(p);  e <- p - Delta;  x <- x - mean_i Delta_i;  eta_prev <- eta  (unscaled)
    delta <- clamp(1 - ||p - Delta||^2 / ||p||^2, δ, 1)       (scale_rule="contraction" only)

    a(eta) = scale                                  when ``scale`` is given (fixed)
           = clamp(eta * L_m * (1 + tau), 1, 1/δ)   scale_rule="lag" (default)
           = 1 / delta (the previous step's)        scale_rule="contraction" (1/δ at step 0)
           = 1/δ                                    scale_rule="worst-case" (the spec's default)
           = 1                                      without ``scale``, for a C with no δ

Scale rule (issue 16). Error feedback makes x lag behind the virtual iterate x - e, which runs
SGD with the steps s exactly (spec §3.3): the method is SGD with delayed gradients, stable when
the step times (1 + the delay) is at most about 1/L. Armijo's η is about 1/L along d, so the
spec's a = 1/δ (§3.4) inserts the delay that a δ-contraction allows at worst. ``lag`` measures
the two factors per worker from what the compressor left behind: the delay in steps,
τ = ||e|| / ||s_prev||, and the curvature that the delay acts on, L_m, the minibatch loss's
curvature along e (the gradient is taken at x = x̃ + e instead of x̃ = x - e, an error
∇f(x̃ + e) - ∇f(x̃) ≈ H e; the finite difference is exact for a quadratic), at the cost of one
forward pass at x - e per step. It
takes the smallest a with η / a <= 1 / (L_m (1 + τ)), the textbook delayed-SGD bound, never
below 1 (no step longer than Armijo's) nor above the worst case 1/δ; a = 1 while e = 0 (at
step 0, with the identity compressor: no extra forward pass then). Measured [E]: on §3.8 test 6
(top-5 of 50, δ = 0.1; a = 1 diverges, a = 2 on 7 of 10 seeds) a settles at 3-4.5 and every
seed reaches the rounding floor; with top-1 (δ = 0.02; a = 10 fails, a = 25 suffices) a ≈ 15
and f_T <= 5e-9.
On the MNIST MLP with top-1% the memory (τ ≈ 5) lies where the loss is flat (L_m ≈ 0.2-0.5
against 2(1 - c)/η ≈ 14 along the gradient), so a = 1 nearly always: 92.0% after 10 epochs,
as with a = 1 (84.1% with a = 1/δ = 100). The constant has no slack on test 6 (0.7 / (L_m (1 +
τ)) diverges there) and about 5x on MNIST. ``contraction`` replaces δ by the contraction
achieved on the vector actually compressed, δ_t = 1 - ||p - C(p)||² / ||p||² (= ||C(p)||² /
||p||² for top-k, random-k, scaled sign): the memory recursion ||e_(t+1)||² = (1 - δ_t)||p_t||²,
which is all the error-feedback bounds use of C, holds with it, so a = 1/δ_t keeps their step
condition with the measured δ; it needs no extra forward pass, converges on test 6 (a ≈ 3, and
≈ 12.5 at top-1), but the memory of the MLP collects the never-sent small coordinates, its δ_t
falls to about 0.05 (a ≈ 20) and it reaches 87.4% in 10 epochs. Both are per worker (each
worker's own memory and curvature; identical on both engines) and need no communication.

``lr0`` is ``lr`` at ``init`` (kept in the state), so ``lr / lr0`` is 1 unless the step size is
changed after ``init``: it is the factor of a learning-rate schedule (``--lr-schedule``,
``--warmup-steps``; ``LRSchedule.apply`` passes ``lr = lr0 * factor`` at every step) or of
``DistributedOptimizer.set_options(lr=...)``. It multiplies only the step that is taken; the line
search (trial steps, Armijo test, backtracking, the reset rule and the stored ``eta_prev``) runs
on the unscheduled steps, as without a schedule.

Bytes per worker and step: ``(n - 1) * C.nbytes(D, dtype)`` (all-gather; an all-reduce of D values
for the identity compressor), plus ``(n - 1) * itemsize`` with ``agree_step`` != "none".

The closure (``closure(x_trial) -> [w]``, see :mod:`peergrad.algorithms.base`) is required
(``ValueError`` without one): each trial is a forward pass on the gradient's minibatch with the
same randomness (spec §3.2); ``peergrad train`` and ``DistributedOptimizer.step(closure)`` build
it. Unbiased compressors (``randomk``, ``qsgd``) are not contractions and the memory diverges with
them, so with ``memory=True`` they are used as C / (1 + ω) (δ = 1/(1 + ω), hence a <= 1 + ω;
spec §2.1, §3.3); the message and its bytes are unchanged.

Deviations: the exact placement of the scale a in the paper is not confirmed (spec §3.4 [R?]);
the paper's a is a constant above a threshold that grows as δ shrinks [R?] (its value [U]); the
adaptive per-step, per-worker a of the default ``scale_rule="lag"`` (and of ``contraction``) is
a library decision [D], outside the paper's theorems, which assume a fixed a [R?];
``momentum`` (searching along the heavy-ball direction d with the test ``c * eta * <g, d>``) and
``weight_decay`` (added to the searched loss) are additions, both off by default;
``batches_per_epoch=None`` (default) takes each worker's minibatches per epoch from
``peergrad train`` (sls' ``n_batches_per_epoch``; 1, i.e. doubling per step, where unknown, e.g.
in the drop-in optimizer unless set). ``lr`` at ``init`` is the initial trial step (sls
``init_step_size``), default 1; a later ``lr`` (a schedule) multiplies the step taken by
``lr / lr0`` (above).

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1), ``weight_decay < 0``, bad
compressor options, ``scale <= 0``, ``c`` and ``beta_b`` outside (0, 1),
``eta_max <= 0`` and unknown ``scale_rule``/``reset``/``search_on``/``agree_step`` choices; and
from ``step`` when no closure is given.

Under failures (a system profile's dropped links or absent workers): the compressed mean and the
step agreement are over the present workers; a returning worker's x is stale, so the copies of x
stop being identical; its error memory is frozen while it is away.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, cast

import torch
from torch import Tensor

from peergrad.algorithms.base import (
    Closure,
    check_choice,
    check_positive,
    loss_at_current,
)
from peergrad.algorithms.compressed import CompressedSGDAlgorithm
from peergrad.comm.base import Communicator, worker_dot, worker_norm
from peergrad.comm.compressed import compressed_mean
from peergrad.compress import Compressor, load_generator, new_generator_state


@dataclasses.dataclass
class ArmijoState:
    """``step``; ``momentum_buffer``, ``error`` ``[w, D]``; ``eta``: last accepted unscaled step
    ``[w]`` (float64, without the schedule's factor); ``rng``: uint8 generator state shared by
    all workers; ``lr0``: ``lr`` at ``init``, the base a schedule's ``lr`` is divided by;
    ``step_norm``: ``||s||`` of the last step taken ``[w]`` (float64; the unit of the lag of
    ``scale_rule="lag"``); ``delta``: the last measured contraction ``[w]`` (float64; the worst
    case δ before the first step; the divisor of ``scale_rule="contraction"``)."""

    step: int
    momentum_buffer: Tensor
    error: Tensor
    eta: Tensor
    rng: Tensor
    lr0: float
    step_norm: Tensor
    delta: Tensor


@dataclasses.dataclass(frozen=True)
class ArmijoCSGD(CompressedSGDAlgorithm):
    """Armijo compressed SGD (Subramaniam, Magesh, Veeravalli); see the module docstring.

    Options:

    - ``lr`` > 0: the first trial step η⁰ of the line search (sls' init_step_size); default 1
      (spec compression-momentum-adam.md §3.7). A learning-rate schedule (``--lr-schedule``,
      ``--warmup-steps``) multiplies this base value: with ``lr = lr0 * factor`` at a step
      (``lr0``: the ``lr`` at ``init``, kept in the state) the step taken is
      ``eta * factor / a`` for the accepted η, i.e. the schedule multiplies the update. The
      line search itself (trial steps, Armijo test, backtracking, the η carried by the reset
      rule) runs on the unscheduled steps, so factor 1 gives exactly the unscheduled iterates.
      Why not scale the trial steps instead: a smaller η⁰ only caps the search (no effect when
      it backtracks below the cap anyway), and the reset rule would carry the scheduled η into
      the next step, compounding the factors (and gamma_reset would undo a decay), so the
      schedule would not be a multiplier; η also stays the search's curvature estimate, which
      the Armijo guarantees are about.
    - ``momentum`` in [0, 1): search along the heavy-ball direction; default 0: off, as in the
      paper.
    - ``memory`` true or false: error feedback; default true (the journal version's).
    - ``scale`` > 0, or None: a fixed divisor a of the Armijo step (then ``scale_rule`` is not
      used); None (default): a from ``scale_rule``.
    - ``scale_rule`` one of lag, contraction, worst-case: how a is chosen at every step when
      ``scale`` is None. lag (default): the delayed-gradient bound, a = clamp(η·L_m·(1 + τ),
      1, 1/δ) with τ = ||e|| / ||s_prev|| the memory's lag in steps and L_m the minibatch
      loss's curvature along the memory (one extra forward pass at x - e per step); a = 1
      while the memory is 0. contraction: a = 1/δ_t, the contraction the compressor achieved
      on the previous step, δ_t = 1 - ||p - C(p)||² / ||p||² (at least δ). worst-case: a = 1/δ,
      the compressor's guaranteed contraction (the rule before issue 16). All per worker, no
      communication; a = 1 under every rule for a compressor without a δ.
    - ``c`` in (0, 1): the Armijo sufficient-decrease constant; default 0.1 (Vaswani et al.).
    - ``beta_b`` in (0, 1): the backtracking factor; default 0.9 (sls).
    - ``eta_max`` > 0: the cap of the trial step; default 10 (sls).
    - ``reset`` one of grow, max: the next trial step, η_prev·gamma_reset^(1/batches_per_epoch)
      capped at eta_max (grow), or eta_max at every step (max).
    - ``gamma_reset`` > 0: growth of the trial step per epoch; default 2 (sls).
    - ``batches_per_epoch`` integer >= 1, or None: for reset=grow; None: each worker's
      minibatches per epoch from peergrad train (1 where unknown).
    - ``max_backtracks`` integer >= 0: the most backtracking steps before fail_step is taken.
    - ``fail_step`` > 0: the step when no trial passes; default 1e-6.
    - ``skip_tol`` > 0, or None: skip the search when ||g|| < skip_tol; None: never skip.
    - ``search_on`` one of uncompressed, compressed: test the Armijo condition at x - η d
      (default) or at the compressed trial point (one compression per trial).
    - ``agree_step`` one of none, min, mean: every worker keeps its own step (none) or all use
      the minimum or mean over workers (one all-gather of a scalar).
    """

    lr: float = 1.0
    memory: bool = True
    scale: float | None = None
    scale_rule: str = "lag"
    c: float = 0.1
    beta_b: float = 0.9
    eta_max: float = 10.0
    reset: str = "grow"
    gamma_reset: float = 2.0
    batches_per_epoch: int | None = None
    max_backtracks: int = 100
    fail_step: float = 1e-6
    skip_tol: float | None = None
    search_on: str = "uncompressed"
    agree_step: str = "none"

    name: ClassVar[str] = "armijo-csgd"
    failures_note: ClassVar[str] = (
        "the compressed mean and the step agreement are over the present workers; a returning "
        "worker's x is stale, so the copies of x stop being identical; its error memory is "
        "frozen while it is away"
    )
    paper: ClassVar[str] = "Subramaniam, Magesh, Veeravalli, ICASSP 2023, arXiv:2207.10046"
    summary: ClassVar[str] = "compressed SGD with memory, Armijo line search and a scaled step"
    needs_closure: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale is not None:
            check_positive("scale", self.scale)
        check_choice("scale_rule", self.scale_rule, ("lag", "contraction", "worst-case"))
        for name in ("eta_max", "gamma_reset", "fail_step"):
            check_positive(name, getattr(self, name))
        for name in ("c", "beta_b"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 < v < 1):
                raise ValueError(f"{name} must be in (0, 1), got {v!r}")
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch!r}")
        if self.max_backtracks < 0:
            raise ValueError(f"max_backtracks must be >= 0, got {self.max_backtracks!r}")
        if self.skip_tol is not None:
            check_positive("skip_tol", self.skip_tol)
        check_choice("reset", self.reset, ("grow", "max"))
        check_choice("search_on", self.search_on, ("uncompressed", "compressed"))
        check_choice("agree_step", self.agree_step, ("none", "min", "mean"))

    def scale_for(self, D: int, C: Compressor | None = None) -> float:
        """The fixed divisor a: ``scale`` if given, else the worst case 1/δ of the compressor
        ``C`` (by default the one these hyper-parameters select for width ``D``, as C / (1 + ω)
        for an unbiased one with ``memory``; 1 without a δ). It is also the largest a the
        adaptive rules take."""
        if self.scale is not None:
            return float(self.scale)
        delta = (C or self.compressor_for(D, error_feedback=self.memory)).delta(D)
        return 1.0 / delta if delta else 1.0

    def adaptive_rule(self, D: int, C: Compressor | None = None) -> str | None:
        """``"lag"`` or ``"contraction"`` when a is chosen per step (``scale`` None, that
        ``scale_rule``, a compressor with a δ); None when a is the fixed :meth:`scale_for`."""
        if self.scale is not None or self.scale_rule == "worst-case":
            return None
        C = C or self.compressor_for(D, error_feedback=self.memory)
        return self.scale_rule if C.delta(D) is not None else None

    @staticmethod
    def lag_scale(eta: Tensor, curvature: Tensor, lag: Tensor, cap: float) -> Tensor:
        """``clamp(eta * curvature * (1 + lag), 1, cap)`` ``[w]`` (float64): the a with which the
        step eta / a meets the delayed-gradient bound 1 / (L (1 + τ)). A negative curvature
        counts as 0, a non-finite product as ``cap``."""
        need = eta * curvature.clamp(min=0.0) * (1.0 + lag)
        need = torch.where(torch.isnan(need), torch.full_like(need, math.inf), need)
        return need.clamp(min=1.0, max=cap)

    @staticmethod
    def measured_contraction(p: Tensor, residual: Tensor, floor: float, prev: Tensor) -> Tensor:
        """``clamp(1 - ||residual||² / ||p||², floor, 1)`` per worker ``[w]`` (float64), for
        ``p`` the vector that was compressed and ``residual = p - C(p)``; ``prev`` where p = 0
        or the ratio is not finite."""
        pp = worker_dot(p, p).to(torch.float64)
        raw = 1.0 - worker_dot(residual, residual).to(torch.float64) / pp
        ok = (pp > 0) & torch.isfinite(raw)
        return torch.where(ok, raw.clamp(min=floor, max=1.0), prev)

    def uses_topology(self) -> bool:
        """False: the compressed messages are all-gathered, with no topology."""
        return False

    def init(self, x: Tensor, comm: Communicator) -> ArmijoState:
        w = x.shape[0]
        C = self.compressor_for(x.shape[1], error_feedback=self.memory)
        worst = C.delta(x.shape[1]) or 1.0

        def per_worker(value: float) -> Tensor:
            return torch.full((w,), float(value), dtype=torch.float64, device=x.device)

        return ArmijoState(
            step=0,
            momentum_buffer=torch.zeros_like(x),
            error=torch.zeros_like(x),
            eta=per_worker(self.lr),
            rng=new_generator_state(self.seed),
            lr0=float(self.lr),
            step_norm=per_worker(0.0),
            delta=per_worker(worst),
        )

    def trial_step(self, state: ArmijoState) -> Tensor:
        """eta0 of the reset rule, ``[w]`` float64."""
        if self.reset == "max":
            return torch.full_like(state.eta, self.eta_max)
        if state.step == 0:
            return state.eta.clone()
        growth = self.gamma_reset ** (1.0 / (self.batches_per_epoch or 1))
        return (state.eta * growth).clamp(max=self.eta_max)

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: ArmijoState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> ArmijoState:
        if closure is None:
            raise ValueError(
                "armijo-csgd runs a line search and needs closure(x_trial) -> [w], each worker's "
                "minibatch loss at a trial point (peergrad train passes one; with "
                "DistributedOptimizer call step(closure))"
            )
        D = x.shape[1]
        C = self.compressor_for(D, error_feedback=self.memory)
        g_wd = g + self.weight_decay * x if self.weight_decay else g
        d = self.direction(x, g, state)  # weight decay folded in, momentum buffer updated
        eta = self.trial_step(state)
        memory = state.error if self.memory else torch.zeros_like(x)
        search = _Search(
            self,
            x,
            d,
            memory,
            C,
            comm,
            closure,
            state,
            self.adaptive_rule(D, C),
            self.scale_for(D, C),
        )
        ell = search.objective(loss_at_current(closure, x), x)
        if search.rule == "lag":  # L_m and τ of the memory; none while every memory is 0
            search.measure_memory(g_wd, ell)
        eta = search.backtrack(eta, ell, g_wd)
        if self.agree_step != "none":
            everyone = comm.all_gather(eta.to(x.dtype)[:, None])[0, :, 0].to(torch.float64)
            agreed = everyone.min() if self.agree_step == "min" else everyone.mean()
            eta = agreed.expand_as(eta).clone()
        return self._take_step(search, eta)

    def _take_step(self, search: _Search, eta: Tensor) -> ArmijoState:
        """Take the accepted step ``eta`` (``[w]``): compress the scaled step (plus the memory),
        update the memory and x, and measure the contraction (``scale_rule="contraction"``)."""
        x, d, C, comm, state = search.x, search.d, search.C, search.comm, search.state
        f64 = torch.float64
        # the schedule's factor lr / lr0 (exactly 1.0 without one) multiplies the step taken,
        # not the searched and stored eta; a is chosen for the unscheduled eta
        taken = eta * (self.lr / state.lr0)
        scaled = taken.to(x.device, x.dtype) / search.divisor(eta)
        p = scaled[:, None] * d
        step_norm = scaled.to(f64) * worker_norm(d).to(f64)
        if self.memory:
            p.add_(state.error)
        gen = load_generator(state.rng)
        msg = C.compress(p, gen, worker_ids=comm.worker_ids, n_workers=comm.n_workers)
        if self.memory:
            torch.sub(p, C.decompress(msg), out=state.error)
        delta = state.delta
        if search.rule == "contraction":
            residual = state.error if self.memory else p - C.decompress(msg)
            # rule == "contraction" only when C has a delta (adaptive_rule)
            delta = self.measured_contraction(p, residual, cast(float, C.delta(x.shape[1])), delta)
        x.sub_(compressed_mean(comm, C, msg, exchange=self.exchange))
        return ArmijoState(
            state.step + 1,
            state.momentum_buffer,
            state.error,
            eta,
            gen.get_state(),
            state.lr0,
            step_norm,
            delta,
        )


@dataclasses.dataclass
class _Search:
    """One step's line search (:meth:`ArmijoCSGD.step`): the point ``x``, the direction ``d``,
    the memory, the compressor ``C`` and the closure, the divisor rule and its cap, and for
    ``scale_rule="lag"`` the memory's curvature L_m and lag τ (``[w]`` float64, from
    :meth:`measure_memory`)."""

    alg: ArmijoCSGD
    x: Tensor
    d: Tensor
    memory: Tensor
    C: Compressor
    comm: Communicator
    closure: Closure
    state: ArmijoState
    rule: str | None
    cap: float
    curvature: Tensor | None = None
    lag: Tensor | None = None

    def objective(self, value: Tensor, xt: Tensor) -> Tensor:
        """The searched loss: the minibatch loss at ``xt`` plus the weight-decay term."""
        out = value.to(self.state.eta.device, torch.float64)
        if self.alg.weight_decay:
            out = out + 0.5 * self.alg.weight_decay * worker_norm(xt).to(torch.float64) ** 2
        return out

    def measure_memory(self, g_wd: Tensor, ell: Tensor) -> None:
        """L_m (the loss's curvature along the memory, one closure call at x - e) and τ (the
        memory's lag in steps, ||e|| / ||s_prev||); 0 for a worker whose memory is 0."""
        f64, memory = torch.float64, self.memory
        mm = worker_dot(memory, memory).to(f64)
        self.curvature, self.lag = torch.zeros_like(mm), torch.zeros_like(mm)
        if bool((mm > 0).any()):
            virtual = self.x - memory
            rise = self.objective(self.closure(virtual), virtual) - ell
            rise = rise + worker_dot(g_wd, memory).to(f64)
            self.curvature = torch.where(mm > 0, 2.0 * rise / mm, self.curvature)
            self.lag = torch.where(mm > 0, mm.sqrt() / self.state.step_norm, self.lag)

    def divisor(self, step: Tensor) -> float | Tensor:
        """a for the unscaled step ``step``: a float, or ``[w]`` in x's dtype."""
        if self.rule == "lag":
            curvature, lag = cast(Tensor, self.curvature), cast(Tensor, self.lag)
            a = self.alg.lag_scale(step, curvature, lag, self.cap)
        elif self.rule == "contraction":
            a = 1.0 / self.state.delta
        else:
            return self.cap
        return a.to(self.x.device, self.x.dtype)

    def trial(self, step: Tensor) -> Tensor:
        """The trial point for the unscaled step ``step`` (``[w]``): x - step d, or with
        ``search_on="compressed"`` x minus the compressed scaled step plus memory."""
        x = self.x
        s = step.to(x.device, x.dtype)
        if self.alg.search_on == "uncompressed":
            return x - s[:, None] * self.d
        gen = load_generator(self.state.rng)
        ids, n = self.comm.worker_ids, self.comm.n_workers
        p = (s / self.divisor(step))[:, None] * self.d
        return x - self.C.decompress(
            self.C.compress(self.memory + p, gen, worker_ids=ids, n_workers=n)
        )

    def backtrack(self, eta: Tensor, ell: Tensor, g_wd: Tensor) -> Tensor:
        """The accepted steps ``[w]`` from the trial steps ``eta``: each worker shrinks its step
        by ``beta_b`` until the Armijo condition holds, ``fail_step`` after ``max_backtracks``."""
        alg, f64 = self.alg, torch.float64
        active = torch.ones_like(eta, dtype=torch.bool)
        if alg.skip_tol is not None:
            active &= worker_norm(g_wd).to(f64) >= alg.skip_tol
        slope = alg.c * worker_dot(g_wd, self.d).to(f64)
        for j in range(alg.max_backtracks + 1):
            if not bool(active.any()):
                break
            xt = self.trial(eta)
            passed = self.objective(self.closure(xt), xt) <= ell - eta * slope
            active &= ~passed
            if j == alg.max_backtracks:
                eta = torch.where(active, torch.full_like(eta, alg.fail_step), eta)
            else:
                eta = torch.where(active, eta * alg.beta_b, eta)
        return eta
