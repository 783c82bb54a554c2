"""Decentralized adaptive gradient methods: Decentralized AMSGrad, AdaGrad and Adam.

Paper: X. Chen, B. Karimi, W. Zhao, P. Li, "On the Convergence of Decentralized Adaptive Gradient
Methods", ACML 2022 (PMLR vol. 189, pp. 217-232), arXiv:2109.03194. Specification:
``decentralized.md`` §4 (framework §4.2, AMSGrad §4.3, AdaGrad §4.4, epsilon §4.5).

Update rule (worker i, iteration t = ``state.step + 1``, W = ``comm.topology.at(state.step)``;
every tensor ``[w, D]``; ``b1`` is :attr:`DecentralizedAdaptive.beta1`)::

    g       <- g + weight_decay * x                        (L2, before any statistic)
    m       <- b1 m + (1 - b1) g                           (step 2, ema_first_moment)
    v_t     <- rule(v_(t-1), g, t)                         (step 3, see below)
    [x_half, u_t] = W [x, u_tilde]                         (steps 4-5: ONE fused message [w, 2D])
    u       = max(u_t, eps)                                (step 6; eps_mode="add": see below)
    x       <- x_half - lr * m / sqrt(u)                   (step 7)
    u_tilde <- u_t - v_(t-1) + v_t                         (step 8, tracking correction)

Second-moment rules (the only method-specific part):

- ``decentralized-amsgrad`` (§4.3, the paper's prototype): ``v_raw <- b2 v_raw + (1 - b2) g**2``
  (``v_raw_0 = 0``), ``v <- max(v, v_raw)``; no bias correction.
- ``decentralized-adagrad`` (§4.4, ACML version [R?]): ``v <- ((t - 1)/t) v + g**2 / t``, the
  running mean ``(1/t) sum g**2``. With a constant ``lr`` this is AdaGrad with step
  ``lr sqrt(t)`` relative to the sum-of-squares form: use ``lr = lr0 / sqrt(T)`` for a horizon T.
- ``decentralized-adam`` (library addition, not in the paper): ``v <- b2 v + (1 - b2) g**2``.
  Not monotone, so step 8 can drive ``u_tilde`` below ``eps`` or negative; the floor then binds
  and the theory (which needs ``sum_t |v_t - v_(t-1)|_1 = o(T)``) does not apply.

The order of steps 1-8 is [R] (it matches the third-party re-implementation). Steps 2-3 are
computed after the gossip here; they do not depend on it, so the result is the same.

Initialisation, option ``init_mode`` (the spec's ``init``, renamed because ``init`` is the
Algorithm method); m = 0 and:

- ``"paper"``: ``v_0 = u_tilde_(1/2) = eps`` (what the third-party re-implementation does; that
  the paper states exactly this is [R]). The first step is ``lr (1 - b1) g_1 / sqrt(eps)``
  whatever the gradient's scale; fidelity tests use it with ``eps = 1e-6``.
- ``"first-gradient"`` (default, **deviation** [D]): at t = 1, before the first gossip,
  ``v_0 = u_tilde_(1/2) = max(g_1**2, eps)``; the first step is then of order ``lr (1 - b1)``.

Both keep the tracking invariant ``mean_i u_tilde_(t+1/2) = mean_i v_t`` (doubly stochastic W);
with AMSGrad ``u_tilde >= eps`` up to rounding, so the floor never binds there.

Caveat (a property of the paper's method, not fixed here): the denominator is one step late, so
a coordinate whose first non-zero gradient arrives at t > 1 is divided by about ``sqrt(eps)``;
the step is then ``lr (1 - b1) g / sqrt(eps)`` (``1e3 lr g`` for eps = 1e-8). Models with sparse
inputs (always-zero pixels) see such jumps; a larger eps (1e-6 to 1e-4) or a smaller lr tames
them. "first-gradient" removes the jump only at t = 1.

``eps_mode``: ``"floor"`` (paper, §4.5; no additive eps, no bias correction [R]): denominator
``sqrt(max(u_t, eps))``, at least ``sqrt(eps)``; ``"add"`` (library option):
``sqrt(max(u_t, 0)) + eps``. ``eps`` is also the initial value above.

Communication: x and ``u_tilde`` in one message of ``2 D`` elements per neighbour per iteration;
m and v never leave the worker. The gossip needs only the previous iteration's values, so
``pre_gradient`` starts it before the gradient (not at t = 1 with ``"first-gradient"``). With
n = 1 the method is the base optimizer with the one-step-delayed denominator
``max(v_(t-1), eps)``, not torch's AMSGrad. Time-varying W(k) are used in order.

Deviations from the paper: ``init_mode="first-gradient"`` (default), ``eps_mode="add"``, the EMA
rule, weight decay, and ``momentum`` as an alias of β₁ (the paper calls β₁ the momentum; the
registry-wide option ``momentum`` therefore sets β₁). Unconfirmed details ([R?]/[U]: the exact
initialisation, the AdaGrad variant, β₂ = 0.99 and the value of eps) are listed in the spec, §8.

Raises ``ValueError`` for ``lr``/``eps`` not finite and > 0, ``momentum``/``b1``/``b2`` outside
[0, 1), ``b1`` contradicting a non-default ``momentum``, ``weight_decay < 0``, an unknown
``init_mode`` or ``eps_mode``, and a W(k) that is not doubly stochastic (``check_topology``);
``check_topology`` warns (``UserWarning``) on a non-symmetric W(k), which the theory excludes.

Under failures (a system profile's dropped links or absent workers): x and the tracked second moment
are gossiped with each round's surviving W (their averages are kept); an absent worker keeps its
share of the tracked moment while away.
"""

