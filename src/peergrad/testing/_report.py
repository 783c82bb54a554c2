"""Results of the conformance kit: one :class:`CheckResult` per check and dtype, gathered in a
:class:`ConformanceReport`; :class:`ConformanceError` carries a report with failures.

Torch-free: importing :mod:`peergrad.testing` stays light.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Literal

Status = Literal["passed", "failed", "skipped"]


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one dtype (``dtype`` None: the check has no dtype).

    ``message``: for a failure, one readable paragraph (what differs, where, by how much, a
    hint); for a skip, the reason; for a pass, what was checked. ``step`` (1-based, the step
    after which the first difference was seen) and ``max_diff`` (the largest absolute
    difference found there, in the check's unit) are set when a failure has them. ``case``
    names a sub-case (a topology, a reduction) when the check has several.
    """

    check: str
    status: Status
    message: str
    dtype: str | None = None
    case: str | None = None
    step: int | None = None
    max_diff: float | None = None

    @property
    def label(self) -> str:
        """``check[dtype, case]`` as printed in reports."""
        parts = [p for p in (self.dtype, self.case) if p]
        return f"{self.check}[{', '.join(parts)}]" if parts else self.check

    def __str__(self) -> str:
        return f"{self.status.upper():7} {self.label}: {self.message}"


@dataclasses.dataclass
class ConformanceReport:
    """Every :class:`CheckResult` of one algorithm (``algorithm``: its class name and options).

    ``passed``/``failed``/``skipped`` list the results by status; :meth:`raise_for_failures`
    raises :class:`ConformanceError` when any failed; ``str(report)`` is one line per result.
    """

    algorithm: str
    results: list[CheckResult] = dataclasses.field(default_factory=list)

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.results)

    def _with(self, status: Status) -> list[CheckResult]:
        return [r for r in self.results if r.status == status]

    @property
    def passed(self) -> list[CheckResult]:
        return self._with("passed")

    @property
    def failed(self) -> list[CheckResult]:
        return self._with("failed")

    @property
    def skipped(self) -> list[CheckResult]:
        return self._with("skipped")

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.failed

    def result(self, check: str, dtype: str | None = None, case: str | None = None) -> CheckResult:
        """The one result of ``check`` (and ``dtype``/``case`` when given); ``KeyError`` when
        there is none, ``ValueError`` when several match."""
        found = [
            r
            for r in self.results
            if r.check == check
            and (dtype is None or r.dtype == dtype)
            and (case is None or r.case == case)
        ]
        if not found:
            raise KeyError(f"no result for {check!r} (dtype={dtype}, case={case})")
        if len(found) > 1:
            raise ValueError(f"{len(found)} results for {check!r}: {[r.label for r in found]}")
        return found[0]

    def statuses(self) -> dict[str, Status]:
        """``{label: status}`` of every result (handy in tests)."""
        return {r.label: r.status for r in self.results}

    def failure_message(self) -> str:
        checks, skipped = len(self.results), len(self.skipped)
        lines = [
            f"{self.algorithm}: {len(self.failed)} of {checks} conformance checks failed "
            f"({skipped} skipped)"
        ]
        lines += [f"  {r.label}: {r.message}" for r in self.failed]
        return "\n".join(lines)

    def raise_for_failures(self) -> ConformanceReport:
        """Raise :class:`ConformanceError` when a check failed; else return the report."""
        if self.failed:
            raise ConformanceError(self)
        return self

    def __str__(self) -> str:
        lines = [f"conformance of {self.algorithm}:"]
        lines += [f"  {r}" for r in self.results]
        return "\n".join(lines)


class ConformanceError(AssertionError):
    """Raised by :func:`peergrad.testing.check_algorithm` when a check failed: the message has
    one line per failed check (check, dtype, step, largest difference, hint); ``report`` holds
    every result (passed and skipped ones too)."""

    def __init__(self, report: ConformanceReport) -> None:
        super().__init__(report.failure_message())
        self.report = report
