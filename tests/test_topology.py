"""Tests of peergrad.topology against spec ``decentralized.md`` §2 (tests §2.4 items 1–7)."""

from __future__ import annotations

import json
import math

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peergrad.topology import (
    TOPOLOGIES,
    MixingMatrix,
    SpectralInfo,
    Topology,
    circulant_shifts,
    complete,
    erdos_renyi,
    exponential,
    from_adjacency,
    from_matrix,
    from_networkx,
    identity,
    lazy,
    make_topology,
    metropolis_hastings,
    one_peer_exponential,
    ring,
    star,
    torus,
    torus_shape,
    uniform_weights,
    validate_mixing_matrix,
)

SIZES = (1, 2, 3, 5, 8, 12, 16)
CONNECTED = tuple(name for name in TOPOLOGIES if name != "identity")


def _log2_ceil(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def _all_matrices(topo: Topology) -> list[np.ndarray]:
    return [m.dense for m in topo.matrices]


# ------------------------------------------------------------------ independent edge lists
def _expected_in_edges(name: str, n: int, k: int = 0) -> set[tuple[int, int]]:
    """Directed edges (i, j), j != i, meaning "i receives from j", built independently."""
    edges: set[tuple[int, int]] = set()

    def add(i: int, j: int) -> None:
        if i != j:
            edges.add((i, j))

    if name == "ring":
        for i in range(n):
            add(i, (i + 1) % n)
            add(i, (i - 1) % n)
    elif name == "torus":
        rows, cols = torus_shape(n)
        for r in range(rows):
            for c in range(cols):
                i = r * cols + c
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    add(i, ((r + dr) % rows) * cols + (c + dc) % cols)
    elif name == "exponential":
        for i in range(n):
            for m in range(_log2_ceil(n)):
                add(i, (i - 2**m) % n)
    elif name == "one-peer-exponential":
        tau = max(1, _log2_ceil(n))
        s = 2 ** (k % tau)
        for i in range(n):
            add(i, (i - s) % n)
    elif name == "complete":
        for i in range(n):
            for j in range(n):
                add(i, j)
    elif name == "star":
        for leaf in range(1, n):
            add(0, leaf)
            add(leaf, 0)
    elif name == "erdos-renyi":
        # spec §2.3 recipe, re-implemented here as an oracle
        rng = np.random.default_rng(0)
        while True:
            U = rng.random((n, n))
            A = np.zeros((n, n))
            for i in range(n):
                for j in range(i + 1, n):
                    if U[i, j] < 0.3:
                        A[i, j] = A[j, i] = 1.0
            L = np.diag(A.sum(1)) - A
            if n == 1 or np.linalg.eigvalsh(L)[1] > 1e-9:
                break
        for i, j in zip(*np.nonzero(A), strict=True):
            add(int(i), int(j))
    elif name == "identity":
        pass
    else:  # pragma: no cover
        raise AssertionError(name)
    return edges


# ------------------------------------------------------------------ §2.4 test 1
@pytest.mark.parametrize("name", TOPOLOGIES)
@pytest.mark.parametrize("n", SIZES)
def test_doubly_stochastic_nonnegative_and_sparsity(name: str, n: int) -> None:
    topo = make_topology(name, n)
    assert topo.n == n
    for k, m in enumerate(topo.matrices):
        W = m.dense
        assert W.dtype == np.float64 and W.shape == (n, n)
        np.testing.assert_allclose(W.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(W.sum(axis=0), 1.0, rtol=0, atol=1e-12)
        assert np.all(W >= 0)
        support = {(int(i), int(j)) for i, j in zip(*np.nonzero(W > 0), strict=True) if i != j}
        assert support == _expected_in_edges(name, n, k)
        assert m.num_edges == len(support)
        assert np.all(np.diag(W) > 0)
        for i in range(n):
            assert [j for j, _ in m.in_neighbors(i)] == sorted(j for a, j in support if a == i)
            assert [j for j, _ in m.out_neighbors(i)] == sorted(a for a, j in support if j == i)
            assert m.self_weight(i) == W[i, i]


def test_dense_is_read_only_copy() -> None:
    W = np.full((3, 3), 1.0 / 3.0)
    m = MixingMatrix(W)
    W[0, 0] = 5.0
    assert m.dense[0, 0] == pytest.approx(1.0 / 3.0)
    with pytest.raises(ValueError):
        m.dense[0, 0] = 1.0


def test_specific_weights() -> None:
    np.testing.assert_array_equal(ring(1).at(0).dense, [[1.0]])
    np.testing.assert_array_equal(ring(2).at(0).dense, [[0.5, 0.5], [0.5, 0.5]])
    W = ring(6).at(0).dense
    np.testing.assert_allclose(W[2, [1, 2, 3]], 1.0 / 3.0, rtol=0, atol=1e-15)
    S = star(5).at(0).dense
    assert S[0, 0] == pytest.approx(1 / 5) and S[0, 3] == pytest.approx(1 / 5)
    assert S[3, 3] == pytest.approx(1 - 1 / 5)
    T = torus(3, 4).at(0).dense
    np.testing.assert_allclose(T[T > 0], 0.2, rtol=0, atol=1e-15)
    T = torus(2, 4).at(0).dense
    np.testing.assert_allclose(T[T > 0], 0.25, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(exponential(1).at(0).dense, [[1.0]])
    assert complete(4).at(0).is_complete and not ring(4).at(0).is_complete
    np.testing.assert_array_equal(identity(4).at(0).dense, np.eye(4))


# ------------------------------------------------------------------ §2.4 test 2
@pytest.mark.parametrize("name", ["ring", "torus", "complete", "star", "erdos-renyi", "identity"])
@pytest.mark.parametrize("n", SIZES)
def test_symmetric_topologies(name: str, n: int) -> None:
    topo = make_topology(name, n)
    W = topo.at(0).dense
    np.testing.assert_array_equal(W, W.T)
    assert topo.at(0).symmetric and not topo.directed


@pytest.mark.parametrize("n", [5, 6, 8, 12, 16, 33])
def test_exponential_is_directed_but_doubly_stochastic(n: int) -> None:
    topo = exponential(n)
    W = topo.at(0).dense
    assert not np.allclose(W, W.T)
    assert topo.directed and not topo.at(0).symmetric
    np.testing.assert_allclose(W.sum(0), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(W.sum(1), 1.0, rtol=0, atol=1e-12)
    info = topo.spectral()
    assert info.lambda_2 is None and info.lambda_n is None


# ------------------------------------------------------------------ §2.4 test 3
@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(TOPOLOGIES),
    n=st.integers(min_value=1, max_value=40),
    d=st.integers(min_value=1, max_value=4),
    k=st.integers(min_value=0, max_value=7),
    lazy_=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_gossip_preserves_mean(name: str, n: int, d: int, k: int, lazy_: bool, seed: int) -> None:
    topo = make_topology(name, n, lazy=lazy_)
    X = np.random.default_rng(seed).normal(scale=10.0, size=(n, d))
    m = topo.at(k)
    Y = m.dense @ X
    np.testing.assert_allclose(Y.mean(axis=0), X.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.mix(X).mean(axis=0), X.mean(axis=0), rtol=0, atol=1e-12)


# ------------------------------------------------------------------ §2.4 test 4: §2.3 table
TABLE = {
    # n: ring, torus, exponential, one-peer W(0), star, erdos-renyi (p=0.3, seed 0)
    8: (0.1953, 0.5000, 0.5000, 0.0761, 0.1250, 0.1521),
    16: (0.0507, 0.4000, 0.4000, 0.0192, 0.0625, 0.1615),
    32: (0.0128, 0.1172, 0.3333, 0.0048, 0.03125, 0.3088),
    64: (0.0032, 0.1172, 0.2857, 0.0012, 0.0156, 0.4487),
}
TABLE_COLUMNS = ("ring", "torus", "exponential", "one-peer-exponential", "star", "erdos-renyi")


@pytest.mark.parametrize("n", sorted(TABLE))
@pytest.mark.parametrize("column", range(len(TABLE_COLUMNS)))
def test_reference_table(n: int, column: int) -> None:
    name = TABLE_COLUMNS[column]
    topo = (
        make_topology(name, n, seed=0, p=0.3) if name == "erdos-renyi" else make_topology(name, n)
    )
    info = topo.spectral()
    assert info.spectral_gap == pytest.approx(TABLE[n][column], abs=1e-4)
    assert info.rho == pytest.approx(1.0 - TABLE[n][column], abs=1e-4)


def test_reference_table_extras() -> None:
    assert torus_shape(8) == (2, 4) and torus_shape(16) == (4, 4)
    assert torus_shape(32) == (4, 8) and torus_shape(64) == (8, 8) and torus_shape(7) == (1, 7)
    assert ring(8).spectral().lambda_2 == pytest.approx(0.8047, abs=1e-4)
    assert erdos_renyi(8, 0.3, 0).spectral().rho == pytest.approx(0.8479, abs=1e-4)
    assert one_peer_exponential(8).spectral().rho == pytest.approx(math.cos(math.pi / 8))
    assert complete(10).spectral().rho == pytest.approx(0.0, abs=1e-12)
    assert make_topology("torus", 8).name == "torus-2x4"


# ------------------------------------------------------------------ closed forms (§2.3)
@pytest.mark.parametrize("n", [3, 4, 5, 8, 9, 16, 31])
def test_ring_closed_form(n: int) -> None:
    info = ring(n).spectral()
    assert info.lambda_2 == pytest.approx((1 + 2 * math.cos(2 * math.pi / n)) / 3, abs=1e-12)
    if n % 2 == 0:
        assert info.lambda_n == pytest.approx(-1.0 / 3.0, abs=1e-12)
    assert info.rho == pytest.approx(max(abs(info.lambda_2), abs(info.lambda_n)), abs=1e-12)


@pytest.mark.parametrize("m", [3, 4, 5, 8])
def test_square_torus_closed_form(m: int) -> None:
    info = torus(m, m).spectral()
    assert info.lambda_2 == pytest.approx((3 + 2 * math.cos(2 * math.pi / m)) / 5, abs=1e-12)


@pytest.mark.parametrize("n", [2, 4, 6, 8, 10, 12, 16, 24, 32, 48, 64])
def test_static_exponential_closed_form(n: int) -> None:
    tau = _log2_ceil(n)
    assert exponential(n).spectral().spectral_gap == pytest.approx(2 / (1 + tau), abs=1e-10)


def test_exponential_odd_values() -> None:
    assert exponential(7).spectral().spectral_gap == pytest.approx(0.646, abs=1e-3)
    assert exponential(9).spectral().spectral_gap == pytest.approx(0.558, abs=1e-3)


@pytest.mark.parametrize("n", [3, 5, 8, 13, 20])
def test_star_gap_and_complete(n: int) -> None:
    assert star(n).spectral().spectral_gap == pytest.approx(1.0 / n, abs=1e-12)
    assert complete(n).spectral().spectral_gap == pytest.approx(1.0, abs=1e-12)


def test_star_two_nodes_is_complete() -> None:
    # hub-leaf 1/n = 1/2 and hub self 1/2: W = J, so the gap is 1 (not 1/n) for n = 2
    assert star(2).at(0).is_complete


# ------------------------------------------------------------------ §2.4 test 5
@pytest.mark.parametrize("n", [8, 16, 32, 64])
def test_one_peer_product_is_exact_average(n: int) -> None:
    topo = one_peer_exponential(n)
    assert topo.period == _log2_ceil(n) and topo.time_varying
    P = np.eye(n)
    for k in range(topo.period):
        P = topo.at(k).dense @ P
    np.testing.assert_allclose(P, np.full((n, n), 1.0 / n), rtol=0, atol=1e-12)
    assert topo.period_product_rho() == pytest.approx(0.0, abs=1e-12)
    # any window of `period` consecutive rounds works, not just 0..period-1
    P = np.eye(n)
    for k in range(3, 3 + topo.period):
        P = topo.at(k).dense @ P
    np.testing.assert_allclose(P, np.full((n, n), 1.0 / n), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [6, 10, 12, 24, 48])
def test_one_peer_product_not_average_otherwise(n: int) -> None:
    rho = one_peer_exponential(n).period_product_rho()
    assert 0.15 < rho < 0.25


@pytest.mark.parametrize("n", [4, 6, 8, 12, 16, 64])
def test_one_peer_single_round_disconnected_for_even_n(n: int) -> None:
    topo = one_peer_exponential(n)
    assert topo.at(1).spectral().rho == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="not connected"):
        validate_mixing_matrix(topo.at(1).dense)


# ------------------------------------------------------------------ §2.4 test 6
@pytest.mark.parametrize(
    "name,n", [("ring", 8), ("ring", 9), ("torus", 16), ("star", 6), ("erdos-renyi", 12)]
)
def test_repeated_gossip_converges_at_rate_lambda(name: str, n: int) -> None:
    m = make_topology(name, n).at(0)
    W = m.dense
    lam = m.spectral().rho
    evals, evecs = np.linalg.eigh(W)
    # slowest mode: the eigenvector whose eigenvalue has the largest modulus below 1
    order = np.argsort(np.abs(evals))
    slow = evecs[:, order[-2]]
    assert abs(evals[order[-2]]) == pytest.approx(lam, abs=1e-12)
    X = np.random.default_rng(1).normal(size=(n, 3))
    X_slow = np.outer(slow, [1.0, -2.0, 0.5])
    for X0 in (X, X_slow):
        dev0 = np.linalg.norm(X0 - X0.mean(axis=0))
        Xk = X0.copy()
        for k in range(1, 40):
            Xk = W @ Xk
            dev = np.linalg.norm(Xk - X0.mean(axis=0))
            assert dev <= lam**k * dev0 * (1 + 1e-9) + 1e-13
    # on the slowest mode the rate is attained exactly
    Xk = np.linalg.matrix_power(W, 10) @ X_slow
    ratio = np.linalg.norm(Xk - X_slow.mean(axis=0)) / np.linalg.norm(X_slow)
    assert ratio == pytest.approx(lam**10, rel=1e-8)


def test_repeated_gossip_directed_rate() -> None:
    m = exponential(12).at(0)
    rho = m.spectral().rho
    X0 = np.random.default_rng(2).normal(size=(12, 4))
    Xk = X0.copy()
    for k in range(1, 30):
        Xk = m.mix(Xk)
        assert np.linalg.norm(Xk - X0.mean(0)) <= rho**k * np.linalg.norm(X0 - X0.mean(0)) + 1e-13


# ------------------------------------------------------------------ §2.4 test 7 (orientation)
@pytest.mark.parametrize("n", [2, 3, 5, 8, 12, 16, 17])
def test_orientation(n: int) -> None:
    tau = max(1, _log2_ceil(n))
    topo = one_peer_exponential(n)
    for k in range(2 * tau + 1):
        s = 2 ** (k % tau)
        W = topo.at(k).dense
        for i in range(n):
            assert W[i, (i - s) % n] == pytest.approx(0.5 if s % n else 1.0, abs=1e-15)
            if s % n and n > 2:
                assert W[i, (i + s) % n] == 0.0 or (2 * s) % n == 0
    t = _log2_ceil(n)
    W = exponential(n).at(0).dense
    for i in range(n):
        for m in range(t):
            assert W[i, (i - 2**m) % n] == pytest.approx(1.0 / (t + 1), abs=1e-15)
        assert W[i, i] == pytest.approx(1.0 / (t + 1), abs=1e-15)
    m0 = exponential(8).at(0)
    assert [j for j, _ in m0.in_neighbors(0)] == [4, 6, 7]  # 0 - 1, 0 - 2, 0 - 4 mod 8
    assert [j for j, _ in m0.out_neighbors(0)] == [1, 2, 4]


def test_orientation_transposed_fails() -> None:
    """A transposed exponential graph is a valid mixing matrix but has the wrong orientation."""
    W = exponential(8).at(0).dense
    WT = W.T
    validate_mixing_matrix(WT)
    assert WT[0, 7] == 0.0 and W[0, 7] == pytest.approx(0.25)


# ------------------------------------------------------------------ validation errors
def test_validation_non_square() -> None:
    with pytest.raises(ValueError, match=r"must be square, got shape \(3, 4\)"):
        validate_mixing_matrix(np.ones((3, 4)) / 4)
    with pytest.raises(ValueError, match="must be square"):
        MixingMatrix(np.ones(3))


def test_validation_negative_entry() -> None:
    W = np.full((3, 3), 1.0 / 3.0)
    W[1, 2] = -0.1
    W[1, 1] += 0.1 + 1.0 / 3.0 - 1.0 / 3.0
    with pytest.raises(ValueError, match=r"W\[1, 2\] = -0\.1 is negative; entries must be >= 0"):
        validate_mixing_matrix(W)


def test_validation_row_sum() -> None:
    W = np.full((4, 4), 0.25)
    W[3, 0] = 0.15
    with pytest.raises(ValueError, match=r"row 3 of W sums to 0\.9; rows must sum to 1"):
        validate_mixing_matrix(W)


def test_validation_column_sum() -> None:
    W = np.array([[0.5, 0.5, 0.0], [0.3, 0.4, 0.3], [0.4, 0.0, 0.6]])
    with pytest.raises(ValueError, match=r"column 0 of W sums to 1\.2; columns must sum to 1"):
        validate_mixing_matrix(W)
    validate_mixing_matrix(W, doubly_stochastic=False)  # rows are fine


def test_validation_not_connected() -> None:
    W = np.zeros((6, 6))
    W[:4, :4] = 0.25
    W[4:, 4:] = 0.5
    with pytest.raises(ValueError, match=r"nodes \{4, 5\} cannot be reached from node 0"):
        validate_mixing_matrix(W)
    validate_mixing_matrix(W, require_connected=False)
    # reachable from 0 but 0 not reachable from node 2: not strongly connected
    D = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"node 0 cannot be reached from nodes \{1, 2\}"):
        validate_mixing_matrix(D, doubly_stochastic=False)


def test_validation_non_finite() -> None:
    W = np.full((2, 2), 0.5)
    W[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"W\[0, 1\] = nan is not finite"):
        validate_mixing_matrix(W)
    with pytest.raises(ValueError, match="not finite"):
        from_matrix(np.array([[np.inf]]))


def test_validation_n1_and_valid() -> None:
    validate_mixing_matrix(np.array([[1.0]]))
    validate_mixing_matrix(ring(5).at(0).dense)


def test_topology_union_connectivity() -> None:
    a = MixingMatrix(
        np.array([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]]),
        require_connected=False,
    )
    with pytest.raises(ValueError, match="union of W"):
        Topology([a, a], name="bad")
    with pytest.raises(ValueError, match="same size"):
        Topology([a, MixingMatrix(np.eye(3), require_connected=False)], name="bad")
    with pytest.raises(ValueError, match="at least one"):
        Topology([], name="bad")


# ------------------------------------------------------------------ builders' argument errors
@pytest.mark.parametrize(
    "builder", [ring, exponential, one_peer_exponential, complete, star, identity, torus_shape]
)
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
def test_builders_reject_bad_n(builder, bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"n \(number of workers\) must be a positive integer"):
        builder(bad)


def test_erdos_renyi_errors_and_determinism() -> None:
    with pytest.raises(ValueError, match=r"p \(edge probability\) must be in \(0, 1\]"):
        erdos_renyi(8, 0.0, 0)
    with pytest.raises(ValueError, match=r"p \(edge probability\) must be in \(0, 1\]"):
        erdos_renyi(8, 1.5, 0)
    with pytest.raises(ValueError, match="no connected"):
        erdos_renyi(30, 0.01, 0, max_tries=20)
    a = erdos_renyi(12, 0.3, 7).at(0).dense
    b = erdos_renyi(12, 0.3, 7).at(0).dense
    c = erdos_renyi(12, 0.3, 8).at(0).dense
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_allclose(
        erdos_renyi(5, 1.0, 3).at(0).dense, np.full((5, 5), 0.2), rtol=0, atol=1e-15
    )


def test_torus_errors() -> None:
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        torus(0, 4)
    with pytest.raises(ValueError, match=r"rows x cols = 3 x 3 must equal n = 8"):
        make_topology("torus", 8, rows=3, cols=3)
    assert make_topology("torus", 12, rows=3).name == "torus-3x4"
    assert make_topology("torus", 12, cols=6).name == "torus-2x6"


def test_make_topology_errors() -> None:
    with pytest.raises(ValueError, match="unknown topology 'hypercube'") as exc:
        make_topology("hypercube", 8)
    for name in TOPOLOGIES:
        assert name in str(exc.value)
    with pytest.raises(ValueError, match="p is only used by 'erdos-renyi'"):
        make_topology("ring", 8, p=0.5)
    with pytest.raises(ValueError, match="rows/cols are only used by 'torus'"):
        make_topology("ring", 8, rows=2)
    assert make_topology("Erdos_Renyi", 8).name == "erdos-renyi"


def test_make_topology_seed_and_p() -> None:
    a = make_topology("erdos-renyi", 10, seed=3, p=0.5).at(0).dense
    np.testing.assert_array_equal(a, erdos_renyi(10, 0.5, 3).at(0).dense)
    np.testing.assert_array_equal(
        make_topology("erdos-renyi", 10).at(0).dense, erdos_renyi(10, 0.3, 0).at(0).dense
    )


# ------------------------------------------------------------------ weight rules
def test_uniform_weights_regular_and_error() -> None:
    A = nx.to_numpy_array(nx.cycle_graph(6))
    np.testing.assert_allclose(uniform_weights(A), metropolis_hastings(A), rtol=0, atol=1e-15)
    S = nx.to_numpy_array(nx.star_graph(4))
    with pytest.raises(ValueError, match=r"regular graph.*degrees \[1, 4\]"):
        uniform_weights(S)
    with pytest.raises(ValueError, match="regular graph"):
        from_adjacency(S, weights="uniform")


def test_metropolis_hastings_properties() -> None:
    G = nx.lollipop_graph(4, 3)
    W = metropolis_hastings(nx.to_numpy_array(G))
    np.testing.assert_array_equal(W, W.T)
    np.testing.assert_allclose(W.sum(1), 1.0, rtol=0, atol=1e-14)
    assert np.all(np.diag(W) > 0)
    d = dict(G.degree)
    for i, j in G.edges:
        assert W[i, j] == pytest.approx(1.0 / (1 + max(d[i], d[j])))
    with pytest.raises(ValueError, match="must be symmetric"):
        metropolis_hastings(np.array([[0, 1], [0, 0]]))


def test_from_adjacency_networkx_matrix() -> None:
    G = nx.cycle_graph(["c", "a", "d", "b"])
    topo = from_networkx(G, name="letters")
    # sorted labels a, b, c, d -> 0, 1, 2, 3; cycle c-a-d-b-c
    W = topo.at(0).dense
    assert W[2, 0] > 0 and W[0, 3] > 0 and W[3, 1] > 0 and W[1, 2] > 0 and W[0, 1] == 0
    assert topo.name == "letters"
    with pytest.raises(ValueError, match="undirected"):
        from_networkx(nx.DiGraph([(0, 1)]))
    with pytest.raises(ValueError, match="weights must be one of"):
        from_adjacency(np.ones((3, 3)), weights="max-degree")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not connected"):
        from_adjacency(np.zeros((3, 3)))
    np.testing.assert_allclose(
        from_adjacency(nx.to_numpy_array(nx.cycle_graph(7))).at(0).dense,
        ring(7).at(0).dense,
        rtol=0,
        atol=1e-15,
    )
    t = from_matrix(ring(5).at(0).dense, name="mine")
    assert t.name == "mine" and t.at(0).shifts is not None
    assert from_matrix(star(4).at(0).dense).at(0).shifts is None


# ------------------------------------------------------------------ shifts
@pytest.mark.parametrize("name", TOPOLOGIES)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 16])
def test_shifts_reproduce_matmul(name: str, n: int) -> None:
    topo = make_topology(name, n)
    X = np.random.default_rng(n).normal(size=(n, 5))
    for m in topo.matrices + topo.lazy().matrices:
        if m.shifts is None:
            assert circulant_shifts(m.dense) is None
            continue
        assert all(0 <= s < n for s, _ in m.shifts)
        Y = np.zeros_like(X)
        for s, w in m.shifts:
            Y += w * X[(np.arange(n) - s) % n]
        np.testing.assert_allclose(Y, m.dense @ X, rtol=0, atol=1e-14)
        np.testing.assert_allclose(m.mix(X), m.dense @ X, rtol=0, atol=1e-14)
        assert circulant_shifts(m.dense) == m.shifts


