"""Checks through :class:`~peergrad.optim.DistributedOptimizer` on one worker (a 1-worker
ring, W = [[1]]): the drop-in optimizer adds nothing to the algorithm, resumes bit-exactly from
its ``state_dict``, and equals the centralized ``torch.optim`` method the class declares.

Workload: a tanh MLP 5 → 8 → 3 in the check's dtype with parameters drawn from an explicit
generator (scale 0.5), and minibatches of 16 random points with 3 random classes, under the
cross-entropy loss: the torch model a user brings. Line-search algorithms
(``needs_closure``) are stepped with a closure, the others by ``backward(); step()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from peergrad.testing._checks import Ctx, Fail, Reduction, Skip, dtype_name
from peergrad.testing._run import accepts, describe_exception, fmt, max_abs_diff, save_and_load


def _model(seed: int, dtype: torch.dtype, hidden: int = 8) -> nn.Module:
    model = nn.Sequential(nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, 3)).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype))
    return model


def _batches(steps: int, dtype: torch.dtype, seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(16, 5, generator=gen, dtype=torch.float64).to(dtype),
            torch.randint(3, (16,), generator=gen),
        )
        for _ in range(steps)
    ]


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _one_worker() -> Any:
    from peergrad.comm import SimulatedCommunicator
    from peergrad.topology import make_topology

    return SimulatedCommunicator(make_topology("ring", 1))


def _closure(opt: Any, model: nn.Module, xb: Tensor, yb: Tensor) -> Callable[[], Tensor]:
    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    return closure


def _train(
    opt: Any, model: nn.Module, batches: list[tuple[Tensor, Tensor]], first: int = 0
) -> list[Tensor]:
    """The usual loop; the parameters after every step (steps numbered from ``first``)."""
    out = []
    for k, (xb, yb) in enumerate(batches, start=first):
        try:
            if opt.algorithm.needs_closure:
                opt.step(_closure(opt, model, xb, yb))
            else:
                opt.zero_grad()
                nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
        except Exception as exc:
            raise Fail(
                f"step {k + 1}: DistributedOptimizer.step raised {describe_exception(exc)}",
                step=k + 1,
            ) from None
        out.append(_flat(model).clone())
    return out


def _optimizer(model: nn.Module, algorithm: Any) -> Any:
    from peergrad.optim import DistributedOptimizer

    comm = _one_worker()
    refused = accepts(algorithm, comm)
    if refused is not None:
        raise Skip(f"the algorithm refuses one worker: {refused}")
    try:
        return DistributedOptimizer(model.named_parameters(), algorithm, comm)
    except Exception as exc:
        raise Fail(f"DistributedOptimizer(...) raised {describe_exception(exc)}") from None


def _compare(got: list[Tensor], want: list[Tensor], atol: float, what: str) -> float:
    worst = 0.0
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        d = max_abs_diff(a, b)
        worst = max(worst, d)
        if d > atol:
            raise Fail(f"step {k + 1}: {what} by up to {fmt(d)} (atol {atol})", step=k + 1, diff=d)
    return worst


def _default_atol(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 1e-5


def check_optimizer(ctx: Ctx) -> str:
    """The drop-in optimizer adds nothing to the algorithm: 8 steps of
    ``DistributedOptimizer`` on one worker (parameters and gradients as views of the flat
    buffers, a closure for every step) equal the bare algorithm stepped on ``x [1, D]`` with
    gradients from ``torch.func`` (``optimizer`` tolerance: absolute, default 1e-12 in float64
    and 1e-5 in float32)."""
    from torch.func import functional_call

    from peergrad.algorithms.base import bind_run

    s, dtype = ctx.settings, ctx.dtype
    atol = s.tolerance("optimizer", dtype, _default_atol(dtype))
    batches = _batches(8, dtype)
    model = _model(0, dtype)
    opt = _optimizer(model, s.algorithm())
    got = []
    for k, (xb, yb) in enumerate(batches):
        try:
            opt.step(_closure(opt, model, xb, yb))
        except Exception as exc:
            raise Fail(
                f"step {k + 1}: DistributedOptimizer.step raised {describe_exception(exc)}",
                step=k + 1,
            ) from None
        got.append(opt.flat_params.clone())

    ref = _model(0, dtype)
    names = [n for n, _ in ref.named_parameters()]
    shapes = [p.shape for p in ref.parameters()]
    numels = [p.numel() for p in ref.parameters()]

    def loss_at(x_row: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        pieces = [c.view(sh) for c, sh in zip(torch.split(x_row, numels), shapes, strict=True)]
        out = functional_call(ref, dict(zip(names, pieces, strict=True)), (xb,))
        return nn.functional.cross_entropy(out, yb)

    alg = bind_run(s.algorithm(), segments=numels, shapes=[tuple(sh) for sh in shapes])
    comm = _one_worker()
    x = _flat(ref).reshape(1, -1).clone()
    want = []
    try:
        state = alg.init(x, comm)
        for xb, yb in batches:
            g = torch.func.grad(loss_at)(x[0], xb, yb).reshape(1, -1)

            def trial(xt: Tensor, xb: Tensor = xb, yb: Tensor = yb) -> Tensor:
                return loss_at(xt[0], xb, yb).reshape(1)

            state = alg.step(x, g, state, comm, closure=trial)
            want.append(x.clone())
    except Exception as exc:
        raise Fail(f"the bare algorithm raised {describe_exception(exc)}") from None
    worst = _compare(
        got, want, atol, "the DistributedOptimizer's parameters differ from the bare algorithm's"
    )
    return f"8 steps: DistributedOptimizer equals the bare algorithm (largest diff {fmt(worst)})"


def check_optimizer_resume(ctx: Ctx) -> str:
    """``DistributedOptimizer.state_dict()`` resumes bit-exactly: 10 steps uninterrupted
    against 5 steps, ``state_dict()`` through ``torch.save``/``torch.load(weights_only=True)``,
    a new optimizer on a differently initialised model, ``load_state_dict`` and 5 more steps:
    the flat parameters and the model's parameters are equal bit for bit, and the byte and
    time counters are restored."""
    s, dtype = ctx.settings, ctx.dtype
    batches = _batches(10, dtype)
    full_model = _model(0, dtype)
    full = _optimizer(full_model, s.algorithm())
    _train(full, full_model, batches)

    first_model = _model(0, dtype)
    first = _optimizer(first_model, s.algorithm())
    _train(first, first_model, batches[:5])
    first.comm.bytes_sent += 123.0  # a 1-worker ring sends nothing; make the counter visible
    first.comm.simulated_comm_time_s += 0.5
    try:
        sd = save_and_load(first.state_dict())
    except Exception as exc:
        raise Fail(
            f"after step 5: state_dict() through torch.save/torch.load(weights_only=True) "
            f"raised {describe_exception(exc)}",
            step=5,
        ) from None
    resumed_model = _model(7, dtype)  # another initialisation: everything comes from the dict
    resumed = _optimizer(resumed_model, s.algorithm())
    try:
        resumed.load_state_dict(sd)
    except Exception as exc:
        raise Fail(
            f"after step 5: load_state_dict of the saved state_dict raised "
            f"{describe_exception(exc)}",
            step=5,
        ) from None
    if not torch.equal(_flat(resumed_model), _flat(first_model)):
        raise Fail("after load_state_dict the model's parameters are not the saved ones", step=5)
    if float(resumed.comm.bytes_sent[0]) != 123.0 or resumed.comm.simulated_comm_time_s != 0.5:
        raise Fail("load_state_dict did not restore bytes_sent / simulated_comm_time_s", step=5)
    _train(resumed, resumed_model, batches[5:], first=5)
    d = max_abs_diff(resumed.flat_params, full.flat_params)
    if d > 0 or not torch.equal(_flat(resumed_model), _flat(full_model)):
        raise Fail(
            f"after step 10: the optimizer resumed from its state_dict after step 5 differs "
            f"from the uninterrupted one by up to {fmt(d)}; state kept outside the algorithm's "
            "state, or not restored?",
            step=10,
            diff=d,
        )
    return "state_dict after step 5 of 10: resumed optimizer equals the uninterrupted one"


def check_centralized(ctx: Ctx) -> str:
    """Where the class declares ``centralized`` reductions: on one worker (W = [[1]]) with the
    reduction's options, 12 steps of ``DistributedOptimizer`` equal the declared ``torch.optim``
    optimizer with its options on the same model and minibatches (``centralized`` tolerance:
    absolute, default 1e-12 in float64 and 1e-5 in float32)."""
    s, dtype = ctx.settings, ctx.dtype
    red: Reduction = ctx.case
    atol = s.tolerance("centralized", dtype, _default_atol(dtype))
    batches = _batches(12, dtype)
    ref = _model(0, dtype)
    try:
        torch_opt = red.optimizer_class()(ref.parameters(), **red.optimizer_options)
    except Exception as exc:
        raise Fail(f"building {red.label} raised {describe_exception(exc)}") from None
    expected = []
    for xb, yb in batches:
        torch_opt.zero_grad()
        nn.functional.cross_entropy(ref(xb), yb).backward()
        torch_opt.step()
        expected.append(_flat(ref).clone())
    model = _model(0, dtype)
    try:
        algorithm = s.cls(**red.options)
    except Exception as exc:
        raise Fail(f"{s.cls.__name__}(**{red.options}) raised {describe_exception(exc)}") from None
    opt = _optimizer(model, algorithm)
    worst = _compare(
        _train(opt, model, batches),
        expected,
        atol,
        f"on one worker with {red.options} the parameters differ from {red.label}'s",
    )
    return (
        f"12 steps on one worker equal {red.label} (largest diff {fmt(worst)}, atol {atol}, "
        f"{dtype_name(dtype)})"
    )
