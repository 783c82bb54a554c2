"""The registry: algorithm names -> classes, built from one explicit tuple, and the resolver of
users' own algorithms.

The CLI, the tests and the docs are generated from :data:`ALGORITHMS`. Every entry point
(``peergrad train --algorithm``, ``peergrad compare --algorithms``, ``peergrad algorithms``,
:func:`peergrad.train.train`, :func:`peergrad.study.compare.compare`,
:class:`~peergrad.optim.DistributedOptimizer` through :func:`make_algorithm`) turns what the user
named into a class with one function, :func:`resolve_algorithm`, which accepts

- a registered name (``dpsgd``);
- the name of an algorithm that an installed package registers through the entry-point group
  :data:`ENTRY_POINT_GROUP` (``peergrad.algorithms``; loaded only when asked for);
- ``package.module:Class``, imported (:func:`peergrad._importing.import_object`, the importer
  of ``--model`` and ``--dataset`` too);
- an :class:`~peergrad.algorithms.base.Algorithm` subclass or an instance of one.

A class from outside the registry is checked once, with one-line errors naming the class and
the rule (:func:`check_algorithm_class`), and then probed with one step on a tiny problem
(:func:`probe_algorithm`, run by :func:`peergrad.train.validate.validate` before any work).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import types
import typing
from typing import Any

import torch

from peergrad._importing import algorithm_spec as algorithm_spec
from peergrad._importing import import_object
from peergrad.algorithms.allreduce import AllReduceSGD
from peergrad.algorithms.armijo_csgd import ArmijoCSGD
from peergrad.algorithms.base import Algorithm, LossClosure, bind_run
from peergrad.algorithms.choco_sgd import ChocoSGD
from peergrad.algorithms.d2 import D2
from peergrad.algorithms.dadam import DADAM, DADAMNaive, DecentralizedAdamNaive
from peergrad.algorithms.decentralized_adaptive import (
    DecentralizedAdaGrad,
    DecentralizedAdam,
    DecentralizedAMSGrad,
)
from peergrad.algorithms.detag import DeTAG
from peergrad.algorithms.diloco import DiLoCo
from peergrad.algorithms.distributed_adam import DistributedAdam
from peergrad.algorithms.dpsgd import DPSGD
from peergrad.algorithms.ef_sgd import EFSGD, CompressedSGD
from peergrad.algorithms.gradient_tracking import GradientTracking
from peergrad.algorithms.local_sgd import LocalSGD
from peergrad.algorithms.post_local_sgd import PostLocalSGD
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
    PostLocalSGD,
    DiLoCo,
)
REGISTRY: dict[str, type[Algorithm]] = {cls.name: cls for cls in ALGORITHMS}


#: The entry-point group through which an installed package registers algorithms: in its
#: ``pyproject.toml``, ``[project.entry-points."peergrad.algorithms"]`` then
#: ``my-method = "my_package.module:MyMethod"`` (the entry point's name must equal the class's
#: ``name``).
ENTRY_POINT_GROUP = "peergrad.algorithms"

#: What ``--algorithm`` accepts, for error messages.
ACCEPTED = "a registered name, an installed plugin's name, or package.module:Class"


def entry_point_names() -> tuple[str, ...]:
    """The names that installed packages register in :data:`ENTRY_POINT_GROUP` (nothing is
    loaded; a name equal to a built-in one is listed too and refused when resolved)."""
    return tuple(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def plugin_algorithms() -> tuple[type[Algorithm], ...]:
    """The classes of every installed entry point of :data:`ENTRY_POINT_GROUP`, loaded and
    checked (``ValueError`` for the first bad one)."""
    return tuple(resolve_algorithm(name) for name in entry_point_names())


def _load_entry_point(name: str) -> type[Algorithm] | None:
    eps = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not eps:
        return None
    ep = eps[0]
    where = f"entry point {name!r} ({ep.value}) of group {ENTRY_POINT_GROUP}"
    try:
        obj = ep.load()
    except Exception as exc:  # the plugin's module raised while being imported
        raise ValueError(
            f"--algorithm {name!r}: loading {where} failed: {type(exc).__name__}: {exc}"
        ) from None
    cls = check_algorithm_class(obj, where=where)
    if cls.name != name:
        raise ValueError(
            f"--algorithm {name!r}: {_qualified(cls)} from {where} has name {cls.name!r}; an "
            "entry point's name must equal its class's name"
        )
    return cls


def resolve_algorithm(spec: str | type[Algorithm] | Algorithm) -> type[Algorithm]:
    """The algorithm class that ``spec`` names: a registered name, an installed plugin's name
    (:data:`ENTRY_POINT_GROUP`), ``package.module:Class``, a class, or an instance (its class).

    Raises:
        ValueError: one line naming the spec or class and the rule it breaks: an unknown name
            (with the valid ones), a path that does not import, an object that is no
            :class:`Algorithm` subclass, a missing ``name``, a ``name`` that another algorithm
            registers, an attribute without a type annotation (see
            :func:`check_algorithm_class`).
    """
    if isinstance(spec, Algorithm):
        spec = type(spec)
    if isinstance(spec, type):
        return check_algorithm_class(spec, where="")
    if not isinstance(spec, str):
        raise ValueError(
            f"--algorithm must be {ACCEPTED}, an Algorithm subclass or an instance; got "
            f"{type(spec).__name__} {spec!r}"
        )
    if spec in REGISTRY:
        return REGISTRY[spec]
    if ":" in spec:
        obj = import_object(spec, flag="--algorithm", what="Class")
        return check_algorithm_class(obj, where=spec)
    cls = _load_entry_point(spec)
    if cls is None:
        plugins = [n for n in entry_point_names() if n not in REGISTRY]
        raise ValueError(
            f"--algorithm: unknown algorithm {spec!r}; choose one of: "
            f"{', '.join([*REGISTRY, *plugins])}, or package.module:Class"
        )
    return cls


def _qualified(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"


def check_algorithm_class(obj: Any, *, where: str = "") -> type[Algorithm]:
    """``obj`` if it is a usable algorithm class; ``ValueError`` (one line naming the class and
    the rule) otherwise. The rules:

    - a class, and a subclass of :class:`Algorithm`;
    - a dataclass of its own (``@dataclasses.dataclass(frozen=True)`` on the class itself, so
      that its hyper-parameters are fields), frozen;
    - ``name``: a non-empty string without ``:`` or ``,``, not the name of a registered
      algorithm unless the class is that algorithm;
    - every class attribute that looks like a hyper-parameter (not a method, property or
      ``ClassVar``) has a type annotation (else it is no field: ``--set`` could not reach it);
      the annotations resolve (:func:`typing.get_type_hints`);
    - ``init`` and ``step`` are implemented.
    """
    own = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
    at = f" ({where})" if where and where != own else ""
    if not isinstance(obj, type):
        raise ValueError(
            f"--algorithm {where!r}: {obj!r} is a {type(obj).__name__}, not an "
            "algorithm class (a subclass of peergrad.algorithms.Algorithm)"
        )
    label = f"algorithm class {_qualified(obj)}{at}"
    if not issubclass(obj, Algorithm):
        raise ValueError(
            f"{label} is not a subclass of peergrad.algorithms.Algorithm (start from "
            "SGDAlgorithm, AdaptiveAlgorithm, CompressedSGDAlgorithm or Algorithm)"
        )
    cls: type[Algorithm] = obj
    if REGISTRY.get(cls.name) is cls:
        return cls
    name = cls.__dict__.get("name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(
            f'{label} has no name: set the class attribute name: ClassVar[str] = "my-method"'
        )
    if ":" in name or "," in name or name != name.strip():
        raise ValueError(f"{label}: name {name!r} must not contain ':', ',' or outer spaces")
    if name in REGISTRY:
        raise ValueError(
            f"{label}: name {name!r} is the name of the registered algorithm "
            f"{_qualified(REGISTRY[name])}; choose another name"
        )
    params = cls.__dict__.get("__dataclass_params__")
    if "__dataclass_fields__" not in cls.__dict__ or params is None:
        raise ValueError(
            f"{label} is not a dataclass: decorate it with @dataclasses.dataclass(frozen=True) "
            "so that its hyper-parameters are fields"
        )
    if not params.frozen:
        raise ValueError(f"{label} must be frozen: use @dataclasses.dataclass(frozen=True)")
    annotated = set(getattr(cls, "__annotations__", {}))
    for klass in cls.__mro__:
        annotated |= set(klass.__dict__.get("__annotations__", {}))
    for attr, value in cls.__dict__.items():
        if attr.startswith("_") or attr in annotated:
            continue
        if callable(value) or isinstance(value, (property, classmethod, staticmethod, type)):
            continue
        raise ValueError(
            f"{label}: attribute {attr} = {value!r} has no type annotation, so it is no "
            f"hyper-parameter; write {attr}: {type(value).__name__} = {value!r} (or "
            f"{attr}: ClassVar[...] for a constant)"
        )
    try:
        typing.get_type_hints(cls)
    except Exception as exc:
        raise ValueError(
            f"{label}: its type annotations do not resolve: {type(exc).__name__}: {exc}"
        ) from None
    for method in ("init", "step"):
        if getattr(cls, method) is getattr(Algorithm, method):
            raise ValueError(f"{label} does not implement {method}()")
    return cls


def algorithm_class(name: str | type[Algorithm] | Algorithm) -> type[Algorithm]:
    """The class that ``name`` names (:func:`resolve_algorithm`); ``ValueError`` lists the
    valid names otherwise."""
    return resolve_algorithm(name)


def make_algorithm(spec: str | type[Algorithm] | Algorithm, **options: Any) -> Algorithm:
    """Instantiate the algorithm ``spec`` names (:func:`resolve_algorithm`) with
    hyper-parameters ``options``; an instance's own fields are the defaults that ``options``
    replace.

    Values given as strings (from ``--set key=value``) are converted to the field's type.
    Unknown option names raise ``ValueError`` listing the algorithm's hyper-parameters.
    """
    cls = resolve_algorithm(spec)
    name = cls.name
    fields = cls.hyperparameters()
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"algorithm {name!r} has no option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(fields) or '(none)'}"
        )
    hints = typing.get_type_hints(cls)
    converted = {k: coerce(name, k, v, hints[k]) for k, v in options.items()}
    if isinstance(spec, Algorithm):
        return dataclasses.replace(spec, **converted) if converted else spec
    return cls(**converted)


def probe_algorithm(algorithm: Algorithm, dtype: torch.dtype = torch.float32) -> None:
    """One step of ``algorithm`` on a tiny problem (2 workers, ``x: [2, 3]``, gradient ``x``,
    complete graph, simulated communicator), to refuse before any work an algorithm whose
    ``step`` breaks the contract. Registered algorithms are not probed.

    Raises:
        ValueError: one line naming the class and the rule: ``init`` or ``step`` raised, the
            state is not a dataclass (it could not be saved), ``step`` returned a state of
            another type than ``init``'s, or changed ``x``'s shape or dtype.
    """
    cls = type(algorithm)
    if REGISTRY.get(cls.name) is cls:
        return
    from peergrad.comm.simulated import SimulatedCommunicator
    from peergrad.topology import make_topology

    label = f"algorithm class {_qualified(cls)} ({cls.name})"
    n, d = 2, 3
    comm = SimulatedCommunicator(make_topology("complete", n))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    alg = bind_run(algorithm, segments=(d,), shapes=((d,),), batches_per_epoch=1)

    def fn(xt: torch.Tensor) -> torch.Tensor:
        return 0.5 * (xt * xt).sum(dim=1)

    stage = "init"
    try:
        state = alg.init(x, comm)
        if not dataclasses.is_dataclass(state) or isinstance(state, type):
            raise _Rule(
                f"init returned a {type(state).__name__}, not a dataclass instance of tensors "
                "and ints (the state must be explicit so that checkpoints can save it)"
            )
        for stage in ("step 1", "step 2"):
            g = x.clone()
            pending = alg.pre_gradient(x, state, comm)
            new = alg.step(x, g, state, comm, LossClosure(fn, fn(x)), pending)
            if type(new) is not type(state):
                raise _Rule(
                    f"{stage} returned a {type(new).__name__}, not the "
                    f"{type(state).__name__} that init returned"
                )
            if x.shape != (n, d) or x.dtype != dtype:
                raise _Rule(
                    f"{stage} changed x from {dtype} [{n}, {d}] to {x.dtype} "
                    f"{list(x.shape)}; update x in place"
                )
            state = new
    except _Rule as exc:
        raise ValueError(f"{label}: {exc}") from None
    except Exception as exc:
        raise ValueError(
            f"{label}: {stage} on a probe problem (2 workers, x: {dtype} [2, 3]) raised "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from None


class _Rule(Exception):
    """A broken rule of :func:`probe_algorithm` (turned into its ``ValueError``)."""


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


def describe(*, plugins: bool = True) -> list[dict[str, Any]]:
    """One record per registered algorithm (and, with ``plugins``, per installed entry point of
    :data:`ENTRY_POINT_GROUP`): name, paper, summary, default hyper-parameters."""
    out = []
    for cls in ALGORITHMS + (plugin_algorithms() if plugins else ()):
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }
        out.append(
            {"name": cls.name, "paper": cls.paper, "summary": cls.summary, "options": defaults}
        )
    return out
