"""The system clock on the simulated engine (issue 26, items 2 and 3): the communicator reports
what the algorithms send, and failures change the mixing matrix, the all-reduce and the state.

Over the whole registry, through the conformance kit (``tests/test_conformance.py``): a clock
without failures leaves x, the state and the bytes bit for bit unchanged (``clock``), and every
algorithm's declared behaviour under failures holds (``failures``: refused with one line, or
run with link drops and an absent worker whose rows stay unchanged)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from peergrad.algorithms import check_failures, make_algorithm
from peergrad.algorithms.base import LossClosure
from peergrad.comm import NetworkModel, SimulatedCommunicator
from peergrad.system import (
    ComputeProfile,
    FailureProfile,
    LinkProfile,
    OfflineInterval,
    SystemClock,
    SystemProfile,
)
from peergrad.topology import (
    Topology,
    graph_edges,
    make_topology,
    ring,
    surviving_mixing_matrix,
)

NETWORK = NetworkModel(0.37e-3, 3.3e9 / 8)
F64 = torch.float64


def closure_for(x: Tensor) -> LossClosure:
    """Each worker's loss 0.5 ||x_i - 1||^2 (line searches; the gradients are random)."""

    def fn(xt: Tensor) -> Tensor:
        return 0.5 * ((xt - 1.0) ** 2).sum(dim=1)

    return LossClosure(fn, fn(x))


def engine_steps(
    alg: Any,
    comm: SimulatedCommunicator,
    x: Tensor,
    grads: list[Tensor],
    *,
    state: Any = None,
    pre_gradient: bool = True,
    after: Callable[[int, Tensor, Any, Any], None] | None = None,
) -> Any:
    """The step loop of ``peergrad.train.steps._steps`` on random gradients: begin_step, save the
    absent rows, pre_gradient, compute, step, restore. ``after(k, x_before, state_before_rows,
    state)`` runs after each step (``state_before_rows``: a deep copy of the state before)."""
    state = alg.init(x, comm) if state is None else state
    for k, g in enumerate(grads):
        comm.begin_step(k + 1)
        held = comm.hold_absent(x, state)
        before = (x.clone(), _copy_state(state)) if after is not None else None
        pending = alg.pre_gradient(x, state, comm) if pre_gradient else None
        comm.compute()
        state = alg.step(x, g, state, comm, closure=closure_for(x), pending=pending)
        if held is not None:
            held.restore(x, state)
        if after is not None:
            assert before is not None
            after(k, before[0], before[1], state)
    return state


def _copy_state(state: Any) -> dict[str, Any]:
    return {
        f.name: (v.clone() if isinstance(v := getattr(state, f.name), Tensor) else v)
        for f in dataclasses.fields(state)
    }


def random_grads(n: int, d: int, steps: int, seed: int = 0) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=gen, dtype=F64) for _ in range(steps)]


def faulty(
    n: int, *, drop: float = 0.0, offline: tuple[OfflineInterval, ...] = ()
) -> SystemProfile:
    return SystemProfile(
        n,
        compute=ComputeProfile(step_ms=2.0, jitter_sigma=0.2),
        links=LinkProfile(1e-3, 1e9),
        failures=FailureProfile(link_drop_prob=drop, offline=offline),
        seed=3,
    )


# ---------------------------------------------------------------------------- exactness
CLOCKED = ("dpsgd", "allreduce", "local-sgd", "choco-sgd", "powersgd", "gradient-tracking")


@pytest.mark.parametrize("name", CLOCKED)
def test_uniform_profile_clock_equals_simulated_comm_time_after_20_steps(name: str) -> None:
    """Identical workers, zero compute, uniform links: after 20 steps on the ring the clock's
    time (fed by the communicator) equals the closed alpha-beta ``simulated_comm_time_s``."""
    n = 8
    clock = SystemClock(SystemProfile.uniform(n, NETWORK))
    comm = SimulatedCommunicator(ring(n), network=NETWORK, clock=clock)
    alg = make_algorithm(name)
    engine_steps(alg, comm, torch.zeros(n, 6, dtype=F64), random_grads(n, 6, 20))
    assert comm.simulated_comm_time_s > 0 and clock.rounds == comm.rounds
    assert comm.simulated_time_s == comm.simulated_comm_time_s