from __future__ import annotations

import dataclasses
import warnings
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
    EPS_MODES,
    adagrad_mean,
    adaptive_denominator,
    adaptive_step,
    add_weight_decay,
    amsgrad_max,
    ema_first_moment,
    ema_second_moment,
)

PAPER = "Chen, Karimi, Zhao, Li, ACML 2022, arXiv:2109.03194"


@dataclasses.dataclass
class DecentralizedAdaptiveState:
    """``step``: iterations done; ``gossip`` ``[w, 2D]``: the send buffer, whose second half is
    the tracked second moment ``u_tilde_(t+1/2)`` (:attr:`u_tilde`) and whose first half is
    scratch for x; ``m``, ``v`` ``[w, D]``: first and second moments (v is the rule's output);
    ``v_raw`` ``[w, D]``: AMSGrad's EMA before the max (``None`` for the other rules)."""

    step: int
    gossip: Tensor
    m: Tensor
    v: Tensor
    v_raw: Tensor | None

    @property
    def u_tilde(self) -> Tensor:
        """The tracked second moment ``u_tilde_(t+1/2)``, a ``[w, D]`` view of ``gossip``."""
        return self.gossip[:, self.m.shape[1] :]


@dataclasses.dataclass(frozen=True)
class DecentralizedAdaptive(AdaptiveAlgorithm):
    """Chen et al.'s framework; subclasses choose the second-moment rule (:meth:`second_moment`).

    Hyper-parameters: ``lr`` (α), ``b1`` (β₁; ``None`` means ``momentum``), ``momentum`` (alias
    of β₁, default 0.9: the registry-wide option; a given ``b1`` overrides the default value),
    ``eps`` (floor on the second moment and its initial value), ``init_mode``
    (``"first-gradient"`` | ``"paper"``), ``eps_mode`` (``"floor"`` | ``"add"``),
    ``weight_decay`` (L2 folded into the gradient).

    Options:

    - ``eps`` > 0: ε, the floor of the second moment (eps_mode=floor) and its initial value;
      default 1e-8 (spec decentralized.md §6).
    - ``init_mode`` one of first-gradient, paper: v_0 = max(g_1², eps) (default, a deviation that
      keeps the first step of order lr) or v_0 = eps (the paper's).
    - ``eps_mode`` one of floor, add: denominator √max(u, eps) (the paper's) or √max(u, 0) + eps.
    - ``weight_decay`` >= 0: L2 weight decay folded into the gradient; default 0.
    - ``b2`` in [0, 1): β₂ of the second-moment EMA; default 0.99 (spec §6).
    """

    eps: float = 1e-8
    init_mode: str = "first-gradient"
    eps_mode: str = "floor"
    weight_decay: float = 0.0

    paper: ClassVar[str] = PAPER
    failures_note: ClassVar[str] = (
        "x and the tracked second moment are gossiped with each round's surviving W (their "
        "averages are kept); an absent worker keeps its share of the tracked moment while away"
    )
    uses_v_raw: ClassVar[bool] = False

    coordinatewise: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("eps", self.eps)
        check_choice("init_mode", self.init_mode, ("first-gradient", "paper"))
        check_choice("eps_mode", self.eps_mode, EPS_MODES)
        check_non_negative("weight_decay", self.weight_decay)

    def second_moment(self, state: DecentralizedAdaptiveState, g: Tensor, t: int) -> None:
        """Step 3: update ``state.v`` (and ``state.v_raw``) in place from ``v_(t-1)`` to ``v_t``."""
        raise NotImplementedError

    def check_topology(self, comm: Communicator) -> None:
        require_doubly_stochastic(comm, self.name)
        if comm.topology.directed:
            warnings.warn(
                f"{self.name}: topology {comm.topology.name!r} has a non-symmetric mixing "
                "matrix; Chen et al.'s analysis assumes a symmetric W (the tracking invariant "
                "still holds because W is doubly stochastic)",
                UserWarning,
                stacklevel=2,
            )

    def init(self, x: Tensor, comm: Communicator) -> DecentralizedAdaptiveState:
        w, D = x.shape
        gossip = x.new_zeros((w, 2 * D))
        gossip[:, D:] = self.eps  # u_tilde_(1/2) = eps ("first-gradient" resets it at t = 1)
        return DecentralizedAdaptiveState(
            step=0,
            gossip=gossip,
            m=torch.zeros_like(x),
            v=torch.full_like(x, self.eps),
            v_raw=torch.zeros_like(x) if self.uses_v_raw else None,
        )

    def pre_gradient(self, x: Tensor, state: DecentralizedAdaptiveState, comm: Communicator) -> Any:
        """Start the fused gossip of ``[x_t, u_tilde_(t-1/2)]`` (it does not need the gradient).

        Returns ``None`` at t = 1 with ``init_mode="first-gradient"`` (u_tilde_(1/2) needs g_1).
        """
        if state.step == 0 and self.init_mode == "first-gradient":
            return None
        return self._start_gossip(x, state, comm)

    def _start_gossip(
        self, x: Tensor, state: DecentralizedAdaptiveState, comm: Communicator
    ) -> Any:
        state.gossip[:, : x.shape[1]].copy_(x)
        # mix_start is not in the Communicator protocol (overlap-capable comms)
        return comm.mix_start(state.gossip, comm.topology.at(state.step))

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: DecentralizedAdaptiveState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> DecentralizedAdaptiveState:
        D, t = x.shape[1], state.step + 1
        g = add_weight_decay(g, x, self.weight_decay)
        if t == 1 and self.init_mode == "first-gradient":  # pre_gradient started nothing
            torch.mul(g, g, out=state.v).clamp_(min=self.eps)  # v_0 = max(g_1**2, eps)
            state.u_tilde.copy_(state.v)  # u_tilde_(1/2) = v_0
        if pending is None:
            pending = self._start_gossip(x, state, comm)
        recv = pending.wait(comm.workspace(state.gossip, "dadaptive.recv"))
        x_half, u_t = recv[:, :D], recv[:, D:]  # W x_t and u_tilde_t
        ema_first_moment(state.m, g, self.beta1)  # step 2
        torch.sub(u_t, state.v, out=state.u_tilde)  # step 8, first half: u_t - v_(t-1)
        self.second_moment(state, g, t)  # step 3: v_(t-1) -> v_t
        state.u_tilde.add_(state.v)  # step 8, second half: + v_t
        denom = adaptive_denominator(u_t, self.eps, self.eps_mode, out=u_t)  # step 6
        adaptive_step(x, state.m, denom, self.lr, base=x_half)  # step 7
        return dataclasses.replace(state, step=t)


