"""PowerSGD (``powersgd``): against PyTorch's own ``powerSGD_hook``, and its invariants.

- Verification: 4 gloo processes run DDP + ``powerSGD_hook`` + ``torch.optim.SGD`` and
  ``DistributedOptimizer(..., "powersgd")`` on the same model and data (``_powersgd_worker.py``);
  after 20 steps the parameters agree within 1e-5 relative in float32 (rounding differences, e.g.
  torch's SGD rounds ``momentum * buf`` before adding, are amplified by the power iteration) and
  1e-12 in float64, and so do the error-feedback memories and the Qs.
- Simulated engine, float64: full rank is exact (equals ``allreduce`` step by step); a low-rank
  gradient is reconstructed exactly; error feedback loses nothing (virtual iterate); bytes and
  rounds per step follow the formula; the state resumes bit for bit; bad input raises.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from _distributed import start_workers, wait_all
from _powersgd_worker import CASES, DTYPES, STEPS
from peergrad.algorithms import (
    AllReduceSGD,
    PowerSGD,
    make_algorithm,
    state_from_dict,
    state_to_dict,
)
from peergrad.algorithms.base import bind_run
from peergrad.algorithms.powersgd import make_plan, orthogonalize
from peergrad.comm import SimulatedCommunicator
from peergrad.topology import make_topology

HERE = Path(__file__).parent
WORLD = 4
#: a conv weight (3 x 10 matrix), a bias, a 12 x 9 matrix, a second bias, a scalar
SHAPES = ((3, 5, 2), (4,), (12, 9), (7,), ())
D = sum(math.prod(s) for s in SHAPES)


# ---------------------------------------------------------------- against PyTorch's hook
@pytest.fixture(scope="module")
def hook_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("powersgd")
    out = tmp / "results.pt"
    procs = start_workers(
        [str(HERE / "_powersgd_worker.py"), str(out)], WORLD, cwd=tmp, log_dir=tmp
    )
    codes = wait_all(procs, timeout_s=300)
    logs = "\n".join((tmp / f"rank{r}.err").read_text()[-2000:] for r in range(WORLD))
    assert codes == [0] * WORLD, f"worker exit codes {codes}\n{logs}"
    return torch.load(out)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("case", list(CASES))
def test_equals_pytorch_powersgd_hook(case: str, hook_results: dict) -> None:
    """Parameters, error memories and Qs of peergrad's powersgd equal those of DDP with
    ``powerSGD_hook`` after 20 steps; both compress the same tensors (the hook's counters),
    and peergrad's bytes and rounds follow the formula."""
    r = hook_results[case]
    ours, _, _ = CASES[case]
    float64 = DTYPES[case] == torch.float64
    assert r["x_ours"].dtype == DTYPES[case]
    assert torch.equal(r["flat_ours"], r["x_ours"])  # the bucket order is the buffer's order
    # one bucket throughout, in one order once DDP has rebuilt it (after the first step)
    assert all(o == r["orders"][-1] for o in r["orders"][1:])
    rel = _rel(r["x_ours"], r["x_torch"])
    assert rel <= (1e-12 if float64 else 1e-5), f"max relative difference {rel:.3g}"
    if ours.get("error_feedback", True):
        assert _rel(r["error_ours"], r["error_torch"]) <= (1e-12 if float64 else 1e-3)
    if ours.get("warm_start", True):  # the hook keeps Q only with warm start
        assert _rel(r["q_ours"], r["q_torch"]) <= (1e-12 if float64 else 1e-3)
    # the same compression decisions: the hook counts numels before and after compression
    alg = make_algorithm("powersgd", **ours, shapes=r["shapes"])
    D_model = sum(math.prod(s) for s in r["shapes"])
    plan = alg.plan(D_model)
    assert plan.matrices and plan.p_size + plan.q_size + plan.u_size < D_model
    compressed = STEPS - alg.start_iter
    assert r["numel"] == (
        compressed * D_model,
        compressed * (plan.u_size + plan.p_size + plan.q_size),
    )
    itemsize = 8 if float64 else 4
    wire = alg.start_iter * D_model + compressed * (plan.u_size + plan.p_size + plan.q_size)
    assert r["bytes"] == pytest.approx(2 * (WORLD - 1) / WORLD * itemsize * wire, rel=1e-12)
    per_step = 2 + (plan.u_size > 0)
    assert r["rounds"] == alg.start_iter + compressed * per_step


# ---------------------------------------------------------------- simulated engine
def _grads(n: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, D, generator=gen, dtype=torch.float64) for _ in range(steps)]


