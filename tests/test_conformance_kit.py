"""The conformance kit itself (:mod:`peergrad.testing`): a user's algorithm passes it, and each
deliberately broken variant fails exactly the check that matches its bug, with a readable
message (check, dtype, step, largest difference, hint); a raising algorithm is reported, never
a crash of the kit. The algorithms: ``tests/_user_algorithms.py``. The registry through the kit:
``tests/test_conformance.py``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest

from _user_algorithms import (
    BreaksMeanPreservation,
    ChangesDtype,
    DropsStateOnSave,
    KeepsGradientReference,
    LoopsOverWorkers,
    MomentumDSGD,
    RaisesAtStep3,
)
from peergrad.testing import (
    CHECKS,
    AlgorithmCase,
    ConformanceError,
    ConformanceReport,
    check_algorithm,
    check_case,
    parametrize_algorithms,
)

DISTRIBUTED = {"engine_parity", "overlap"}


def test_a_user_algorithm_passes_every_check() -> None:
    report = check_algorithm(MomentumDSGD, momentum=0.9)
    assert isinstance(report, ConformanceReport) and report.ok
    assert {r.check for r in report.skipped} == DISTRIBUTED  # no gloo processes by default
    assert {r.check for r in report.passed} == set(CHECKS) - DISTRIBUTED
    # float64 and float32, every declared reduction, both resume topologies, both mean ones
    assert {r.label for r in report.passed if r.check == "centralized"} == {
        f"centralized[{d}, {c}]"
        for d in ("float64", "float32")
        for c in ("SGD(lr=0.1,momentum=0.9)", "SGD(lr=0.05)")
    }
    assert len([r for r in report.passed if r.check == "resume"]) == 4
    assert len([r for r in report.passed if r.check == "mean_preservation"]) == 4
    assert "momentum=0.9" in report.algorithm and "passed" in str(report).lower()


@pytest.mark.parametrize(
    ("cls", "failing", "says"),
    [
        (
            DropsStateOnSave,
            {"state_roundtrip", "resume", "optimizer_resume"},
            [
                "state_roundtrip[float64]: after step 4: the state has attribute(s) "
                "momentum_buffer that are not fields of LeakyState",
                "resume[float64, ring]: the run resumed after step 4: step 5: algorithm.step "
                "raised AttributeError: 'LeakyState' object has no attribute 'momentum_buffer'",
                "optimizer_resume[float32]: step 6: DistributedOptimizer.step raised "
                "AttributeError",
            ],
        ),
        (
            LoopsOverWorkers,
            {"vectorized"},
            [
                "vectorized[float64]: the step's Python work grows with the number of workers",
                "+4.00 torch calls per added worker per step); a Python loop over the workers?",
            ],
        ),
        (
            BreaksMeanPreservation,
            {"mean_preservation"},
            [
                "mean_preservation[float64, ring]: step 1: on ring the worker mean of x moves "
                "differently than without communication (W = I) by up to 0.",
                "(atol 1e-12): the communication does not preserve the average",
                "mean_preservation[float32, star]: step 1:",
            ],
        ),
        (
            ChangesDtype,
            {"step_contract"},
            [
                "step_contract[float32]: step 1: x became torch.float64(4, 210) on cpu, was "
                "torch.float32(4, 210) on cpu; update x in place and keep its type"
            ],
        ),
        (
            KeepsGradientReference,
            {"step_contract"},
            [
                "step_contract[float64]: step 2: x differs by up to 0.00206 between fresh "
                "gradient tensors and the engines' reused gradient buffer (overwritten with NaN "
                "after each step): the algorithm keeps a reference to g; copy what it keeps"
            ],
        ),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_a_broken_variant_fails_the_matching_check(
    cls: type, failing: set[str], says: list[str]
) -> None:
    with pytest.raises(ConformanceError) as info:
        check_algorithm(cls, momentum=0.9)
    report = info.value.report
    assert {r.check for r in report.failed} == failing, str(report)
    message = str(info.value)
    assert message.startswith(f"{cls.__qualname__}(momentum=0.9): ")
    assert len(message.splitlines()) == 1 + len(report.failed)  # one line per failed check
    for text in says:
        assert text in message, message
    # the numeric failures say where and by how much
    for r in report.failed:
        if r.check in ("mean_preservation", "vectorized"):
            assert r.max_diff is not None and r.max_diff > 0
        if r.check in ("mean_preservation", "resume", "state_roundtrip"):
            assert r.step is not None and f"step {r.step}" in r.message


def test_a_dtype_bug_skips_the_checks_that_depend_on_the_step_contract() -> None:
    report = check_algorithm(ChangesDtype, raise_on_failure=False)
    float32 = [r for r in report if r.dtype == "float32" and r.check != "step_contract"]
    assert float32 and all(r.status == "skipped" for r in float32)
    assert all("the step contract failed in float32" in r.message for r in float32)
    assert all(r.status == "passed" for r in report if r.dtype == "float64")


def test_a_raising_algorithm_is_reported_not_a_crash() -> None:
    report = check_algorithm(RaisesAtStep3, raise_on_failure=False)
    assert not report.ok
    failed = {r.label: r for r in report.failed}
    assert set(failed) == {"step_contract[float64]", "step_contract[float32]"}
    r = failed["step_contract[float64]"]
    assert r.step == 3
    assert r.message.startswith(
        "step 3: algorithm.step raised RuntimeError: the user's bug at step 3 (at "
    )
    assert "_user_algorithms.py" in r.message
    # the checks that need no step still ran
    assert report.result("options").status == "passed"
    with pytest.raises(ConformanceError, match=r"RaisesAtStep3\(\): 2 of \d+ conformance checks"):
        report.raise_for_failures()


def test_exceptions_outside_the_steps_are_reported_too() -> None:
    @dataclasses.dataclass(frozen=True)
    class BadInit(MomentumDSGD):
        def init(self, x: Any, comm: Any) -> Any:
            raise KeyError("no state for you")

    report = check_algorithm(BadInit, checks={"step_contract", "resume"}, raise_on_failure=False)
    assert [r.status for r in report] == ["failed"] * 2 + ["skipped"] * 4  # resume: 2 x 2
    assert "init raised KeyError: 'no state for you'" in report.results[0].message


def test_an_instance_keeps_its_options_and_settings_pick_checks() -> None:
    report = check_algorithm(
        MomentumDSGD(lr=0.05), checks={"options", "resume", "vectorized"}, dtypes=("float32",)
    )
    assert report.algorithm == "MomentumDSGD(lr=0.05, momentum=0.0)"
    assert [r.label for r in report] == [
        "options",
        "resume[float32, ring]",
        "resume[float32, one-peer-exponential]",
        "vectorized[float32]",
    ]
    report = check_algorithm(
        MomentumDSGD, checks={"vectorized"}, skip={"vectorized": "measured elsewhere"}
    )
    assert report.result("vectorized").message == "measured elsewhere"


def test_declarations_and_tolerances_can_be_given_as_arguments() -> None:
    # not declared: skipped with the reason
    report = check_algorithm(
        BreaksMeanPreservation, checks={"mean_preservation"}, preserves_mean=False
    )
    assert "not declared" in report.result("mean_preservation").message
    # a generous tolerance lets the broken mean pass (tolerances are absolute)
    report = check_algorithm(
        BreaksMeanPreservation,
        checks={"mean_preservation"},
        dtypes=("float64",),
        mean_topologies=("ring",),
        tolerances={"mean_preservation": 10.0},
    )
    assert "atol 10.0" in report.result("mean_preservation").message
    report = check_algorithm(
        MomentumDSGD, checks={"centralized"}, dtypes=("float64",), centralized=()
    )
    assert report.result("centralized").status == "skipped"


def test_invalid_options_need_a_value_error_naming_the_option() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoValidation(MomentumDSGD):
        def __post_init__(self) -> None:
            pass

    report = check_algorithm(NoValidation, checks={"invalid_options"}, raise_on_failure=False)
    assert report.result("invalid_options").message.startswith("lr=0.0 was accepted")
    assert check_algorithm(MomentumDSGD, checks={"invalid_options"}).ok


def test_the_kit_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        check_algorithm(MomentumDSGD, checks={"resum"})
    with pytest.raises(ValueError, match="tolerances: unknown check"):
        check_algorithm(MomentumDSGD, tolerances={"parity": 1.0})
    with pytest.raises(ValueError, match="not a floating-point torch dtype"):
        check_algorithm(MomentumDSGD, dtypes=("int64",))
    with pytest.raises(TypeError, match="algorithm class or instance"):
        check_algorithm("dpsgd")


def test_a_class_the_gloo_processes_cannot_import_is_reported() -> None:
    @dataclasses.dataclass(frozen=True)
    class Local(MomentumDSGD):
        pass

    report = check_algorithm(
        Local, checks={"engine_parity"}, distributed=True, raise_on_failure=False
    )
    assert [r.status for r in report] == ["failed", "failed"]
    assert "cannot import" in report.results[0].message


@parametrize_algorithms(
    [MomentumDSGD, AlgorithmCase(MomentumDSGD, {"momentum": 0.9}, {"n": 8}, id="heavy-8")]
)
def test_parametrize_algorithms_gives_one_test_per_case(case: AlgorithmCase) -> None:
    report = check_case(case, checks={"options", "resume"}, dtypes=("float64",))
    assert report.ok and case.key in ("my-dsgd", "heavy-8")


def test_parametrize_algorithms_refuses_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="same key"):
        parametrize_algorithms([MomentumDSGD, MomentumDSGD])


def test_the_public_names_resolve_and_the_import_is_light() -> None:
    import peergrad.testing as kit

    assert set(kit.__all__) <= set(dir(kit))
    for name in kit.__all__:
        assert getattr(kit, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        kit.no_such_name  # noqa: B018
    code = "import sys, peergrad.testing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- gloo processes
def test_a_user_algorithm_agrees_on_gloo_processes(registry_distributed_reports: dict) -> None:
    """In the registry's launch (``tests/conftest.py``): the workers import the user's class
    from ``tests/_user_algorithms.py``; parity with the simulated engine and overlap hold."""
    report = registry_distributed_reports["user:my-dsgd"]
    report.raise_for_failures()
    assert sorted(r.label for r in report.passed) == [
        "engine_parity[float32]",
        "engine_parity[float64]",
        "overlap[float32]",
        "overlap[float64]",
    ]


def test_averaging_outside_the_communicator_fails_engine_parity(
    registry_distributed_reports: dict,
) -> None:
    report = registry_distributed_reports["user:averages-without-comm"]
    assert [r.status for r in report] == ["failed", "failed"]
    message = report.result("engine_parity", "float64").message
    assert message.startswith("after 20 steps x on 4 gloo processes differs from the simulated ")
    assert "an operation over the worker axis that is not a comm call" in message
