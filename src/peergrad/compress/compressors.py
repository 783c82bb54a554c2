"""Gradient compressors with exact wire sizes (spec compression-momentum-adam.md §2).

Every compressor is a small frozen dataclass working on the worker axis, ``x: [w, D]``:

- ``compress(x, generator=None, *, worker_ids=None, n_workers=None) -> Message``;
- ``decompress(msg) -> [w, D]`` (dense, dtype of ``x``);
- ``pack(msg) -> uint8 [w, P]``: the message as it crosses the wire (``P == nbytes(D, dtype)``),
  and ``unpack(payload [m, P], D, dtype) -> Message``, its inverse (used with
  ``comm.all_gather``);
- ``nbytes(D, dtype) -> int``: exact bytes of ONE worker's message;
- ``delta(D)``: the contraction δ (E‖C(x) − x‖² ≤ (1 − δ)‖x‖²) where one holds for every x,
  else ``None``; ``omega(D)``: the variance parameter of unbiased compressors, else ``None``;
- ``linear``: whether the messages of all workers can be averaged by ONE all-reduce of their
  values (below); then ``linear_values(msg) -> [w, m]`` and ``linear_decode(msg, v) -> [w, D]``.

Linear compressors (``linear`` True: ``identity``, ``randomk``, ``randomk-unscaled``, and
:class:`Layerwise` / :class:`Contraction` of them) satisfy two conditions at every call: (1) the
support is shared: everything in the message but its values (random-k's index set, drawn from
the seed of the generator that every worker holds in the same state) is the same on all workers,
so it need not travel; (2) decoding is linear in the values: ``linear_decode(msg, v)`` is a fixed
linear map of ``v`` (a scatter into the shared support, times a constant for
:class:`Contraction`), and ``decompress(msg) == linear_decode(msg, linear_values(msg))``. Hence
``mean_j decompress(msg_j) == linear_decode(msg, mean_j linear_values(msg_j))``: one all-reduce
of the ``[w, m]`` values (``m = k`` for random-k) replaces the all-gather of packed messages
(:func:`peergrad.comm.compressed.compressed_mean`). Top-k (worker-specific support), sign,
scaled sign, QSGD and TernGrad (per-worker scales, non-linear codes) are not linear.

Randomness comes from an explicit ``torch.Generator`` (CPU). With ``worker_ids`` and
``n_workers`` (the engine-independent form the algorithms use) a compressor that draws per-worker
noise first draws ``n_workers`` seeds from ``generator`` and seeds worker i's draws with seed
``worker_ids[i]``; the simulated engine (all rows) and the distributed engine (one row) then make
identical draws. Random-k draws ONE index set per call, shared by all workers, from a 64-bit seed
that is sent instead of the indices (in an all-gather; an all-reduce sends the values only).

Compressors (names of :data:`COMPRESSORS`), with bytes per worker (``b`` = itemsize of the
values' dtype, ``k = min(D, max(1, ceil(ratio * D)))``):

==============  =====================================================  =========================
name            C(x)                                                   nbytes(D)
==============  =====================================================  =========================
identity        x                                                      ``D * b``
topk            the k entries of largest ``|x_i|``                     ``k * (b + 4)`` (int32 ids)
randomk         (D/k) * rand_k(x): unbiased, ω = D/k − 1                ``k * b + 8`` (seed)
randomk-unscaled rand_k(x): δ = k/D in expectation                      ``k * b + 8``
sign            sign(x), with sign(0) sent as +1 (1 bit per entry)     ``ceil(D / 8)``
scaled-sign     (‖x‖₁/D) * sign(x): δ(x) = ‖x‖₁²/(D‖x‖²) ≥ 1/D          ``ceil(D / 8) + b``
qsgd            ‖x‖ sign(x_i) ξ_i(x, s) (Alistarh et al., arXiv          ``b + ceil(D (1 +
                1610.02132): unbiased, ω = min(D/s², √D/s)              ceil(log2(s+1))) / 8)``
terngrad        s sign(x_i) b_i, s = max_i |x_i|, b_i ~ Bernoulli(|x_i|   ``b + ceil(D / 4)``
                / s) (Wen et al., arXiv 1705.07878): unbiased,
                ω = (√D − 1)/2
bf16, fp16      x rounded to bfloat16 / float16 (a cast, 2 bytes each)  ``2 D``
int8            per chunk of c = 64 values (``chunk``): m = max |x|,    ``D + 4 ceil(D / c)``
                k = round(127 x / m), C(x) = (k / 127) m; float32 m
int4            the same with q = 7, codes packed two per byte          ``ceil(D / 2) +
                                                                        4 ceil(D / c)``
==============  =====================================================  =========================

Low-precision compressors (``bf16``, ``fp16``, ``int8``, ``int4``;
:mod:`peergrad.compress.lowprec`): deterministic, not linear (per-worker scales; a sum of casts
is not the cast of a sum), so averages all-gather their packed messages and decode them in
``x``'s dtype in worker order. int8/int4: error at most half a step ``m / (2 q)`` per value,
zero chunks decode to zeros, and ``C(C(x)) == C(x)`` bit for bit.

QSGD encoding: dense fixed width; the norm in the values' dtype, then per coordinate one sign bit
and the level l ∈ {0..s} in ``ceil(log2(s + 1))`` bits, all bits packed LSB first into bytes.

TernGrad encoding: the scale s = ‖x‖_∞ in the values' dtype, then 2 bits per coordinate, packed
LSB first: bit 0 is b_i (the coordinate is kept), bit 1 its sign (set only when kept, so the
codes are 0 (0), 1 (+s) and 3 (−s)). Its variance is exactly E‖C(x) − x‖² = s‖x‖₁ − ‖x‖²
(E‖C(x)‖² = Σ s²·|x_i|/s). The spec's bound s‖x‖₁ ≤ √D‖x‖² gives ω ≤ √D − 1, but the two
inequalities behind it (s ≤ ‖x‖, ‖x‖₁ ≤ √D‖x‖) are never tight together: with s = 1 and the
other entries summing to L, ‖x‖² ≥ 1 + L²/(D − 1), so s‖x‖₁/‖x‖² ≤ (1 + L)/(1 + L²/(D − 1)),
whose maximum over L is (√D + 1)/2, attained at x = (1, a, …, a) with a = 1/(√D + 1). Hence the
smallest valid ω is (√D − 1)/2, which :meth:`TernGrad.omega` returns (tight; 0 for D = 1, where
C(x) = x). Randomness: one uniform per coordinate, drawn per worker like QSGD's.

Zero input (spec §2.3 item 6): C(0) = 0 exactly for every compressor but plain ``sign`` (see
below), row by row (an all-zero worker's row decodes to 0 whatever the other rows hold) and
segment by segment under :class:`Layerwise`; nothing divides by a zero norm (QSGD's ‖x‖ and
TernGrad's s are replaced by 1 in the division when they are 0, so the levels are 0 and the
decoded values ``0 * level``).

Deviations from the spec's table: scales and norms are sent in the values' dtype (4 bytes for
float32, 8 for float64) so that float64 runs stay exact; top-k always uses int32 index coding
(the bitmap ``ceil(D/8) + k*b`` is not offered); plain ``sign`` cannot send sign(0) = 0 in one bit
and decodes exact zeros as +1 (so C(0) ≠ 0 for it: the spec's D bits per message leave no room
for a zero flag; use ``scaled-sign``, whose scale is 0, where C(0) = 0 matters); TernGrad's ω is
the tight (√D − 1)/2 rather than the spec's bound √D − 1 (see above), its codes use 2 bits (no
base-3 packing), and the paper's gradient clipping and scale sharing across workers are not
applied (per worker, per message, per segment under :class:`Layerwise`).

Layer-wise selection: :class:`Layerwise` applies a compressor to each segment of ``D`` (one per
parameter tensor) separately, e.g. top-k keeps ``ceil(ratio * D_l)`` entries of every layer l;
its message is the concatenation of the segments' messages (``nbytes = Σ_l nbytes(D_l)``).

Error feedback: :func:`for_error_feedback` gives the compressor to use inside an error-feedback
memory, :class:`Contraction` ``C / (1 + ω)`` for the unbiased ones (``randomk``, ``qsgd``,
``terngrad``; spec §2.1): error feedback needs a δ-contraction, and with the unscaled unbiased
compressor the memory grows without bound.

Raises ``ValueError`` (naming the argument) for ``ratio`` outside (0, 1], ``levels < 1``,
``chunk < 1`` and unknown names.
"""

