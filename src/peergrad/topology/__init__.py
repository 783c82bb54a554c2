"""Topologies, mixing matrices and spectral quantities for decentralized training.

Source: specification ``decentralized.md`` §1–2. Orientation (library-wide): ``W[i, j]`` is
the weight node ``i`` gives to the value it receives from node ``j``; a gossip step on stacked
values ``X`` (``[n, d]``) is ``(W X)_i = Σ_j W[i, j] X[j]``.
"""

from __future__ import annotations

from peergrad.topology.failures import graph_edges, surviving_mixing_matrix, surviving_weights
from peergrad.topology.graphs import (
    TOPOLOGIES,
    complete,
    erdos_renyi,
    exponential,
    from_adjacency,
    from_matrix,
    from_networkx,
    identity,
    make_topology,
    one_peer_exponential,
    ring,
    star,
    torus,
    torus_shape,
)
from peergrad.topology.mixing import (
    MixingMatrix,
    SpectralInfo,
    circulant_shifts,
    validate_mixing_matrix,
)
from peergrad.topology.schedule import Topology
from peergrad.topology.weights import adjacency_matrix, lazy, metropolis_hastings, uniform_weights

__all__ = [
    "TOPOLOGIES",
    "MixingMatrix",
    "SpectralInfo",
    "Topology",
    "adjacency_matrix",
    "circulant_shifts",
    "complete",
    "erdos_renyi",
    "exponential",
    "from_adjacency",
    "from_matrix",
    "from_networkx",
    "graph_edges",
    "identity",
    "lazy",
    "make_topology",
    "metropolis_hastings",
    "one_peer_exponential",
    "ring",
    "star",
    "surviving_mixing_matrix",
    "surviving_weights",
    "torus",
    "torus_shape",
    "uniform_weights",
    "validate_mixing_matrix",
]
