"""Compressors built on another one: :class:`Layerwise` (segment by segment) and
:class:`Contraction` (``C / (1 + ω)``, what error feedback needs), and
:func:`for_error_feedback`, which picks the latter where it is needed."""

from __future__ import annotations

import dataclasses
import itertools
from typing import ClassVar, cast

import torch
from torch import Tensor

from peergrad.compress.base import Compressor, Identity, Message, check_x

__all__ = ["Contraction", "Layerwise", "for_error_feedback"]


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

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.inner.stochastic

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
        check_x(x)
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

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.inner.stochastic

    @property
    def alignment(self) -> int:
        return self.inner.alignment

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
