"""Local SGD with block momentum (spec compression-momentum-adam.md §4.4, items 1-9), float64.

Every reference below is the method written out literally from its paper (K-AVG, BMUF's W/W_g
recursion, SlowMo, CNTK's BlockMomentumSGD) on the quadratics of spec §6:
``rng = default_rng(1)``, ``G = rng.standard_normal((4, 6, 6))``, ``b = rng.standard_normal((4,
6))``, ``A_j = G_j G_j^T / 6 + 0.1 I``, ``f_j(x) = ½ x^T A_j x - b_j^T x``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from peergrad.algorithms import AllReduceSGD, make_algorithm
from peergrad.algorithms.local_sgd import LocalSGD, LocalSGDState
from peergrad.comm import SimulatedCommunicator
from peergrad.comm.base import allreduce_bytes
from peergrad.topology import MixingMatrix, Topology, make_topology

N, D = 4, 6
ATOL = 1e-12


def quadratics() -> tuple[Tensor, Tensor]:
    rng = np.random.default_rng(1)
    G = rng.standard_normal((4, 6, 6))
    b = rng.standard_normal((4, 6))
    A = G @ G.transpose(0, 2, 1) / 6 + 0.1 * np.eye(6)
    return torch.from_numpy(A), torch.from_numpy(b)


A, B = quadratics()


def grad(x: Tensor) -> Tensor:
    """Worker j's gradient A_j x_j - b_j, ``[N, D]``."""
    return torch.einsum("jab,jb->ja", A, x) - B


def x0() -> Tensor:
    return torch.linspace(-1, 1, D, dtype=torch.float64).expand(N, D).clone()


def comm_for(topology: str = "ring", n: int = N) -> SimulatedCommunicator:
    return SimulatedCommunicator(make_topology(topology, n))


def run(
    alg: LocalSGD,
    steps: int,
    *,
    x: Tensor | None = None,
    comm: SimulatedCommunicator | None = None,
    noise: float = 0.0,
    grad_fn: Callable[[Tensor], Tensor] = grad,
    after: Callable[[int, Tensor, LocalSGDState], None] | None = None,
) -> tuple[Tensor, LocalSGDState, SimulatedCommunicator]:
    """``steps`` iterations; ``after(t, x, state)`` runs after iteration t (1-based)."""
    comm = comm or comm_for()
    x = x0() if x is None else x
    state = alg.init(x, comm)
    gen = torch.Generator().manual_seed(7)
    for t in range(1, steps + 1):
        g = grad_fn(x)
        if noise:
            g = g + noise * torch.randn(g.shape, generator=gen, dtype=g.dtype)
        state = alg.step(x, g, state, comm)
        if after is not None:
            after(t, x, state)
    return x, state, comm


def anchors(alg: LocalSGD, rounds: int, K: int) -> list[Tensor]:
    """The model after every sync (x_1, x_2, ...): where each block starts."""
    out: list[Tensor] = []
    run(alg, rounds * K, after=lambda t, x, s: out.append(x.clone()) if t % K == 0 else None)
    return out


def kavg_round(start: Tensor, K: int, lr: float) -> Tensor:
    """x_bar: K plain SGD steps from ``start`` on every worker, then the exact average."""
    x = start.clone()
    for _ in range(K):
        x = x - lr * grad(x)
    return x.mean(0, keepdim=True).expand(N, D)


# ------------------------------------------------------------------ items 1-3: reductions
@pytest.mark.parametrize(
    "local",
    [
        {"momentum": 0.0},
        {"momentum": 0.9, "local_state": "keep", "weight_decay": 1e-2},
        {"momentum": 0.9, "nesterov": True, "local_state": "average"},
    ],
)
def test_period_one_without_block_momentum_is_synchronous_sgd(local: dict) -> None:
    """Item 1: K = 1, mu = 0, zeta = 1 equals ``allreduce`` step for step (same noise)."""
    lsgd = LocalSGD(lr=0.05, period=1, block_momentum=0.0, **local)
    opts = {k: v for k, v in local.items() if k != "local_state"}
    ref = AllReduceSGD(lr=0.05, **opts)
    comm_a, comm_b = comm_for(), comm_for()
    xa, xb = x0(), x0()
    sa, sb = lsgd.init(xa, comm_a), ref.init(xb, comm_b)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        noise = torch.randn(N, D, generator=gen, dtype=torch.float64)
        sa = lsgd.step(xa, grad(xa) + noise, sa, comm_a)
        sb = ref.step(xb, grad(xb) + noise, sb, comm_b)
        torch.testing.assert_close(xa, xb, rtol=0, atol=ATOL)
    if local.get("local_state") != "average":  # same traffic: one all-reduce of D per step
        assert torch.equal(comm_a.bytes_sent, comm_b.bytes_sent)