@dataclasses.dataclass(frozen=True)
class DecentralizedAMSGrad(DecentralizedAdaptive):
    """Decentralized AMSGrad (Chen et al., §4.3): ``v = max(v, EMA_b2(g**2))``, no bias correction.

    ``b2`` (β₂, default 0.99 [R?]) in [0, 1); other hyper-parameters as
    :class:`DecentralizedAdaptive`.
    """

    b2: float = 0.99

    name: ClassVar[str] = "decentralized-amsgrad"
    summary: ClassVar[str] = (
        "decentralized AMSGrad: gossip the model and a tracked second moment (fused), "
        "every worker steps with the network's denominator"
    )
    uses_v_raw: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval("b2", self.b2)

    def second_moment(self, state: DecentralizedAdaptiveState, g: Tensor, t: int) -> None:
        assert state.v_raw is not None
        amsgrad_max(state.v, ema_second_moment(state.v_raw, g, self.b2))


@dataclasses.dataclass(frozen=True)
class DecentralizedAdaGrad(DecentralizedAdaptive):
    """Decentralized AdaGrad (Chen et al., ACML version, §4.4 [R?]): ``v`` = mean of ``g**2``.

    Default ``lr = 1e-2``; β₁ defaults to 0.9 (whether the paper uses 0 or 0.9 is [U]).

    Options:

    - ``lr`` > 0: the step size α; default 1e-2 (the running mean of g² makes its steps smaller
      than AMSGrad's).
    """

    lr: float = 1e-2

    name: ClassVar[str] = "decentralized-adagrad"
    summary: ClassVar[str] = (
        "decentralized AdaGrad: tracked running mean of squared gradients as the denominator"
    )

    def second_moment(self, state: DecentralizedAdaptiveState, g: Tensor, t: int) -> None:
        adagrad_mean(state.v, g, t)


@dataclasses.dataclass(frozen=True)
class DecentralizedAdam(DecentralizedAdaptive):
    """Decentralized Adam (library addition): ``v = EMA_b2(g**2)`` inside Chen et al.'s framework.

    Not covered by the paper's theory (v is not monotone); the ``eps`` floor is essential here.
    """

    b2: float = 0.99

    name: ClassVar[str] = "decentralized-adam"
    summary: ClassVar[str] = (
        "decentralized Adam (EMA second moment, no bias correction) in Chen et al.'s framework"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval("b2", self.b2)

    def second_moment(self, state: DecentralizedAdaptiveState, g: Tensor, t: int) -> None:
        ema_second_moment(state.v, g, self.b2)
