"""The conformance kit: check that an algorithm keeps every promise peergrad makes for its own.

``check_algorithm(MyAlgorithm, lr=0.05, momentum=0.9)`` runs, in float64 and float32, every
generic check the project runs on its registry (its own tests call this same kit on all 18
registered algorithms, so the kit cannot drift from what the project guarantees)::

    from peergrad.testing import check_algorithm

    report = check_algorithm(MyDSGD, momentum=0.9)            # raises ConformanceError on failure
    print(report)                                             # passed / skipped (with reasons)
    check_algorithm(MyDSGD, distributed=True)                 # + simulated vs gloo processes

In pytest, :func:`parametrize_algorithms` gives one test per algorithm::

    from peergrad.testing import check_case, parametrize_algorithms

    @parametrize_algorithms([MyDSGD, AlgorithmCase(MyDSGD, {"momentum": 0.9})])
    def test_conformance(case):
        check_case(case)

The algorithm: a frozen dataclass subclass of :class:`peergrad.algorithms.Algorithm`
(``init``/``step`` on ``x: [w, D]``), given as its class (``**options`` or ``options=`` are its
hyper-parameters) or as an instance (its ``options()``). Options whose names collide with a
keyword of :func:`check_algorithm` (``n``, ``steps``, ``topology`` …) go in ``options=``.

Declarations read from the class (keyword arguments of :func:`check_algorithm` override them):

- ``preserves_mean: ClassVar[bool]`` (default False): communication preserves the workers'
  average of x (doubly stochastic gossip, exact averaging). Turns on ``mean_preservation``.
- ``centralized: ClassVar[tuple[...]]`` (default ``()``): the centralized ``torch.optim``
  methods it reduces to on one worker, each ``(options, optimizer, optimizer_options)`` with
  ``optimizer`` a ``torch.optim`` class or its dotted name (a :class:`Reduction`). Turns on
  ``centralized``.
- and what :class:`~peergrad.algorithms.Algorithm` already declares: ``uses_topology()``,
  ``failures``/``failures_note``, ``needs_closure``, ``coordinatewise``.

The workload (:mod:`peergrad.testing._run`): n = 4 workers (``n``) on a ring (``topology``),
``steps`` = 10 steps of noisy heterogeneous quadratics on a flat buffer of D = 210 coordinates
standing for a small model of :data:`PARAM_SHAPES` (bound as the engines bind it: layer-wise
segments, PowerSGD's matrices), every worker's gradient drawn for it alone so that any grouping
of the workers (all in one process, one per process, one alone) sees the same numbers; the
optimizer checks train a small MLP on random minibatches.

The checks (:data:`CHECKS`, in order; ``checks=`` picks some, ``skip={name: reason}`` leaves some
out with a reason shown in the report). Tolerances are absolute (``rtol = 0``), on O(1) values;
"exact" is bit for bit; ``tolerances={"check": atol}`` or ``{"check": {"float32": atol}}``
overrides a default:

=================== ========= ==============================================================
check               tolerance what it proves
=================== ========= ==============================================================
options             —         ``options()`` = the dataclass fields, JSON-serialisable,
                              ``cls(**options())`` rebuilds it; JSON-scalar defaults
invalid_options     —         ``lr`` 0 or NaN, ``momentum`` 1, ``weight_decay`` −1 raise a
                              ``ValueError`` naming the option and the value
step_contract       exact     x keeps shape/dtype/device, moves in place, stays finite;
                              ``state.step`` counts; no reference to ``g`` kept (the engines
                              reuse the gradient buffer)
pre_gradient        exact     ``step`` gives the same result with and without ``pre_gradient``
state_roundtrip     exact     the state (fields only) survives ``to_plain`` → ``torch.save`` →
                              ``torch.load(weights_only=True)`` → ``restore_into``
resume              exact     resume mid-run from a checkpoint = the uninterrupted run, on a
                              ring and a time-varying schedule (``resume_topologies``)
identity_mixing     exact     W = I: n workers = n independent 1-worker runs, no bytes sent
                              (skipped when ``uses_topology()`` is False)
mean_preservation   1e-12/-5  declared ``preserves_mean``: the worker mean of x after each
                              step equals the same step's without communication (W = I), on a
                              ring and an irregular graph (``mean_topologies``)
uses_topology       —         ``uses_topology()`` is False exactly when ring and complete
                              graph give the same iterates
vectorized          growth    no Python loop over workers: Python lines and torch calls per
                              step do not grow from n = 4 to n = 64 (< 0.5 per added worker)
clock               exact     a system clock without failures changes no number
failures            exact     the declared behaviour under link drops and an absent worker
optimizer           1e-12/-5  ``DistributedOptimizer`` on one worker = the bare algorithm
optimizer_resume    exact     ``DistributedOptimizer.state_dict`` resumes bit-exactly
centralized         1e-12/-5  declared reductions: one worker = the ``torch.optim`` method
engine_parity       1e-10/-5  simulated engine vs n gloo processes: same iterates (relative
                    relative  to max |x|), identical bytes, rounds and modelled time
                              (``distributed=True``)
overlap             0 or      ``DistributedOptimizer(overlap=True)`` = ``overlap=False`` on n
                    1e-12/-6  gloo processes (exact unless an all-reduce sums in another order;
                    relative  relative), same bytes and rounds; the overlapped run resumed from
                              its ``state_dict`` is bit-exact (``overlap=True``, default
                              ``distributed``)
=================== ========= ==============================================================

Each failure is one readable paragraph naming the check, the dtype, the step and the largest
difference, with a hint; a check whose run raises reports the exception (type, message,
innermost frame) as its failure: a broken algorithm is reported, never a crash of the kit. When
``step_contract`` fails on a dtype, the checks that step the algorithm on that dtype are skipped
with that reason (their failures would be consequences). Skipped checks say why (not declared,
topology refused, distributed off, ``skip=``).

Settings (keyword arguments of :func:`check_algorithm`, and the ``settings`` of an
:class:`AlgorithmCase`): ``dtypes`` (default float64 and float32), ``n`` (4), ``steps`` (10),
``topology`` ("ring"), ``resume_topologies``, ``mean_topologies``, ``preserves_mean``,
``centralized``, ``distributed`` (False), ``overlap`` (default: ``distributed``), ``checks``,
``skip``, ``tolerances``, ``param_shapes`` (:data:`PARAM_SHAPES`), ``optimizer_options``
(keyword arguments of ``DistributedOptimizer`` in the overlap check, e.g. ``clip_grad_norm``);
and ``timeout_s`` (the gloo launch, 600 s) and ``raise_on_failure`` (True).

Entry points: :func:`check_algorithm` (one algorithm), :func:`check_case` (an
:class:`AlgorithmCase`, with overrides), :func:`check_algorithms` (several, sharing one launch of
gloo processes for their distributed checks; returns the reports without raising),
:func:`parametrize_algorithms` (pytest). Distributed checks start ``n`` Python processes on
loopback (gloo) that import the algorithm's class by its module and qualified name: a class
defined inside a function or in ``__main__`` is reported as a failure of those checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peergrad.testing._report import CheckResult, ConformanceError, ConformanceReport

if TYPE_CHECKING:
    from peergrad.testing._api import (
        CHECKS,
        DISTRIBUTED_CHECKS,
        AlgorithmCase,
        check_algorithm,
        check_algorithms,
        check_case,
    )
    from peergrad.testing._checks import Reduction
    from peergrad.testing._run import PARAM_SHAPES
    from peergrad.testing.pytest import parametrize_algorithms

__all__ = [
    "CHECKS",
    "DISTRIBUTED_CHECKS",
    "PARAM_SHAPES",
    "AlgorithmCase",
    "CheckResult",
    "ConformanceError",
    "ConformanceReport",
    "Reduction",
    "check_algorithm",
    "check_algorithms",
    "check_case",
    "parametrize_algorithms",
]

_LAZY = {
    "CHECKS": "peergrad.testing._api",
    "DISTRIBUTED_CHECKS": "peergrad.testing._api",
    "AlgorithmCase": "peergrad.testing._api",
    "check_algorithm": "peergrad.testing._api",
    "check_algorithms": "peergrad.testing._api",
    "check_case": "peergrad.testing._api",
    "Reduction": "peergrad.testing._checks",
    "PARAM_SHAPES": "peergrad.testing._run",
    "parametrize_algorithms": "peergrad.testing.pytest",
}


def __getattr__(name: str) -> Any:
    """The names that need torch, imported on first use (``import peergrad.testing`` stays
    light)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'peergrad.testing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
