"""Topology builders: ring, torus, exponential, one-peer exponential, complete, star,
Erdős–Rényi, identity, and user-supplied graphs.

Source: specification ``decentralized.md`` §2.1 (edges and weights of each topology, the
orientation convention) and §2.3 (exact Erdős–Rényi sampler, reference spectral values).
Static and one-peer exponential graphs: Ying et al., "Exponential Graph is Provably Efficient
for Decentralized Deep Training", NeurIPS 2021.
"""

from __future__ import annotations

import math
from typing import Literal

import networkx as nx
import numpy as np

from peergrad.topology.mixing import (
    MixingMatrix,
    Shifts,
    circulant_shifts,
    validate_mixing_matrix,
)
from peergrad.topology.schedule import Topology
from peergrad.topology.weights import metropolis_hastings, uniform_weights

__all__ = [
    "TOPOLOGIES",
    "complete",
    "erdos_renyi",
    "exponential",
    "from_adjacency",
    "from_matrix",
    "from_networkx",
    "identity",
    "make_topology",
    "one_peer_exponential",
    "ring",
    "star",
    "torus",
    "torus_shape",
]

#: Names accepted by :func:`make_topology`.
TOPOLOGIES: tuple[str, ...] = (
    "ring",
    "torus",
    "exponential",
    "one-peer-exponential",
    "complete",
    "star",
    "erdos-renyi",
    "identity",
)

WeightRule = Literal["metropolis-hastings", "uniform"]
_WEIGHT_RULES: tuple[str, ...] = ("metropolis-hastings", "uniform")


