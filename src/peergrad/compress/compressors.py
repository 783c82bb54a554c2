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
==============  =====================================================  =========================

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

Raises ``ValueError`` (naming the argument) for ``ratio`` outside (0, 1], ``levels < 1`` and
unknown names.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import ClassVar, cast

import torch
from torch import Tensor


@dataclasses.dataclass
class Message:
    """A compressed message for ``w`` workers; unused fields are ``None``.

    ``values``: ``[w, k]`` (or ``[w, D]``) kept values; ``indices``: int64 ``[w, k]`` (top-k) or
    ``[k]`` (random-k, shared); ``seed``: int64 ``[1]`` (random-k); ``signs``: bool ``[w, D]``
    (True = negative); ``levels``: int64 ``[w, D]`` (QSGD's levels; TernGrad's b_i in {0, 1});
    ``scale``: ``[w]`` (norm / scale);
    ``parts``: one message per segment (:class:`Layerwise`).
    """

    D: int
    dtype: torch.dtype
    values: Tensor | None = None
    indices: Tensor | None = None
    seed: Tensor | None = None
    signs: Tensor | None = None
    levels: Tensor | None = None
    scale: Tensor | None = None
    parts: list[Message] | None = None


def _k(ratio: float, D: int) -> int:
    return min(D, max(1, math.ceil(round(ratio * D, 9))))


def _check_x(x: Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"compress: x must be [w, D], got shape {tuple(x.shape)}")


def _bytes_of(t: Tensor) -> Tensor:
    """``[w, ...]`` -> uint8 ``[w, bytes]`` (the raw little-endian representation)."""
    t = t.contiguous()
    return t.view(torch.uint8).reshape(t.shape[0], -1)


def _from_bytes(b: Tensor, dtype: torch.dtype, count: int) -> Tensor:
    """uint8 ``[m, count * itemsize]`` -> ``[m, count]`` of ``dtype``."""
    fresh = b.clone(memory_format=torch.contiguous_format)  # offset 0, aligned for the view
    return fresh.view(dtype).reshape(b.shape[0], count)


def _pack_bits(v: Tensor, bits: int) -> Tensor:
    """Non-negative ints ``[w, D]`` (< 2**bits) -> uint8 ``[w, ceil(D * bits / 8)]``, LSB first."""
    w, D = v.shape
    shifts = torch.arange(bits, device=v.device)
    flat = ((v.unsqueeze(-1) >> shifts) & 1).to(torch.uint8).reshape(w, D * bits)
    pad = (-flat.shape[1]) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(w, pad)], dim=1)
    weights = (1 << torch.arange(8, device=v.device)).to(torch.uint8)
    return (flat.reshape(w, -1, 8) * weights).sum(dim=2, dtype=torch.uint8)


def _unpack_bits(b: Tensor, bits: int, D: int) -> Tensor:
    """Inverse of :func:`_pack_bits`: uint8 ``[m, nb]`` -> int64 ``[m, D]``."""
    m = b.shape[0]
    flat = (b.to(torch.int64).unsqueeze(-1) >> torch.arange(8, device=b.device)) & 1
    flat = flat.reshape(m, -1)[:, : D * bits].reshape(m, D, bits)
    return (flat << torch.arange(bits, device=b.device)).sum(dim=2)


def _worker_generators(
    generator: torch.Generator | None, w: int, worker_ids: Tensor, n_workers: int
) -> list[torch.Generator]:
    """One generator per local row, seeded from ``generator`` by global worker id."""
    seeds = torch.randint(0, 2**62, (n_workers,), generator=generator, dtype=torch.int64)
    return [torch.Generator().manual_seed(int(seeds[int(i)])) for i in worker_ids]


def _uniforms(
    x: Tensor,
    generator: torch.Generator | None,
    worker_ids: Tensor | None,
    n_workers: int | None,
) -> Tensor:
    """U[0, 1) draws of ``x``'s shape and dtype on its device: one ``[w, D]`` draw from
    ``generator``, or with ``worker_ids`` and ``n_workers`` row i from worker i's own generator
    (:func:`_worker_generators`: identical draws on both engines)."""
    w, D = x.shape
    if worker_ids is None or n_workers is None:
        return torch.rand(w, D, generator=generator, dtype=x.dtype).to(x.device)
    gens = _worker_generators(generator, w, worker_ids, n_workers)
    return torch.stack([torch.rand(D, generator=g, dtype=x.dtype) for g in gens]).to(x.device)


