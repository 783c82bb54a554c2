"""Gradient tracking (spec decentralized.md §3.3): tracker invariant, averages, exactness."""

from __future__ import annotations

import io

import pytest
import torch

from _helpers import run_quadratics
from peergrad.algorithms import (
    DPSGD,
    AllReduceSGD,
    GradientTracking,
    state_from_dict,
    state_to_dict,
)
from peergrad.comm import SimulatedCommunicator
from peergrad.problems import heterogeneous_quadratics
from peergrad.topology import make_topology

FORMS = ["cta", "atc"]


def noisy_run(
    alg, topology: str, steps: int, n: int = 8, noise: float = 1.0, pending: bool = False
):
    """Yield ``(x_before, g, x_after, state)`` per step with stochastic gradients (float64)."""
    problem = heterogeneous_quadratics(n=n, d=5, seed=0)
    comm = SimulatedCommunicator(make_topology(topology, n))
    x = torch.zeros(n, 5, dtype=torch.float64)
    state = alg.init(x, comm)
    gen = torch.Generator().manual_seed(7)
    for _ in range(steps):
        before = x.clone()
        handle = alg.pre_gradient(x, state, comm) if pending else None
        g = problem.grad(x) + noise * torch.randn(n, 5, generator=gen, dtype=torch.float64)
        state = alg.step(x, g, state, comm, pending=handle)
        yield before, g, x.clone(), state


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("topology", ["ring", "one-peer-exponential"])
@pytest.mark.parametrize("form", FORMS)
def test_tracker_mean_equals_gradient_mean_at_every_step(
    form: str, topology: str, momentum: float
) -> None:
    alg = GradientTracking(lr=0.05, form=form, momentum=momentum)
    for k, (_, g, _, state) in enumerate(noisy_run(alg, topology, 60)):
        if k == 0:  # y_0 = g_0 (spec §3.3 initialisation)
            if form == "cta" and topology == "ring":
                torch.testing.assert_close(state.tracker, g, rtol=0, atol=0)
            else:  # ATC and time-varying CTA hold W(0) y_0 = W(0) g_0
                W = make_topology(topology, 8).at(0).torch_dense(dtype=torch.float64)
                torch.testing.assert_close(state.tracker, W @ g, rtol=0, atol=1e-14)
        torch.testing.assert_close(state.tracker.mean(0), g.mean(0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_average_dynamics_are_exact(form: str) -> None:
    lr = 0.05
    for before, g, after, _ in noisy_run(GradientTracking(lr=lr, form=form), "ring", 40):
        torch.testing.assert_close(
            after.mean(0), before.mean(0) - lr * g.mean(0), rtol=0, atol=1e-12
        )


@pytest.mark.parametrize("form", FORMS)
def test_overlapped_gossip_gives_the_same_iterates(form: str) -> None:
    alg = GradientTracking(lr=0.05, form=form, momentum=0.9)
    plain = [a for _, _, a, _ in noisy_run(alg, "ring", 15)]
    overlapped = [a for _, _, a, _ in noisy_run(alg, "ring", 15, pending=True)]
    assert all(torch.equal(a, b) for a, b in zip(plain, overlapped, strict=True))


@pytest.mark.parametrize("lr", [0.1, 0.03, 0.01])
def test_exact_convergence_on_heterogeneous_quadratics(lr: float) -> None:
    # Spec §3.3 reference (rounding-level): GT 4.0e-15 / 2.0e-14 / 5.7e-14,
    # DSGT 3.1e-15 / 1.8e-14 / 5.9e-14; only the threshold is tested.
    for form in FORMS:
        x, problem, _ = run_quadratics(GradientTracking(lr=lr, form=form), "ring", steps=4000)
        assert problem.error(x) < 1e-10, form
    if lr == 0.01:  # D-PSGD fails the same test (spec §3.1 reference 0.2342)
        x, problem, _ = run_quadratics(DPSGD(lr=lr), "ring", steps=4000)
        assert problem.error(x) == pytest.approx(0.2342, rel=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("form", FORMS)
def test_x_and_y_travel_in_one_fused_message(form: str, dtype: torch.dtype) -> None:
    n, D, steps = 8, 11, 5
    comm = SimulatedCommunicator(make_topology("ring", n))
    alg = GradientTracking(form=form)
    x = torch.zeros(n, D, dtype=dtype)
    state = alg.init(x, comm)
    for _ in range(steps):
        state = alg.step(x, torch.ones(n, D, dtype=dtype), state, comm)
    size = torch.tensor([], dtype=dtype).element_size()
    assert comm.rounds == steps  # one message per neighbour per step ...
    expected = steps * 2 * (2 * D * size)  # ... of 2 D elements, to 2 neighbours
    assert torch.equal(comm.bytes_sent, torch.full((n,), float(expected), dtype=torch.float64))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_atc_on_the_complete_graph_is_allreduce_sgd(momentum: float) -> None:
    n, d = 8, 5
    problem = heterogeneous_quadratics(n=n, d=d, seed=0)
    comm_a = SimulatedCommunicator(make_topology("complete", n))
    comm_b = SimulatedCommunicator(make_topology("complete", n))
    gt = GradientTracking(lr=0.05, momentum=momentum, weight_decay=1e-3, form="atc")
    ar = AllReduceSGD(lr=0.05, momentum=momentum, weight_decay=1e-3)
    xa = torch.zeros(n, d, dtype=torch.float64)
    xb = xa.clone()
    sa, sb = gt.init(xa, comm_a), ar.init(xb, comm_b)
    gen = torch.Generator().manual_seed(5)
    for _ in range(60):
        noise = torch.randn(n, d, generator=gen, dtype=torch.float64)
        sa = gt.step(xa, problem.grad(xa) + noise, sa, comm_a)
        sb = ar.step(xb, problem.grad(xb) + noise, sb, comm_b)
        torch.testing.assert_close(xa, xb, rtol=0, atol=1e-12)


def test_rejects_unknown_form_and_non_doubly_stochastic_w() -> None:
    import numpy as np

    from peergrad.topology import MixingMatrix, Topology

    with pytest.raises(ValueError, match="form must be one of cta, atc"):
        GradientTracking(form="both")
    W = np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]])
    topo = Topology((MixingMatrix(W, check=False),), name="row-stochastic")
    with pytest.raises(ValueError, match="gradient-tracking needs a doubly stochastic"):
        GradientTracking().check_topology(SimulatedCommunicator(topo))


