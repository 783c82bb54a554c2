"""WorkerModel: any nn.Module (buffers, Dropout, frozen parameters, user loss and metric) as
per-worker vmapped functions, checked against Python loops over deep-copied modules."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

from peergrad.comm import SimulatedCommunicator
from peergrad.topology import make_topology
from peergrad.train.params import (
    FlatParams,
    WorkerModel,
    average_buffers,
    bind_flat,
    make_bound_grad_fn,
    make_eval_fn,
    make_worker_grad_fn,
    make_worker_loss_fn,
    mean_buffers,
)

TOL = {"rtol": 0.0, "atol": 1e-12}


class BNNet(nn.Module):
    """Conv + BatchNorm2d + Linear + BatchNorm1d (+ optional Dropout) on 1x4x4 inputs."""

    def __init__(self, p: float = 0.0, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(3, momentum=momentum)
        self.fc1 = nn.Linear(48, 6)
        self.bn1 = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn2(self.conv(x))).flatten(1)
        return self.fc2(self.drop(F.relu(self.bn1(self.fc1(h)))))


def _net(seed: int = 0, **kwargs: float) -> nn.Module:
    torch.manual_seed(seed)
    return BNNet(**kwargs).double()


def _batches(n: int, b: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    xb = torch.randn(n, b, 1, 4, 4, generator=g, dtype=torch.float64)
    return xb, torch.randint(0, 3, (n, b), generator=g)


def _load_row(module: nn.Module, layout: FlatParams, row: Tensor) -> None:
    with torch.no_grad():
        params = dict(module.named_parameters())
        for name, value in layout.unflatten(row).items():
            params[name].copy_(value)


def _distinct_rows(model: WorkerModel, n: int, seed: int = 5) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, model.layout.dim, generator=g, dtype=torch.float64)
    return model.x0() + 0.1 * noise


# ---------------------------------------------------------------------- W = I: loop parity
def test_grad_with_batchnorm_equals_a_loop_over_deep_copied_modules() -> None:
    """Gradients, losses and every worker's running statistics after two steps equal n
    independent modules (each with its own buffers); evaluation uses each one's statistics."""
    n, b = 4, 6
    net = _net()
    model = WorkerModel(net)
    x = _distinct_rows(model, n)
    buffers = model.init_buffers(n)
    assert set(buffers) == {n_ for n_, _ in net.named_buffers()}
    assert buffers["bn2.num_batches_tracked"].dtype == torch.int64
    refs = [copy.deepcopy(net).train() for _ in range(n)]
    for i, ref in enumerate(refs):
        _load_row(ref, model.layout, x[i])
    for step in range(2):
        xb, yb = _batches(n, b, seed=step)
        g, loss = model.grad(x, buffers, xb, yb)
        for i, ref in enumerate(refs):
            ref.zero_grad()
            ref_loss = F.cross_entropy(ref(xb[i]), yb[i])
            ref_loss.backward()
            ref_g = torch.cat([p.grad.reshape(-1) for p in ref.parameters()])
            torch.testing.assert_close(g[i], ref_g, **TOL)
            torch.testing.assert_close(loss[i], ref_loss.detach(), **TOL)
            for name, buf in ref.named_buffers():
                torch.testing.assert_close(buffers[name][i], buf, **TOL)
    assert buffers["bn1.num_batches_tracked"].tolist() == [2] * n
    assert not torch.equal(buffers["bn2.running_mean"][0], buffers["bn2.running_mean"][1])

    xe, ye = _batches(1, 20, seed=7)
    loss_sum, correct = model.evaluate(x, buffers, xe[0], ye[0])
    assert correct is not None
    before = {k: v.clone() for k, v in buffers.items()}
    for i, ref in enumerate(refs):
        ref.eval()
        out = ref(xe[0])
        torch.testing.assert_close(loss_sum[i], F.cross_entropy(out, ye[0], reduction="sum"), **TOL)
        assert int(correct[i]) == int((out.argmax(-1) == ye[0]).sum())
    assert all(torch.equal(before[k], buffers[k]) for k in buffers)  # evaluation changes nothing