def _check_positive_int(value: object, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{arg} must be a positive integer (>= 1), got {value!r}")
    return int(value)


def _check_n(n: object) -> int:
    return _check_positive_int(n, "n (number of workers)")


def _log2_ceil(n: int) -> int:
    """``⌈log₂ n⌉`` for ``n >= 1``, exact in integer arithmetic."""
    return (n - 1).bit_length()


def _static(W: np.ndarray, name: str, shifts: Shifts | None = None) -> Topology:
    """Static topology; ``shifts`` is detected (exact circulant test) when not given."""
    if shifts is None:
        shifts = circulant_shifts(W)
    return Topology([MixingMatrix(W, name=name, shifts=shifts)], name=name)


def _circulant(shifts: Shifts, n: int, name: str) -> Topology:
    """Static topology from a circulant shift form, accumulating coinciding offsets."""
    acc: dict[int, float] = {}
    for s, w in shifts:
        acc[s % n] = acc.get(s % n, 0.0) + w
    merged = tuple(sorted(acc.items()))
    W = np.zeros((n, n))
    idx = np.arange(n)
    for s, w in merged:
        W[idx, (idx - s) % n] = w
    return _static(W, name, merged)


def _weights(A: np.ndarray, weights: str) -> np.ndarray:
    if weights == "metropolis-hastings":
        return metropolis_hastings(A)
    if weights == "uniform":
        return uniform_weights(A)
    raise ValueError(f"weights must be one of {_WEIGHT_RULES}, got {weights!r}")


# ---------------------------------------------------------------------------- builders
def ring(n: int) -> Topology:
    """Ring (cycle) i ↔ i ± 1 mod n with weight 1/3 on self and each neighbour (spec §2.1).

    For ``n >= 3`` this equals Metropolis–Hastings. ``n = 2`` gives ``[[.5, .5], [.5, .5]]``
    and ``n = 1`` gives ``[[1]]``. Circulant (``shifts`` set). Closed form (spec §2.3):
    ``λ₂ = (1 + 2 cos(2π/n))/3``.

    Raises:
        ValueError: if ``n`` is not a positive integer.
    """
    n = _check_n(n)
    if n == 1:
        return _circulant(((0, 1.0),), 1, "ring")
    if n == 2:
        return _circulant(((0, 0.5), (1, 0.5)), 2, "ring")
    third = 1.0 / 3.0
    return _circulant(((0, third), (1, third), (n - 1, third)), n, "ring")


def torus_shape(n: int) -> tuple[int, int]:
    """Most square factorisation ``n = rows × cols`` with ``rows <= cols``.

    Examples: 8 → (2, 4), 16 → (4, 4), 32 → (4, 8), 64 → (8, 8); a prime ``n`` gives
    ``(1, n)`` (a ring).

    Raises:
        ValueError: if ``n`` is not a positive integer.
    """
    n = _check_n(n)
    rows = math.isqrt(n)
    while n % rows:
        rows -= 1
    return rows, n // rows


def torus(rows: int, cols: int) -> Topology:
    """2-D torus (``rows × cols`` grid with wrap-around) with Metropolis–Hastings weights.

    Node ``r * cols + c`` sits at grid position ``(r, c)`` and is linked to its up, down,
    left and right neighbours (mod ``rows``, ``cols``); a neighbour reached twice counts once
    (spec §2.1, library decision [D]). For ``rows, cols >= 3`` all degrees are 4 and the
    weights are 1/5; for a side of length 2 the degree drops to 3 and the weights are 1/4.

    Raises:
        ValueError: if ``rows`` or ``cols`` is not a positive integer.
    """
    rows = _check_positive_int(rows, "rows")
    cols = _check_positive_int(cols, "cols")
    G = nx.grid_2d_graph(rows, cols, periodic=True)
    nodes = [(r, c) for r in range(rows) for c in range(cols)]
    A = nx.to_numpy_array(G, nodelist=nodes, dtype=np.float64)
    W = metropolis_hastings(A)
    return _static(W, f"torus-{rows}x{cols}")


def exponential(n: int) -> Topology:
    """Static exponential graph (Ying et al. 2021), directed, circulant (spec §2.1).

    With ``τ = ⌈log₂ n⌉``: ``W[i, i] = 1/(τ+1)`` and ``W[i, (i − 2^m) mod n] = 1/(τ+1)`` for
    ``m = 0 … τ−1``, i.e. node ``i`` receives from ``i − 2^m`` and sends to ``i + 2^m``.
    Because ``2^(τ−1) < n`` the τ offsets are distinct and non-zero mod ``n``; weights of
    coinciding offsets would be accumulated, keeping W doubly stochastic. ``n = 1`` gives
    ``[[1]]``. For even ``n``, ``1 − ‖W − J‖₂ = 2/(1 + τ)`` (spec §2.3).

    Raises:
        ValueError: if ``n`` is not a positive integer.
    """
    n = _check_n(n)
    tau = _log2_ceil(n)
    w = 1.0 / (tau + 1)
    shifts = ((0, w),) + tuple((2**m, w) for m in range(tau))
    return _circulant(shifts, n, "exponential")


def one_peer_exponential(n: int) -> Topology:
    """Time-varying one-peer exponential graph (Ying et al. 2021), spec §2.1.

    Period ``τ = max(1, ⌈log₂ n⌉)``; round ``k`` uses offset ``s_k = 2^(k mod τ)`` and
    ``W(k) = ½ (I + P^{s_k})``: ``W(k)[i, i] = ½`` and ``W(k)[i, (i − s_k) mod n] = ½``
    (node ``i`` receives from ``i − s_k`` and sends to ``i + s_k``). A single ``W(k)`` may be
    disconnected (whenever ``gcd(n, s_k) > 1``); the union over one period is connected, and
    the product ``W(τ−1) ⋯ W(0)`` equals ``J`` exactly when ``n`` is a power of two.
    ``n = 1`` gives ``[[1]]``; ``n = 2`` gives ``W = J``.

    Raises:
        ValueError: if ``n`` is not a positive integer.
    """
    n = _check_n(n)
    tau = max(1, _log2_ceil(n))
    idx = np.arange(n)
    mats = []
    for k in range(tau):
        s = (2**k) % n
        W = np.zeros((n, n))
        W[idx, idx] += 0.5
        W[idx, (idx - s) % n] += 0.5
        shifts: Shifts = ((0, 1.0),) if s == 0 else ((0, 0.5), (s, 0.5))
        mats.append(
            MixingMatrix(
                W, name=f"one-peer-exponential[{k}]", shifts=shifts, require_connected=False
            )
        )
    return Topology(mats, name="one-peer-exponential")


def complete(n: int) -> Topology:
    """Complete graph with ``W = J`` (every entry ``1/n``): exact averaging, gap 1.

    Raises:
        ValueError: if ``n`` is not a positive integer.
    """
    n = _check_n(n)
    return _static(np.full((n, n), 1.0 / n), "complete", tuple((s, 1.0 / n) for s in range(n)))


def star(n: int) -> Topology:
    """Star with hub 0 and Metropolis–Hastings weights (spec §2.1).

    Hub–leaf weight ``1/n``, hub self-weight ``1/n``, leaf self-weight ``1 − 1/n``;
    spectral gap ``1/n`` (spec §2.3).

    Raises:
        ValueError: if ``n`` is not a positive integer.
    """
    n = _check_n(n)
    A = nx.to_numpy_array(nx.star_graph(n - 1), nodelist=range(n), dtype=np.float64)
    return _static(metropolis_hastings(A), "star")


def _laplacian_lambda_2(A: np.ndarray) -> float:
    if A.shape[0] == 1:
        return math.inf
    L = np.diag(A.sum(axis=1)) - A
    return float(np.linalg.eigvalsh(L)[1])


def erdos_renyi(n: int, p: float, seed: int, *, max_tries: int = 1000) -> Topology:
    """Connected Erdős–Rényi graph G(n, p) with Metropolis–Hastings weights.

    Exact sampler of spec §2.3 (so results are exact test oracles): ``rng =
    numpy.random.default_rng(seed)``; repeat ``U = rng.random((n, n))``, edge ``{i, j}``
    (``i < j``) iff ``U[i, j] < p``, until the Laplacian's second-smallest eigenvalue is
    ``> 1e-9``. (networkx's ``gnp_random_graph`` would give other graphs.)

    Args:
        n: number of workers, ``>= 1``.
        p: edge probability in ``(0, 1]``.
        seed: seed of the numpy Generator (explicit; no global RNG is touched).
        max_tries: number of samples drawn before giving up.

    Raises:
        ValueError: if an argument is out of range, or no connected sample was found in
            ``max_tries`` draws (p too small for this n).
    """
    n = _check_n(n)
    if isinstance(p, bool) or not isinstance(p, int | float | np.floating | np.integer):
        raise ValueError(f"p (edge probability) must be a number in (0, 1], got {p!r}")
    p = float(p)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p (edge probability) must be in (0, 1], got {p!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    max_tries = _check_positive_int(max_tries, "max_tries")
    rng = np.random.default_rng(seed)
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    for _ in range(max_tries):
        U = rng.random((n, n))
        E = (U < p) & upper
        A = (E | E.T).astype(np.float64)
        if _laplacian_lambda_2(A) > 1e-9:
            return _static(metropolis_hastings(A), "erdos-renyi")
    raise ValueError(
        f"erdos_renyi: no connected G(n={n}, p={p}) sample in max_tries={max_tries} draws "
        f"(seed={seed}); increase p (connectivity needs roughly p > ln(n)/n = "
        f"{math.log(n) / n:.3g}) or max_tries"
    )


def identity(n: int) -> Topology:
    """``W = I``: no communication; n workers behave as n independent runs.

    Not connected for ``n >= 2`` (built with ``require_connected=False``). Circulant.

    Raises:
        ValueError: if ``n`` is not a positive integer.
    """
    n = _check_n(n)
    m = MixingMatrix(np.eye(n), name="identity", shifts=((0, 1.0),), require_connected=False)
    return Topology([m], name="identity", require_connected=False)


def from_adjacency(
    A: np.ndarray, weights: WeightRule = "metropolis-hastings", *, name: str = "custom"
) -> Topology:
    """Static topology from an undirected adjacency matrix.

    Args:
        A: array ``[n, n]``, symmetric; non-zero off-diagonal entries are edges, the diagonal
            is ignored.
        weights: ``"metropolis-hastings"`` (any graph) or ``"uniform"`` (regular graphs only,
            ``1/(d+1)``).
        name: label of the topology.

    Raises:
        ValueError: for an invalid adjacency, unknown ``weights``, a non-regular graph with
            ``"uniform"``, or a disconnected graph.
    """
    W = _weights(np.asarray(A), weights)
    return _static(W, name)


def from_networkx(
    G: nx.Graph, weights: WeightRule = "metropolis-hastings", *, name: str = "custom"
) -> Topology:
    """Static topology from an undirected networkx graph.

    Nodes are relabelled ``0 … n−1`` in sorted order (insertion order if the labels cannot
    be sorted). Self-loops are ignored.

    Raises:
        ValueError: if ``G`` is directed or empty, or see :func:`from_adjacency`.
    """
    if G.is_directed():
        raise ValueError(
            "G must be an undirected graph; for directed mixing build W yourself and use "
            "from_matrix"
        )
    if G.number_of_nodes() == 0:
        raise ValueError("G must have at least one node")
    try:
        nodes = sorted(G.nodes)
    except TypeError:
        nodes = list(G.nodes)
    A = nx.to_numpy_array(G, nodelist=nodes, dtype=np.float64, weight=None)
    return from_adjacency(A, weights, name=name)


def from_matrix(W: np.ndarray, name: str = "custom") -> Topology:
    """Static topology from an explicit mixing matrix (validated: doubly stochastic,
    non-negative, strongly connected). Circulant shifts are detected automatically.

    Raises:
        ValueError: see :func:`peergrad.topology.validate_mixing_matrix`.
    """
    validate_mixing_matrix(W)
    return _static(np.asarray(W, dtype=np.float64), name)


# ---------------------------------------------------------------------------- dispatch
def make_topology(
    name: str,
    n: int,
    *,
    seed: int = 0,
    p: float | None = None,
    rows: int | None = None,
    cols: int | None = None,
    lazy: bool = False,
) -> Topology:
    """Build a topology by name (one of :data:`TOPOLOGIES`).

    Underscores are accepted in place of hyphens (``"erdos_renyi"``).

    Args:
        name: topology name.
        n: number of workers, ``>= 1``.
        seed: seed for ``"erdos-renyi"``.
        p: edge probability for ``"erdos-renyi"`` (default 0.3).
        rows, cols: torus shape; ``rows × cols`` must equal ``n``. If only one is given the
            other is ``n // it``; if neither, :func:`torus_shape` picks the most square one.
        lazy: return the lazy schedule ``(I + W(k))/2``.

    Raises:
        ValueError: for an unknown name (the message lists :data:`TOPOLOGIES`), ``p`` given
            to a topology other than erdos-renyi, ``rows``/``cols`` given to one other than
            torus or inconsistent with ``n``, or any builder error.
    """
    if not isinstance(name, str):
        raise ValueError(f"topology name must be a str, one of {TOPOLOGIES}, got {name!r}")
    key = name.strip().lower().replace("_", "-")
    if key not in TOPOLOGIES:
        raise ValueError(f"unknown topology {name!r}; valid names: {', '.join(TOPOLOGIES)}")
    n = _check_n(n)
    if p is not None and key != "erdos-renyi":
        raise ValueError(f"p is only used by 'erdos-renyi', got p={p!r} for {key!r}")
    if (rows is not None or cols is not None) and key != "torus":
        raise ValueError(f"rows/cols are only used by 'torus', got them for {key!r}")

    topo: Topology
    if key == "ring":
        topo = ring(n)
    elif key == "torus":
        if rows is None and cols is None:
            rows, cols = torus_shape(n)
        elif rows is None:
            cols = _check_positive_int(cols, "cols")
            rows = n // cols
        elif cols is None:
            rows = _check_positive_int(rows, "rows")
            cols = n // rows
        if rows * cols != n:
            raise ValueError(f"torus shape rows x cols = {rows} x {cols} must equal n = {n}")
        topo = torus(rows, cols)
    elif key == "exponential":
        topo = exponential(n)
    elif key == "one-peer-exponential":
        topo = one_peer_exponential(n)
    elif key == "complete":
        topo = complete(n)
    elif key == "star":
        topo = star(n)
    elif key == "erdos-renyi":
        topo = erdos_renyi(n, 0.3 if p is None else p, seed)
    else:
        topo = identity(n)
    return topo.lazy() if lazy else topo
