"""Low-precision compressors (issue 28): ``bf16``, ``fp16`` (casts) and ``int8``, ``int4``
(symmetric absmax quantization per chunk, float32 scales).

Exact wire sizes, the wire layout, pack/unpack round trips, the half-step error bound, zero
chunks, idempotence ``C(C(x)) == C(x)`` (what makes the reduce-scatter exchange's first phase
lossless for them), the contraction δ, the registry and use by the compressed methods.
"""

from __future__ import annotations

import math

import pytest
import torch

from _helpers import run_quadratics
from peergrad.algorithms import make_algorithm
from peergrad.compress import COMPRESSORS, Cast, ChunkQuant, make_compressor

F64, F32 = torch.float64, torch.float32
LOW = ("bf16", "fp16", "int8", "int4")


def _x(w: int, d: int, dtype: torch.dtype = F64, seed: int = 0) -> torch.Tensor:
    return torch.randn(w, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_registered_and_built_by_name() -> None:
    assert set(LOW) <= set(COMPRESSORS)
    assert make_compressor("bf16") == Cast("bf16") and make_compressor("fp16") == Cast("fp16")
    assert make_compressor("int8") == ChunkQuant(bits=8, chunk=64)
    assert make_compressor("int4", chunk=16) == ChunkQuant(bits=4, chunk=16)
    for name in LOW:
        c = make_compressor(name)
        assert c.name == name and not c.linear and not c.stochastic and not c.unbiased
    assert make_compressor("int8", chunk=32).alignment == 32 and Cast("bf16").alignment == 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: make_compressor("int8", chunk=0), "chunk must be an integer >= 1, got 0"),
        (lambda: make_compressor("topk", chunk=1.5), "chunk must be an integer >= 1, got 1.5"),
        (lambda: ChunkQuant(bits=8, chunk=True), "chunk must be an integer >= 1"),
        (lambda: ChunkQuant(bits=2), "bits must be 4 or 8, got 2"),
        (lambda: Cast("fp8"), "fmt must be one of bf16, fp16; got 'fp8'"),
    ],
)
def test_bad_options_are_one_line_errors(build, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("chunk", [1, 5, 64])
@pytest.mark.parametrize("name", LOW)
def test_exact_wire_size_and_round_trip(name: str, chunk: int, dtype: torch.dtype) -> None:
    c = make_compressor(name, chunk=chunk)
    for d in (1, 2, 7, 63, 64, 65, 1000):
        scales = 4 * math.ceil(d / chunk)
        expected = {"bf16": 2 * d, "fp16": 2 * d, "int8": d + scales}
        expected["int4"] = math.ceil(d / 2) + scales
        assert c.nbytes(d, dtype) == expected[name]
        x = _x(3, d, dtype, seed=d)
        msg = c.compress(x)
        payload = c.pack(msg)
        assert payload.dtype == torch.uint8 and payload.shape == (3, expected[name])
        back = c.unpack(payload, d, dtype)
        assert torch.equal(c.decompress(back), c.decompress(msg))
        assert torch.equal(c.pack(back), payload)  # the bytes themselves round-trip
        assert c.decompress(msg).dtype == dtype


def test_int4_wire_layout_two_codes_per_byte_then_float32_scales() -> None:
    """Codes k in [-7, 7] travel as k + 8, the even index in the low nibble; then the scales."""
    c = ChunkQuant(bits=4, chunk=4)
    x = torch.tensor([[-2.0, 2.0, 0.0, 1.0, 0.5]], dtype=F64)  # chunks [-2, 2, 0, 1], [0.5]
    msg = c.compress(x)
    assert msg.levels.tolist() == [[-7, 7, 0, 4, 7]]  # round(1 / 2 * 7) = round(3.5) = 4 (even)
    assert msg.scale.dtype == F32 and msg.scale.tolist() == [[2.0, 0.5]]
    payload = c.pack(msg)
    codes = [1 | (15 << 4), 8 | (12 << 4), 15]
    scales = torch.tensor([[2.0, 0.5]], dtype=F32).view(torch.uint8)[0].tolist()
    assert payload[0].tolist() == codes + scales
    assert c.decompress(msg).tolist() == [[-2.0, 2.0, 0.0, 8 / 7, 0.5]]
    int8 = ChunkQuant(bits=8, chunk=4).pack(ChunkQuant(bits=8, chunk=4).compress(x))
    assert int8[0, :5].view(torch.int8).tolist() == [-127, 127, 0, 64, 127]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("bits", [8, 4])
def test_error_is_at_most_half_a_step_and_codes_stay_in_range(bits: int, dtype: torch.dtype):
    chunk, w, d = 16, 4, 208
    c = ChunkQuant(bits=bits, chunk=chunk)
    q = c.qmax
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(w, d, generator=g, dtype=dtype) * torch.rand(w, 1, generator=g, dtype=dtype)
    x[1] = x[1] ** 5  # heavy tails: one value dominates its chunk
    msg = c.compress(x)
    assert msg.levels.dtype == torch.int8 and int(msg.levels.abs().max()) == q
    assert int(msg.levels.abs().min()) >= 0 and bool((msg.levels.abs() <= q).all())
    m = x.abs().reshape(w, -1, chunk).amax(dim=2)  # d is a multiple of chunk here
    assert torch.equal(msg.scale, m.to(F32))
    err = (c.decompress(msg) - x).abs().reshape(w, -1, chunk)
    step = msg.scale.to(dtype) / q
    bound = step / 2 + 1e-6 * m  # float32 rounding of m and of the arithmetic
    assert bool((err <= bound.unsqueeze(2)).all())
    assert float((err / step.unsqueeze(2)).max()) > 0.45  # rounds to nearest: the bound is tight
    # the largest value of every chunk decodes to ±m exactly (float32 m)
    top = x.abs().reshape(w, -1, chunk).argmax(dim=2, keepdim=True)
    decoded = c.decompress(msg).abs().reshape(w, -1, chunk).gather(2, top).squeeze(2)
    assert torch.equal(decoded, msg.scale.to(dtype))


@pytest.mark.parametrize("dtype", [F32, F64])
def test_casts_round_to_nearest_with_the_format_precision(dtype: torch.dtype) -> None:
    x = _x(3, 500, dtype) * 100
    for name, wire, unit in (("bf16", torch.bfloat16, 2.0**-8), ("fp16", torch.float16, 2.0**-11)):
        c = make_compressor(name)
        out = c(x)
        assert torch.equal(out, x.to(wire).to(dtype))
        assert bool(((out - x).abs() <= unit * x.abs()).all())
        assert c.delta(500) is None and c.omega(500) is None


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", LOW)
def test_zero_chunks_and_rows_decode_to_zeros_without_nan(name: str, dtype: torch.dtype) -> None:
    c = make_compressor(name, chunk=8)
    x = _x(3, 40, dtype)
    x[0] = 0.0  # a zero worker row
    x[1, 8:16] = 0.0  # a zero chunk
    out = c.decompress(c.unpack(c.pack(c.compress(x)), 40, dtype))
    assert bool(torch.isfinite(out).all())
    assert torch.equal(out[0], torch.zeros(40, dtype=dtype))
    assert torch.equal(out[1, 8:16], torch.zeros(8, dtype=dtype))
    assert torch.equal(out[2], c(x[2:3])[0])  # rows are compressed independently
    if name.startswith("int"):
        assert float(out[1, :8].abs().min()) >= 0 and bool((c.compress(x).scale[0] == 0).all())


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", LOW)
def test_compressing_a_decoded_message_again_changes_nothing(name: str, dtype: torch.dtype):
    """``C(C(x)) == C(x)`` bit for bit, also piece by piece at multiples of the alignment (the
    reduce-scatter exchange's shards): its first phase then sends exactly the decoded message."""
    c = make_compressor(name, chunk=8)
    x = _x(4, 101, dtype, seed=3) * 10
    once = c(x)
    assert torch.equal(c(once), once)
    a = 3 * c.alignment
    pieces = torch.cat([c(once[:, :a]), c(once[:, a:])], dim=1)
    assert torch.equal(pieces, once)


@pytest.mark.parametrize(("bits", "chunk"), [(8, 64), (8, 1000), (4, 16), (4, 64)])
def test_int_quantization_is_a_delta_contraction(bits: int, chunk: int) -> None:
    c = ChunkQuant(bits=bits, chunk=chunk)
    d = 300
    delta = c.delta(d)
    assert delta is not None and delta == 1 - 1.001 * min(chunk, d) / (4 * c.qmax**2)
    g = torch.Generator().manual_seed(1)
    worst = torch.full((1, d), 1.0 / (2 * c.qmax), dtype=F64)  # every value half a step off
    worst[0, :: min(chunk, d)] = 1.0
    for x in (torch.randn(200, d, generator=g, dtype=F64) ** 3, worst):
        err = ((c(x) - x) ** 2).sum(dim=1)
        assert bool((err <= (1 - delta) * (x**2).sum(dim=1)).all())
    assert ChunkQuant(bits=4, chunk=256).delta(1000) is None  # c / (4 q²) >= 1: no guarantee


@pytest.mark.parametrize("method", ["ef-sgd", "compressed-sgd", "choco-sgd"])
def test_compressed_methods_run_with_every_low_precision_compressor(method: str) -> None:
    """Every compressed method accepts them by name; int8 on the quadratics follows the
    identity compressor's run closely, and bytes per step are the packed messages."""
    n, d, steps = 4, 10, 30
    reference, _, _ = run_quadratics(
        make_algorithm(method, lr=0.05, compressor="identity"), n=n, d=d, steps=steps
    )
    for name in LOW:
        x, _, comm = run_quadratics(
            make_algorithm(method, lr=0.05, compressor=name), n=n, d=d, steps=steps
        )
        assert bool(torch.isfinite(x).all()), name
        scale = float(reference.abs().max())
        tolerance = {"int4": 0.5, "int8": 0.05}.get(name, 0.02) * scale
        assert float((x - reference).abs().max()) < tolerance, name
        assert float(comm.bytes_sent[0]) > 0
