"""The kit's workload: a deterministic per-worker problem and the engine's step loop.

Problem (:class:`Problem`): worker i holds the noisy quadratic
``f_i(x) = ½ Σ_c a_ic (x_c − b_ic)² + <ξ_i(k), x>`` on a flat buffer of ``D`` coordinates that
stands for a small model of :data:`PARAM_SHAPES` (two weight matrices and their biases, so
layer-wise and matrix methods such as PowerSGD see real tensors): ``a`` in [0.5, 2], ``b`` and
``x₀`` standard normal, and ``ξ_i(k)`` (scale 0.1) drawn for step k from its own seeded
generator. Every number of row i depends only on i and k, drawn for all n rows at once in
float64 and then cast, so the simulated engine (all rows), one gloo process (its row) and a
1-worker run (row i) see the same gradients bit for bit. The gradient is
``a ⊙ (x − b) + ξ`` and the closure (line searches) is the matching loss ``[w]``.

Loop (:func:`run`): what ``peergrad.train``'s step loop does on the algorithm, on random access
to the problem: ``comm.begin_step``, absent rows held (system profiles), ``pre_gradient``, the
clock's compute phase, the gradient written into **one reused buffer** (the engines' contract:
``g`` is valid only during ``step``), ``step`` with a :class:`~peergrad.algorithms.base.LossClosure`
and the pending handle, absent rows restored.
"""

from __future__ import annotations

import dataclasses
import io
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from peergrad.algorithms.base import Algorithm, LossClosure, bind_run
from peergrad.train.checkpoint import restore_into, to_plain

#: The parameter tensors the flat buffer stands for (D = 120 + 12 + 72 + 6 = 210).
PARAM_SHAPES: tuple[tuple[int, ...], ...] = ((12, 10), (12,), (6, 12), (6,))
SEED = 20240527
NOISE = 0.1


def dim_of(shapes: Sequence[Sequence[int]]) -> int:
    return sum(math.prod(s) for s in shapes)


def bind(algorithm: Algorithm, shapes: Sequence[Sequence[int]] = PARAM_SHAPES) -> Algorithm:
    """``algorithm`` bound to the kit's model as the engines bind it (segments, shapes)."""
    return bind_run(
        algorithm, segments=[math.prod(s) for s in shapes], shapes=[tuple(s) for s in shapes]
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """The noisy heterogeneous quadratics of the module docstring for ``n`` workers."""

    n: int
    dim: int
    dtype: torch.dtype
    seed: int = SEED
    #: every worker holds worker 0's problem (the ``vectorized`` check: data-dependent loops
    #: such as line searches then run as long at any n)
    same_rows: bool = False

    def _draw(self, salt: int, low: float | None = None) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + salt)
        rows = 1 if self.same_rows else self.n
        if low is not None:  # uniform in [low, 4 low]
            t = low + 3 * low * torch.rand(rows, self.dim, generator=gen, dtype=torch.float64)
        else:
            t = torch.randn(rows, self.dim, generator=gen, dtype=torch.float64)
        return t.to(self.dtype).expand(self.n, -1).clone() if self.same_rows else t.to(self.dtype)

    @property
    def a(self) -> Tensor:
        return self._draw(1, low=0.5)

    @property
    def b(self) -> Tensor:
        return self._draw(2)

    def x0(self) -> Tensor:
        """A fresh copy of the starting point ``[n, D]`` (standard normal rows)."""
        return self._draw(3)

    def noise(self, k: int) -> Tensor:
        """ξ(k), ``[n, D]``, for the 0-based step ``k``."""
        return NOISE * self._draw(1000 + k)

    def rows(self, rows: slice | None) -> RowProblem:
        """The problem seen by the workers ``rows`` (all of them for None)."""
        sl = rows if rows is not None else slice(None)
        return RowProblem(self, self.a[sl].clone(), self.b[sl].clone(), sl)


@dataclasses.dataclass(eq=False)
class RowProblem:
    """The rows ``sl`` of a :class:`Problem`: gradients and closures for those workers."""

    problem: Problem
    a: Tensor
    b: Tensor
    sl: slice
    _noise: dict[int, Tensor] = dataclasses.field(default_factory=dict)

    def x0(self) -> Tensor:
        return self.problem.x0()[self.sl].clone()

    def noise(self, k: int) -> Tensor:
        if k not in self._noise:
            self._noise = {k: self.problem.noise(k)[self.sl].clone()}
        return self._noise[k]

    def grad(self, x: Tensor, k: int, out: Tensor | None = None) -> Tensor:
        g = torch.mul(self.a, x - self.b, out=out)
        return g.add_(self.noise(k))

    def loss_fn(self, k: int) -> Callable[[Tensor], Tensor]:
        a, b, xi = self.a, self.b, self.noise(k)

        def loss(xt: Tensor) -> Tensor:
            return 0.5 * (a * (xt - b) ** 2).sum(dim=1) + (xi * xt).sum(dim=1)

        return loss

    def closure(self, x: Tensor, k: int) -> LossClosure:
        fn = self.loss_fn(k)
        return LossClosure(fn, fn(x))


class StepError(Exception):
    """An exception raised by the algorithm in step ``step`` (1-based) of a run."""

    def __init__(self, step: int, phase: str, exc: BaseException) -> None:
        what = "algorithm.init" if step == 0 else f"step {step}: algorithm.{phase}"
        super().__init__(f"{what} raised {describe_exception(exc)}")
        self.step = step
        self.exc = exc


