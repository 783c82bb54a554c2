"""One round's mixing matrix W: validation, circulant detection, spectral quantities.

Source: specification ``decentralized.md`` §1 (mixing matrix requirements) and §2.1–2.2
(orientation convention, spectral quantities).

Orientation convention (spec §2.1, library-wide): ``W[i, j]`` is the weight node ``i`` gives
to the value it *receives from* node ``j``; one gossip step on stacked values ``X`` (shape
``[n, d]``, row ``i`` = node ``i``) is ``(W X)_i = sum_j W[i, j] X[j]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "MixingMatrix",
    "SpectralInfo",
    "circulant_shifts",
    "validate_mixing_matrix",
]

#: Tolerance for "every entry equals 1/n" (``MixingMatrix.is_complete``) and symmetry.
_EXACT_TOL = 1e-12

Shifts = tuple[tuple[int, float], ...]


def _fmt(x: float) -> str:
    return f"{float(x):.12g}"


def _fmt_nodes(nodes: Sequence[int], limit: int = 10) -> str:
    nodes = sorted(nodes)
    shown = ", ".join(str(v) for v in nodes[:limit])
    if len(nodes) > limit:
        shown += f", ... ({len(nodes)} nodes)"
    return "{" + shown + "}"


def _reachable(S: np.ndarray, start: int) -> np.ndarray:
    """Boolean mask of nodes reachable from ``start`` where ``S[i, j]`` means edge ``j -> i``.

    Level-synchronous BFS with numpy: each node enters the frontier once, so the total work
    is O(n²) but only ``diameter`` Python iterations (fast even for dense graphs with n in
    the thousands, where building a networkx graph edge by edge would dominate).
    """
    visited = np.zeros(S.shape[0], dtype=bool)
    visited[start] = True
    frontier = visited.copy()
    while frontier.any():
        new = S[:, frontier].any(axis=1) & ~visited
        visited |= new
        frontier = new
    return visited


def _connectivity_error(W: np.ndarray, what: str) -> str | None:
    """Return an error message if the support of ``W`` is not strongly connected, else None.

    The directed graph has an edge ``j -> i`` whenever ``W[i, j] > 0`` (information flows
    from ``j`` to ``i``). Equivalent to ``networkx.is_strongly_connected`` on that graph.
    """
    n = W.shape[0]
    if n <= 1:
        return None
    S = np.asarray(W) > 0
    forward = _reachable(S, 0)
    if not forward.all():
        missing = np.flatnonzero(~forward).tolist()
        return (
            f"{what} is not connected: nodes {_fmt_nodes(missing)} cannot be reached "
            "from node 0 (edge j -> i exists when W[i, j] > 0); the graph must be strongly "
            "connected"
        )
    backward = _reachable(S.T, 0)
    if not backward.all():
        missing = np.flatnonzero(~backward).tolist()
        return (
            f"{what} is not connected: node 0 cannot be reached from nodes "
            f"{_fmt_nodes(missing)} (edge j -> i exists when W[i, j] > 0); the graph must "
            "be strongly connected"
        )
    return None


def validate_mixing_matrix(
    W: np.ndarray,
    *,
    doubly_stochastic: bool = True,
    require_connected: bool = True,
    atol: float = 1e-10,
) -> None:
    """Check that ``W`` is a valid mixing matrix (spec §1 and §2.1).

    Args:
        W: array-like of shape ``[n, n]``; ``W[i, j]`` is the weight node ``i`` gives to the
            value received from node ``j``.
        doubly_stochastic: also require every column to sum to 1 (rows always must).
        require_connected: require the directed graph with edge ``j -> i`` for
            ``W[i, j] > 0`` to be strongly connected (``n = 1`` always is).
        atol: absolute tolerance on row and column sums.

    Raises:
        ValueError: if ``W`` is not a square 2-D matrix with ``n >= 1``, has non-finite or
            negative entries, a row (or, when ``doubly_stochastic``, a column) whose sum is
            not 1 within ``atol``, or is not strongly connected when ``require_connected``.
            The message names the offending entry, row, column or nodes and the allowed range.
    """
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"mixing matrix W must be square, got shape {tuple(W.shape)}")
    if W.shape[0] < 1:
        raise ValueError("mixing matrix W must have at least one row (n >= 1), got shape (0, 0)")
    if not np.issubdtype(W.dtype, np.number) or np.issubdtype(W.dtype, np.complexfloating):
        raise ValueError(f"mixing matrix W must be real-valued, got dtype {W.dtype}")
    W = W.astype(np.float64, copy=False)
    bad = np.argwhere(~np.isfinite(W))
    if bad.size:
        i, j = (int(v) for v in bad[0])
        raise ValueError(f"W[{i}, {j}] = {W[i, j]} is not finite; entries must be finite and >= 0")
    bad = np.argwhere(W < 0)
    if bad.size:
        i, j = (int(v) for v in bad[0])
        raise ValueError(f"W[{i}, {j}] = {_fmt(W[i, j])} is negative; entries must be >= 0")
    row_sums = W.sum(axis=1)
    bad_rows = np.flatnonzero(np.abs(row_sums - 1.0) > atol)
    if bad_rows.size:
        r = int(bad_rows[0])
        raise ValueError(
            f"row {r} of W sums to {_fmt(row_sums[r])}; rows must sum to 1 (tolerance {atol:g})"
        )
    if doubly_stochastic:
        col_sums = W.sum(axis=0)
        bad_cols = np.flatnonzero(np.abs(col_sums - 1.0) > atol)
        if bad_cols.size:
            c = int(bad_cols[0])
            raise ValueError(
                f"column {c} of W sums to {_fmt(col_sums[c])}; columns must sum to 1 "
                f"(tolerance {atol:g}) for a doubly stochastic W, which gossip needs to "
                "preserve the average"
            )
    if require_connected:
        msg = _connectivity_error(W, "W")
        if msg is not None:
            raise ValueError(msg)


def circulant_shifts(W: np.ndarray, *, atol: float = 0.0) -> Shifts | None:
    """Detect whether ``W`` is circulant and return its shift form, else ``None``.

    The shift form is a tuple of ``(s, w)`` with ``0 <= s < n`` and ``w != 0`` such that
    ``(W x)_i = sum_{(s, w)} w * x[(i - s) mod n]``, i.e. ``W[i, (i - s) mod n] = w`` for all
    ``i``. Offset 0 is the self weight. Offsets are sorted increasingly.

    Args:
        W: square matrix of shape ``[n, n]``.
        atol: absolute tolerance of the circulant test; the default 0 demands exact equality.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
        return None
    n = W.shape[0]
    idx = np.arange(n)
    # C[i, s] = W[i, (i - s) mod n]; W is circulant iff every column of C is constant.
    C = W[idx[:, None], (idx[:, None] - idx[None, :]) % n]
    first = C[0]
    if np.any(np.abs(C - first[None, :]) > atol):
        return None
    return tuple((int(s), float(first[s])) for s in range(n) if first[s] != 0.0)


