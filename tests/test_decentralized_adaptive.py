"""Decentralized adaptive methods (spec decentralized.md §3.4, §4): Chen et al.'s framework
(D-AMSGrad, D-AdaGrad, D-Adam) and DADAM, float64.

Numbers marked "spec" are the reference values of §4.1 / §4.9. The long fidelity runs (up to
10^5 steps) apply W with a lean dense-matmul communicator (:class:`DenseComm`) to keep the suite
fast; every other test uses the simulated engine's :class:`SimulatedCommunicator`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from peergrad.algorithms import state_from_dict, state_to_dict
from peergrad.algorithms.dadam import DADAM, DADAMNaive, DecentralizedAdamNaive
from peergrad.algorithms.decentralized_adaptive import (
    DecentralizedAdaGrad,
    DecentralizedAdam,
    DecentralizedAdaptive,
    DecentralizedAMSGrad,
)
from peergrad.comm import SimulatedCommunicator
from peergrad.comm.base import Workspace
from peergrad.comm.simulated import apply_mixing
from peergrad.problems import heterogeneous_quadratics
from peergrad.topology import MixingMatrix, Topology, make_topology

DTYPE = torch.float64
FRAMEWORK = [DecentralizedAMSGrad, DecentralizedAdaGrad, DecentralizedAdam]
LOCAL = [DADAM, DADAMNaive, DecentralizedAdamNaive]  # gossip x only, local statistics
ALL = [*FRAMEWORK, *LOCAL]
INITS = ["first-gradient", "paper"]
FIDELITY = {"b1": 0.9, "b2": 0.99, "eps": 1e-6}  # §4.1 settings


# ---------------------------------------------------------------- helpers
class DensePending:
    def __init__(self, W: Tensor, x: Tensor) -> None:
        self.W, self.x = W, x

    def wait(self, out: Tensor | None = None) -> Tensor:
        return torch.mm(self.W, self.x, out=out)


class DenseComm:
    """Minimal communicator for long runs: ``mix`` is one dense matmul, nothing is accounted."""

    def __init__(self, topology: Topology) -> None:
        self.topology, self.n_workers, self.workspace = topology, topology.n, Workspace()
        self._W = torch.tensor(topology.at(0).dense, dtype=DTYPE)
        assert not topology.time_varying

    def mix_start(self, x: Tensor, W: MixingMatrix, **_: Any) -> DensePending:
        return DensePending(self._W, x)

    def mix(self, x: Tensor, W: MixingMatrix, **kw: Any) -> Tensor:
        return torch.mm(self._W, x, out=kw.get("out"))


class RecordingComm(SimulatedCommunicator):
    """The simulated engine, recording a copy of every gossiped message and counting means."""

    def __init__(self, topology: Topology) -> None:
        super().__init__(topology)
        self.messages: list[Tensor] = []
        self.means = 0

    def mix_start(self, x: Tensor, W: MixingMatrix, **kw: Any) -> Any:
        self.messages.append(x.clone())
        return super().mix_start(x, W, **kw)

    def mix(self, x: Tensor, W: MixingMatrix, **kw: Any) -> Tensor:
        self.messages.append(x.clone())
        return super().mix(x, W, **kw)

    def mean(self, x: Tensor, **kw: Any) -> Tensor:
        self.means += 1
        return super().mean(x, **kw)


def two_node() -> tuple[Tensor, Tensor, float]:
    """§4.1: f_1 = (3/2)(x - 1)^2, f_2 = (1/2)(x + 1)^2, x* = 0.5 (a, b of a_i (x - b_i))."""
    return (
        torch.tensor([[3.0], [1.0]], dtype=DTYPE),
        torch.tensor([[1.0], [-1.0]], dtype=DTYPE),
        0.5,
    )


def ring_problem() -> tuple[Tensor, Tensor, Tensor]:
    p = heterogeneous_quadratics(n=8, d=5, seed=0, a_range=(0.5, 5.0))
    return torch.tensor(p.a), torch.tensor(p.b), torch.tensor(p.x_star)


def run(
    alg: Any,
    a: Tensor,
    b: Tensor,
    comm: Any,
    steps: int,
    *,
    noise: float = 0.0,
    x0: Tensor | None = None,
    callback: Callable[[int, Tensor, Tensor, Any], None] | None = None,
    use_pending: bool = False,
) -> tuple[Tensor, Any]:
    """Gradients ``a * (x - b)`` (+ N(0, noise^2)); ``callback(k, x_before, g, state_before)``."""
    x = torch.zeros_like(a) if x0 is None else x0.clone()
    state = alg.init(x, comm)
    g = torch.empty_like(x)
    gen = torch.Generator().manual_seed(7)
    for k in range(steps):
        pending = alg.pre_gradient(x, state, comm) if use_pending else None
        torch.sub(x, b, out=g).mul_(a)
        if noise:
            g.add_(torch.randn(g.shape, generator=gen, dtype=DTYPE), alpha=noise)
        if callback is not None:
            callback(k, x.clone(), g.clone(), state)
        state = alg.step(x, g, state, comm, pending=pending)
    return x, state


def stochastic_setup(n: int = 6, d: int = 4) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(n, d, generator=gen, dtype=DTYPE) * 4 + 0.5
    b = torch.randn(n, d, generator=gen, dtype=DTYPE) * 3
    return a, b


# ---------------------------------------------------------------- hyper-parameters
@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("lr", 0.0, "lr must be a finite number > 0"),
        ("lr", float("nan"), "lr must be"),
        ("momentum", 1.0, r"momentum must be in \[0, 1\)"),
        ("b1", -0.1, r"b1 must be in \[0, 1\)"),
        ("b1", 0.5, None),  # valid: overrides the default momentum
        ("weight_decay", -1.0, "weight_decay must be"),
        ("eps", 0.0, "eps must be a finite number > 0"),
    ],
)
def test_hyperparameters_are_validated(cls: type, option: str, value: float, message: str) -> None:
    if message is None:
        assert cls(**{option: value}).beta1 == value
        return
    with pytest.raises(ValueError, match=message):
        cls(**{option: value})


@pytest.mark.parametrize("cls", ALL)
def test_momentum_is_an_alias_of_b1(cls: type) -> None:
    assert cls().beta1 == 0.9 and cls(momentum=0.5).beta1 == 0.5 and cls(b1=0.5).beta1 == 0.5
    assert cls(b1=0.5, momentum=0.5).beta1 == 0.5
    with pytest.raises(ValueError, match="momentum is an alias of b1"):
        cls(b1=0.5, momentum=0.7)
    a, b = stochastic_setup()
    runs = [
        run(cls(momentum=0.8), a, b, SimulatedCommunicator(make_topology("ring", 6)), 5)[0],
        run(cls(b1=0.8), a, b, SimulatedCommunicator(make_topology("ring", 6)), 5)[0],
    ]
    assert torch.equal(*runs)
    opts = cls().options()
    assert all(isinstance(v, bool | int | float | str | type(None)) for v in opts.values())


def test_other_options_are_validated() -> None:
    for cls in FRAMEWORK:
        with pytest.raises(ValueError, match="init_mode must be one of first-gradient, paper"):
            cls(init_mode="zeros")
        with pytest.raises(ValueError, match="eps_mode must be one of floor, add"):
            cls(eps_mode="sqrt")
    for cls in (DecentralizedAMSGrad, DecentralizedAdam, DADAM, DecentralizedAdamNaive):
        with pytest.raises(ValueError, match=r"b2 must be in \[0, 1\)"):
            cls(b2=1.0)
    with pytest.raises(ValueError, match=r"b3 must be in \[0, 1\)"):
        DADAM(b3=1.0)
    with pytest.raises(ValueError, match="form must be one of paper, code"):
        DADAM(form="matlab")
    with pytest.raises(ValueError, match="dadam-naive fixes b3 = 0"):
        DADAMNaive(b3=0.5)
    with pytest.raises(ValueError, match="form must be one of paper"):
        DADAMNaive(form="code")
    assert DADAM().epsilon == 1e-8 and DADAM(form="code").epsilon == 1e-4
    assert DADAM(eps=1e-3).epsilon == 1e-3
    names = {cls.name for cls in ALL}
    assert names == {
        "decentralized-amsgrad",
        "decentralized-adagrad",
        "decentralized-adam",
        "dadam",
        "dadam-naive",
        "decentralized-adam-naive",
    }
    assert not hasattr(DecentralizedAdaGrad(), "b2")


@pytest.mark.parametrize("cls", ALL)
def test_topology_checks(cls: type) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls().check_topology(SimulatedCommunicator(make_topology("ring", 8)))
    directed = SimulatedCommunicator(make_topology("exponential", 8))
    if issubclass(cls, DecentralizedAdaptive):
        with pytest.warns(UserWarning, match="non-symmetric mixing matrix"):
            cls().check_topology(directed)
    W = np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]])
    topo = Topology((MixingMatrix(W, check=False),), name="row-stochastic")
    with pytest.raises(ValueError, match=f"{cls.name} needs a doubly stochastic mixing matrix"):
        cls().check_topology(SimulatedCommunicator(topo))


# ---------------------------------------------------------------- state and overlap
VARIANTS = [(cls, {"init_mode": mode}) for cls in FRAMEWORK for mode in INITS] + [
    (DADAM, {"form": "paper"}),
    (DADAM, {"form": "code"}),
    (DADAMNaive, {}),
    (DecentralizedAdamNaive, {}),
]


@pytest.mark.parametrize(
    ("cls", "variant"), VARIANTS, ids=[f"{c.name}-{'-'.join(o.values())}" for c, o in VARIANTS]
)
def test_resume_and_pre_gradient_give_the_uninterrupted_trajectory(
    cls: type, variant: dict[str, str]
) -> None:
    alg = cls(momentum=0.9, weight_decay=1e-3, **variant)
    a, b = stochastic_setup()
    topo = make_topology("ring", 6)
    x_full, _ = run(alg, a, b, SimulatedCommunicator(topo), 10, noise=1.0)
    x_pend, _ = run(alg, a, b, SimulatedCommunicator(topo), 10, noise=1.0, use_pending=True)
    assert torch.equal(x_full, x_pend)

    # 4 steps, save, restore into fresh tensors, 6 more steps with the same gradients
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(6, 4, generator=gen, dtype=DTYPE) for _ in range(10)]
    comm = SimulatedCommunicator(topo)
    x = torch.ones(6, 4, dtype=DTYPE)
    state = alg.init(x, comm)
    for g in grads[:4]:
        state = alg.step(x, g, state, comm)
    saved = {k: v.clone() if isinstance(v, Tensor) else v for k, v in state_to_dict(state).items()}
    x_saved = x.clone()
    for g in grads[4:]:
        state = alg.step(x, g, state, comm)
    state2 = state_from_dict(type(state), saved)
    comm2 = SimulatedCommunicator(topo)
    for g in grads[4:]:
        state2 = alg.step(x_saved, g, state2, comm2)
    assert torch.equal(x_saved, x) and state2.step == 10


@pytest.mark.parametrize("cls", ALL)
def test_identity_mixing_makes_n_workers_equal_n_independent_runs(cls: type) -> None:
    """DESIGN guard rail: W = I, the simulated n-worker run is n separate 1-worker runs."""
    n, d = 4, 5
    alg = cls(lr=1e-2, weight_decay=1e-3)
    a, b = stochastic_setup(n=n, d=d)
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(n, d, generator=gen, dtype=DTYPE)
    comm = SimulatedCommunicator(make_topology("identity", n))
    x, _ = run(alg, a, b, comm, 15, x0=x0)
    for i in range(n):
        one = SimulatedCommunicator(make_topology("ring", 1))
        xi, _ = run(alg, a[i : i + 1], b[i : i + 1], one, 15, x0=x0[i : i + 1])
        assert torch.equal(x[i : i + 1], xi)
    assert comm.bytes_sent.sum() == 0


# ---------------------------------------------------------------- §4.9 tests 1-5
@pytest.mark.parametrize("init_mode", INITS)
@pytest.mark.parametrize("cls", FRAMEWORK)
@pytest.mark.parametrize("topology", ["ring", "star", "erdos-renyi"])
def test_tracking_invariant_mean_u_tilde_equals_mean_v(
    cls: type, init_mode: str, topology: str
) -> None:
    """Test 1: mean_i u_tilde_(t+1/2) = mean_i v_t every step, stochastic gradients."""
    alg = cls(init_mode=init_mode, lr=1e-2)
    a, b = stochastic_setup(n=8)
    seen: list[Any] = []

    def keep(k: int, xb: Tensor, g: Tensor, s: Any) -> None:
        if k:  # the state after step k - 1 holds u_tilde_(k+1/2) and v_k
            seen.append(dataclasses.replace(s, gossip=s.gossip.clone(), v=s.v.clone()))

    comm = SimulatedCommunicator(make_topology(topology, 8))
    x, state = run(alg, a, b, comm, 60, noise=2.0, callback=keep)
    for s in [*seen, state]:
        torch.testing.assert_close(s.u_tilde.mean(0), s.v.mean(0), rtol=1e-12, atol=0)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("init_mode", INITS)
@pytest.mark.parametrize("topology", ["ring", "star", "torus", "erdos-renyi", "exponential"])
def test_amsgrad_tracked_moment_stays_above_eps(init_mode: str, topology: str) -> None:
    """Test 2: u_tilde >= eps (1 - 1e-12) before and after every gossip (relative tolerance)."""
    eps = 1e-6
    alg = DecentralizedAMSGrad(init_mode=init_mode, eps=eps, lr=1e-2)
    a, b = stochastic_setup(n=8)
    comm = SimulatedCommunicator(make_topology(topology, 8))
    lows: list[float] = []

    def check(k: int, xb: Tensor, g: Tensor, s: Any) -> None:
        if k:
            lows.append(float(s.u_tilde.min()))
            lows.append(float(apply_mixing(comm.topology.at(k), s.u_tilde).min()))

    run(alg, a * 1e-3, b, comm, 80, noise=1e-3, callback=check)  # gradients ~ sqrt(eps)
    assert min(lows) >= eps * (1 - 1e-12)


@pytest.mark.parametrize("eps_mode", ["floor", "add"])
@pytest.mark.parametrize("init_mode", INITS)
def test_ema_rule_floor_binds_and_keeps_the_step_finite(init_mode: str, eps_mode: str) -> None:
    """Test 3: a large drop of v on one node drives u_tilde negative; u >= eps, no NaN."""
    eps, lr, n = 1e-6, 1e-2, 4
    alg = DecentralizedAdam(init_mode=init_mode, eps=eps, eps_mode=eps_mode, lr=lr, b2=0.5)
    comm = SimulatedCommunicator(make_topology("ring", n))
    x = torch.zeros(n, 3, dtype=DTYPE)
    state = alg.init(x, comm)
    lowest = float("inf")
    for k in range(40):
        g = torch.full_like(x, 1e-2)
        if k < 10:
            g[0] = 1e3  # node 0 sees huge gradients, then almost none
        mixed = apply_mixing(comm.topology.at(k), x)
        state = alg.step(x, g, state, comm)
        assert torch.isfinite(x).all() and torch.isfinite(state.gossip).all()
        # |x_(t+1) - W x_t| = lr |m| / denom with denom >= sqrt(eps) ("floor") or eps ("add")
        floor = eps**0.5 if eps_mode == "floor" else eps
        assert ((x - mixed).abs() <= lr * state.m.abs() / floor * (1 + 1e-12)).all()
        lowest = min(lowest, float(state.u_tilde.min()))
    assert lowest < 0  # the floor really binds for the EMA rule


def hand_rolled(rule: str, init_mode: str, grads: list[Tensor], x0: Tensor, **hp: float) -> Tensor:
    """Test 4's single-node reference: the base optimizer with denominator max(v_(t-1), eps)."""
    lr, b1, b2, eps, wd = hp["lr"], hp["b1"], hp["b2"], hp["eps"], hp["wd"]
    x, m = x0.clone(), torch.zeros_like(x0)
    v_prev, v_raw = torch.full_like(x0, eps), torch.zeros_like(x0)
    for t, g0 in enumerate(grads, start=1):
        g = g0 + wd * x
        if t == 1 and init_mode == "first-gradient":
            v_prev = torch.clamp(g * g, min=eps)
        m = b1 * m + (1 - b1) * g
        if rule == "amsgrad":
            v_raw = b2 * v_raw + (1 - b2) * g * g
            v = torch.maximum(v_prev, v_raw)
        elif rule == "adagrad":
            v = (t - 1) / t * v_prev + g * g / t
        else:
            v = b2 * v_prev + (1 - b2) * g * g
        x = x - lr * m / torch.sqrt(torch.clamp(v_prev, min=eps))
        v_prev = v
    return x


