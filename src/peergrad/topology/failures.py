"""Mixing weights of the graph that survives a round's failures (dropped links, absent workers).

A failure model (:mod:`peergrad.system`) decides, for one gossip round, which links are up and
which workers are present. This module turns the base graph and those decisions into the
Metropolis–Hastings mixing matrix of the *surviving* graph, so that gossip under failures stays
honest: no weight on an edge that carried no message, and W still symmetric and doubly
stochastic (the average is preserved exactly, spec ``decentralized.md`` §2.1):

- an undirected edge ``{i, j}`` survives iff both workers are present and both directed links
  ``i -> j`` and ``j -> i`` are up (a half-dead link carries nothing either way);
- ``W[i, j] = 1 / (1 + max(d_i, d_j))`` on surviving edges, with ``d`` the surviving degrees,
  and ``W[i, i] = 1 - sum_j W[i, j]``;
- an absent worker keeps its state: its row and column are those of the identity.

Edges are directed pairs ``(src, dst)``: ``src`` sends to ``dst`` (``W[dst, src] > 0``), the
library's orientation (``W[i, j]`` is the weight i gives to what it receives from j).
Everything is O(edges) except :func:`surviving_mixing_matrix`, which builds the dense
``[n, n]`` :class:`MixingMatrix` (O(n^2)) for code that needs one.

Failures need an undirected base graph: dropping an edge of a directed doubly stochastic W (the
exponential and one-peer exponential graphs) cannot keep it doubly stochastic with local
weights, so :func:`surviving_weights` refuses a directed base graph with a one-line ValueError.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from peergrad.topology.mixing import MixingMatrix

__all__ = ["graph_edges", "surviving_mixing_matrix", "surviving_weights"]


def graph_edges(W: MixingMatrix) -> tuple[Tensor, Tensor]:
    """The directed edges of W as ``(src, dst)``, int64 ``[E]`` each, sorted by src then dst.

    Edge ``src -> dst`` exists iff ``W[dst, src] > 0`` and ``src != dst``. Circulant matrices
    (ring, exponential, one-peer exponential) are listed from their shifts in O(E); others
    from the dense matrix (O(n^2)); cache the result per matrix when calling it every round.
    """
    n = W.n
    if W.shifts is not None:
        idx = torch.arange(n, dtype=torch.int64)
        offsets = sorted({s % n for s, w in W.shifts if s % n != 0 and w > 0})
        if not offsets:
            empty = torch.empty(0, dtype=torch.int64)
            return empty, empty.clone()
        src = idx.repeat_interleave(len(offsets))
        dst = (src + torch.tensor(offsets, dtype=torch.int64).repeat(n)) % n
        order = torch.argsort(src * n + dst)
        return src[order].contiguous(), dst[order].contiguous()
    support = W.dense.T > 0  # support[src, dst]
    np.fill_diagonal(support, False)
    s, d = np.nonzero(support)  # row-major: sorted by src then dst
    return torch.as_tensor(s, dtype=torch.int64), torch.as_tensor(d, dtype=torch.int64)


def _check_edges(n: int, src: Tensor, dst: Tensor) -> None:
    if src.shape != dst.shape or src.dim() != 1:
        raise ValueError(
            f"src and dst must be 1-D of equal length, got {tuple(src.shape)} and "
            f"{tuple(dst.shape)}"
        )
    if src.numel() and (
        int(src.min()) < 0 or int(dst.min()) < 0 or max(int(src.max()), int(dst.max())) >= n
    ):
        raise ValueError(f"edge endpoints must be worker ids in [0, {n})")
    if bool((src == dst).any()):
        raise ValueError("edges must not be self-loops (src == dst)")


def surviving_weights(
    n: int,
    src: Tensor,
    dst: Tensor,
    *,
    present: Tensor | None = None,
    link_up: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Metropolis–Hastings weights of the surviving graph, in edge-list form, O(E log E).

    Args:
        n: number of workers.
        src, dst: int64 ``[E]``, the base graph's directed edges (``src`` sends to ``dst``);
            the graph must be undirected: every ``(i, j)`` listed with its reverse ``(j, i)``.
        present: bool ``[n]``, the workers present this round (default: all).
        link_up: bool ``[E]``, whether each directed link is up this round (default: all).

    Returns:
        ``(src, dst, weight, self_weight)``: the surviving directed edges (int64 ``[E']``, both
        directions of every surviving undirected edge, in the input order), their weights
        ``W[dst, src]`` (float64 ``[E']``) and the diagonal ``W[i, i]`` (float64 ``[n]``; 1 for an
        absent or isolated worker). The matrix is symmetric and doubly stochastic.

    Raises:
        ValueError: if the edges are malformed or the base graph is directed.
    """
    _check_edges(n, src, dst)
    key = src * n + dst
    if not torch.equal(torch.sort(key).values, torch.sort(dst * n + src).values):
        raise ValueError(
            "failures (dropped links, absent workers) need an undirected base graph (every edge "
            "listed in both directions); a directed W such as the exponential or one-peer "
            "exponential graph cannot stay doubly stochastic when an edge drops"
        )
    keep = torch.ones_like(src, dtype=torch.bool)
    if present is not None:
        if present.shape != (n,) or present.dtype != torch.bool:
            raise ValueError(
                f"present must be bool [{n}], got {present.dtype} {tuple(present.shape)}"
            )
        keep &= present[src] & present[dst]
    if link_up is not None:
        if link_up.shape != src.shape or link_up.dtype != torch.bool:
            raise ValueError(
                f"link_up must be bool [{src.numel()}], got {link_up.dtype} {tuple(link_up.shape)}"
            )
        # An undirected edge survives iff both of its directed links are up.
        sorted_key, order = torch.sort(key)
        up_sorted = link_up[order]
        rev_pos = torch.searchsorted(sorted_key, dst * n + src)
        keep &= link_up & up_sorted[rev_pos]
    s, d = src[keep], dst[keep]
    deg = torch.zeros(n, dtype=torch.float64).index_add_(
        0, s, torch.ones(s.numel(), dtype=torch.float64)
    )
    weight = 1.0 / (1.0 + torch.maximum(deg[s], deg[d]))
    self_weight = 1.0 - torch.zeros(n, dtype=torch.float64).index_add_(0, d, weight)
    return s, d, weight, self_weight


def surviving_mixing_matrix(
    n: int,
    src: Tensor,
    dst: Tensor,
    *,
    present: Tensor | None = None,
    link_up: Tensor | None = None,
    name: str = "surviving",
) -> MixingMatrix:
    """The surviving graph's mixing matrix as a dense :class:`MixingMatrix` (O(n^2)).

    Same arguments and errors as :func:`surviving_weights`. The matrix may be disconnected (a
    round with failures need not be connected; an absent worker is isolated), so it is
    validated as doubly stochastic but not for connectivity.
    """
    s, d, w, diag = surviving_weights(n, src, dst, present=present, link_up=link_up)
    W = np.diag(diag.numpy())
    W[d.numpy(), s.numpy()] = w.numpy()
    return MixingMatrix(W, name=name, require_connected=False)
