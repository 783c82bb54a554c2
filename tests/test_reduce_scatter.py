"""The reduce-scatter exchange of compressed messages (issue 28) and its all-to-all, on the
simulated engine; engine parity on 2 and 4 gloo processes is in ``test_collectives_gloo.py``.

- ``comm.all_to_all``: row i, slot j is worker j's slot i; each worker is charged its n - 1
  slots, the time of a pairwise exchange, and the clock hears of it; refused under churn;
- ``compressed_mean(..., exchange="reduce-scatter")`` equals a plain per-worker reference of
  the four steps (shard, all-to-all, sum in worker order and divide, re-compress and
  all-gather) bit for bit, costs ``2 (n - 1) nbytes(S)`` per worker, and for int8 stays within
  half a step of the exact average;
- the option is accepted by the compressed methods; bad combinations are one-line errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from _helpers import run_quadratics
from peergrad.algorithms import make_algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.comm.compressed import (
    EXCHANGES,
    check_exchange,
    compressed_mean,
    reduce_scatter_mean,
    shard_width,
)
from peergrad.compress import Compressor, Contraction, Layerwise, TopK, make_compressor
from peergrad.system import (
    FailureProfile,
    LinkProfile,
    NetworkModel,
    OfflineInterval,
    SystemClock,
    SystemProfile,
)
from peergrad.system.network import alltoall_bytes
from peergrad.topology import make_topology

F64, F32 = torch.float64, torch.float32
#: compressor name -> options of make_compressor (small chunks: several per shard)
CASES = {
    "identity": {},
    "topk": {"ratio": 0.2},
    "int8": {"chunk": 4},
    "int4": {"chunk": 4},
    "bf16": {},
    "fp16": {},
    "sign": {},
    "scaled-sign": {},
}


def _comm(n: int, clock: SystemClock | None = None) -> SimulatedCommunicator:
    return SimulatedCommunicator(make_topology("ring", n), clock=clock)


def _x(n: int, d: int, dtype: torch.dtype = F64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def reference(c: Compressor, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """The exchange written worker by worker, shard by shard (no communicator): ``[D]``."""
    n, D = x.shape
    S = math.ceil(math.ceil(D / n) / c.alignment) * c.alignment
    padded = torch.cat([x, x.new_zeros(n, n * S - D)], dim=1)

    def code(rows, ids, count):
        msg = c.compress(rows, gen, worker_ids=torch.tensor(ids), n_workers=count)
        payload = c.pack(msg)
        assert payload.shape[1] == c.nbytes(S, x.dtype)
        return payload

    sent = code(padded.reshape(n * n, S), list(range(n * n)), n * n).reshape(n, n, -1)
    averaged = []
    for j in range(n):  # owner j: the n messages of shard j, in worker order
        parts = [c.decompress(c.unpack(sent[i, j : j + 1], S, x.dtype))[0] for i in range(n)]
        acc = parts[0].clone()
        for part in parts[1:]:
            acc += part
        averaged.append(acc / n)
    back = code(torch.stack(averaged), list(range(n)), n)
    shards = [c.decompress(c.unpack(back[j : j + 1], S, x.dtype))[0] for j in range(n)]
    return torch.cat(shards)[:D]


# ------------------------------------------------------------------ all-to-all
def test_all_to_all_transposes_and_is_charged_as_a_pairwise_exchange() -> None:
    n, P = 4, 6
    links = LinkProfile(2e-3, 1e6)
    comm = _comm(n, SystemClock(SystemProfile(n, links=links)))
    payload = torch.arange(n * n * P, dtype=torch.uint8).reshape(n, n, P)
    out = comm.all_to_all(payload)
    for i in range(n):
        for j in range(n):
            assert torch.equal(out[i, j], payload[j, i])
    network = NetworkModel(2e-3, 1e6)
    assert comm.network == network
    assert comm.bytes_sent.tolist() == [(n - 1) * P] * n == [alltoall_bytes(P, n)] * n
    time_s = (n - 1) * (2e-3 + P / 1e6)
    assert comm.simulated_comm_time_s == network.alltoall_time_s(P, n) == pytest.approx(time_s)
    assert comm.clock is not None and comm.clock.t.tolist() == [network.alltoall_time_s(P, n)] * n
    assert comm.rounds == 1 and comm.clock.rounds == 1
    comm.all_to_all(payload, message_bytes=100, account=True)
    assert comm.bytes_sent.tolist() == [(n - 1) * (P + 100)] * n
    comm.all_to_all(payload, account=False)
    assert comm.rounds == 2 and alltoall_bytes(P, 1) == 0 and network.alltoall_time_s(P, 1) == 0


def test_all_to_all_bad_payload_and_churn_are_one_line_errors() -> None:
    comm = _comm(3)
    for bad in (torch.zeros(3, 4), torch.zeros(3, 2, 4), torch.zeros(2, 3, 4)):
        with pytest.raises(ValueError, match="all_to_all") as err:
            comm.all_to_all(bad)
        assert "\n" not in str(err.value)
    away = SystemProfile(3, failures=FailureProfile(offline=(OfflineInterval(1, 0, 2),)))
    churned = _comm(3, SystemClock(away))
    churned.begin_step(0)
    with pytest.raises(ValueError, match="all_to_all needs every worker, but some are absent"):
        churned.all_to_all(torch.zeros(3, 3, 4))
    with pytest.raises(ValueError, match="all_to_all needs every worker"):
        c = make_compressor("int8")
        compressed_mean(churned, c, c.compress(_x(3, 10)), exchange="reduce-scatter")


# ------------------------------------------------------------------ reduce-scatter
def test_shard_width_rounds_up_to_the_alignment() -> None:
    assert shard_width(10, 4) == 3 and shard_width(12, 4) == 3 and shard_width(3, 4) == 1
    assert shard_width(100, 3, 8) == 40 and shard_width(1, 8, 64) == 64


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("name", list(CASES))
def test_equals_the_per_worker_reference_and_costs_two_shard_phases(
    name: str, n: int, dtype: torch.dtype
) -> None:
    c = make_compressor(name, **CASES[name])
    D = 23
    x = _x(n, D, dtype, seed=n) * 3
    comm = _comm(n)
    out = reduce_scatter_mean(comm, c, x)
    expected = reference(c, x)
    assert out.shape == (n, D) and out.dtype == dtype
    for i in range(n):
        assert torch.equal(out[i], expected), i
    S = shard_width(D, n, c.alignment)
    assert comm.bytes_sent.tolist() == [2 * (n - 1) * c.nbytes(S, dtype)] * n
    assert comm.rounds == 2
    net = comm.network
    P = c.nbytes(S, dtype)
    assert comm.simulated_comm_time_s == net.alltoall_time_s(P, n) + net.allgather_time_s(P, n)


@pytest.mark.parametrize("name", ["qsgd", "randomk", "terngrad"])
def test_random_compressors_draw_from_the_given_generator(name: str) -> None:
    c = make_compressor(name, ratio=0.3, levels=3)
    n, x = 3, _x(3, 20)
    first = reduce_scatter_mean(_comm(n), c, x, generator=torch.Generator().manual_seed(5))
    again = reduce_scatter_mean(_comm(n), c, x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    assert torch.equal(first[0], reference(c, x, torch.Generator().manual_seed(5)))
    other = reduce_scatter_mean(_comm(n), c, x, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(first, other)


def test_identity_is_the_exact_average_also_with_more_workers_than_values() -> None:
    for n, D in ((4, 3), (5, 40)):
        x = _x(n, D, seed=D)
        out = reduce_scatter_mean(_comm(n), make_compressor("identity"), x)
        torch.testing.assert_close(out, x.mean(0, keepdim=True).expand(n, D), rtol=0, atol=1e-15)
    one, int8 = _x(1, 9), make_compressor("int8")
    assert torch.equal(reduce_scatter_mean(_comm(1), int8, one), int8(int8(one)))  # n = 1


@pytest.mark.parametrize("bits", [8, 4])
def test_int_quantization_stays_within_half_a_step_of_the_exact_average(bits: int) -> None:
    """Phase 1 sends the decoded messages unchanged (``C(C(x)) == C(x)``), so the result is
    ``C(mean_i C(x_i))``: within half a step of the average of the decoded messages, which
    the all-gather exchange computes exactly."""
    n, D, chunk = 4, 50, 8
    c = make_compressor(f"int{bits}", chunk=chunk)
    x = _x(n, D, seed=bits)
    msg = c.compress(x)
    exact = compressed_mean(_comm(n), c, msg, exchange="allgather")[0]
    got = compressed_mean(_comm(n), c, msg, exchange="reduce-scatter")[0]
    S = shard_width(D, n, chunk)
    padded = torch.cat([exact, exact.new_zeros(n * S - D)])
    m = padded.abs().reshape(-1, chunk).amax(dim=1).repeat_interleave(chunk)[:D]
    assert bool(((got - exact).abs() <= m / (2 * c.qmax) * (1 + 1e-6)).all())
    assert float((got - exact).abs().max()) > 0


def test_out_receives_the_result_for_every_exchange() -> None:
    n, D = 3, 17
    x = _x(n, D)
    for name, exchange in (("int8", "reduce-scatter"), ("topk", "allgather"), ("randomk", "auto")):
        c = make_compressor(name, ratio=0.3)
        msg = c.compress(x, torch.Generator().manual_seed(1))
        plain = compressed_mean(_comm(n), c, msg, exchange=exchange).clone()
        out = torch.full((n, D), float("nan"), dtype=F64)
        assert compressed_mean(_comm(n), c, msg, exchange=exchange, out=out) is out
        assert torch.equal(out, plain)


def test_bad_combinations_are_one_line_errors() -> None:
    assert EXCHANGES == ("auto", "allreduce", "allgather", "reduce-scatter")
    bad = [
        (Layerwise(TopK(ratio=0.1), (5, 5)), "cannot be cut so"),
        (Contraction(make_compressor("randomk")), "cannot be cut so"),
        (make_compressor("qsgd"), "random compressor 'qsgd' would need a generator"),
        (make_compressor("randomk"), "random compressor 'randomk' would need a generator"),
    ]
    for c, message in bad:
        with pytest.raises(ValueError, match=message) as err:
            check_exchange("reduce-scatter", c)
        assert "\n" not in str(err.value)
    check_exchange("reduce-scatter", make_compressor("qsgd"), generator=True)
    with pytest.raises(ValueError, match="would need a generator"):
        reduce_scatter_mean(_comm(2), make_compressor("terngrad"), _x(2, 4))
    with pytest.raises(ValueError, match="x must be"):
        reduce_scatter_mean(_comm(2), make_compressor("int8"), torch.zeros(2, 3, 4))


def test_compressed_methods_accept_the_exchange_and_pay_two_shard_phases() -> None:
    n, d, steps = 4, 10, 6
    for name in ("ef-sgd", "compressed-sgd"):
        alg = make_algorithm(name, lr=0.05, compressor="int8", exchange="reduce-scatter")
        x, _, comm = run_quadratics(alg, n=n, d=d, steps=steps)
        P = make_compressor("int8").nbytes(shard_width(d, n, 64), F64)
        assert comm.bytes_sent.tolist() == [steps * 2 * (n - 1) * P] * n
        assert bool(torch.isfinite(x).all()) and torch.equal(x, x[:1].expand_as(x))
        with pytest.raises(ValueError, match="would need a generator"):
            make_algorithm(name, compressor="qsgd", exchange="reduce-scatter")
    with pytest.raises(ValueError, match="choco-sgd gossips"):
        make_algorithm("choco-sgd", compressor="int8", exchange="reduce-scatter")
