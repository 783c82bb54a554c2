"""The in-process checks of the conformance kit (the distributed ones are in
:mod:`peergrad.testing._distributed`). Each check is a function of a :class:`Ctx` (the settings,
one dtype, one case) that returns what it verified, or raises :class:`Fail` / :class:`Skip`.

What each check proves, its tolerance and its workload are in the docstring of the function;
:mod:`peergrad.testing` lists them. Tolerances are absolute (``rtol = 0``) on the kit's problem,
whose values are O(1) (:mod:`peergrad.testing._run`); "exact" means bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from peergrad.algorithms.base import Algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.testing._run import (
    Problem,
    RowProblem,
    StepError,
    accepts,
    bind,
    describe_exception,
    dim_of,
    first_difference,
    fmt,
    max_abs_diff,
    plain_state,
    restore_state,
    run,
    save_and_load,
)
from peergrad.topology import make_topology


class Fail(Exception):
    """A failed check: ``message`` (readable, one paragraph), the 1-based ``step`` and the
    largest difference when known."""

    def __init__(self, message: str, *, step: int | None = None, diff: float | None = None):
        super().__init__(message)
        self.message = message
        self.step = step
        self.diff = diff


class Skip(Exception):
    """The check does not apply; the message says why."""


@dataclasses.dataclass(frozen=True)
class Reduction:
    """A centralized method the algorithm reduces to on one worker.

    With hyper-parameters ``options`` and one worker (W = [[1]]), the algorithm stepped by
    :class:`~peergrad.optim.DistributedOptimizer` equals ``optimizer(params,
    **optimizer_options)`` (a ``torch.optim`` class, or its dotted name such as
    ``"torch.optim.SGD"``) step for step. Declared on a class as ``centralized`` (a tuple of
    these, or of plain ``(options, optimizer, optimizer_options)`` triples).
    """

    options: dict[str, Any]
    optimizer: Any
    optimizer_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, value: Any) -> Reduction:
        if isinstance(value, Reduction):
            return value
        if isinstance(value, dict):
            return cls(**value)
        options, optimizer, *rest = value
        return cls(dict(options), optimizer, dict(rest[0]) if rest else {})

    def optimizer_class(self) -> Callable[..., torch.optim.Optimizer]:
        if not isinstance(self.optimizer, str):
            return self.optimizer  # type: ignore[no-any-return]
        import importlib

        module, _, name = self.optimizer.rpartition(".")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]

    @property
    def label(self) -> str:
        name = self.optimizer if isinstance(self.optimizer, str) else self.optimizer.__name__
        name = name.rpartition(".")[2]
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{name}({opts})"


@dataclasses.dataclass
class Settings:
    """What :func:`peergrad.testing.check_algorithm` was asked to check."""

    cls: type[Algorithm]
    options: dict[str, Any]
    n: int
    steps: int
    topology: str
    resume_topologies: tuple[str, ...]
    mean_topologies: tuple[str, ...]
    preserves_mean: bool
    centralized: tuple[Reduction, ...]
    tolerances: dict[str, Any]
    param_shapes: tuple[tuple[int, ...], ...]

    @property
    def label(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.cls.__qualname__}({opts})"

    def algorithm(self, **changes: Any) -> Algorithm:
        """A new instance with the options (and ``changes``), not bound to the kit's model."""
        return self.cls(**{**self.options, **changes})

    def bound(self) -> Algorithm:
        """A new instance bound to the kit's model (segments, shapes), as the engines bind."""
        return bind(self.algorithm(), self.param_shapes)

    def problem(self, dtype: torch.dtype, n: int | None = None, same_rows: bool = False) -> Problem:
        n = self.n if n is None else n
        return Problem(n, dim_of(self.param_shapes), dtype, same_rows=same_rows)

    def tolerance(self, check: str, dtype: torch.dtype, default: float) -> float:
        value = self.tolerances.get(check, default)
        if isinstance(value, dict):
            value = value.get(dtype_name(dtype), default)
        return float(value)


