"""Algorithms: one file per method, each with its citation and update rule, and the public API
for writing your own (guide: ``docs/guide/own-algorithm.md``).

Public and stable (what a user algorithm may import from here):

- the interface: :class:`Algorithm` and the bases to start from, :class:`SGDAlgorithm`
  (SGD with momentum and weight decay, :meth:`SGDAlgorithm.direction`),
  :class:`AdaptiveAlgorithm` (Adam family: ``lr``, ``b1``/``momentum``) and
  :class:`CompressedSGDAlgorithm` (a compressor from plain options); :class:`MomentumState`,
  :class:`LossClosure` and ``Closure`` (what ``step`` gets as ``closure``);
- state helpers :func:`state_to_dict` / :func:`state_from_dict`, :func:`bind_run`;
- the option checks :func:`check_positive`, :func:`check_non_negative`,
  :func:`check_unit_interval`, :func:`check_choice`, :func:`require_doubly_stochastic`;
- the registry and resolver: :data:`ALGORITHMS`, :data:`REGISTRY`, :data:`ENTRY_POINT_GROUP`,
  :func:`resolve_algorithm`, :func:`make_algorithm`, :func:`check_algorithm_class`,
  :func:`probe_algorithm`, :func:`algorithm_spec`, :func:`describe`;
- the 20 registered algorithms and their state classes.

Everything else (other names in the submodules, ``peergrad.algorithms.docs``, anything with a
leading underscore) is internal and may change.
"""

from __future__ import annotations

from peergrad.algorithms.allreduce import AllReduceSGD
from peergrad.algorithms.armijo_csgd import ArmijoCSGD, ArmijoState
from peergrad.algorithms.base import (
    AdaptiveAlgorithm,
    Algorithm,
    Closure,
    LossClosure,
    MomentumState,
    SGDAlgorithm,
    bind_run,
    check_choice,
    check_elastic,
    check_failures,
    check_non_negative,
    check_positive,
    check_unit_interval,
    require_doubly_stochastic,
    state_from_dict,
    state_to_dict,
)
from peergrad.algorithms.choco_sgd import ChocoSGD, ChocoState
from peergrad.algorithms.compressed import CompressedSGDAlgorithm
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
from peergrad.algorithms.diloco import DiLoCo, DiLoCoState
from peergrad.algorithms.distributed_adam import DistributedAdam, DistributedAdamState
from peergrad.algorithms.dpsgd import DPSGD
from peergrad.algorithms.ef_sgd import EFSGD, CompressedSGD, EFState
from peergrad.algorithms.gradient_tracking import GradientTracking, GTState
from peergrad.algorithms.local_sgd import LocalSGD, LocalSGDState
from peergrad.algorithms.post_local_sgd import PostLocalSGD
from peergrad.algorithms.powersgd import PowerSGD, PowerSGDState
from peergrad.algorithms.registry import (
    ALGORITHMS,
    ENTRY_POINT_GROUP,
    REGISTRY,
    algorithm_class,
    algorithm_spec,
    check_algorithm_class,
    describe,
    make_algorithm,
    probe_algorithm,
    resolve_algorithm,
)

__all__ = [
    "ALGORITHMS",
    "ENTRY_POINT_GROUP",
    "AdaptiveAlgorithm",
    "Closure",
    "CompressedSGDAlgorithm",
    "LossClosure",
    "algorithm_spec",
    "bind_run",
    "check_algorithm_class",
    "check_choice",
    "check_non_negative",
    "check_positive",
    "check_unit_interval",
    "probe_algorithm",
    "require_doubly_stochastic",
    "resolve_algorithm",
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
    "DiLoCo",
    "DiLoCoState",
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
    "PostLocalSGD",
    "PowerSGD",
    "PowerSGDState",
    "Algorithm",
    "AllReduceSGD",
    "MomentumState",
    "SGDAlgorithm",
    "algorithm_class",
    "check_elastic",
    "check_failures",
    "describe",
    "make_algorithm",
    "state_from_dict",
    "state_to_dict",
]