@pytest.mark.parametrize("K", [2, 5])
def test_no_block_momentum_is_plain_model_averaging(K: int) -> None:
    """Item 2: mu = 0, zeta = 1 is K-AVG for any K (and keeps no block state)."""
    lr, rounds = 0.1, 12
    got = anchors(LocalSGD(lr=lr, period=K, block_momentum=0.0), rounds, K)
    x = x0()
    for t in range(rounds):
        x = kavg_round(x, K, lr)
        torch.testing.assert_close(got[t], x, rtol=0, atol=ATOL)
    _, state, _ = run(LocalSGD(lr=lr, period=K, block_momentum=0.0), 1)
    assert state.anchor is None and state.block_buffer is None


def test_one_worker_is_sgd_for_k_times_t_steps() -> None:
    """Item 3: N = 1 (default mu = 1 - 1/N = 0), zeta = 1 is plain SGD."""
    lr, K, rounds = 0.1, 4, 10
    A0, b0 = A[0], B[0]
    x, _, comm = run(
        LocalSGD(lr=lr, period=K),
        K * rounds,
        x=x0()[:1].clone(),
        comm=comm_for(n=1),
        grad_fn=lambda x: x @ A0 - b0,
    )
    ref = x0()[:1].clone()
    for _ in range(K * rounds):
        ref = ref - lr * (ref @ A0 - b0)
    torch.testing.assert_close(x, ref, rtol=0, atol=ATOL)
    assert float(comm.bytes_sent.sum()) == 0.0  # nothing to send with one worker


# ------------------------------------------------------------------ items 4-7: equivalent forms
def test_classical_block_momentum_is_heavy_ball_on_averaged_models() -> None:
    """Item 4: zeta = 1, classical: x_(t+1) = x_bar_(t+1) + mu (x_t - x_(t-1))."""
    lr, K, mu, rounds = 0.05, 3, 0.7, 15
    got = anchors(LocalSGD(lr=lr, period=K, block_momentum=mu), rounds, K)
    prev, x = x0(), x0()
    for t in range(rounds):
        prev, x = x, kavg_round(x, K, lr) + mu * (x - prev)
        torch.testing.assert_close(got[t], x, rtol=0, atol=ATOL)


@pytest.mark.parametrize(("beta", "alpha"), [(0.5, 1.0), (0.8, 0.6)])
def test_slowmo_with_constant_lr_is_the_template(beta: float, alpha: float) -> None:
    """Item 5: SlowMo u <- beta u + (x_t - x_bar)/lr; x <- x_t - alpha lr u (Wang et al.)."""
    lr, K, rounds = 0.05, 4, 12
    got = anchors(LocalSGD(lr=lr, period=K, block_momentum=beta, block_lr=alpha), rounds, K)
    x, u = x0(), torch.zeros(N, D, dtype=torch.float64)
    for t in range(rounds):
        u = beta * u + (x - kavg_round(x, K, lr)) / lr
        x = x - alpha * lr * u
        torch.testing.assert_close(got[t], x, rtol=0, atol=ATOL)


def cntk(bm: float, blr: float, K: int, lr: float, rounds: int, nesterov: bool) -> list[Tensor]:
    """CNTK BlockMomentumSGD: S <- bm S + (1 - bm) blr sum_j (P - w_j); w = P - S
    [- bm S with Nesterov]; P <- w. The learners start every block from P."""
    P, S, out = x0(), torch.zeros(N, D, dtype=torch.float64), []
    for _ in range(rounds):
        w = P.clone()
        for _ in range(K):
            w = w - lr * grad(w)
        S = bm * S + (1 - bm) * blr * (P - w).sum(0, keepdim=True).expand(N, D)
        P = P - S - (bm * S if nesterov else 0)
        out.append(P)
    return out


