"""The simulated communicator: mixing equals W @ X, preserves the mean, and counts bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peergrad.comm import (
    NetworkModel,
    SimulatedCommunicator,
    allreduce_bytes,
    apply_mixing,
    worker_dot,
    worker_norm,
    worker_sum,
)
from peergrad.topology import make_topology

NAMES = (
    "ring",
    "torus",
    "exponential",
    "one-peer-exponential",
    "complete",
    "star",
    "erdos-renyi",
    "identity",
)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 2, 5, 8, 12])
def test_mix_equals_dense_product_and_preserves_mean(name: str, n: int) -> None:
    if name == "erdos-renyi" and n < 3:
        pytest.skip("G(n, p) is trivial for n < 3")
    topo = make_topology(name, n, seed=0)
    g = torch.Generator().manual_seed(n)
    X = torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    for k in range(topo.period):
        W = topo.at(k)
        got = apply_mixing(W, X)
        want = torch.tensor(W.dense) @ X.reshape(n, -1)
        torch.testing.assert_close(got.reshape(n, -1), want, rtol=0, atol=1e-12)
        torch.testing.assert_close(got.mean(0), X.mean(0), rtol=0, atol=1e-12)
        assert torch.equal(X, X.clone())  # input untouched below
    comm = SimulatedCommunicator(topo)
    before = X.clone()
    comm.mix(X, topo.at(0))
    assert torch.equal(X, before)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 40),
    d=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    name=st.sampled_from(["ring", "torus", "exponential", "star", "one-peer-exponential"]),
)
def test_mixing_preserves_worker_mean_property(n: int, d: int, seed: int, name: str) -> None:
    topo = make_topology(name, n)
    X = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for k in range(topo.period):
        torch.testing.assert_close(
            apply_mixing(topo.at(k), X).mean(0), X.mean(0), rtol=0, atol=1e-12
        )


def test_sparse_path_used_for_large_non_circulant_graph_scales_with_edges() -> None:
    # A 1024-worker torus mixes a [1024, 2000] buffer without forming an n x n dense product.
    topo = make_topology("torus", 1024)
    W = topo.at(0)
    assert W.shifts is None and not W.is_complete
    X = torch.randn(1024, 2000)
    Y = apply_mixing(W, X)
    sp = W.torch_sparse(X.device, X.dtype)
    assert sp.layout == torch.sparse_csr and sp.values().numel() == 1024 * 5
    torch.testing.assert_close(Y.mean(0), X.mean(0), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "n", "degrees"),
    [
        ("ring", 8, [2] * 8),
        ("exponential", 8, [3] * 8),
        ("complete", 5, [4] * 5),
        ("star", 5, [4, 1, 1, 1, 1]),
        ("one-peer-exponential", 8, [1] * 8),
        ("identity", 4, [0] * 4),
    ],
)
def test_gossip_bytes_are_out_degree_times_message(name: str, n: int, degrees: list[int]) -> None:
    net = NetworkModel(latency_s=0.002, bandwidth_bytes_per_s=1000.0)
    comm = SimulatedCommunicator(make_topology(name, n), network=net)
    x = torch.zeros(n, 10, dtype=torch.float32)  # 40 bytes per message
    comm.mix(x, comm.topology.at(0))
    comm.mix(x, comm.topology.at(1))
    assert comm.bytes_sent.tolist() == [2 * 40.0 * d for d in degrees]
    expected_t = 0.0 if max(degrees) == 0 else 2 * (0.002 + 40 * max(degrees) / 1000.0)
    assert math.isclose(comm.simulated_comm_time_s, expected_t, rel_tol=1e-12)
    assert comm.rounds == 2
    # An explicit (e.g. compressed) message size replaces the dense row size.
    comm.mix(x, comm.topology.at(0), message_bytes=3)
    assert comm.bytes_sent.tolist() == [2 * 40.0 * d + 3 * d for d in degrees]


def test_mean_is_an_allreduce_and_metrics_mean_is_free() -> None:
    net = NetworkModel(latency_s=0.001, bandwidth_bytes_per_s=100.0)
    comm = SimulatedCommunicator(make_topology("ring", 4), network=net)
    x = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    m = comm.mean(x)
    assert m.shape == (4, 2) and torch.equal(m[0], torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert comm.bytes_sent.tolist() == [allreduce_bytes(16, 4)] * 4 == [24.0] * 4
    assert math.isclose(comm.simulated_comm_time_s, 6 * 0.001 + 24 / 100.0)
    comm.mean(x, account=False)
    assert comm.bytes_sent.tolist() == [24.0] * 4 and comm.rounds == 1


def test_shape_errors_name_the_worker_axis() -> None:
    comm = SimulatedCommunicator(make_topology("ring", 4))
    with pytest.raises(ValueError, match="worker axis first with size n = 4"):
        comm.mix(torch.zeros(3, 2), comm.topology.at(0))
    with pytest.raises(ValueError, match="W is 5x5"):
        comm.mix(torch.zeros(4, 2), make_topology("ring", 5).at(0))
    with pytest.raises(ValueError, match="bandwidth"):
        NetworkModel(bandwidth_bytes_per_s=0)
    with pytest.raises(ValueError, match="--latency-ms"):
        NetworkModel.from_ms_gbps(-1, 10)


def test_per_worker_reductions() -> None:
    a = torch.arange(12, dtype=torch.float64).reshape(3, 2, 2)
    b = torch.ones(3, 2, 2, dtype=torch.float64)
    assert worker_sum(a).tolist() == [6.0, 22.0, 38.0]
    assert worker_dot(a, b).tolist() == [6.0, 22.0, 38.0]
    np.testing.assert_allclose(
        worker_norm(a).numpy(), np.linalg.norm(a.numpy().reshape(3, -1), axis=1)
    )


def test_broadcast_copies_one_workers_row_and_is_free() -> None:
    comm = SimulatedCommunicator(make_topology("ring", 4))
    x = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    comm.broadcast(x, src=2)
    assert x.tolist() == [[4.0, 5.0]] * 4 and comm.bytes_sent.sum() == 0
    with pytest.raises(ValueError, match=r"src must be in \[0, 3\]"):
        comm.broadcast(x, src=4)


def test_all_gather_shows_every_payload_and_counts_ring_bytes() -> None:
    from peergrad.comm.base import allgather_bytes

    n, p = 5, 3
    net = NetworkModel(latency_s=1e-3, bandwidth_bytes_per_s=1e6)
    comm = SimulatedCommunicator(make_topology("ring", n), network=net)
    payload = torch.arange(n * p, dtype=torch.float32).reshape(n, p)
    out = comm.all_gather(payload)
    assert out.shape == (n, n, p)
    for i in range(n):
        assert torch.equal(out[i], payload)
    assert out.stride(0) == 0  # an expanded view: no n^2 memory
    assert torch.equal(comm.bytes_sent, torch.full((n,), (n - 1) * p * 4.0, dtype=torch.float64))
    assert allgather_bytes(p * 4, n) == (n - 1) * p * 4
    assert comm.simulated_comm_time_s == pytest.approx((n - 1) * (1e-3 + p * 4 / 1e6))
    comm.all_gather(payload.to(torch.uint8), message_bytes=7)
    assert float(comm.bytes_sent[0]) == (n - 1) * (p * 4 + 7)
    with pytest.raises(ValueError, match="worker axis"):
        comm.all_gather(torch.zeros(n - 1, p))
    one = SimulatedCommunicator(make_topology("complete", 1), network=net)
    one.all_gather(torch.zeros(1, 4))
    assert float(one.bytes_sent[0]) == 0 and one.simulated_comm_time_s == 0.0


@pytest.mark.parametrize(
    ("name", "topology"), [("topk", "ring"), ("qsgd", "star"), ("sign", "torus")]
)
def test_compressed_gossip_sends_the_packed_message_and_mixes_the_decoded_one(
    name: str, topology: str
) -> None:
    """compressed_mix = W @ decompress(msg); each worker is charged out_degree * nbytes, the size
    of the uint8 payload it sends (not the D dense values)."""
    from peergrad.comm import compressed_mix
    from peergrad.compress import make_compressor

    n, d = 9, 40
    topo = make_topology(topology, n)
    comm = SimulatedCommunicator(topo)
    C = make_compressor(name, ratio=0.1, levels=3)
    X = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    msg = C.compress(X, torch.Generator().manual_seed(1), worker_ids=torch.arange(n), n_workers=n)
    got = compressed_mix(comm, C, msg, topo.at(0))
    want = torch.tensor(topo.at(0).dense) @ C.decompress(msg)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    degrees = torch.tensor(topo.at(0).out_degrees, dtype=torch.float64)
    assert C.nbytes(d, torch.float64) < d * 8
    assert torch.equal(comm.bytes_sent, degrees * C.nbytes(d, torch.float64))


def test_mix_with_decode_charges_the_payload_and_mixes_decoded_rows() -> None:
    n = 4
    comm = SimulatedCommunicator(make_topology("ring", n))
    W = comm.topology.at(0)
    payload = torch.arange(n * 3, dtype=torch.uint8).reshape(n, 3)  # 3 bytes per message

    def decode(rows: torch.Tensor) -> torch.Tensor:
        return rows.to(torch.float64).repeat(1, 2)  # [m, 3] -> [m, 6]

    out = comm.mix(payload, W, decode=decode)
    torch.testing.assert_close(out, torch.tensor(W.dense) @ decode(payload), rtol=0, atol=1e-12)
    assert comm.bytes_sent.tolist() == [2 * 3.0] * n
    pending = comm.mix_start(payload, W, decode=decode)
    assert torch.equal(pending.wait(), out)