@dataclasses.dataclass(frozen=True)
class Compressor:
    """Base class; see the module docstring for the protocol.

    ``linear`` (default False) declares that the workers' messages can be averaged by one
    all-reduce of :meth:`linear_values`: the support (everything but the values) is the same on
    every worker at a call, and :meth:`linear_decode` is linear in the values. A linear
    compressor keeps its values in ``Message.values`` and implements both methods.
    """

    name: ClassVar[str] = ""
    unbiased: ClassVar[bool] = False
    linear: ClassVar[bool] = False

    def compress(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        *,
        worker_ids: Tensor | None = None,
        n_workers: int | None = None,
    ) -> Message:
        raise NotImplementedError

    def decompress(self, msg: Message) -> Tensor:
        raise NotImplementedError

    def pack(self, msg: Message) -> Tensor:
        raise NotImplementedError

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        raise NotImplementedError

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        raise NotImplementedError

    def delta(self, D: int) -> float | None:
        return None

    def omega(self, D: int) -> float | None:
        return None

    def linear_values(self, msg: Message) -> Tensor:
        """The ``[w, m]`` values whose mean over the workers, decoded by :meth:`linear_decode`,
        is the mean of the decoded messages (linear compressors only; ``ValueError`` else)."""
        raise ValueError(f"compressor {self.name!r} is not linear (no shared support)")

    def linear_decode(self, msg: Message, values: Tensor) -> Tensor:
        """``[w', m]`` values (e.g. averaged over the workers) -> dense ``[w', D]``, decoded on
        ``msg``'s shared support; ``decompress(msg) == linear_decode(msg, linear_values(msg))``."""
        raise ValueError(f"compressor {self.name!r} is not linear (no shared support)")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``decompress(compress(x, generator))``."""
        return self.decompress(self.compress(x, generator))


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@dataclasses.dataclass(frozen=True)
class Identity(Compressor):
    name: ClassVar[str] = "identity"
    unbiased: ClassVar[bool] = True
    linear: ClassVar[bool] = True

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        _check_x(x)
        return Message(D=x.shape[1], dtype=x.dtype, values=x.clone())

    def decompress(self, msg: Message) -> Tensor:
        return cast(Tensor, msg.values)

    def linear_values(self, msg: Message) -> Tensor:
        return cast(Tensor, msg.values)

    def linear_decode(self, msg: Message, values: Tensor) -> Tensor:
        return values

    def pack(self, msg: Message) -> Tensor:
        return _bytes_of(cast(Tensor, msg.values))

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        return Message(D=D, dtype=dtype, values=_from_bytes(payload, dtype, D))

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return D * _itemsize(dtype)

    def delta(self, D: int) -> float:
        return 1.0

    def omega(self, D: int) -> float:
        return 0.0


@dataclasses.dataclass(frozen=True)
class TopK(Compressor):
    """Keep the ``k = ceil(ratio * D)`` entries of largest magnitude (per worker)."""

    ratio: float = 0.01
    name: ClassVar[str] = "topk"

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        _check_x(x)
        k = _k(self.ratio, x.shape[1])
        idx = torch.topk(x.abs(), k, dim=1, sorted=False).indices
        return Message(D=x.shape[1], dtype=x.dtype, values=x.gather(1, idx), indices=idx)

    def decompress(self, msg: Message) -> Tensor:
        values, indices = cast(Tensor, msg.values), cast(Tensor, msg.indices)
        out = values.new_zeros(values.shape[0], msg.D)
        return out.scatter_(1, indices, values)

    def pack(self, msg: Message) -> Tensor:
        values, indices = cast(Tensor, msg.values), cast(Tensor, msg.indices)
        return torch.cat([_bytes_of(values), _bytes_of(indices.to(torch.int32))], dim=1)

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        k, b = _k(self.ratio, D), _itemsize(dtype)
        values = _from_bytes(payload[:, : k * b], dtype, k)
        idx = _from_bytes(payload[:, k * b :], torch.int32, k).to(torch.int64)
        return Message(D=D, dtype=dtype, values=values, indices=idx)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return _k(self.ratio, D) * (_itemsize(dtype) + 4)

    def delta(self, D: int) -> float:
        return _k(self.ratio, D) / D


@dataclasses.dataclass(frozen=True)
class RandomK(Compressor):
    """Keep k coordinates chosen uniformly without replacement (one set shared by all workers,
    drawn from a 64-bit seed); ``scaled=True`` multiplies by D/k (unbiased). Linear: the shared
    index set is the support, so the k values of all workers can be all-reduced."""

    ratio: float = 0.01
    scaled: bool = True
    name: ClassVar[str] = "randomk"
    linear: ClassVar[bool] = True

    @property
    def unbiased(self) -> bool:  # type: ignore[override]
        return self.scaled

    @staticmethod
    def _indices(seed: int, D: int, k: int, device: torch.device) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(D, generator=gen)[:k].to(device)

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        _check_x(x)
        D = x.shape[1]
        k = _k(self.ratio, D)
        seed = torch.randint(0, 2**62, (1,), generator=generator, dtype=torch.int64)
        idx = self._indices(int(seed), D, k, x.device)
        values = x[:, idx]
        if self.scaled:
            values = values * (D / k)
        return Message(D=D, dtype=x.dtype, values=values, indices=idx, seed=seed)

    def decompress(self, msg: Message) -> Tensor:
        return self.linear_decode(msg, cast(Tensor, msg.values))

    def linear_values(self, msg: Message) -> Tensor:
        return cast(Tensor, msg.values)

    def linear_decode(self, msg: Message, values: Tensor) -> Tensor:
        out = values.new_zeros(values.shape[0], msg.D)
        out[:, cast(Tensor, msg.indices).to(values.device)] = values
        return out

    def pack(self, msg: Message) -> Tensor:
        values, msg_seed = cast(Tensor, msg.values), cast(Tensor, msg.seed)
        w = values.shape[0]
        seed = _bytes_of(msg_seed.to(values.device).reshape(1, 1)).expand(w, 8)
        return torch.cat([_bytes_of(values), seed], dim=1)

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        k, b = _k(self.ratio, D), _itemsize(dtype)
        values = _from_bytes(payload[:, : k * b], dtype, k)
        seeds = _from_bytes(payload[:, k * b :], torch.int64, 1)
        if not bool((seeds == seeds[0]).all()):
            raise ValueError("random-k: the workers' messages were drawn from different seeds")
        seed = seeds[0].cpu()
        idx = self._indices(int(seed), D, k, payload.device)
        return Message(D=D, dtype=dtype, values=values, indices=idx, seed=seed)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return _k(self.ratio, D) * _itemsize(dtype) + 8

    def delta(self, D: int) -> float | None:
        return None if self.scaled else _k(self.ratio, D) / D

    def omega(self, D: int) -> float | None:
        return D / _k(self.ratio, D) - 1 if self.scaled else None


@dataclasses.dataclass(frozen=True)
class Sign(Compressor):
    """``sign(x)`` (1 bit per entry) or, with ``scaled``, ``(‖x‖₁ / D) sign(x)`` (EF-signSGD)."""

    scaled: bool = True

    @property
    def name(self) -> str:  # type: ignore[override]
        return "scaled-sign" if self.scaled else "sign"

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        _check_x(x)
        scale = x.abs().sum(dim=1) / x.shape[1] if self.scaled else None
        return Message(D=x.shape[1], dtype=x.dtype, signs=x < 0, scale=scale)

    def decompress(self, msg: Message) -> Tensor:
        signs = cast(Tensor, msg.signs)
        one = torch.ones((), dtype=msg.dtype, device=signs.device)
        out = torch.where(signs, -one, one)
        return out * msg.scale[:, None] if msg.scale is not None else out

    def pack(self, msg: Message) -> Tensor:
        bits = _pack_bits(cast(Tensor, msg.signs).to(torch.int64), 1)
        scale = cast(Tensor, msg.scale)
        return torch.cat([bits, _bytes_of(scale[:, None])], dim=1) if self.scaled else bits

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        nb = math.ceil(D / 8)
        signs = _unpack_bits(payload[:, :nb], 1, D).bool()
        scale = _from_bytes(payload[:, nb:], dtype, 1)[:, 0] if self.scaled else None
        return Message(D=D, dtype=dtype, signs=signs, scale=scale)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return math.ceil(D / 8) + (_itemsize(dtype) if self.scaled else 0)

    def delta(self, D: int) -> float | None:
        return 1.0 / D if self.scaled else None


@dataclasses.dataclass(frozen=True)
class QSGD(Compressor):
    """QSGD with ``levels = s`` (Alistarh et al., NeurIPS 2017, arXiv 1610.02132): unbiased.
    A row with ‖x‖ = 0 is not divided by its norm (levels 0, scale 0): C(0) = 0."""

    levels: int = 16
    name: ClassVar[str] = "qsgd"
    unbiased: ClassVar[bool] = True

    @property
    def level_bits(self) -> int:
        return math.ceil(math.log2(self.levels + 1))

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        _check_x(x)
        w, D = x.shape
        norm = torch.linalg.vector_norm(x, dim=1)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        r = x.abs() / safe[:, None] * self.levels
        low = r.floor().clamp(max=self.levels)
        u = _uniforms(x, generator, worker_ids, n_workers)
        lev = (low + (u < (r - low)).to(x.dtype)).clamp(max=self.levels).to(torch.int64)
        return Message(D=D, dtype=x.dtype, signs=x < 0, levels=lev, scale=norm)

    def decompress(self, msg: Message) -> Tensor:
        levels, scale = cast(Tensor, msg.levels), cast(Tensor, msg.scale)
        mag = levels.to(msg.dtype) * (scale[:, None] / self.levels)
        return torch.where(cast(Tensor, msg.signs), -mag, mag)

    def pack(self, msg: Message) -> Tensor:
        signs, levels = cast(Tensor, msg.signs), cast(Tensor, msg.levels)
        code = signs.to(torch.int64) | (levels << 1)
        return torch.cat(
            [_bytes_of(cast(Tensor, msg.scale)[:, None]), _pack_bits(code, 1 + self.level_bits)],
            dim=1,
        )

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        b = _itemsize(dtype)
        code = _unpack_bits(payload[:, b:], 1 + self.level_bits, D)
        scale = _from_bytes(payload[:, :b], dtype, 1)[:, 0]
        return Message(D=D, dtype=dtype, signs=(code & 1).bool(), levels=code >> 1, scale=scale)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return _itemsize(dtype) + math.ceil(D * (1 + self.level_bits) / 8)

    def omega(self, D: int) -> float:
        return min(D / self.levels**2, math.sqrt(D) / self.levels)


@dataclasses.dataclass(frozen=True)
class TernGrad(Compressor):
    """TernGrad (Wen et al., NeurIPS 2017, arXiv 1705.07878): ``C(x)_i = s sign(x_i) b_i`` with
    ``s = max_i |x_i|`` (per worker) and ``b_i ~ Bernoulli(|x_i| / s)``; unbiased, with
    ``E‖C(x) − x‖² = s‖x‖₁ − ‖x‖² ≤ ω‖x‖²`` for ω = (√D − 1)/2 (tight; see the module
    docstring). Wire: s in the values' dtype, then 2 bits per coordinate."""

    name: ClassVar[str] = "terngrad"
    unbiased: ClassVar[bool] = True

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        _check_x(x)
        scale = x.abs().amax(dim=1)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # C(0) = 0
        keep = _uniforms(x, generator, worker_ids, n_workers) < x.abs() / safe[:, None]
        return Message(
            D=x.shape[1], dtype=x.dtype, signs=keep & (x < 0), levels=keep.long(), scale=scale
        )

    def decompress(self, msg: Message) -> Tensor:
        levels, scale = cast(Tensor, msg.levels), cast(Tensor, msg.scale)
        mag = levels.to(msg.dtype) * scale[:, None]
        return torch.where(cast(Tensor, msg.signs), -mag, mag)

    def pack(self, msg: Message) -> Tensor:
        signs, levels = cast(Tensor, msg.signs), cast(Tensor, msg.levels)
        code = levels | (signs.to(torch.int64) << 1)
        return torch.cat([_bytes_of(cast(Tensor, msg.scale)[:, None]), _pack_bits(code, 2)], dim=1)

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        b = _itemsize(dtype)
        code = _unpack_bits(payload[:, b:], 2, D)
        scale = _from_bytes(payload[:, :b], dtype, 1)[:, 0]
        return Message(D=D, dtype=dtype, signs=(code >> 1).bool(), levels=code & 1, scale=scale)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return _itemsize(dtype) + math.ceil(2 * D / 8)

    def omega(self, D: int) -> float:
        return (math.sqrt(D) - 1) / 2


