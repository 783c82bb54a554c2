"""D² (spec decentralized.md §3.2): average dynamics, exact convergence, the lambda_n check."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from _helpers import run_quadratics
from peergrad.algorithms import D2, DPSGD
from peergrad.comm import SimulatedCommunicator
from peergrad.topology import make_topology, ring

TORUS_4X4 = "torus"  # make_topology("torus", 16) is the 4x4 torus, lambda_n = -0.6


def mean_steps(alg, topology, n: int = 8, steps: int = 30, noise: float = 1.0):
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    x, _, _ = run_quadratics(
        alg,
        topology,
        n=n,
        steps=steps,
        noise=noise,
        callback=lambda k, xb, g, s: seen.append((xb, g)),
    )
    means = [xb.mean(0) for xb, _ in seen] + [x.mean(0)]
    return means, [g for _, g in seen]


@pytest.mark.parametrize("topology", ["ring", "ring-lazy"])
def test_average_dynamics_are_exact(topology: str) -> None:
    lr = 0.05
    topo = ring(8).lazy() if topology == "ring-lazy" else ring(8)
    means, grads = mean_steps(D2(lr=lr), topo)
    for k, g in enumerate(grads):
        torch.testing.assert_close(means[k + 1], means[k] - lr * g.mean(0), rtol=0, atol=1e-12)


def test_with_momentum_the_average_follows_heavy_ball_sgd() -> None:
    lr, mu = 0.05, 0.9
    means, grads = mean_steps(D2(lr=lr, momentum=mu, nesterov=True), ring(8))
    buf = torch.zeros_like(means[0])
    for k, g in enumerate(grads):
        buf = mu * buf + g.mean(0)
        d = g.mean(0) + mu * buf
        torch.testing.assert_close(means[k + 1], means[k] - lr * d, rtol=0, atol=1e-11)


@pytest.mark.parametrize("lr", [0.1, 0.03, 0.01])
def test_exact_convergence_on_heterogeneous_quadratics(lr: float) -> None:
    # Spec §3.2 reference (rounding-level): lazy ring 5.4e-12 / 2.1e-11 / 5.3e-11,
    # plain ring 4.6e-12 / 1.0e-11 / 2.8e-11; only the class threshold is tested.
    for topo in (ring(8).lazy(), ring(8)):
        x, problem, _ = run_quadratics(D2(lr=lr), topo, steps=4000)
        assert problem.error(x) < 1e-9
    # D-PSGD keeps its heterogeneity bias at the same step size (spec §3.1)
    if lr == 0.1:
        x, problem, _ = run_quadratics(DPSGD(lr=lr), "ring", steps=4000)
        assert problem.error(x) == pytest.approx(1.592, rel=1e-3)


@pytest.mark.parametrize("n", [4, 6, 8, 16, 32, 64])
def test_rings_pass_the_check_including_the_exact_boundary(n: int) -> None:
    comm = SimulatedCommunicator(ring(n))
    ok, lam_n = D2().lambda_n_ok(comm)
    assert ok and lam_n == pytest.approx(-1 / 3, abs=1e-14)  # even n: exactly on the boundary
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = D2().init(torch.zeros(n, 3, dtype=torch.float64), comm)
    assert state.lazy == 0


def test_the_plain_boundary_check_would_be_inconsistent() -> None:
    """Why the tolerance: a strict lambda_n > -1/3 accepts some even rings and rejects others."""
    strict = {n: ring(n).at(0).spectral().lambda_n > -1 / 3 for n in (4, 6, 8, 16, 32, 64)}
    assert len(set(strict.values())) == 2


def test_failing_check_warns_and_runs_on_the_lazy_matrix() -> None:
    topo = make_topology(TORUS_4X4, 16)
    assert topo.at(0).spectral().lambda_n == pytest.approx(-0.6, abs=1e-12)
    with pytest.warns(RuntimeWarning, match=r"lambda_n\(W\) = -0\.6 .*threshold -1/3.*lazy"):
        x, problem, _ = run_quadratics(D2(lr=0.1), topo, n=16, steps=400)
    assert problem.error(x) < 1e-9
    # ... exactly the run on (I + W)/2, which passes the check and does not warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_lazy, _, _ = run_quadratics(D2(lr=0.1), topo.lazy(), n=16, steps=400)
    torch.testing.assert_close(x, x_lazy, rtol=0, atol=1e-12)


def test_force_keeps_w_and_d2_diverges_there() -> None:
    topo = make_topology(TORUS_4X4, 16)
    with pytest.warns(RuntimeWarning, match="force=True"):
        state = D2(force=True).init(
            torch.zeros(16, 2, dtype=torch.float64), SimulatedCommunicator(topo)
        )
    assert state.lazy == 0
    with pytest.warns(RuntimeWarning):
        x, problem, _ = run_quadratics(D2(lr=0.1, force=True), topo, n=16, steps=200)
    assert not np.isfinite(problem.error(x)) or problem.error(x) > 1e6  # spec §3.2: diverges


@pytest.mark.parametrize(
    ("topology", "message"),
    [
        ("exponential", "d2 is defined for a symmetric mixing matrix.*'exponential' is directed"),
        ("one-peer-exponential", "d2 is defined for a fixed symmetric.*time-varying"),
    ],
)
def test_directed_and_time_varying_topologies_are_rejected(topology: str, message: str) -> None:
    comm = SimulatedCommunicator(make_topology(topology, 8))
    with pytest.raises(ValueError, match=message):
        D2().check_topology(comm)
    with pytest.raises(ValueError, match=message):
        D2().init(torch.zeros(8, 2), comm)


def test_one_model_sized_message_per_step() -> None:
    _, _, comm = run_quadratics(D2(lr=0.1), "ring", steps=7)
    assert comm.rounds == 7
    assert torch.equal(comm.bytes_sent, torch.full((8,), 7 * 2 * 5 * 8.0, dtype=torch.float64))
