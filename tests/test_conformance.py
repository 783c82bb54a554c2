"""The registry through the conformance kit (:mod:`peergrad.testing`): every registered
algorithm passes every generic check users can run on their own algorithms, so the kit is proven
on the whole registry and cannot drift from what the project guarantees.

In-process checks (float64 and float32): options, invalid options, the step contract,
``pre_gradient``, the state round trip, bit-exact resume (a ring and a time-varying schedule),
W = I, mean preservation and the reductions to ``torch.optim`` where declared,
``uses_topology()``, no Python loop over workers, the system clock, failures, and the
``DistributedOptimizer`` checks. The engine-parity cases (simulated vs 4 gloo processes) share
one launch with the overlap cases (``tests/test_optim_overlap.py``). Cases and declarations:
``tests/_conformance_cases.py``.
"""

from __future__ import annotations

import warnings

from _conformance_cases import CASES, DECLARATIONS, DISTRIBUTED_CASES, NAMES, SKIPS
from peergrad.algorithms import REGISTRY
from peergrad.comm import SimulatedCommunicator
from peergrad.testing import AlgorithmCase, check_case, parametrize_algorithms
from peergrad.topology import make_topology

GLOO_CHECKS = {"engine_parity", "overlap"}


def accepts(case: AlgorithmCase, topology: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "non-symmetric mixing matrix"
            case.cls(**case.options).check_topology(
                SimulatedCommunicator(make_topology(topology, 4))
            )
    except ValueError:
        return False
    return True


def allowed_skip(case: AlgorithmCase, check: str, label: str) -> bool:
    """Checks a registered algorithm may skip, and when (anything else must run and pass)."""
    name = case.cls.name
    alg = case.cls(**case.options)
    if check in GLOO_CHECKS or check in case.settings.get("skip", {}):
        return True
    if check == "identity_mixing":
        return not alg.uses_topology()
    if check == "mean_preservation":
        return not DECLARATIONS[name]["preserves_mean"] or not alg.uses_topology()
    if check == "centralized":
        return not case.settings["centralized"]
    if check == "resume":  # fixed-W methods refuse the time-varying schedule
        return "one-peer-exponential" in label and not accepts(case, "one-peer-exponential")
    return False


@parametrize_algorithms(CASES)
def test_registered_algorithm_conforms(case: AlgorithmCase) -> None:
    report = check_case(case)  # ConformanceError: one paragraph per failed check
    unexpected = [r for r in report.skipped if not allowed_skip(case, r.check, r.label)]
    assert not unexpected, "\n".join(str(r) for r in unexpected)


def test_cases_cover_the_registry_and_time_varying_schedules() -> None:
    default = {c.key for c in CASES}
    assert set(NAMES) <= default and {f"{n}[heavy]" for n in NAMES} <= default
    assert set(DECLARATIONS) == set(REGISTRY)
    assert set(SKIPS) <= default | set(NAMES)
    # every algorithm resumes on the one-peer exponential schedule but those that need a fixed W
    varying = {c.cls.name for c in CASES if accepts(c, "one-peer-exponential")}
    assert set(NAMES) - varying == {"d2", "choco-sgd"}


def test_declarations_match_the_classes() -> None:
    """Once a class declares ``preserves_mean`` or ``centralized`` itself, it must say what the
    table says (then the table entry can go)."""
    for name, declared in DECLARATIONS.items():
        cls = REGISTRY[name]
        for attr, value in declared.items():
            if not hasattr(cls, attr):
                continue
            mine = getattr(cls, attr)
            if attr == "centralized":
                mine, value = tuple(mine), tuple(value)
            assert mine == value, (name, attr)


def test_distributed_cases_cover_the_registry() -> None:
    for check in GLOO_CHECKS:
        covered = {
            (c.cls.name, d)
            for c in DISTRIBUTED_CASES
            if check in c.settings["checks"]
            for d in c.settings["dtypes"]
        }
        assert covered >= {(n, d) for n in NAMES for d in ("float64", "float32")}, check


@parametrize_algorithms([c for c in DISTRIBUTED_CASES if "engine_parity" in c.settings["checks"]])
def test_simulated_and_gloo_engines_agree(
    case: AlgorithmCase, registry_distributed_reports: dict
) -> None:
    """20 steps of the kit's problem: the simulated engine and 4 gloo processes give the same
    iterates (float64 within 1e-10, float32 1e-5 relative; PowerSGD float32 1e-4) and identical
    bytes, rounds and modelled time."""
    report = registry_distributed_reports[case.key]
    report.raise_for_failures()
    assert {r.check for r in report.passed} == {"engine_parity"}