@pytest.mark.parametrize("init_mode", INITS)
@pytest.mark.parametrize(
    ("cls", "rule"),
    [
        (DecentralizedAMSGrad, "amsgrad"),
        (DecentralizedAdaGrad, "adagrad"),
        (DecentralizedAdam, "adam"),
    ],
)
def test_one_worker_is_the_base_optimizer_with_a_delayed_denominator(
    cls: type, rule: str, init_mode: str
) -> None:
    """Test 4: n = 1 against a hand-rolled loop, rtol 1e-12, 300 steps."""
    hp = {"lr": 1e-2, "b1": 0.9, "b2": 0.99, "eps": 1e-6, "wd": 1e-3}
    gen = torch.Generator().manual_seed(11)
    grads = [torch.randn(1, 9, generator=gen, dtype=DTYPE) * (k % 7) for k in range(300)]
    x0 = torch.randn(1, 9, generator=gen, dtype=DTYPE)
    opts = {"lr": hp["lr"], "b1": hp["b1"], "eps": hp["eps"], "weight_decay": hp["wd"]}
    if rule != "adagrad":
        opts["b2"] = hp["b2"]
    alg = cls(init_mode=init_mode, **opts)
    comm = SimulatedCommunicator(make_topology("ring", 1))
    x = x0.clone()
    state = alg.init(x, comm)
    for g in grads:
        state = alg.step(x, g, state, comm)
    torch.testing.assert_close(x, hand_rolled(rule, init_mode, grads, x0, **hp), rtol=1e-12, atol=0)


