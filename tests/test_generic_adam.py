"""Generic Adam (spec compression-momentum-adam.md §5.8): presets against torch.optim, the
weighted-AdaGrad identity, the Reddi counterexample, the sufficient-condition checker, and
distributed Adam equal to mini-batch Adam. Float64 throughout."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from peergrad.algorithms import make_algorithm
from peergrad.algorithms.distributed_adam import DistributedAdam, DistributedAdamState
from peergrad.cli import main
from peergrad.comm import SimulatedCommunicator
from peergrad.problems.reddi import (
    OnlineProblem,
    StochasticProblem,
    reddi_online,
    run_counterexample,
    standard_runs,
    synthetic_stochastic,
)
from peergrad.topology import make_topology
from peergrad.transforms import adaptive_denominator, ema_first_moment, ema_second_moment
from peergrad.transforms.generic_adam import (
    PRESETS,
    GenericAdam,
    Schedule,
    adaema,
    adagrad,
    adam,
    adamnc,
    check_sufficient_condition,
    generic_adam_step,
    parse_schedule,
    polynomial_corollary,
    rmsprop,
)

DTYPE = torch.float64
STEPS = 200


def nonzero_grads(steps: int = STEPS, d: int = 11, seed: int = 0) -> list[torch.Tensor]:
    """Random gradients with every entry at least 0.05 away from zero, varying scales."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(steps):
        g = torch.randn(d, generator=gen, dtype=DTYPE)
        out.append((g + 0.05 * torch.sign(g)) * (1 + k % 7))
    return out


def torch_trajectory(
    make_opt: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    x0: torch.Tensor,
    grads: list[torch.Tensor],
) -> list[torch.Tensor]:
    p = torch.nn.Parameter(x0.clone())
    opt = make_opt([p])
    traj = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        traj.append(p.detach().clone())
    return traj


def generic_trajectory(
    ga: GenericAdam, x0: torch.Tensor, grads: list[torch.Tensor]
) -> list[torch.Tensor]:
    x = x0.clone().reshape(1, -1)
    m, v = ga.init(x)
    traj = []
    for t, g in enumerate(grads, start=1):
        ga.update(x, g.reshape(1, -1), m, v, t)
        traj.append(x[0].clone())
    return traj


def assert_relatively_equal(a: list[torch.Tensor], b: list[torch.Tensor], rtol: float) -> None:
    for k, (u, w) in enumerate(zip(a, b, strict=True)):
        rel = float((u - w).abs().max() / w.abs().max())
        assert rel <= rtol, f"step {k + 1}: relative difference {rel:.3g}"


# ---------------------------------------------------------------- §5.8 item 1: presets = torch
X0 = torch.linspace(-1.0, 2.0, 11, dtype=DTYPE)


@pytest.mark.parametrize("eps", [0.0, 1e-8, 1e-3])
def test_rmsprop_preset_equals_torch_rmsprop(eps: float) -> None:
    grads = nonzero_grads()
    want = torch_trajectory(
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=eps, momentum=0, centered=False),
        X0,
        grads,
    )
    assert_relatively_equal(generic_trajectory(rmsprop(0.01, 0.99, eps), X0, grads), want, 1e-10)


@pytest.mark.parametrize("eps", [0.0, 1e-10, 1e-3])
def test_adagrad_preset_equals_torch_adagrad(eps: float) -> None:
    """theta_t = 1 - 1/t, alpha_t = lr/sqrt(t); torch's eps corresponds to eps_t = eps/sqrt(t)."""
    grads = nonzero_grads()
    want = torch_trajectory(
        lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0, initial_accumulator_value=0, eps=eps),
        X0,
        grads,
    )
    assert_relatively_equal(generic_trajectory(adagrad(0.1, eps), X0, grads), want, 1e-10)


