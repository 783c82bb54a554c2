"""Sparsifiers: top-k (per-worker support) and random-k (one support shared by all workers,
sent as a 64-bit seed). Wire sizes and the δ/ω of each: :mod:`peergrad.compress.compressors`."""

from __future__ import annotations

import dataclasses
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
    kept_count,
)

__all__ = ["RandomK", "TopK"]


@dataclasses.dataclass(frozen=True)
class TopK(Compressor):
    """Keep the ``k = ceil(ratio * D)`` entries of largest magnitude (per worker)."""

    ratio: float = 0.01
    name: ClassVar[str] = "topk"

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        check_x(x)
        k = kept_count(self.ratio, x.shape[1])
        idx = torch.topk(x.abs(), k, dim=1, sorted=False).indices
        return Message(D=x.shape[1], dtype=x.dtype, values=x.gather(1, idx), indices=idx)

    def decompress(self, msg: Message) -> Tensor:
        values, indices = cast(Tensor, msg.values), cast(Tensor, msg.indices)
        out = values.new_zeros(values.shape[0], msg.D)
        return out.scatter_(1, indices, values)

    def pack(self, msg: Message) -> Tensor:
        values, indices = cast(Tensor, msg.values), cast(Tensor, msg.indices)
        return torch.cat([bytes_of(values), bytes_of(indices.to(torch.int32))], dim=1)

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        k, b = kept_count(self.ratio, D), itemsize(dtype)
        values = from_bytes(payload[:, : k * b], dtype, k)
        idx = from_bytes(payload[:, k * b :], torch.int32, k).to(torch.int64)
        return Message(D=D, dtype=dtype, values=values, indices=idx)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return kept_count(self.ratio, D) * (itemsize(dtype) + 4)

    def delta(self, D: int) -> float:
        return kept_count(self.ratio, D) / D


@dataclasses.dataclass(frozen=True)
class RandomK(Compressor):
    """Keep k coordinates chosen uniformly without replacement (one set shared by all workers,
    drawn from a 64-bit seed); ``scaled=True`` multiplies by D/k (unbiased). Linear: the shared
    index set is the support, so the k values of all workers can be all-reduced."""

    ratio: float = 0.01
    scaled: bool = True
    name: ClassVar[str] = "randomk"
    linear: ClassVar[bool] = True
    stochastic: ClassVar[bool] = True

    @property
    def unbiased(self) -> bool:  # type: ignore[override]
        return self.scaled

    @staticmethod
    def _indices(seed: int, D: int, k: int, device: torch.device) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(D, generator=gen)[:k].to(device)

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        check_x(x)
        D = x.shape[1]
        k = kept_count(self.ratio, D)
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
        seed = bytes_of(msg_seed.to(values.device).reshape(1, 1)).expand(w, 8)
        return torch.cat([bytes_of(values), seed], dim=1)

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        k, b = kept_count(self.ratio, D), itemsize(dtype)
        values = from_bytes(payload[:, : k * b], dtype, k)
        seeds = from_bytes(payload[:, k * b :], torch.int64, 1)
        if not bool((seeds == seeds[0]).all()):
            raise ValueError("random-k: the workers' messages were drawn from different seeds")
        seed = seeds[0].cpu()
        idx = self._indices(int(seed), D, k, payload.device)
        return Message(D=D, dtype=dtype, values=values, indices=idx, seed=seed)

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return kept_count(self.ratio, D) * itemsize(dtype) + 8

    def delta(self, D: int) -> float | None:
        return None if self.scaled else kept_count(self.ratio, D) / D

    def omega(self, D: int) -> float | None:
        return D / kept_count(self.ratio, D) - 1 if self.scaled else None