@dataclasses.dataclass
class Ctx:
    settings: Settings
    dtype: torch.dtype
    case: Any = None

    def comm(self, topology: str | None = None, n: int | None = None, **kw: Any) -> Any:
        n = self.settings.n if n is None else n
        return SimulatedCommunicator(make_topology(topology or self.settings.topology, n), **kw)

    def rows(
        self, rows: slice | None = None, n: int | None = None, same_rows: bool = False
    ) -> RowProblem:
        return self.settings.problem(self.dtype, n, same_rows).rows(rows)


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def _accepting_comm(ctx: Ctx, alg: Algorithm, topology: str, n: int | None = None) -> Any:
    comm = ctx.comm(topology, n)
    refused = accepts(alg, comm)
    if refused is not None:
        raise Skip(f"the algorithm refuses topology {topology!r} (n={comm.n_workers}): {refused}")
    return comm


def _trajectory(
    alg: Algorithm,
    comm: Any,
    rp: RowProblem,
    steps: range,
    *,
    x: Tensor | None = None,
    state: Any = None,
    **kw: Any,
) -> tuple[Tensor, Any, list[Tensor]]:
    """Run ``steps``; ``(x, state, [x after each step])``."""
    x = rp.x0() if x is None else x
    xs: list[Tensor] = []
    state = run(alg, comm, x, rp, steps, state=state, after=lambda k, s: xs.append(x.clone()), **kw)
    return x, state, xs


def _compare_trajectories(
    got: list[Tensor], want: list[Tensor], atol: float, what: str, first_step: int = 1
) -> float:
    """Fail at the first step where ``got`` and ``want`` differ by more than ``atol``; return
    the largest difference seen."""
    worst = 0.0
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        d = max_abs_diff(a, b)
        worst = max(worst, d)
        if d > atol:
            step = first_step + i
            raise Fail(what.format(step=step, diff=fmt(d), atol=atol), step=step, diff=d)
    return worst


def _step_error(exc: StepError, run_name: str | None = None) -> Fail:
    return Fail(f"{run_name}: {exc}" if run_name else str(exc), step=exc.step)


# ---------------------------------------------------------------------------- options
def check_options(ctx: Ctx) -> str:
    """``options()`` lists exactly the dataclass fields, is JSON-serialisable (the run folder's
    config.json), rebuilds an equal algorithm (``cls(**options()) == algorithm``: what resume
    and ``load_state_dict`` rely on), and every field default is a JSON scalar (bool, int,
    float, str or None) so the CLI and the docs can show it."""
    s = ctx.settings
    alg = s.algorithm()
    if not dataclasses.is_dataclass(alg):
        raise Fail(
            f"{type(alg).__name__} is not a dataclass; an algorithm is a frozen dataclass of "
            "hyper-parameters (subclass peergrad.algorithms.Algorithm with @dataclass(frozen=True))"
        )
    fields = [f.name for f in dataclasses.fields(alg)]
    opts = alg.options()
    if sorted(opts) != sorted(fields):
        raise Fail(f"options() gives {sorted(opts)} but the dataclass fields are {sorted(fields)}")
    try:
        json.dumps(opts)
    except (TypeError, ValueError) as exc:
        raise Fail(f"options() is not JSON-serialisable ({exc}): {opts!r}") from None
    try:
        again = s.cls(**opts)
    except Exception as exc:
        raise Fail(f"cls(**options()) raised {describe_exception(exc)}") from None
    if again != alg:
        raise Fail(f"cls(**options()) gives {again!r}, not the algorithm {alg!r}")
    bad = {
        f.name: f.default
        for f in dataclasses.fields(alg)
        if f.default is not dataclasses.MISSING
        and not isinstance(f.default, bool | int | float | str | type(None))
    }
    if bad:
        raise Fail(f"defaults that are not JSON scalars (bool, int, float, str, None): {bad}")
    return f"options() = {len(opts)} JSON-serialisable fields; cls(**options()) rebuilds it"


INVALID_OPTIONS: tuple[tuple[str, float], ...] = (
    ("lr", 0.0),
    ("lr", float("nan")),
    ("momentum", 1.0),
    ("weight_decay", -1.0),
)


