"""Armijo compressed SGD: compressed SGD with memory, an Armijo step and a scaled descent step.

Paper: A. Subramaniam, A. Magesh, V. V. Veeravalli, "Adaptive Step-Size Methods for Compressed
SGD", arXiv:2207.10046 (2022), ICASSP 2023; journal version "... With Memory Feedback", IEEE
Trans. Signal Processing 72 (2024). Line search: S. Vaswani et al., "Painless Stochastic
Gradient", NeurIPS 2019, arXiv:1905.09997. Spec: compression-momentum-adam.md §3.2-§3.7.

Update rule (worker i, shapes ``[w, D]``, per-worker scalars ``[w]``; C from ``compressor``,
``ratio``, ``levels``; ``a = scale`` or ``1 / C.delta(D)`` (1 when C has no δ))::

    d     <- heavy_ball(buf, g + weight_decay * x, momentum, nesterov)   (d = g by default)
    eta0  <- lr at step 0; then min(eta_prev * gamma_reset ** (1 / batches_per_epoch), eta_max)
             (reset="grow"), or eta_max at every step (reset="max")
    ell   <- closure(x) + weight_decay / 2 * ||x||^2                     (no communication)
    eta   <- eta0 * beta_b ** j, the first j = 0..max_backtracks with
             closure(trial(eta)) + wd / 2 ||trial||^2 <= ell - c * eta * <g_wd, d>,
             trial(eta) = x - eta * d (search_on="uncompressed")
                        or x - C(e + eta / a * d) (search_on="compressed");
             fail_step if none passes; eta0 unchecked when closure is None or ||g_wd|| < skip_tol
    eta   <- min_j / mean_j eta_j over all workers (agree_step="min"/"mean"; all-gather)
    p     <- e + (eta / a) * d         (memory=True; p <- (eta / a) * d otherwise)
    Delta <- C(p);  e <- p - Delta;  x <- x - mean_i Delta_i;  eta_prev <- eta  (unscaled)

Bytes per worker and step: ``(n - 1) * C.nbytes(D, dtype)`` (all-gather; an all-reduce of D values
for the identity compressor), plus ``(n - 1) * itemsize`` with ``agree_step`` != "none".

Deviations: the exact placement of the scale a in the paper is not confirmed (spec §3.4 [R?]);
``momentum`` (searching along the heavy-ball direction d with the test ``c * eta * <g, d>``) and
``weight_decay`` (added to the searched loss) are additions, both off by default;
``batches_per_epoch=None`` (default) takes each worker's minibatches per epoch from
``peergrad train`` (sls' ``n_batches_per_epoch``; 1, i.e. doubling per step, where unknown, e.g.
in the drop-in optimizer unless set); without a closure
(e.g. the drop-in optimizer called without one) no search is made and eta = eta0. ``lr`` is the
initial trial step (sls ``init_step_size``), default 1.

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1), ``weight_decay < 0``, bad
compressor options, ``scale <= 0``, ``c`` and ``beta_b`` outside (0, 1),
``eta_max <= 0`` and unknown ``reset``/``search_on``/``agree_step`` choices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms.base import (
    Closure,
    check_choice,
    check_positive,
)
from peergrad.algorithms.compressed import CompressedSGDAlgorithm
from peergrad.comm.base import Communicator, worker_dot, worker_norm
from peergrad.comm.compressed import compressed_mean
from peergrad.compress import Compressor, load_generator, new_generator_state


@dataclasses.dataclass
class ArmijoState:
    """``step``; ``momentum_buffer``, ``error`` ``[w, D]``; ``eta``: last accepted unscaled step
    ``[w]`` (float64); ``rng``: uint8 generator state shared by all workers."""

    step: int
    momentum_buffer: Tensor
    error: Tensor
    eta: Tensor
    rng: Tensor


@dataclasses.dataclass(frozen=True)
class ArmijoCSGD(CompressedSGDAlgorithm):
    lr: float = 1.0
    memory: bool = True
    scale: float | None = None
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
    paper: ClassVar[str] = "Subramaniam, Magesh, Veeravalli, ICASSP 2023, arXiv:2207.10046"
    summary: ClassVar[str] = "compressed SGD with memory, Armijo line search and a scaled step"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale is not None:
            check_positive("scale", self.scale)
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
        """The divisor a: ``scale`` if given, else 1/δ of the compressor ``C`` (by default the
        one these hyper-parameters select for width ``D``; 1 without a δ)."""
        if self.scale is not None:
            return float(self.scale)
        delta = (C or self.compressor_for(D)).delta(D)
        return 1.0 / delta if delta else 1.0

    def init(self, x: Tensor, comm: Communicator) -> ArmijoState:
        w = x.shape[0]
        return ArmijoState(
            step=0,
            momentum_buffer=torch.zeros_like(x),
            error=torch.zeros_like(x),
            eta=torch.full((w,), float(self.lr), dtype=torch.float64, device=x.device),
            rng=new_generator_state(self.seed),
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
        C = self.compressor_for(x.shape[1])
        a = self.scale_for(x.shape[1], C)
        g_wd = g + self.weight_decay * x if self.weight_decay else g
        d = self.direction(x, g, state)  # weight decay folded in, momentum buffer updated
        eta = self.trial_step(state)
        rng0 = state.rng
        memory = state.error if self.memory else torch.zeros_like(x)

        def loss(xt: Tensor) -> Tensor:
            out = closure(xt).to(torch.float64)
            if self.weight_decay:
                out = out + 0.5 * self.weight_decay * worker_norm(xt).to(torch.float64) ** 2
            return out

        def trial(step: Tensor) -> Tensor:
            s = step.to(x.device, x.dtype)[:, None]
            if self.search_on == "uncompressed":
                return x - s * d
            gen = load_generator(rng0)
            ids, n = comm.worker_ids, comm.n_workers
            return x - C.decompress(
                C.compress(memory + s / a * d, gen, worker_ids=ids, n_workers=n)
            )

        if closure is not None:
            active = torch.ones_like(eta, dtype=torch.bool)
            if self.skip_tol is not None:
                active &= worker_norm(g_wd).to(torch.float64) >= self.skip_tol
            ell = loss(x)
            slope = self.c * worker_dot(g_wd, d).to(torch.float64)
            for j in range(self.max_backtracks + 1):
                if not bool(active.any()):
                    break
                passed = loss(trial(eta)) <= ell - eta * slope
                active &= ~passed
                if j == self.max_backtracks:
                    eta = torch.where(active, torch.full_like(eta, self.fail_step), eta)
                else:
                    eta = torch.where(active, eta * self.beta_b, eta)

        if self.agree_step != "none":
            everyone = comm.all_gather(eta.to(x.dtype)[:, None])[0, :, 0].to(torch.float64)
            agreed = everyone.min() if self.agree_step == "min" else everyone.mean()
            eta = agreed.expand_as(eta).clone()

        p = (eta.to(x.device, x.dtype) / a)[:, None] * d
        if self.memory:
            p.add_(state.error)
        gen = load_generator(rng0)
        msg = C.compress(p, gen, worker_ids=comm.worker_ids, n_workers=comm.n_workers)
        if self.memory:
            torch.sub(p, C.decompress(msg), out=state.error)
        x.sub_(compressed_mean(comm, C, msg))
        return ArmijoState(state.step + 1, state.momentum_buffer, state.error, eta, gen.get_state())
