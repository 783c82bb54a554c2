"""Compressors (spec compression-momentum-adam.md §2.3): identity limits, contraction,
unbiasedness by Monte Carlo, exact byte sizes, zero input, determinism, wire round trip."""

from __future__ import annotations

import math

import pytest
import torch

from peergrad.compress import (
    COMPRESSORS,
    QSGD,
    Contraction,
    Identity,
    Layerwise,
    RandomK,
    Sign,
    TernGrad,
    TopK,
    for_error_feedback,
    make_compressor,
)

F64 = torch.float64


def _x(w: int = 3, d: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randn(w, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("name", COMPRESSORS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_pack_is_the_exact_wire_size_and_round_trips(name: str, dtype: torch.dtype) -> None:
    c = make_compressor(name, ratio=0.1, levels=5)
    for d in (1, 7, 1000):
        x = _x(2, d).to(dtype)
        msg = c.compress(x, torch.Generator().manual_seed(1))
        payload = c.pack(msg)
        assert payload.dtype == torch.uint8 and payload.shape == (2, c.nbytes(d, dtype))
        assert torch.equal(c.decompress(c.unpack(payload, d, dtype)), c.decompress(msg))


def test_byte_formulas() -> None:
    d = 1000
    assert make_compressor("identity").nbytes(d, torch.float32) == 4000
    assert TopK(ratio=0.01).nbytes(d, torch.float32) == 10 * (4 + 4)
    assert TopK(ratio=0.01).nbytes(d, F64) == 10 * (8 + 4)
    assert RandomK(ratio=0.01).nbytes(d, torch.float32) == 10 * 4 + 8
    assert Sign(scaled=False).nbytes(d, torch.float32) == 125
    assert Sign(scaled=True).nbytes(7, torch.float32) == 1 + 4
    assert QSGD(levels=1).nbytes(d, torch.float32) == 4 + math.ceil(d * 2 / 8)
    assert QSGD(levels=16).nbytes(7, torch.float32) == 4 + math.ceil(7 * 6 / 8)
    assert TopK(ratio=0.01).nbytes(2**20, torch.float32) == math.ceil(0.01 * 2**20) * 8
    # TernGrad: the scale s in the values' dtype + 2 bits per coordinate (spec: 2d + 32 bits)
    for d, packed in ((1, 1), (7, 2), (1000, 250), (2**20, 2**18)):
        assert TernGrad().nbytes(d, torch.float32) == 4 + packed
        assert TernGrad().nbytes(d, F64) == 8 + packed


@pytest.mark.parametrize("name", ["topk", "randomk", "randomk-unscaled"])
def test_k_equal_d_is_the_identity(name: str) -> None:
    x = _x()
    c = make_compressor(name, ratio=1.0)
    assert torch.equal(c(x, torch.Generator().manual_seed(0)), x)


def test_qsgd_with_many_levels_is_nearly_the_identity() -> None:
    x = _x()
    y = QSGD(levels=2**20)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(y, x, rtol=0, atol=1e-5 * float(x.norm()))


@pytest.mark.parametrize("ratio", [0.02, 0.1, 0.5])
def test_topk_contraction_holds_deterministically(ratio: float) -> None:
    d = 50
    spike = torch.zeros(1, d, dtype=F64)
    spike[0, 3] = 5.0
    for x in (_x(4, d), torch.ones(1, d, dtype=F64), spike):
        c = TopK(ratio=ratio)
        err = ((c(x) - x) ** 2).sum(dim=1)
        assert (err <= (1 - c.delta(d)) * (x**2).sum(dim=1) * (1 + 1e-12)).all()


def test_scaled_sign_error_is_exact() -> None:
    x = _x(4, 30)
    err = ((Sign(scaled=True)(x) - x) ** 2).sum(dim=1)
    expected = (x**2).sum(dim=1) - x.abs().sum(dim=1) ** 2 / 30
    assert torch.allclose(err, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("c", [RandomK(ratio=0.2), QSGD(levels=2), QSGD(levels=1), TernGrad()])
def test_unbiased_compressors_by_monte_carlo(c) -> None:
    d, m = 20, 10_000
    x = _x(1, d)
    gen = torch.Generator().manual_seed(7)
    draws = torch.cat([c(x, gen) for _ in range(m)])
    mean, se = draws.mean(dim=0), draws.std(dim=0) / math.sqrt(m)
    assert ((mean - x[0]).abs() <= 5 * se + 1e-12).all()
    ratio = float(((draws - x) ** 2).sum(dim=1).mean() / (x**2).sum())
    assert ratio <= c.omega(d) * 1.05


@pytest.mark.parametrize("inner", [RandomK(ratio=0.2), QSGD(levels=2), QSGD(levels=1), TernGrad()])
def test_unbiased_divided_by_one_plus_omega_is_a_contraction_by_monte_carlo(inner) -> None:
    """Spec §2.1: C / (1 + ω) is a δ-contraction with δ = 1/(1 + ω), E‖C'(x) − x‖² ≤ (1 − δ)‖x‖²
    (what error feedback needs; C itself only has E‖C(x) − x‖² ≤ ω‖x‖², and ω ≥ 1 here)."""
    d, m = 20, 10_000
    c = Contraction(inner)
    assert c.delta(d) == 1 / (1 + inner.omega(d)) and c.omega(d) is None and not c.unbiased
    x = _x(1, d)
    gen = torch.Generator().manual_seed(7)
    err = torch.stack([((c(x, gen) - x) ** 2).sum() for _ in range(m)]).mean() / (x**2).sum()
    assert inner.omega(d) >= 1 and float(err) <= (1 - c.delta(d)) * 1.05


def test_contraction_keeps_the_message_and_divides_the_decoded_values() -> None:
    d, x = 30, _x(2, 30)
    c = Contraction(RandomK(ratio=0.2))  # ω = D/k − 1: C / (1 + ω) is unscaled random-k
    a = c(x, torch.Generator().manual_seed(4))
    b = RandomK(ratio=0.2, scaled=False)(x, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-15)
    q = Contraction(QSGD(levels=3))
    msg = q.compress(x, torch.Generator().manual_seed(4))
    assert q.nbytes(d, F64) == QSGD(levels=3).nbytes(d, F64)
    assert torch.equal(q.pack(msg), QSGD(levels=3).pack(msg))
    assert torch.equal(q.decompress(msg), QSGD(levels=3).decompress(msg) / (1 + q.inner.omega(d)))
    with pytest.raises(ValueError, match="inner must be an unbiased compressor"):
        Contraction(TopK(ratio=0.1))


def test_for_error_feedback_wraps_exactly_the_unbiased_compressors() -> None:
    for name in ("identity", "topk", "randomk-unscaled", "sign", "scaled-sign"):
        c = make_compressor(name, ratio=0.1)
        assert for_error_feedback(c) is c
    assert for_error_feedback(make_compressor("randomk")) == Contraction(RandomK(ratio=0.01))
    assert for_error_feedback(QSGD(levels=4)) == Contraction(QSGD(levels=4))
    assert for_error_feedback(make_compressor("terngrad")) == Contraction(TernGrad())
    assert TernGrad().delta(20) is None and TernGrad().unbiased
    lw = for_error_feedback(Layerwise(QSGD(levels=2), (4, 16)))  # each layer its own ω
    assert lw == Layerwise(Contraction(QSGD(levels=2)), (4, 16))
    assert lw.delta(20) == min(1 / (1 + QSGD(levels=2).omega(s)) for s in (4, 16))
    assert isinstance(for_error_feedback(Identity()), Identity)


@pytest.mark.parametrize("name", [n for n in COMPRESSORS if n != "sign"])
def test_zero_input_gives_zero(name: str) -> None:
    z = torch.zeros(2, 9, dtype=F64)
    out = make_compressor(name, ratio=0.3)(z, torch.Generator().manual_seed(0))
    assert torch.equal(out, z)


@pytest.mark.parametrize("name", COMPRESSORS)
def test_same_generator_state_gives_same_message(name: str) -> None:
    c = make_compressor(name, ratio=0.2, levels=3)
    x = _x()
    a = c(x, torch.Generator().manual_seed(5))
    b = c(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_per_worker_draws_do_not_depend_on_the_engine() -> None:
    """All rows at once (simulated) equals one row per call (distributed), row by row."""
    x = _x(4, 25)
    for c in (QSGD(levels=3), RandomK(ratio=0.2), TernGrad()):
        ids = torch.arange(4)
        full = c.decompress(
            c.compress(x, torch.Generator().manual_seed(3), worker_ids=ids, n_workers=4)
        )
        for i in range(4):
            one = c.compress(
                x[i : i + 1],
                torch.Generator().manual_seed(3),
                worker_ids=ids[i : i + 1],
                n_workers=4,
            )
            assert torch.equal(c.decompress(one), full[i : i + 1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "topk", "ratio": 0.0}, "ratio"),
        ({"name": "topk", "ratio": 1.5}, "ratio"),
        ({"name": "qsgd", "levels": 0}, "levels"),
        ({"name": "nope"}, "compressor"),
    ],
)
def test_invalid_options_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_compressor(**kwargs)


# ------------------------------------------------------------------- layer-wise selection
SEGMENTS = (7, 30, 1, 12)


@pytest.mark.parametrize("name", [n for n in COMPRESSORS if n != "identity"])
def test_layerwise_is_the_concatenation_of_per_segment_messages(name: str) -> None:
    inner = make_compressor(name, ratio=0.1, levels=5)
    lw = Layerwise(inner, SEGMENTS)
    x = _x(3, sum(SEGMENTS))
    ids = torch.arange(3)
    msg = lw.compress(x, torch.Generator().manual_seed(4), worker_ids=ids, n_workers=3)
    gen = torch.Generator().manual_seed(4)  # same draws, segment after segment
    pieces, a = [], 0
    for s in SEGMENTS:
        part = inner.compress(x[:, a : a + s], gen, worker_ids=ids, n_workers=3)
        pieces.append(inner.decompress(part))
        a += s
    assert torch.equal(lw.decompress(msg), torch.cat(pieces, dim=1))
    payload = lw.pack(msg)
    assert payload.shape == (3, lw.nbytes(sum(SEGMENTS), F64))
    assert lw.nbytes(sum(SEGMENTS), F64) == sum(inner.nbytes(s, F64) for s in SEGMENTS)
    assert torch.equal(lw.decompress(lw.unpack(payload, sum(SEGMENTS), F64)), lw.decompress(msg))
    assert lw.unbiased == inner.unbiased


def test_layerwise_topk_keeps_ceil_ratio_of_every_segment_and_the_worst_delta() -> None:
    lw = Layerwise(TopK(ratio=0.1), SEGMENTS)
    x = _x(2, sum(SEGMENTS))
    x[:, :7] *= 1000  # whole-model top-k would spend every kept entry on the first layer
    kept = lw(x) != 0
    bounds = [0, 7, 37, 38, 50]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        assert (kept[:, lo:hi].sum(dim=1) == math.ceil(0.1 * (hi - lo))).all()
    assert lw.delta(50) == pytest.approx(min(math.ceil(0.1 * s) / s for s in SEGMENTS))
    assert (TopK(ratio=0.1)(x) != 0)[:, 7:].sum() == 0


def test_layerwise_rejects_bad_layouts() -> None:
    with pytest.raises(ValueError, match="segments"):
        Layerwise(TopK(), ())
    with pytest.raises(ValueError, match="segments"):
        Layerwise(TopK(), (3, 0))
    with pytest.raises(ValueError, match="segments sum to 50"):
        Layerwise(TopK(), SEGMENTS).compress(_x(1, 49))


# ------------------------------------------------------------------- TernGrad (Wen et al. 2017)
def _terngrad_variance(x: torch.Tensor) -> torch.Tensor:
    """Exact E‖C(x) − x‖² per row: s‖x‖₁ − ‖x‖² with s = ‖x‖_∞."""
    return x.abs().amax(dim=1) * x.abs().sum(dim=1) - (x**2).sum(dim=1)


def test_terngrad_is_ternary_with_the_max_norm_scale_and_the_signs_of_x() -> None:
    x = _x(4, 300)
    y = TernGrad()(x, torch.Generator().manual_seed(2))
    s = x.abs().amax(dim=1, keepdim=True)
    assert bool(((y == 0) | (y == s) | (y == -s)).all())
    assert bool((torch.sign(y[y != 0]) == torch.sign(x[y != 0])).all())
    spike = torch.zeros(1, 9, dtype=F64)
    spike[0, 4] = -3.0  # |x_i| = s: kept with probability 1; zeros never kept
    assert torch.equal(TernGrad()(spike, torch.Generator().manual_seed(0)), spike)
    one = torch.tensor([[-0.7], [2.5]], dtype=F64)  # D = 1: C(x) = x, ω = 0
    assert torch.equal(TernGrad()(one, torch.Generator().manual_seed(0)), one)
    assert TernGrad().omega(1) == 0.0


def test_terngrad_pack_uses_two_bits_per_coordinate_and_round_trips() -> None:
    c = TernGrad()
    x = _x(3, 13).to(torch.float32)
    msg = c.compress(x, torch.Generator().manual_seed(1))
    payload = c.pack(msg)
    assert payload.shape == (3, 4 + 4)  # float32 scale + ceil(26 / 8) bytes
    back = c.unpack(payload, 13, torch.float32)
    assert torch.equal(back.scale, msg.scale) and torch.equal(back.levels, msg.levels)
    assert torch.equal(back.signs, msg.signs) and torch.equal(c.decompress(back), c.decompress(msg))
    code = (payload[:, 4:].to(torch.int64).unsqueeze(-1) >> torch.arange(8)) & 1
    pairs = code.reshape(3, -1)[:, :26].reshape(3, 13, 2)  # LSB first: (kept, negative)
    assert torch.equal(pairs[..., 0], msg.levels) and torch.equal(pairs[..., 1].bool(), msg.signs)
    assert not bool((pairs[..., 1] & (1 - pairs[..., 0])).any())  # codes 0, 1 (+s), 3 (−s)


def test_terngrad_variance_is_exact_and_bounded_by_its_tight_omega() -> None:
    """E‖C(x) − x‖² = s‖x‖₁ − ‖x‖² (checked by Monte Carlo within 5 standard errors) and
    ≤ ω‖x‖² with ω = (√D − 1)/2 on many random vectors (Gaussian, sparse, heavy-tailed,
    constant), with equality at x = (1, a, …, a), a = 1/(√D + 1); the spec's √D − 1 is twice it."""
    d, m = 20, 10_000
    x = _x(1, d, seed=3)
    gen = torch.Generator().manual_seed(9)
    errs = torch.stack([((TernGrad()(x, gen) - x) ** 2).sum() for _ in range(m)])
    exact = float(_terngrad_variance(x)[0])
    assert abs(float(errs.mean()) - exact) <= 5 * float(errs.std()) / math.sqrt(m)
    g = torch.Generator().manual_seed(4)
    for D in (2, 5, 20, 1000):
        omega = TernGrad().omega(D)
        assert omega == pytest.approx((math.sqrt(D) - 1) / 2, rel=1e-15)
        gauss = torch.randn(500, D, generator=g, dtype=F64)
        sparse = gauss * (torch.rand(500, D, generator=g, dtype=F64) < 0.1)
        heavy = torch.randn(500, D, generator=g, dtype=F64) ** 5
        for xs in (gauss, sparse, heavy, torch.ones(1, D, dtype=F64)):
            xs = xs[(xs != 0).any(dim=1)]
            ratio = _terngrad_variance(xs) / (xs**2).sum(dim=1)
            assert bool((ratio <= omega * (1 + 1e-12)).all()), (D, float(ratio.max()))
        worst = torch.full((1, D), 1 / (math.sqrt(D) + 1), dtype=F64)
        worst[0, 0] = 1.0
        ratio = float(_terngrad_variance(worst)[0] / (worst**2).sum())
        assert ratio == pytest.approx(omega, rel=1e-12) and ratio < math.sqrt(D) - 1


# ------------------------------------------------------------------- linear compressors
def test_linear_is_declared_for_exactly_the_shared_support_compressors() -> None:
    linear = {"identity", "randomk", "randomk-unscaled"}
    for name in COMPRESSORS:
        c = make_compressor(name, ratio=0.1)
        assert c.linear == (name in linear), name
        assert Layerwise(c, SEGMENTS).linear == c.linear
        assert for_error_feedback(c).linear == c.linear
    assert Contraction(RandomK(ratio=0.1)).linear and not Contraction(TernGrad()).linear
    with pytest.raises(ValueError, match="'topk' is not linear"):
        TopK().linear_values(TopK().compress(_x()))


@pytest.mark.parametrize(
    "c",
    [
        Identity(),
        RandomK(ratio=0.1),
        RandomK(ratio=0.1, scaled=False),
        Contraction(RandomK(ratio=0.1)),
        Layerwise(RandomK(ratio=0.1), SEGMENTS),
        Layerwise(Contraction(RandomK(ratio=0.2)), SEGMENTS),
    ],
    ids=lambda c: c.name if not isinstance(c, Layerwise) else f"layerwise-{c.inner.name}",
)
def test_linear_decode_of_the_values_is_decompress(c) -> None:
    """``decompress(msg) == linear_decode(msg, linear_values(msg))`` bit for bit, and decoding
    the workers' mean values equals the mean of the decoded messages (up to summation order)."""
    x = _x(5, sum(SEGMENTS))
    msg = c.compress(x, torch.Generator().manual_seed(6), worker_ids=torch.arange(5), n_workers=5)
    values = c.linear_values(msg)
    assert values.shape[0] == 5 and values.shape[1] <= sum(SEGMENTS)
    assert torch.equal(c.linear_decode(msg, values), c.decompress(msg))
    mean = c.linear_decode(msg, values.mean(dim=0, keepdim=True))
    dense = c.decompress(msg).mean(dim=0, keepdim=True)  # entries up to ~30 (D/k scaling)
    torch.testing.assert_close(mean, dense, rtol=0, atol=1e-13)  # a few ulps: summation order
