"""The simulated clock's asynchronous all-reduce (``SystemClock.all_reduce_start`` / ``wait``) and
the simulated communicator's ``mean_start`` / ``wait_for`` / ``synchronize`` on it (issue 28:
Streaming DiLoCo's outer all-reduce runs behind tau inner steps).

Exact equalities: with identical workers, uniform links and compute c per step (dyadic numbers:
every sum is exact), posting and waiting tau steps later costs ``max(0, d - tau c)`` more than
the compute alone; tau = 0 is the blocking all-reduce bit for bit (also with jitter,
stragglers, uneven links and churn); hand-computed splits; two collectives in flight queue on
the collective stream; a checkpoint with one in flight resumes bit for bit; the invariant
``compute_s + comm_s + idle_s + absent_s == t`` holds throughout.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from _distributed import start_workers, wait_all
from peergrad.comm import SimulatedCommunicator
from peergrad.system import (
    ComputeProfile,
    FailureProfile,
    LinkProfile,
    OfflineInterval,
    SystemClock,
    SystemProfile,
)
from peergrad.topology import graph_edges, make_topology, torus

F64 = torch.float64
N = 4
C = 0.25  # seconds of compute per step (step_ms = 250): exact in binary
BYTES = 2.0**20  # with 2**20 B/s and 0.125 s latency: d = 6 * 0.125 + 1.5 * 1 = 2.25 s exactly
D = 2.25
SPLITS = ("t", "compute_s", "comm_s", "idle_s", "absent_s")
HERE = Path(__file__).parent


def dyadic(n: int = N, speed: tuple[float, ...] | None = None) -> SystemProfile:
    compute = ComputeProfile(step_ms=250.0, speed=speed)
    return SystemProfile(n, compute=compute, links=LinkProfile(0.125, 2.0**20))


def rough(n: int = 12, churn: bool = False) -> SystemProfile:
    """Jitter, transient stragglers, random links; with ``churn``, workers leave and return."""
    failures = FailureProfile()
    if churn:
        failures = FailureProfile(
            leave_prob=0.15, mean_downtime_steps=3.0, offline=(OfflineInterval(2, 1, 6),)
        )
    return SystemProfile(
        n,
        compute=ComputeProfile(
            step_ms=5.0, jitter_sigma=0.3, straggler_prob=0.2, straggler_slowdown=4.0
        ),
        links=LinkProfile(random_latency_s=(1e-4, 1e-2), random_bandwidth_bytes_per_s=(1e7, 1e9)),
        failures=failures,
        seed=5,
    )


def steps(clock: SystemClock, k: int) -> None:
    for _ in range(k):
        clock.begin_step()
        clock.compute()


def assert_invariant(clock: SystemClock) -> None:
    total = clock.compute_s + clock.comm_s + clock.idle_s + clock.absent_s
    torch.testing.assert_close(total, clock.t, rtol=1e-12, atol=1e-15)


def assert_same(a: SystemClock, b: SystemClock, names: tuple[str, ...] = SPLITS) -> None:
    for name in names:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


# ---------------------------------------------------------------------------- the overlap
@pytest.mark.parametrize("tau", [0, 1, 3, 8, 9, 10, 14])
def test_waiting_tau_steps_later_costs_max_of_zero_and_d_minus_tau_c(tau: int) -> None:
    overlapped, alone = SystemClock(dyadic()), SystemClock(dyadic())
    assert overlapped._network.allreduce_time_s(BYTES, N) == D
    for clock in (overlapped, alone):
        steps(clock, 1)
    h = overlapped.all_reduce_start(BYTES)
    assert torch.equal(overlapped.t, alone.t)  # the post costs nothing
    for clock in (overlapped, alone):
        steps(clock, tau)
    overlapped.wait(h)
    extra = overlapped.t - alone.t
    assert extra.tolist() == [max(0.0, D - tau * C)] * N  # exact
    assert overlapped.comm_s.tolist() == [max(0.0, D - tau * C)] * N  # waited on the wire
    assert overlapped.idle_s.tolist() == [0.0] * N
    assert_invariant(overlapped)
    assert overlapped.in_flight == ()


def test_hand_computed_splits_with_a_straggler() -> None:
    """Worker 3 at half speed (0.5 s steps). Post after step 1: t = [.25, .25, .25, .5], so
    S = .5 and F = 2.75. Waited at once: the three fast workers idle .25 then communicate d;
    waited one step later (t = [.5, .5, .5, 1]): they communicate d (no idle: they are at S),
    worker 3 only F - 1 = 1.75."""
    now, later = (
        SystemClock(dyadic(speed=(1, 1, 1, 0.5))),
        SystemClock(dyadic(speed=(1, 1, 1, 0.5))),
    )
    for clock in (now, later):
        steps(clock, 1)
    now.wait(now.all_reduce_start(BYTES))
    assert now.t.tolist() == [2.75] * N
    assert now.idle_s.tolist() == [0.25, 0.25, 0.25, 0.0]
    assert now.comm_s.tolist() == [D] * N
    h = later.all_reduce_start(BYTES)
    steps(later, 1)
    later.wait(h)
    assert later.t.tolist() == [2.75] * N
    assert later.compute_s.tolist() == [0.5, 0.5, 0.5, 1.0]
    assert later.comm_s.tolist() == [D, D, D, 1.75]
    assert later.idle_s.tolist() == [0.0] * N
    for clock in (now, later):
        assert_invariant(clock)


@pytest.mark.parametrize("churn", [False, True], ids=["all-present", "churn"])
def test_a_wait_right_after_the_post_is_the_blocking_all_reduce_bit_for_bit(churn: bool) -> None:
    """Jitter, stragglers, random links (and churn): ``wait(all_reduce_start(b))`` is
    ``all_reduce(b)`` for every time, split, counter and draw, step after step, among
    gossip rounds (pre-gradient ones held over the post included)."""
    topo = torus(3, 4)
    blocking, posted = SystemClock(rough(churn=churn)), SystemClock(rough(churn=churn))
    for k in range(30):
        for clock in (blocking, posted):
            clock.begin_step()
            src, dst = graph_edges(topo.at(k))
            up = clock.surviving_edges(src, dst)
            clock.gossip(src[up], dst[up], 3e5, pre_gradient=True)
            if k % 3 == 0:
                if clock is blocking:
                    clock.all_reduce(1e6 + k)
                else:
                    clock.wait(clock.all_reduce_start(1e6 + k))
            clock.compute()
            clock.gossip(src[up], dst[up], 2e5)
            if k % 2 == 1:
                if clock is blocking:
                    clock.all_reduce(4e6)
                else:
                    clock.wait(clock.all_reduce_start(4e6))
        assert_same(blocking, posted, (*SPLITS, "present"))
    assert blocking.rounds == posted.rounds
    assert blocking._generator.get_state().equal(posted._generator.get_state())
    assert not bool((blocking.idle_s == 0).all())  # the barriers did wait
    if churn:
        assert float(blocking.absent_s.sum()) > 0
    assert_invariant(posted)


def test_two_in_flight_queue_on_the_collective_stream() -> None:
    """Post A after step 1 (t = .25: F_A = 2.5) and B after step 2 (t = .5): B starts when A
    ends, F_B = 4.75. Waited for in either order: every worker ends at 4.75; a blocking
    all-reduce posted while A is in flight also starts after A."""
    for order in ("BA", "AB"):
        clock = SystemClock(dyadic())
        steps(clock, 1)
        a = clock.all_reduce_start(BYTES)
        steps(clock, 1)
        b = clock.all_reduce_start(BYTES)
        assert clock.in_flight == (a, b)
        assert clock.coll_free.tolist() == [2.5 + D] * N
        steps(clock, 1)  # t = .75
        for h in ({"A": a, "B": b}[c] for c in order):
            clock.wait(h)
        assert clock.t.tolist() == [4.75] * N
        assert clock.comm_s.tolist() == [4.75 - 0.75] * N  # A's wire time, then B's
        assert clock.idle_s.tolist() == [0.0] * N
        assert_invariant(clock)
    clock = SystemClock(dyadic())
    steps(clock, 1)
    a = clock.all_reduce_start(BYTES)
    clock.all_reduce(BYTES)  # queued after A: 2.5 + d
    assert clock.t.tolist() == [2.5 + D] * N
    assert clock.comm_s.tolist() == [2.5 + D - 0.25] * N
    clock.wait(a)  # long done
    assert clock.t.tolist() == [2.5 + D] * N
    assert_invariant(clock)


def test_under_churn_the_members_are_the_workers_present_at_the_post() -> None:
    """Worker 2 is away in steps 0..1: the post of step 0 is a 3-worker ring (d3 =
    4 * .125 + 4/3 s), it waits for none of worker 2's time; worker 2 is not held at a wait
    it is absent for, and waits at one after its return."""
    profile = SystemProfile(
        N,
        compute=ComputeProfile(step_ms=250.0, speed=(1, 1, 0.5, 1)),
        links=LinkProfile(0.125, 2.0**20),
        failures=FailureProfile(offline=(OfflineInterval(2, 0, 2),)),
    )
    clock = SystemClock(profile)
    steps(clock, 1)
    h = clock.all_reduce_start(BYTES)
    d3 = clock._network.allreduce_time_s(BYTES, 3)
    steps(clock, 1)  # worker 2 still away
    clock.wait(h)
    assert clock.t.tolist() == [0.25 + d3, 0.25 + d3, 0.25, 0.25 + d3]
    steps(clock, 1)  # worker 2 is back: joins the earliest present time
    h = clock.all_reduce_start(BYTES)
    clock.wait(h)
    assert clock.t.tolist() == [0.5 + d3 + D] * N
    assert_invariant(clock)


def test_waiting_twice_or_for_an_unknown_handle_is_a_one_line_error() -> None:
    clock = SystemClock(dyadic())
    steps(clock, 1)
    h = clock.all_reduce_start(BYTES)
    clock.wait(h)
    for bad in (h, h + 1):
        with pytest.raises(ValueError, match=f"no all-reduce with handle {bad} is in flight") as e:
            clock.wait(bad)
        assert "\n" not in str(e.value)
    free = clock.all_reduce_start(0)  # no bytes: nothing to wait for, still a handle
    before = clock.t.clone()
    clock.wait(free)
    assert torch.equal(clock.t, before)


# ---------------------------------------------------------------------------- checkpoints
def test_resume_with_a_collective_in_flight_is_bit_exact() -> None:
    clock = SystemClock(rough(churn=True))
    steps(clock, 3)
    a = clock.all_reduce_start(1e6)
    steps(clock, 1)
    b = clock.all_reduce_start(3e6)
    buffer = io.BytesIO()
    torch.save(clock.state_dict(), buffer)

    def rest(c: SystemClock) -> None:
        steps(c, 2)
        c.wait(b)
        steps(c, 1)
        c.wait(a)
        c.wait(c.all_reduce_start(2e6))
        steps(c, 2)

    rest(clock)
    buffer.seek(0)
    resumed = SystemClock(rough(churn=True))
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.in_flight == (a, b)
    rest(resumed)
    assert_same(clock, resumed, (*SPLITS, "coll_free", "present"))
    assert clock.state_dict()["next_handle"] == resumed.state_dict()["next_handle"] == 3
    assert_invariant(resumed)


def test_a_version_1_state_loads_with_nothing_in_flight() -> None:
    clock = SystemClock(rough())
    steps(clock, 2)
    clock.all_reduce(1e6)
    state = clock.state_dict()
    for key in ("coll_free", "in_flight", "next_handle"):
        del state[key]
    state["version"] = 1
    resumed = SystemClock(rough())
    resumed.load_state_dict(state)
    assert resumed.in_flight == () and torch.equal(resumed.t, clock.t)
    assert resumed.coll_free.tolist() == [0.0] * 12


# ---------------------------------------------------------------------------- the engine
def _comm(clock: SystemClock | None) -> SimulatedCommunicator:
    return SimulatedCommunicator(make_topology("ring", N), clock=clock)


def _step(comm: SimulatedCommunicator, k: int) -> None:
    comm.begin_step(k)
    comm.compute()


@pytest.mark.parametrize("tau", [0, 2, 9, 12])
def test_mean_start_then_compute_steps_then_wait_for_on_the_engine(tau: int) -> None:
    """``mean_start`` + tau steps + ``wait_for`` on a communicator with a clock: the clock
    costs ``max(0, d - tau c)`` more than the compute; the blocking ``mean`` costs d; bytes and
    rounds are the same; the mean is the mean."""
    overlapped, blocking = _comm(SystemClock(dyadic())), _comm(SystemClock(dyadic()))
    x = torch.randn(N, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = torch.empty_like(x)
    for comm in (overlapped, blocking):
        _step(comm, 0)
    overlapped.mean_start(x, out=out, message_bytes=int(BYTES))
    mean = blocking.mean(x, message_bytes=int(BYTES))
    for k in range(1, tau + 1):
        for comm in (overlapped, blocking):
            _step(comm, k)
    assert overlapped.wait_for(out) is out and torch.equal(out, mean)
    assert overlapped.clock is not None and blocking.clock is not None
    assert overlapped.clock.t.tolist() == [C + tau * C + max(0.0, D - tau * C)] * N
    assert blocking.clock.t.tolist() == [C + D + tau * C] * N
    assert torch.equal(overlapped.bytes_sent, blocking.bytes_sent)
    assert overlapped.rounds == blocking.rounds == 1
    assert overlapped.simulated_comm_time_s == blocking.simulated_comm_time_s
    assert overlapped.clock.in_flight == ()


def test_synchronize_waits_for_every_posted_mean_and_no_clock_changes_nothing() -> None:
    comm = _comm(SystemClock(dyadic()))
    buf = torch.zeros(N, 6, dtype=F64)
    x = torch.ones(N, 3, dtype=F64)
    _step(comm, 0)
    comm.mean_start(x, out=buf[:, :3], message_bytes=int(BYTES))
    _step(comm, 1)
    comm.mean_start(x, out=buf[:, 3:], message_bytes=int(BYTES))
    comm.mean_start(x, out=torch.empty_like(x), account=False)  # a metric: no clock
    assert comm.clock is not None and len(comm.clock.in_flight) == 2
    with pytest.raises(ValueError, match="still in flight"):
        comm.mean_start(x, out=buf[:, :3])
    comm.synchronize()
    assert comm.clock.in_flight == ()
    assert comm.clock.t.tolist() == [0.25 + 2 * D] * N  # the second queued after the first
    plain = _comm(None)
    plain.mean_start(x, out=buf[:, :3], message_bytes=int(BYTES))
    assert torch.equal(plain.wait_for(buf[:, :3]), torch.ones(N, 3, dtype=F64))
    plain.synchronize()
    assert plain.rounds == 1


# ---------------------------------------------------------------------------- real processes
def test_a_profile_imposed_on_real_processes_overlaps_the_ring_time(tmp_path: Path) -> None:
    """Two gloo processes under a profile with a 0.1 s ring time: ``mean_start`` + an immediate
    ``wait_for`` sleeps it (as the blocking ``mean``); after 1.5x its time of compute the wait
    sleeps nothing; after 0.5x the whole costs about the ring time, not 1.5x. Loose bounds."""
    out = tmp_path / "overlap.pt"
    procs = start_workers(
        [str(HERE / "_overlap_worker.py"), str(out)], 2, cwd=HERE, log_dir=tmp_path
    )
    codes = wait_all(procs, timeout_s=120)
    logs = "\n".join((tmp_path / f"rank{r}.err").read_text()[-2000:] for r in range(2))
    assert codes == [0, 0], f"worker exit codes {codes}\n{logs}"
    got = torch.load(out)
    ring = got["ring_s"]
    assert ring == pytest.approx(0.1, rel=1e-9)
    assert got["equal"] == 1.0
    assert ring <= got["blocking_s"] < ring + 0.08
    assert ring <= got["at_once_s"] < ring + 0.08
    assert got["overlapped_wait_s"] < 0.03
    assert ring <= got["partial_s"] < 1.5 * ring - 0.01