def test_circulant_builders_have_shifts() -> None:
    for topo in (ring(8), exponential(8), one_peer_exponential(8), complete(8), identity(3)):
        assert all(m.shifts is not None for m in topo.matrices)
    assert star(8).at(0).shifts is None
    assert exponential(8).at(0).shifts == ((0, 0.25), (1, 0.25), (2, 0.25), (4, 0.25))
    with pytest.raises(ValueError, match="do not reproduce"):
        MixingMatrix(ring(5).at(0).dense, shifts=((0, 1.0),))
    with pytest.raises(ValueError, match=r"offsets must be in \[0, 5\)"):
        MixingMatrix(ring(5).at(0).dense, shifts=((5, 1.0),))


# ------------------------------------------------------------------ torch
@pytest.mark.parametrize("name", ["ring", "exponential", "star", "erdos-renyi"])
def test_torch_sparse_matches_dense(name: str) -> None:
    m = make_topology(name, 10).at(0)
    S = m.torch_sparse("cpu", torch.float64)
    assert S.layout == torch.sparse_csr and S.dtype == torch.float64
    np.testing.assert_allclose(S.to_dense().numpy(), m.dense, rtol=0, atol=0)
    X = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose((S @ X).numpy(), m.dense @ X.numpy(), rtol=1e-12, atol=1e-14)
    assert m.torch_sparse("cpu", torch.float64) is S  # cached
    S32 = m.torch_sparse(torch.device("cpu"), torch.float32)
    assert S32.dtype == torch.float32 and S32 is not S
    np.testing.assert_allclose(m.torch_dense().numpy(), m.dense, rtol=0, atol=0)