def test_loss_equals_the_training_loss_and_leaves_buffers_unchanged() -> None:
    n = 3
    model = WorkerModel(_net())
    x = _distinct_rows(model, n)
    buffers = model.init_buffers(n)
    xb, yb = _batches(n, 5, seed=1)
    trial = model.loss(x, buffers, xb, yb)
    assert all(torch.equal(buffers[k], v) for k, v in model.init_buffers(n).items())
    _, loss = model.grad(x, buffers, xb, yb)
    assert torch.equal(trial, loss)  # batch statistics, training mode, as in grad


# ---------------------------------------------------------------------- randomness
def test_dropout_is_per_worker_seeded_and_reproducible() -> None:
    n = 4
    model = WorkerModel(_net(p=0.5))
    x = model.x0().expand(n, -1).clone()
    xb1, yb1 = _batches(1, 8, seed=2)
    xb, yb = xb1.expand(n, -1, -1, -1, -1), yb1.expand(n, -1)  # same model, same data

    def run() -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        buffers = model.init_buffers(n)
        g, loss = model.grad(x, buffers, xb, yb)
        return g, loss, buffers

    torch.manual_seed(123)
    g1, l1, b1 = run()
    assert len(set(l1.tolist())) == n  # every worker drew its own mask
    torch.manual_seed(123)
    g2, l2, b2 = run()
    assert torch.equal(g1, g2) and torch.equal(l1, l2)
    assert all(torch.equal(b1[k], b2[k]) for k in b1)
    state = torch.get_rng_state()
    g3, l3, _ = run()
    assert not torch.equal(l3, l1)  # the stream moved on
    torch.set_rng_state(state)
    g4, l4, _ = run()
    assert torch.equal(g3, g4) and torch.equal(l3, l4)  # resume from a saved RNG state
    # evaluation and check leave the global generator alone; evaluation has Dropout off
    state = torch.get_rng_state()
    loss_a, _ = model.evaluate(x, model.init_buffers(n), xb1[0], yb1[0])
    model.check(xb1[0], yb1[0])
    assert torch.equal(torch.get_rng_state(), state)
    assert len(set(loss_a.tolist())) == 1


# ---------------------------------------------------------------------- frozen parameters
def test_frozen_parameters_are_not_in_x_are_used_and_never_change() -> None:
    n = 3
    net = _net()
    net.fc1.weight.requires_grad_(False)
    model = WorkerModel(net)
    assert model.frozen_names == ("fc1.weight",)
    assert "fc1.weight" not in model.layout.names
    assert model.layout.dim == sum(p.numel() for p in net.parameters()) - 48 * 6
    frozen_before = net.fc1.weight.detach().clone()
    x = _distinct_rows(model, n)
    buffers = model.init_buffers(n)
    xb, yb = _batches(n, 5, seed=3)
    g, loss = model.grad(x, buffers, xb, yb)
    assert g.shape == (n, model.layout.dim)
    for i in range(n):  # the loop reference uses the frozen weight too
        ref = copy.deepcopy(net)
        _load_row(ref, model.layout, x[i])
        ref_loss = F.cross_entropy(ref(xb[i]), yb[i])
        torch.testing.assert_close(loss[i], ref_loss.detach(), **TOL)
    fn = model.bound_grad_fn(x[:1].clone(), model.init_buffers(1))
    assert torch.equal(model.frozen()["fc1.weight"], frozen_before)
    assert torch.equal(net.fc1.weight, frozen_before)
    with torch.no_grad():
        net.fc1.weight.add_(0.5)  # the forward reads the (shared) frozen value
    _, loss2 = model.grad(x, model.init_buffers(n), xb, yb)
    assert not torch.allclose(loss, loss2)
    assert callable(fn)