@pytest.mark.parametrize("nesterov", [False, True])
def test_cntk_block_momentum_is_the_template_with_rescaled_block_lr(nesterov: bool) -> None:
    """Item 6: CNTK (bm, blr) is mu = bm, zeta = (1 - bm) N blr; its Nesterov form is
    ``nesterov_style="cntk"``."""
    lr, K, rounds, bm, blr = 0.05, 3, 12, 0.6, 0.9
    alg = LocalSGD(
        lr=lr,
        period=K,
        block_momentum=bm,
        block_lr=(1 - bm) * N * blr,
        block_nesterov=nesterov,
        nesterov_style="cntk",
    )
    got = anchors(alg, rounds, K)
    for a, b in zip(got, cntk(bm, blr, K, lr, rounds, nesterov), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


def test_cntk_nesterov_differs_from_bmuf_nesterov_once_u_is_nonzero() -> None:
    """Item 6: CNTK does not undo the previous look-ahead, BMUF-NBM does; never merge them."""
    common = {"lr": 0.05, "period": 3, "block_momentum": 0.6, "block_nesterov": True}
    a = anchors(LocalSGD(nesterov_style="cntk", **common), 4, 3)
    b = anchors(LocalSGD(nesterov_style="bmuf", **common), 4, 3)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=ATOL)  # u_0 = 0: the same first sync
    for t in range(1, 4):
        assert float((a[t] - b[t]).abs().max()) > 1e-4


@pytest.mark.parametrize("nesterov", [False, True])
def test_bmuf_paper_recursion_is_the_template(nesterov: bool) -> None:
    """Item 7: Chen & Huo's G(n) = W_bar(n) - W_g(n-1); Delta(n) = eta Delta(n-1) + zeta G(n);
    W(n) = W(n-1) + Delta(n); W_g(n) = W(n) (CBM) or W(n) + eta Delta(n) (NBM); the learners
    start from W_g."""
    lr, K, rounds, eta, zeta = 0.05, 4, 12, 0.75, 0.8
    alg = LocalSGD(lr=lr, period=K, block_momentum=eta, block_lr=zeta, block_nesterov=nesterov)
    got = anchors(alg, rounds, K)
    W = Wg = x0()
    delta = torch.zeros(N, D, dtype=torch.float64)
    for t in range(rounds):
        G = kavg_round(Wg, K, lr) - Wg
        delta = eta * delta + zeta * G
        W = W + delta
        Wg = W + eta * delta if nesterov else W
        torch.testing.assert_close(got[t], Wg, rtol=0, atol=ATOL)


