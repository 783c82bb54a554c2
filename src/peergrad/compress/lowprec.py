"""Low-precision compressors: ``bf16`` / ``fp16`` (a cast) and ``int8`` / ``int4`` (symmetric
absmax quantization per chunk). Wire sizes: :mod:`peergrad.compress.compressors`.

- :class:`Cast` (``bf16``, ``fp16``): every value rounded to the 2-byte float format (IEEE
  round to nearest even, ``Tensor.to``), sent as those 2 bytes, decoded back into ``x``'s dtype.
  fp16 overflows to ±inf beyond ±65504 and flushes below 6e-8 to 0 (a cast, no saturation);
  bf16 has float32's range. No contraction or variance bound holds for every x (overflow,
  underflow), so ``delta`` and ``omega`` are ``None``.
- :class:`ChunkQuant` (``int8``: ``bits = 8``, q = 127; ``int4``: ``bits = 4``, q = 7): ``x``
  (``[w, D]``) is cut into contiguous chunks of ``chunk`` values (default 64; the last one may
  be shorter), each with its own scale ``m = max |x|`` over the chunk, sent as float32 (clamped
  to float32's largest finite value). Each value becomes the integer code
  ``k = clamp(round(x / m * q), -q, q)`` (round half to even) and decodes to ``(k / q) * m``
  in ``x``'s dtype; a chunk of zeros has m = 0, codes 0, and decodes to exact zeros (no
  division by 0). The error is at most half a step, ``|x - C(x)| <= m / (2 q)`` per value (up to
  the float32 rounding of m, at most ``2**-24 m``), and the code ±q decodes to ±m exactly, so
  ``C(C(x)) == C(x)`` bit for bit: compressing a decoded message again changes nothing.
  int8 codes travel as one byte each (two's complement), int4 codes as ``k + 8`` in one nibble,
  two per byte (the even index in the low nibble); then the float32 scales. Contraction
  (deterministic, every x): ``‖C(x) - x‖² <= c / (4 q²) ‖x‖²`` per chunk of c values (each error
  at most m / 2q, and ‖x_chunk‖² >= m²), hence ``delta = 1 - (1 + 10⁻³) c / (4 q²)`` with
  ``c = min(chunk, D)``, the ``10⁻³`` covering float32 rounding (``None`` when that is not
  positive: int4 with ``chunk >= 196``).

None of them is ``linear`` (per-worker scales; and a sum of casts is not the cast of the sum),
so :func:`peergrad.comm.compressed.compressed_mean` all-gathers their packed messages, decodes
them in ``x``'s dtype and averages them in worker order (or uses ``exchange="reduce-scatter"``).
Deviations: none from a paper (the format follows common practice, e.g. per-block absmax
scaling as in Dettmers et al., "8-bit Optimizers via Block-wise Quantization", ICLR 2022,
arXiv:2110.02861; the chunk size 64 and float32 scales are ours).
"""

from __future__ import annotations

import dataclasses
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from peergrad.compress.base import (
    Compressor,
    Message,
    bytes_of,
    check_x,
    from_bytes,
    itemsize,
)

__all__ = ["CAST_FORMATS", "Cast", "ChunkQuant"]

#: ``Cast.fmt`` -> the wire dtype
CAST_FORMATS: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
_F32_MAX = torch.finfo(torch.float32).max


