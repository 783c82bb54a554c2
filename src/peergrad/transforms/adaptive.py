"""Adam-family moment estimates, written once, in place, on ``[w, D]`` tensors.

Shared by the decentralized adaptive methods (Chen, Karimi, Zhao, Li; DADAM) and by generic Adam
(spec ``compression-momentum-adam.md`` §5). Every function takes its coefficients explicitly
(no schedules here: a caller with a schedule passes this step's value), updates its first
argument in place with fused element-wise kernels (one or two memory passes, no temporaries) and
returns it. Shapes: every tensor argument has the same shape, usually ``[w, D]``; nothing is
reduced over any axis, so the functions run unchanged on both engines.

Rules (``g`` the current gradient, ``t >= 1`` the 1-based iteration):

=========================  =============================================================
``ema_first_moment``       ``m <- b1 m + (1 - b1) g``                (Adam's first moment)
``ema_second_moment``      ``v <- b2 v + (1 - b2) g**2``             (Adam / RMSProp; generic
                           Adam's ``theta_t`` is ``b2``)
``amsgrad_max``            ``v_hat <- max(v_hat, v)``                (AMSGrad's running max)
``adagrad_mean``           ``v <- ((t - 1) / t) v + g**2 / t``       (= ``(1/t) sum_s g_s**2``)
``mixed_max``              ``v_hat <- b3 v_hat + (1 - b3) max(v_hat, v)``   (DADAM, §3.4)
``adaptive_denominator``   ``sqrt(max(u, eps))`` ("floor") or ``sqrt(max(u, 0)) + eps`` ("add")
``adaptive_step``          ``x <- x - lr * m / denom``
=========================  =============================================================

None of these raises on bad coefficients: the algorithms validate their hyper-parameters once,
at construction, not on every step.

Coefficients (``b1``, ``b2``, ``eps``, ``lr``) are Python floats, or, for
``ema_first_moment``, ``ema_second_moment``, ``adaptive_denominator`` and ``adaptive_step``,
tensors broadcastable to the moments' shape: one coefficient per row, e.g. when several
schedules run side by side (generic Adam's counterexample sweeps). The float path is the fast,
torch-identical one; the tensor path rounds ``(1 - b2) g**2`` and ``lr m / denom`` in a
different order.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS_MODES = ("floor", "add")

#: A per-step coefficient: a float, or a tensor broadcastable to the moments (one per row).
Coefficient = float | Tensor


def ema_first_moment(m: Tensor, g: Tensor, b1: Coefficient) -> Tensor:
    """``m <- b1 * m + (1 - b1) * g`` in place (one pass); returns ``m``.

    Computed as ``m.lerp_(g, 1 - b1)``, the form ``torch.optim.Adam`` uses: equal to the direct
    formula up to rounding, and exactly ``m = g`` when ``b1 == 0``.
    """
    return m.lerp_(g, 1.0 - b1)


def ema_second_moment(v: Tensor, g: Tensor, b2: Coefficient) -> Tensor:
    """``v <- b2 * v + (1 - b2) * g * g`` in place (Adam / RMSProp); returns ``v``.

    ``b2`` may vary per step (generic Adam's ``theta_t``); ``b2 = 1 - 1/t`` gives the AdaGrad
    running mean up to rounding (see :func:`adagrad_mean` for the exact ``(t - 1)/t`` form).
    A float ``b2`` follows ``torch.optim.RMSprop``'s operations exactly; a tensor ``b2`` (one
    per row) computes ``(1 - b2) * g`` first.
    """
    if isinstance(b2, Tensor):
        return v.mul_(b2).addcmul_(g * (1.0 - b2), g)
    return v.mul_(b2).addcmul_(g, g, value=1.0 - b2)


def amsgrad_max(v_hat: Tensor, v: Tensor) -> Tensor:
    """``v_hat <- max(v_hat, v)`` coordinate-wise, in place (AMSGrad); returns ``v_hat``."""
    return torch.maximum(v_hat, v, out=v_hat)


def adagrad_mean(v: Tensor, g: Tensor, t: int) -> Tensor:
    """Running mean of squared gradients: ``v <- ((t - 1) / t) * v + g * g / t`` in place.

    With ``t`` the 1-based iteration this gives ``v_t = (1/t) * sum_{s <= t} g_s**2`` (the
    initial ``v_0`` is wiped out at ``t = 1``). This is the ACML version of Chen et al.'s
    decentralized AdaGrad (spec ``decentralized.md`` §4.4, tagged [R?]); it avoids the
    ``(k - 1)/(k + 1)`` weight of a third-party re-implementation, which is not a mean.

    Raises:
        ValueError: ``t < 1``.
    """
    if t < 1:
        raise ValueError(f"adagrad_mean needs the 1-based iteration t >= 1, got {t}")
    return v.mul_((t - 1) / t).addcmul_(g, g, value=1.0 / t)


def mixed_max(v_hat: Tensor, v: Tensor, b3: float, scratch: Tensor | None = None) -> Tensor:
    """DADAM's ``v_hat <- b3 * v_hat + (1 - b3) * max(v_hat, v)`` in place; returns ``v_hat``.

    ``b3 == 0`` is AMSGrad's running max (:func:`amsgrad_max`, exact). Otherwise the max goes to
    ``scratch`` (shape of ``v``; allocated when ``None``) and is blended in with one ``lerp_``.
    """
    if b3 == 0:
        return amsgrad_max(v_hat, v)
    top = torch.maximum(v_hat, v, out=scratch) if scratch is not None else torch.maximum(v_hat, v)
    return v_hat.lerp_(top, 1.0 - b3)


def adaptive_denominator(
    u: Tensor, eps: Coefficient, eps_mode: str = "floor", out: Tensor | None = None
) -> Tensor:
    """The per-coordinate denominator of an adaptive step.

    - ``"floor"`` (Chen et al.'s form): ``sqrt(max(u, eps))``; ``eps`` floors the second moment,
      so ``eps = 1e-8`` means a denominator of at least ``1e-4``;
    - ``"add"`` (Adam's form): ``sqrt(max(u, 0)) + eps``; the clamp at 0 keeps a tracked second
      moment that rounding or tracking drove negative from producing NaN.

    Writes into ``out`` (may be ``u`` itself, for an in-place update) or a new tensor; returns it.

    Raises:
        ValueError: an unknown ``eps_mode``.
    """
    if eps_mode == "floor":
        return torch.clamp(u, min=eps, out=out).sqrt_()
    if eps_mode == "add":
        return torch.clamp(u, min=0.0, out=out).sqrt_().add_(eps)
    raise ValueError(f"eps_mode must be one of {', '.join(EPS_MODES)}; got {eps_mode!r}")


def adaptive_step(
    x: Tensor, m: Tensor, denom: Tensor, lr: Coefficient, base: Tensor | None = None
) -> Tensor:
    """``x <- base - lr * m / denom`` (``base`` defaults to ``x``) with one fused ``addcdiv``.

    ``base`` is, e.g., the gossiped model ``W x`` of a combine-then-adapt method. A tensor ``lr``
    (one per row) scales ``m`` first. Returns ``x``.
    """
    if isinstance(lr, Tensor):
        return torch.addcdiv(x if base is None else base, m * lr, denom, value=-1.0, out=x)
    if base is None:
        return x.addcdiv_(m, denom, value=-lr)
    return torch.addcdiv(base, m, denom, value=-lr, out=x)