@dataclasses.dataclass(frozen=True)
class Layerwise(Compressor):
    """Layer-wise selection: ``inner`` applied separately to consecutive segments of ``D``.

    ``segments`` (positive ints summing to ``D``, e.g. the numels of a model's parameter tensors,
    in flat-buffer order). Segment messages are made in order from the same ``generator``, and
    packed one after the other, so ``nbytes(D) = Σ_l inner.nbytes(D_l)``. ``delta`` is the
    smallest segment δ (a contraction of every segment is one of the whole vector with the worst
    δ), ``omega`` the largest segment ω. ``linear`` iff ``inner`` is: :meth:`linear_values`
    concatenates the segments' values (one all-reduce for the whole message). Raises
    ``ValueError`` for empty or non-positive segments, a nested ``Layerwise`` inner compressor,
    or an ``x`` whose width is not ``sum(segments)``.
    """

    inner: Compressor
    segments: tuple[int, ...]
    name: ClassVar[str] = "layerwise"

    def __post_init__(self) -> None:
        if not self.segments or any(
            not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in self.segments
        ):
            raise ValueError(f"segments must be positive ints, got {self.segments!r}")
        if isinstance(self.inner, Layerwise):
            raise ValueError("inner must not itself be a Layerwise compressor")

    @property
    def unbiased(self) -> bool:  # type: ignore[override]
        return self.inner.unbiased

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return self.inner.linear

    def _check_width(self, D: int) -> None:
        if D != sum(self.segments):
            raise ValueError(
                f"layer-wise compression: x has D = {D} entries but segments sum to "
                f"{sum(self.segments)} ({len(self.segments)} segments)"
            )

    def _bounds(self) -> list[tuple[int, int]]:
        ends = list(itertools.accumulate(self.segments))
        return [(e - s, e) for s, e in zip(self.segments, ends, strict=True)]

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        _check_x(x)
        self._check_width(x.shape[1])
        parts = [
            self.inner.compress(x[:, a:b], generator, worker_ids=worker_ids, n_workers=n_workers)
            for a, b in self._bounds()
        ]
        return Message(D=x.shape[1], dtype=x.dtype, parts=parts)

    def decompress(self, msg: Message) -> Tensor:
        return torch.cat([self.inner.decompress(p) for p in cast(list[Message], msg.parts)], dim=1)

    def linear_values(self, msg: Message) -> Tensor:
        parts = cast(list[Message], msg.parts)
        return torch.cat([self.inner.linear_values(p) for p in parts], dim=1)

    def linear_decode(self, msg: Message, values: Tensor) -> Tensor:
        parts = cast(list[Message], msg.parts)
        chunks = torch.split(values, [cast(Tensor, p.values).shape[1] for p in parts], dim=1)
        return torch.cat(
            [self.inner.linear_decode(p, v) for p, v in zip(parts, chunks, strict=True)], dim=1
        )

    def pack(self, msg: Message) -> Tensor:
        return torch.cat([self.inner.pack(p) for p in cast(list[Message], msg.parts)], dim=1)

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        self._check_width(D)
        sizes = [self.inner.nbytes(s, dtype) for s in self.segments]
        chunks = torch.split(payload, sizes, dim=1)
        parts = [self.inner.unpack(c, s, dtype) for c, s in zip(chunks, self.segments, strict=True)]
        return Message(D=D, dtype=dtype, parts=parts)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        self._check_width(D)
        return sum(self.inner.nbytes(s, dtype) for s in self.segments)

    def delta(self, D: int) -> float | None:
        self._check_width(D)
        deltas = [self.inner.delta(s) for s in self.segments]
        return None if any(d is None for d in deltas) else min(cast(list[float], deltas))

    def omega(self, D: int) -> float | None:
        self._check_width(D)
        omegas = [self.inner.omega(s) for s in self.segments]
        return None if any(o is None for o in omegas) else max(cast(list[float], omegas))


