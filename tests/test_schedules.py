"""Learning-rate schedules (``--lr-schedule``, ``--warmup-steps``): each factor equals its
formula written out here, the sequence equals torch's own scheduler loop, factors are a pure
function of the step (resume), bad specs are refused, and ``apply`` works for every algorithm."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.optim import lr_scheduler

from peergrad.algorithms import REGISTRY
from peergrad.train.schedules import LRSchedule

T = 40


def expected(spec: str, k: int, warmup: int, total: int) -> float:
    """The factor at step k (1-based), written independently of torch."""
    if k <= warmup:
        return k / (warmup + 1)
    j, r = k - warmup - 1, total - warmup
    name, _, rest = spec.partition(":")
    nums = [float(p) for p in rest.split(",")] if rest else []
    if name == "constant":
        return 1.0
    if name == "step":
        every, gamma = nums
        return gamma ** (j // int(every))
    if name == "multistep":
        *milestones, gamma = nums
        return gamma ** sum(1 for m in milestones if m <= j)
    if name == "cosine":
        return (1 + math.cos(math.pi * j / r)) / 2
    if name == "linear":
        return 1 - j / r
    raise AssertionError(spec)


SPECS = ["constant", "step:7,0.5", "multistep:5,12,20,0.1", "cosine", "linear"]


@pytest.mark.parametrize("warmup", [0, 1, 6])
@pytest.mark.parametrize("spec", SPECS)
def test_factor_equals_the_formula(spec: str, warmup: int) -> None:
    s = LRSchedule.parse(spec, warmup_steps=warmup, total_steps=T)
    got = torch.tensor([s.factor(k) for k in range(1, T + 1)], dtype=torch.float64)
    want = torch.tensor(
        [expected(spec, k, warmup, T) for k in range(1, T + 1)], dtype=torch.float64
    )
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert (got > 0).all()  # every step of the run has a positive lr


def test_warmup_rises_linearly_to_the_schedule() -> None:
    s = LRSchedule.parse("cosine", warmup_steps=4, total_steps=10)
    assert [s.factor(k) for k in range(1, 6)] == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 1.0], abs=0, rel=1e-15
    )
    assert s.factor(6) == pytest.approx((1 + math.cos(math.pi / 6)) / 2, abs=0, rel=1e-12)


def torch_loop(make, total: int, lr: float = 0.1) -> list[float]:
    """The lr of each of ``total`` iterations of a plain PyTorch loop with scheduler ``make``."""
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(opt)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize(
    ("spec", "warmup", "make"),
    [
        ("step:7,0.5", 0, lambda o: lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
        ("multistep:5,12,0.1", 0, lambda o: lr_scheduler.MultiStepLR(o, [5, 12], gamma=0.1)),
        ("cosine", 0, lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=T)),
        ("linear", 0, lambda o: lr_scheduler.LinearLR(o, 1.0, 0.0, total_iters=T)),
        (
            "cosine",
            5,
            lambda o: lr_scheduler.SequentialLR(
                o,
                [
                    lr_scheduler.LinearLR(o, 1 / 6, 1.0, total_iters=5),
                    lr_scheduler.CosineAnnealingLR(o, T_max=T - 5),
                ],
                milestones=[5],
            ),
        ),
    ],
)
def test_equals_the_pytorch_scheduler_loop(spec: str, warmup: int, make) -> None:
    s = LRSchedule.parse(spec, warmup_steps=warmup, total_steps=T)
    want = torch_loop(make, T)
    assert [0.1 * s.factor(k) for k in range(1, T + 1)] == pytest.approx(want, rel=1e-15, abs=0)


def test_factor_is_a_pure_function_of_the_step() -> None:
    """Asked in any order, or by a fresh schedule (a resumed run), the same values."""
    forward = LRSchedule.parse("cosine", warmup_steps=3, total_steps=T)
    values = [forward.factor(k) for k in range(1, T + 1)]
    backward = LRSchedule.parse("cosine", warmup_steps=3, total_steps=T)
    assert [backward.factor(k) for k in range(T, 0, -1)] == values[::-1]
    resumed = LRSchedule.parse("cosine", warmup_steps=3, total_steps=T)
    assert [resumed.factor(k) for k in range(25, T + 1)] == values[24:]
    assert forward.factor(7) == values[6]  # asked again


@pytest.mark.parametrize(
    ("spec", "warmup", "total", "words"),
    [
        ("exponential", 0, 10, ["--lr-schedule 'exponential'", "unknown schedule", "cosine"]),
        ("step:10", 0, 10, ["--lr-schedule 'step:10'", "EVERY,GAMMA"]),
        ("step:0,0.5", 0, 10, ["EVERY must be a positive integer"]),
        ("step:x,0.5", 0, 10, ["EVERY must be a positive integer", "'x'"]),
        ("step:5,-1", 0, 10, ["GAMMA must be a positive number"]),
        ("step:5,nan", 0, 10, ["GAMMA must be a positive number"]),
        ("multistep:0.5", 0, 10, ["at least one milestone and GAMMA"]),
        ("multistep:5,3,0.5", 0, 10, ["milestones must increase"]),
        ("multistep:a,0.5", 0, 10, ["a milestone must be a positive integer"]),
        ("cosine:5", 0, 10, ["cosine takes no parameters"]),
        ("", 0, 10, ["--lr-schedule ''"]),
        ("cosine", 10, 10, ["--warmup-steps 10 must be less than the run's 10 steps"]),
        ("constant", 11, 10, ["--warmup-steps 11 must be less than"]),
        ("constant", -1, 10, ["--warmup-steps must be >= 0"]),
    ],
)
def test_bad_specs_are_refused(spec: str, warmup: int, total: int, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        LRSchedule.parse(spec, warmup_steps=warmup, total_steps=total)
    assert "\n" not in str(info.value)
    for w in words:
        assert w in str(info.value)


def test_wrong_types_and_steps_are_refused() -> None:
    with pytest.raises(TypeError, match="--lr-schedule must be a string"):
        LRSchedule.parse(None, warmup_steps=0, total_steps=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="--warmup-steps must be an int"):
        LRSchedule.parse("cosine", warmup_steps=1.5, total_steps=5)  # type: ignore[arg-type]
    s = LRSchedule.parse("cosine", warmup_steps=0, total_steps=5)
    for step in (0, 6):
        with pytest.raises(ValueError, match=r"step must lie in 1\.\.5"):
            s.factor(step)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_apply_scales_lr_and_keeps_every_other_field(name: str) -> None:
    algorithm = REGISTRY[name]()
    s = LRSchedule.parse("step:2,0.5", warmup_steps=3, total_steps=20)
    scaled = s.apply(algorithm, 2)  # warm-up: 2/4
    assert type(scaled) is type(algorithm)
    assert scaled.lr == algorithm.lr * 0.5
    others = [f.name for f in dataclasses.fields(algorithm) if f.name != "lr"]
    assert {k: getattr(scaled, k) for k in others} == {k: getattr(algorithm, k) for k in others}
    assert s.apply(algorithm, 4) is algorithm  # factor 1: the algorithm itself
    assert s.apply(algorithm, 7).lr == algorithm.lr * 0.5  # main step j = 3: gamma^(3 // 2)
    assert s.apply(algorithm, 8).lr == algorithm.lr * 0.25  # j = 4: gamma^2
    assert algorithm.lr == REGISTRY[name]().lr  # the base is never changed


def test_constant_without_warmup_is_free() -> None:
    s = LRSchedule.parse("constant", warmup_steps=0, total_steps=10**9)
    assert s.is_constant and s.factor(10**9) == 1.0


def test_apply_needs_an_lr_field() -> None:
    s = LRSchedule.parse("cosine", warmup_steps=0, total_steps=5)
    with pytest.raises(TypeError, match="needs an algorithm with an lr field"):
        s.apply(object(), 2)
