"""The compressor protocol, its message and the encodings every compressor shares.

:class:`Compressor` (the protocol: :mod:`peergrad.compress.compressors`), :class:`Message`, the
identity, and the helpers of the families (:mod:`peergrad.compress.sparse`,
:mod:`peergrad.compress.quantize`, :mod:`peergrad.compress.wrappers`): raw little-endian bytes of
a tensor, bits packed LSB first, and per-worker random draws that are identical on both engines.
Split out of :mod:`peergrad.compress.compressors` (issue 25), which re-exports the public names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, cast

import torch
from torch import Tensor

__all__ = [
    "Compressor",
    "Identity",
    "Message",
    "load_generator",
    "new_generator_state",
]


@dataclasses.dataclass
class Message:
    """A compressed message for ``w`` workers; unused fields are ``None``.

    ``values``: ``[w, k]`` (or ``[w, D]``; bf16/fp16 casts: the 2-byte values) kept values;
    ``indices``: int64 ``[w, k]`` (top-k) or ``[k]`` (random-k, shared); ``seed``: int64 ``[1]``
    (random-k); ``signs``: bool ``[w, D]`` (True = negative); ``levels``: int64 ``[w, D]``
    (QSGD's levels; TernGrad's b_i in {0, 1}; int8/int4: the int8 codes); ``scale``: ``[w]``
    (norm / scale; int8/int4: float32 ``[w, ceil(D / chunk)]``, one per chunk);
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


def kept_count(ratio: float, D: int) -> int:
    return min(D, max(1, math.ceil(round(ratio * D, 9))))


def check_x(x: Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"compress: x must be [w, D], got shape {tuple(x.shape)}")


def bytes_of(t: Tensor) -> Tensor:
    """``[w, ...]`` -> uint8 ``[w, bytes]`` (the raw little-endian representation)."""
    t = t.contiguous()
    return t.view(torch.uint8).reshape(t.shape[0], -1)


def from_bytes(b: Tensor, dtype: torch.dtype, count: int) -> Tensor:
    """uint8 ``[m, count * itemsize]`` -> ``[m, count]`` of ``dtype``."""
    fresh = b.clone(memory_format=torch.contiguous_format)  # offset 0, aligned for the view
    return fresh.view(dtype).reshape(b.shape[0], count)


def pack_bits(v: Tensor, bits: int) -> Tensor:
    """Non-negative ints ``[w, D]`` (< 2**bits) -> uint8 ``[w, ceil(D * bits / 8)]``, LSB first."""
    w, D = v.shape
    shifts = torch.arange(bits, device=v.device)
    flat = ((v.unsqueeze(-1) >> shifts) & 1).to(torch.uint8).reshape(w, D * bits)
    pad = (-flat.shape[1]) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(w, pad)], dim=1)
    weights = (1 << torch.arange(8, device=v.device)).to(torch.uint8)
    return (flat.reshape(w, -1, 8) * weights).sum(dim=2, dtype=torch.uint8)


def unpack_bits(b: Tensor, bits: int, D: int) -> Tensor:
    """Inverse of :func:`pack_bits`: uint8 ``[m, nb]`` -> int64 ``[m, D]``."""
    m = b.shape[0]
    flat = (b.to(torch.int64).unsqueeze(-1) >> torch.arange(8, device=b.device)) & 1
    flat = flat.reshape(m, -1)[:, : D * bits].reshape(m, D, bits)
    return (flat << torch.arange(bits, device=b.device)).sum(dim=2)


def worker_generators(
    generator: torch.Generator | None, w: int, worker_ids: Tensor, n_workers: int
) -> list[torch.Generator]:
    """One generator per local row, seeded from ``generator`` by global worker id."""
    seeds = torch.randint(0, 2**62, (n_workers,), generator=generator, dtype=torch.int64)
    return [torch.Generator().manual_seed(int(seeds[int(i)])) for i in worker_ids]


def uniforms(
    x: Tensor,
    generator: torch.Generator | None,
    worker_ids: Tensor | None,
    n_workers: int | None,
) -> Tensor:
    """U[0, 1) draws of ``x``'s shape and dtype on its device: one ``[w, D]`` draw from
    ``generator``, or with ``worker_ids`` and ``n_workers`` row i from worker i's own generator
    (:func:`worker_generators`: identical draws on both engines)."""
    w, D = x.shape
    if worker_ids is None or n_workers is None:
        return torch.rand(w, D, generator=generator, dtype=x.dtype).to(x.device)
    gens = worker_generators(generator, w, worker_ids, n_workers)
    return torch.stack([torch.rand(D, generator=g, dtype=x.dtype) for g in gens]).to(x.device)


@dataclasses.dataclass(frozen=True)
class Compressor:
    """Base class; see the module docstring for the protocol.

    ``linear`` (default False) declares that the workers' messages can be averaged by one
    all-reduce of :meth:`linear_values`: the support (everything but the values) is the same on
    every worker at a call, and :meth:`linear_decode` is linear in the values. A linear
    compressor keeps its values in ``Message.values`` and implements both methods.

    ``stochastic`` (default False): ``compress`` draws from its generator (random-k, QSGD,
    TernGrad), so two calls agree only from equal generator states. ``alignment`` (default 1):
    cutting ``x`` into pieces at multiples of it cuts no group of values that share a code
    (int8/int4: one scale per chunk of ``chunk`` values), so that compressing the pieces one by
    one equals compressing the whole, piece by piece (the reduce-scatter exchange's shards,
    :func:`peergrad.comm.compressed.reduce_scatter_mean`).
    """

    name: ClassVar[str] = ""
    unbiased: ClassVar[bool] = False
    linear: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False

    @property
    def alignment(self) -> int:
        return 1

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


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@dataclasses.dataclass(frozen=True)
class Identity(Compressor):
    name: ClassVar[str] = "identity"
    unbiased: ClassVar[bool] = True
    linear: ClassVar[bool] = True

    def compress(self, x, generator=None, *, worker_ids=None, n_workers=None) -> Message:
        check_x(x)
        return Message(D=x.shape[1], dtype=x.dtype, values=x.clone())

    def decompress(self, msg: Message) -> Tensor:
        return cast(Tensor, msg.values)

    def linear_values(self, msg: Message) -> Tensor:
        return cast(Tensor, msg.values)

    def linear_decode(self, msg: Message, values: Tensor) -> Tensor:
        return values

    def pack(self, msg: Message) -> Tensor:
        return bytes_of(cast(Tensor, msg.values))

    def unpack(self, payload: Tensor, D: int, dtype: torch.dtype) -> Message:
        return Message(D=D, dtype=dtype, values=from_bytes(payload, dtype, D))

    def nbytes(self, D: int, dtype: torch.dtype) -> int:
        return D * itemsize(dtype)

    def delta(self, D: int) -> float:
        return 1.0

    def omega(self, D: int) -> float:
        return 0.0


def load_generator(state: Tensor) -> torch.Generator:
    """A CPU generator restored from a ``get_state()`` uint8 tensor."""
    gen = torch.Generator()
    gen.set_state(state.clone())
    return gen


def new_generator_state(seed: int) -> Tensor:
    """The uint8 state tensor of a CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed).get_state()