def check_invalid_options(ctx: Ctx) -> str:
    """The usual hyper-parameters, when the class has them, reject invalid values at
    construction with a ``ValueError`` naming the option and the value: ``lr = 0`` and
    ``lr = nan`` (lr must be finite and > 0), ``momentum = 1`` (in [0, 1)),
    ``weight_decay = -1`` (>= 0)."""
    s = ctx.settings
    fields = {f.name for f in dataclasses.fields(s.cls)}
    tried = [(k, v) for k, v in INVALID_OPTIONS if k in fields]
    if not tried:
        raise Skip("the class has none of lr, momentum, weight_decay")
    for key, value in tried:
        try:
            s.algorithm(**{key: value})
        except ValueError as exc:
            text = str(exc)
            if key not in text or (repr(value) not in text and str(value) not in text):
                raise Fail(
                    f"{key}={value!r} raised ValueError({text!r}), which does not name the "
                    f"option {key!r} and the value {value!r}"
                ) from None
            continue
        except Exception as exc:
            raise Fail(
                f"{key}={value!r} raised {describe_exception(exc)}; expected ValueError naming "
                "the option"
            ) from None
        raise Fail(
            f"{key}={value!r} was accepted; validate it in __post_init__ (e.g. "
            "peergrad.algorithms.base.check_positive) and raise ValueError naming the option"
        )
    return "rejects " + ", ".join(f"{k}={v!r}" for k, v in tried) + " with ValueError"


# ---------------------------------------------------------------------------- one run
def check_step_contract(ctx: Ctx) -> str:
    """The step contract of :class:`~peergrad.algorithms.Algorithm`, on the kit's problem
    (``steps`` steps, ``n`` workers, the settings' topology): ``x`` keeps its shape, dtype and
    device, is updated in place (it moves) and stays finite; a state with an integer ``step``
    counts the steps done (0 after ``init``); and the algorithm keeps no reference to ``g``:
    with the engines' single gradient buffer, overwritten with NaN after each step, the
    trajectory equals the one with a fresh gradient tensor per step (exact)."""
    s = ctx.settings
    alg = s.bound()
    rp = ctx.rows()
    comm = _accepting_comm(ctx, alg, s.topology)
    x = rp.x0()
    x0 = x.clone()
    shape, dtype, device = x.shape, x.dtype, x.device
    try:
        state0 = alg.init(x, comm)
    except Exception as exc:
        raise Fail(f"init raised {describe_exception(exc)}") from None
    counts = isinstance(getattr(state0, "step", None), int)
    if counts and state0.step != 0:
        raise Fail(f"init returned a state with step = {state0.step}, expected 0")
    seen: list[Tensor] = []

    def after(k: int, state: Any) -> None:
        if x.shape != shape or x.dtype != dtype or x.device != device:
            raise Fail(
                f"step {k + 1}: x became {x.dtype}{tuple(x.shape)} on {x.device}, was "
                f"{dtype}{tuple(shape)} on {device}; update x in place and keep its type",
                step=k + 1,
            )
        if not bool(torch.isfinite(x).all()):
            raise Fail(f"step {k + 1}: x holds non-finite values", step=k + 1, diff=math.inf)
        if counts and getattr(state, "step", None) != k + 1:
            raise Fail(
                f"step {k + 1}: state.step = {getattr(state, 'step', None)!r}, expected {k + 1} "
                "(the step counter is the position in time-varying schedules and phases)",
                step=k + 1,
            )
        seen.append(x.clone())

    try:
        run(alg, comm, x, rp, range(s.steps), state=state0, fresh_g=True, after=after)
    except StepError as exc:
        raise _step_error(exc) from None
    if torch.equal(x, x0):
        raise Fail(
            f"x did not change in {s.steps} steps: step must update x in place "
            "(x.copy_(...), x.sub_(...)), not rebind a local name"
        )
    comm = ctx.comm()
    try:
        _, _, poisoned = _trajectory(s.bound(), comm, rp, range(s.steps), poison_g=True)
    except StepError as exc:
        raise _step_error(exc, "the run with a reused gradient buffer") from None
    _compare_trajectories(
        poisoned,
        seen,
        0.0,
        "step {step}: x differs by up to {diff} between fresh gradient tensors and the engines' "
        "reused gradient buffer (overwritten with NaN after each step): the algorithm keeps a "
        "reference to g; copy what it keeps (state.g_prev.copy_(g))",
    )
    return (
        f"{s.steps} steps: x {dtype_name(dtype)}{tuple(shape)} updated in place, finite"
        + (", state.step counts" if counts else "")
        + "; no reference to g kept"
    )


