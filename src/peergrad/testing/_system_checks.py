"""The conformance kit's system checks: ``clock`` (time never changes the numbers) and
``failures`` (the declared behaviour under link drops and absent workers).

Split from :mod:`peergrad.testing._checks` (same conventions: a check takes the
:class:`~peergrad.testing._checks.Ctx`, returns a one-line summary, raises ``Fail``/``Skip``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from peergrad.algorithms.base import Algorithm
from peergrad.algorithms.base import check_failures as declared_failures
from peergrad.comm import SimulatedCommunicator
from peergrad.testing._checks import (
    Ctx,
    Fail,
    Skip,
    _accepting_comm,
    _compare_trajectories,
    _step_error,
    _trajectory,
)
from peergrad.testing._run import (
    StepError,
    first_difference,
    fmt,
    max_abs_diff,
    plain_state,
    run,
)
from peergrad.topology import make_topology


# ---------------------------------------------------------------------------- the system clock
def _clocked(n: int) -> Any:
    from peergrad.system import ComputeProfile, LinkProfile, SystemProfile

    half = n // 2
    speed = [1.0] * n
    speed[min(2, n - 1)] = 0.25
    return SystemProfile(
        n,
        compute=ComputeProfile(step_ms=3.0, speed=tuple(speed), jitter_sigma=0.3),
        links=LinkProfile(
            1e-3, 1e9, groups=(tuple(range(half)), tuple(range(half, n))), inter_latency_s=20e-3
        ),
    )


def check_clock(ctx: Ctx) -> str:
    """A system clock without failures changes time, never the numbers: with stragglers,
    jitter and uneven links (a :class:`~peergrad.system.SystemClock` on the communicator) x,
    the state and ``bytes_sent`` equal those of the run without a clock, bit for bit."""
    from peergrad.system import SystemClock

    s = ctx.settings
    alg = s.bound()
    _accepting_comm(ctx, alg, s.topology)
    runs = []
    for clock in (None, SystemClock(_clocked(s.n))):
        comm = ctx.comm(clock=clock)
        try:
            x, state, xs = _trajectory(s.bound(), comm, ctx.rows(), range(s.steps))
        except StepError as exc:
            which = "with" if clock else "without"
            raise _step_error(exc, f"the run {which} a clock") from None
        runs.append((xs, plain_state(state), comm.bytes_sent.clone()))
    (xs0, s0, b0), (xs1, s1, b1) = runs
    _compare_trajectories(
        xs1,
        xs0,
        0.0,
        "step {step}: with a system clock (stragglers, jitter, uneven links, no failures) x "
        "differs from the run without one by up to {diff}; time must never change the numbers",
    )
    diff = first_difference(s1, s0)
    if diff is not None:
        raise Fail(f"with a system clock {diff[0]} differs by up to {fmt(diff[1])}", diff=diff[1])
    if not torch.equal(b0, b1):
        raise Fail(f"with a system clock bytes_sent is {b1.tolist()}, without {b0.tolist()}")
    return f"{s.steps} steps with and without a system clock are equal bit for bit"


def _failure_profile(n: int) -> Any:
    """Link drops (probability 0.2) and worker 1 away in steps 2-5 (0-based), seeded."""
    from peergrad.system import (
        ComputeProfile,
        FailureProfile,
        LinkProfile,
        OfflineInterval,
        SystemProfile,
    )

    return SystemProfile(
        n,
        compute=ComputeProfile(step_ms=2.0, jitter_sigma=0.2),
        links=LinkProfile(1e-3, 1e9),
        failures=FailureProfile(
            link_drop_prob=0.2, offline=(OfflineInterval(worker=1, start_step=2, stop_step=6),)
        ),
        seed=3,
    )


def _check_declaration(alg: Algorithm) -> None:
    if alg.failures not in ("supported", "refused"):
        raise Fail(f"failures = {alg.failures!r}; declare 'supported' or 'refused'")
    if len(alg.failures_note.strip()) <= 20:
        raise Fail(
            f"failures_note = {alg.failures_note!r}; say in one line what link drops and absent "
            "workers do to the method's invariants (or why it refuses them)"
        )


def _check_refusal(alg: Algorithm, topo: Any, profile: Any) -> str:
    try:
        declared_failures(alg, topo, profile)
    except ValueError as exc:
        text = str(exc)
        if "\n" in text or alg.name not in text or "failures." not in text:
            raise Fail(
                f"check_failures raised {text!r}; expected one line naming the profile "
                f"option (failures.…) and the algorithm {alg.name!r}"
            ) from None
        return "refused: check_failures raises one line naming the option and the algorithm"
    raise Fail("failures = 'refused' but check_failures accepted a profile with failures")


class _AbsentRows:
    """Checks after every step that the rows of x and of every floating-point ``[n, ...]``
    state tensor of the absent workers did not change, and that the present ones moved."""

    def __init__(self, comm: Any, x: Tensor, n: int) -> None:
        self.comm, self.x, self.n = comm, x, n
        self.absent_steps: list[int] = []
        self.before: tuple[Tensor, dict[str, Tensor]] | None = None

    def snapshot(self, state: Any) -> None:
        rows = {}
        if dataclasses.is_dataclass(state):
            for f in dataclasses.fields(state):
                v = getattr(state, f.name)
                if isinstance(v, Tensor) and v.is_floating_point() and v.shape[:1] == (self.n,):
                    rows[f.name] = v.clone()
        self.before = (self.x.clone(), rows)

    def after(self, k: int, state: Any) -> None:
        comm, x = self.comm, self.x
        if comm.present is not None and self.before is not None:
            self.absent_steps.append(k)
            (rows,) = (~comm.present).nonzero(as_tuple=True)
            x_before, fields = self.before
            if not torch.equal(x[rows], x_before[rows]):
                d = max_abs_diff(x[rows], x_before[rows])
                raise Fail(
                    f"step {k + 1}: the rows of x of absent worker(s) {rows.tolist()} changed by "
                    f"up to {fmt(d)}",
                    step=k + 1,
                    diff=d,
                )
            if torch.equal(x, x_before):
                raise Fail(f"step {k + 1}: the present workers did not move", step=k + 1)
            for name, value in fields.items():
                if not torch.equal(getattr(state, name)[rows], value[rows]):
                    raise Fail(
                        f"step {k + 1}: state.{name} rows of absent worker(s) {rows.tolist()} "
                        "changed",
                        step=k + 1,
                    )
        self.snapshot(state)


def check_failure_behaviour(ctx: Ctx) -> str:
    """The declared behaviour under failures (``failures``, ``failures_note``) holds: a
    "refused" algorithm makes :func:`~peergrad.algorithms.check_failures` raise a one-line
    ``ValueError`` naming the profile option and the algorithm; a "supported" one runs with
    link drops (probability 0.2) and worker 1 away in steps 2-5 (0-based), whose rows of x and
    of every floating-point ``[n, ...]`` state tensor stay bit for bit unchanged while it is
    away, while the others move, and x stays finite."""
    from peergrad.system import SystemClock

    s = ctx.settings
    n = s.n
    if n < 3:
        raise Skip(f"needs n >= 3 workers, got {n}")
    alg = s.bound()
    _check_declaration(alg)
    profile = _failure_profile(n)
    topo = make_topology("ring", n)
    if alg.failures == "refused":
        return _check_refusal(alg, topo, profile)
    try:
        declared_failures(alg, topo, profile)
    except ValueError as exc:
        raise Fail(f"failures = 'supported' but check_failures raised {exc}") from None
    comm = SimulatedCommunicator(topo, clock=SystemClock(profile))
    _accepting_comm(ctx, alg, "ring")
    rp = ctx.rows()
    x = rp.x0()
    watch = _AbsentRows(comm, x, n)
    try:
        state = alg.init(x, comm)
        watch.snapshot(state)
        run(alg, comm, x, rp, range(9), state=state, after=watch.after)
    except StepError as exc:
        raise _step_error(exc, "the run with failures") from None
    if watch.absent_steps != [2, 3, 4, 5]:
        raise Fail(f"worker 1 was away in steps {watch.absent_steps}, expected [2, 3, 4, 5]")
    if not bool(torch.isfinite(x).all()):
        raise Fail("x holds non-finite values after 9 steps with failures", diff=math.inf)
    return "supported: link drops and an absent worker (its rows kept) for 9 steps"
