"""Algorithms: one file per method, each with its citation and update rule."""

from __future__ import annotations

from peergrad.algorithms.allreduce import AllReduceSGD
from peergrad.algorithms.armijo_csgd import ArmijoCSGD, ArmijoState
from peergrad.algorithms.base import (
    Algorithm,
    MomentumState,
    SGDAlgorithm,
    check_failures,
    state_from_dict,
    state_to_dict,
)
from peergrad.algorithms.choco_sgd import ChocoSGD, ChocoState
from peergrad.algorithms.d2 import D2, D2State
from peergrad.algorithms.dadam import (
    DADAM,
    DADAMNaive,
    DADAMState,
    DecentralizedAdamNaive,
    LocalAdaptiveGossip,
)
from peergrad.algorithms.decentralized_adaptive import (
    DecentralizedAdaGrad,
    DecentralizedAdam,
    DecentralizedAdaptive,
    DecentralizedAdaptiveState,
    DecentralizedAMSGrad,
)
from peergrad.algorithms.detag import DeTAG, DeTAGState
from peergrad.algorithms.distributed_adam import DistributedAdam, DistributedAdamState
from peergrad.algorithms.dpsgd import DPSGD
from peergrad.algorithms.ef_sgd import EFSGD, CompressedSGD, EFState
from peergrad.algorithms.gradient_tracking import GradientTracking, GTState
from peergrad.algorithms.local_sgd import LocalSGD, LocalSGDState
from peergrad.algorithms.powersgd import PowerSGD, PowerSGDState
from peergrad.algorithms.registry import (
    ALGORITHMS,
    REGISTRY,
    algorithm_class,
    describe,
    make_algorithm,
)

__all__ = [
    "ALGORITHMS",
    "ArmijoCSGD",
    "ArmijoState",
    "REGISTRY",
    "ChocoSGD",
    "ChocoState",
    "D2",
    "DPSGD",
    "EFSGD",
    "EFState",
    "CompressedSGD",
    "D2State",
    "DADAM",
    "DADAMNaive",
    "DADAMState",
    "DecentralizedAMSGrad",
    "DecentralizedAdaGrad",
    "DecentralizedAdam",
    "DecentralizedAdamNaive",
    "DecentralizedAdaptive",
    "DecentralizedAdaptiveState",
    "DeTAG",
    "DeTAGState",
    "DistributedAdam",
    "DistributedAdamState",
    "GTState",
    "GradientTracking",
    "LocalAdaptiveGossip",
    "LocalSGD",
    "LocalSGDState",
    "PowerSGD",
    "PowerSGDState",
    "Algorithm",
    "AllReduceSGD",
    "MomentumState",
    "SGDAlgorithm",
    "algorithm_class",
    "check_failures",
    "describe",
    "make_algorithm",
    "state_from_dict",
    "state_to_dict",
]
