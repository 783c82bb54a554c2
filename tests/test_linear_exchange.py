"""Averaging linear compressors by one all-reduce (issue 16): ``compressed_mean(..., exchange=)``.

Random-k draws one index set per step from the generator every worker holds in the same state,
so only its k values need to travel: one all-reduce of ``[w, k]`` values, ``2 (n - 1) / n * k *
itemsize`` bytes per worker, instead of an all-gather of packed messages, ``(n - 1) * (k *
itemsize + 8)``. The two exchanges give the same average (float64, up to summation order), the
all-reduce is what ``auto`` picks for linear compressors, error feedback's ``C / (1 + ω)`` stays
linear, and bad ``exchange`` values are one-line errors. The distributed engine's wire log is
checked in ``test_wire_bytes.py``; engine parity in ``test_engine_parity.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from _helpers import run_quadratics
from peergrad.algorithms import EFSGD, ArmijoCSGD, CompressedSGD, make_algorithm
from peergrad.comm import SimulatedCommunicator
from peergrad.comm.compressed import compressed_mean
from peergrad.compress import (
    Compressor,
    Contraction,
    Identity,
    Layerwise,
    RandomK,
    for_error_feedback,
    make_compressor,
)
from peergrad.topology import make_topology

F64 = torch.float64
SEGMENTS = (7, 30, 1, 12)


def _comm(n: int) -> SimulatedCommunicator:
    return SimulatedCommunicator(make_topology("ring", n))


def _exchange(c: Compressor, x: torch.Tensor, exchange: str) -> tuple[torch.Tensor, float]:
    """``compressed_mean`` of ``c``'s message of ``x`` (seed 6): the average and the bytes
    each worker sent."""
    n = x.shape[0]
    comm = _comm(n)
    msg = c.compress(x, torch.Generator().manual_seed(6), worker_ids=torch.arange(n), n_workers=n)
    out = compressed_mean(comm, c, msg, exchange=exchange)
    assert torch.equal(comm.bytes_sent, comm.bytes_sent[:1].expand(n))
    return out.clone(), float(comm.bytes_sent[0])


#: (linear compressor, k = the values each worker sends) for D = 50 = sum(SEGMENTS)
LINEAR = [
    (RandomK(ratio=0.1), 5),
    (RandomK(ratio=0.05, scaled=False), 3),  # ceil(2.5)
    (Contraction(RandomK(ratio=0.1)), 5),  # error feedback's C / (1 + ω)
    (Layerwise(RandomK(ratio=0.1), SEGMENTS), 1 + 3 + 1 + 2),
    (Layerwise(Contraction(RandomK(ratio=0.2)), SEGMENTS), 2 + 6 + 1 + 3),
    (Identity(), 50),
]


def _id(case: tuple[Compressor, int]) -> str:
    c = case[0]
    return f"layerwise-{c.inner.name}" if isinstance(c, Layerwise) else c.name


@pytest.mark.parametrize("case", LINEAR, ids=_id)
@pytest.mark.parametrize("n", [3, 8])
def test_allreduce_equals_allgather_and_costs_2_n_minus_1_over_n_k_values(
    case: tuple[Compressor, int], n: int
) -> None:
    c, k = case
    D = sum(SEGMENTS)
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(n), dtype=F64)
    reduced, reduced_bytes = _exchange(c, x, "allreduce")
    gathered, gathered_bytes = _exchange(c, x, "allgather")
    auto, auto_bytes = _exchange(c, x, "auto")
    # the same terms, summed in the order of a [n, k] mean instead of a [n, D] one: entries are
    # at most ~40 (random-k's D/k scaling), so a few ulps
    torch.testing.assert_close(reduced, gathered, rtol=0, atol=1e-13)
    assert torch.equal(auto, reduced) and auto_bytes == reduced_bytes
    assert torch.equal(reduced, reduced[:1].expand_as(reduced))  # every worker, the same average
    # bytes: one ring all-reduce of the k values (no indices, no seed) vs (n - 1) packed messages
    assert reduced_bytes == 2 * (n - 1) / n * k * 8
    assert gathered_bytes == (n - 1) * c.nbytes(D, F64)


def test_random_k_one_percent_on_8_workers_bytes() -> None:
    """The headline figure, D = 10^5 float32 values, k = 1000: 7,000 bytes per worker and step by
    all-reduce against 28,056 by all-gather (4x; for D = 10^6: 70,000 against 280,056)."""
    x = torch.randn(8, 100_000, generator=torch.Generator().manual_seed(0))
    c = make_compressor("randomk", ratio=0.01)
    _, reduced = _exchange(c, x, "auto")
    _, gathered = _exchange(c, x, "allgather")
    assert reduced == 2 * 7 / 8 * 1000 * 4 == 7000
    assert gathered == 7 * (1000 * 4 + 8) == 28056


@pytest.mark.parametrize("name", ["topk", "sign", "scaled-sign", "qsgd", "terngrad"])
def test_auto_all_gathers_the_compressors_that_are_not_linear(name: str) -> None:
    c = make_compressor(name, ratio=0.1, levels=3)
    x = torch.randn(4, 50, generator=torch.Generator().manual_seed(1), dtype=F64)
    auto, auto_bytes = _exchange(c, x, "auto")
    gathered, gathered_bytes = _exchange(c, x, "allgather")
    assert torch.equal(auto, gathered) and auto_bytes == gathered_bytes == 3 * c.nbytes(50, F64)
    with pytest.raises(ValueError, match="exchange='allreduce' needs a linear compressor") as err:
        _exchange(c, x, "allreduce")
    assert f"{name!r} is not linear" in str(err.value) and "\n" not in str(err.value)


def test_unknown_exchange_is_a_one_line_error_naming_the_option_and_the_choices() -> None:
    x = torch.zeros(2, 10, dtype=F64)
    for c in (RandomK(ratio=0.1), make_compressor("topk")):
        with pytest.raises(ValueError) as err:
            _exchange(c, x, "ring")
        assert (
            str(err.value)
            == "exchange must be one of auto, allreduce, allgather, reduce-scatter; got 'ring'"
        )
    for name in ("ef-sgd", "compressed-sgd", "armijo-csgd"):
        with pytest.raises(ValueError, match="exchange must be one of auto, allreduce, allgather"):
            make_algorithm(name, exchange="reduce")
        with pytest.raises(ValueError, match="'topk' is not linear"):
            make_algorithm(name, compressor="topk", exchange="allreduce")
        for ok in ("auto", "allreduce", "allgather"):
            assert make_algorithm(name, compressor="randomk", exchange=ok).exchange == ok
    with pytest.raises(ValueError, match="choco-sgd gossips") as err:  # no all-reduce to pick
        make_algorithm("choco-sgd", compressor="randomk", exchange="allreduce")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("cls", [EFSGD, CompressedSGD])
@pytest.mark.parametrize("layerwise", [False, True])
def test_ef_sgd_trajectories_and_bytes_by_all_reduce_and_all_gather(
    cls: type, layerwise: bool
) -> None:
    """300 steps on the heterogeneous quadratics (n = 8, D = 50): the two exchanges give the
    same iterates (float64, summation order only), error feedback (C / (1 + ω), i.e. unscaled
    random-k, for ef-sgd) still loses nothing, and the bytes are 2 (n - 1) / n * k * 8 per step
    against (n - 1) * (k * 8 + 8)."""
    n, d, steps = 8, 50, 300
    opts = {"layerwise": True, "segments": SEGMENTS} if layerwise else {}
    runs = {}
    for exchange in ("allreduce", "allgather"):
        alg = cls(lr=0.05, compressor="randomk", ratio=0.1, exchange=exchange, **opts)
        runs[exchange] = run_quadratics(alg, n=n, d=d, steps=steps)
    (xr, problem, cr), (xg, _, cg) = runs["allreduce"], runs["allgather"]
    torch.testing.assert_close(xr, xg, rtol=0, atol=1e-12)
    k = sum(math.ceil(0.1 * s) for s in SEGMENTS) if layerwise else 5
    assert torch.equal(cr.bytes_sent, torch.full((n,), steps * 2 * (n - 1) / n * k * 8, dtype=F64))
    per_gather = (n - 1) * (k * 8 + 8 * (len(SEGMENTS) if layerwise else 1))
    assert torch.equal(cg.bytes_sent, torch.full((n,), float(steps * per_gather), dtype=F64))
    if cls is EFSGD:
        assert problem.error(xr) < 0.5


def test_error_feedback_all_reduce_step_is_unscaled_random_k_written_out() -> None:
    """One ef-sgd step with scaled random-k (memory: C / (1 + ω) = unscaled random-k) by
    all-reduce: x <- x - mean_i rand_k(lr g_i) on the shared index set, e <- lr g - rand_k(lr g);
    compressed-sgd (no memory) averages the scaled (D/k) values."""
    n, d, seed = 4, 40, 5
    g = torch.randn(n, d, generator=torch.Generator().manual_seed(2), dtype=F64)
    for cls, scale in ((EFSGD, 1.0), (CompressedSGD, 10.0)):
        alg = cls(lr=0.1, compressor="randomk", ratio=0.1, seed=seed, exchange="allreduce")
        comm = _comm(n)
        x = torch.zeros(n, d, dtype=F64)
        state = alg.step(x, g, alg.init(x, comm), comm)
        C = alg.compressor_for(d, error_feedback=alg.memory)
        assert C.linear and (isinstance(C, Contraction) == alg.memory)
        idx = RandomK(ratio=0.1).compress(g, torch.Generator().manual_seed(seed)).indices
        expected = torch.zeros(1, d, dtype=F64)
        expected[0, idx] = -(0.1 * g[:, idx] * scale).mean(dim=0)
        torch.testing.assert_close(x, expected.expand(n, d), rtol=0, atol=1e-15)
        kept = torch.zeros(n, d, dtype=F64)
        kept[:, idx] = 0.1 * g[:, idx]
        err = 0.1 * g - kept if alg.memory else torch.zeros_like(g)
        torch.testing.assert_close(state.error, err, rtol=0, atol=1e-15)
        assert float(comm.bytes_sent[0]) == 2 * 3 / 4 * 4 * 8


def test_armijo_exchanges_agree() -> None:
    """armijo-csgd passes ``exchange`` through: random-k by all-reduce equals the all-gather run
    (same accepted steps; iterates to summation order) and sends 2 (n - 1) / n * k * 8 bytes."""
    n, steps = 3, 20
    gen = torch.Generator().manual_seed(11)
    A = torch.randn(n, 20, 16, generator=gen, dtype=F64)
    b = torch.randn(n, 20, generator=gen, dtype=F64)

    def f(X: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((torch.einsum("wrd,wd->wr", A, X) - b) ** 2).mean(dim=1)

    out = {}
    for exchange in ("allreduce", "allgather"):
        alg = ArmijoCSGD(compressor="randomk", ratio=0.25, seed=3, exchange=exchange)
        comm = _comm(n)
        x = torch.zeros(n, 16, dtype=F64)
        state = alg.init(x, comm)
        for _ in range(steps):
            r = torch.einsum("wrd,wd->wr", A, x) - b
            g = torch.einsum("wr,wrd->wd", r, A) / A.shape[1]
            state = alg.step(x, g, state, comm, closure=f)
        out[exchange] = (x, state.eta, comm.bytes_sent)
    (xr, er, br), (xg, eg, bg) = out["allreduce"], out["allgather"]
    torch.testing.assert_close(xr, xg, rtol=0, atol=1e-12)
    torch.testing.assert_close(er, eg, rtol=0, atol=1e-12)
    assert float(br[0]) == pytest.approx(steps * 2 * 2 / 3 * 4 * 8, rel=1e-12, abs=0)
    assert float(bg[0]) == steps * 2 * (4 * 8 + 8)
    assert float(xr.abs().max()) > 0.01


def test_for_error_feedback_keeps_linear_compressors_linear() -> None:
    for c in (RandomK(ratio=0.1), Layerwise(RandomK(ratio=0.1), SEGMENTS), Identity()):
        assert for_error_feedback(c).linear


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ["exchange=ring"],
            "exchange must be one of auto, allreduce, allgather, reduce-scatter; got 'ring'",
        ),
        (["exchange=allreduce"], "exchange='allreduce' needs a linear compressor"),  # topk
    ],
)
def test_cli_bad_exchange_exits_2_with_one_line(
    options: list[str], expected: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from _helpers import SMALL
    from peergrad.cli import main

    sets = [a for o in options for a in ("--set", o)]
    out = tmp_path / "never"
    assert main(["train", *SMALL, "--algorithm", "ef-sgd", *sets, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and not out.exists()
