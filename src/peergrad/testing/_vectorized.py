"""The conformance kit's ``vectorized`` check: no Python loop over the workers.

Split from :mod:`peergrad.testing._checks` (same conventions: a check takes the
:class:`~peergrad.testing._checks.Ctx`, returns a one-line summary, raises ``Fail``/``Skip``).
"""

from __future__ import annotations

import sys
from typing import Any

from peergrad.testing._checks import Ctx, Fail, _accepting_comm, _step_error
from peergrad.testing._run import StepError, run

# ---------------------------------------------------------------------------- vectorised
#: Worker counts compared by the ``vectorized`` check, and the steps counted (after a warm-up).
VECTOR_SIZES = (4, 64)
VECTOR_STEPS = 3
#: Largest growth of the step's Python lines or torch calls per added worker per step.
VECTOR_GROWTH = 0.5


class _Counter:
    """Counts Python lines executed (``sys.settrace``) and torch function calls (a
    ``TorchFunctionMode``) while active, in the current thread."""

    def __init__(self) -> None:
        self.lines = 0
        self.calls = 0

    def __enter__(self) -> _Counter:
        from torch.overrides import TorchFunctionMode

        counter = self

        class Mode(TorchFunctionMode):
            def __torch_function__(
                self,
                func: Any,
                types: Any,
                args: tuple[Any, ...] = (),
                kwargs: dict[str, Any] | None = None,
            ) -> Any:
                counter.calls += 1
                return func(*args, **(kwargs or {}))

        def tracer(frame: Any, event: str, arg: Any) -> Any:
            if event == "line":
                counter.lines += 1
            return tracer

        self._previous = sys.gettrace()
        self._mode = Mode()
        self._mode.__enter__()
        sys.settrace(tracer)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.settrace(self._previous)
        self._mode.__exit__(*exc)


def check_vectorized(ctx: Ctx) -> str:
    """No Python loop over workers: the step's Python work does not grow with n. After one
    warm-up step, :data:`VECTOR_STEPS` steps are counted at n = 4 and n = 64 on a ring (whose
    gossip is two shifts whatever n): Python lines executed (``sys.settrace``) and torch calls
    (a ``TorchFunctionMode``, tensor methods and indexing included), every worker holding the
    same problem (so data-dependent loops, such as a line search's trials, run as long at any
    n). A vectorised step costs
    the same at both sizes; a loop over the workers adds at least one line and one torch call
    per worker, i.e. a growth >= 1 per added worker per step. Fails when either count grows by
    more than :data:`VECTOR_GROWTH` per added worker per step. Counts, not times: robust on a
    loaded machine."""
    s = ctx.settings
    small, large = VECTOR_SIZES
    counts = {}
    for n in (small, large):
        alg = s.bound()
        comm = _accepting_comm(ctx, alg, "ring", n=n)
        rp = ctx.rows(n=n, same_rows=True)
        x = rp.x0()
        try:
            state = run(alg, comm, x, rp, range(1))
            with _Counter() as c:
                run(alg, comm, x, rp, range(1, 1 + VECTOR_STEPS), state=state)
        except StepError as exc:
            raise _step_error(exc, f"the {n}-worker run") from None
        counts[n] = (c.lines, c.calls)
    per = (large - small) * VECTOR_STEPS
    lines = (counts[large][0] - counts[small][0]) / per
    calls = (counts[large][1] - counts[small][1]) / per
    summary = (
        f"{VECTOR_STEPS} steps ran {counts[small][0]} Python lines and {counts[small][1]} torch "
        f"calls at n={small}, {counts[large][0]} lines and {counts[large][1]} calls at "
        f"n={large} ({lines:+.2f} lines, {calls:+.2f} torch calls per added worker per step)"
    )
    if max(lines, calls) > VECTOR_GROWTH:
        raise Fail(
            f"the step's Python work grows with the number of workers: {summary}; a Python loop "
            "over the workers? Write the update on the whole [w, D] buffer (worker axis first)",
            diff=max(lines, calls),
        )
    return summary
