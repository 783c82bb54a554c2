"""Generic Adam: Adam with schedules α_t, β_t, θ_t, its presets and its sufficient condition.

Paper: F. Zou, L. Shen, Z. Jie, W. Zhang, W. Liu, "A Sufficient Condition for Convergences of
Adam and RMSProp", CVPR 2019, pp. 11127-11135; arXiv:1811.09358 (v1 has the mini-batch and
distributed part). Specification: ``compression-momentum-adam.md`` §5.

Update rule (§5.1; ``t >= 1`` the 1-based iteration, every tensor ``[w, D]`` or any common
shape, every operation per coordinate)::

    v <- theta_t v + (1 - theta_t) g**2        (ema_second_moment)
    m <- beta_t  m + (1 - beta_t)  g           (ema_first_moment)
    x <- x - alpha_t m / (sqrt(v) + eps_t)     (adaptive_denominator "add", adaptive_step)

No bias correction: Adam's corrections live in α_t (:func:`adam`). ``eps_mode="init"`` instead
starts ``v_0 = eps_1`` and divides by ``sqrt(v)`` (the paper's placement, [R?]); the default
``"denominator"`` (``v_0 = 0``, ``+ eps_t``, [D]) makes the presets coincide with torch.

Schedules. A schedule maps ``t`` to a float. :class:`Schedule` is a named family (below) times a
scale and has the text form ``[SCALE*]NAME[:P1,P2,...]`` (:func:`parse_schedule`, ``str``), e.g.
``0.5*inv-sqrt`` (α_t = 0.5/√t), ``adagrad`` (θ_t = 1 - 1/t), ``zou:0.5`` (§5.4), ``const:0.9``.
Any callable ``t -> float`` and any number (a constant) are accepted too (:func:`as_schedule`).

Families (value at t; typical use):

- ``const[:c]``: c (default 1). β, θ of Adam/RMSProp, a constant α.
- ``poly:p``: t^-p. α_t = α/t^s with s = p.
- ``inv-sqrt``: 1/√t. α_t = α/√t, the paper's s = 1/2.
- ``one-minus-poly:r[,c]``: 1 - c/t^r. θ_t = 1 - θ/t^r of the §5.3 corollary (c = θ).
- ``adagrad``: 1 - 1/t. θ of AdaGrad, AdaEMA, AdamNC.
- ``zou:r``: 1 - (0.001 + 0.999 r)/t^r. The §5.4 family from Adam (r = 0: θ = 0.999) to
  AdaEMA (r = 1: 1 - 1/t).
- ``geometric:lam``: lam^(t-1). AdamNC's β_t = β₁ λ^(t-1) is ``b1*geometric:lam``.
- ``adam-bias:b1,b2[,p]``: √(1 - b2^t)/(1 - b1^t) · t^-p. Adam's bias correction folded into
  α_t (p = 0: Adam; p = 1/2: on top of α/√t).
- ``sqrt-bias:b2``: √(1 - b2^t). Adam's ε rescaled (torch adds ε after the correction).

The §5.4 constant 0.001 + 0.999 r is [R?] (a sibling file of the third-party source uses
0.01 + 0.99 r); the paper's exact corollary, the β/θ compatibility form and ε's placement are
[R?] as well (spec §7.3).

Errors: :func:`parse_schedule` raises ``ValueError`` on an unknown family (the message lists
them), a wrong number of parameters or a non-number; :class:`GenericAdam` on an unknown
``eps_mode``; :func:`check_sufficient_condition` on a horizon < 100 or a non-positive α_t.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from peergrad.transforms.adaptive import (
    Coefficient,
    adaptive_denominator,
    adaptive_step,
    ema_first_moment,
    ema_second_moment,
)

__all__ = [
    "EPS_PLACEMENTS",
    "PRESETS",
    "SCHEDULE_FAMILIES",
    "ConditionResult",
    "GenericAdam",
    "Schedule",
    "SufficientConditionReport",
    "adaema",
    "adagrad",
    "adam",
    "adamnc",
    "as_schedule",
    "check_sufficient_condition",
    "generic",
    "generic_adam_step",
    "parse_schedule",
    "polynomial_corollary",
    "rmsprop",
]

EPS_PLACEMENTS = ("denominator", "init")


@dataclasses.dataclass(frozen=True)
class _Family:
    params: tuple[str, ...]
    defaults: tuple[float | None, ...]  # None: required
    fn: Callable[..., np.ndarray]
    formula: str


def _zou(t: np.ndarray, r: float) -> np.ndarray:
    return 1.0 - (0.001 + 0.999 * r) * t**-r


SCHEDULE_FAMILIES: dict[str, _Family] = {
    "const": _Family(("c",), (1.0,), lambda t, c: np.full_like(t, c), "c"),
    "poly": _Family(("p",), (None,), lambda t, p: t**-p, "t^-p"),
    "inv-sqrt": _Family((), (), lambda t: 1.0 / np.sqrt(t), "1/sqrt(t)"),
    "one-minus-poly": _Family(
        ("r", "c"), (None, 1.0), lambda t, r, c: 1.0 - c * t**-r, "1 - c t^-r"
    ),
    "adagrad": _Family((), (), lambda t: 1.0 - 1.0 / t, "1 - 1/t"),
    "zou": _Family(("r",), (None,), _zou, "1 - (0.001 + 0.999 r)/t^r"),
    "geometric": _Family(("lam",), (None,), lambda t, lam: lam ** (t - 1.0), "lam^(t-1)"),
    "adam-bias": _Family(
        ("b1", "b2", "p"),
        (None, None, 0.0),
        lambda t, b1, b2, p: np.sqrt(1.0 - b2**t) / (1.0 - b1**t) * t**-p,
        "sqrt(1 - b2^t)/(1 - b1^t) t^-p",
    ),
    "sqrt-bias": _Family(("b2",), (None,), lambda t, b2: np.sqrt(1.0 - b2**t), "sqrt(1 - b2^t)"),
}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """``scale * family(t; *params)`` for ``t = 1, 2, ...`` (see the module's table).

    ``Schedule("inv-sqrt", (), 0.5)(t) == 0.5 / sqrt(t)``; ``str()`` gives the text form that
    :func:`parse_schedule` reads back. :meth:`values` evaluates many ``t`` at once (float64).
    """

    family: str
    params: tuple[float, ...] = ()
    scale: float = 1.0

    def __post_init__(self) -> None:
        fam = SCHEDULE_FAMILIES.get(self.family)
        if fam is None:
            raise ValueError(
                f"unknown schedule family {self.family!r}; choose one of: "
                f"{', '.join(SCHEDULE_FAMILIES)}"
            )
        required = sum(d is None for d in fam.defaults)
        if not required <= len(self.params) <= len(fam.params):
            raise ValueError(
                f"schedule {self.family!r} takes parameters ({', '.join(fam.params)}) "
                f"of which {required} required; got {len(self.params)}"
            )
        if not all(math.isfinite(p) for p in (*self.params, self.scale)):
            raise ValueError(f"schedule {self.family!r}: parameters must be finite numbers")

    @property
    def full_params(self) -> tuple[float, ...]:
        fam = SCHEDULE_FAMILIES[self.family]
        given = tuple(float(p) for p in self.params)
        return given + tuple(float(d) for d in fam.defaults[len(given) :])  # type: ignore[arg-type]

    def values(self, t: np.ndarray) -> np.ndarray:
        """The schedule at the 1-based iterations ``t`` (any shape), float64."""
        t = np.asarray(t, dtype=np.float64)
        out = SCHEDULE_FAMILIES[self.family].fn(t, *self.full_params)
        return out * self.scale if self.scale != 1.0 else out

    def __call__(self, t: int) -> float:
        return float(self.values(np.array([t]))[0])

    def __mul__(self, k: float) -> Schedule:
        return dataclasses.replace(self, scale=self.scale * float(k))

    __rmul__ = __mul__

    def __str__(self) -> str:
        head = "" if self.scale == 1.0 else f"{self.scale:g}*"
        tail = ":" + ",".join(f"{p:g}" for p in self.params) if self.params else ""
        return f"{head}{self.family}{tail}"


@dataclasses.dataclass(frozen=True)
class _FunctionSchedule:
    """A user callable ``t -> float`` seen as a schedule (evaluated one ``t`` at a time)."""

    fn: Callable[[int], float]

    def __call__(self, t: int) -> float:
        return float(self.fn(t))

    def values(self, t: np.ndarray) -> np.ndarray:
        flat = np.asarray(t).reshape(-1)
        return np.array([self.fn(int(k)) for k in flat], dtype=np.float64).reshape(np.shape(t))

    def __str__(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def parse_schedule(text: str) -> Schedule:
    """Read ``[SCALE*]NAME[:P1,P2,...]``, e.g. ``"1e-3*inv-sqrt"``, ``"zou:0.5"``, ``"const:0.9"``.

    Raises:
        ValueError: an unknown family (the message lists them), a wrong parameter count, or a
            scale/parameter that is not a finite number.
    """
    raw = text.strip()
    scale = 1.0
    head, star, rest = raw.partition("*")
    if star:
        try:
            scale = float(head)
        except ValueError:
            raise ValueError(f"schedule {text!r}: {head!r} before '*' is not a number") from None
        raw = rest.strip()
    name, colon, args = raw.partition(":")
    params: tuple[float, ...] = ()
    if colon:
        try:
            params = tuple(float(a) for a in args.split(","))
        except ValueError:
            raise ValueError(f"schedule {text!r}: parameters must be numbers") from None
    return Schedule(name.strip(), params, scale)


def as_schedule(value: Any) -> Schedule | _FunctionSchedule:
    """A :class:`Schedule` from a schedule, a text form, a number (constant) or a callable."""
    if isinstance(value, Schedule | _FunctionSchedule):
        return value
    if isinstance(value, str):
        return parse_schedule(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Schedule("const", (float(value),))
    if callable(value):
        return _FunctionSchedule(value)
    raise ValueError(f"a schedule must be text, a number or a callable t -> float; got {value!r}")


# ------------------------------------------------------------------------------ the update
def generic_adam_step(
    x: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    alpha_t: Coefficient,
    beta_t: Coefficient,
    theta_t: Coefficient,
    eps_t: Coefficient,
    out: Tensor | None = None,
) -> Tensor:
    """One generic-Adam step (§5.1 steps 2-4) in place on ``x``, ``m``, ``v``; returns ``x``.

    Coefficients are this step's values: floats, or tensors broadcastable to ``x`` (one per row,
    to run several schedules side by side). ``out`` (shape of ``v``) receives the denominator
    ``sqrt(v) + eps_t``; pass ``eps_t = 0`` for the ``"init"`` placement.
    """
    ema_second_moment(v, g, theta_t)
    ema_first_moment(m, g, beta_t)
    denom = adaptive_denominator(v, eps_t, "add", out=out)
    return adaptive_step(x, m, denom, alpha_t)


@dataclasses.dataclass(frozen=True)
class GenericAdam:
    """Generic Adam with schedules ``alpha`` (α_t > 0), ``beta`` (β_t), ``theta`` (θ_t), ``eps``.

    Each schedule is anything :func:`as_schedule` accepts. ``eps_mode``: ``"denominator"``
    (``v_0 = 0``, divide by ``sqrt(v_t) + eps_t``) or ``"init"`` (``v_0 = eps_1``, divide by
    ``sqrt(v_t)``). Use :meth:`init` for the moments, then :meth:`update` once per iteration.

    Raises:
        ValueError: an invalid schedule or ``eps_mode``.
    """

    alpha: Any
    beta: Any = 0.9
    theta: Any = "adagrad"
    eps: Any = 1e-8
    eps_mode: str = "denominator"

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "theta", "eps"):
            object.__setattr__(self, name, as_schedule(getattr(self, name)))
        if self.eps_mode not in EPS_PLACEMENTS:
            raise ValueError(
                f"eps_mode must be one of {', '.join(EPS_PLACEMENTS)}; got {self.eps_mode!r}"
            )

    def coefficients(self, t: int) -> tuple[float, float, float, float]:
        """``(alpha_t, beta_t, theta_t, eps_t)`` at the 1-based iteration ``t``; ``eps_t = 0``
        under ``eps_mode="init"`` (ε is then only the initial ``v_0``)."""
        eps_t = self.eps(t) if self.eps_mode == "denominator" else 0.0
        return self.alpha(t), self.beta(t), self.theta(t), eps_t

    def init(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(m_0, v_0)``: zeros, and ``v_0 = eps_1`` under ``eps_mode="init"``."""
        v0 = self.eps(1) if self.eps_mode == "init" else 0.0
        return torch.zeros_like(x), torch.full_like(x, v0)

    def update(
        self, x: Tensor, g: Tensor, m: Tensor, v: Tensor, t: int, out: Tensor | None = None
    ) -> Tensor:
        """Iteration ``t`` (1-based) in place on ``x``, ``m``, ``v``; returns ``x``."""
        return generic_adam_step(x, g, m, v, *self.coefficients(t), out=out)

    def describe(self) -> str:
        return (
            f"alpha={self.alpha} beta={self.beta} theta={self.theta} eps={self.eps} "
            f"eps_mode={self.eps_mode}"
        )


