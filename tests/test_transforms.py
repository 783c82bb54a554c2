"""Adam-family transforms (``peergrad.transforms.adaptive``) against direct formulas, float64."""

from __future__ import annotations

import pytest
import torch

from peergrad.transforms import (
    adagrad_mean,
    adaptive_denominator,
    adaptive_step,
    amsgrad_max,
    ema_first_moment,
    ema_second_moment,
    mixed_max,
)

DTYPE = torch.float64


def grads(steps: int = 30, shape: tuple[int, int] = (3, 7), seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=DTYPE) * (1 + k % 5) for k in range(steps)]


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("b1", [0.0, 0.5, 0.9])
def test_ema_first_moment_is_the_exponential_average(b1: float) -> None:
    gs = grads()
    m = torch.zeros_like(gs[0])
    ref = torch.zeros_like(gs[0])
    for g in gs:
        out = ema_first_moment(m, g, b1)
        ref = b1 * ref + (1 - b1) * g
        assert out is m
        close(m, ref)
    if b1 == 0:
        assert torch.equal(m, gs[-1])  # exactly g: lerp with weight 1


@pytest.mark.parametrize("b2", [0.0, 0.99, 0.999])
def test_ema_second_moment_is_the_exponential_average_of_squares(b2: float) -> None:
    gs = grads()
    v = torch.full_like(gs[0], 1e-6)
    ref = v.clone()
    for g in gs:
        assert ema_second_moment(v, g, b2) is v
        ref = b2 * ref + (1 - b2) * g * g
        close(v, ref)


def test_amsgrad_max_is_the_running_max_of_the_ema() -> None:
    gs = grads()
    v_raw, v_hat = torch.zeros_like(gs[0]), torch.full_like(gs[0], 1e-8)
    ema, hist = torch.zeros_like(gs[0]), [torch.full_like(gs[0], 1e-8)]
    for g in gs:
        assert amsgrad_max(v_hat, ema_second_moment(v_raw, g, 0.9)) is v_hat
        ema = 0.9 * ema + 0.1 * g * g
        hist.append(ema.clone())
        close(v_hat, torch.stack(hist).amax(dim=0))
    assert torch.equal(v_hat, torch.maximum(v_hat, v_raw))


def test_adagrad_mean_equals_the_mean_of_squared_gradients() -> None:
    gs = grads(50)
    v = torch.full_like(gs[0], 123.0)  # v_0 is wiped out at t = 1
    for t, g in enumerate(gs, start=1):
        assert adagrad_mean(v, g, t) is v
        close(v, torch.stack(gs[:t]).pow(2).mean(dim=0))
    with pytest.raises(ValueError, match="t >= 1"):
        adagrad_mean(v, gs[0], 0)


def test_adagrad_mean_is_not_the_buggy_k_minus_1_over_k_plus_1_average() -> None:
    g = torch.ones(1, 1, dtype=DTYPE)
    v = torch.zeros_like(g)
    for t in range(1, 11):
        adagrad_mean(v, g, t)
    assert float(v) == pytest.approx(1.0, rel=1e-15)  # mean of ten 1s; (k-1)/(k+1) gives < 1


@pytest.mark.parametrize("b3", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("scratch", [False, True])
def test_mixed_max_is_dadams_blend(b3: float, scratch: bool) -> None:
    gs = grads()
    v, v_hat = torch.zeros_like(gs[0]), torch.full_like(gs[0], 1e-8)
    ref_v, ref_hat = v.clone(), v_hat.clone()
    buf = torch.empty_like(v) if scratch else None
    for g in gs:
        ema_second_moment(v, g, 0.99)
        assert mixed_max(v_hat, v, b3, scratch=buf) is v_hat
        ref_v = 0.99 * ref_v + 0.01 * g * g
        ref_hat = b3 * ref_hat + (1 - b3) * torch.maximum(ref_hat, ref_v)
        close(v_hat, ref_hat)


def test_adaptive_denominator_floor_and_add() -> None:
    u = torch.tensor([[-1.0, 0.0, 1e-9, 1e-8, 4.0]], dtype=DTYPE)
    eps = 1e-8
    floor = adaptive_denominator(u, eps, "floor")
    close(floor, torch.tensor([[1e-4, 1e-4, 1e-4, 1e-4, 2.0]], dtype=DTYPE))
    add = adaptive_denominator(u, eps, "add")
    close(add, torch.tensor([[eps, eps, 1e-9**0.5 + eps, 1e-4 + eps, 2.0 + eps]], dtype=DTYPE))
    assert torch.isfinite(add).all() and torch.equal(u[0, 0], torch.tensor(-1.0, dtype=DTYPE))
    inplace = u.clone()
    assert adaptive_denominator(inplace, eps, "floor", out=inplace) is inplace
    assert torch.equal(inplace, floor)
    with pytest.raises(ValueError, match="eps_mode must be one of floor, add"):
        adaptive_denominator(u, eps, "sqrt")


def test_adaptive_step_with_and_without_base() -> None:
    gen = torch.Generator().manual_seed(1)
    x, m, base = (torch.randn(2, 4, generator=gen, dtype=DTYPE) for _ in range(3))
    den = torch.rand(2, 4, generator=gen, dtype=DTYPE) + 0.5
    want = x - 0.1 * m / den
    assert adaptive_step(x, m, den, 0.1) is x
    close(x, want)
    assert adaptive_step(x, m, den, 0.1, base=base) is x
    close(x, base - 0.1 * m / den)