@pytest.mark.parametrize("init_mode", INITS)
@pytest.mark.parametrize("cls", FRAMEWORK)
def test_complete_graph_gives_every_node_the_same_denominator(cls: type, init_mode: str) -> None:
    """Test 5: with W = J, x_(t+1,i) = mean_j x_(t,j) - lr m_(t,i) / sqrt(max(u_bar, eps))."""
    lr, eps, n = 1e-2, 1e-6, 4
    alg = cls(init_mode=init_mode, lr=lr, eps=eps)
    a, b = stochastic_setup(n=n)
    comm = SimulatedCommunicator(make_topology("complete", n))
    x = torch.zeros(n, 4, dtype=DTYPE)
    state = alg.init(x, comm)
    gen = torch.Generator().manual_seed(2)
    for t in range(1, 40):
        g = a * (x - b) + torch.randn(x.shape, generator=gen, dtype=DTYPE)
        u_half = torch.clamp(g * g, min=eps) if (t == 1 and init_mode != "paper") else state.u_tilde
        u = torch.clamp(u_half.mean(0, keepdim=True), min=eps).expand_as(x)  # same on every node
        x_bar = x.mean(0, keepdim=True)
        state = alg.step(x, g, state, comm)
        torch.testing.assert_close(x, x_bar - lr * state.m / u.sqrt(), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- §4.1 / §4.9 tests 6, 7, 9
TWO_NODE_AMSGRAD = {1e-2: 5.00e-3, 3e-3: 1.414e-3, 1e-3: 3.816e-4}  # spec, init="paper"
TWO_NODE_FIRST_GRADIENT = {1e-2: 3.15e-3, 3e-3: 9.47e-4, 1e-3: 3.16e-4}  # spec, eps = 1e-8


def two_node_error(alg: Any, lr: float) -> float:
    a, b, x_star = two_node()
    x, _ = run(alg, a, b, DenseComm(make_topology("complete", 2)), round(20 / lr))
    return abs(float(x.mean()) - x_star)


def test_two_node_counterexample_naive_is_biased_and_d_amsgrad_is_not() -> None:
    """Test 6: naive (DADAM, b3 = 0) error >= 0.4; D-AMSGrad matches the spec table."""
    naive, ams = {}, {}
    for lr, ref in TWO_NODE_AMSGRAD.items():
        naive[lr] = two_node_error(DADAMNaive(lr=lr, **FIDELITY), lr)
        ams[lr] = two_node_error(DecentralizedAMSGrad(lr=lr, init_mode="paper", **FIDELITY), lr)
        assert naive[lr] >= 0.4
        assert ams[lr] <= 1e-2
        np.testing.assert_allclose(ams[lr], ref, rtol=1e-2)
    assert ams[1e-2] > ams[3e-3] > ams[1e-3]


def test_two_node_first_gradient_init() -> None:
    """Test 9: eps = 1e-8; the first step is at most lr (1 - b1) / sqrt(W_ii); spec errors."""
    lr, b1 = 1e-2, 0.9
    a, b, _ = two_node()
    alg = DecentralizedAMSGrad(lr=lr, b1=b1, b2=0.99, eps=1e-8)
    x, _ = run(alg, a, b, SimulatedCommunicator(make_topology("complete", 2)), 1)
    moved = x.abs().flatten()
    assert (moved <= lr * (1 - b1) / 0.5**0.5).all()
    np.testing.assert_allclose(moved, [1.342e-3, 4.472e-4], rtol=1e-3)  # spec: 1.34e-3, 4.5e-4
    errors = {}
    for lr, ref in TWO_NODE_FIRST_GRADIENT.items():
        errors[lr] = two_node_error(DecentralizedAMSGrad(lr=lr, b1=b1, b2=0.99, eps=1e-8), lr)
        assert errors[lr] <= 1e-2
        np.testing.assert_allclose(errors[lr], ref, rtol=1e-2)
    assert errors[1e-2] > errors[3e-3] > errors[1e-3]


# spec §4.1 ring table: lr -> (naive node-wise, D-AMSGrad node-wise, D-AMSGrad node mean)
RING = {
    1e-2: (0.871, 0.0592, 0.00615),
    3e-3: (0.999, 0.0183, 0.00190),
    1e-3: (1.065, 0.00593, 0.000619),
}


@pytest.mark.parametrize(
    "lr",
    [1e-2, 3e-3, pytest.param(1e-3, marks=pytest.mark.slow)],  # 1e-3: 10^5 steps, ~13 s
)
def test_ring_heterogeneous_quadratics_match_the_spec_table(lr: float) -> None:
    """Test 7: T = round(100/lr) on the 1/3-ring, n = 8, d = 5; naive stays O(1)."""
    a, b, x_star = ring_problem()
    steps = round(100 / lr)
    comm = DenseComm(make_topology("ring", 8))
    x_naive, _ = run(DADAMNaive(lr=lr, **FIDELITY), a, b, comm, steps)
    x_ams, _ = run(DecentralizedAMSGrad(lr=lr, init_mode="paper", **FIDELITY), a, b, comm, steps)
    naive_ref, node_ref, mean_ref = RING[lr]
    naive = float((x_naive - x_star).abs().max())
    node = float((x_ams - x_star).abs().max())
    mean = float((x_ams.mean(0) - x_star).abs().max())
    assert naive >= 0.5
    np.testing.assert_allclose(naive, naive_ref, rtol=1e-2)
    np.testing.assert_allclose([node, mean], [node_ref, mean_ref], rtol=1e-2)


# ---------------------------------------------------------------- test 8: messages
@pytest.mark.parametrize("use_pending", [False, True])
@pytest.mark.parametrize("init_mode", INITS)
@pytest.mark.parametrize("cls", FRAMEWORK)
def test_one_fused_message_of_x_and_u_tilde_per_step(
    cls: type, init_mode: str, use_pending: bool
) -> None:
    n, d, steps = 6, 5, 7
    alg = cls(init_mode=init_mode, lr=1e-2)
    comm = RecordingComm(make_topology("star", n))
    a, b = stochastic_setup(n=n, d=d)
    before: list[tuple[Tensor, Tensor, Tensor]] = []

    def keep(k: int, xb: Tensor, g: Tensor, s: Any) -> None:
        before.append((xb, g, s.u_tilde.clone()))

    run(alg, a, b, comm, steps, noise=1.0, use_pending=use_pending, callback=keep)
    assert comm.rounds == steps == len(comm.messages) and comm.means == 0
    degrees = torch.from_numpy(np.array(comm.topology.at(0).out_degrees, dtype=np.float64))
    assert torch.equal(comm.bytes_sent, steps * degrees * 2 * d * 8)
    for k, (msg, (xb, g, ub)) in enumerate(zip(comm.messages, before, strict=True)):
        assert msg.shape == (n, 2 * d)
        assert torch.equal(msg[:, :d], xb)  # the model and u_tilde_(t-1/2), nothing else
        if k == 0 and init_mode == "first-gradient":
            ub = torch.clamp(g * g, min=alg.eps)  # u_tilde_(1/2) = v_0 = max(g_1^2, eps)
        assert torch.equal(msg[:, d:], ub)


@pytest.mark.parametrize("cls", LOCAL)
def test_dadam_sends_only_the_model(cls: type) -> None:
    n, d, steps = 6, 5, 7
    comm = RecordingComm(make_topology("ring", n))
    a, b = stochastic_setup(n=n, d=d)
    xs: list[Tensor] = []
    run(cls(), a, b, comm, steps, noise=1.0, callback=lambda k, xb, g, s: xs.append(xb))
    assert comm.rounds == steps and comm.means == 0
    assert torch.equal(comm.bytes_sent, torch.full((n,), steps * 2 * d * 8.0, dtype=DTYPE))
    assert all(torch.equal(m, x) for m, x in zip(comm.messages, xs, strict=True))


# ---------------------------------------------------------------- DADAM
def dadam_hand_rolled(
    form: str, W: Tensor, grads: list[Tensor], x0: Tensor, lr: float, b: tuple, eps: float
) -> Tensor:
    b1, b2, b3 = b
    x, m, v, v_hat = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0), x0 * 0 + eps
    if form == "naive-adam":
        v = x0 * 0 + eps  # spec §3.4: v_0 = eps when v replaces v_hat
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        if form == "naive-adam":  # no max, no v_hat
            x = W @ x - lr * m / torch.sqrt(v)
        elif form == "paper":
            v_hat = b3 * v_hat + (1 - b3) * torch.maximum(v_hat, v)
            x = W @ x - lr * m / torch.sqrt(v_hat)
        else:  # dadam.m: bias-corrected m and v, sqrt(v_hat) + eps
            m_hat, v_hat_c = m / (1 - b1**t), v / (1 - b2**t)
            x = W @ x - lr * m_hat / (torch.sqrt(v_hat_c) + eps)
    return x