# ------------------------------------------------------------------ lazy
@pytest.mark.parametrize("name", ["ring", "torus", "star", "erdos-renyi", "complete"])
@pytest.mark.parametrize("n", [4, 8, 11])
def test_lazy_spectrum_in_unit_interval(name: str, n: int) -> None:
    topo = make_topology(name, n, lazy=True)
    assert topo.name.endswith("-lazy")
    W = topo.at(0).dense
    np.testing.assert_allclose(W, lazy(make_topology(name, n).at(0).dense), rtol=0, atol=1e-15)
    ev = np.linalg.eigvalsh(W)
    assert ev.min() >= -1e-12 and ev.max() <= 1 + 1e-12
    info = topo.spectral()
    assert info.lambda_n is not None and info.lambda_n >= -1e-12
    base = make_topology(name, n).spectral()
    assert info.lambda_2 == pytest.approx((1 + base.lambda_2) / 2, abs=1e-12)


def test_lazy_mixing_matrix_method() -> None:
    m = exponential(8).at(0).lazy()
    assert m.name == "exponential-lazy"
    assert m.shifts == ((0, 0.625), (1, 0.125), (2, 0.125), (4, 0.125))
    validate_mixing_matrix(m.dense)


# ------------------------------------------------------------------ Topology API / report
def test_topology_at_and_degrees() -> None:
    topo = one_peer_exponential(8)
    assert topo.at(4) is topo.at(1) and topo.at(3) is topo.at(0)
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="k must be an integer >= 0"):
            topo.at(bad)  # type: ignore[arg-type]
    assert topo.max_out_degree == 1 and topo.min_out_degree == 1
    t = torus(4, 4)
    assert t.max_out_degree == 4 and t.at(0).max_in_degree == 4 and t.at(0).out_degree(5) == 4
    s = star(6)
    assert s.max_out_degree == 5 and s.min_out_degree == 1 and s.at(0).in_degree(3) == 1
    assert s.bytes_per_round(1000) == 5 * 1000 * 4
    assert exponential(16).bytes_per_round(10, bytes_per_element=2) == 4 * 10 * 2
    with pytest.raises(ValueError, match="num_params"):
        s.bytes_per_round(-1)
    with pytest.raises(ValueError, match="node index"):
        s.at(0).in_neighbors(6)
    assert "one-peer-exponential" in repr(topo) and "MixingMatrix" in repr(topo.at(0))


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_report_json_serializable(name: str) -> None:
    topo = make_topology(name, 12)
    rep = topo.report(num_params=100)
    json.dumps(rep)
    assert rep["workers"] == 12 and rep["name"] == topo.name
    expected_keys = {
        "name",
        "workers",
        "directed",
        "time_varying",
        "period",
        "lambda_2",
        "lambda_n",
        "rho",
        "spectral_gap",
        "max_out_degree",
        "min_out_degree",
        "edges",
        "bytes_per_round_per_worker",
    }
    assert expected_keys <= set(rep)
    assert ("period_product_rho" in rep) == topo.time_varying
    assert rep["bytes_per_round_per_worker"] == topo.max_out_degree * 100 * 4
    assert rep["spectral_gap"] == pytest.approx(1 - rep["rho"])
    for v in rep.values():
        assert v is None or type(v) in (str, int, float, bool)