@dataclasses.dataclass(frozen=True)
class Contraction(Compressor):
    """``C / (1 + ω)`` for an unbiased compressor ``C`` with variance parameter ω (spec §2.1).

    If ``E C(x) = x`` and ``E‖C(x) − x‖² ≤ ω‖x‖²``, then ``C(x) / (1 + ω)`` is a δ-contraction with
    δ = 1 / (1 + ω): ``E‖C(x)/(1 + ω) − x‖² ≤ (1 − δ)‖x‖²``. Error feedback needs a contraction:
    with the unscaled unbiased compressor the memory can grow without bound (EF-SGD with scaled
    random-k reaches 1e155 in 1000 steps on the test quadratics).

    The message and its wire format are those of ``inner`` (same ``pack``/``unpack``/``nbytes``);
    only :meth:`decompress` divides by ``1 + ω(D)``, on the sender (for its memory) and on every
    receiver alike. For scaled random-k, ω = D/k − 1 and ``C / (1 + ω)`` is unscaled random-k.
    ``linear`` iff ``inner`` is (a scaled linear map): :meth:`linear_values` are the inner values
    divided by ``1 + ω`` on every worker before the all-reduce, elementwise as in
    :meth:`decompress`, so both exchanges decode the same numbers.

    Raises ``ValueError`` when ``inner`` has no ω (it is not an unbiased compressor).
    """

    inner: Compressor

    def __post_init__(self) -> None:
        if isinstance(self.inner, Contraction | Layerwise) or not self.inner.unbiased:
            raise ValueError(
                f"inner must be an unbiased compressor (identity, randomk, qsgd, terngrad), got "
                f"{self.inner.name!r}"
            )

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.inner.name}/(1+omega)"

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return self.inner.linear

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        return self.inner.compress(x, generator, worker_ids=worker_ids, n_workers=n_workers)

    def decompress(self, msg: Message) -> Tensor:
        return self.inner.decompress(msg) / (1.0 + cast(float, self.inner.omega(msg.D)))

    def linear_values(self, msg: Message) -> Tensor:
        return self.inner.linear_values(msg) / (1.0 + cast(float, self.inner.omega(msg.D)))

    def linear_decode(self, msg: Message, values: Tensor) -> Tensor:
        return self.inner.linear_decode(msg, values)

    def pack(self, msg: Message) -> Tensor:
        return self.inner.pack(msg)

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        return self.inner.unpack(payload, D, dtype)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return self.inner.nbytes(D, dtype)

    def delta(self, D: int) -> float:
        return 1.0 / (1.0 + cast(float, self.inner.omega(D)))


