"""DADAM and the naive decentralized Adam/AMSGrad baselines: every worker keeps its own
Adam-type statistics; only the model is gossiped.

Paper: P. Nazari, D. A. Tarzanagh, G. Michailidis, "DADAM: A Consensus-based Distributed Adaptive
Gradient Method for Online Optimization", arXiv:1901.09109, 2019 (a journal version exists
[R?]). Official MATLAB code: github.com/Tarzanagh/DADAM, ``dadam_algorithms_main/dadam.m``.
The naive forms are the baselines of X. Chen, B. Karimi, W. Zhao, P. Li, "On the Convergence of
Decentralized Adaptive Gradient Methods", ACML 2022, arXiv:2109.03194.
Specification: ``decentralized.md`` §3.4; the failure under heterogeneous data is §4.1.

Update rule (worker i, iteration t = ``state.step + 1``, W = ``comm.topology.at(state.step)``;
every tensor ``[w, D]``; ``b1`` is :attr:`DADAM.beta1`)::

    g     <- g + weight_decay * x                          (L2, before any statistic)
    m     <- b1 m + (1 - b1) g
    v     <- b2 v + (1 - b2) g**2
    dadam, form="paper" (the version Chen et al. analyse [R]; no bias correction, no additive
    eps; v_0 = 0):
        v_hat <- b3 v_hat + (1 - b3) max(v_hat, v)         (v_hat_0 = eps)
        x     <- W x - lr * m / sqrt(v_hat)
    dadam, form="code" (``dadam.m``): bias correction and an additive eps; v_hat is not used
        x     <- W x - lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)
    decentralized-adam-naive (v_hat replaced by v; v_0 = eps, no v_hat):
        x     <- W x - lr * m / sqrt(v)

The gossip of x (combine-then-adapt) does not need the gradient: ``pre_gradient`` starts it.
One message (the model, D elements) per neighbour per iteration; m, v, v_hat stay local. The
shared machinery is :class:`LocalAdaptiveGossip`; a method only chooses its denominator.

Every worker divides by its *own* second moment, so with heterogeneous data the network descends
on ``sum_i grad f_i / sqrt(v_hat_i)`` instead of ``sum_i grad f_i``: a bias that does not vanish
as ``lr -> 0`` (spec §4.1: on the two-node example the naive form stops at x = 0, error 0.5).
Two naive baselines (spec §3.4):

- ``b3 = 0`` is "naive decentralized AMSGrad" (local AMSGrad plus gossip of x), registered as
  ``dadam-naive`` (:class:`DADAMNaive`), the baseline of Chen et al.;
- with v_hat replaced by v it is "naive decentralized Adam" (RMSProp-style: local Adam without
  bias correction or the max, plus gossip of x), registered as ``decentralized-adam-naive``
  (:class:`DecentralizedAdamNaive`): the untracked counterpart of ``decentralized-adam``.
  Without the max, a worker's denominator falls when its gradients shrink, so its steps grow
  again. Chen et al. argue that naive decentralized Adam-type methods can fail to converge
  (spec §4.1, [R]); the spec's reference numbers (§4.1, §4.9) are for the AMSGrad form only, so
  this form has no reference values [U].

Without bias correction the paper form's first steps are large: ``v_hat`` moves from eps toward
v by the factor ``1 - b3`` per step, so the first step is about
``lr (1 - b1) / sqrt((1 - b3)(1 - b2))`` per coordinate, i.e. ``10 lr`` with the defaults. The
naive forms (``b3 = 0``; v instead of v_hat) make a first step of about
``lr (1 - b1) / sqrt(1 - b2)``, i.e. ``lr`` with their defaults.

Defaults: ``b1, b2, b3 = 0.9, 0.999, 0.9`` (the MATLAB code's; ``dadam_parallel.m`` uses
``b3 = 0.999``), ``eps = None``, meaning 1e-8 for the paper form (library choice [D]) and 1e-4
for the code form (the code's); ``dadam-naive`` and ``decentralized-adam-naive`` use
``b2 = 0.99`` and ``eps = 1e-8``, as Chen et al.'s framework
(:mod:`peergrad.algorithms.decentralized_adaptive`), so they compare like for like.

Deviations from the paper: ``v_hat_0 = eps`` [D] (the paper's value is not recovered: with
``v_hat_0 = 0`` a coordinate whose first gradient is 0 gives 0/0; the naive Adam form starts
``v_0 = eps`` for the same reason, spec §3.4); the online problem's projection is dropped;
weight decay; ``momentum`` is an alias of β₁ (the registry-wide option). The code form keeps no
β₃-mixed statistic (``dadam.m`` computes one but does not use it).

Raises ``ValueError`` for ``lr``/``eps`` not finite and > 0, ``momentum``/``b1``/``b2`` outside
[0, 1), ``b3`` outside [0, 1) (``b3 != 0`` for ``dadam-naive``), ``b1`` contradicting a
non-default ``momentum``, ``weight_decay < 0``, an unknown ``form`` (``dadam-naive``: only
``"paper"``) and a W(k) that is not doubly stochastic (``check_topology``).

Under failures (a system profile's dropped links or absent workers): dadam: x is gossiped with each
round's surviving (doubly stochastic) W; an absent worker's moments and v_hat are frozen while it is
away; dadam-naive and decentralized-adam-naive: x is gossiped with each round's surviving (doubly
stochastic) W; an absent worker's moments are frozen while it is away.
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
    """``step``: iterations done; ``m``, ``v``: ``[w, D]`` local moments; ``v_hat``: ``[w, D]``
    (DADAM), ``None`` for ``decentralized-adam-naive``, which has no v_hat."""

    step: int
    m: Tensor
    v: Tensor
    v_hat: Tensor | None


@dataclasses.dataclass(frozen=True)
class LocalAdaptiveGossip(AdaptiveAlgorithm):
    """Gossip of x (combine-then-adapt) plus purely local Adam-type moments m and v.

    Subclasses choose the denominator (:meth:`denominator`) and whether a ``v_hat`` is kept
    (``keeps_v_hat``; without it ``v_0 = eps``, with it ``v_0 = 0`` and ``v_hat_0 = eps``).
    Hyper-parameters: ``lr``, ``b1``/``momentum`` (see :class:`AdaptiveAlgorithm`), ``b2``,
    ``eps`` (``None``: :meth:`default_eps`), ``weight_decay``.

    Options:

    - ``b2`` in [0, 1): β₂ of the local second-moment EMA v; default 0.999 (DADAM's MATLAB code).
    - ``eps`` > 0, or None: ε, the initial value of v_hat (or of v without v_hat); None: the
      method's default, 1e-8 unless stated.
    - ``weight_decay`` >= 0: L2 weight decay folded into the gradient; default 0 (not in the
      papers).
    """

    b2: float = 0.999
    eps: float | None = None
    weight_decay: float = 0.0

    keeps_v_hat: ClassVar[bool] = True
    coordinatewise: ClassVar[bool] = True
    failures_note: ClassVar[str] = (
        "x is gossiped with each round's surviving (doubly stochastic) W; an absent worker's "
        "moments are frozen while it is away"
    )
    preserves_mean: ClassVar[bool] = True  # only x is gossiped, with a doubly stochastic W

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval("b2", self.b2)
        if self.eps is not None:
            check_positive("eps", self.eps)
        check_non_negative("weight_decay", self.weight_decay)

    def default_eps(self) -> float:
        """The ``eps`` in force when ``eps`` is ``None``."""
        return 1e-8

    @property
    def epsilon(self) -> float:
        """``eps``, or :meth:`default_eps` when ``eps`` is ``None``."""
        return self.default_eps() if self.eps is None else self.eps

    def denominator(self, state: DADAMState, t: int, out: Tensor) -> float:
        """Write the step's denominator (from ``v_t``) into ``out``; return the step size."""
        raise NotImplementedError

    def check_topology(self, comm: Communicator) -> None:
        require_doubly_stochastic(comm, self.name)

    def init(self, x: Tensor, comm: Communicator) -> DADAMState:
        eps = self.epsilon
        return DADAMState(
            step=0,
            m=torch.zeros_like(x),
            v=torch.zeros_like(x) if self.keeps_v_hat else torch.full_like(x, eps),
            v_hat=torch.full_like(x, eps) if self.keeps_v_hat else None,
        )

    def pre_gradient(self, x: Tensor, state: DADAMState, comm: Communicator) -> Any:
        """The gossip of x does not need the gradient, so it starts here."""
        # mix_start is not in the Communicator protocol (overlap-capable comms)
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
        lr = self.denominator(state, t, denom)
        adaptive_step(x, state.m, denom, lr, base=mixed)
        return dataclasses.replace(state, step=t)


@dataclasses.dataclass(frozen=True)
class DADAM(LocalAdaptiveGossip):
    """DADAM (Nazari, Tarzanagh, Michailidis), ``form="paper"`` (default) or ``"code"``.

    Hyper-parameters: ``lr`` (α), ``b1`` (β₁; ``None`` means ``momentum``), ``momentum`` (alias
    of β₁, default 0.9; a given ``b1`` overrides the default value), ``b2``, ``b3``, ``eps``
    (``None``: 1e-8 for the paper form, 1e-4 for the code form), ``form``, ``weight_decay``.

    Options:

    - ``b3`` in [0, 1): β₃, the weight of the old v_hat in v_hat <- b3 v_hat + (1 - b3)
      max(v_hat, v); default 0.9 (``dadam.m``; ``dadam_parallel.m`` uses 0.999).
    - ``eps`` > 0, or None: ε; paper form: v_hat_0 (default 1e-8, library choice); code form:
      the additive ε of the denominator (default 1e-4, the code's).
    - ``form`` one of paper, code: paper is the form Chen et al. analyse (no bias correction,
      step m / sqrt(v_hat)); code is ``dadam.m`` (bias-corrected m and v, sqrt(v) + eps).
    """

    b3: float = 0.9
    form: str = "paper"

    name: ClassVar[str] = "dadam"
    failures_note: ClassVar[str] = (
        "x is gossiped with each round's surviving (doubly stochastic) W; an absent worker's "
        "moments and v_hat are frozen while it is away"
    )
    paper: ClassVar[str] = "Nazari, Tarzanagh, Michailidis, arXiv:1901.09109"
    summary: ClassVar[str] = (
        "DADAM: local AMSGrad-type statistics, gossip of the model only (biased when data differ)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval("b3", self.b3)
        check_choice("form", self.form, ("paper", "code"))

    def default_eps(self) -> float:
        return EPS_DEFAULT[self.form]

    def denominator(self, state: DADAMState, t: int, out: Tensor) -> float:
        if self.form == "paper":
            assert state.v_hat is not None
            mixed_max(state.v_hat, state.v, self.b3, scratch=out)
            torch.sqrt(state.v_hat, out=out)
            return self.lr
        torch.div(state.v, 1.0 - self.b2**t, out=out).sqrt_().add_(self.epsilon)
        return self.lr / (1.0 - self.beta1**t)


@dataclasses.dataclass(frozen=True)
class DADAMNaive(DADAM):
    """Naive decentralized AMSGrad: DADAM's paper form with ``b3 = 0`` (local AMSGrad + gossip).

    The baseline Chen et al. show to be biased; defaults ``b2 = 0.99``, ``eps = 1e-8``.

    Options:

    - ``b2`` in [0, 1): β₂; default 0.99, as in Chen et al.'s framework, to compare like for like.
    - ``b3`` 0 only: fixed by the method (use dadam for b3 > 0).
    - ``form`` paper only: the form Chen et al. analyse.
    """

    b2: float = 0.99
    b3: float = 0.0

    name: ClassVar[str] = "dadam-naive"
    failures_note: ClassVar[str] = LocalAdaptiveGossip.failures_note
    summary: ClassVar[str] = (
        "naive decentralized AMSGrad (DADAM with b3 = 0): local AMSGrad, gossip of the model"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.b3 != 0:
            raise ValueError(f"dadam-naive fixes b3 = 0 (got {self.b3!r}); use dadam for b3 > 0")
        check_choice("form", self.form, ("paper",))


@dataclasses.dataclass(frozen=True)
class DecentralizedAdamNaive(LocalAdaptiveGossip):
    """Naive decentralized Adam (spec §3.4): DADAM's paper form with v_hat replaced by v.

    ``x <- W x - lr * m / sqrt(v)`` with ``v_0 = eps``: local Adam without bias correction or
    AMSGrad's max (RMSProp-style), plus gossip of the model. The untracked baseline for
    ``decentralized-adam``, which has the same EMA statistic but divides by the gossiped
    (tracked) second moment of the previous step. Defaults ``b2 = 0.99``, ``eps = 1e-8``.

    Options:

    - ``b2`` in [0, 1): β₂ of v; default 0.99, as ``decentralized-adam``, to compare like for
      like.
    - ``eps`` > 0: ε, the initial value v_0 (spec §3.4), which keeps the first step finite where
      the first gradient is 0; default 1e-8 (None means the same).
    """

    b2: float = 0.99
    eps: float | None = 1e-8

    keeps_v_hat: ClassVar[bool] = False

    name: ClassVar[str] = "decentralized-adam-naive"
    paper: ClassVar[str] = (
        "Nazari, Tarzanagh, Michailidis, arXiv:1901.09109 (v_hat -> v); "
        "baseline of Chen et al., arXiv:2109.03194"
    )
    summary: ClassVar[str] = (
        "naive decentralized Adam (DADAM with v_hat -> v): local Adam without the max, "
        "gossip of the model"
    )

    def denominator(self, state: DADAMState, t: int, out: Tensor) -> float:
        torch.sqrt(state.v, out=out)
        return self.lr