# ------------------------------------------------------------------------------ presets (§5.2)
def adam(lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GenericAdam:
    """Adam (Kingma and Ba): β = b1, θ = b2, α_t = lr sqrt(1 - b2^t)/(1 - b1^t), and
    ε_t = eps sqrt(1 - b2^t). The same iterates as ``torch.optim.Adam(lr, (b1, b2), eps)``
    (amsgrad, weight_decay, maximize off) up to rounding: torch adds ``eps`` to the corrected
    ``sqrt(v / (1 - b2^t))``, which is ``sqrt(v) + eps_t`` divided by ``sqrt(1 - b2^t)``."""
    return GenericAdam(
        alpha=Schedule("adam-bias", (b1, b2), lr),
        beta=b1,
        theta=b2,
        eps=Schedule("sqrt-bias", (b2,), eps),
    )


def rmsprop(lr: float = 1e-2, b2: float = 0.99, eps: float = 1e-8) -> GenericAdam:
    """RMSProp: β = 0, θ = b2, α = lr. The same operations as ``torch.optim.RMSprop(lr,
    alpha=b2, eps)`` with ``momentum=0, centered=False`` (torch's momentum is heavy ball on the
    scaled step, not generic Adam's β, so it has no preset here)."""
    return GenericAdam(alpha=lr, beta=0.0, theta=b2, eps=eps)


def adagrad(lr: float = 1e-2, eps: float = 1e-10) -> GenericAdam:
    """Diagonal AdaGrad: β = 0, θ_t = 1 - 1/t, α_t = lr/√t, ε_t = eps/√t. Then
    ``alpha_t g / (sqrt(v_t) + eps_t) = lr g / (sqrt(sum g**2) + eps)``: the iterates of
    ``torch.optim.Adagrad(lr, lr_decay=0, initial_accumulator_value=0, eps)`` up to rounding
    (a non-zero ``initial_accumulator_value`` has no counterpart: θ_1 = 0 wipes ``v_0``)."""
    return GenericAdam(
        alpha=Schedule("inv-sqrt", (), lr),
        beta=0.0,
        theta="adagrad",
        eps=Schedule("inv-sqrt", (), eps),
    )


def adaema(lr: float = 1e-3, beta: float = 0.9, eps: float = 1e-8) -> GenericAdam:
    """AdaEMA (AdaFom of Chen et al., arXiv:1808.02941): β constant, θ_t = 1 - 1/t, α_t = lr/√t."""
    return GenericAdam(alpha=Schedule("inv-sqrt", (), lr), beta=beta, theta="adagrad", eps=eps)


def adamnc(lr: float = 1e-3, b1: float = 0.9, lam: float = 0.99, eps: float = 1e-8) -> GenericAdam:
    """AdamNC (Reddi et al., ICLR 2018): β_t = b1 lam^(t-1), θ_t = 1 - 1/t, α_t = lr/√t.
    ``lam = 1`` is AdaEMA; the default ``lam = 0.99`` is a library choice [D]."""
    return GenericAdam(
        alpha=Schedule("inv-sqrt", (), lr),
        beta=Schedule("geometric", (lam,), b1),
        theta="adagrad",
        eps=eps,
    )


def generic(
    lr: float = 1e-3, beta: float = 0.9, s: float = 0.5, r: float = 1.0, eps: float = 1e-8
) -> GenericAdam:
    """The library default (§5.7): α_t = lr/t^s, θ_t = zou:r (§5.4), β constant."""
    return GenericAdam(
        alpha=Schedule("poly", (s,), lr), beta=beta, theta=Schedule("zou", (r,)), eps=eps
    )


PRESETS: dict[str, Callable[..., GenericAdam]] = {
    "generic": generic,
    "adam": adam,
    "rmsprop": rmsprop,
    "adagrad": adagrad,
    "adaema": adaema,
    "adamnc": adamnc,
}


# ------------------------------------------------------------------------------ condition (§5.3)
@dataclasses.dataclass(frozen=True)
class ConditionResult:
    """One part of the sufficient condition: ``ok`` and a one-line explanation."""

    name: str
    ok: bool
    detail: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok", bool(self.ok))  # a plain bool, also from numpy


@dataclasses.dataclass(frozen=True, eq=False)
class SufficientConditionReport:
    """The verdict of :func:`check_sufficient_condition` over ``t = 1..horizon``.

    ``conditions`` holds SC1-SC4 in order; ``sc4_ratio[T - 1]`` is
    ``sum_{t<=T} alpha_t sqrt(1 - theta_t) / (T alpha_T)`` (the SC4 curve, float64 ``[horizon]``);
    ``c0`` is the smallest C₀ of SC3 on the horizon.
    """

    horizon: int
    conditions: tuple[ConditionResult, ...]
    sc4_ratio: np.ndarray
    c0: float

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.conditions if not c.ok)

    @property
    def passed(self) -> bool:
        return not self.failed

    def ratio_at(self, T: int) -> float:
        """The SC4 ratio at ``T`` (``1 <= T <= horizon``)."""
        return float(self.sc4_ratio[T - 1])

    def summary(self) -> str:
        lines = [f"{c.name}  {'ok  ' if c.ok else 'FAIL'}  {c.detail}" for c in self.conditions]
        decades = [k for k in range(1, 10) if 10**k <= self.horizon]
        ratios = " / ".join(f"{self.ratio_at(10**k):.4g}" for k in decades)
        lines.append(f"SC4 ratio at T = {' / '.join(f'1e{k}' for k in decades)}: {ratios}")
        verdict = "holds" if self.passed else "fails (" + ", ".join(self.failed) + ")"
        lines.append(f"sufficient condition {verdict} on t = 1..{self.horizon}")
        return "\n".join(lines)