# ---------------------------------------------------------------- time-varying W(k) (DIGing)
def one_peer_matrices(n: int, steps: int) -> list[torch.Tensor]:
    """W(k) = (I + P^(s_k)) / 2, s_k = 2^(k mod log2 n), (P z)_i = z_(i-1): spec §2.1, built here
    from the definition rather than from :mod:`peergrad.topology`."""
    tau = n.bit_length() - 1
    eye = torch.eye(n, dtype=torch.float64)
    return [(eye + eye.roll(2 ** (k % tau), dims=0)) / 2 for k in range(steps)]


def diging(form: str, problem, x0: torch.Tensor, lr: float, Ws: list[torch.Tensor]):
    """Hand-written spec §3.3 recursion, with W(k) for x AND y in round k (DIGing / DSGT)::

    CTA: x_(k+1) = W(k) x_k - lr y_k          ATC: x_(k+1) = W(k) (x_k - lr y_k)
         y_(k+1) = W(k) y_k + g_(k+1) - g_k,   y_0 = g_0
    """
    x = x0.clone()
    g = problem.grad(x)
    y = g.clone()
    xs = []
    for W in Ws:
        # torch.sub(a, b, alpha=lr) is the library's kernel for a - lr * b (it may fuse the
        # multiply-add, so "a - lr * b" could differ in the last bit)
        x = torch.sub(W @ x, y, alpha=lr) if form == "cta" else W @ torch.sub(x, y, alpha=lr)
        g_new = problem.grad(x)
        y = W @ y + g_new - g
        g = g_new
        xs.append(x)
    return xs