def test_local_sgd_advances_the_clock_only_at_its_averaging_steps() -> None:
    n, period = 8, 4
    clock = SystemClock(SystemProfile.uniform(n, NETWORK))
    comm = SimulatedCommunicator(ring(n), network=NETWORK, clock=clock)
    alg = make_algorithm("local-sgd", period=period, block_momentum=0.0)
    times: list[float] = []
    engine_steps(
        alg,
        comm,
        torch.zeros(n, 5, dtype=F64),
        random_grads(n, 5, 12),
        after=lambda k, *_: times.append(comm.simulated_time_s),
    )
    one = NETWORK.allreduce_time_s(5 * 8, n)
    expected = [one * ((k + 1) // period) for k in range(12)]
    torch.testing.assert_close(torch.tensor(times), torch.tensor(expected), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ["dadam", "gradient-tracking"])
def test_pre_gradient_rounds_overlap_the_compute(name: str) -> None:
    """Rounds started by ``pre_gradient`` (between begin_step and compute) reach the clock with
    ``pre_gradient=True`` and hide behind the 10 ms compute; the same messages sent after the
    gradient cost latency plus transfer on top of it."""
    n, d = 4, 1000
    profile = SystemProfile(n, compute=ComputeProfile(step_ms=10.0), links=LinkProfile(1e-3, 1e9))
    options = {"form": "cta"} if name == "gradient-tracking" else {}
    result = {}
    for pre in (True, False):
        clock = SystemClock(profile)
        flags: list[bool] = []
        gossip = clock.gossip

        def spy(
            *args: Any, pre_gradient: bool = False, gossip: Any = gossip, flags: Any = flags
        ) -> None:
            flags.append(pre_gradient)
            gossip(*args, pre_gradient=pre_gradient)

        clock.gossip = spy  # type: ignore[method-assign]
        comm = SimulatedCommunicator(ring(n), clock=clock)
        alg = make_algorithm(name, **options)
        engine_steps(
            alg, comm, torch.zeros(n, d, dtype=F64), random_grads(n, d, 3), pre_gradient=pre
        )
        assert flags == [pre] * 3
        result[pre] = comm.simulated_time_s
    nbytes = d * 8 * (2 if name == "gradient-tracking" else 1)
    transfer = 1e-3 + 2 * nbytes / 1e9  # each sender's second message on the ring
    assert result[True] == pytest.approx(3 * 10e-3, rel=0, abs=1e-12)  # hidden: transfer < compute
    assert result[False] == pytest.approx(3 * (10e-3 + transfer), rel=0, abs=1e-12)


def test_the_clock_takes_pre_gradient_rounds_before_or_after_compute_alike() -> None:
    """Reported before ``compute`` (as the engines post them) or after it: same clock."""
    profile = faulty(6)
    topo = ring(6)
    src, dst = SimulatedCommunicator(topo).edges(topo.at(0))
    clocks = [SystemClock(profile), SystemClock(profile)]
    for k in range(4):
        for before, clock in zip((True, False), clocks, strict=True):
            clock.begin_step()
            if before:
                clock.gossip(src, dst, 3e6 * (k + 1), pre_gradient=True)
                clock.compute()
            else:
                clock.compute()
                clock.gossip(src, dst, 3e6 * (k + 1), pre_gradient=True)
            clock.gossip(src, dst, 1e5)
    for name in ("t", "comm_s", "idle_s", "compute_s", "link_free"):
        assert torch.equal(getattr(clocks[0], name), getattr(clocks[1], name)), name


# ---------------------------------------------------------------------------- failures
@pytest.mark.parametrize("form", ["cta", "atc"])
def test_dpsgd_mean_dynamics_stay_exact_under_link_drops(form: str) -> None:
    """Every round's surviving W is doubly stochastic: mean(x) moves by exactly mean(-lr g).
    And the round really mixes with the Metropolis–Hastings W of the surviving graph: a twin
    clock with the same seed, drawing in the same order (CTA draws the round before the compute,
    in ``pre_gradient``), gives the dense W' that x follows."""
    n, d, lr = 12, 4, 0.1
    topo = make_topology("torus", n)
    profile = faulty(n, drop=0.3)
    comm = SimulatedCommunicator(topo, clock=SystemClock(profile))
    alg = make_algorithm("dpsgd", lr=lr, form=form)
    grads = random_grads(n, d, 20)
    twin, (src, dst) = SystemClock(profile), graph_edges(topo.at(0))
    dropped = []

    def check(k: int, x_before: Tensor, _: Any, __: Any) -> None:
        expected = (x_before - lr * grads[k]).mean(dim=0)
        torch.testing.assert_close(x.mean(dim=0), expected, rtol=0, atol=1e-13)
        twin.begin_step()
        if form == "cta":
            up = twin.surviving_edges(src, dst)
            twin.compute()
        else:
            twin.compute()
            up = twin.surviving_edges(src, dst)
        dropped.append(not bool(up.all()))
        Wk = torch.tensor(surviving_mixing_matrix(n, src[up], dst[up]).dense)
        if form == "cta":
            want = Wk @ x_before - lr * grads[k]
        else:
            want = Wk @ (x_before - lr * grads[k])
        torch.testing.assert_close(x, want, rtol=0, atol=1e-13)

    x = torch.randn(n, d, dtype=F64)
    engine_steps(alg, comm, x, grads, after=check)
    assert sum(dropped) >= 15
    nominal = SimulatedCommunicator(topo)
    grads_nominal = [g.clone() for g in grads]
    y = torch.zeros(n, d, dtype=F64)
    engine_steps(make_algorithm("dpsgd", lr=lr, form=form), nominal, y, grads_nominal)
    assert float(comm.bytes_sent.sum()) < float(nominal.bytes_sent.sum())  # links did drop


OFFLINE = (OfflineInterval(worker=1, start_step=2, stop_step=6),)


def test_allreduce_averages_over_the_present_workers_only() -> None:
    n, d, lr = 6, 5, 0.1
    comm = SimulatedCommunicator(ring(n), clock=SystemClock(faulty(n, offline=OFFLINE)))
    alg = make_algorithm("allreduce", lr=lr)
    grads = random_grads(n, d, 5)
    seen = []

    def check(k: int, x_before: Tensor, _: Any, __: Any) -> None:
        present = comm.present if comm.present is not None else torch.ones(n, dtype=torch.bool)
        seen.append(int(present.sum()))
        expected = x_before[present] - lr * grads[k][present].mean(dim=0)
        torch.testing.assert_close(x[present], expected, rtol=0, atol=1e-15)
        assert torch.equal(x[~present], x_before[~present])

    x = torch.zeros(n, d, dtype=F64)
    engine_steps(alg, comm, x, grads, after=check)
    assert seen == [6, 6, 5, 5, 5]
    # worker 1 sent nothing in its 3 absent steps; the others ran 5-worker all-reduces then
    diff = float(comm.bytes_sent[0] - comm.bytes_sent[1])
    assert diff == pytest.approx(3 * (2 * 4 / 5) * d * 8, rel=1e-12)


def test_gradient_tracking_keeps_its_tracker_mean_without_churn_and_drifts_with_it() -> None:
    """mean(y) = mean(g_prev) holds under link drops (each surviving W is doubly stochastic);
    with a worker away, the present workers' trackers no longer average their gradients."""
    n, d = 6, 4

    def drift(profile: SystemProfile) -> tuple[float, float]:
        comm = SimulatedCommunicator(ring(n), clock=SystemClock(profile))
        alg = make_algorithm("gradient-tracking", form="atc")
        state = engine_steps(alg, comm, torch.zeros(n, d, dtype=F64), random_grads(n, d, 4))
        all_rows = float((state.tracker.mean(0) - state.grad_prev.mean(0)).abs().max())
        p = comm.present if comm.present is not None else torch.ones(n, dtype=torch.bool)
        present = float((state.tracker[p].mean(0) - state.grad_prev[p].mean(0)).abs().max())
        return all_rows, present

    all_rows, present = drift(faulty(n, drop=0.3))
    assert all_rows < 1e-13 and present < 1e-13
    _, present = drift(faulty(n, offline=(OfflineInterval(2, 2, 10),)))
    assert present > 1e-3


@pytest.mark.parametrize("topology", ["one-peer-exponential", "exponential"])
def test_failures_on_a_directed_topology_are_refused_in_one_line(topology: str) -> None:
    n = 8
    topo: Topology = make_topology(topology, n)
    profile = faulty(n, drop=0.1)
    with pytest.raises(ValueError, match=f"failures.link_drop_prob.*{topology}") as info:
        check_failures(make_algorithm("dpsgd"), topo, profile)
    assert "\n" not in str(info.value)
    check_failures(make_algorithm("allreduce"), topo, profile)  # does not gossip: fine
    comm = SimulatedCommunicator(topo, clock=SystemClock(profile))
    comm.begin_step(1)
    with pytest.raises(ValueError, match="failures.link_drop_prob.*directed"):
        comm.mix(torch.zeros(n, 3), topo.at(0))


def test_no_failures_in_the_profile_checks_nothing() -> None:
    check_failures(make_algorithm("d2"), make_topology("one-peer-exponential", 8), faulty(8))


@pytest.mark.parametrize("topology", ["ring", "torus", "star", "erdos-renyi"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_a_failure_round_on_the_cpu_is_bit_for_bit_the_sparse_product(
    topology: str, dtype: torch.dtype
) -> None:
    """Above the dense size (n > 32) a round with dropped links and absent workers mixes on the
    CPU slot by slot (``_apply_slots``); that is exactly ``torch.sparse.mm`` of the coalesced
    W', non-finite entries included, and W' is the surviving graph's Metropolis–Hastings W."""
    from peergrad.comm.simulated import _Round
    from peergrad.topology import surviving_weights

    n = 40
    topo = make_topology(topology, n, seed=3)
    src, dst = graph_edges(topo.at(0))
    away = (OfflineInterval(2, 0, 10), OfflineInterval(9, 2, 10))
    clock = SystemClock(faulty(n, drop=0.3, offline=away))
    comm = SimulatedCommunicator(topo)
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    for k in range(6):
        clock.begin_step()
        up = clock.surviving_edges(src, dst)
        s, d, w, diag = surviving_weights(n, src[up], dst[up], present=clock.present)
        x = torch.randn(n, 3, 7, dtype=dtype) * 10 ** torch.randint(-3, 4, (n, 3, 7))
        if k == 5:
            x[1, 0, 2], x[7, 2, 0] = float("inf"), float("nan")
        got = _Round(s, d, w, diag, comm.workspace).apply(x)
        ids = torch.arange(n)
        index = torch.stack([torch.cat([d, ids]), torch.cat([s, ids])])
        A = torch.sparse_coo_tensor(index, torch.cat([w, diag]), (n, n)).coalesce().to(dtype)
        want = torch.sparse.mm(A, x.reshape(n, -1)).reshape(x.shape)
        nan = want.isnan()
        assert torch.equal(got.isnan(), nan)
        assert torch.equal(got.view(bits)[~nan], want.view(bits)[~nan])
        if k < 5 and dtype == F64:
            dense = torch.tensor(
                surviving_mixing_matrix(n, s, d, present=clock.present).dense, dtype=F64
            )
            torch.testing.assert_close(got, (dense @ x.reshape(n, -1)).reshape(x.shape))