@pytest.mark.parametrize(
    ("b1", "b2", "eps"),
    [(0.9, 0.999, 0.0), (0.9, 0.999, 1e-8), (0.5, 0.9, 1e-3), (0.0, 0.99, 1e-8)],
)
def test_adam_preset_equals_torch_adam(b1: float, b2: float, eps: float) -> None:
    """alpha_t = lr sqrt(1 - b2^t)/(1 - b1^t); torch adds eps after the correction, which is
    eps_t = eps sqrt(1 - b2^t) before it."""
    grads = nonzero_grads()
    want = torch_trajectory(
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(b1, b2), eps=eps), X0, grads
    )
    assert_relatively_equal(generic_trajectory(adam(0.01, b1, b2, eps), X0, grads), want, 1e-10)


def test_adam_without_the_eps_rescaling_differs_from_torch() -> None:
    """Where they do not coincide: a constant eps in the generic denominator is not torch's."""
    grads = [g * 1e-6 for g in nonzero_grads(50)]  # small gradients: eps matters
    want = torch_trajectory(lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-8), X0, grads)
    plain = dataclasses_replace_eps(adam(0.01, 0.9, 0.999, 1e-8), 1e-8)
    got = generic_trajectory(plain, X0, grads)
    assert float((got[-1] - want[-1]).abs().max() / want[-1].abs().max()) > 1e-6


def dataclasses_replace_eps(ga: GenericAdam, eps: float) -> GenericAdam:
    import dataclasses

    return dataclasses.replace(ga, eps=eps)


def test_adaema_and_adamnc_follow_their_closed_forms() -> None:
    """AdaEMA: m EMA of g, v = mean of g**2, step (lr/sqrt(t)) m/(sqrt(v) + eps); AdamNC the
    same with beta_t = b1 lam^(t-1)."""
    grads = nonzero_grads(60)
    for ga, beta_of in [
        (adaema(0.1, 0.9, 1e-8), lambda t: 0.9),
        (adamnc(0.1, 0.9, 0.95, 1e-8), lambda t: 0.9 * 0.95 ** (t - 1)),
    ]:
        got = generic_trajectory(ga, X0, grads)
        x, m, sq = X0.clone(), torch.zeros_like(X0), torch.zeros_like(X0)
        for t, g in enumerate(grads, start=1):
            b = beta_of(t)
            m = b * m + (1 - b) * g
            sq = sq + g * g
            x = x - 0.1 / math.sqrt(t) * m / (torch.sqrt(sq / t) + 1e-8)
            torch.testing.assert_close(got[t - 1], x, rtol=1e-12, atol=1e-14)


def test_eps_init_mode_starts_v_at_eps_and_divides_by_sqrt_v() -> None:
    ga = GenericAdam(alpha=0.1, beta=0.5, theta=0.9, eps=1e-2, eps_mode="init")
    x = torch.tensor([[1.0, -2.0]], dtype=DTYPE)
    m, v = ga.init(x)
    assert torch.equal(v, torch.full_like(x, 1e-2))
    g = torch.tensor([[0.3, -0.4]], dtype=DTYPE)
    ga.update(x, g, m, v, 1)
    v1 = 0.9 * 1e-2 + 0.1 * g**2
    torch.testing.assert_close(
        x, torch.tensor([[1.0, -2.0]], dtype=DTYPE) - 0.1 * 0.5 * g / v1.sqrt(), rtol=1e-14, atol=0
    )


def test_tensor_coefficients_equal_row_by_row_float_updates() -> None:
    """Per-row schedules (the counterexample's batched runs) = separate float updates."""
    gen = torch.Generator().manual_seed(5)
    coefs = [(0.1, 0.9, 0.99, 1e-8), (0.5, 0.0, 0.5, 1e-3), (0.01, 0.3, 0.0, 0.0)]
    x = torch.randn(3, 4, generator=gen, dtype=DTYPE)
    xs = [x[i : i + 1].clone() for i in range(3)]
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    ms, vs = (
        [torch.zeros(1, 4, dtype=DTYPE) for _ in range(3)],
        [torch.zeros(1, 4, dtype=DTYPE) for _ in range(3)],
    )
    cols = [torch.tensor([[c[k]] for c in coefs], dtype=DTYPE) for k in range(4)]
    for _ in range(20):
        g = torch.randn(3, 4, generator=gen, dtype=DTYPE)
        generic_adam_step(x, g, m, v, *cols)
        for i, c in enumerate(coefs):
            generic_adam_step(xs[i], g[i : i + 1], ms[i], vs[i], *c)
    torch.testing.assert_close(x, torch.cat(xs), rtol=1e-13, atol=1e-15)