from __future__ import annotations

import math

from peergrad.compress.base import (
    Compressor,
    Identity,
    Message,
    load_generator,
    new_generator_state,
)
from peergrad.compress.lowprec import Cast, ChunkQuant
from peergrad.compress.quantize import QSGD, Sign, TernGrad
from peergrad.compress.sparse import RandomK, TopK
from peergrad.compress.wrappers import Contraction, Layerwise, for_error_feedback

# The compressors live in modules by family since issue 25 (base: the protocol, the message and
# the identity; sparse: top-k, random-k; quantize: sign, QSGD, TernGrad; wrappers: Layerwise,
# Contraction); their names stay importable from here.
__all__ = [
    "COMPRESSORS",
    "QSGD",
    "Cast",
    "ChunkQuant",
    "Compressor",
    "Contraction",
    "Identity",
    "Layerwise",
    "Message",
    "RandomK",
    "Sign",
    "TernGrad",
    "TopK",
    "for_error_feedback",
    "load_generator",
    "make_compressor",
    "new_generator_state",
]


COMPRESSORS: tuple[str, ...] = (
    "identity",
    "topk",
    "randomk",
    "randomk-unscaled",
    "sign",
    "scaled-sign",
    "qsgd",
    "terngrad",
    "bf16",
    "fp16",
    "int8",
    "int4",
)


