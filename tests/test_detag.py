"""DeTAG (spec decentralized.md §5.3–§5.8): invariants, reductions, convergence, accounting."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from _helpers import run_quadratics
from peergrad.algorithms import DPSGD, DeTAG, DeTAGState, GradientTracking, make_algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.problems import heterogeneous_quadratics
from peergrad.topology import make_topology, ring

DT = torch.float64


def run_phases(
    alg: DeTAG,
    phases: int,
    *,
    topology: str = "ring",
    n: int = 8,
    noise: float = 1.0,
    dtype: torch.dtype = DT,
    prepare: Callable[[DeTAGState, Tensor], None] | None = None,
    pending: bool = False,
) -> list[dict]:
    """Run ``phases`` phases with stochastic gradients; one record per phase.

    Each record: ``x`` (x_k at the phase start), ``x_next``, ``y_start`` (the tracker at the
    phase start), ``y_end``, ``gbar`` (the phase's accumulated gradient, recomputed here),
    ``steps_x_moved`` (steps of the phase after which x had changed), ``rounds`` and ``bytes``
    (communication during the phase). ``prepare(state, g0)`` may edit the initial state.
    """
    problem = heterogeneous_quadratics(n=n, d=5, seed=0)
    comm = SimulatedCommunicator(make_topology(topology, n))
    x = torch.zeros(n, 5, dtype=dtype)
    state = alg.init(x, comm)
    gen = torch.Generator().manual_seed(11)

    def grad() -> Tensor:
        return problem.grad(x) + noise * torch.randn(n, 5, generator=gen, dtype=dtype)

    g = grad()
    if prepare is not None:
        prepare(state, g)
    records = []
    for _ in range(phases):
        rec = {"x": x.clone(), "y_start": state.tracker.clone(), "steps_x_moved": []}
        rounds0, bytes0 = comm.rounds, comm.bytes_sent.clone()
        acc = torch.zeros_like(x)
        for r in range(state.rounds):
            handle = alg.pre_gradient(x, state, comm) if pending else None
            acc += g / state.rounds
            before = x.clone()
            state = alg.step(x, g, state, comm, pending=handle)
            if not torch.equal(before, x):
                rec["steps_x_moved"].append(r)
            g = grad()
        rec.update(
            x_next=x.clone(),
            y_end=state.tracker.clone(),
            gbar=acc,
            rounds=comm.rounds - rounds0,
            bytes=comm.bytes_sent - bytes0,
        )
        records.append(rec)
    return records


# ---------------------------------------------------------------- hyper-parameters and checks
def test_rounds_and_eta_are_resolved_from_the_topology() -> None:
    for n, (R, eta) in {8: (6, 0.2550), 16: (8, 0.5215), 64: (8, 0.8517)}.items():
        rounds, got = DeTAG().resolve(SimulatedCommunicator(ring(n)))
        assert rounds == R and got == pytest.approx(eta, abs=1e-4)
    comm = SimulatedCommunicator(ring(8))
    assert DeTAG(rounds=3, eta=0.2550).resolve(comm) == (3, 0.2550)
    assert DeTAG(eta=0.0).resolve(comm) == (8, 0.0)  # lambda^R <= 0.1 needs R >= 11: cap 8
    assert DeTAG().resolve(SimulatedCommunicator(ring(1))) == (1, 0.0)
    state = DeTAG().init(torch.zeros(8, 3), comm)
    assert state.rounds == 6 and state.eta == pytest.approx(0.2550, abs=1e-4)
    assert make_algorithm("detag", rounds="auto", eta="auto") == DeTAG()
    assert DeTAG(rounds="auto").rounds is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rounds": 0}, "rounds must be an integer >= 1"),
        ({"rounds": 2.5}, "rounds must be an integer >= 1"),
        ({"eta": 1.0}, r"eta must be in \[0, 1\)"),
        ({"eta": -0.1}, r"eta must be in \[0, 1\)"),
    ],
)
def test_invalid_rounds_and_eta(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeTAG(**options)


def test_directed_graph_needs_eta_zero() -> None:
    comm = SimulatedCommunicator(make_topology("exponential", 8))
    x = torch.zeros(8, 3)
    with pytest.raises(ValueError, match=r"'exponential' is directed.*eta must be 0"):
        DeTAG().init(x, comm)
    with pytest.raises(ValueError, match=r"'exponential' is directed.*eta must be 0"):
        DeTAG(eta=0.2).check_topology(comm)
    # eta = 0: plain multi-round gossip; auto R: smallest R with rho^R <= 0.1 (rho = 0.5)
    assert DeTAG(eta=0.0).init(x, comm).rounds == 4


def test_time_varying_schedule_needs_eta_zero_and_one_period_averages_exactly() -> None:
    comm = SimulatedCommunicator(make_topology("one-peer-exponential", 8))
    x = torch.randn(8, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"'one-peer-exponential' is time-varying.*eta must be 0"):
        DeTAG().init(x, comm)
    alg = DeTAG(eta=0.0, lr=0.1)
    state = alg.init(x, comm)
    assert state.rounds == 3  # one pass over the period tau = 3
    mean = x.mean(0)
    for _ in range(3):  # zero gradients: one phase is pure gossip, W(2) W(1) W(0) = J
        state = alg.step(x, torch.zeros_like(x), state, comm)
    torch.testing.assert_close(x, mean.expand_as(x), rtol=0, atol=1e-14)


@pytest.mark.parametrize(("pipelined", "pending"), [(True, False), (True, True), (False, False)])
def test_time_varying_rounds_mix_x_and_y_with_the_same_w(pipelined: bool, pending: bool) -> None:
    """eta = 0, R = 2 on the one-peer schedule (period 3, so phases use (W0, W1), (W2, W0), ...):
    the iterates equal a hand-written spec §5.3 recursion in which round j of the run mixes
    x and y with the same W(j) (unlike the CTA gradient-tracking bug of issue 13, item 8)."""
    n, d, R, lr, phases = 8, 5, 2, 0.1, 5
    problem = heterogeneous_quadratics(n=n, d=d, seed=0)
    topo = make_topology("one-peer-exponential", n)
    Ws = [topo.at(j).torch_dense(dtype=DT) for j in range(R * phases)]
    x0 = torch.randn(n, d, generator=torch.Generator().manual_seed(4), dtype=DT)

    def gossip(k: int, z: Tensor) -> Tensor:  # the R rounds of phase k
        for W in Ws[k * R : (k + 1) * R]:
            z = W @ z
        return z

    x, y, g_prev, ay_prev, want = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0), 0, []
    for k in range(phases):
        acc = problem.grad(x)  # R identical deterministic minibatches at x_k: their mean
        if pipelined:  # x_(k+1) = AG(x_k) - lr AG(y_k); y_(k+1) = AG(y_k) + acc - g_prev
            ay = gossip(k, y)
            x, y = torch.sub(gossip(k, x), ay, alpha=lr), ay + acc - g_prev
        else:  # y_k = AG(y_(k-1)) + acc - g_prev; x_(k+1) = AG(x_k - lr y_k)
            y = ay_prev + acc - g_prev
            x, ay_prev = gossip(k, torch.sub(x, y, alpha=lr)), gossip(k, y)
        g_prev = acc
        want.append(x)

    comm = SimulatedCommunicator(topo)
    alg = DeTAG(lr=lr, rounds=R, eta=0.0, pipelined=pipelined)
    x = x0.clone()
    state = alg.init(x, comm)
    for k in range(phases):
        for _ in range(R):
            handle = alg.pre_gradient(x, state, comm) if pending else None
            state = alg.step(x, problem.grad(x), state, comm, pending=handle)
        torch.testing.assert_close(x, want[k], rtol=0, atol=1e-14)


# ---------------------------------------------------------------- §5.8 item 2: tracking invariant
def tracking_deviation(records: list[dict]) -> float:
    """max over phases of |mean y - mean g~| (pipelined: y_(k+1) vs g~_k; else y_k vs g~_k)."""
    return max(float((rec["y_end"].mean(0) - rec["gbar"].mean(0)).abs().max()) for rec in records)


@pytest.mark.parametrize("pipelined", [True, False])
def test_tracker_mean_equals_the_accumulated_gradient_mean(pipelined: bool) -> None:
    alg = DeTAG(lr=0.05, rounds=3, eta=0.2550, pipelined=pipelined)
    records = run_phases(alg, 25)
    assert tracking_deviation(records) < 1e-12


def test_the_reference_codes_initialisation_breaks_the_invariant() -> None:
    """Spec §5.4: y_0 = g_0 with acc_prev = 0 adds the initial gradient to mean y forever."""

    def wrong(state: DeTAGState, g0: Tensor) -> None:
        state.tracker.copy_(g0)  # y_0 = first minibatch gradient; grad_prev stays 0

    alg = DeTAG(lr=0.05, rounds=3, eta=0.2550)
    records = run_phases(alg, 25, prepare=wrong)
    with pytest.raises(AssertionError):
        assert tracking_deviation(records) < 1e-12
    offset = records[0]["y_start"].mean(0)  # = mean g_0
    for rec in records:
        torch.testing.assert_close(rec["y_end"].mean(0) - rec["gbar"].mean(0), offset)


# ---------------------------------------------------------------- §5.8 item 3: average dynamics
def test_pipelined_average_dynamics() -> None:
    lr = 0.05
    records = run_phases(DeTAG(lr=lr, rounds=3, eta=0.2550), 25)
    prev_gbar = torch.zeros(5, dtype=DT)  # g~_(-1) = 0: phase 0 does not move the average
    for rec in records:
        mean_next = rec["x_next"].mean(0)
        torch.testing.assert_close(mean_next, rec["x"].mean(0) - lr * prev_gbar, rtol=0, atol=1e-12)
        step = lr * rec["y_start"].mean(0)
        torch.testing.assert_close(mean_next, rec["x"].mean(0) - step, rtol=0, atol=1e-12)
        prev_gbar = rec["gbar"].mean(0)


def test_non_pipelined_average_dynamics() -> None:
    lr = 0.05
    for rec in run_phases(DeTAG(lr=lr, rounds=3, eta=0.2550, pipelined=False), 25):
        torch.testing.assert_close(rec["y_end"].mean(0), rec["gbar"].mean(0), rtol=0, atol=1e-12)
        expected = rec["x"].mean(0) - lr * rec["gbar"].mean(0)
        torch.testing.assert_close(rec["x_next"].mean(0), expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- §5.8 item 4: reduction to DSGT
@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 1e-2)])
def test_non_pipelined_r1_eta0_is_dsgt(momentum: float, weight_decay: float) -> None:
    opts = {"lr": 0.05, "momentum": momentum, "weight_decay": weight_decay}
    detag = DeTAG(rounds=1, eta=0.0, pipelined=False, **opts)
    dsgt = GradientTracking(form="atc", **opts)
    problem = heterogeneous_quadratics(n=8, d=5, seed=0)
    comm_a, comm_b = SimulatedCommunicator(ring(8)), SimulatedCommunicator(ring(8))
    xa = torch.zeros(8, 5, dtype=DT)
    xb = xa.clone()
    sa, sb = detag.init(xa, comm_a), dsgt.init(xb, comm_b)
    gen = torch.Generator().manual_seed(3)
    for _ in range(50):
        noise = torch.randn(8, 5, generator=gen, dtype=DT)
        sa = detag.step(xa, problem.grad(xa) + noise, sa, comm_a)
        sb = dsgt.step(xb, problem.grad(xb) + noise, sb, comm_b)
        torch.testing.assert_close(xa, xb, rtol=0, atol=1e-12)
    assert torch.equal(comm_a.bytes_sent, comm_b.bytes_sent)


# ---------------------------------------------------------------- §5.8 item 5: exact convergence
@pytest.mark.parametrize("lr", [0.1, 0.03, 0.01])
def test_exact_convergence_on_heterogeneous_quadratics(lr: float) -> None:
    """1000 phases, R = 3, eta = 0.2550, pipelined. Reference: 2.8e-14, 1.0e-13, 9.04e-6."""
    x, problem, _ = run_quadratics(DeTAG(lr=lr, rounds=3, eta=0.2550), "ring", steps=3000)
    err = problem.error(x)
    if lr == 0.01:
        assert err == pytest.approx(9.04e-6, rel=1e-2)  # still converging
    else:
        assert err < 1e-10
    if lr == 0.03:  # D-PSGD keeps its heterogeneity bias (spec §3.1 reference 0.6341)
        x, problem, _ = run_quadratics(DPSGD(lr=lr), "ring", steps=3000)
        assert problem.error(x) == pytest.approx(0.6341, rel=1e-3)


def test_non_pipelined_and_momentum_forms_also_converge_exactly() -> None:
    for alg in (
        DeTAG(lr=0.1, rounds=3, eta=0.2550, pipelined=False),
        DeTAG(lr=0.02, rounds=3, eta=0.2550, momentum=0.5),
    ):
        x, problem, _ = run_quadratics(alg, "ring", steps=3000)
        assert problem.error(x) < 1e-10, alg


# ---------------------------------------------------------------- §5.8 item 6: accounting
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pipelined", [True, False])
def test_each_phase_is_r_minibatches_and_r_rounds_of_two_buffers(
    pipelined: bool, dtype: torch.dtype
) -> None:
    R, D = 4, 5
    size = torch.tensor([], dtype=dtype).element_size()
    records = run_phases(DeTAG(lr=0.05, rounds=R, pipelined=pipelined), 5, dtype=dtype)
    for rec in records[1:]:
        assert rec["rounds"] == R  # one gossip round per minibatch ...
        # ... carrying x and y (2 D elements) to each of the 2 ring neighbours
        assert torch.equal(rec["bytes"], torch.full((8,), R * 2 * 2 * D * size, dtype=DT))
        assert rec["steps_x_moved"] == [R - 1]  # the model is fixed during a phase


def test_overlapped_rounds_give_the_same_iterates() -> None:
    alg = DeTAG(lr=0.05, rounds=3, momentum=0.9, nesterov=True, weight_decay=1e-3)
    a = run_phases(alg, 6)
    b = run_phases(alg, 6, pending=True)
    assert all(torch.equal(p["x_next"], q["x_next"]) for p, q in zip(a, b, strict=True))


# ---------------------------------------------------------------- §5.8 item 7: heterogeneity
def test_label_sorted_logistic_regression_tracking_methods_beat_dpsgd() -> None:
    """16-node ring, label-sorted ("unshuffled") digits shards, equal samples and rounds.

    Same step count (= minibatches = gossip rounds) and the spec's practical setting (lr 0.1,
    momentum 0.9) for all three; DeTAG uses its automatic R = 8 and eta = 0.5215. Only the
    ordering of the final training loss of the averaged model is asserted.
    """
    from peergrad.train import TrainConfig, train

    def final_loss(algorithm: str) -> float:
        config = TrainConfig(
            algorithm=algorithm,
            topology="ring",
            workers=16,
            dataset="digits",
            model="logreg",
            partition="sorted",
            steps=400,
            eval_every=400,
            batch_size=8,
            lr=0.1,
            momentum=0.9,
            weight_decay=0.0,
            dtype="float64",
            seed=1,
            progress=False,
        )
        return train(config, write=False).summary["train_loss"]

    dpsgd = final_loss("dpsgd")
    assert final_loss("gradient-tracking") < dpsgd
    assert final_loss("detag") < dpsgd