def test_period_one_block_momentum_is_global_heavy_ball() -> None:
    """K = 1, zeta = 1, plain local SGD: block momentum mu is all-reduce SGD with momentum mu."""
    lr, mu = 0.05, 0.8
    lsgd, ref = LocalSGD(lr=lr, period=1, block_momentum=mu), AllReduceSGD(lr=lr, momentum=mu)
    comm_a, comm_b = comm_for(), comm_for()
    xa, xb = x0(), x0()
    sa, sb = lsgd.init(xa, comm_a), ref.init(xb, comm_b)
    for _ in range(40):
        sa = lsgd.step(xa, grad(xa), sa, comm_a)
        sb = ref.step(xb, grad(xb), sb, comm_b)
    torch.testing.assert_close(xa, xb, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ item 8: closed form
def test_closed_form_on_a_linear_objective() -> None:
    """Item 8: f(x) = w^T x: d_t = K lr w, u_t = zeta K lr w (1 - mu^t)/(1 - mu), and
    x_t = x_0 - zeta K lr w sum_(tau=1..t) (1 - mu^tau)/(1 - mu)."""
    K, lr, mu, zeta, rounds = 5, 0.01, 0.6, 0.8, 40
    w = torch.linspace(-2, 3, D, dtype=torch.float64)
    alg = LocalSGD(lr=lr, period=K, block_momentum=mu, block_lr=zeta)
    seen: list[tuple[Tensor, Tensor]] = []

    def keep(t: int, x: Tensor, s: LocalSGDState) -> None:
        if t % K == 0:
            assert s.block_buffer is not None
            seen.append((x.clone(), s.block_buffer.clone()))

    run(alg, K * rounds, grad_fn=lambda x: w.expand_as(x), after=keep)
    step = zeta * K * lr * w
    total = torch.zeros(D, dtype=torch.float64)
    for t, (x, u) in enumerate(seen, start=1):
        total += (1 - mu**t) / (1 - mu)
        torch.testing.assert_close(
            u, (step * (1 - mu**t) / (1 - mu)).expand(N, D), rtol=0, atol=ATOL
        )
        torch.testing.assert_close(x, x0() - total * step, rtol=0, atol=ATOL)


# ------------------------------------------------------------------ item 9: local-state policy
@pytest.mark.parametrize("local_update", ["sgd", "adam", "amsgrad"])
def test_local_state_policies_at_a_sync(local_update: str) -> None:
    """Item 9: "reset" zeroes the buffers, "average" makes them the workers' mean, "keep" leaves
    them as the local steps made them; x is the same under all three up to the first sync."""
    K = 3
    out = {}
    for policy in ("keep", "reset", "average"):
        alg = LocalSGD(
            lr=0.01,
            momentum=0.9,
            period=K,
            block_momentum=0.5,
            local_update=local_update,
            local_state=policy,
        )
        x, state, _ = run(alg, K, noise=1.0)
        out[policy] = (x, alg.local_buffers(state), state.moment_steps)
    keep_x, keep_bufs, _ = out["keep"]
    assert len(keep_bufs) == {"sgd": 1, "adam": 2, "amsgrad": 3}[local_update]
    for x, _, _ in out.values():
        torch.testing.assert_close(x, keep_x, rtol=0, atol=0)
    for buf in out["reset"][1]:
        assert not buf.any()
    for buf, kept in zip(out["average"][1], keep_bufs, strict=True):
        torch.testing.assert_close(
            buf, kept.mean(0, keepdim=True).expand_as(kept), rtol=0, atol=ATOL
        )
    assert all(float((b - b[:1]).abs().max()) > 0 for b in keep_bufs)  # kept buffers differ
    if local_update != "sgd":
        assert (out["keep"][2], out["reset"][2], out["average"][2]) == (K, 0, K)


# ------------------------------------------------------------------ communication
@pytest.mark.parametrize(
    ("options", "values"),
    [
        ({}, D),
        ({"local_state": "average", "momentum": 0.9}, 2 * D),
        ({"local_state": "average", "local_update": "adam", "momentum": 0.9}, 3 * D),
        ({"local_state": "average", "momentum": 0.0}, D),  # no buffer in use: only x is sent
    ],
)
def test_bytes_grow_only_at_sync_steps_including_the_warmup(options: dict, values: int) -> None:
    """Nothing is sent on local steps; a sync is one all-reduce of x (+ the averaged buffers)."""
    K, warm, steps = 4, 3, 20
    alg = LocalSGD(lr=0.01, period=K, warmup_steps=warm, **options)
    comm = comm_for()
    log: list[tuple[float, int]] = []
    run(
        alg,
        steps,
        comm=comm,
        after=lambda t, x, s: log.append((float(comm.bytes_sent[0]), comm.rounds)),
    )
    syncs = [t for t in range(1, steps + 1) if alg.is_sync(t)]
    assert syncs == [1, 2, 3, 7, 11, 15, 19]
    prev = (0.0, 0)
    for t, (sent, rounds) in enumerate(log, start=1):
        expected = (prev[0] + allreduce_bytes(values * 8, N), prev[1] + 1)
        assert (sent, rounds) == (expected if t in syncs else prev)
        prev = (sent, rounds)
    assert torch.equal(comm.bytes_sent, torch.full((N,), prev[0], dtype=torch.float64))


def test_gossip_sync_sends_one_round_over_the_topology() -> None:
    """``gossip=True``: one gossip round per sync (out-degree x message on a ring: 2 D values);
    the mix preserves the workers' mean, and on the complete graph it is exact averaging."""
    K, n = 3, 8
    ring = comm_for("ring", n)
    alg = LocalSGD(lr=0.05, period=K, block_momentum=0.0, gossip=True)
    x = torch.randn(n, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    state = alg.init(x, ring)
    g = torch.randn(n, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for t in range(1, 2 * K + 1):
        before = x.clone()
        state = alg.step(x, g, state, ring)
        sent = float(ring.bytes_sent[0])
        if t % K:
            assert ring.rounds == t // K
        else:
            torch.testing.assert_close(x.mean(0), (before - 0.05 * g).mean(0), rtol=0, atol=ATOL)
            assert float((x - x.mean(0)).abs().max()) > 1e-6  # one ring round: no consensus yet
    assert sent == 2 * (2 * D * 8) and ring.rounds == 2

    # complete graph: gossip = exact averaging (compared with gossip=False)
    xs = []
    for gossip in (True, False):
        comm = comm_for("complete", N)
        xs.append(run(LocalSGD(lr=0.05, period=K, gossip=gossip), 4 * K, comm=comm, noise=1.0)[0])
    torch.testing.assert_close(xs[0], xs[1], rtol=0, atol=ATOL)


def test_gossip_needs_a_doubly_stochastic_matrix_exact_averaging_does_not() -> None:
    W = np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]])  # rows sum to 1 only
    comm = SimulatedCommunicator(Topology((MixingMatrix(W, check=False),), name="row-stochastic"))
    LocalSGD().check_topology(comm)
    with pytest.raises(ValueError, match="local-sgd with gossip=True needs a doubly stochastic"):
        LocalSGD(gossip=True).check_topology(comm)