def make_compressor(
    name: str, ratio: float = 0.01, levels: int = 16, chunk: int = 64
) -> Compressor:
    """The compressor ``name`` (one of :data:`COMPRESSORS`).

    ``ratio`` (in (0, 1]) is the kept fraction for top-k / random-k; ``levels`` (>= 1) is QSGD's
    s; ``chunk`` (>= 1) is the number of values per scale of int8 / int4. All three are
    validated for every name so that a bad option never passes silently.
    """
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and 0 < ratio <= 1):
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    if not (isinstance(levels, int) and not isinstance(levels, bool) and levels >= 1):
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    if not (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 1):
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    if name == "identity":
        return Identity()
    if name == "topk":
        return TopK(ratio=ratio)
    if name == "randomk":
        return RandomK(ratio=ratio, scaled=True)
    if name == "randomk-unscaled":
        return RandomK(ratio=ratio, scaled=False)
    if name == "sign":
        return Sign(scaled=False)
    if name == "scaled-sign":
        return Sign(scaled=True)
    if name == "qsgd":
        return QSGD(levels=levels)
    if name == "terngrad":
        return TernGrad()
    if name in ("bf16", "fp16"):
        return Cast(fmt=name)
    if name in ("int8", "int4"):
        return ChunkQuant(bits=int(name[3:]), chunk=chunk)
    if name == "powersgd":
        raise ValueError(
            "compressor 'powersgd' is not available to the compressed methods: PowerSGD's rank-r "
            "approximation is biased (a contraction only with its own error feedback and a Q "
            "warm-started across steps), so without that memory (compressed-sgd, memory=false) it "
            "does not converge and choco-sgd/ef-sgd cannot rebuild its state; use "
            f"--algorithm powersgd (set rank=r); compressor must be one of {', '.join(COMPRESSORS)}"
        )
    raise ValueError(f"compressor must be one of {', '.join(COMPRESSORS)}; got {name!r}")
