"""The asynchronous all-reduce average (issue 28): ``comm.mean_start(x, out=)``,
``comm.wait_for(out)``, ``comm.synchronize()`` on the simulated engine and the segment
communicators. The distributed engine (2 and 4 gloo processes) is checked in
``test_collectives_gloo.py``.

``mean_start`` then ``wait_for`` is ``comm.mean`` bit for bit, charged the same bytes, time and
rounds at the post and the same clock time at the wait (the clock's asynchronous all-reduce:
``test_clock_overlap.py``); x may change after the post; several means may be in flight;
posting into an ``out`` still in flight is an error on both engines; under churn it averages the
present workers, as ``mean``.
"""

from __future__ import annotations

import pytest
import torch

from peergrad.comm import SimulatedCommunicator
from peergrad.comm.segments import PreAveraged, SegmentComm, settle
from peergrad.system import (
    ComputeProfile,
    FailureProfile,
    LinkProfile,
    OfflineInterval,
    SystemClock,
    SystemProfile,
)
from peergrad.topology import make_topology

F64 = torch.float64
N, D = 5, 37


def _x(seed: int = 0, n: int = N, d: int = D) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _comm(clock: SystemClock | None = None) -> SimulatedCommunicator:
    return SimulatedCommunicator(make_topology("ring", N), clock=clock)


def _counters(comm: SimulatedCommunicator) -> tuple:
    clock = None if comm.clock is None else comm.clock.t.clone()
    return comm.bytes_sent.clone(), comm.simulated_comm_time_s, comm.rounds, clock


def _profile() -> SystemProfile:
    return SystemProfile(
        N,
        compute=ComputeProfile(step_ms=3.0),
        links=LinkProfile(1e-3, 1e8),
        failures=FailureProfile(offline=(OfflineInterval(2, 0, 5),)),
    )


def test_mean_start_then_wait_is_mean_bit_for_bit_and_charged_alike() -> None:
    a, b = _comm(SystemClock(_profile())), _comm(SystemClock(_profile()))
    x = _x(1) * 1e3
    for comm in (a, b):
        comm.begin_step(0)
        comm.compute()
    expected = a.mean(x, message_bytes=100).clone()
    out = torch.empty_like(x)
    start = b.clock.t.clone()
    assert b.mean_start(x, out=out, message_bytes=100) is None
    before = _counters(b)  # charged at the post; the clock moves at the wait
    assert torch.equal(before[3], start)
    assert b.wait_for(out) is out
    assert torch.equal(out, expected)
    for got, want in zip(_counters(b), _counters(a), strict=True):
        assert torch.equal(got, want) if isinstance(got, torch.Tensor) else got == want
    assert all(
        torch.equal(p, q) if isinstance(p, torch.Tensor) else p == q
        for p, q in zip(before[:3], _counters(b)[:3], strict=True)
    )
    assert float(a.bytes_sent[0]) == 2 * 3 / 4 * 100  # 4 present workers (worker 2 is away)


def test_under_churn_it_averages_the_present_workers_as_mean() -> None:
    comm = _comm(SystemClock(_profile()))
    comm.begin_step(0)
    x = _x(2)
    out = torch.empty_like(x)
    comm.mean_start(x, out=out)
    present = torch.tensor([True, True, False, True, True])
    expected = x[present].mean(dim=0, keepdim=True).expand_as(x)
    assert torch.equal(comm.wait_for(out), expected)
    metric = torch.empty_like(x)  # account=False (a metric): every worker, as mean
    comm.mean_start(x, out=metric, account=False)
    assert torch.equal(comm.wait_for(metric), x.mean(dim=0, keepdim=True).expand_as(x))


def test_x_may_change_after_the_post_and_out_may_be_x() -> None:
    comm = _comm()
    x = _x(3)
    expected = comm.mean(x, account=False).clone()
    out = torch.empty_like(x)
    comm.mean_start(x, out=out)
    x.mul_(-7.0)  # after the post: does not change the result
    assert torch.equal(comm.wait_for(out), expected)
    y = _x(3)
    comm.mean_start(y, out=y)
    assert torch.equal(comm.wait_for(y), expected)


def test_several_in_flight_and_posting_into_an_out_in_flight_is_an_error() -> None:
    comm = _comm()
    buf = torch.zeros(N, 3 * D, dtype=F64)
    xs = [_x(10 + k) for k in range(3)]
    for k, x in enumerate(xs):
        comm.mean_start(x, out=buf[:, k * D : (k + 1) * D])  # column slices, non-contiguous
    with pytest.raises(ValueError, match="still in flight; call comm.wait_for") as err:
        comm.mean_start(xs[0], out=buf[:, D : 2 * D])  # a fresh view of the same memory
    assert "\n" not in str(err.value)
    for k in (2, 0, 1):  # any order; a fresh view of the same memory finds its mean
        view = buf[:, k * D : (k + 1) * D]
        assert torch.equal(comm.wait_for(view), xs[k].mean(dim=0, keepdim=True).expand_as(view))
    comm.mean_start(xs[0], out=buf[:, :D])  # waited for: may be posted again
    comm.synchronize()
    comm.mean_start(xs[0], out=buf[:, :D])  # synchronize forgets every post
    lone = torch.ones(N, 2, dtype=F64)
    assert comm.wait_for(lone) is lone and torch.equal(lone, torch.ones(N, 2, dtype=F64))


@pytest.mark.parametrize(
    "out",
    [torch.empty(N, D + 1, dtype=F64), torch.empty(N, D), torch.empty(N - 1, D, dtype=F64)],
    ids=["shape", "dtype", "workers"],
)
def test_out_unlike_x_is_a_one_line_error(out: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="mean_start: out must have the shape, dtype") as err:
        _comm().mean_start(_x(), out=out)
    assert "\n" not in str(err.value)


def test_segment_communicators_record_the_mean_and_settle_charges_it_once() -> None:
    base, whole = _comm(), _comm()
    x = _x(4)
    out = torch.empty_like(x)
    segments = [SegmentComm(base), SegmentComm(base)]
    for seg, (a, b) in zip(segments, [(0, 20), (20, D)], strict=True):
        seg.mean_start(x[:, a:b], out=out[:, a:b])
        seg.wait_for(out[:, a:b])
    assert float(base.bytes_sent.sum()) == 0 and [s.ops[0].kind for s in segments] == ["mean"] * 2
    settle(segments, base)
    whole.mean(x)  # the whole buffer's one all-reduce: its bytes and its round
    for a, b in [(0, 20), (20, D)]:
        assert torch.equal(out[:, a:b], whole.mean(x[:, a:b], account=False))
    assert torch.equal(base.bytes_sent, whole.bytes_sent) and base.rounds == whole.rounds == 1
    pre = PreAveraged(base)
    pre.mean_start(x, out=out)  # already averaged: out becomes x, nothing charged
    assert torch.equal(pre.wait_for(out), x) and not pre.ops