def test_shared_moment_functions_accept_tensor_coefficients() -> None:
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(2, 3, generator=gen, dtype=DTYPE)
    b = torch.tensor([[0.3], [0.8]], dtype=DTYPE)
    m, v = torch.ones(2, 3, dtype=DTYPE), torch.ones(2, 3, dtype=DTYPE)
    torch.testing.assert_close(ema_first_moment(m.clone(), g, b), b + (1 - b) * g)
    torch.testing.assert_close(ema_second_moment(v.clone(), g, b), b + (1 - b) * g * g)
    torch.testing.assert_close(adaptive_denominator(v * 4, b, "add"), 2 + b.expand(2, 3))


# ---------------------------------------------------------------- §5.8 item 2: weighted AdaGrad
def test_weighted_adagrad_identity() -> None:
    """theta_t = 1 - w_t/W_t gives v_t = sum_i w_i g_i**2 / W_t (random positive weights)."""
    rng = np.random.default_rng(0)
    w = rng.uniform(0.1, 3.0, size=80)
    W = np.cumsum(w)
    ga = GenericAdam(alpha=0.01, beta=0.0, theta=lambda t: 1 - w[t - 1] / W[t - 1], eps=0.0)
    grads = nonzero_grads(80, d=5)
    x = torch.zeros(1, 5, dtype=DTYPE)
    m, v = ga.init(x)
    acc = torch.zeros(5, dtype=DTYPE)
    for t, g in enumerate(grads, start=1):
        ga.update(x, g.reshape(1, -1), m, v, t)
        acc += w[t - 1] * g * g
        torch.testing.assert_close(v[0], acc / W[t - 1], rtol=1e-12, atol=0)