def test_warmup_is_post_local_sgd() -> None:
    """Post-local SGD (Lin et al.): synchronous SGD with momentum for warmup_steps iterations,
    then K-step averaging; the warm-up part equals ``allreduce`` ("keep": buffers are linear)."""
    warm, K = 6, 4
    alg = LocalSGD(
        lr=0.05, momentum=0.9, period=K, warmup_steps=warm, block_momentum=0.0, local_state="keep"
    )
    ref = AllReduceSGD(lr=0.05, momentum=0.9)
    comm_a, comm_b = comm_for(), comm_for()
    xa, xb = x0(), x0()
    sa, sb = alg.init(xa, comm_a), ref.init(xb, comm_b)
    gen = torch.Generator().manual_seed(3)
    for t in range(1, warm + K + 1):
        noise = torch.randn(N, D, generator=gen, dtype=torch.float64)
        sa = alg.step(xa, grad(xa) + noise, sa, comm_a)
        sb = ref.step(xb, grad(xb) + noise, sb, comm_b)
        if t <= warm:
            torch.testing.assert_close(xa, xb, rtol=0, atol=ATOL)
        elif t < warm + K:  # local phase: the workers drift apart
            assert float((xa - xa.mean(0)).abs().max()) > 1e-8
    torch.testing.assert_close(xa, xa.mean(0, keepdim=True).expand_as(xa), rtol=0, atol=0)
    assert [alg.syncs_done(t) for t in (5, 6, 9, 10, 14)] == [5, 6, 6, 7, 8]


# ------------------------------------------------------------------ local Adam
@pytest.mark.parametrize("local_update", ["adam", "amsgrad", "adamw"])
@pytest.mark.parametrize("policy", ["keep", "reset"])
def test_adam_local_update_is_torch_adam_on_one_worker(local_update: str, policy: str) -> None:
    """One worker: the Adam local update is ``torch.optim.Adam`` (``AdamW`` for "adamw":
    decoupled weight decay), restarted at every sync with "reset", bias correction and weight
    decay included."""
    amsgrad = local_update == "amsgrad"
    K, steps, lr, wd = 3, 12, 0.02, 1e-2
    A0, b0 = A[0], B[0]
    alg = LocalSGD(
        lr=lr,
        momentum=0.9,
        b2=0.99,
        eps=1e-6,
        weight_decay=wd,
        period=K,
        local_update=local_update,
        local_state=policy,
    )
    x, _, _ = run(alg, steps, x=x0()[:1].clone(), comm=comm_for(n=1), grad_fn=lambda x: x @ A0 - b0)
    p = torch.nn.Parameter(x0()[0].clone())

    def make() -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if local_update == "adamw" else torch.optim.Adam
        return cls([p], lr=lr, betas=(0.9, 0.99), eps=1e-6, weight_decay=wd, amsgrad=amsgrad)

    opt = make()
    for t in range(1, steps + 1):
        p.grad = (p.detach() @ A0 - b0).clone()
        opt.step()
        if policy == "reset" and t % K == 0:
            opt = make()
    torch.testing.assert_close(x[0], p.detach(), rtol=0, atol=ATOL)


