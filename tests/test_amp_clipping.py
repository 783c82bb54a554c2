"""Gradient clipping with ``torch.amp.GradScaler`` on ``DistributedOptimizer`` (the recipe in
docs/guide/distributed-optimizer.md): ``clip_grad_norm=`` on the optimizer with a plain
``scaler.step(opt)`` clips the unscaled gradient, with or without overlap, and equals torch's own
recipe (``scaler.unscale_``, ``clip_grad_norm_``, ``scaler.step``) on ``torch.optim.SGD``;
torch's recipe also works on the optimizer when the gradient hooks are off."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from peergrad.comm import SimulatedCommunicator
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology

DTYPE = torch.float64
CLIP = 0.1
STEPS = 6
SETTINGS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(DTYPE)


def batches() -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(16, 5, generator=gen, dtype=DTYPE), torch.randint(0, 3, (16,), generator=gen))
        for _ in range(STEPS)
    ]


def run(
    opt: torch.optim.Optimizer, model: nn.Module, before_step: Callable[..., None]
) -> list[Tensor]:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    out = []
    for xb, yb in batches():
        opt.zero_grad()
        scaler.scale(nn.functional.cross_entropy(model(xb), yb)).backward()
        before_step(scaler, opt, model)
        scaler.step(opt)
        scaler.update()
        out.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return out


def torch_recipe(
    scaler: torch.amp.GradScaler, opt: torch.optim.Optimizer, model: nn.Module
) -> None:
    scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    assert norm > CLIP  # the clipping is active at every step


def nothing(*_: object) -> None:
    pass


def reference() -> list[Tensor]:
    model = make_model()
    return run(torch.optim.SGD(model.parameters(), **SETTINGS), model, torch_recipe)


@pytest.mark.parametrize("algorithm", ["dpsgd", "allreduce"])
@pytest.mark.parametrize("overlap", [False, True])
def test_clip_grad_norm_option_with_scaler_step_clips_the_unscaled_gradient(
    algorithm: str, overlap: bool
) -> None:
    expected = reference()
    model = make_model()
    comm = SimulatedCommunicator(make_topology("ring", 1))
    opt = DistributedOptimizer(
        model.parameters(), algorithm, comm, overlap=overlap, clip_grad_norm=CLIP, **SETTINGS
    )
    got = run(opt, model, nothing)  # no unscale_: the optimizer unscales, then clips
    assert not opt.overlapping  # clipping needs the whole gradient: no gradient hooks
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_torch_recipe_works_without_gradient_hooks() -> None:
    expected = reference()
    model = make_model()
    comm = SimulatedCommunicator(make_topology("ring", 1))
    opt = DistributedOptimizer(model.parameters(), "dpsgd", comm, overlap=False, **SETTINGS)
    got = run(opt, model, torch_recipe)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