def test_polynomial_weights_match_the_r1_family_asymptotically() -> None:
    """w_i = i^q gives theta_t = 1 - t^q / sum_{i<=t} i^q ~ 1 - (q + 1)/t (spec §5.2)."""
    q, t = 2.0, 10**5
    exact = 1 - t**q / np.sum(np.arange(1, t + 1, dtype=np.float64) ** q)
    approx = Schedule("one-minus-poly", (1.0, q + 1))(t)
    assert abs((1 - exact) / (1 - approx) - 1) < 1e-4


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize(
    ("text", "t", "value"),
    [
        ("0.5*inv-sqrt", 4, 0.25),
        ("poly:0.25", 16, 0.5),
        ("const:0.9", 7, 0.9),
        ("const", 3, 1.0),
        ("adagrad", 4, 0.75),
        ("one-minus-poly:1,0.5", 5, 0.9),
        ("zou:1", 10, 0.9),
        ("zou:0", 10, 0.999),
        ("zou:0.5", 4, 1 - 0.5005 / 2),
        ("0.9*geometric:0.5", 3, 0.225),
        ("adam-bias:0.9,0.999", 1, math.sqrt(0.001) / 0.1),
        ("adam-bias:0.9,0.999,0.5", 4, math.sqrt(1 - 0.999**4) / (1 - 0.9**4) / 2),
        ("sqrt-bias:0.99", 2, math.sqrt(1 - 0.99**2)),
    ],
)
def test_schedule_text_values_and_round_trip(text: str, t: int, value: float) -> None:
    s = parse_schedule(text)
    assert s(t) == pytest.approx(value, rel=1e-14)
    assert parse_schedule(str(s)) == s


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus", "unknown schedule family"),
        ("poly", "takes parameters"),
        ("const:1,2", "takes parameters"),
        ("x*inv-sqrt", "is not a number"),
        ("poly:a", "parameters must be numbers"),
        ("poly:inf", "finite"),
    ],
)
def test_bad_schedule_text_raises(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(text)


def test_generic_adam_rejects_bad_eps_mode() -> None:
    with pytest.raises(ValueError, match="eps_mode must be one of"):
        GenericAdam(alpha=0.1, eps_mode="floor")


# ---------------------------------------------------------------- §5.8 item 5: the SC checker
# reference SC4 ratios of spec §5.3 at T = 1e3 / 1e4 / 1e5 / 1e6
SC_REFERENCE = {
    "adam": (("inv-sqrt", "const:0.999"), (0.0618, 0.0628, 0.0631, 0.0632)),
    "adaema": (("inv-sqrt", "adagrad"), (0.2367, 0.0979, 0.0382, 0.0144)),
    "r=0.5": (("inv-sqrt", "one-minus-poly:0.5,0.5"), (0.426, 0.259, 0.151, 0.087)),
}


@pytest.mark.parametrize("name", list(SC_REFERENCE))
def test_checker_sc4_ratios_match_the_spec_table(name: str) -> None:
    (alpha, theta), ratios = SC_REFERENCE[name]
    report = check_sufficient_condition(alpha, theta, 0.9, 10**6)
    for k, want in zip(range(3, 7), ratios, strict=True):
        assert report.ratio_at(10**k) == pytest.approx(want, abs=6e-4), k


@pytest.mark.parametrize(
    ("alpha", "theta", "failed"),
    [
        ("inv-sqrt", "const:0.999", ("SC4",)),  # Adam / RMSProp: no decay of the ratio
        ("inv-sqrt", "adagrad", ()),  # AdaEMA
        ("const", "adagrad", ("SC3",)),  # constant alpha, theta_t = 1 - 1/t
        ("inv-sqrt", "one-minus-poly:1.5,0.5", ("SC3",)),  # r > 2s
        ("inv-sqrt", "one-minus-poly:0.5,0.5", ()),
        ("adam-bias:0.9,0.999", "const:0.999", ("SC4",)),  # bias-corrected Adam: C0 bounded
        ("inv-sqrt", "zou:0", ("SC4",)),
        ("inv-sqrt", "zou:0.25", ()),
        ("inv-sqrt", "zou:0.5", ()),
        ("inv-sqrt", "zou:0.75", ()),
        ("inv-sqrt", "zou:1", ()),
    ],
)
def test_checker_verdicts(alpha: str, theta: str, failed: tuple[str, ...]) -> None:
    report = check_sufficient_condition(alpha, theta, 0.9, 10**6)
    assert report.failed == failed, report.summary()
    assert report.passed == (not failed)


def test_checker_constant_alpha_reference() -> None:
    report = check_sufficient_condition("const", "adagrad", 0.9, 10**6)
    assert report.ratio_at(10**6) == pytest.approx(0.0020, abs=1e-4)  # SC4 ratio -> 0 ...
    assert report.c0 == pytest.approx(1000.0, rel=1e-9)  # ... but chi_t = sqrt(t) grows


# The §5.3 corollary's rate exponents for the admissible (s, r) below, worked out by hand from
# the spec (T^-min(r/2, 1 - s) inside 0 < r <= 2s < 2): literal constants, not the code's formula.
COROLLARY_RATE = {
    (0.25, 0.25): 0.125,
    (0.25, 0.5): 0.25,
    (0.5, 0.25): 0.125,
    (0.5, 0.5): 0.25,
    (0.5, 1.0): 0.5,
    (0.75, 0.25): 0.125,
    (0.75, 0.5): 0.25,
    (0.75, 1.0): 0.25,
    (0.75, 1.5): 0.25,
}


def measured_rate(s: float, r: float, theta: float = 0.5) -> float:
    """The decay exponent of the §5.3 bound B(T) = (1 + sum_{t<=T} alpha_t sqrt(1 - theta_t)) /
    (T alpha_T) for alpha_t = t^-s, theta_t = 1 - theta t^-r, measured over T = 10^5 .. 10^6:
    -log10(B(10^6) / B(10^5)), after dividing B by log T when s + r/2 = 1 (the corollary's log
    factor). Independent of :func:`polynomial_corollary`; within 0.025 of the asymptotic exponent
    for the cases above (the slowest, s = 0.75, r = 0.25, is 0.102 vs 0.125)."""
    t = np.arange(1, 10**6 + 1, dtype=np.float64)
    alpha = t**-s
    bound = (1.0 + np.cumsum(alpha * np.sqrt(theta * t**-r))) / (t * alpha)
    if s + r / 2 == 1:
        bound = bound / np.log(t + 1)
    return float(-np.log10(bound[10**6 - 1] / bound[10**5 - 1]))


@pytest.mark.parametrize("s", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("r", [0.0, 0.25, 0.5, 1.0, 1.5, 2.0])
def test_checker_agrees_with_the_polynomial_corollary(s: float, r: float) -> None:
    report = check_sufficient_condition(
        Schedule("poly", (s,)), Schedule("one-minus-poly", (r, 0.5)), 0.5, 10**5
    )
    admissible, rate = polynomial_corollary(s, r)
    assert report.passed == admissible, report.summary()
    assert admissible == ((s, r) in COROLLARY_RATE)
    if r == 0:
        assert report.failed == ("SC4",)
    elif r > 2 * s:
        assert report.failed == ("SC3",)
    if not admissible:
        assert rate == 0.0
        return
    assert rate == COROLLARY_RATE[(s, r)]
    assert abs(measured_rate(s, r) - rate) < 0.03


def test_checker_sc1_and_sc2_failures() -> None:
    assert check_sufficient_condition("inv-sqrt", "adagrad", 1.0, 1000).failed == ("SC1", "SC2")
    negative = check_sufficient_condition("inv-sqrt", "adagrad", lambda t: 0.5 - (t == 5), 1000)
    assert negative.failed == ("SC1",)
    decreasing = check_sufficient_condition("inv-sqrt", lambda t: 0.9 + 0.05 / t, 0.5, 1000)
    assert "SC2" in decreasing.failed and "decreases" in decreasing.conditions[1].detail
    incompatible = check_sufficient_condition("inv-sqrt", "const:0.5", 0.9, 1000)
    assert incompatible.failed == ("SC2", "SC4")
    assert "beta^2 = 0.81 >= theta_T" in incompatible.conditions[1].detail


def test_checker_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="horizon"):
        check_sufficient_condition("inv-sqrt", "adagrad", 0.9, 10)
    with pytest.raises(ValueError, match="alpha_t must be finite and > 0"):
        check_sufficient_condition(lambda t: 1.0 - t / 50, "adagrad", 0.9, 100)


# ---------------------------------------------------------------- §5.8 item 3: counterexample A
def test_counterexample_online_adam_ends_at_the_worst_point() -> None:
    problem, runs = standard_runs("online")
    res = run_counterexample(problem, runs, 1000, x1=0.5)
    adam_name, generic0, generic9 = res.names
    assert res.final(adam_name)[0] >= 0.95  # spec: 0.9834
    assert res.final(adam_name)[0] == pytest.approx(0.9834, abs=1e-4)
    assert res.average_regret[0, 0] >= 0.6  # ~ 2(C - 2)/3
    assert res.final(generic0)[0] <= -0.99 and res.final(generic9)[0] <= -0.99
    # spec §5.6 [E]: average regret at T = 1000 from x1 = 0.5 (beta = 0 / 0.9)
    assert res.average_regret[1, 0] == pytest.approx(0.0430, abs=1e-4)
    assert res.average_regret[2, 0] == pytest.approx(0.0258, abs=1e-4)


@pytest.mark.parametrize("x1", [-0.5, 0.0, 1.0])
def test_counterexample_online_other_starts(x1: float) -> None:
    problem, runs = standard_runs("online")
    res = run_counterexample(problem, runs, 1000, x1=x1)
    assert res.final_x[0, 0] == pytest.approx(0.9834, abs=1e-3)
    assert np.all(res.final_x[1:, 0] <= -0.999)


def test_counterexample_online_generic_regret_vanishes() -> None:
    problem, runs = standard_runs("online")
    res = run_counterexample(problem, runs, 10_000, x1=0.5)
    assert res.average_regret[0, 0] >= 0.6
    assert res.average_regret[1, 0] < 0.05  # spec: 0.0103 (beta = 0)
    assert res.average_regret[1, 0] == pytest.approx(0.0103, abs=2e-4)
    # the regret is sum g_t (x_t + 1) with x_t where g_t is evaluated: recompute it directly
    g = np.where(np.arange(1, 10_001) % 3 == 1, 3.0, -1.0)
    ga = runs[res.names[1]]
    x, m, v, total = 0.5, 0.0, 0.0, 0.0
    for t, gt in enumerate(g, start=1):
        total += gt * (x + 1)
        a, b, th, e = ga.coefficients(t)
        v = th * v + (1 - th) * gt * gt
        m = b * m + (1 - b) * gt
        x = min(1.0, max(-1.0, x - a * m / (math.sqrt(v) + e)))
    assert res.final_x[1, 0] == pytest.approx(x, abs=1e-12)
    assert res.average_regret[1, 0] == pytest.approx(total / 10_000, rel=1e-10)


def test_problems_and_streams() -> None:
    p = reddi_online(3.0)
    g = np.concatenate(list(p.stream(10, chunk=4)))[:, 0]
    assert g.tolist() == [3, -1, -1, 3, -1, -1, 3, -1, -1, 3]
    assert p.mean_gradient == pytest.approx(1 / 3)
    s = synthetic_stochastic(seeds=16, seed=0)
    chunked = np.concatenate(list(s.stream(1000, chunk=300)))
    u = np.random.default_rng(0).random((1000, 16))
    assert np.array_equal(chunked, np.where(u < 0.01, 1010.0, -10.0))
    assert s.mean_gradient == pytest.approx(0.2)
    with pytest.raises(ValueError, match="C must be > 2"):
        reddi_online(2.0)
    with pytest.raises(ValueError, match="mean gradient"):
        OnlineProblem(1.0, -1.0, 3)
    with pytest.raises(ValueError, match="p must be in"):
        StochasticProblem(p=0.0)
    with pytest.raises(ValueError, match="variant"):
        standard_runs("bogus")


def test_counterexample_rows_are_independent_of_the_batch() -> None:
    """Running one configuration alone gives the same iterates as inside the batch."""
    problem, runs = standard_runs("stochastic")
    problem = synthetic_stochastic(seeds=3)
    both = run_counterexample(problem, runs, 3000)
    name = "Generic Adam (r=0.5)"
    alone = run_counterexample(problem, {name: runs[name]}, 3000)
    np.testing.assert_allclose(alone.final_x[0], both.final(name), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- §5.8 item 4: counterexample B
@pytest.mark.slow
def test_counterexample_stochastic_cheap_variant() -> None:
    problem, runs = standard_runs("stochastic", (0.0, 1.0))
    res = run_counterexample(problem, runs, 10**6)
    assert res.final("Generic Adam (r=0)").mean() > 0.5  # spec: +0.831
    assert res.final("Generic Adam (r=1)").mean() < -0.3  # spec: -0.703


@pytest.mark.slow
def test_counterexample_stochastic_full() -> None:
    problem, runs = standard_runs("stochastic", (0.0, 0.75, 1.0))
    res = run_counterexample(problem, runs, 5 * 10**6)
    assert res.final("Generic Adam (r=0)").mean() > 0.8  # spec: 0.965
    assert res.final("Adam (bias-corrected, beta2=0.999)").mean() > 0.8  # spec: 0.965
    assert res.final("Generic Adam (r=0.75)").mean() < -0.8  # spec: -0.936
    assert res.final("Generic Adam (r=1)").mean() < -0.8  # spec: -0.941


# ---------------------------------------------------------------- §5.8 item 6: distributed Adam
def least_squares_grad(x: torch.Tensor, A: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean gradient of 1/2 (a_j . x - y_j)**2 over the rows of A: [w, D] with A [w, b, D]."""
    r = torch.einsum("wbd,wd->wb", A, x) - y
    return torch.einsum("wbd,wb->wd", A, r) / A.shape[1]


@pytest.mark.parametrize("preset", ["generic", "adam", "rmsprop", "adagrad", "adamnc"])
def test_distributed_adam_equals_minibatch_adam_on_the_combined_batch(preset: str) -> None:
    n, b, d, steps = 4, 5, 6, 60
    gen = torch.Generator().manual_seed(7)
    x_true = torch.randn(d, generator=gen, dtype=DTYPE)
    alg = make_algorithm("distributed-adam", preset=preset, lr=0.05, weight_decay=1e-3)

    comm_n = SimulatedCommunicator(make_topology("ring", n))
    comm_1 = SimulatedCommunicator(make_topology("ring", 1))
    x_n = torch.zeros(n, d, dtype=DTYPE)
    x_1 = torch.zeros(1, d, dtype=DTYPE)
    s_n, s_1 = alg.init(x_n, comm_n), alg.init(x_1, comm_1)
    for _ in range(steps):
        A = torch.randn(n, b, d, generator=gen, dtype=DTYPE)
        y = A @ x_true + 0.1 * torch.randn(n, b, generator=gen, dtype=DTYPE)
        s_n = alg.step(x_n, least_squares_grad(x_n, A, y), s_n, comm_n)
        s_1 = alg.step(
            x_1, least_squares_grad(x_1, A.reshape(1, n * b, d), y.reshape(1, -1)), s_1, comm_1
        )
    torch.testing.assert_close(x_n, x_1.expand(n, d), rtol=0, atol=1e-12)
    assert float((x_1 - x_true).norm()) < float(x_true.norm())  # it moved toward the solution
    assert isinstance(s_n, DistributedAdamState) and s_n.step == steps


def test_distributed_adam_transform_and_overrides() -> None:
    alg = DistributedAdam(lr=0.1, alpha="poly:0.25", theta="zou:0.5", beta="0.9*geometric:0.99")
    ga = alg.transform
    assert ga.alpha(16) == pytest.approx(0.05)
    assert ga.theta(4) == pytest.approx(1 - 0.5005 / 2)
    assert ga.beta(3) == pytest.approx(0.9 * 0.99**2)
    default = DistributedAdam(lr=0.01, momentum=0.8)
    assert default.transform.alpha(4) == pytest.approx(0.005)  # generic: lr / sqrt(t)
    assert default.transform.theta(5) == pytest.approx(0.8)  # zou:1 = 1 - 1/t
    assert default.transform.beta(9) == 0.8
    assert set(PRESETS) == {"generic", "adam", "rmsprop", "adagrad", "adaema", "adamnc"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preset": "sgd"}, "preset must be one of"),
        ({"theta": "bogus"}, "unknown schedule family"),
        ({"alpha": "poly"}, "takes parameters"),
        ({"b2": 1.0}, "b2 must be in"),
        ({"lr": 0.0}, "lr must be"),
        ({"eps_mode": "floor"}, "eps_mode must be one of"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_distributed_adam_rejects_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_algorithm("distributed-adam", **options)


def test_distributed_adam_state_is_flat_tensors_and_ints() -> None:
    import dataclasses

    comm = SimulatedCommunicator(make_topology("ring", 2))
    alg = make_algorithm("distributed-adam")
    x = torch.zeros(2, 3, dtype=DTYPE)
    state = alg.step(x, torch.ones(2, 3, dtype=DTYPE), alg.init(x, comm), comm)
    for f in dataclasses.fields(state):
        assert isinstance(getattr(state, f.name), torch.Tensor | int), f.name


# ---------------------------------------------------------------- CLI
def test_cli_check_adam(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-adam", "--theta", "const:0.999", "--horizon", "10000"]) == 1
    out = capsys.readouterr().out
    assert "SC4  FAIL" in out and "fails (SC4)" in out
    assert main(["check-adam", "--alpha", "inv-sqrt", "--theta", "adagrad", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["holds"] and report["failed"] == []
    assert report["sc4_ratio"]["1000000"] == pytest.approx(0.0144, abs=1e-4)
    assert main(["check-adam", "--theta", "nope"]) == 2
    assert "unknown schedule family" in capsys.readouterr().err


def test_cli_counterexample_online(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["counterexample", "--variant", "online", "--steps", "1000", "--out", str(tmp_path)])
        == 0
    )
    assert (tmp_path / "counterexample_online.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "counterexample_online.json").read_text())
    finals = [r["final_x_mean"] for r in summary["runs"].values()]
    assert finals[0] == pytest.approx(0.9834, abs=1e-4) and max(finals[1:]) <= -0.99
    assert "optimum x* = -1" in capsys.readouterr().out
