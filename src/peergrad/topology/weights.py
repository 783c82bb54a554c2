"""Weight rules that turn an undirected graph into a doubly stochastic mixing matrix.

Source: specification ``decentralized.md`` §2.1 (Metropolis–Hastings weights, lazy matrix);
uniform weights ``1/(d+1)`` on a d-regular graph are the special case of MH listed there for
rings and tori.
"""

from __future__ import annotations

import numpy as np

__all__ = ["adjacency_matrix", "lazy", "metropolis_hastings", "uniform_weights"]


def adjacency_matrix(A: np.ndarray) -> np.ndarray:
    """Validate an undirected adjacency matrix and return it as a 0/1 float64 array.

    Any non-zero off-diagonal entry is an edge; the diagonal (self-loops) is ignored.

    Args:
        A: array-like ``[n, n]``, ``n >= 1``.

    Raises:
        ValueError: if ``A`` is not square, has non-finite or negative entries, or is not
            symmetric (the graph must be undirected).
    """
    A = np.asarray(A)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
        raise ValueError(f"adjacency matrix A must be square with n >= 1, got shape {A.shape}")
    A = A.astype(np.float64)
    if not np.all(np.isfinite(A)):
        i, j = (int(v) for v in np.argwhere(~np.isfinite(A))[0])
        raise ValueError(f"A[{i}, {j}] = {A[i, j]} is not finite; entries must be 0 or > 0")
    if np.any(A < 0):
        i, j = (int(v) for v in np.argwhere(A < 0)[0])
        raise ValueError(f"A[{i}, {j}] = {A[i, j]:g} is negative; entries must be 0 or > 0")
    E = (A != 0).astype(np.float64)
    np.fill_diagonal(E, 0.0)
    if not np.array_equal(E, E.T):
        i, j = (int(v) for v in np.argwhere(E != E.T)[0])
        raise ValueError(
            f"adjacency matrix A must be symmetric (undirected graph): A[{i}, {j}] is an edge "
            f"but A[{j}, {i}] is not"
        )
    return E


def metropolis_hastings(A: np.ndarray) -> np.ndarray:
    """Metropolis–Hastings weights of an undirected graph (spec §2.1).

    ``W[i, j] = 1 / (1 + max(d_i, d_j))`` for each edge, ``W[i, i] = 1 − Σ_{j≠i} W[i, j]``,
    0 otherwise. The result is symmetric, doubly stochastic, with ``W[i, i] > 0``.

    Args:
        A: adjacency ``[n, n]`` (non-zero off-diagonal = edge, diagonal ignored).

    Returns:
        float64 array ``[n, n]``.

    Raises:
        ValueError: see :func:`adjacency_matrix`.
    """
    E = adjacency_matrix(A)
    d = E.sum(axis=1)
    W = E / (1.0 + np.maximum(d[:, None], d[None, :]))
    np.fill_diagonal(W, 1.0 - W.sum(axis=1))
    return W


def uniform_weights(A: np.ndarray) -> np.ndarray:
    """Uniform weights ``1/(d+1)`` on self and each neighbour of a d-regular graph.

    On a regular graph this equals :func:`metropolis_hastings`.

    Args:
        A: adjacency ``[n, n]`` of a regular undirected graph.

    Returns:
        float64 array ``[n, n]``, ``(A + I)/(d + 1)``.

    Raises:
        ValueError: if the graph is not regular (the message lists the degrees found), or
            see :func:`adjacency_matrix`.
    """
    E = adjacency_matrix(A)
    d = E.sum(axis=1).astype(int)
    degrees = sorted(set(d.tolist()))
    if len(degrees) > 1:
        first_node = {k: int(np.flatnonzero(d == k)[0]) for k in degrees}
        examples = ", ".join(f"node {v} has degree {k}" for k, v in first_node.items())
        raise ValueError(
            f"uniform weights need a regular graph (all degrees equal); found degrees "
            f"{degrees} ({examples}); use weights='metropolis-hastings' instead"
        )
    return (E + np.eye(E.shape[0])) / (degrees[0] + 1.0)


def lazy(W: np.ndarray) -> np.ndarray:
    """The lazy matrix ``(I + W)/2`` (spec §2.1): maps a symmetric W's spectrum into [0, 1].

    Args:
        W: square array ``[n, n]``.

    Raises:
        ValueError: if ``W`` is not square.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"mixing matrix W must be square, got shape {W.shape}")
    return 0.5 * (np.eye(W.shape[0]) + W)
