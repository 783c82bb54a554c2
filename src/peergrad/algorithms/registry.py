"""The registry: algorithm names -> classes, built from one explicit tuple.

The CLI, the tests and the docs are generated from :data:`ALGORITHMS`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from peergrad.algorithms.allreduce import AllReduceSGD
from peergrad.algorithms.armijo_csgd import ArmijoCSGD
from peergrad.algorithms.base import Algorithm
from peergrad.algorithms.choco_sgd import ChocoSGD
from peergrad.algorithms.d2 import D2
from peergrad.algorithms.dadam import DADAM, DADAMNaive, DecentralizedAdamNaive
from peergrad.algorithms.decentralized_adaptive import (
    DecentralizedAdaGrad,
    DecentralizedAdam,
    DecentralizedAMSGrad,
)
from peergrad.algorithms.detag import DeTAG
from peergrad.algorithms.distributed_adam import DistributedAdam
from peergrad.algorithms.dpsgd import DPSGD
from peergrad.algorithms.ef_sgd import EFSGD, CompressedSGD
from peergrad.algorithms.gradient_tracking import GradientTracking
from peergrad.algorithms.local_sgd import LocalSGD
from peergrad.algorithms.powersgd import PowerSGD

ALGORITHMS: tuple[type[Algorithm], ...] = (
    AllReduceSGD,
    DPSGD,
    D2,
    GradientTracking,
    DeTAG,
    DecentralizedAMSGrad,
    DecentralizedAdaGrad,
    DecentralizedAdam,
    DADAM,
    DADAMNaive,
    DecentralizedAdamNaive,
    EFSGD,
    CompressedSGD,
    ArmijoCSGD,
    PowerSGD,
    ChocoSGD,
    DistributedAdam,
    LocalSGD,
)
REGISTRY: dict[str, type[Algorithm]] = {cls.name: cls for cls in ALGORITHMS}


def algorithm_class(name: str) -> type[Algorithm]:
    """The class registered as ``name``; ``ValueError`` lists the valid names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown algorithm {name!r}; choose one of: {', '.join(REGISTRY)}"
        ) from None


def make_algorithm(name: str, **options: Any) -> Algorithm:
    """Instantiate algorithm ``name`` with hyper-parameters ``options``.

    Values given as strings (from ``--set key=value``) are converted to the field's type.
    Unknown option names raise ``ValueError`` listing the algorithm's hyper-parameters.
    """
    cls = algorithm_class(name)
    fields = cls.hyperparameters()
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"algorithm {name!r} has no option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(fields) or '(none)'}"
        )
    hints = typing.get_type_hints(cls)
    converted = {k: coerce(name, k, v, hints[k]) for k, v in options.items()}
    return cls(**converted)


def coerce(algorithm: str, key: str, value: Any, annotation: Any) -> Any:
    """Convert a CLI string to the annotated type (bool, int, float, str, or an Optional)."""
    if not isinstance(value, str):
        return value
    types_ = _candidate_types(annotation)
    if type(None) in types_ and value.lower() in ("none", "null", "auto"):
        return None
    for t in types_:
        if t is bool:
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        elif t is int:
            try:
                return int(value)
            except ValueError:
                pass
        elif t is float:
            try:
                return float(value)
            except ValueError:
                pass
        elif t is str:
            return value
    names = "/".join(getattr(t, "__name__", str(t)) for t in types_)
    raise ValueError(f"{algorithm}: option {key}={value!r} is not a valid {names}")


def _candidate_types(annotation: Any) -> list[Any]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return list(typing.get_args(annotation))
    return [annotation]


def describe() -> list[dict[str, Any]]:
    """One record per registered algorithm: name, paper, summary, default hyper-parameters."""
    out = []
    for cls in ALGORITHMS:
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }
        out.append(
            {"name": cls.name, "paper": cls.paper, "summary": cls.summary, "options": defaults}
        )
    return out
