"""Distributed (and mini-batch) generic Adam: exact gradient averaging, then one generic-Adam step.

Paper: F. Zou, L. Shen, Z. Jie, W. Zhang, W. Liu, "A Sufficient Condition for Convergences of
Adam and RMSProp", CVPR 2019; arXiv:1811.09358 (v1, the mini-batch / distributed section).
Specification: ``compression-momentum-adam.md`` §5.1 (update), §5.2 (presets), §5.5
(distributed form), §5.7 (defaults). The update math is :mod:`peergrad.transforms.generic_adam`.

Update rule (all workers, iteration ``t = state.step + 1``; every tensor ``[w, D]``)::

    g_bar <- mean_i(g_i + weight_decay * x_i)          (one all-reduce of D values)
    v     <- theta_t v + (1 - theta_t) g_bar**2
    m     <- beta_t  m + (1 - beta_t)  g_bar
    x     <- x - alpha_t m / (sqrt(v) + eps_t)

m and v are replicated: every worker computes the same update from the same ``g_bar``, so no
optimizer state is communicated and, from identical initial models, all workers hold the same
x. With n workers of batch b this is exactly mini-batch generic Adam with batch n·b (the
1-worker case); Zou et al. (v1) show the iterations needed fall linearly in n·b [R?: the bound's
constants and whether α must scale with the batch are not confirmed].

Schedules (text forms of :func:`peergrad.transforms.generic_adam.parse_schedule`):

- ``preset`` picks α_t, β_t, θ_t, ε_t from ``lr``, β₁ (``b1``/``momentum``), ``b2`` and ``eps``:
  ``"generic"`` (default, §5.7: α_t = lr/√t, θ_t = ``zou:1`` = 1 - 1/t, β constant),
  ``"adam"`` (bias correction in α_t; = ``torch.optim.Adam``), ``"rmsprop"`` (β = 0, θ = b2,
  constant lr; = ``torch.optim.RMSprop(lr, alpha=b2, eps)``), ``"adagrad"`` (β = 0,
  θ_t = 1 - 1/t, α_t = lr/√t, ε_t = eps/√t; = ``torch.optim.Adagrad(lr, eps=eps)``),
  ``"adaema"``, ``"adamnc"`` (β_t = β₁ 0.99^(t-1)). β₁ is ignored by rmsprop and adagrad, ``b2``
  by every preset but adam and rmsprop. The torch equalities hold to rounding in float64
  (``tests/test_optim.py``).
- ``alpha`` (α_t / lr, e.g. ``"inv-sqrt"``, ``"poly:0.25"``, ``"const"``), ``theta`` (e.g.
  ``"zou:0.5"``, ``"const:0.999"``, ``"one-minus-poly:1,0.5"``) and ``beta`` (e.g.
  ``"const:0.9"``, ``"0.9*geometric:0.99"``), when given, replace the preset's schedule.

Deviations from the paper: ε in the denominator (``eps_mode="denominator"``, default) rather than
``v_0 = ε`` (``eps_mode="init"``), [R?]; weight decay (L2 into the gradient before averaging);
``momentum`` is an alias of β₁ (the registry-wide option).

Raises ``ValueError`` for ``lr``/``eps`` not finite and > 0, ``momentum``/``b1``/``b2`` outside
[0, 1), ``b1`` contradicting a non-default ``momentum``, ``weight_decay < 0``, an unknown
``preset`` or ``eps_mode``, and a schedule text that does not parse.

Under failures (a system profile's dropped links or absent workers): the gradient mean is over the
present workers; a returning worker's x and moments are stale, so the copies of x stop being
identical.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any, ClassVar

from torch import Tensor

from peergrad.algorithms.base import (
    AdaptiveAlgorithm,
    Closure,
    check_choice,
    check_non_negative,
    check_positive,
    check_unit_interval,
)
from peergrad.comm.base import Communicator
from peergrad.transforms import add_weight_decay
from peergrad.transforms.generic_adam import (
    EPS_PLACEMENTS,
    PRESETS,
    GenericAdam,
    parse_schedule,
)


def _preset_kwargs(preset: str, lr: float, b1: float, b2: float, eps: float) -> dict[str, float]:
    """The arguments of ``PRESETS[preset]`` taken from the algorithm's hyper-parameters."""
    kwargs: dict[str, float] = {"lr": lr, "eps": eps}
    if preset in ("generic", "adaema"):
        kwargs["beta"] = b1
    elif preset in ("adam", "adamnc"):
        kwargs["b1"] = b1
    if preset in ("adam", "rmsprop"):
        kwargs["b2"] = b2
    return kwargs