def check_pre_gradient(ctx: Ctx) -> str:
    """``step`` gives the same result whether or not ``pre_gradient`` was called first (the
    engines call it before the gradient to overlap x-only communication): x after every step
    and the final state are equal bit for bit."""
    s = ctx.settings
    rp = ctx.rows()
    alg = s.bound()
    _accepting_comm(ctx, alg, s.topology)
    try:
        _, st_with, with_pre = _trajectory(alg, ctx.comm(), rp, range(s.steps), pre_gradient=True)
        _, st_without, without = _trajectory(
            s.bound(), ctx.comm(), rp, range(s.steps), pre_gradient=False
        )
    except StepError as exc:
        raise _step_error(exc) from None
    _compare_trajectories(
        with_pre,
        without,
        0.0,
        "step {step}: x with pre_gradient (the engines' overlap) differs from x without it by "
        "up to {diff}; step must give the same result whether or not pre_gradient was called",
    )
    diff = first_difference(plain_state(st_with), plain_state(st_without))
    if diff is not None:
        raise Fail(
            f"after step {s.steps}: {diff[0]} differs by up to {fmt(diff[1])} with and without "
            "pre_gradient",
            step=s.steps,
            diff=diff[1],
        )
    return f"{s.steps} steps with and without pre_gradient are equal bit for bit"


