"""DADAM: every worker runs its own AMSGrad-type statistics; only the model is gossiped.

Paper: P. Nazari, D. A. Tarzanagh, G. Michailidis, "DADAM: A Consensus-based Distributed Adaptive
Gradient Method for Online Optimization", arXiv:1901.09109, 2019 (a journal version exists
[R?]). Official MATLAB code: github.com/Tarzanagh/DADAM, ``dadam_algorithms_main/dadam.m``.
Specification: ``decentralized.md`` §3.4; the failure under heterogeneous data is §4.1.

Update rule (worker i, iteration t = ``state.step + 1``, W = ``comm.topology.at(state.step)``;
every tensor ``[w, D]``; ``b1`` is :attr:`DADAM.beta1`)::

    g     <- g + weight_decay * x                          (L2, before any statistic)
    m     <- b1 m + (1 - b1) g
    v     <- b2 v + (1 - b2) g**2
    form="paper" (the version Chen et al. analyse [R]; no bias correction, no additive eps):
        v_hat <- b3 v_hat + (1 - b3) max(v_hat, v)         (v_hat_0 = eps)
        x     <- W x - lr * m / sqrt(v_hat)
    form="code" (``dadam.m``): bias correction and an additive eps; v_hat is not used
        x     <- W x - lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)

The gossip of x (combine-then-adapt) does not need the gradient: ``pre_gradient`` starts it.
One message (the model, D elements) per neighbour per iteration; m, v, v_hat stay local.

Every worker divides by its *own* second moment, so with heterogeneous data the network descends
on ``sum_i grad f_i / sqrt(v_hat_i)`` instead of ``sum_i grad f_i``: a bias that does not vanish
as ``lr -> 0`` (spec §4.1: on the two-node example the naive form stops at x = 0, error 0.5).
``b3 = 0`` is "naive decentralized AMSGrad" (local AMSGrad plus gossip of x), registered as
``dadam-naive`` (:class:`DADAMNaive`), the baseline of Chen et al.

Without bias correction the paper form's first steps are large: ``v_hat`` moves from eps toward
v by the factor ``1 - b3`` per step, so the first step is about
``lr (1 - b1) / sqrt((1 - b3)(1 - b2))`` per coordinate, i.e. ``10 lr`` with the defaults.

Defaults: ``b1, b2, b3 = 0.9, 0.999, 0.9`` (the MATLAB code's; ``dadam_parallel.m`` uses
``b3 = 0.999``), ``eps = None``, meaning 1e-8 for the paper form (library choice [D]) and 1e-4
for the code form (the code's); ``dadam-naive`` uses ``b2 = 0.99``, as Chen et al.'s
framework (:mod:`peergrad.algorithms.decentralized_adaptive`), so the two compare like for like.

Deviations from the paper: ``v_hat_0 = eps`` [D] (the paper's value is not recovered: with
``v_hat_0 = 0`` a coordinate whose first gradient is 0 gives 0/0); the online problem's
projection is dropped; weight decay; ``momentum`` is an alias of β₁ (the registry-wide option).
The code form keeps no β₃-mixed statistic (``dadam.m`` computes one but does not use it).

Raises ``ValueError`` for ``lr``/``eps`` not finite and > 0, ``momentum``/``b1``/``b2`` outside
[0, 1), ``b3`` outside [0, 1) (``b3 != 0`` for ``dadam-naive``), ``b1`` contradicting a
non-default ``momentum``, ``weight_decay < 0``, an unknown ``form`` (``dadam-naive``: only
``"paper"``) and a W(k) that is not doubly stochastic (``check_topology``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms.base import (
    AdaptiveAlgorithm,
    Closure,
    check_choice,
    check_non_negative,
    check_positive,
    check_unit_interval,
    require_doubly_stochastic,
)
from peergrad.comm.base import Communicator
from peergrad.transforms import (
    adaptive_step,
    add_weight_decay,
    ema_first_moment,
    ema_second_moment,
    mixed_max,
)

EPS_DEFAULT = {"paper": 1e-8, "code": 1e-4}


@dataclasses.dataclass
class DADAMState:
    """``step``: iterations done; ``m``, ``v``, ``v_hat``: ``[w, D]`` local moments."""

    step: int
    m: Tensor
    v: Tensor
    v_hat: Tensor


@dataclasses.dataclass(frozen=True)
class DADAM(AdaptiveAlgorithm):
    """DADAM (Nazari, Tarzanagh, Michailidis), ``form="paper"`` (default) or ``"code"``.

    Hyper-parameters: ``lr`` (α), ``b1`` (β₁; ``None`` means ``momentum``), ``momentum`` (alias
    of β₁, default 0.9; a given ``b1`` overrides the default value), ``b2``, ``b3``, ``eps``
    (``None``: 1e-8 for the paper form, 1e-4 for the code form), ``form``, ``weight_decay``.
    """

    b2: float = 0.999
    b3: float = 0.9
    eps: float | None = None
    form: str = "paper"
    weight_decay: float = 0.0

    name: ClassVar[str] = "dadam"
    paper: ClassVar[str] = "Nazari, Tarzanagh, Michailidis, arXiv:1901.09109"
    summary: ClassVar[str] = (
        "DADAM: local AMSGrad-type statistics, gossip of the model only (biased when data differ)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval("b2", self.b2)
        check_unit_interval("b3", self.b3)
        if self.eps is not None:
            check_positive("eps", self.eps)
        check_choice("form", self.form, ("paper", "code"))
        check_non_negative("weight_decay", self.weight_decay)

    @property
    def epsilon(self) -> float:
        """``eps``, or the form's default when ``eps`` is ``None``."""
        return EPS_DEFAULT[self.form] if self.eps is None else self.eps

    def check_topology(self, comm: Communicator) -> None:
        require_doubly_stochastic(comm, self.name)

    def init(self, x: Tensor, comm: Communicator) -> DADAMState:
        return DADAMState(
            step=0,
            m=torch.zeros_like(x),
            v=torch.zeros_like(x),
            v_hat=torch.full_like(x, self.epsilon),
        )

    def pre_gradient(self, x: Tensor, state: DADAMState, comm: Communicator) -> Any:
        """The gossip of x does not need the gradient, so it starts here."""
        return comm.mix_start(x, comm.topology.at(state.step))

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: DADAMState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> DADAMState:
        t = state.step + 1
        g = add_weight_decay(g, x, self.weight_decay)
        if pending is None:
            pending = self.pre_gradient(x, state, comm)
        mixed = pending.wait(comm.workspace(x, "dadam.mix"))  # W x_t
        ema_first_moment(state.m, g, self.beta1)
        ema_second_moment(state.v, g, self.b2)
        denom = comm.workspace(x, "dadam.denom")
        lr = self.lr
        if self.form == "paper":
            mixed_max(state.v_hat, state.v, self.b3, scratch=denom)
            torch.sqrt(state.v_hat, out=denom)
        else:
            torch.div(state.v, 1.0 - self.b2**t, out=denom).sqrt_().add_(self.epsilon)
            lr = lr / (1.0 - self.beta1**t)
        adaptive_step(x, state.m, denom, lr, base=mixed)
        return dataclasses.replace(state, step=t)


@dataclasses.dataclass(frozen=True)
class DADAMNaive(DADAM):
    """Naive decentralized AMSGrad: DADAM's paper form with ``b3 = 0`` (local AMSGrad + gossip).

    The baseline Chen et al. show to be biased; defaults ``b2 = 0.99``, ``eps = 1e-8``.
    """

    b2: float = 0.99
    b3: float = 0.0

    name: ClassVar[str] = "dadam-naive"
    summary: ClassVar[str] = (
        "naive decentralized AMSGrad (DADAM with b3 = 0): local AMSGrad, gossip of the model"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.b3 != 0:
            raise ValueError(f"dadam-naive fixes b3 = 0 (got {self.b3!r}); use dadam for b3 > 0")
        check_choice("form", self.form, ("paper",))