def for_error_feedback(compressor: Compressor) -> Compressor:
    """The compressor to use inside error feedback: ``compressor`` itself, except that an unbiased
    compressor with ω > 0 becomes :class:`Contraction` (``C / (1 + ω)``), segment by segment for
    :class:`Layerwise` (each layer's own ω). Biased compressors (top-k, sign, scaled sign,
    unscaled random-k) and the identity (ω = 0) are returned unchanged."""
    if isinstance(compressor, Layerwise):
        inner = for_error_feedback(compressor.inner)
        return compressor if inner is compressor.inner else Layerwise(inner, compressor.segments)
    if compressor.unbiased and not isinstance(compressor, Identity | Contraction):
        return Contraction(compressor)
    return compressor


COMPRESSORS: tuple[str, ...] = (
    "identity",
    "topk",
    "randomk",
    "randomk-unscaled",
    "sign",
    "scaled-sign",
    "qsgd",
    "terngrad",
)


def make_compressor(name: str, ratio: float = 0.01, levels: int = 16) -> Compressor:
    """The compressor ``name`` (one of :data:`COMPRESSORS`).

    ``ratio`` (in (0, 1]) is the kept fraction for top-k / random-k; ``levels`` (>= 1) is QSGD's s.
    Both are validated for every name so that a bad option never passes silently.
    """
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and 0 < ratio <= 1):
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    if not (isinstance(levels, int) and not isinstance(levels, bool) and levels >= 1):
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
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
    if name == "powersgd":
        raise ValueError(
            "compressor 'powersgd' is not available to the compressed methods: PowerSGD's rank-r "
            "approximation is biased (a contraction only with its own error feedback and a Q "
            "warm-started across steps), so without that memory (compressed-sgd, memory=false) it "
            "does not converge and choco-sgd/ef-sgd cannot rebuild its state; use "
            f"--algorithm powersgd (set rank=r); compressor must be one of {', '.join(COMPRESSORS)}"
        )
    raise ValueError(f"compressor must be one of {', '.join(COMPRESSORS)}; got {name!r}")


def load_generator(state: Tensor) -> torch.Generator:
    """A CPU generator restored from a ``get_state()`` uint8 tensor."""
    gen = torch.Generator()
    gen.set_state(state.clone())
    return gen


def new_generator_state(seed: int) -> Tensor:
    """The uint8 state tensor of a CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed).get_state()