@dataclasses.dataclass
class DistributedAdamState:
    """``step``: iterations done; ``m``, ``v`` ``[w, D]``: first and second moments (the same on
    every worker)."""

    step: int
    m: Tensor
    v: Tensor


@dataclasses.dataclass(frozen=True)
class DistributedAdam(AdaptiveAlgorithm):
    """Distributed generic Adam; hyper-parameters as in the module docstring.

    Options:

    - ``lr`` > 0: the base step α; α_t = lr times the ``alpha`` schedule; default 1e-3 (spec
      compression-momentum-adam.md §5.7). A learning-rate schedule (``--lr-schedule``,
      ``--warmup-steps``) multiplies this base value: α_t = lr · factor(t) · alpha(t).
    - ``momentum`` in [0, 1): β₁ of the constant β_t = β₁ (alias of ``b1``); default 0.9 (§5.7).
    - ``b2`` in [0, 1): β₂, used by the adam and rmsprop presets; default 0.999.
    - ``eps`` > 0: ε; default 1e-8.
    - ``preset`` one of generic, adam, rmsprop, adagrad, adaema, adamnc: the schedules α_t, β_t,
      θ_t, ε_t; generic (default): α_t = lr/√t, θ_t = 1 - 1/t, β constant (§5.7).
    - ``alpha`` schedule text, or None: α_t / lr (e.g. inv-sqrt, poly:0.25); None: the preset's.
    - ``theta`` schedule text, or None: θ_t, the second-moment weight (e.g. zou:0.5,
      const:0.999); None: the preset's.
    - ``beta`` schedule text, or None: β_t, the first-moment weight (e.g. const:0.9); None: the
      preset's.
    - ``eps_mode`` one of denominator, init: ε added to √v (denominator) or v_0 = ε (init).
    - ``weight_decay`` >= 0: L2 weight decay added to the gradient before averaging; default 0.
    """

    b2: float = 0.999
    eps: float = 1e-8
    preset: str = "generic"
    alpha: str | None = None
    theta: str | None = None
    beta: str | None = None
    eps_mode: str = "denominator"
    weight_decay: float = 0.0

    name: ClassVar[str] = "distributed-adam"
    failures_note: ClassVar[str] = (
        "the gradient mean is over the present workers; a returning worker's x and moments are "
        "stale, so the copies of x stop being identical"
    )
    paper: ClassVar[str] = "Zou, Shen, Jie, Zhang, Liu, CVPR 2019, arXiv:1811.09358"
    summary: ClassVar[str] = (
        "distributed generic Adam: all-reduce of gradients, then one generic-Adam step "
        "(schedules alpha_t, beta_t, theta_t; presets adam, rmsprop, adagrad, ...)"
    )

    coordinatewise: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval("b2", self.b2)
        check_positive("eps", self.eps)
        check_choice("preset", self.preset, tuple(PRESETS))
        check_choice("eps_mode", self.eps_mode, EPS_PLACEMENTS)
        check_non_negative("weight_decay", self.weight_decay)
        _ = self.transform  # parse the schedules now: bad text fails at construction

    @cached_property
    def transform(self) -> GenericAdam:
        """The :class:`GenericAdam` this configuration runs (preset, then the overrides)."""
        kwargs = _preset_kwargs(self.preset, self.lr, self.beta1, self.b2, self.eps)
        base = PRESETS[self.preset](**kwargs)
        overrides: dict[str, Any] = {}
        if self.alpha is not None:
            overrides["alpha"] = parse_schedule(self.alpha) * self.lr
        if self.theta is not None:
            overrides["theta"] = parse_schedule(self.theta)
        if self.beta is not None:
            overrides["beta"] = parse_schedule(self.beta)
        return dataclasses.replace(base, eps_mode=self.eps_mode, **overrides)

    def uses_topology(self) -> bool:
        """False: the gradients are averaged exactly (all-reduce), with no topology."""
        return False

    def init(self, x: Tensor, comm: Communicator) -> DistributedAdamState:
        m, v = self.transform.init(x)
        return DistributedAdamState(step=0, m=m, v=v)

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: DistributedAdamState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> DistributedAdamState:
        t = state.step + 1
        g_bar = comm.mean(add_weight_decay(g, x, self.weight_decay))
        self.transform.update(x, g_bar, state.m, state.v, t, out=comm.workspace(x, "adam.denom"))
        return DistributedAdamState(step=t, m=state.m, v=state.v)