def _dense_from_shifts(shifts: Shifts, n: int) -> np.ndarray:
    W = np.zeros((n, n))
    idx = np.arange(n)
    for s, w in shifts:
        W[idx, (idx - s) % n] += w
    return W


@dataclass(frozen=True)
class SpectralInfo:
    """Spectral quantities of one mixing matrix, each by its explicit name (spec §2.2).

    Attributes:
        n: number of nodes.
        symmetric: whether W = Wᵀ (to 1e-12).
        lambda_2: second-largest eigenvalue of a symmetric W (``numpy.linalg.eigvalsh``);
            ``None`` for non-symmetric W (complex spectrum) or ``n = 1``.
        lambda_n: smallest eigenvalue of a symmetric W; ``None`` for non-symmetric W.
        rho: ``‖W − J‖₂`` (spectral norm, ``J = 11ᵀ/n``). For symmetric W this equals
            λ = max(|λ₂|, |λ_n|); for directed W it is Ying et al.'s ρ.
        spectral_gap: ``1 − rho``.
    """

    n: int
    symmetric: bool
    lambda_2: float | None
    lambda_n: float | None
    rho: float
    spectral_gap: float

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serializable dict of the fields."""
        return asdict(self)


def _spectral_info(W: np.ndarray, symmetric: bool) -> SpectralInfo:
    n = W.shape[0]
    rho = float(np.linalg.norm(W - 1.0 / n, 2))
    lambda_2: float | None = None
    lambda_n: float | None = None
    if symmetric:
        eig = np.linalg.eigvalsh(W)  # ascending
        lambda_n = float(eig[0])
        lambda_2 = float(eig[-2]) if n >= 2 else None
    return SpectralInfo(
        n=n,
        symmetric=symmetric,
        lambda_2=lambda_2,
        lambda_n=lambda_n,
        rho=rho,
        spectral_gap=1.0 - rho,
    )


class MixingMatrix:
    """One gossip round's mixing matrix W (``[n, n]``, float64), immutable.

    Source: spec §1 (requirements), §2.1 (orientation: ``W[i, j]`` is the weight node ``i``
    gives to what it receives from node ``j``; a gossip step is ``(W X)_i = Σ_j W_ij x_j``).

    Args:
        W: array-like ``[n, n]``; a read-only float64 copy is stored.
        name: label used in reports.
        shifts: circulant form ``((s, w), ...)`` with ``(W x)_i = Σ w · x[(i − s) mod n]``,
            ``0 <= s < n``; pass it only when W is exactly circulant. When ``check`` is set it
            must reproduce W to 1e-12.
        check: run :func:`validate_mixing_matrix` (doubly stochastic, non-negative, finite).
        require_connected: with ``check``, also require strong connectivity. Individual
            rounds of time-varying schedules (one-peer exponential) pass ``False``.

    Raises:
        ValueError: from :func:`validate_mixing_matrix`, or if ``shifts`` has an offset
            outside ``[0, n)`` or does not reproduce W.
    """

    def __init__(
        self,
        W: np.ndarray,
        *,
        name: str = "custom",
        shifts: Shifts | None = None,
        check: bool = True,
        require_connected: bool = True,
    ) -> None:
        arr = np.asarray(W)
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
            raise ValueError(f"mixing matrix W must be square, got shape {tuple(arr.shape)}")
        if check:
            validate_mixing_matrix(arr, require_connected=require_connected)
        dense = np.array(arr, dtype=np.float64, copy=True)
        dense.setflags(write=False)
        self._W = dense
        self._n = int(dense.shape[0])
        self._name = str(name)
        if shifts is not None:
            shifts = tuple((int(s), float(w)) for s, w in shifts)
            for s, _ in shifts:
                if not 0 <= s < self._n:
                    raise ValueError(
                        f"shift offset {s} is out of range; offsets must be in [0, {self._n})"
                    )
            if check and not np.allclose(
                _dense_from_shifts(shifts, self._n), dense, rtol=0.0, atol=_EXACT_TOL
            ):
                raise ValueError(f"shifts {shifts} do not reproduce the mixing matrix W")
        self._shifts = shifts
        self._symmetric = bool(np.allclose(dense, dense.T, rtol=0.0, atol=_EXACT_TOL))
        self._complete: bool | None = None
        self._out_deg: np.ndarray | None = None
        self._spectral: SpectralInfo | None = None
        self._torch_cache: dict[tuple[str, Any, str], torch.Tensor] = {}

    # ------------------------------------------------------------------ basic properties
    @property
    def n(self) -> int:
        """Number of nodes."""
        return self._n

    @property
    def name(self) -> str:
        """Label of this matrix (e.g. ``"ring"``)."""
        return self._name

    @property
    def dense(self) -> np.ndarray:
        """Read-only float64 array ``[n, n]``."""
        return self._W

    @property
    def shifts(self) -> Shifts | None:
        """Circulant form ``((s, w), ...)`` (``(W x)_i = Σ w · x[(i − s) mod n]``) or None."""
        return self._shifts

    @property
    def symmetric(self) -> bool:
        """Whether ``W == Wᵀ`` to 1e-12."""
        return self._symmetric

    @property
    def is_complete(self) -> bool:
        """Whether every entry equals ``1/n`` to 1e-12 (W = J, exact averaging)."""
        if self._complete is None:  # cached: the matrix is immutable and mix() asks every call
            self._complete = bool(np.all(np.abs(self._W - 1.0 / self._n) <= _EXACT_TOL))
        return self._complete

    @property
    def num_edges(self) -> int:
        """Number of directed edges ``i <- j`` (``j != i``, ``W[i, j] > 0``)."""
        off = self._W > 0
        return int(off.sum() - np.count_nonzero(np.diag(off)))

    # ------------------------------------------------------------------ neighbours
    def _check_node(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < self._n:
            raise ValueError(f"node index i must be an int in [0, {self._n}), got {i!r}")
        return int(i)

    def in_neighbors(self, i: int) -> list[tuple[int, float]]:
        """``(j, W[i, j])`` for every ``j != i`` with ``W[i, j] > 0``, sorted by ``j``.

        These are the nodes ``i`` receives from. Raises ValueError for ``i`` outside
        ``[0, n)``.
        """
        i = self._check_node(i)
        row = self._W[i]
        return [(int(j), float(row[j])) for j in np.flatnonzero(row > 0) if j != i]

    def out_neighbors(self, i: int) -> list[tuple[int, float]]:
        """``(j, W[j, i])`` for every ``j != i`` with ``W[j, i] > 0``, sorted by ``j``.

        These are the nodes ``i`` sends to, with the weight the receiver applies. Raises
        ValueError for ``i`` outside ``[0, n)``.
        """
        i = self._check_node(i)
        col = self._W[:, i]
        return [(int(j), float(col[j])) for j in np.flatnonzero(col > 0) if j != i]

    def self_weight(self, i: int) -> float:
        """``W[i, i]``."""
        i = self._check_node(i)
        return float(self._W[i, i])

    def out_degree(self, i: int) -> int:
        """Number of nodes ``i`` sends to (messages per round)."""
        return len(self.out_neighbors(i))

    def in_degree(self, i: int) -> int:
        """Number of nodes ``i`` receives from."""
        return len(self.in_neighbors(i))

    def _off_diag_support(self) -> np.ndarray:
        support = self._W > 0
        np.fill_diagonal(support, False)
        return support

    @property
    def out_degrees(self) -> np.ndarray:
        """Out-degree of every node, int array ``[n]`` (cached, read-only)."""
        if self._out_deg is None:
            self._out_deg = self._off_diag_support().sum(axis=0)
            self._out_deg.setflags(write=False)
        return self._out_deg

    @property
    def in_degrees(self) -> np.ndarray:
        """In-degree of every node, int array ``[n]``."""
        return self._off_diag_support().sum(axis=1)

    @property
    def max_out_degree(self) -> int:
        """Largest number of messages any node sends in this round."""
        return int(self.out_degrees.max())

    @property
    def max_in_degree(self) -> int:
        """Largest number of messages any node receives in this round."""
        return int(self.in_degrees.max())

    # ------------------------------------------------------------------ derived matrices
    def lazy(self) -> MixingMatrix:
        """The lazy matrix ``(I + W)/2`` (spec §2.1), named ``name + "-lazy"``.

        Its eigenvalues (for symmetric W) lie in ``[0, 1]``.
        """
        W = 0.5 * (np.eye(self._n) + self._W)
        shifts: Shifts | None = None
        if self._shifts is not None:
            acc: dict[int, float] = {0: 0.5}
            for s, w in self._shifts:
                acc[s] = acc.get(s, 0.0) + 0.5 * w
            shifts = tuple(sorted(acc.items()))
        return MixingMatrix(W, name=f"{self._name}-lazy", shifts=shifts, check=False)

    def spectral(self) -> SpectralInfo:
        """Spectral quantities (spec §2.2); computed once and cached."""
        if self._spectral is None:
            self._spectral = _spectral_info(self._W, self._symmetric)
        return self._spectral

    def mix(self, X: np.ndarray) -> np.ndarray:
        """One gossip step on stacked values ``X`` (``[n, ...]``): returns ``W X``.

        Uses the circulant shift form when available (``np.roll`` along axis 0).
        Raises ValueError if ``X.shape[0] != n``.
        """
        X = np.asarray(X)
        if X.ndim == 0 or X.shape[0] != self._n:
            raise ValueError(
                f"X must have a leading worker axis of size n = {self._n}, got shape {X.shape}"
            )
        if self._shifts is not None:
            out = np.zeros(X.shape, dtype=np.result_type(X.dtype, np.float64))
            for s, w in self._shifts:
                out += w * np.roll(X, s, axis=0)
            return out
        return np.tensordot(self._W, X, axes=(1, 0))

    # ------------------------------------------------------------------ torch views
    def torch_sparse(
        self, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """W as a ``torch.sparse_csr_tensor`` (``[n, n]``) on ``device`` with ``dtype``.

        ``dtype`` defaults to ``torch.float64``. Only strictly positive entries are stored.
        Cached per ``(device, dtype)`` on this instance.
        """
        import torch

        dev = torch.device(device)
        dt = torch.float64 if dtype is None else dtype
        key = (str(dev), dt, "csr")
        cached = self._torch_cache.get(key)
        if cached is None:
            support = self._W > 0
            crow = np.concatenate([[0], np.cumsum(support.sum(axis=1))])
            rows, cols = np.nonzero(support)
            with warnings.catch_warnings():  # "sparse CSR support is in beta state"
                warnings.simplefilter("ignore", UserWarning)
                cached = torch.sparse_csr_tensor(
                    torch.as_tensor(np.ascontiguousarray(crow), dtype=torch.int64),
                    torch.as_tensor(np.ascontiguousarray(cols), dtype=torch.int64),
                    torch.as_tensor(self._W[rows, cols], dtype=torch.float64).to(dt).contiguous(),
                    size=(self._n, self._n),
                    dtype=dt,
                    device=dev,
                    check_invariants=True,
                )
            self._torch_cache[key] = cached
        return cached

    def torch_dense(
        self, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """W as a dense tensor ``[n, n]`` on ``device`` (default dtype float64), cached."""
        import torch

        dev = torch.device(device)
        dt = torch.float64 if dtype is None else dtype
        key = (str(dev), dt, "dense")
        cached = self._torch_cache.get(key)
        if cached is None:
            cached = torch.as_tensor(np.array(self._W), dtype=dt, device=dev)
            self._torch_cache[key] = cached
        return cached

    def __repr__(self) -> str:
        kind = "symmetric" if self._symmetric else "directed"
        circ = ", circulant" if self._shifts is not None else ""
        return f"MixingMatrix(name={self._name!r}, n={self._n}, {kind}{circ})"
