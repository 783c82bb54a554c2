"""Algorithms: one file per method, each with its citation and update rule."""

from __future__ import annotations

from peergrad.algorithms.allreduce import AllReduceSGD
from peergrad.algorithms.base import (
    Algorithm,
    MomentumState,
    SGDAlgorithm,
    state_from_dict,
    state_to_dict,
)
from peergrad.algorithms.dpsgd import DPSGD
from peergrad.algorithms.registry import (
    ALGORITHMS,
    REGISTRY,
    algorithm_class,
    describe,
    make_algorithm,
)

__all__ = [
    "ALGORITHMS",
    "REGISTRY",
    "DPSGD",
    "Algorithm",
    "AllReduceSGD",
    "MomentumState",
    "SGDAlgorithm",
    "algorithm_class",
    "describe",
    "make_algorithm",
    "state_from_dict",
    "state_to_dict",
]