@pytest.mark.parametrize("pending", [False, True])
@pytest.mark.parametrize("form", FORMS)
def test_time_varying_schedule_mixes_x_and_y_with_the_same_w_k(form: str, pending: bool) -> None:
    """One-peer exponential schedule (n = 8, period 3): the iterates equal the hand-written
    DIGing/DSGT recursion bit for bit (float64, W entries 0 or 1/2). Mixing the CTA tracker
    y_(k-1) with W(k) instead of W(k-1) (the overlapped message of the static-W path) is off by
    0.77 at x_2 here."""
    n, d, lr, steps = 8, 5, 0.1, 7
    problem = heterogeneous_quadratics(n=n, d=d, seed=0)
    x0 = torch.randn(n, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    topo = make_topology("one-peer-exponential", n)
    Ws = one_peer_matrices(n, steps)
    for k, W in enumerate(Ws):  # the library's schedule is the spec's (orientation included)
        assert torch.equal(topo.at(k).torch_dense(dtype=torch.float64), W)
    want = diging(form, problem, x0, lr, Ws)

    comm = SimulatedCommunicator(topo)
    alg = GradientTracking(lr=lr, form=form)
    x = x0.clone()
    state = alg.init(x, comm)
    for k in range(steps):
        handle = alg.pre_gradient(x, state, comm) if pending else None
        state = alg.step(x, problem.grad(x), state, comm, pending=handle)
        assert torch.equal(x, want[k]), (k, float((x - want[k]).abs().max()))
    assert comm.rounds == steps  # still one fused message per round


def test_static_cta_overlaps_and_time_varying_cta_does_not() -> None:
    alg = GradientTracking(form="cta")
    x = torch.zeros(8, 3, dtype=torch.float64)
    static = SimulatedCommunicator(make_topology("ring", 8))
    varying = SimulatedCommunicator(make_topology("one-peer-exponential", 8))
    assert alg.pre_gradient(x, alg.init(x, static), static) is not None
    assert alg.pre_gradient(x, alg.init(x, varying), varying) is None
    assert GradientTracking(form="atc").pre_gradient(x, alg.init(x, static), static) is None


@pytest.mark.parametrize("topology", ["ring", "one-peer-exponential"])
@pytest.mark.parametrize("form", FORMS)
def test_resume_from_serialised_state_equals_uninterrupted_run(form: str, topology: str) -> None:
    """Both forms on a static and a time-varying W (the CTA state holds y_k or W(k) y_k): 5
    steps, state through torch.save / torch.load into a fresh communicator, 7 more steps equal
    12 uninterrupted steps bit for bit (the registry-wide test covers the default form only)."""
    alg = GradientTracking(lr=0.05, form=form, momentum=0.9)
    full = [a for _, _, a, _ in noisy_run(alg, topology, 12, pending=True)]
    *_, (_, _, x5, state5) = noisy_run(alg, topology, 5, pending=True)
    buffer = io.BytesIO()
    torch.save(state_to_dict(state5), buffer)
    buffer.seek(0)
    state = state_from_dict(type(state5), torch.load(buffer, weights_only=True))
    problem = heterogeneous_quadratics(n=8, d=5, seed=0)
    comm = SimulatedCommunicator(make_topology(topology, 8))
    gen = torch.Generator().manual_seed(7)
    for _ in range(5):  # replay the noise of the first 5 steps
        torch.randn(8, 5, generator=gen, dtype=torch.float64)
    x = x5.clone()
    for k in range(5, 12):
        handle = alg.pre_gradient(x, state, comm)
        g = problem.grad(x) + torch.randn(8, 5, generator=gen, dtype=torch.float64)
        state = alg.step(x, g, state, comm, pending=handle)
        assert torch.equal(x, full[k]), k