# ---------------------------------------------------------------------- user loss and metric
def test_user_loss_for_regression_without_metric_and_a_user_metric() -> None:
    n, b = 3, 7
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    model = WorkerModel(net, loss_fn=F.mse_loss, metric=None)
    x = _distinct_rows(model, n)
    g_ = torch.Generator().manual_seed(4)
    xb = torch.randn(n, b, 4, generator=g_, dtype=torch.float64)
    yb = torch.randn(n, b, 2, generator=g_, dtype=torch.float64)
    model.check(xb[0], yb[0])
    g, loss = model.grad(x, {}, xb, yb)
    for i in range(n):
        ref = copy.deepcopy(net)
        _load_row(ref, model.layout, x[i])
        ref_loss = F.mse_loss(ref(xb[i]), yb[i])
        ref_loss.backward()
        ref_g = torch.cat([p.grad.reshape(-1) for p in ref.parameters()])
        torch.testing.assert_close(g[i], ref_g, **TOL)
        torch.testing.assert_close(loss[i], ref_loss.detach(), **TOL)
    loss_sum, metric = model.evaluate(x, {}, xb[0], yb[0])
    assert metric is None
    for i in range(n):
        ref = copy.deepcopy(net)
        _load_row(ref, model.layout, x[i])
        torch.testing.assert_close(loss_sum[i], b * F.mse_loss(ref(xb[0]), yb[0]), **TOL)

    def mae(out: Tensor, y: Tensor) -> Tensor:
        return (out - y).abs().mean()

    with_metric = WorkerModel(net, loss_fn=F.mse_loss, metric=mae)
    _, summed = with_metric.evaluate(x, {}, xb[0], yb[0])
    assert summed is not None
    for i in range(n):
        ref = copy.deepcopy(net)
        _load_row(ref, model.layout, x[i])
        torch.testing.assert_close(summed[i], b * mae(ref(xb[0]), yb[0]), **TOL)


# ---------------------------------------------------------------------- one worker per process
def test_bound_grad_fn_equals_grad_for_one_worker_including_buffer_updates() -> None:
    model = WorkerModel(_net())
    x_v = _distinct_rows(model, 1)
    x_b = x_v.clone()
    buf_v, buf_b = model.init_buffers(1), model.init_buffers(1)
    fn = model.bound_grad_fn(x_b, buf_b)
    out = torch.empty_like(x_b)
    for step in range(3):
        xb, yb = _batches(1, 6, seed=10 + step)
        g_v, l_v = model.grad(x_v, buf_v, xb, yb)
        g_b, l_b = fn(x_b, xb, yb, out)
        assert g_b is out
        torch.testing.assert_close(g_b, g_v, **TOL)
        torch.testing.assert_close(l_b, l_v, **TOL)
        for k in buf_v:
            torch.testing.assert_close(buf_b[k], buf_v[k], **TOL)
        x_v.sub_(0.1 * g_v)
        x_b.sub_(0.1 * g_b)  # an in-place update of x is an update of the bound module
    assert buf_b["bn2.num_batches_tracked"].tolist() == [3]
    with pytest.raises(ValueError, match="x it was built for"):
        fn(x_b.clone(), xb, yb)
    with pytest.raises(ValueError, match=r"^x must have shape \(1, "):
        model.bound_grad_fn(x_v.expand(2, -1), buf_v)


# ---------------------------------------------------------------------- bad input
class NotVectorisable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x) * float(x.sum() > 0)  # data-dependent Python value


