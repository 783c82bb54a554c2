"""PyTorch's own local SGD reproduced exactly (issue 28 item 2), float64, ``atol=1e-12``.

One launch of 4 gloo processes (``_torch_local_sgd_worker.py``) runs, on the same MLP, seeds and
per-rank minibatches, PyTorch's ``torch.optim.SGD`` + ``PeriodicModelAverager``, DDP with
``post_localSGD_hook`` + ``PostLocalSGDOptimizer``, and peergrad's ``local-sgd`` /
``post-local-sgd`` through ``DistributedOptimizer`` in a plain ``backward(); step()`` loop. Every
rank's parameters after every one of the 24 steps are compared (warm-up W = 4, period K = 3:
model averages after iterations 5, 8, ..., 23). The same mappings are checked on the simulated
engine (4 workers in this process, gradients by ``torch.func``) against the torch runs, and so
are the mappings that do *not* hold (``first_sync="period"``, today's model-averaging warm-up
with momentum).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.func import functional_call, grad, vmap

from _distributed import start_workers, wait_all
from _torch_local_sgd_worker import (
    AVERAGER,
    LOSS,
    LR,
    M0,
    M9,
    PEERGRAD_CASES,
    STEPS,
    WORLD,
    K,
    W,
    data,
    make_model,
)
from peergrad.algorithms import make_algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.comm.base import allreduce_bytes
from peergrad.topology import make_topology

HERE = Path(__file__).parent
ATOL = 1e-12


@pytest.fixture(scope="module")
def gloo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``{key: [WORLD, STEPS, D]}`` trajectories (and per-rank byte and round counts)."""
    tmp = tmp_path_factory.mktemp("torch_local_sgd")
    procs = start_workers(
        [str(HERE / "_torch_local_sgd_worker.py"), str(tmp)], WORLD, cwd=tmp, log_dir=tmp
    )
    codes = wait_all(procs, timeout_s=300)
    logs = "\n".join((tmp / f"rank{r}.err").read_text()[-2000:] for r in range(WORLD))
    assert codes == [0] * WORLD, f"worker exit codes {codes}\n{logs}"
    ranks = [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]
    out: dict[str, Any] = {}
    for key in ranks[0]:
        values = [r[key] for r in ranks]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


