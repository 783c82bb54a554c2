"""CHOCO-SGD (spec decentralized.md §3.5): reduction to D-PSGD, mean preservation, bytes, bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _helpers import run_quadratics
from peergrad.algorithms import DPSGD, ChocoSGD, make_algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.compress import make_compressor
from peergrad.problems import heterogeneous_quadratics
from peergrad.topology import make_topology


@pytest.mark.parametrize("topology", ["ring", "exponential", "star"])
def test_identity_compressor_and_unit_gamma_is_dpsgd_atc(topology: str) -> None:
    steps = 300
    x_choco, _, comm_c = run_quadratics(
        ChocoSGD(lr=0.05, gamma=1.0, compressor="identity"), topology, steps=steps
    )
    x_dpsgd, _, comm_d = run_quadratics(DPSGD(lr=0.05, form="atc"), topology, steps=steps)
    torch.testing.assert_close(x_choco, x_dpsgd, rtol=0, atol=1e-12)
    assert torch.equal(comm_c.bytes_sent, comm_d.bytes_sent)


def test_identity_compressor_matches_dpsgd_atc_at_every_step() -> None:
    seen: list[torch.Tensor] = []
    run_quadratics(
        ChocoSGD(lr=0.05, gamma=1.0, compressor="identity"),
        "ring",
        steps=50,
        noise=0.5,
        callback=lambda k, xb, g, s: seen.append((xb, g)),
    )
    W = make_topology("ring", 8).at(0).dense
    Wt = torch.tensor(W, dtype=torch.float64)
    for (xb, g), (xa, _) in zip(seen[:-1], seen[1:], strict=True):
        torch.testing.assert_close(xa, Wt @ (xb - 0.05 * g), rtol=0, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.05, 0.2, 0.4])
def test_consensus_step_preserves_the_mean(gamma: float) -> None:
    n, d, lr = 8, 20, 0.05
    alg = ChocoSGD(lr=lr, gamma=gamma, compressor="topk", ratio=0.2)
    assert make_compressor("topk", ratio=0.2).compress(torch.ones(1, d)).values.shape[1] == 4
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    run_quadratics(
        alg,
        "ring",
        n=n,
        d=d,
        steps=60,
        noise=0.3,
        callback=lambda k, xb, g, s: seen.append((xb, g)),
    )
    for (xb, g), (xa, _) in zip(seen[:-1], seen[1:], strict=True):
        x_half = xb - lr * g
        torch.testing.assert_close(xa.mean(0), x_half.mean(0), rtol=0, atol=1e-12)
    # the compression is real: the nodes do not agree after a step
    assert (seen[-1][0] - seen[-1][0].mean(0)).abs().max() > 1e-6


@pytest.mark.parametrize("topology", ["ring", "star"])
def test_iterates_equal_choco_recursion_written_out_with_top_k(topology: str) -> None:
    """The paper's recursion (Koloskova et al. 2019, Algorithm 1) written out with a dense W and
    top-k by ``torch.topk``: x_half = x - lr g; q = top_k(x_half - x_hat); x_hat += q;
    x = x_half + gamma (W x_hat - x_hat). Unlike mean preservation, this fails for a wrong
    message, a wrong public copy or a wrong consensus step."""
    n, d, lr, gamma, k = 8, 20, 0.05, 0.3, 4
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    x_lib, _, _ = run_quadratics(
        ChocoSGD(lr=lr, gamma=gamma, compressor="topk", ratio=k / d),
        topology,
        n=n,
        d=d,
        steps=60,
        noise=0.3,
        callback=lambda k_, xb, g, s: seen.append((xb, g)),
    )
    W = torch.tensor(make_topology(topology, n).at(0).dense, dtype=torch.float64)
    x = torch.zeros(n, d, dtype=torch.float64)
    x_hat = torch.zeros_like(x)
    for step, (xb, g) in enumerate(seen):
        torch.testing.assert_close(x, xb, rtol=0, atol=1e-12, msg=f"before step {step}")
        x_half = x - lr * g
        diff = x_half - x_hat
        keep = diff.abs().topk(k, dim=1).indices
        q = torch.zeros_like(diff).scatter_(1, keep, diff.gather(1, keep))
        x_hat = x_hat + q
        x = x_half + gamma * (W @ x_hat - x_hat)
    torch.testing.assert_close(x_lib, x, rtol=0, atol=1e-12)
    assert (x - x.mean(0)).abs().max() > 1e-3  # the nodes disagree: the compression matters


@pytest.mark.parametrize(("compressor", "topology"), [("topk", "ring"), ("qsgd", "star")])
def test_bytes_per_step_are_out_degree_times_compressed_size(
    compressor: str, topology: str
) -> None:
    n, d, steps = 8, 20, 7
    alg = ChocoSGD(lr=0.05, compressor=compressor, ratio=0.2)
    topo = make_topology(topology, n)
    comm = SimulatedCommunicator(topo)
    problem = heterogeneous_quadratics(n=n, d=d, seed=0)
    x = torch.zeros(n, d, dtype=torch.float64)
    state = alg.init(x, comm)
    for _ in range(steps):
        state = alg.step(x, problem.grad(x), state, comm)
    per_msg = alg.make_compressor().nbytes(d, torch.float64)
    expected = torch.as_tensor(comm.out_degrees(topo.at(0)), dtype=comm.bytes_sent.dtype)
    assert torch.equal(comm.bytes_sent, steps * per_msg * expected)
    assert per_msg < d * 8


def test_heterogeneous_data_leaves_a_dpsgd_like_bias() -> None:
    x, problem, _ = run_quadratics(ChocoSGD(lr=0.03, gamma=0.4, ratio=0.4), "ring", steps=4000)
    err = problem.error(x)
    x_d, _, _ = run_quadratics(DPSGD(lr=0.03, form="atc"), "ring", steps=4000)
    assert err > 1e-2
    assert torch.isfinite(x).all() and err < 5 * problem.error(x_d)
    # the node mean does much better than the nodes (consensus error dominates)
    assert problem.error(x.mean(0)) < err


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5, float("nan")])
def test_gamma_out_of_range_is_rejected(gamma: float) -> None:
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\]"):
        ChocoSGD(gamma=gamma)
    with pytest.raises(ValueError, match="gamma"):
        make_algorithm("choco-sgd", gamma=str(gamma))


def test_compressor_options_are_validated() -> None:
    with pytest.raises(ValueError, match="ratio"):
        ChocoSGD(ratio=0.0)
    with pytest.raises(ValueError):
        ChocoSGD(compressor="nope")


def test_time_varying_and_non_doubly_stochastic_topologies_are_rejected() -> None:
    alg = ChocoSGD()
    x = torch.zeros(8, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="static topology.*time-varying"):
        alg.init(x, SimulatedCommunicator(make_topology("one-peer-exponential", 8)))
    from peergrad.topology import MixingMatrix, Topology

    W = np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]])  # rows sum to 1 only
    topo = Topology((MixingMatrix(W, check=False),), name="row-stochastic")
    with pytest.raises(ValueError, match="choco-sgd needs a doubly stochastic"):
        alg.check_topology(SimulatedCommunicator(topo))