def _one_line_error(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_bad_models_losses_and_metrics_are_refused_before_the_first_step() -> None:
    torch.manual_seed(0)
    xb, yb = torch.randn(5, 4), torch.randint(0, 3, (5,))
    wrong_width = nn.Sequential(nn.Linear(7, 3))
    with pytest.raises(ValueError, match=r"^model: Sequential's forward fails on a batch") as e:
        WorkerModel(wrong_width).check(xb, yb)
    _one_line_error(e)
    per_sample = WorkerModel(nn.Linear(4, 3), loss_fn=nn.CrossEntropyLoss(reduction="none"))
    with pytest.raises(ValueError, match=r"^loss_fn must return a floating-point scalar") as e:
        per_sample.check(xb, yb)
    assert "(5,)" in _one_line_error(e)
    with pytest.raises(ValueError, match=r"^loss_fn fails"):
        WorkerModel(nn.Linear(4, 3), loss_fn=lambda o, y: o[:, 9].mean()).check(xb, yb)
    with pytest.raises(ValueError, match=r"^metric='accuracy' needs logits") as e:
        WorkerModel(nn.Linear(4, 1), loss_fn=F.mse_loss).check(xb, torch.randn(5, 1))
    _one_line_error(e)
    with pytest.raises(ValueError, match=r"^metric must return a scalar"):
        WorkerModel(nn.Linear(4, 3), metric=lambda o, y: o.argmax(-1) == y).check(xb, yb)
    with pytest.raises(ValueError, match=r"^model: NotVectorisable cannot be trained vectori"):
        WorkerModel(NotVectorisable()).check(xb, yb)
    with pytest.raises(ValueError, match=r"^model: BNNet cannot be trained vectorised"):
        WorkerModel(BNNet(momentum=None)).check(torch.randn(5, 1, 4, 4), yb)
    with pytest.raises(TypeError, match=r"^model: TupleOut's forward must return one Tensor"):
        WorkerModel(TupleOut()).check(xb, yb)
    with pytest.raises(TypeError, match=r"^module must be a torch.nn.Module"):
        WorkerModel(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^loss_fn must be None or a callable"):
        WorkerModel(nn.Linear(4, 3), loss_fn="mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^metric must be 'accuracy', None or a callable"):
        WorkerModel(nn.Linear(4, 3), metric="f1")
    frozen = nn.Linear(4, 3).requires_grad_(False)
    with pytest.raises(ValueError, match=r"^module: Linear has no trainable parameter"):
        WorkerModel(frozen)
    with pytest.raises(TypeError, match=r"^xb must be a Tensor"):
        WorkerModel(nn.Linear(4, 3)).check(xb.tolist(), yb)  # type: ignore[arg-type]
    model = WorkerModel(_net())
    with pytest.raises(ValueError, match=r"^grad: buffers must have the module's buffers"):
        model.grad(model.x0()[None], {}, *_batches(1, 4, 0))
    with pytest.raises(ValueError, match=r"^evaluate: buffers\['bn2.running_mean'\] must have 2"):
        model.evaluate(model.x0().expand(2, -1), model.init_buffers(1), *_batches(1, 4, 0))
    with pytest.raises(ValueError, match=r"^w must be a positive integer"):
        model.init_buffers(0)


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.fc(x), x


def test_check_changes_nothing() -> None:
    net = _net(p=0.3)
    net.eval()
    net.bn1.train()  # a user's mixed modes survive check()
    model = WorkerModel(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    xb, yb = _batches(1, 6, seed=0)
    model.check(xb[0], yb[0])
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert [m.training for m in net.modules()] == [m is net.bn1 for m in net.modules()]


# ---------------------------------------------------------------------- buffers across workers
def test_average_and_mean_buffers_average_floats_once_and_keep_counters() -> None:
    n = 4
    model = WorkerModel(_net())
    buffers = model.init_buffers(n)
    model.grad(_distinct_rows(model, n), buffers, *_batches(n, 5, seed=0))
    comm = SimulatedCommunicator(make_topology("ring", n))
    before = {k: v.clone() for k, v in buffers.items()}
    means = mean_buffers(buffers, comm)
    assert float(comm.bytes_sent.sum()) == 0  # evaluation of x̄ is not charged
    assert all(torch.equal(before[k], buffers[k]) for k in buffers)
    for k, v in before.items():
        expected = v.mean(0, keepdim=True) if v.is_floating_point() else v[:1]
        torch.testing.assert_close(means[k], expected, **TOL)
    out = average_buffers(buffers, comm)
    assert out is buffers and comm.rounds == 1  # one all-reduce for all float buffers
    floats = sum(v[0].numel() for v in before.values() if v.is_floating_point())
    assert float(comm.bytes_sent.sum()) > 0 and floats == 3 + 3 + 6 + 6
    for k, v in before.items():
        expected = v.mean(0, keepdim=True).expand_as(v) if v.is_floating_point() else v
        torch.testing.assert_close(buffers[k], expected, **TOL)


# ---------------------------------------------------------------------- built-in models unchanged
def test_builtin_mlp_path_is_bit_identical_to_the_plain_vmap_reference() -> None:
    """WorkerModel (and the make_* wrappers) on a buffer-free MLP with the default loss equal,
    bit for bit, an independent transcription of the pre-WorkerModel functions, and the loop."""
    n, b = 5, 11
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 4))
    layout = FlatParams.of(net)
    model = WorkerModel(net)
    x = model.x0() + 0.05 * torch.randn(n, layout.dim)
    xb, yb = torch.randn(n, b, 3, 4), torch.randint(0, 4, (n, b))

    def ce(params: dict[str, Tensor], xs: Tensor, ys: Tensor) -> Tensor:
        out = functional_call(net, params, (xs,))
        return -torch.gather(torch.log_softmax(out, -1), -1, ys.unsqueeze(-1)).mean()

    grads, ref_loss = torch.vmap(grad_and_value(ce))(layout.unflatten_rows(x), xb, yb)
    ref_g = torch.cat([grads[k].reshape(n, -1) for k in layout.names], 1)
    out = torch.empty_like(x)
    for g, loss in (
        model.grad(x, {}, xb, yb),
        make_worker_grad_fn(net, layout)(x, xb, yb, out),
    ):
        assert torch.equal(g, ref_g) and torch.equal(loss, ref_loss)
    ref_trial = torch.vmap(lambda f, xs, ys: ce(layout.unflatten(f), xs, ys))(x, xb, yb)
    assert torch.equal(make_worker_loss_fn(net, layout)(x, xb, yb), ref_trial)
    assert torch.equal(model.loss(x, {}, xb, yb), ref_trial)

    def stats(f: Tensor, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        o = functional_call(net, layout.unflatten(f), (xs,))
        return F.cross_entropy(o, ys, reduction="sum"), (o.argmax(-1) == ys).sum()

    ref_eval = torch.vmap(stats, in_dims=(0, None, None))(x, xb[0], yb[0])
    for got in (model.evaluate(x, {}, xb[0], yb[0]), make_eval_fn(net, layout)(x, xb[0], yb[0])):
        assert all(torch.equal(a, r) for a, r in zip(got, ref_eval, strict=True))
    for i in range(n):  # and the loop over modules, to rounding
        ref = copy.deepcopy(net)
        _load_row(ref, layout, x[i])
        loss = F.cross_entropy(ref(xb[i]), yb[i])
        loss.backward()
        g_i = torch.cat([p.grad.reshape(-1) for p in ref.parameters()])
        torch.testing.assert_close(ref_g[i], g_i, rtol=0, atol=1e-6)
    bound_x = x[:1].clone()
    g_b, l_b = make_bound_grad_fn(net, layout, bound_x)(bound_x, xb[:1], yb[:1])
    torch.testing.assert_close(g_b, ref_g[:1], rtol=0, atol=1e-6)
    torch.testing.assert_close(l_b, ref_loss[:1], rtol=0, atol=1e-6)


def test_flat_params_take_trainable_parameters_and_accept_buffers() -> None:
    net = _net()
    net.conv.bias.requires_grad_(False)
    layout = FlatParams.of(net)  # buffers are no longer refused
    assert "conv.bias" not in layout.names and len(layout.names) == 9
    x, g = layout.flatten(net).clone(), torch.zeros(layout.dim, dtype=torch.float64)
    bias = net.conv.bias
    bind_flat(net, layout, x, g)
    assert net.conv.bias is bias and net.conv.weight.data_ptr() == x.data_ptr()