def simulate(algorithm: str, **options: Any) -> torch.Tensor:
    """peergrad's simulated engine on the worker's model and data: ``[WORLD, STEPS, D]``."""
    model = make_model()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [math.prod(s) for s in shapes]

    def loss(flat: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        params = {
            n: t.view(s) for n, t, s in zip(names, torch.split(flat, sizes), shapes, strict=True)
        }
        return LOSS(functional_call(model, params, (xb,)), yb)

    batches = [data(r) for r in range(WORLD)]
    xs = torch.stack([b[0] for b in batches], dim=1)  # [STEPS, WORLD, BATCH, 5]
    ys = torch.stack([b[1] for b in batches], dim=1)
    flat0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    x = flat0.expand(WORLD, -1).clone()
    comm = SimulatedCommunicator(make_topology("ring", WORLD))
    alg = make_algorithm(algorithm, lr=LR, **options)
    state = alg.init(x, comm)
    out = []
    for k in range(STEPS):
        g = vmap(grad(loss))(x, xs[k], ys[k])
        state = alg.step(x, g, state, comm)
        out.append(x.clone())
    return torch.stack(out, dim=1)


def diverged_after(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> int | None:
    """The first iteration (1-based) after which ``a`` and ``b`` differ by more than ``atol``
    on some rank (``[WORLD, STEPS, D]``), or None."""
    per_step = (a - b).abs().amax(dim=(0, 2))
    bad = (per_step > atol).nonzero()
    return int(bad[0]) + 1 if len(bad) else None


def post_local(**options: Any) -> dict[str, Any]:
    return {"period": K, "warmup_steps": W, **options}


# ------------------------------------------------------------------ gloo: against torch itself
@pytest.mark.parametrize("case", list(PEERGRAD_CASES))
def test_distributed_optimizer_equals_torch(case: str, gloo: dict[str, Any]) -> None:
    """peergrad's ``DistributedOptimizer`` on 4 gloo processes equals torch's implementation
    (the torch case of the same name; ``-overlap``: the same torch run) on every rank after
    every step; bytes: one all-reduce of D per warm-up step ("gradients") and per average."""
    ours = gloo[f"peergrad:{case}"]
    theirs = gloo[f"torch:{case.removesuffix('-overlap')}"]
    assert ours.shape == theirs.shape == (WORLD, STEPS, ours.shape[-1])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=ATOL)
    # the local phase really is local: the ranks differ before an average, agree after it
    spread = (ours - ours.mean(0, keepdim=True)).abs().amax(dim=(0, 2))
    averages = [t for t in range(W + 1, STEPS + 1) if (t - W - 1) % K == 0]
    assert averages == [5, 8, 11, 14, 17, 20, 23]
    for t in range(W + 1, STEPS + 1):
        assert (float(spread[t - 1]) < 1e-15) == (t in averages), t
    gradient_allreduces = W if PEERGRAD_CASES[case][0] == "post-local-sgd" else 0
    n_msgs = gradient_allreduces + len(averages)
    D = ours.shape[-1]
    assert gloo[f"rounds:{case}"] == [n_msgs] * WORLD
    assert gloo[f"bytes:{case}"] == [n_msgs * allreduce_bytes(D * 8, WORLD)] * WORLD


def test_torch_hook_settings_that_give_plain_post_local_sgd(gloo: dict[str, Any]) -> None:
    """The hook's default post-local gradient all-reduce within subgroups of one process each
    is ``post_local_gradient_allreduce=False``; within one subgroup of all processes (the
    default subgroup of one node whose GPUs are all the processes) torch runs synchronous SGD
    throughout (the averages change nothing): peergrad's ``allreduce``."""
    torch.testing.assert_close(
        gloo["torch:post-local-subgroups1-m9"], gloo["torch:post-local-m9"], rtol=0, atol=0
    )
    sync = gloo["torch:post-local-subgroup-world-m9"]
    torch.testing.assert_close(sync, simulate("allreduce", **M9), rtol=0, atol=ATOL)


# ------------------------------------------------------------------ simulated engine
@pytest.mark.parametrize("momentum", [M0, M9], ids=["m0", "m9"])
def test_simulated_local_sgd_is_periodic_model_averager(
    momentum: dict[str, Any], gloo: dict[str, Any]
) -> None:
    """``local-sgd`` with warmup_sync="none", first_sync="immediate", local_state="keep" and
    no block step = ``SGD`` + ``PeriodicModelAverager(period=K, warmup_steps=W)``; the default
    first_sync="period" (first average K steps after the warm-up) is not."""
    name = "averager-m0" if momentum is M0 else "averager-m9"
    theirs = gloo[f"torch:{name}"]
    torch.testing.assert_close(
        simulate("local-sgd", **AVERAGER, **momentum), theirs, rtol=0, atol=ATOL
    )
    late = simulate("local-sgd", **{**AVERAGER, "first_sync": "period"}, **momentum)
    assert diverged_after(late, theirs) == W + 1  # torch averages after W + 1, this does not


@pytest.mark.parametrize(
    "options", [M0, M9, {"momentum": 0.9, "nesterov": True}], ids=["m0", "m9", "nesterov"]
)
def test_simulated_post_local_sgd_is_torch_post_local_sgd(
    options: dict[str, Any], gloo: dict[str, Any]
) -> None:
    """The ``post-local-sgd`` preset = DDP + ``post_localSGD_hook`` (no post-local gradient
    all-reduce) + ``PostLocalSGDOptimizer``; with first_sync="period" it is not."""
    name = {id(M0): "post-local-m0", id(M9): "post-local-m9"}.get(id(options), "")
    theirs = gloo[f"torch:{name or 'post-local-nesterov'}"]
    torch.testing.assert_close(
        simulate("post-local-sgd", **post_local(**options)), theirs, rtol=0, atol=ATOL
    )
    late = simulate("post-local-sgd", **post_local(first_sync="period", **options))
    assert diverged_after(late, theirs) == W + 1


def test_todays_model_averaging_warmup_matches_torch_only_without_momentum(
    gloo: dict[str, Any],
) -> None:
    """The issue's mapping, as far as it holds: ``local-sgd`` with its default
    warmup_sync="models" and ``warmup_steps = W + 1`` averages after W + 1, W + 1 + K, ... as
    torch does, but averages the models at every warm-up step too. Against DDP +
    ``post_localSGD_hook`` + ``PostLocalSGDOptimizer`` (warm-up W) that is the same without
    momentum (averaging models that started equal = averaging gradients); with momentum the
    models agree through the warm-up (the mean of the workers' buffers is DDP's buffer) and
    part at the first local step (per-worker buffers vs DDP's common one). Against the averager
    alone (no communication in the warm-up) it holds only for W = 0 (``warmup_steps = 1``)."""
    today = {"period": K, "block_momentum": 0.0, "local_state": "keep"}
    torch.testing.assert_close(
        simulate("local-sgd", **today, warmup_steps=W + 1, **M0),
        gloo["torch:post-local-m0"],
        rtol=0,
        atol=ATOL,
    )
    with_momentum = simulate("local-sgd", **today, warmup_steps=W + 1, **M9)
    assert diverged_after(with_momentum, gloo["torch:post-local-m9"]) == W + 2
    # no peergrad buffer policy fixes it: "average" averages the buffers at every later sync
    averaged = simulate(
        "local-sgd", **{**today, "local_state": "average"}, warmup_steps=W + 1, **M9
    )
    assert diverged_after(averaged, gloo["torch:post-local-m9"]) is not None
    # the averager alone: W = 0 is warmup_steps = 1; W > 0 is not warmup_steps = W + 1
    torch.testing.assert_close(
        simulate("local-sgd", **today, warmup_steps=1, **M9),
        gloo["torch:averager-w0-m9"],
        rtol=0,
        atol=ATOL,
    )
    assert (
        diverged_after(
            simulate("local-sgd", **today, warmup_steps=W + 1, **M0), gloo["torch:averager-m0"]
        )
        == 1
    )
