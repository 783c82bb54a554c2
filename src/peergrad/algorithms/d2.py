"""D²: decentralized training over decentralized data (variance reduction of the data spread).

Paper: H. Tang, X. Lian, M. Yan, C. Zhang, J. Liu, "D²: Decentralized Training over
Decentralized Data", ICML 2018, arXiv:1803.07068. Specification: ``decentralized.md`` §3.2.

Update rule (worker i, iteration t; W = ``comm.topology.at(0)``, or its lazy form, see below;
shapes ``[w, D]``)::

    d     <- heavy_ball(buf, g + weight_decay * x, momentum, nesterov)   (d = g by default)
    t = 0:   half <- x - lr * d
    t >= 1:  half <- 2 x - x_prev + lr * (d_prev - d)
    x_prev <- x;  d_prev <- d
    x      <- W half                                          (one message per neighbour)

Average dynamics (doubly stochastic W): telescoping the recursion gives
``mean(x_(t+1)) = mean(x_t) - lr * mean(d_t)`` exactly for every t >= 0, and on heterogeneous
data D² converges to the exact optimum (no D-PSGD bias), for deterministic gradients.

Condition on W (spec §3.2, library check [D]): the paper requires ``lambda_n(W) > -1/3`` [R].
The check computes ``lambda_n`` of the symmetric W in float64 and passes iff
``lambda_n >= -1/3 - 1e-12``: the 1/3-weight ring with even n sits exactly on the boundary and
is accepted (D² converges there). When it fails, D² warns (naming lambda_n and the threshold)
and runs on the lazy matrix ``W' = (I + W)/2`` (eigenvalues in [0, 1]), applied as
``(half + W half) / 2`` with the same single message; ``force=True`` keeps W (still warning).
Without the fallback D² can diverge (4x4 torus, ``lambda_n = -0.6``).

D² is defined for a symmetric, static W: a directed or time-varying topology raises
``ValueError``.

Deviations from the paper: heavy-ball/Nesterov momentum and weight decay on the gradient (as in
D-PSGD's deep-learning practice; not in the paper's analysis). The momentum is linear in the
gradients, so the average still follows centralized heavy-ball SGD:
``mean(x_(t+1)) = mean(x_t) - lr * mean(d_t)`` with ``d`` the heavy-ball direction.

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1), ``weight_decay < 0``, and a
topology that is not doubly stochastic, symmetric and static.

Under failures (a system profile's dropped links or absent workers): refused: its correction mixes
x_(t-1) and d_(t-1) with the same fixed W every step, which a failed round changes.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms.base import Closure, SGDAlgorithm, require_doubly_stochastic
from peergrad.comm.base import Communicator

#: D² needs lambda_n(W) >= LAMBDA_N_MIN - LAMBDA_N_ATOL (spec §3.2).
LAMBDA_N_MIN = -1.0 / 3.0
LAMBDA_N_ATOL = 1e-12


@dataclasses.dataclass
class D2State:
    """``step``: iterations done; ``x_prev`` = x_(t-1), ``d_prev`` = d_(t-1) (``[w, D]``);
    ``momentum_buffer`` (``[w, D]``); ``lazy``: 1 when W failed the check and (I + W)/2 is used."""

    step: int
    x_prev: Tensor
    d_prev: Tensor
    momentum_buffer: Tensor
    lazy: int


@dataclasses.dataclass(frozen=True)
class D2(SGDAlgorithm):
    """D² (Tang et al. 2018). ``force``: run on W even when ``lambda_n(W) < -1/3``.

    Options:

    - ``lr`` > 0: the step size γ; default 0.1, as D-PSGD (spec decentralized.md §6).
    - ``momentum`` in [0, 1): heavy-ball momentum on the gradient; default 0, the paper's plain
      SGD.
    - ``force`` true or false: when lambda_n(W) < -1/3, keep W (D² may diverge) instead of the
      lazy (I + W)/2 that D² falls back to with a warning.
    """

    force: bool = False

    name: ClassVar[str] = "d2"
    preserves_mean: ClassVar[bool] = True
    failures: ClassVar[str] = "refused"
    failures_note: ClassVar[str] = (
        "its correction mixes x_(t-1) and d_(t-1) with the same fixed W every step, which a "
        "failed round changes"
    )
    paper: ClassVar[str] = "Tang et al., ICML 2018, arXiv:1803.07068"
    summary: ClassVar[str] = (
        "D²: gossip of 2x_t - x_(t-1) - lr (g_t - g_(t-1)); exact on heterogeneous data"
    )

    coordinatewise: ClassVar[bool] = True

    def check_topology(self, comm: Communicator) -> None:
        topo = comm.topology
        if topo.time_varying:
            raise ValueError(
                f"d2 is defined for a fixed symmetric mixing matrix, but topology {topo.name!r} "
                f"is time-varying (period {topo.period})"
            )
        if topo.directed:
            raise ValueError(
                f"d2 is defined for a symmetric mixing matrix (its condition is on the real "
                f"eigenvalue lambda_n(W) >= -1/3), but topology {topo.name!r} is directed"
            )
        require_doubly_stochastic(comm, "d2")

    def lambda_n_ok(self, comm: Communicator) -> tuple[bool, float]:
        """``(passes, lambda_n)``: the §3.2 check ``lambda_n >= -1/3 - 1e-12`` (float64)."""
        lam_n = comm.topology.at(0).spectral().lambda_n
        lam_n = 1.0 if lam_n is None else float(lam_n)
        return lam_n >= LAMBDA_N_MIN - LAMBDA_N_ATOL, lam_n

    def init(self, x: Tensor, comm: Communicator) -> D2State:
        self.check_topology(comm)
        ok, lam_n = self.lambda_n_ok(comm)
        lazy = 0
        if not ok:
            fallback = (
                "running on W as given because force=True (D² may diverge)"
                if self.force
                else "running on the lazy matrix (I + W)/2 instead (pass force=True to keep W)"
            )
            warnings.warn(
                f"d2: lambda_n(W) = {lam_n:.6g} of topology {comm.topology.name!r} is below the "
                f"threshold -1/3 (tolerance {LAMBDA_N_ATOL:g}) that D² requires; {fallback}",
                RuntimeWarning,
                stacklevel=2,
            )
            lazy = 0 if self.force else 1
        return D2State(
            step=0,
            x_prev=torch.zeros_like(x),
            d_prev=torch.zeros_like(x),
            momentum_buffer=torch.zeros_like(x),
            lazy=lazy,
        )

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: D2State,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> D2State:
        W = comm.topology.at(state.step)
        d = self.direction(x, g, state)  # type: ignore[arg-type]  # uses .momentum_buffer
        half = comm.workspace(x, "d2.half")
        if state.step == 0:
            torch.sub(x, d, alpha=self.lr, out=half)
        else:
            torch.sub(state.d_prev, d, out=half)  # d_(t-1) - d_t
            half.mul_(self.lr).add_(x, alpha=2.0).sub_(state.x_prev)
        state.x_prev.copy_(x)
        state.d_prev.copy_(d)
        if state.lazy:
            mixed = comm.mix(half, W, out=comm.workspace(x, "d2.mix"))
            torch.add(half, mixed, out=x).mul_(0.5)  # (I + W)/2 applied to half
        else:
            comm.mix(half, W, out=x)
        return dataclasses.replace(state, step=state.step + 1)
