"""DistributedOptimizer: torch.optim equivalence, zero-copy buffers, resume, errors, real processes.

Single-process tests use a SimulatedCommunicator on a 1-worker ring (W = [[1]]); the last test
starts 4 real gloo processes on loopback running ``examples/train_own_loop.py``. The tests that
are generic over the registry (the optimizer equals the bare algorithm, resumes bit-exactly from
its ``state_dict``, and equals ``torch.optim.SGD``/``Adam``/``RMSprop``/``Adagrad`` on one worker
where the algorithm reduces to it) run through the conformance kit: ``tests/test_conformance.py``
(the reductions are declared in ``tests/_conformance_cases.py``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from _distributed import start_workers, wait_all
from peergrad.algorithms import Algorithm, MomentumState, make_algorithm
from peergrad.comm import SimulatedCommunicator, worker_dot
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology

REPO = Path(__file__).resolve().parents[1]
DTYPE = torch.float64

SGD_SETTINGS = [
    {"lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    {"lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-3},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
]


# ---------------------------------------------------------------- helpers
def make_model(seed: int, hidden: int = 8) -> nn.Module:
    """A float64 MLP 5 -> hidden -> 3 with parameters drawn from an explicit generator."""
    model = nn.Sequential(nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, 3)).to(DTYPE)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=DTYPE))
    return model


def make_batches(steps: int, seed: int = 1, batch: int = 16) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch, 5, generator=gen, dtype=DTYPE),
            torch.randint(3, (batch,), generator=gen),
        )
        for _ in range(steps)
    ]


def one_worker_comm() -> SimulatedCommunicator:
    return SimulatedCommunicator(make_topology("ring", 1))


def flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def make_closure(opt: DistributedOptimizer, model: nn.Module, xb: Tensor, yb: Tensor) -> Any:
    """The closure a line search needs: backward only when gradients are enabled."""

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    return closure


def train_steps(
    opt: DistributedOptimizer, model: nn.Module, batches: list[tuple[Tensor, Tensor]]
) -> list[Tensor]:
    """The usual loop (with a closure for line-search algorithms); returns the parameters after
    every step."""
    loss_fn = nn.CrossEntropyLoss()
    trajectory = []
    for xb, yb in batches:
        if opt.algorithm.needs_closure:
            opt.step(make_closure(opt, model, xb, yb))
        else:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        trajectory.append(flat(model).clone())
    return trajectory


def sgd_trajectory(
    model: nn.Module,
    batches: list[tuple[Tensor, Tensor]],
    settings: dict[str, Any],
    grad_hook: Callable[[nn.Module], None] | None = None,
) -> list[Tensor]:
    opt = torch.optim.SGD(model.parameters(), **settings)
    loss_fn = nn.CrossEntropyLoss()
    trajectory = []
    for xb, yb in batches:
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        if grad_hook is not None:
            grad_hook(model)
        opt.step()
        trajectory.append(flat(model).clone())
    return trajectory


def assert_same_trajectory(a: list[Tensor], b: list[Tensor], atol: float = 1e-12) -> None:
    assert len(a) == len(b)
    for k, (u, v) in enumerate(zip(a, b, strict=True)):
        assert torch.allclose(u, v, rtol=0, atol=atol), (
            f"step {k + 1}: max diff {(u - v).abs().max()}"
        )


# ---------------------------------------------------------------- buffers and gradients
def test_parameters_and_gradients_are_views_of_the_flat_buffers() -> None:
    model = make_model(0)
    before = flat(model).clone()
    opt = DistributedOptimizer(model.parameters(), "dpsgd", one_worker_comm(), lr=0.1)
    assert opt.flat_params.shape == (1, before.numel()) == opt.flat_grad.shape
    assert torch.equal(opt.flat_params[0], before)  # values were copied in

    xb, yb = make_batches(1)[0]
    opt.zero_grad()
    nn.functional.cross_entropy(model(xb), yb).backward()
    g_ptr = opt.flat_grad.untyped_storage().data_ptr()
    x_ptr = opt.flat_params.untyped_storage().data_ptr()
    for p in model.parameters():
        assert p.grad.untyped_storage().data_ptr() == g_ptr  # no copy of the gradient
        assert p.untyped_storage().data_ptr() == x_ptr
    assert torch.equal(
        opt.flat_grad[0], torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    )

    opt.flat_params.zero_()  # writes to x are writes to the model
    assert all(bool((p == 0).all()) for p in model.parameters())


@pytest.mark.parametrize("how", ["zero_grad-set_to_none", "model.zero_grad", "grad=None"])
def test_gradients_set_to_none_then_backward(how: str) -> None:
    settings = {"lr": 0.1, "momentum": 0.9}
    batches = make_batches(5)
    expected = sgd_trajectory(make_model(0), batches, settings)
    model = make_model(0)
    opt = DistributedOptimizer(model.parameters(), "allreduce", one_worker_comm(), **settings)
    got = []
    for xb, yb in batches:
        if how == "zero_grad-set_to_none":
            opt.zero_grad(set_to_none=True)
            assert all(p.grad is not None for p in model.parameters())  # buffer kept
        elif how == "model.zero_grad":
            model.zero_grad(set_to_none=True)
        else:
            for p in model.parameters():
                p.grad = None
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
        got.append(flat(model).clone())
    assert_same_trajectory(got, expected)
    g_ptr = opt.flat_grad.untyped_storage().data_ptr()
    assert all(p.grad.untyped_storage().data_ptr() == g_ptr for p in model.parameters())


def test_replaced_clipped_and_missing_gradients_give_a_correct_step() -> None:
    settings = {"lr": 0.1, "momentum": 0.5}
    batches = make_batches(4)

    def edit(model: nn.Module) -> None:
        params = list(model.parameters())
        torch.nn.utils.clip_grad_norm_(params, max_norm=0.5)  # in place
        params[0].grad = params[0].grad * 2.0  # a new tensor
        params[-1].grad = None  # contributes zeros

    def edit_sgd(model: nn.Module) -> None:
        edit(model)
        p = list(model.parameters())[-1]
        p.grad = torch.zeros_like(p)  # torch.optim would skip a None gradient entirely

    expected = sgd_trajectory(make_model(0), batches, settings, grad_hook=edit_sgd)
    model = make_model(0)
    opt = DistributedOptimizer(model.parameters(), "dpsgd", one_worker_comm(), **settings)
    got = []
    for xb, yb in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        edit(model)
        opt.step()
        got.append(flat(model).clone())
    assert_same_trajectory(got, expected)


def test_replaced_parameter_storage_is_adopted_and_a_moved_one_is_rejected() -> None:
    model = make_model(0)
    opt = DistributedOptimizer(model.named_parameters(), "allreduce", one_worker_comm(), lr=0.1)
    p = model[0].bias
    p.data = torch.full_like(p, 3.0)  # e.g. the user assigns new weights
    opt.zero_grad()
    opt.step()  # zero gradient, no momentum: x unchanged but re-attached
    assert p.untyped_storage().data_ptr() == opt.flat_params.untyped_storage().data_ptr()
    assert bool((p == 3.0).all())
    p.data = p.data.to(torch.float32)
    with pytest.raises(ValueError, match=r"'0\.bias' was replaced by a torch.float32"):
        opt.step()


def test_step_with_closure_returns_the_loss_and_equals_sgd() -> None:
    settings = {"lr": 0.1, "momentum": 0.9}
    batches = make_batches(4)
    expected = sgd_trajectory(make_model(0), batches, settings)
    model = make_model(0)
    opt = DistributedOptimizer(model.parameters(), "dpsgd", one_worker_comm(), **settings)
    got = []
    for xb, yb in batches:

        def closure(xb: Tensor = xb, yb: Tensor = yb) -> Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            return loss

        with torch.no_grad():  # step re-enables grad for the closure, like torch.optim
            loss = opt.step(closure)
        assert isinstance(loss, Tensor) and loss.ndim == 0
        got.append(flat(model).clone())
    assert_same_trajectory(got, expected)


@dataclasses.dataclass(frozen=True)
class BacktrackingProbe(Algorithm):
    """Test-only line search: halve t from ``lr`` until the Armijo condition holds."""

    lr: float = 4.0
    checks: list[tuple[Tensor, Tensor]] = dataclasses.field(default_factory=list, compare=False)

    name: ClassVar[str] = "probe"

    def init(self, x: Tensor, comm: Any) -> MomentumState:
        return MomentumState(step=0, momentum_buffer=torch.zeros_like(x))

    def step(
        self, x: Tensor, g: Tensor, state: Any, comm: Any, closure: Any = None, pending: Any = None
    ) -> MomentumState:
        assert closure is not None
        x0, g0 = x.clone(), g.clone()
        f0 = closure(x)
        t = self.lr
        for _ in range(30):
            trial = x - t * g
            f = closure(trial)
            assert f.shape == (1,)
            assert torch.equal(x, x0) and torch.equal(g, g0)  # restored after every trial
            self.checks.append((trial.clone(), f.clone()))
            if bool(f < f0 - 0.5 * t * worker_dot(g, g)):
                break
            t /= 2
        x.sub_(g, alpha=t)
        return MomentumState(step=state.step + 1, momentum_buffer=state.momentum_buffer)


def test_line_search_closure_evaluates_the_trial_point_and_restores_x_and_g() -> None:
    model = make_model(0)
    ref = make_model(0)
    algorithm = BacktrackingProbe()
    opt = DistributedOptimizer(model.parameters(), algorithm, one_worker_comm())
    for xb, yb in make_batches(3):

        def closure(xb: Tensor = xb, yb: Tensor = yb) -> Tensor:
            model.zero_grad(set_to_none=True)  # replaces the .grad views: must be re-attached
            loss = nn.functional.cross_entropy(model(xb), yb)
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        opt.step(closure)
        for trial, f in algorithm.checks:
            torch.nn.utils.vector_to_parameters(trial[0], ref.parameters())
            assert torch.equal(f, nn.functional.cross_entropy(ref(xb), yb).reshape(1).detach())
        assert len(algorithm.checks) >= 2  # lr = 4 is too long: at least one halving
        algorithm.checks.clear()
    g_ptr = opt.flat_grad.untyped_storage().data_ptr()
    assert all(p.grad.untyped_storage().data_ptr() == g_ptr for p in model.parameters())


def dropout_model(seed: int) -> nn.Module:
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 3)).to(DTYPE)
    torch.nn.utils.vector_to_parameters(flat(make_model(seed, 16)), model.parameters())
    return model


def test_line_search_trials_reuse_the_loss_and_replay_the_dropout_masks() -> None:
    """Spec §3.2: every Armijo trial evaluates the SAME minibatch with the SAME randomness as the
    gradient. With Dropout, each trial's loss must equal the loss at the trial point under the
    RNG state the step started from; the first closure call (grad enabled) gives f(x_t), every
    later one is a trial under no_grad at another point; afterwards the RNG is where one forward
    pass leaves it (the trials leave no trace)."""
    model, ref = dropout_model(0), dropout_model(0)
    options = {"compressor": "identity", "lr": 20.0, "eta_max": 20.0, "reset": "max"}
    opt = DistributedOptimizer(model.parameters(), "armijo-csgd", one_worker_comm(), **options)
    for xb, yb in make_batches(3):
        calls: list[tuple[bool, Tensor, Tensor]] = []
        inner = make_closure(opt, model, xb, yb)

        def closure(inner: Any = inner, calls: list = calls) -> Tensor:
            loss = inner()
            calls.append((torch.is_grad_enabled(), flat(model).clone(), loss.detach().clone()))
            return loss

        x0, rng0 = opt.flat_params[0].clone(), torch.get_rng_state()
        opt.step(closure)
        rng_after = torch.get_rng_state()

        assert calls[0][0] and torch.equal(calls[0][1], x0)  # the gradient pass, at x_t
        assert len(calls) >= 3  # eta0 = 20 is too long: at least one backtrack
        for grad_enabled, point, loss in calls[1:]:
            assert not grad_enabled and not torch.equal(point, x0)
            torch.nn.utils.vector_to_parameters(point, ref.parameters())
            torch.set_rng_state(rng0)
            with torch.no_grad():
                assert torch.equal(loss, nn.functional.cross_entropy(ref(xb), yb))
        torch.set_rng_state(rng0)
        ref(xb)
        assert torch.equal(rng_after, torch.get_rng_state())
        torch.set_rng_state(rng_after)


def test_line_search_needs_a_closure_that_skips_backward_under_no_grad() -> None:
    model = make_model(0)
    opt = DistributedOptimizer(model.parameters(), "armijo-csgd", one_worker_comm())
    xb, yb = make_batches(1)[0]
    before = opt.flat_params.clone()
    with pytest.raises(ValueError, match="armijo-csgd runs a line search: call step"):
        opt.step()

    def always_backward() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match=r"only when torch.is_grad_enabled\(\)"):
        opt.step(always_backward)
    assert torch.equal(opt.flat_params, before) and opt.num_steps == 0


# ---------------------------------------------------------------- state_dict
def test_state_dict_is_a_copy_and_restores_options() -> None:
    model = make_model(0)
    opt = DistributedOptimizer(model.parameters(), "dpsgd", one_worker_comm(), lr=0.1, momentum=0.9)
    train_steps(opt, model, make_batches(2))
    opt.set_options(lr=0.02)
    sd = opt.state_dict()
    assert sd["options"]["lr"] == 0.02 and sd["param_shapes"][0] == (8, 5)
    assert sd["flat_params"].data_ptr() != opt.flat_params.data_ptr()
    buf = sd["state"]["momentum_buffer"]
    assert buf.data_ptr() != opt.algorithm_state.momentum_buffer.data_ptr()
    assert torch.equal(buf, opt.algorithm_state.momentum_buffer)

    other_model = make_model(1)
    other = DistributedOptimizer(other_model.parameters(), "dpsgd", one_worker_comm(), lr=0.1)
    other.load_state_dict(sd)
    assert other.algorithm.lr == 0.02 and other.algorithm.momentum == 0.9
    with pytest.raises(ValueError, match="no option"):
        opt.set_options(learning_rate=0.1)


def test_load_state_dict_rejects_a_different_model_or_algorithm() -> None:
    model = make_model(0)
    opt = DistributedOptimizer(model.named_parameters(), "dpsgd", one_worker_comm(), lr=0.1)
    sd = opt.state_dict()

    wider = make_model(0, hidden=9)
    other = DistributedOptimizer(wider.named_parameters(), "dpsgd", one_worker_comm(), lr=0.1)
    before = other.flat_params.clone()
    with pytest.raises(ValueError, match=r"parameter '0\.weight' \(index 0\) has shape \(9, 5\)"):
        other.load_state_dict(sd)
    assert torch.equal(other.flat_params, before)  # nothing changed

    unnamed = DistributedOptimizer(make_model(0, 9).parameters(), "dpsgd", one_worker_comm())
    with pytest.raises(ValueError, match="parameter 'param0'"):
        unnamed.load_state_dict(sd)

    fewer = DistributedOptimizer(list(make_model(0).parameters())[:2], "dpsgd", one_worker_comm())
    with pytest.raises(ValueError, match="holds 4 parameters, this optimizer 2"):
        fewer.load_state_dict(sd)

    allreduce = DistributedOptimizer(make_model(0).parameters(), "allreduce", one_worker_comm())
    with pytest.raises(ValueError, match="for algorithm 'dpsgd'.*runs 'allreduce'"):
        allreduce.load_state_dict(sd)

    with pytest.raises(ValueError, match="missing"):
        opt.load_state_dict({"algorithm": "dpsgd"})
    with pytest.raises(ValueError, match="saved by worker"):
        opt.load_state_dict({**sd, "worker_ids": [3]})


# ---------------------------------------------------------------- invalid input
def invalid_cases() -> list[Any]:
    f64 = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    f32 = nn.Parameter(torch.zeros(3, dtype=torch.float32))
    leaf = nn.Parameter(torch.zeros(3))
    return [
        pytest.param(lambda: [], ValueError, "empty parameter list", id="empty"),
        pytest.param(
            lambda: [{"params": []}], ValueError, "group 0 has no parameters", id="empty-group"
        ),
        pytest.param(lambda: [f64, f32], ValueError, "one dtype and device", id="mixed-dtypes"),
        pytest.param(lambda: [leaf, leaf], ValueError, "more than once", id="duplicate"),
        pytest.param(lambda: [leaf * 2], ValueError, "not a leaf", id="non-leaf"),
        pytest.param(lambda: [torch.zeros(3)], ValueError, "no trainable parameter", id="frozen"),
        pytest.param(
            lambda: [{"params": [leaf]}, {"params": [f32], "betas": (0.9, 0.99)}],
            ValueError,
            "param group 1 sets 'betas': dpsgd has no option 'betas'; a param group may set lr",
            id="group-betas",
        ),
        pytest.param(
            lambda: [{"params": [leaf], "form": "atc"}],
            ValueError,
            "param group 0 sets 'form': dpsgd's option 'form' applies to the whole model",
            id="group-form",
        ),
        pytest.param(
            lambda: [{"params": [leaf], "lr": -1.0}],
            ValueError,
            "param group 0: lr must be a finite number > 0",
            id="group-lr-negative",
        ),
        pytest.param(lambda: leaf, TypeError, "single Tensor", id="bare-tensor"),
        pytest.param(lambda: [leaf, 3.0], TypeError, "not a torch.Tensor", id="not-a-tensor"),
    ]


@pytest.mark.parametrize(("make_params", "error", "message"), invalid_cases())
def test_invalid_parameters_raise_clear_errors(
    make_params: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        DistributedOptimizer(make_params(), "dpsgd", one_worker_comm())


def test_invalid_setup_raises() -> None:
    params = list(make_model(0).parameters())
    with pytest.raises(ValueError, match="one worker per process"):
        DistributedOptimizer(params, "dpsgd", SimulatedCommunicator(make_topology("ring", 4)))
    with pytest.raises(ValueError, match="unknown algorithm"):
        DistributedOptimizer(params, "sgdd", one_worker_comm())
    with pytest.raises(ValueError, match="no option"):
        DistributedOptimizer(params, "dpsgd", one_worker_comm(), learning_rate=0.1)
    with pytest.raises(ValueError, match="together with an algorithm instance"):
        DistributedOptimizer(params, make_algorithm("dpsgd"), one_worker_comm(), lr=0.1)


# ---------------------------------------------------------------- real processes (gloo)
@pytest.mark.parametrize(
    ("extra", "final_lr"),
    [
        # linear warm-up then cosine (SequentialLR), float16 autocast + GradScaler
        (["--algorithm", "dpsgd", "--schedule", "cosine", "--warmup-steps", "5", "--amp"], 0.0),
        # StepLR: x0.5 every 5 steps, 4 times in 20 steps (slow: the default run keeps one
        # 4-process example; StepLR equal to torch.optim.SGD is checked in test_optim_groups)
        pytest.param(
            ["--algorithm", "allreduce", "--schedule", "step"],
            0.1 * 0.5**4,
            marks=pytest.mark.slow,
        ),
    ],
    ids=["dpsgd-cosine-warmup-amp", "allreduce-steplr"],
)
def test_example_runs_on_four_gloo_processes(
    tmp_path: Path, extra: list[str], final_lr: float
) -> None:
    """examples/train_own_loop.py: two param groups (no weight decay on biases and BatchNorm),
    a torch lr_scheduler, GradScaler, averaged BatchNorm buffers, overlap on: 4 gloo processes."""
    world = 4
    argv = [str(REPO / "examples" / "train_own_loop.py")]
    argv += ["--topology", "ring", "--steps", "20", "--log-every", "10", *extra]
    procs = start_workers(argv, world, cwd=tmp_path, log_dir=tmp_path)
    codes = wait_all(procs, timeout_s=240)
    outputs = [
        (tmp_path / f"rank{r}.out").read_text() + (tmp_path / f"rank{r}.err").read_text()
        for r in range(world)
    ]
    assert codes == [0] * world, "\n---\n".join(outputs)
    assert "step   20" in outputs[0]
    match = re.search(r"test accuracy of the averaged model (\d\.\d+)", outputs[0])
    assert match is not None, outputs[0]
    assert float(match.group(1)) > 0.5  # 20 steps on digits: far above chance (0.1)
    lr = re.search(r"final lr (\S+)", outputs[0])
    assert lr is not None and float(lr.group(1)) == pytest.approx(final_lr, rel=1e-3, abs=1e-12)
    assert all("test accuracy" not in out for out in outputs[1:])  # rank 0 only
