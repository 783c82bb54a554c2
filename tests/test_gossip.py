"""Accelerated gossip (spec decentralized.md §5.2, §5.8 item 1): unit tests and reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from peergrad.comm import SimulatedCommunicator
from peergrad.comm.gossip import (
    accelerated_gossip,
    ag_operator,
    ag_polynomial,
    ag_round,
    auto_rounds,
    eta_from_lambda,
    optimal_eta,
)
from peergrad.topology import make_topology, ring

DT = torch.float64


def rand(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=DT)


@pytest.mark.parametrize("topology", ["ring", "torus", "erdos-renyi", "star"])
def test_mean_is_preserved(topology: str) -> None:
    topo = make_topology(topology, 16)
    comm = SimulatedCommunicator(topo)
    x = rand(16, 7)
    eta = optimal_eta(topo)
    out = accelerated_gossip(comm, x, topo.at(0), 9, eta)
    torch.testing.assert_close(out.mean(0), x.mean(0), rtol=0, atol=1e-13)
    assert torch.equal(x, rand(16, 7))  # the input is not modified


def test_eta_zero_is_plain_gossip_w_to_the_r() -> None:
    W = make_topology("torus", 16).at(0)
    comm = SimulatedCommunicator(make_topology("torus", 16))
    x = rand(16, 5)
    expected = torch.linalg.matrix_power(W.torch_dense(dtype=DT), 6) @ x
    torch.testing.assert_close(accelerated_gossip(comm, x, W, 6, 0.0), expected, rtol=0, atol=1e-14)


def test_complete_graph_averages_in_one_round() -> None:
    topo = make_topology("complete", 8)
    eta = optimal_eta(topo)
    assert eta == 0.0
    x = rand(8, 4)
    out = accelerated_gossip(SimulatedCommunicator(topo), x, topo.at(0), 1, eta)
    torch.testing.assert_close(out, x.mean(0).expand_as(x), rtol=0, atol=1e-14)


# §5.2 table: |p_R(lambda_2)| of AG vs lambda_2^R of plain gossip on the 1/3-ring [V].
AG_TABLE = {
    8: [(0.1938, 0.4194), (0.02097, 0.1759), (1.595e-4, 0.03094), (5.38e-9, 9.57e-4)],
    16: [(0.5742, 0.8119), (0.2383, 0.6593), (0.02978, 0.4346), (2.958e-4, 0.1889)],
    32: [(0.8377, 0.9497), (0.6042, 0.9020), (0.2573, 0.8136), (0.0334, 0.6620)],
    64: [(0.9492, 0.9872), (0.8509, 0.9746), (0.6187, 0.9499), (0.2660, 0.9022)],
}
ETA = {8: 0.2550, 16: 0.5215, 32: 0.7248, 64: 0.8517}


@pytest.mark.parametrize("n", sorted(AG_TABLE))
def test_polynomial_table_and_eta_values_of_the_ring(n: int) -> None:
    topo = ring(n)
    eta = optimal_eta(topo)
    assert eta == pytest.approx(ETA[n], abs=1e-4)
    lam2 = topo.spectral().lambda_2
    # The slowest mode's eigenvector, run through the real implementation, shrinks by p_R.
    v = torch.cos(2 * math.pi * torch.arange(n, dtype=DT) / n)[:, None]
    comm = SimulatedCommunicator(topo)
    for R, (ag, plain) in zip((4, 8, 16, 32), AG_TABLE[n], strict=True):
        p = ag_polynomial(lam2, R, eta)
        assert abs(p) == pytest.approx(ag, abs=1e-4)
        assert lam2**R == pytest.approx(plain, abs=1e-4)
        out = accelerated_gossip(comm, v, topo.at(0), R, eta)
        torch.testing.assert_close(out, p * v, rtol=0, atol=1e-12)
        assert abs(ag_polynomial(lam2, R, 0.0)) == pytest.approx(plain, abs=1e-4)


def test_torus_eta_values() -> None:
    assert optimal_eta(make_topology("torus", 16)) == pytest.approx(0.1111, abs=1e-4)
    assert optimal_eta(make_topology("torus", 32)) == pytest.approx(0.3609, abs=1e-4)
    assert optimal_eta(make_topology("torus", 64)) == pytest.approx(0.3609, abs=1e-4)


def worst_case(comm: SimulatedCommunicator, W, R: int, eta: float) -> float:
    """``||AG_R - J||_2``, with AG_R obtained by running the gossip on the identity matrix."""
    n = W.n
    M = accelerated_gossip(comm, torch.eye(n, dtype=DT), W, R, eta)
    return float(torch.linalg.matrix_norm(M - 1.0 / n, ord=2))


def test_erdos_renyi_worst_case_after_8_rounds() -> None:
    topo = make_topology("erdos-renyi", 8, seed=0, p=0.3)
    W = topo.at(0)
    assert W.spectral().rho == pytest.approx(0.8479, abs=1e-4)
    eta = optimal_eta(W)
    assert eta == pytest.approx(0.3070, abs=1e-4)
    comm = SimulatedCommunicator(topo)
    assert worst_case(comm, W, 8, eta) == pytest.approx(0.0406, abs=1e-4)
    assert worst_case(comm, W, 8, 0.0) == pytest.approx(0.2671, abs=1e-4)


@pytest.mark.parametrize(("n", "ag", "plain"), [(8, 0.0130, 0.0039), (64, 0.0798, 0.0678)])
def test_directed_exponential_graph_is_rejected_and_momentum_would_hurt(
    n: int, ag: float, plain: float
) -> None:
    topo = make_topology("exponential", n)
    W = topo.at(0)
    comm = SimulatedCommunicator(topo)
    x = rand(n, 3)
    with pytest.raises(ValueError, match=r"'exponential' is directed.*eta must be 0"):
        accelerated_gossip(comm, x, W, 8, 0.1)
    with pytest.raises(ValueError, match="needs a symmetric mixing matrix.*directed"):
        optimal_eta(W)
    # eta = 0 is plain multi-round gossip and stays valid
    out = accelerated_gossip(comm, x, W, 8, 0.0)
    torch.testing.assert_close(out.mean(0), x.mean(0), rtol=0, atol=1e-13)
    # why: eta from rho = ||W - J||_2 makes the worst case worse than plain gossip (§5.2)
    eta = eta_from_lambda(W.spectral().rho)
    J = np.full((n, n), 1.0 / n)
    assert np.linalg.norm(ag_operator(W, 8, eta) - J, 2) == pytest.approx(ag, abs=1e-4)
    assert np.linalg.norm(ag_operator(W, 8, 0.0) - J, 2) == pytest.approx(plain, abs=1e-4)


def test_time_varying_schedule_needs_eta_zero_and_uses_the_schedule_in_order() -> None:
    topo = make_topology("one-peer-exponential", 8)
    comm = SimulatedCommunicator(topo)
    x = rand(8, 3)
    with pytest.raises(ValueError, match=r"'one-peer-exponential' is time-varying.*eta must be 0"):
        accelerated_gossip(comm, x, topo, 3, 0.2)
    # tau = 3 rounds of the one-peer exponential graph average exactly (n a power of two)
    out = accelerated_gossip(comm, x, topo, 3, 0.0)
    torch.testing.assert_close(out, x.mean(0).expand_as(x), rtol=0, atol=1e-14)


def test_one_message_per_round_is_accounted() -> None:
    topo = ring(8)
    comm = SimulatedCommunicator(topo)
    x = rand(8, 10)
    accelerated_gossip(comm, x, topo.at(0), 5, optimal_eta(topo))
    assert comm.rounds == 5
    assert torch.equal(comm.bytes_sent, torch.full((8,), 5 * 2 * 10 * 8.0, dtype=DT))


def test_stateful_rounds_equal_the_one_shot_function() -> None:
    topo = ring(16)
    W, eta = topo.at(0), optimal_eta(topo)
    comm = SimulatedCommunicator(topo)
    x = rand(16, 6)
    cur, prev = x.clone(), x.clone()
    for _ in range(7):
        cur, prev = ag_round(comm, W, cur, prev, eta)
    torch.testing.assert_close(cur, accelerated_gossip(comm, x, W, 7, eta), rtol=0, atol=0)
    pending = comm.mix_start(cur, W)  # the overlapped form gives the same round
    a, _ = ag_round(comm, W, cur.clone(), prev.clone(), eta)
    b, _ = ag_round(comm, W, cur, prev, eta, pending=pending)
    assert torch.equal(a, b)


def test_auto_rounds_rule() -> None:
    for n, expected in [(8, 6), (16, 8), (32, 8), (64, 8)]:
        W = ring(n).at(0)
        assert auto_rounds(W.spectral().rho, optimal_eta(W)) == expected
    assert auto_rounds(0.0, 0.0) == 1


@pytest.mark.parametrize(("rounds", "eta"), [(-1, 0.1), (2, 1.0), (2, -0.1)])
def test_invalid_rounds_and_eta(rounds: int, eta: float) -> None:
    topo = ring(4)
    with pytest.raises(ValueError, match="rounds must be|eta must be"):
        accelerated_gossip(SimulatedCommunicator(topo), rand(4, 2), topo.at(0), rounds, eta)