def _decade_exponent(curve: np.ndarray, T: int) -> float:
    """log10(curve[T] / curve[T/10]): the power of t by which ``curve`` grew in the last decade."""
    return float(np.log10(curve[T - 1] / curve[T // 10 - 1]) / np.log10(T / (T // 10)))


def check_sufficient_condition(
    alpha: Any,
    theta: Any,
    beta: Any = 0.0,
    horizon: int = 10**6,
    *,
    growth_tol: float = 0.05,
    decay_tol: float = 0.02,
) -> SufficientConditionReport:
    """Evaluate Zou et al.'s sufficient condition (§5.3) numerically for ``t = 1..horizon``.

    The structure of SC1-SC4 is recalled from the paper ([R]); the exact side conditions are
    [R?] (spec §5.3, §7.3). The parts, as checked:

    - SC1: ``0 <= beta_t <= beta < 1`` (β = the largest β_t seen).
    - SC2: ``0 < theta_t < 1`` (``theta_1 = 0`` allowed, it only wipes ``v_0``), θ_t
      non-decreasing, and ``beta**2 < theta_horizon`` (the limit form of the β/θ compatibility;
      whether the paper needs ``beta**2 < theta_1`` is [R?] and is only reported).
    - SC3: ``chi_t = alpha_t / sqrt(1 - theta_t)`` almost non-increasing. The smallest C₀ with a
      non-increasing ``a_t <= chi_t <= C₀ a_t`` is ``max_t chi_t / min_{s<=t} chi_s``; SC3 fails
      when that C₀ still grows faster than ``t**growth_tol`` over the last decade of the horizon
      (an unbounded C₀), so a bounded rise such as Adam's bias correction passes.
    - SC4: the ratio ``sum_{t<=T} alpha_t sqrt(1 - theta_t) / (T alpha_T)`` must tend to 0; it
      fails when the ratio falls slower than ``T**-decay_tol`` over the last decade.

    A finite horizon cannot prove a limit: SC3 and SC4 are judged by their trend over
    ``[horizon/10, horizon]``. Schedules are anything :func:`as_schedule` accepts (scale of α is
    irrelevant). Runs in well under a second for ``horizon = 10**6`` with named schedules.

    Raises:
        ValueError: ``horizon < 100``, or some α_t not finite and > 0.
    """
    if not (isinstance(horizon, int) and horizon >= 100):
        raise ValueError(f"horizon must be an integer >= 100, got {horizon!r}")
    alpha_s, theta_s, beta_s = as_schedule(alpha), as_schedule(theta), as_schedule(beta)
    t = np.arange(1, horizon + 1, dtype=np.float64)
    a, th, b = alpha_s.values(t), theta_s.values(t), beta_s.values(t)
    bad = np.flatnonzero(~(np.isfinite(a) & (a > 0)))
    if bad.size:
        raise ValueError(f"alpha_t must be finite and > 0; alpha_{bad[0] + 1} = {a[bad[0]]!r}")

    beta_max = float(b.max())
    sc1 = ConditionResult(
        "SC1",
        bool(b.min() >= 0 and beta_max < 1),
        f"beta_t in [{b.min():.4g}, {beta_max:.4g}]; needs 0 <= beta_t <= beta < 1",
    )
    sc2 = _check_sc2(th, beta_max)
    sc3, c0 = _check_sc3(a, th, horizon, growth_tol)
    sc4, ratio = _check_sc4(a, th, t, horizon, decay_tol)
    return SufficientConditionReport(horizon, (sc1, sc2, sc3, sc4), ratio, c0)


def _check_sc2(th: np.ndarray, beta_max: float) -> ConditionResult:
    """SC2 of :func:`check_sufficient_condition` on the values ``th`` of θ_t, t = 1..T."""
    in_range = bool(0 <= th[0] < 1 and np.all((th[1:] > 0) & (th[1:] < 1)))
    drops = np.diff(th) < -1e-12
    monotone = not bool(drops.any())
    compat = beta_max**2 < th[-1]
    parts = [f"theta_t in [{th.min():.6g}, {th.max():.6g}]"]
    if not in_range:
        parts.append("outside (0, 1)")
    if not monotone:
        parts.append(f"decreases at t = {int(np.flatnonzero(drops)[0]) + 2}")
    parts.append(
        f"beta^2 = {beta_max**2:.4g} {'<' if compat else '>='} theta_T = {th[-1]:.6g}"
        + ("" if beta_max**2 < th[0] else f" (but not < theta_1 = {th[0]:.4g})")
    )
    return ConditionResult("SC2", in_range and monotone and compat, "; ".join(parts))


def _check_sc3(
    a: np.ndarray, th: np.ndarray, horizon: int, growth_tol: float
) -> tuple[ConditionResult, float]:
    """SC3 of :func:`check_sufficient_condition`, and the C₀ the horizon needs."""
    with np.errstate(divide="ignore", invalid="ignore"):
        chi = a / np.sqrt(1.0 - th)
        c0_curve = np.maximum.accumulate(chi / np.minimum.accumulate(chi))
        growth = _decade_exponent(c0_curve, horizon) if np.all(np.isfinite(chi)) else math.inf
    c0 = float(c0_curve[-1])
    sc3 = ConditionResult(
        "SC3",
        growth <= growth_tol,
        f"chi_t = alpha_t/sqrt(1-theta_t) needs C0 = {c0:.4g} on the horizon, growing like "
        f"t^{growth:+.3g} over the last decade (allowed t^{growth_tol:g})",
    )
    return sc3, c0


def _check_sc4(
    a: np.ndarray, th: np.ndarray, t: np.ndarray, horizon: int, decay_tol: float
) -> tuple[ConditionResult, np.ndarray]:
    """SC4 of :func:`check_sufficient_condition`, and the ratio's values for T = 1..horizon."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.cumsum(a * np.sqrt(np.clip(1.0 - th, 0.0, None))) / (t * a)
        decay = -_decade_exponent(ratio, horizon) if ratio[horizon // 10 - 1] > 0 else 0.0
    sc4 = ConditionResult(
        "SC4",
        bool(np.isfinite(decay) and decay > decay_tol),
        f"sum alpha_t sqrt(1-theta_t) / (T alpha_T) = {ratio[-1]:.4g} at T = {horizon}, "
        f"changing like T^{-decay:+.3g} over the last decade (needs T^-{decay_tol:g} or faster)",
    )
    return sc4, ratio


def polynomial_corollary(s: float, r: float) -> tuple[bool, float]:
    """The §5.3 corollary for α_t = α/t^s, θ_t = 1 - θ/t^r: ``(admissible, rate exponent)``.

    Admissible iff ``0 < r <= 2 s < 2``; the bound then decays like ``T**-min(r/2, 1 - s)``
    (times log T when ``s + r/2 == 1``). The corollary is derived in the spec, not quoted from
    the paper [R?]. Returns ``(False, 0.0)`` outside the region.
    """
    if not (0 < r <= 2 * s < 2):
        return False, 0.0
    return True, min(r / 2, 1 - s)