@dataclasses.dataclass(frozen=True)
class Cast(Compressor):
    """``x`` rounded to bf16 or fp16 (``fmt``), 2 bytes per value (module docstring).
    ``ValueError`` for another ``fmt``."""

    fmt: str = "bf16"

    def __post_init__(self) -> None:
        if self.fmt not in CAST_FORMATS:
            raise ValueError(f"fmt must be one of {', '.join(CAST_FORMATS)}; got {self.fmt!r}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.fmt

    @property
    def wire_dtype(self) -> torch.dtype:
        return CAST_FORMATS[self.fmt]

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        check_x(x)
        return Message(D=x.shape[1], dtype=x.dtype, values=x.to(self.wire_dtype, copy=True))

    def decompress(self, msg: Message) -> Tensor:
        return cast(Tensor, msg.values).to(msg.dtype)

    def pack(self, msg: Message) -> Tensor:
        return bytes_of(cast(Tensor, msg.values))

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        return Message(D=D, dtype=dtype, values=from_bytes(payload, self.wire_dtype, D))

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return D * itemsize(self.wire_dtype)


@dataclasses.dataclass(frozen=True)
class ChunkQuant(Compressor):
    """Symmetric absmax quantization to ``bits`` (8 or 4) per chunk of ``chunk`` values, one
    float32 scale per chunk (module docstring). ``ValueError`` for ``bits`` not 4 or 8, or
    ``chunk`` not an integer >= 1."""

    bits: int = 8
    chunk: int = 64

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {self.bits!r}")
        if not (
            isinstance(self.chunk, int) and not isinstance(self.chunk, bool) and self.chunk >= 1
        ):
            raise ValueError(f"chunk must be an integer >= 1, got {self.chunk!r}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"int{self.bits}"

    @property
    def qmax(self) -> int:
        """The largest code q: 127 (int8) or 7 (int4)."""
        return 2 ** (self.bits - 1) - 1

    @property
    def alignment(self) -> int:
        return self.chunk

    def chunks(self, D: int) -> int:
        """Number of chunks (and of scales) of a ``D``-value message."""
        return math.ceil(D / self.chunk)

    def _blocks(self, t: Tensor, D: int) -> Tensor:
        """``[m, D]`` zero-padded to whole chunks, as ``[m, chunks, chunk]``."""
        pad = self.chunks(D) * self.chunk - D
        if pad:
            t = F.pad(t, (0, pad))
        return t.reshape(t.shape[0], -1, self.chunk)

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        check_x(x)
        w, D = x.shape
        blocks = self._blocks(x, D)
        scale = blocks.abs().amax(dim=2).clamp(max=_F32_MAX).to(torch.float32)
        s = scale.to(x.dtype)
        safe = torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(2)
        q = self.qmax
        codes = torch.round(blocks / safe * q).clamp_(-q, q).to(torch.int8)
        return Message(D=D, dtype=x.dtype, levels=codes.reshape(w, -1)[:, :D], scale=scale)

    def decompress(self, msg: Message) -> Tensor:
        codes, scale = cast(Tensor, msg.levels), cast(Tensor, msg.scale)
        blocks = self._blocks(codes, msg.D).to(msg.dtype) / self.qmax
        values = blocks * scale.to(msg.dtype).unsqueeze(2)
        return values.reshape(codes.shape[0], -1)[:, : msg.D]

    def pack(self, msg: Message) -> Tensor:
        codes, scale = cast(Tensor, msg.levels), cast(Tensor, msg.scale)
        if self.bits == 8:
            body = bytes_of(codes.to(torch.int8))
        else:
            nib = (codes.to(torch.int16) + 8).to(torch.uint8)
            if nib.shape[1] % 2:
                nib = F.pad(nib, (0, 1))
            body = nib[:, 0::2] | (nib[:, 1::2] << 4)
        return torch.cat([body, bytes_of(scale.to(torch.float32))], dim=1)

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        m, nb = payload.shape[0], self._code_bytes(D)
        body = payload[:, :nb]
        if self.bits == 8:
            codes = from_bytes(body, torch.int8, D)
        else:
            nib = torch.stack([body & 15, body >> 4], dim=2).reshape(m, -1)[:, :D]
            codes = (nib.to(torch.int16) - 8).to(torch.int8)
        scale = from_bytes(payload[:, nb:], torch.float32, self.chunks(D))
        return Message(D=D, dtype=dtype, levels=codes, scale=scale)

    def _code_bytes(self, D: int) -> int:
        return D if self.bits == 8 else math.ceil(D / 2)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return self._code_bytes(D) + 4 * self.chunks(D)

    def delta(self, D: int) -> float | None:
        c = min(self.chunk, D)
        loss = (1 + 1e-3) * c / (4 * self.qmax**2)
        return 1 - loss if loss < 1 else None