# ------------------------------------------------------------------ torch's SGD as the block step
@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("foreach", [True, False])
def test_torch_style_block_step_is_torch_sgd_bit_for_bit(nesterov: bool, foreach: bool) -> None:
    """nesterov_style="torch": every block step is ``torch.optim.SGD(lr=block_lr,
    momentum=block_momentum, nesterov=...)`` stepped at the anchor with the block gradient
    ``anchor - mean(x)`` as ``.grad``, bit for bit (``torch.equal``) over 5 blocks."""
    K, mu, zeta = 3, 0.9, 0.7
    alg = LocalSGD(
        lr=0.05,
        period=K,
        block_momentum=mu,
        block_lr=zeta,
        block_nesterov=nesterov,
        nesterov_style="torch",
        local_state="keep",
        momentum=0.5,
    )
    comm = comm_for()
    x = x0()
    state = alg.init(x, comm)
    for _ in range(5 * K):
        state = alg.step(x, grad(x), state, comm)
    # the same run written out: local heavy-ball SGD on every worker, and at every K-th step
    # torch's optimizer stepped at the anchor with anchor - mean(x) as the gradient
    outer = torch.nn.Parameter(x0()[0].clone())
    opt = torch.optim.SGD([outer], lr=zeta, momentum=mu, nesterov=nesterov, foreach=foreach)
    y, buf = x0(), torch.zeros(N, D, dtype=torch.float64)
    for t in range(1, 5 * K + 1):
        buf.mul_(0.5).add_(grad(y))
        y.sub_(buf, alpha=0.05)
        if t % K == 0:
            outer.grad = outer.detach() - y.mean(0)
            opt.step()
            y.copy_(outer.detach().expand(N, D))
    assert torch.equal(x, y), (x - y).abs().max()