# ---------------------------------------------------------------------------- state
def _split(steps: int) -> int:
    return max(1, (2 * steps) // 5)


def check_state_roundtrip(ctx: Ctx) -> str:
    """After some steps the state survives a checkpoint: every attribute of a dataclass state
    is a field (checkpoints store fields only); :func:`~peergrad.train.checkpoint.to_plain`
    accepts it; ``torch.save`` then ``torch.load(weights_only=True)`` reads it back; and
    :func:`~peergrad.train.checkpoint.restore_into` a fresh ``init`` state gives every tensor
    (same dtype and shape), generator state and number bit for bit."""
    s = ctx.settings
    alg = s.bound()
    rp = ctx.rows()
    comm = _accepting_comm(ctx, alg, s.topology)
    k = _split(s.steps)
    try:
        x, state, _ = _trajectory(alg, comm, rp, range(k))
    except StepError as exc:
        raise _step_error(exc) from None
    if dataclasses.is_dataclass(state) and hasattr(state, "__dict__"):
        names = {f.name for f in dataclasses.fields(state)}
        extra = sorted(set(vars(state)) - names)
        if extra:
            raise Fail(
                f"after step {k}: the state has attribute(s) {', '.join(extra)} that are not "
                f"fields of {type(state).__name__}; checkpoints store the fields only, so a "
                "resumed run loses them: declare them as dataclass fields",
                step=k,
            )
    try:
        plain = plain_state(state)
    except TypeError as exc:
        raise Fail(
            f"after step {k}: the state cannot be checkpointed ({exc}); use tensors, numbers, "
            "strings, None, torch.Generator, dataclasses and lists/tuples/dicts of those",
            step=k,
        ) from None
    try:
        loaded = save_and_load({"x": x, "state": plain})
    except Exception as exc:
        raise Fail(
            f"after step {k}: torch.save/torch.load(weights_only=True) of the state failed: "
            f"{describe_exception(exc)}",
            step=k,
        ) from None
    try:
        restored = restore_state(s.bound(), loaded["x"], ctx.comm(), loaded["state"])
    except Exception as exc:
        raise Fail(
            f"after step {k}: restoring the saved state into a fresh init state raised "
            f"{describe_exception(exc)}",
            step=k,
        ) from None
    diff = first_difference(plain_state(restored), plain)
    if diff is not None:
        raise Fail(
            f"after step {k}: the restored {diff[0]} differs from the saved one by up to "
            f"{fmt(diff[1])}",
            step=k,
            diff=diff[1],
        )
    return f"state after step {k} saved, loaded (weights_only) and restored bit for bit"


def check_resume(ctx: Ctx) -> str:
    """Resume mid-run is bit-exact, on each of ``resume_topologies`` the algorithm accepts
    (a time-varying one included): ``steps`` steps uninterrupted, against 40% of them, then x,
    the state (:func:`~peergrad.train.checkpoint.to_plain`) and ``options()`` through
    ``torch.save``/``torch.load(weights_only=True)`` into fresh objects (an algorithm rebuilt
    from the saved options, a new communicator with empty scratch buffers, a fresh ``init``
    state restored from the saved one) and the remaining steps. x after every resumed step and
    the final state equal the uninterrupted run's bit for bit. Fails for state kept outside the
    state object (on the algorithm, the communicator, a module) or dropped by the checkpoint."""
    s = ctx.settings
    topology = ctx.case
    rp = ctx.rows()
    alg = s.bound()
    _accepting_comm(ctx, alg, topology)
    k = _split(s.steps)
    try:
        _, full_state, full = _trajectory(alg, ctx.comm(topology), rp, range(s.steps))
        x, state, _ = _trajectory(s.bound(), ctx.comm(topology), rp, range(k))
    except StepError as exc:
        raise _step_error(exc) from None
    try:
        saved = save_and_load({"x": x, "state": plain_state(state), "options": alg.options()})
        resumed_alg = bind(s.cls(**saved["options"]), s.param_shapes)
        comm = ctx.comm(topology)
        x = saved["x"]
        state = restore_state(resumed_alg, x, comm, saved["state"])
    except Exception as exc:
        raise Fail(
            f"saving and restoring after step {k} raised {describe_exception(exc)} (see the "
            "state_roundtrip check)",
            step=k,
        ) from None
    try:
        _, state, resumed = _trajectory(resumed_alg, comm, rp, range(k, s.steps), x=x, state=state)
    except StepError as exc:
        raise Fail(f"the run resumed after step {k}: {exc}", step=exc.step) from None
    _compare_trajectories(
        resumed,
        full[k:],
        0.0,
        "step {step}: x of the run resumed after step " + str(k) + " differs from the "
        "uninterrupted run by up to {diff}; state kept outside the state object (on the "
        "algorithm, the communicator) or not saved by the checkpoint?",
        first_step=k + 1,
    )
    diff = first_difference(plain_state(state), plain_state(full_state))
    if diff is not None:
        raise Fail(
            f"after step {s.steps}: {diff[0]} of the resumed run differs from the uninterrupted "
            f"run by up to {fmt(diff[1])}",
            step=s.steps,
            diff=diff[1],
        )
    return f"resumed after step {k} of {s.steps}: x and state bit for bit"


# ---------------------------------------------------------------------------- the topology
def check_identity_mixing(ctx: Ctx) -> str:
    """W = I gives n independent runs (the design's guard rail of the worker axis): an
    n-worker run on the identity topology equals n separate 1-worker runs, row i on worker i's
    data, at every step (``atol``: ``identity_mixing`` tolerance, default exact), and sends no
    byte. Skipped for algorithms that average exactly (``uses_topology()`` false): their
    all-reduce couples the workers whatever W is."""
    s = ctx.settings
    alg = s.bound()
    if not alg.uses_topology():
        raise Skip("uses_topology() is False: it averages exactly, W = I does not decouple it")
    comm = _accepting_comm(ctx, alg, "identity")
    atol = s.tolerance("identity_mixing", ctx.dtype, 0.0)
    try:
        _, _, together = _trajectory(alg, comm, ctx.rows(), range(s.steps))
    except StepError as exc:
        raise _step_error(exc, f"the {s.n}-worker run on W = I") from None
    sent = float(comm.bytes_sent.sum())
    for i in range(s.n):
        one = _accepting_comm(ctx, s.bound(), "identity", n=1)
        try:
            _, _, alone = _trajectory(s.bound(), one, ctx.rows(slice(i, i + 1)), range(s.steps))
        except StepError as exc:
            raise _step_error(exc, f"worker {i}'s 1-worker run") from None
        _compare_trajectories(
            [t[i : i + 1] for t in together],
            alone,
            atol,
            "step {step}: on W = I, worker " + str(i) + " of the " + str(s.n) + "-worker run "
            "differs from its own 1-worker run by up to {diff} (atol {atol}): the workers are "
            "coupled without communication (a reduction over the worker axis? a shared random "
            "draw? a hyper-parameter resolved from the topology, which differs between n "
            "workers and one?)",
        )
    if sent:
        raise Fail(f"on W = I the {s.n} workers sent {sent:g} bytes; gossip with W = I sends none")
    return f"W = I: {s.n} workers equal {s.n} 1-worker runs for {s.steps} steps (atol {atol})"


def check_mean_preservation(ctx: Ctx) -> str:
    """Where the class declares ``preserves_mean = True``: communication preserves the
    workers' average. At every step of a run on each of ``mean_topologies`` the algorithm
    accepts, the step is repeated from the same x and state (restored from a checkpoint) on
    W = I, i.e. without communication; the worker mean of x after the two steps agree within
    the ``mean_preservation`` tolerance (absolute; default 1e-12 in float64, 1e-5 in
    float32). Fails for mixing that is not doubly stochastic (row-stochastic weights, a
    worker-dependent consensus rate, a lost message). Skipped when ``uses_topology()`` is False
    (its communication does not depend on W). Only x is compared: state tensors (trackers,
    second moments) have invariants of their own."""
    s = ctx.settings
    topology = ctx.case
    alg = s.bound()
    if not alg.uses_topology():
        raise Skip(
            "uses_topology() is False: its communication does not depend on W, so W = I is no "
            "baseline"
        )
    comm = _accepting_comm(ctx, alg, topology)
    _accepting_comm(ctx, alg, "identity")
    atol = s.tolerance(
        "mean_preservation", ctx.dtype, 1e-12 if ctx.dtype == torch.float64 else 1e-5
    )
    rp = ctx.rows()
    x = rp.x0()
    try:
        state = alg.init(x, comm)
    except Exception as exc:
        raise Fail(f"init raised {describe_exception(exc)}") from None
    worst = 0.0
    for k in range(s.steps):
        x_before = x.clone()
        local_comm = ctx.comm("identity")
        local_state = _copy_state(state, alg, x_before, local_comm)
        try:
            state = run(alg, comm, x, rp, range(k, k + 1), state=state)
            x_local = x_before.clone()
            run(alg, local_comm, x_local, rp, range(k, k + 1), state=local_state)
        except StepError as exc:
            raise _step_error(exc) from None
        d = max_abs_diff(x.mean(dim=0), x_local.mean(dim=0))
        worst = max(worst, d)
        if d > atol:
            raise Fail(
                f"step {k + 1}: on {topology} the worker mean of x moves differently than "
                f"without communication (W = I) by up to {fmt(d)} (atol {atol}): the "
                "communication does not preserve the average (mixing weights not doubly "
                "stochastic? a worker-dependent consensus step?)",
                step=k + 1,
                diff=d,
            )
    return (
        f"{s.steps} steps on {topology}: the mean of x moves as without communication "
        f"(largest difference {fmt(worst)}, atol {atol})"
    )


def _copy_state(state: Any, alg: Algorithm, x: Tensor, comm: Any) -> Any:
    """An independent copy of ``state`` (``copy.deepcopy``; for a state that cannot be deep
    copied, a checkpoint round trip into a fresh ``init`` state)."""
    import copy

    try:
        return copy.deepcopy(state)
    except Exception:
        return restore_state(alg, x.clone(), comm, plain_state(state))


def check_uses_topology(ctx: Ctx) -> str:
    """``uses_topology()`` tells the truth (the CLI warns about and the run folder's name
    leaves out an unused ``--topology``): ``steps`` steps on a ring and on the complete graph
    give the same iterates exactly when it says False."""
    s = ctx.settings
    alg = s.bound()
    ring = _accepting_comm(ctx, alg, "ring")
    complete = _accepting_comm(ctx, alg, "complete")
    try:
        x_ring, _, _ = _trajectory(alg, ring, ctx.rows(), range(s.steps))
        x_complete, _, _ = _trajectory(s.bound(), complete, ctx.rows(), range(s.steps))
    except StepError as exc:
        raise _step_error(exc) from None
    same = torch.equal(x_ring, x_complete)
    says = alg.uses_topology()
    if same and says:
        raise Fail(
            f"uses_topology() is True, but {s.steps} steps on a ring and on the complete graph "
            "give the same iterates; return False (an exact average needs no topology)"
        )
    if not same and not says:
        d = max_abs_diff(x_ring, x_complete)
        raise Fail(
            f"uses_topology() is False, but after {s.steps} steps the iterates on a ring and on "
            f"the complete graph differ by up to {fmt(d)}; return True",
            diff=d,
        )
    outcome = "equal" if same else "different"
    return f"uses_topology() = {says}, and the ring and complete-graph iterates are {outcome}"