def _x0(n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(1, D, generator=gen, dtype=torch.float64).expand(n, D).clone()


def _comm(n: int = WORLD) -> SimulatedCommunicator:
    return SimulatedCommunicator(make_topology("ring", n))


@pytest.mark.parametrize("nesterov", [False, True])
def test_full_rank_is_exact_and_equals_allreduce_step_by_step(nesterov: bool) -> None:
    """r' = min(m, k) for every tensor (min_compression_rate=0 compresses biases and the scalar
    too): P spans the column space of the averaged matrix, so P Q^T is that average, and the
    error memories average to zero."""
    opts = {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov, "weight_decay": 1e-3}
    psgd = PowerSGD(**opts, rank=9, min_compression_rate=0, shapes=SHAPES)
    plan = psgd.plan(D)
    assert not plan.uncompressed and all(m.rank == min(m.rows, m.cols) for m in plan.matrices)
    ref = AllReduceSGD(**opts)
    ca, cb = _comm(), _comm()
    xa, xb = _x0(WORLD), _x0(WORLD)
    sa, sb = psgd.init(xa, ca), ref.init(xb, cb)
    for g in _grads(WORLD, 12):
        sa, sb = psgd.step(xa, g, sa, ca), ref.step(xb, g, sb, cb)
        torch.testing.assert_close(xa, xb, rtol=0, atol=1e-12)
        zero = torch.zeros(D, dtype=torch.float64)
        torch.testing.assert_close(sa.error.mean(0), zero, rtol=0, atol=1e-12)


def test_low_rank_is_not_allreduce() -> None:
    """The same run with rank 1 is not all-reduce (the comparison above can fail)."""
    psgd = PowerSGD(lr=0.1, rank=1, min_compression_rate=0, shapes=SHAPES)
    ref = AllReduceSGD(lr=0.1)
    ca, cb = _comm(), _comm()
    xa, xb = _x0(WORLD), _x0(WORLD)
    sa, sb = psgd.init(xa, ca), ref.init(xb, cb)
    for g in _grads(WORLD, 3):
        sa, sb = psgd.step(xa, g, sa, ca), ref.step(xb, g, sb, cb)
    assert (xa - xb).abs().max() > 1e-3


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_a_low_rank_gradient_is_reconstructed_in_one_step(rank: int) -> None:
    """Every worker holds the same gradient, each matrix of rank <= r (spec §2.3 test 5): the
    first compressed step returns it exactly (Gram-Schmidt for r <= 2, QR for r = 3)."""
    gen = torch.Generator().manual_seed(rank)
    shapes = ((12, 9), (5,), (8, 2, 3))
    parts = []
    for s in shapes:
        rows, cols = s[0], math.prod(s) // s[0]
        if len(s) == 1:
            parts.append(torch.randn(rows, generator=gen, dtype=torch.float64))
            continue
        a = torch.randn(rows, rank, generator=gen, dtype=torch.float64)
        parts.append((a @ torch.randn(rank, cols, generator=gen, dtype=torch.float64)).flatten())
    g = torch.cat(parts).expand(WORLD, -1).clone()
    alg = PowerSGD(lr=1.0, rank=rank, min_compression_rate=1, shapes=shapes)
    assert len(alg.plan(g.shape[1]).matrices) == 2
    x = torch.zeros_like(g)
    comm = _comm()
    state = alg.step(x, g, alg.init(x, comm), comm)
    torch.testing.assert_close(-x, g, rtol=0, atol=1e-12)
    torch.testing.assert_close(state.error, torch.zeros_like(g), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {"rank": 1},
        {"rank": 2, "start_iter": 3},
        {"rank": 3, "warm_start": False, "min_compression_rate": 0.5},
    ],
    ids=["rank1", "rank2-start3", "rank3-cold"],
)
def test_error_feedback_loses_nothing(options: dict) -> None:
    """Without momentum and weight decay the virtual iterate ``x - lr * mean_i e_i`` runs plain
    SGD on the averaged gradient (mean_i Delta_i = g_bar + mean_i e_i at every step), and the
    memories of the uncompressed tensors average to zero."""
    lr = 0.05
    alg = PowerSGD(lr=lr, shapes=SHAPES, **options)
    comm = _comm()
    x = _x0(WORLD)
    virtual = x.clone()
    state = alg.init(x, comm)
    unsent = alg.plan(D).uncompressed
    for g in _grads(WORLD, 15, seed=3):
        state = alg.step(x, g, state, comm)
        virtual -= lr * g.mean(0)
        torch.testing.assert_close(x - lr * state.error.mean(0), virtual, rtol=0, atol=1e-12)
        for a, b in unsent:
            assert state.error[:, a:b].mean(0).abs().max() < 1e-12
    assert state.error.abs().max() > 1e-3  # something was compressed away