# ------------------------------------------------------------------ options and errors
def test_default_block_momentum_is_the_bmuf_rule_and_cli_strings_convert() -> None:
    alg = make_algorithm(
        "local-sgd", period="4", block_momentum="none", block_nesterov="true", gossip="0"
    )
    assert alg == LocalSGD(period=4, block_nesterov=True)
    assert alg.resolved_block_momentum(8) == pytest.approx(0.875)
    assert make_algorithm("local-sgd", block_momentum="0.5").resolved_block_momentum(8) == 0.5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"period": 0}, "period must be an integer >= 1"),
        ({"period": 2.5}, "period must be an integer >= 1"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        ({"block_momentum": 1.0}, r"block_momentum must be in \[0, 1\)"),
        ({"block_lr": 0.0}, "block_lr must be a finite number > 0"),
        ({"nesterov_style": "keras"}, "nesterov_style must be one of bmuf, cntk, torch"),
        ({"local_update": "lamb"}, "local_update must be one of sgd, adam, amsgrad"),
        ({"local_state": "drop"}, "local_state must be one of keep, reset, average"),
        ({"b2": 1.0}, r"b2 must be in \[0, 1\)"),
        ({"eps": 0.0}, "eps must be a finite number > 0"),
        ({"local_update": "adam", "nesterov": True}, "nesterov .* needs local_update='sgd'"),
    ],
)
def test_invalid_options_are_rejected(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalSGD(**options)


def test_state_from_other_options_is_rejected() -> None:
    comm = comm_for()
    x = x0()
    plain = LocalSGD(block_momentum=0.0).init(x, comm)
    with pytest.raises(ValueError, match="call init again"):
        LocalSGD(block_momentum=0.5).step(x, grad(x), plain, comm)
    with pytest.raises(ValueError, match="call init again"):
        LocalSGD(block_momentum=0.0, local_update="adam").step(x, grad(x), plain, comm)


def test_training_metrics_count_rounds_and_bytes_only_at_syncs() -> None:
    """End to end (``peergrad train``): 12 steps with K = 4 are 3 all-reduces of the model."""
    from peergrad.train import TrainConfig, train

    config = TrainConfig(
        algorithm="local-sgd",
        options={"period": 4},
        workers=4,
        dataset="digits",
        model="logreg",
        steps=12,
        eval_every=2,
        batch_size=8,
        progress=False,
    )
    result = train(config, write=False)
    dim = 64 * 10 + 10
    rounds = [r["comm_rounds"] for r in result.records]
    assert rounds == [0, 0, 1, 1, 2, 2, 3]  # steps 0, 2, ..., 12; syncs at 4, 8, 12
    for r, k in zip(result.records, rounds, strict=True):
        assert r["bytes_sent_per_worker"] == k * allreduce_bytes(dim * 4, 4)


# ------------------------------------------------------------------ item 10: round-count oracle
def rounds_to_tolerance(lr: float, mu: float, K: int = 4) -> int:
    """Spec §4.4 item 10: all 4 workers get f_0 (A_0, b_0 of the §6 draw), x_0 = 0, local plain
    SGD, zeta = 1; rounds until ||A_0 x_t - b_0|| < 1e-6, checked after every round."""
    comm = comm_for()
    alg = LocalSGD(lr=lr, period=K, block_momentum=mu)
    x = torch.zeros(N, D, dtype=torch.float64)
    state = alg.init(x, comm)
    for r in range(1, 100_000):
        for _ in range(K):
            state = alg.step(x, x @ A[0] - B[0], state, comm)  # A_0 is symmetric
        if float(torch.linalg.vector_norm(A[0] @ x[0] - B[0])) < 1e-6:
            return r
    raise AssertionError("no convergence")


@pytest.mark.parametrize(
    ("lr", "expected"),
    [(0.01, (3167, 750)), pytest.param(0.002, (15839, 3920), marks=pytest.mark.slow)],
)
def test_block_momentum_cuts_the_rounds_as_the_spec_benchmark_says(
    lr: float, expected: tuple[int, int]
) -> None:
    """Item 10 [E]: mu = 0.75 = 1 - 1/N needs about 1/(1 - mu) = 4x fewer rounds; the exact
    counts are the spec's float64 numpy oracle."""
    assert (rounds_to_tolerance(lr, 0.0), rounds_to_tolerance(lr, 0.75)) == expected


# ------------------------------------------------------------------ warm-up forms (issue 28)
@pytest.mark.parametrize(
    ("options", "syncs", "gradient_steps"),
    [
        ({}, [1, 2, 3, 7, 11, 15, 19], []),
        ({"first_sync": "immediate"}, [1, 2, 3, 4, 8, 12, 16, 20], []),
        ({"warmup_sync": "gradients"}, [7, 11, 15, 19], [1, 2, 3]),
        ({"warmup_sync": "gradients", "first_sync": "immediate"}, [4, 8, 12, 16, 20], [1, 2, 3]),
        ({"warmup_sync": "none", "first_sync": "immediate"}, [4, 8, 12, 16, 20], []),
        (
            {"warmup_sync": "none", "warmup_steps": 0, "first_sync": "immediate"},
            [1, 5, 9, 13, 17],
            [],
        ),
    ],
)
def test_warmup_sync_and_first_sync_schedules_and_bytes(
    options: dict, syncs: list[int], gradient_steps: list[int]
) -> None:
    """Which iterations average the models (``is_sync``, ``syncs_done``) and which average the
    gradients first; every one is one all-reduce of D values, nothing else is sent."""
    K, steps = 4, 20
    alg = LocalSGD(lr=0.01, period=K, **{"warmup_steps": 3, **options})
    assert [t for t in range(1, steps + 1) if alg.is_sync(t)] == syncs
    assert [t for t in range(1, steps + 1) if alg.averages_gradient(t)] == gradient_steps
    assert [alg.syncs_done(t) for t in range(1, steps + 1)] == [
        sum(s <= t for s in syncs) for t in range(1, steps + 1)
    ]
    comm = comm_for()
    log: list[int] = []
    run(alg, steps, comm=comm, after=lambda t, x, s: log.append(comm.rounds))
    sends = sorted(syncs + gradient_steps)
    assert log == [sum(s <= t for s in sends) for t in range(1, steps + 1)]
    assert float(comm.bytes_sent[0]) == len(sends) * allreduce_bytes(D * 8, N)


@pytest.mark.parametrize(
    "local", [{"momentum": 0.9, "weight_decay": 1e-2}, {"nesterov": True, "momentum": 0.5}]
)
def test_gradient_warmup_is_allreduce_then_the_first_block_starts_at_its_end(local: dict) -> None:
    """warmup_sync="gradients": the warm-up equals ``allreduce`` (DDP: weight decay added after
    the average) with one common momentum buffer; the first block step after it starts from the
    warm-up's last x (the anchor), whatever the local-state policy ("reset" resets nothing in
    the warm-up)."""
    warm, K, mu = 5, 3, 0.5
    alg = LocalSGD(
        lr=0.05,
        period=K,
        warmup_steps=warm,
        warmup_sync="gradients",
        block_momentum=mu,
        local_state="reset",
        **local,
    )
    ref = AllReduceSGD(lr=0.05, **local)
    comm_a, comm_b = comm_for(), comm_for()
    xa, xb = x0(), x0()
    sa, sb = alg.init(xa, comm_a), ref.init(xb, comm_b)
    gen = torch.Generator().manual_seed(4)
    for _ in range(warm):
        noise = torch.randn(N, D, generator=gen, dtype=torch.float64)
        sa = alg.step(xa, grad(xa) + noise, sa, comm_a)
        sb = ref.step(xb, grad(xb) + noise, sb, comm_b)
    torch.testing.assert_close(xa, xb, rtol=0, atol=ATOL)
    torch.testing.assert_close(sa.momentum_buffer, sb.momentum_buffer, rtol=0, atol=ATOL)
    assert sa.anchor is not None and torch.equal(sa.anchor, xa)
    # two blocks written out: K local steps from the anchor (buffers reset at every sync),
    # then the BMUF block step u <- mu u + d, x <- anchor - u with d = anchor - mean(y)
    anchor, u, buf, y = xa.clone(), torch.zeros(N, D, dtype=torch.float64), sa.momentum_buffer, xa
    buf, y = buf.clone(), y.clone()
    for _ in range(2):
        for _ in range(K):
            noise = torch.randn(N, D, generator=gen, dtype=torch.float64)
            g = grad(y) + noise
            sa = alg.step(xa, g, sa, comm_a)
            g = g + local.get("weight_decay", 0.0) * y
            buf = local["momentum"] * buf + g
            y = y - 0.05 * ((g + local["momentum"] * buf) if local.get("nesterov") else buf)
        u = mu * u + (anchor - y.mean(0, keepdim=True))
        anchor = (anchor - u).expand(N, D).clone()
        y, buf = anchor.clone(), torch.zeros_like(buf)
        torch.testing.assert_close(xa, anchor, rtol=0, atol=ATOL)
        assert float(sa.momentum_buffer.abs().max()) == 0.0  # "reset" at the sync


def test_no_warmup_communication_and_the_first_block_spans_the_warmup() -> None:
    """warmup_sync="none": nothing is sent during the warm-up, the workers drift apart, and
    with a block step the first block's anchor is the initial x."""
    warm, K, mu = 3, 2, 0.5
    alg = LocalSGD(
        lr=0.05,
        period=K,
        warmup_steps=warm,
        warmup_sync="none",
        first_sync="immediate",
        block_momentum=mu,
    )
    comm = comm_for()
    x = x0()
    state = alg.init(x, comm)
    y = x0()
    for t in range(1, warm + 2):
        g = grad(x)
        state = alg.step(x, g, state, comm)
        if t <= warm:
            assert comm.rounds == 0 and float((x - x.mean(0)).abs().max()) > 1e-6
        y = y - 0.05 * grad(y)
    # t = warm + 1: the first sync; d = x0 - mean(y) over all warm + 1 local steps
    d = x0() - y.mean(0, keepdim=True)
    torch.testing.assert_close(x, (x0() - d).expand(N, D), rtol=0, atol=ATOL)
    assert comm.rounds == 1


def test_post_local_sgd_preset_is_local_sgd_with_torchs_options() -> None:
    """``post-local-sgd`` is ``LocalSGD`` with torch's semantics as defaults (and its own name);
    it runs the same iterates as ``local-sgd`` given those options."""
    from peergrad.algorithms import PostLocalSGD

    preset = make_algorithm("post-local-sgd")
    assert isinstance(preset, PostLocalSGD) and isinstance(preset, LocalSGD)
    torchs = {
        "warmup_sync": "gradients",
        "first_sync": "immediate",
        "local_state": "keep",
        "block_momentum": 0.0,
        "block_lr": 1.0,
        "local_update": "sgd",
        "period": 4,
        "warmup_steps": 100,
    }
    assert {k: getattr(preset, k) for k in torchs} == torchs
    assert preset.options() == {**LocalSGD().options(), **torchs}
    options = {"period": 3, "warmup_steps": 4, "momentum": 0.9}
    xa = run(PostLocalSGD(**options), 15, noise=1.0)[0]
    xb = run(LocalSGD(**torchs | options), 15, noise=1.0)[0]
    assert torch.equal(xa, xb)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"warmup_sync": "params"}, "warmup_sync must be one of models, gradients, none"),
        ({"first_sync": "late"}, "first_sync must be one of period, immediate"),
        ({"warmup_sync": "gradients", "gossip": True}, "warmup_sync='gradients' .* gossip=False"),
    ],
)
def test_invalid_warmup_options_are_rejected(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalSGD(**options)
    with pytest.raises(ValueError, match=message):
        make_algorithm("post-local-sgd", **options)
