"""Quantizers: sign and scaled sign (1 bit per entry), QSGD (s levels) and TernGrad (2 bits per
entry). Encodings, wire sizes and ω: :mod:`peergrad.compress.compressors`."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, cast

import torch
from torch import Tensor

from peergrad.compress.base import (
    Compressor,
    Message,
    bytes_of,
    check_x,
    from_bytes,
    itemsize,
    pack_bits,
    uniforms,
    unpack_bits,
)

__all__ = ["QSGD", "Sign", "TernGrad"]


@dataclasses.dataclass(frozen=True)
class Sign(Compressor):
    """``sign(x)`` (1 bit per entry) or, with ``scaled``, ``(‖x‖₁ / D) sign(x)`` (EF-signSGD)."""

    scaled: bool = True

    @property
    def name(self) -> str:  # type: ignore[override]
        return "scaled-sign" if self.scaled else "sign"

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        check_x(x)
        scale = x.abs().sum(dim=1) / x.shape[1] if self.scaled else None
        return Message(D=x.shape[1], dtype=x.dtype, signs=x < 0, scale=scale)

    def decompress(self, msg: Message) -> Tensor:
        signs = cast(Tensor, msg.signs)
        one = torch.ones((), dtype=msg.dtype, device=signs.device)
        out = torch.where(signs, -one, one)
        return out * msg.scale[:, None] if msg.scale is not None else out

    def pack(self, msg: Message) -> Tensor:
        bits = pack_bits(cast(Tensor, msg.signs).to(torch.int64), 1)
        scale = cast(Tensor, msg.scale)
        return torch.cat([bits, bytes_of(scale[:, None])], dim=1) if self.scaled else bits

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        nb = math.ceil(D / 8)
        signs = unpack_bits(payload[:, :nb], 1, D).bool()
        scale = from_bytes(payload[:, nb:], dtype, 1)[:, 0] if self.scaled else None
        return Message(D=D, dtype=dtype, signs=signs, scale=scale)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return math.ceil(D / 8) + (itemsize(dtype) if self.scaled else 0)

    def delta(self, D: int) -> float | None:
        return 1.0 / D if self.scaled else None


@dataclasses.dataclass(frozen=True)
class QSGD(Compressor):
    """QSGD with ``levels = s`` (Alistarh et al., NeurIPS 2017, arXiv 1610.02132): unbiased.
    A row with ‖x‖ = 0 is not divided by its norm (levels 0, scale 0): C(0) = 0."""

    levels: int = 16
    name: ClassVar[str] = "qsgd"
    unbiased: ClassVar[bool] = True
    stochastic: ClassVar[bool] = True

    @property
    def level_bits(self) -> int:
        return math.ceil(math.log2(self.levels + 1))

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        check_x(x)
        w, D = x.shape
        norm = torch.linalg.vector_norm(x, dim=1)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        r = x.abs() / safe[:, None] * self.levels
        low = r.floor().clamp(max=self.levels)
        u = uniforms(x, generator, worker_ids, n_workers)
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
            [bytes_of(cast(Tensor, msg.scale)[:, None]), pack_bits(code, 1 + self.level_bits)],
            dim=1,
        )

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        b = itemsize(dtype)
        code = unpack_bits(payload[:, b:], 1 + self.level_bits, D)
        scale = from_bytes(payload[:, :b], dtype, 1)[:, 0]
        return Message(D=D, dtype=dtype, signs=(code & 1).bool(), levels=code >> 1, scale=scale)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return itemsize(dtype) + math.ceil(D * (1 + self.level_bits) / 8)

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
    stochastic: ClassVar[bool] = True

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        check_x(x)
        scale = x.abs().amax(dim=1)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # C(0) = 0
        keep = uniforms(x, generator, worker_ids, n_workers) < x.abs() / safe[:, None]
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
        return torch.cat([bytes_of(cast(Tensor, msg.scale)[:, None]), pack_bits(code, 2)], dim=1)

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        b = itemsize(dtype)
        code = unpack_bits(payload[:, b:], 2, D)
        scale = from_bytes(payload[:, :b], dtype, 1)[:, 0]
        return Message(D=D, dtype=dtype, signs=(code >> 1).bool(), levels=code & 1, scale=scale)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return itemsize(dtype) + math.ceil(2 * D / 8)

    def omega(self, D: int) -> float:
        return (math.sqrt(D) - 1) / 2