@pytest.mark.parametrize(
    ("options", "rounds"), [({"rank": 2}, 3), ({"rank": 1, "min_compression_rate": 0}, 2)]
)
def test_bytes_and_rounds_per_step_follow_the_formula(options: dict, rounds: int) -> None:
    """Before start_iter one all-reduce of D values; then 2 (n - 1) / n * itemsize * (U +
    sum r' (m + k)) bytes in three all-reduces (two when nothing is sent uncompressed)."""
    n = 5
    alg = PowerSGD(lr=0.1, start_iter=2, shapes=SHAPES, **options)
    plan = alg.plan(D)
    assert plan.matrices and (plan.u_size > 0) == (rounds == 3)
    assert plan.p_size == sum(m.rows * m.rank for m in plan.matrices)
    assert plan.q_size == sum(m.cols * m.rank for m in plan.matrices)
    comm = _comm(n)
    x = _x0(n)
    state = alg.init(x, comm)
    factor = 2 * (n - 1) / n * 8
    for k, g in enumerate(_grads(n, 5)):
        before, rounds_before = comm.bytes_sent.clone(), comm.rounds
        state = alg.step(x, g, state, comm)
        size = D if k < 2 else plan.u_size + plan.p_size + plan.q_size
        assert torch.allclose(
            comm.bytes_sent - before, torch.full((n,), factor * size, dtype=torch.float64)
        )
        assert comm.rounds - rounds_before == (1 if k < 2 else rounds)
    assert state.compressed_steps == 3


def test_hook_order_of_matrices_and_compression_rule() -> None:
    """Matrices grouped by shape in order of first appearance (the order of Q's random draws);
    compressed when r' (m + k) * min_compression_rate < m k; adjacent uncompressed tensors
    travel as one range."""
    shapes = ((8, 18), (8,), (18, 16), (18,), (8, 2, 3, 3), (3, 8), (3,))
    plan = make_plan(shapes, 2, 2.0)
    assert [(m.start, m.rows, m.cols) for m in plan.matrices] == [
        (0, 8, 18),
        (458, 8, 18),
        (152, 18, 16),
    ]
    assert plan.uncompressed == ((144, 152), (440, 458), (602, 629))
    assert [m.p_offset for m in plan.matrices] == [0, 16, 32]
    assert [m.q_offset for m in plan.matrices] == [0, 36, 72]