def describe_exception(exc: BaseException) -> str:
    """``TypeName: message (at file:line in function)``, the innermost frame of the traceback."""
    import traceback

    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        f = frames[-1]
        where = f" (at {f.filename}:{f.lineno} in {f.name})"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}{where}"


def run(
    algorithm: Algorithm,
    comm: Any,
    x: Tensor,
    rp: RowProblem,
    steps: range,
    *,
    state: Any = None,
    pre_gradient: bool = True,
    poison_g: bool = False,
    fresh_g: bool = False,
    after: Callable[[int, Any], None] | None = None,
) -> Any:
    """Steps ``steps`` (0-based) of the engine's loop on ``x`` (updated in place); the state.

    ``state`` None: ``algorithm.init(x, comm)``. ``poison_g``: fill the gradient buffer with
    NaN after every step (an algorithm keeping a reference to ``g`` then shows NaN);
    ``fresh_g``: a new gradient tensor every step instead of the reused buffer.
    ``after(k, state)`` runs after step ``k``. Exceptions of the algorithm become
    :class:`StepError` naming the step and the phase.
    """
    if state is None:
        try:
            state = algorithm.init(x, comm)
        except Exception as exc:
            raise StepError(0, "init", exc) from exc
    g_buf = torch.empty_like(x)
    begin_step = getattr(comm, "begin_step", None)
    hold_absent = getattr(comm, "hold_absent", None)
    compute = getattr(comm, "compute", None)
    for k in steps:
        if begin_step is not None:
            begin_step(k + 1)
        held = hold_absent(x, state) if hold_absent is not None else None
        pending = None
        if pre_gradient:
            try:
                pending = algorithm.pre_gradient(x, state, comm)
            except Exception as exc:
                raise StepError(k + 1, "pre_gradient", exc) from exc
        if compute is not None:
            compute()
        g = rp.grad(x, k, out=None if fresh_g else g_buf)
        closure = rp.closure(x, k)
        try:
            state = algorithm.step(x, g, state, comm, closure=closure, pending=pending)
        except Exception as exc:
            raise StepError(k + 1, "step", exc) from exc
        if held is not None:
            held.restore(x, state)
        if poison_g:
            g_buf.fill_(float("nan"))
        if after is not None:
            after(k, state)
    return state


# ---------------------------------------------------------------------------- comparisons
def max_abs_diff(a: Tensor, b: Tensor) -> float:
    """Largest ``|a − b|`` in float64 (``inf`` where exactly one side is NaN or inf, or the
    shapes differ; equal NaNs count as equal)."""
    if a.shape != b.shape:
        return math.inf
    a64, b64 = a.detach().to(torch.float64), b.detach().to(torch.float64)
    same = (a64 == b64) | (torch.isnan(a64) & torch.isnan(b64))
    if bool(same.all()):
        return 0.0
    d = (a64 - b64).abs()
    d = torch.where(same, torch.zeros_like(d), d)
    d = torch.nan_to_num(d, nan=math.inf)
    return float(d.max())


def first_difference(a: Any, b: Any, where: str = "state") -> tuple[str, float] | None:
    """The first slot where two :func:`to_plain` trees differ and the largest absolute
    difference there (``inf`` for a type, shape, dtype or value mismatch that is not a number);
    None when equal bit for bit."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
            return where, math.inf
        if a.dtype != b.dtype or a.shape != b.shape:
            return (
                f"{where} (dtype/shape {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)})",
                (math.inf),
            )
        if a.is_floating_point() or a.is_complex():
            d = max_abs_diff(a, b)
            return (where, d) if d > 0 else None
        return None if torch.equal(a, b) else (where, math.inf)
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where} (keys {sorted(map(str, a))} vs {sorted(map(str, b))})", math.inf
        for key in a:
            found = first_difference(a[key], b[key], _join(where, key))
            if found is not None:
                return found
        return None
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return f"{where} (length {len(a)} vs {len(b)})", math.inf
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            found = first_difference(u, v, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(a, float) and isinstance(b, float):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return None
        return f"{where} ({a!r} vs {b!r})", abs(a - b)
    return None if a == b else (f"{where} ({a!r} vs {b!r})", math.inf)


def _join(where: str, key: Any) -> str:
    if key in ("fields", "__dataclass__"):
        return where
    return f"{where}.{key}"


def plain_state(state: Any) -> Any:
    """:func:`~peergrad.train.checkpoint.to_plain` of the state (what checkpoints store)."""
    return to_plain(state)


def save_and_load(payload: Any) -> Any:
    """``payload`` through ``torch.save`` into bytes and ``torch.load(weights_only=True)``."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def restore_state(algorithm: Algorithm, x: Tensor, comm: Any, saved: Any) -> Any:
    """A fresh ``algorithm.init(x, comm)`` with the saved plain state copied in."""
    return restore_into(algorithm.init(x, comm), saved)


def accepts(algorithm: Algorithm, comm: Any) -> str | None:
    """None when ``algorithm.check_topology(comm)`` passes, else its ``ValueError`` text
    (warnings such as "non-symmetric mixing matrix" are silenced)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            algorithm.check_topology(comm)
    except ValueError as exc:
        return str(exc)
    return None


def fmt(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3g}"