@pytest.mark.parametrize(
    ("cls", "opts", "form", "betas", "eps"),
    [
        (DADAM, {}, "paper", (0.9, 0.999, 0.9), 1e-8),
        (DADAM, {"form": "code"}, "code", (0.9, 0.999, 0.9), 1e-4),
        (DADAM, {"b3": 0.5, "eps": 1e-6}, "paper", (0.9, 0.999, 0.5), 1e-6),
        (DADAMNaive, {}, "paper", (0.9, 0.99, 0.0), 1e-8),
        (DecentralizedAdamNaive, {}, "naive-adam", (0.9, 0.99, None), 1e-8),
        (DecentralizedAdamNaive, {"b2": 0.9, "eps": 1e-3}, "naive-adam", (0.9, 0.9, None), 1e-3),
    ],
)
def test_dadam_matches_a_hand_rolled_loop(
    cls: type, opts: dict, form: str, betas: tuple, eps: float
) -> None:
    n, d, lr = 4, 6, 1e-2
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(n, d, generator=gen, dtype=DTYPE) * (k % 3) for k in range(50)]
    x0 = torch.randn(n, d, generator=gen, dtype=DTYPE)
    comm = SimulatedCommunicator(make_topology("ring", n))
    alg = cls(lr=lr, **opts)
    x = x0.clone()
    state = alg.init(x, comm)
    for g in grads:
        state = alg.step(x, g, state, comm)
    W = torch.tensor(comm.topology.at(0).dense, dtype=DTYPE)
    want = dadam_hand_rolled(form, W, grads, x0, lr, betas, eps)
    torch.testing.assert_close(x, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("form", ["paper", "code"])
def test_dadam_stays_biased_on_the_two_node_example(form: str) -> None:
    lr = 1e-2
    assert two_node_error(DADAM(lr=lr, form=form, b2=0.99), lr) >= 0.4
    assert two_node_error(DecentralizedAdaGrad(lr=lr), lr) <= 1e-2
    assert two_node_error(DecentralizedAdam(lr=lr), lr) <= 1e-2


def test_naive_decentralized_adam_is_biased_where_decentralized_adam_is_not() -> None:
    """Spec §3.4/§4.1: the untracked naive Adam (no reference value in the spec [U]) keeps an
    O(1) error on the two-node example; its tracked counterpart converges."""
    for lr in (1e-2, 3e-3):
        assert two_node_error(DecentralizedAdamNaive(lr=lr, **FIDELITY), lr) >= 0.4
        assert two_node_error(DecentralizedAdam(lr=lr, **FIDELITY), lr) <= 1e-2


def local_adam(
    grads: list[Tensor], x0: Tensor, lr: float, b1: float, b2: float, eps: float, *, amsgrad: bool
) -> tuple[list[Tensor], list[Tensor]]:
    """One worker, W = [1]: Adam without bias correction; the denominator is sqrt(v_t)
    (v_0 = eps) or, with ``amsgrad``, sqrt(max(eps, v_1, ..., v_t)) (v_0 = 0). Returns the
    iterates x_1.. and the denominators."""
    x, m = x0.clone(), torch.zeros_like(x0)
    v = torch.zeros_like(x0) if amsgrad else torch.full_like(x0, eps)
    top = torch.full_like(x0, eps)
    xs, denoms = [], []
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        top = torch.maximum(top, v)
        denom = torch.sqrt(top if amsgrad else v)
        x = x - lr * m / denom
        xs.append(x)
        denoms.append(denom)
    return xs, denoms


def test_naive_adam_is_naive_amsgrad_without_the_max() -> None:
    """n = 1: ``decentralized-adam-naive`` is local Adam without the max and ``dadam-naive``
    local AMSGrad (hand-written, rtol 1e-12). The gradients are 1 for 6 steps (v rises), then
    0.05 (v falls): the two agree while v rises (up to the v_0 = eps offset, eps = 1e-12) and
    part from the first step at which v falls, where only the max keeps the denominator up."""
    lr, b1, b2, eps, rise, steps = 1e-2, 0.9, 0.9, 1e-12, 6, 12
    grads = [torch.full((1, 3), 1.0 if t < rise else 0.05, dtype=DTYPE) for t in range(steps)]
    x0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=DTYPE)
    runs = {}
    for cls in (DecentralizedAdamNaive, DADAMNaive):
        comm = SimulatedCommunicator(make_topology("ring", 1))
        alg = cls(lr=lr, b1=b1, b2=b2, eps=eps)
        x, xs = x0.clone(), []
        state = alg.init(x, comm)
        for g in grads:
            state = alg.step(x, g, state, comm)
            xs.append(x.clone())
        runs[cls] = xs
    naive, naive_den = local_adam(grads, x0, lr, b1, b2, eps, amsgrad=False)
    ams, ams_den = local_adam(grads, x0, lr, b1, b2, eps, amsgrad=True)
    for t in range(steps):
        torch.testing.assert_close(runs[DecentralizedAdamNaive][t], naive[t], rtol=1e-12, atol=0)
        torch.testing.assert_close(runs[DADAMNaive][t], ams[t], rtol=1e-12, atol=0)
    for t in range(rise):  # v non-decreasing: max(v) = v, the two methods agree
        torch.testing.assert_close(naive_den[t], ams_den[t], rtol=1e-9, atol=0)
        torch.testing.assert_close(
            runs[DecentralizedAdamNaive][t], runs[DADAMNaive][t], rtol=1e-9, atol=0
        )
    for t in range(rise, steps):  # v falls: without the max the denominator falls with it
        assert (naive_den[t] < 0.99 * ams_den[t]).all()  # far beyond the rtol 1e-9 above
        step_naive = runs[DecentralizedAdamNaive][t] - runs[DecentralizedAdamNaive][t - 1]
        step_ams = runs[DADAMNaive][t] - runs[DADAMNaive][t - 1]
        assert (step_naive.abs() > 1.01 * step_ams.abs()).all()