@pytest.mark.parametrize("rank", [1, 2, 3, 5])
def test_orthogonalize_gives_orthonormal_columns_spanning_the_same_space(rank: int) -> None:
    gen = torch.Generator().manual_seed(rank)
    a = torch.randn(3, 9, rank, generator=gen, dtype=torch.float64)
    q = a.clone()
    orthogonalize(q)
    eye = torch.eye(rank, dtype=torch.float64).expand(3, rank, rank)
    torch.testing.assert_close(q.transpose(1, 2) @ q, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(q @ (q.transpose(1, 2) @ a), a, rtol=0, atol=1e-12)


@pytest.mark.parametrize("warm_start", [True, False])
def test_resume_from_serialised_state_equals_uninterrupted_run(warm_start: bool) -> None:
    """4 steps (2 plain, 2 compressed), then x, the state and the options through torch.save /
    torch.load(weights_only=True); 6 more steps equal the uninterrupted 10 bit for bit,
    including Q and the seed generator (warm_start=False draws a new Q at every step)."""
    alg = PowerSGD(lr=0.1, momentum=0.9, start_iter=2, warm_start=warm_start, shapes=SHAPES)
    grads = _grads(WORLD, 10, seed=5)

    def run(alg: PowerSGD, x: torch.Tensor, state, gs: list[torch.Tensor]):
        comm = _comm()
        for g in gs:
            state = alg.step(x, g, state, comm)
        return state

    x_full = _x0(WORLD)
    full = run(alg, x_full, alg.init(x_full, _comm()), grads)
    x = _x0(WORLD)
    state = run(alg, x, alg.init(x, _comm()), grads[:4])
    buffer = io.BytesIO()
    torch.save({"x": x, "state": state_to_dict(state), "options": alg.options()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    alg2 = make_algorithm("powersgd", **saved["options"])
    assert alg2 == alg
    x = saved["x"]
    state = run(alg2, x, state_from_dict(type(state), saved["state"]), grads[4:])
    assert torch.equal(x, x_full)
    for key, value in state_to_dict(full).items():
        other = getattr(state, key)
        assert torch.equal(other, value) if isinstance(value, torch.Tensor) else other == value


def test_unbound_shapes_mean_one_vector_sent_uncompressed() -> None:
    """Without shapes the buffer is one 1-D tensor: not compressed, the run is all-reduce."""
    alg, ref = PowerSGD(lr=0.1), AllReduceSGD(lr=0.1)
    assert alg.plan(D).uncompressed == ((0, D),)
    ca, cb = _comm(), _comm()
    xa, xb = _x0(WORLD), _x0(WORLD)
    sa, sb = alg.init(xa, ca), ref.init(xb, cb)
    for g in _grads(WORLD, 3):
        sa, sb = alg.step(xa, g, sa, ca), ref.step(xb, g, sb, cb)
    torch.testing.assert_close(xa, xb, rtol=0, atol=1e-14)
    assert torch.equal(ca.bytes_sent, cb.bytes_sent)


def test_engines_bind_the_shapes_of_the_model() -> None:
    """bind_run fills shapes (user values kept, other algorithms unchanged); the drop-in
    optimizer binds its parameters' shapes."""
    shapes = [(4, 3), (4,)]
    assert bind_run(PowerSGD(), shapes=shapes).shapes == ((4, 3), (4,))
    assert bind_run(PowerSGD(shapes=((12,),)), shapes=shapes).shapes == ((12,),)
    assert bind_run(AllReduceSGD(), shapes=shapes) == AllReduceSGD()
    from peergrad.optim import DistributedOptimizer

    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    opt = DistributedOptimizer(
        model.parameters(), "powersgd", SimulatedCommunicator(make_topology("ring", 1))
    )
    assert opt.algorithm.shapes == ((5, 6), (5,), (3, 5), (3,))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rank": 0}, r"rank must be an integer >= 1, got 0"),
        ({"rank": -2}, r"rank must be an integer >= 1"),
        ({"rank": 1.5}, r"rank must be an integer, got 1.5"),
        ({"rank": True}, r"rank must be an integer"),
        ({"start_iter": -1}, r"start_iter must be an integer >= 0, got -1"),
        ({"min_compression_rate": -1.0}, r"min_compression_rate must be a finite number >= 0"),
        ({"min_compression_rate": float("nan")}, r"min_compression_rate must be"),
        ({"orthogonalization_epsilon": -1e-8}, r"orthogonalization_epsilon must be"),
        ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*32 - 1\]"),
        ({"rank": 10, "shapes": SHAPES}, r"rank=10 is larger than min\(rows, cols\) of every "),
        ({"rank": 10, "shapes": SHAPES}, r"rank must be in \[1, 9\]"),
    ],
)
def test_bad_options_are_rejected(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PowerSGD(**options)


def test_bad_shapes_and_state_are_rejected() -> None:
    comm = _comm()
    x = _x0(WORLD)
    with pytest.raises(ValueError, match=rf"shapes add up to {D - 1} values but x has D = {D}"):
        PowerSGD(shapes=SHAPES[:-1] + ((0,),)).init(x, comm)
    with pytest.raises(ValueError, match="rank must be in"):  # binding a model's shapes
        bind_run(PowerSGD(rank=3), shapes=[(2, 8), (2,)])
    state = PowerSGD(rank=1, shapes=SHAPES).init(x, comm)
    with pytest.raises(ValueError, match="call init again"):
        PowerSGD(rank=2, shapes=SHAPES).step(x, torch.zeros_like(x), state, comm)
    # a rank above some matrices' min(m, k) is fine while one matrix allows it
    plan = PowerSGD(rank=4, min_compression_rate=0, shapes=SHAPES).plan(D)
    assert [m.rank for m in plan.matrices] == [3, 1, 4, 1, 1]
