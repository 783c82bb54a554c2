"""The kit's driver: which checks run, on which dtypes and cases, and how failures are caught.

Every check runs in its own ``try``: an exception raised by the algorithm (or anything else)
becomes that check's failure, with the exception's type, message and innermost frame, so a
broken algorithm is reported, never a crash of the kit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch

from peergrad.algorithms.base import Algorithm
from peergrad.testing import _checks as C
from peergrad.testing import _optim_checks as O
from peergrad.testing import _system_checks as SC
from peergrad.testing import _vectorized as V
from peergrad.testing._report import CheckResult, ConformanceReport
from peergrad.testing._run import PARAM_SHAPES, describe_exception


@dataclasses.dataclass(frozen=True)
class _Spec:
    fn: Callable[[C.Ctx], str]
    #: "each": once per dtype; "first": once, on the first dtype; "none": once, no dtype
    dtypes: str
    cases: Callable[[C.Settings], list[Any]] | None = None
    distributed: bool = False


def _resume_cases(s: C.Settings) -> list[Any]:
    return list(s.resume_topologies)


def _mean_cases(s: C.Settings) -> list[Any]:
    return list(s.mean_topologies) if s.preserves_mean else []


def _centralized_cases(s: C.Settings) -> list[Any]:
    return list(s.centralized)


def _distributed_check(name: str) -> Callable[[C.Ctx], str]:
    def fn(ctx: C.Ctx) -> str:  # pragma: no cover - the driver answers these from one launch
        raise RuntimeError(f"{name} runs in the distributed launch")

    return fn


SPECS: dict[str, _Spec] = {
    "options": _Spec(C.check_options, "none"),
    "invalid_options": _Spec(C.check_invalid_options, "none"),
    "step_contract": _Spec(C.check_step_contract, "each"),
    "pre_gradient": _Spec(C.check_pre_gradient, "each"),
    "state_roundtrip": _Spec(C.check_state_roundtrip, "each"),
    "resume": _Spec(C.check_resume, "each", _resume_cases),
    "identity_mixing": _Spec(C.check_identity_mixing, "each"),
    "mean_preservation": _Spec(C.check_mean_preservation, "each", _mean_cases),
    "uses_topology": _Spec(C.check_uses_topology, "first"),
    "vectorized": _Spec(V.check_vectorized, "first"),
    "clock": _Spec(SC.check_clock, "each"),
    "failures": _Spec(SC.check_failure_behaviour, "each"),
    "optimizer": _Spec(O.check_optimizer, "each"),
    "optimizer_resume": _Spec(O.check_optimizer_resume, "each"),
    "centralized": _Spec(O.check_centralized, "each", _centralized_cases),
    "engine_parity": _Spec(_distributed_check("engine_parity"), "each", distributed=True),
    "overlap": _Spec(_distributed_check("overlap"), "each", distributed=True),
}

#: Every check, in the order they run.
CHECKS: tuple[str, ...] = tuple(SPECS)
#: The checks that start gloo processes (``distributed=True`` / ``overlap=True``).
DISTRIBUTED_CHECKS: tuple[str, ...] = tuple(k for k, v in SPECS.items() if v.distributed)

_NOT_DECLARED = {
    "mean_preservation": "not declared: the class does not set preserves_mean = True (pass "
    "preserves_mean=True to check it)",
    "centralized": "not declared: the class sets no centralized reductions (pass centralized=...)",
}


@dataclasses.dataclass(frozen=True)
class AlgorithmCase:
    """One algorithm to check: a class (or an instance, whose options are taken), its
    hyper-parameters ``options``, keyword arguments of :func:`check_algorithm` for this case
    (``settings``: tolerances, topologies, declarations …) and an ``id`` for test names
    (default: the class's ``name`` or qualified name and the options)."""

    algorithm: Any
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    id: str | None = None

    @property
    def cls(self) -> type[Algorithm]:
        return self.algorithm if isinstance(self.algorithm, type) else type(self.algorithm)

    @property
    def key(self) -> str:
        if self.id is not None:
            return self.id
        name = getattr(self.cls, "name", "") or self.cls.__qualname__
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{name}[{opts}]" if opts else name


def _dtype(value: Any) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtypes: {value!r} is not a floating-point torch dtype")
    return dtype


def _split_algorithm(algorithm: Any, options: Mapping[str, Any]) -> tuple[type, dict[str, Any]]:
    if isinstance(algorithm, AlgorithmCase):
        raise TypeError("pass an AlgorithmCase to check_case(), not check_algorithm()")
    if isinstance(algorithm, type):
        return algorithm, dict(options)
    if isinstance(algorithm, Algorithm) or dataclasses.is_dataclass(algorithm):
        base = algorithm.options() if hasattr(algorithm, "options") else {}
        return type(algorithm), {**base, **options}
    raise TypeError(
        f"check_algorithm needs an algorithm class or instance, got {type(algorithm).__name__}"
    )


def check_algorithm(
    algorithm: Any,
    /,
    *,
    options: Mapping[str, Any] | None = None,
    dtypes: Sequence[Any] = ("float64", "float32"),
    n: int = 4,
    steps: int = 10,
    topology: str = "ring",
    resume_topologies: Sequence[str] = ("ring", "one-peer-exponential"),
    mean_topologies: Sequence[str] = ("ring", "star"),
    preserves_mean: bool | None = None,
    centralized: Sequence[Any] | None = None,
    distributed: bool = False,
    overlap: bool | None = None,
    checks: Collection[str] | None = None,
    skip: Mapping[str, str] | None = None,
    tolerances: Mapping[str, Any] | None = None,
    param_shapes: Sequence[Sequence[int]] = PARAM_SHAPES,
    optimizer_options: Mapping[str, Any] | None = None,
    timeout_s: float = 600.0,
    raise_on_failure: bool = True,
    **algorithm_options: Any,
) -> ConformanceReport:
    """Run every applicable conformance check on ``algorithm``; see :mod:`peergrad.testing`.

    Returns the :class:`ConformanceReport`; raises :class:`ConformanceError` (one paragraph
    per failed check) when a check failed and ``raise_on_failure`` (default). ``ValueError``
    for an unknown check name, dtype or tolerance key.
    """
    reports = _check_many(
        [
            AlgorithmCase(
                algorithm,
                {**(options or {}), **algorithm_options},
                dict(
                    dtypes=dtypes,
                    n=n,
                    steps=steps,
                    topology=topology,
                    resume_topologies=resume_topologies,
                    mean_topologies=mean_topologies,
                    preserves_mean=preserves_mean,
                    centralized=centralized,
                    distributed=distributed,
                    overlap=overlap,
                    checks=checks,
                    skip=skip,
                    tolerances=tolerances,
                    param_shapes=param_shapes,
                    optimizer_options=optimizer_options,
                ),
            )
        ],
        timeout_s=timeout_s,
    )
    report = next(iter(reports.values()))
    return report.raise_for_failures() if raise_on_failure else report


def check_case(case: AlgorithmCase, /, **overrides: Any) -> ConformanceReport:
    """:func:`check_algorithm` on an :class:`AlgorithmCase`: its options, its settings, then
    ``overrides`` (keyword arguments of :func:`check_algorithm`)."""
    raise_on_failure = overrides.pop("raise_on_failure", True)
    timeout_s = overrides.pop("timeout_s", 600.0)
    report = _check_many([_with_settings(case, overrides)], timeout_s=timeout_s)[case.key]
    return report.raise_for_failures() if raise_on_failure else report


def check_algorithms(
    cases: Sequence[Any], /, *, timeout_s: float = 600.0, **common: Any
) -> dict[str, ConformanceReport]:
    """Check several algorithms (classes, instances or :class:`AlgorithmCase`), sharing one
    launch of gloo processes for all their distributed checks. ``common``: keyword arguments of
    :func:`check_algorithm` for every case (a case's own settings win). Returns ``{case.key:
    report}``; never raises for a failed check (see
    :meth:`ConformanceReport.raise_for_failures`)."""
    full = []
    for c in cases:
        case = c if isinstance(c, AlgorithmCase) else AlgorithmCase(c)
        full.append(dataclasses.replace(case, settings={**common, **case.settings}))
    keys = [c.key for c in full]
    if len(set(keys)) != len(keys):
        raise ValueError(f"cases must have distinct keys (give them an id): {keys}")
    return _check_many(full, timeout_s=timeout_s)


def _with_settings(case: AlgorithmCase, overrides: Mapping[str, Any]) -> AlgorithmCase:
    return dataclasses.replace(case, settings={**case.settings, **overrides})


@dataclasses.dataclass
class _Plan:
    case: AlgorithmCase
    settings: C.Settings | None
    dtypes: tuple[torch.dtype, ...]
    wanted: list[str]
    skip: dict[str, str]
    report: ConformanceReport
    optimizer_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    construct_error: str | None = None


def _plan(case: AlgorithmCase) -> _Plan:
    kw = dict(case.settings)
    unknown = set(kw) - _SETTING_NAMES
    if unknown:
        raise ValueError(f"unknown check_algorithm setting(s): {', '.join(sorted(unknown))}")
    cls, options = _split_algorithm(case.algorithm, case.options)
    dtypes = tuple(_dtype(d) for d in kw.get("dtypes", ("float64", "float32")))
    distributed = bool(kw.get("distributed", False))
    overlap = kw.get("overlap")
    overlap = distributed if overlap is None else bool(overlap)
    checks = kw.get("checks")
    if checks is not None:
        bad = set(checks) - set(CHECKS)
        if bad:
            raise ValueError(f"unknown check(s) {sorted(bad)}; the checks are {', '.join(CHECKS)}")
    wanted = [c for c in CHECKS if checks is None or c in checks]
    skip = dict(kw.get("skip") or {})
    bad = set(skip) - set(CHECKS)
    if bad:
        raise ValueError(f"skip: unknown check(s) {sorted(bad)}")
    if not distributed:
        skip.setdefault("engine_parity", "distributed=False (gloo processes are slower)")
    if not overlap:
        skip.setdefault("overlap", "overlap=False (gloo processes are slower)")
    tolerances = dict(kw.get("tolerances") or {})
    bad = set(tolerances) - set(CHECKS)
    if bad:
        raise ValueError(f"tolerances: unknown check(s) {sorted(bad)}")
    preserves_mean = kw.get("preserves_mean")
    if preserves_mean is None:
        preserves_mean = bool(getattr(cls, "preserves_mean", False))
    centralized = kw.get("centralized")
    if centralized is None:
        centralized = getattr(cls, "centralized", ()) or ()
    label = AlgorithmCase(cls, options).key
    report = ConformanceReport(label)
    try:
        reductions = tuple(C.Reduction.of(r) for r in centralized)
    except Exception as exc:
        raise ValueError(f"centralized: cannot read {centralized!r} ({exc})") from None
    settings = C.Settings(
        cls=cls,
        options=options,
        n=int(kw.get("n", 4)),
        steps=int(kw.get("steps", 10)),
        topology=str(kw.get("topology", "ring")),
        resume_topologies=tuple(kw.get("resume_topologies", ("ring", "one-peer-exponential"))),
        mean_topologies=tuple(kw.get("mean_topologies", ("ring", "star"))),
        preserves_mean=bool(preserves_mean),
        centralized=reductions,
        tolerances=tolerances,
        param_shapes=tuple(tuple(int(d) for d in s) for s in kw.get("param_shapes", PARAM_SHAPES)),
    )
    report.algorithm = settings.label
    plan = _Plan(case, settings, dtypes, wanted, skip, report)
    plan.optimizer_options = dict(kw.get("optimizer_options") or {})
    try:
        settings.algorithm()
    except Exception as exc:
        plan.construct_error = describe_exception(exc)
    return plan


_SETTING_NAMES = {
    "dtypes",
    "n",
    "steps",
    "topology",
    "resume_topologies",
    "mean_topologies",
    "preserves_mean",
    "centralized",
    "distributed",
    "overlap",
    "checks",
    "skip",
    "tolerances",
    "param_shapes",
    "optimizer_options",
}


def _units(plan: _Plan, name: str) -> list[tuple[torch.dtype | None, Any]]:
    """The (dtype, case) pairs check ``name`` runs on."""
    spec = SPECS[name]
    if spec.dtypes == "none":
        dts: list[torch.dtype | None] = [None]
    elif spec.dtypes == "first":
        dts = [plan.dtypes[0]] if plan.dtypes else []
    else:
        dts = list(plan.dtypes)
    assert plan.settings is not None
    cases = spec.cases(plan.settings) if spec.cases is not None else [None]
    return [(d, c) for d in dts for c in cases]


#: Checks that run no step of the algorithm: they do not depend on the step contract.
_NO_STEPS = {"options", "invalid_options", "step_contract"}


def _blocked(plan: _Plan, name: str, dtype: torch.dtype | None) -> str | None:
    """Why check ``name`` does not run on ``dtype``: the step contract failed there (every
    other result would be a consequence of that failure), else None."""
    if name in _NO_STEPS or dtype is None:
        return None
    dt = C.dtype_name(dtype)
    for r in plan.report.results:
        if r.check == "step_contract" and r.dtype == dt and r.status == "failed":
            return f"the step contract failed in {dt} (see step_contract): fix that first"
    return None


def _case_label(case: Any) -> str | None:
    if case is None:
        return None
    return case.label if isinstance(case, C.Reduction) else str(case)


def _run_one(plan: _Plan, name: str, dtype: torch.dtype | None, case: Any) -> CheckResult:
    dt = C.dtype_name(dtype)
    label = _case_label(case)
    assert plan.settings is not None
    ctx = C.Ctx(plan.settings, dtype if dtype is not None else torch.float64, case)
    try:
        message = SPECS[name].fn(ctx)
    except C.Skip as exc:
        return CheckResult(name, "skipped", str(exc), dt, label)
    except C.Fail as exc:
        return CheckResult(name, "failed", exc.message, dt, label, exc.step, exc.diff)
    except Exception as exc:
        return CheckResult(
            name,
            "failed",
            f"raised {describe_exception(exc)}",
            dt,
            label,
            getattr(exc, "step", None),
        )
    return CheckResult(name, "passed", message, dt, label)


def _check_many(
    cases: Sequence[AlgorithmCase], *, timeout_s: float
) -> dict[str, ConformanceReport]:
    plans = [_plan(c) for c in cases]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more intra-op threads only add contention
    try:
        return _run_plans(plans, timeout_s=timeout_s)
    finally:
        torch.set_num_threads(threads)


def _run_plans(plans: list[_Plan], *, timeout_s: float) -> dict[str, ConformanceReport]:
    distributed_units: list[tuple[_Plan, str, torch.dtype | None]] = []
    for plan in plans:
        for name in plan.wanted:
            if name in plan.skip:
                plan.report.results.append(CheckResult(name, "skipped", plan.skip[name]))
                continue
            if plan.construct_error is not None:
                plan.report.results.append(
                    CheckResult(
                        name,
                        "failed",
                        f"constructing the algorithm with its options raised "
                        f"{plan.construct_error}",
                    )
                )
                continue
            units = _units(plan, name)
            if not units:
                reason = _NOT_DECLARED.get(name, "nothing to check")
                plan.report.results.append(CheckResult(name, "skipped", reason))
                continue
            if SPECS[name].distributed:
                for d, _ in units:
                    blocked = _blocked(plan, name, d)
                    if blocked is None:
                        distributed_units.append((plan, name, d))
                    else:
                        plan.report.results.append(
                            CheckResult(name, "skipped", blocked, C.dtype_name(d))
                        )
                continue
            for dtype, case in units:
                blocked = _blocked(plan, name, dtype)
                if blocked is not None:
                    plan.report.results.append(
                        CheckResult(
                            name, "skipped", blocked, C.dtype_name(dtype), _case_label(case)
                        )
                    )
                    continue
                plan.report.results.append(_run_one(plan, name, dtype, case))
    if distributed_units:
        from peergrad.testing._distributed import run_distributed_checks

        for plan, result in run_distributed_checks(distributed_units, timeout_s=timeout_s):
            plan.report.results.append(result)
    order = {name: i for i, name in enumerate(CHECKS)}
    for plan in plans:
        plan.report.results.sort(key=lambda r: order[r.check])
    return {plan.case.key: plan.report for plan in plans}