def test_spectral_info_to_dict() -> None:
    info = ring(8).spectral()
    assert isinstance(info, SpectralInfo)
    d = info.to_dict()
    assert d["rho"] == info.rho and d["lambda_2"] == info.lambda_2 and d["n"] == 8
    json.dumps(d)
    single = ring(1).spectral()
    assert single.lambda_2 is None and single.rho == pytest.approx(0.0)


def test_identity_is_no_communication() -> None:
    topo = identity(5)
    X = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_array_equal(topo.at(0).mix(X), X)
    assert topo.max_out_degree == 0 and topo.num_edges == 0
    assert topo.bytes_per_round(10**6) == 0


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=9),
    density=st.floats(min_value=0.0, max_value=0.6),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_connectivity_check_agrees_with_networkx(n: int, density: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    S = rng.random((n, n)) < density
    np.fill_diagonal(S, True)
    W = S / S.sum(axis=1, keepdims=True)  # row stochastic, edge j -> i when W[i, j] > 0
    G = nx.DiGraph()
    G.add_nodes_from(range(n))
    G.add_edges_from((int(j), int(i)) for i, j in zip(*np.nonzero(S), strict=True) if i != j)
    if nx.is_strongly_connected(G):
        validate_mixing_matrix(W, doubly_stochastic=False)
    else:
        with pytest.raises(ValueError, match="is not connected"):
            validate_mixing_matrix(W, doubly_stochastic=False)
