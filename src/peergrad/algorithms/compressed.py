"""Base for the compressed methods: the compressor chosen by plain hyper-parameters.

``compressor`` (a name of :data:`peergrad.compress.COMPRESSORS`), ``ratio`` (kept fraction,
in (0, 1]), ``levels`` (QSGD levels, >= 1) and ``seed`` (of the generator shared by all workers)
are plain fields so that ``--set compressor=topk --set ratio=0.01`` works from the CLI; they are
validated at construction (``ValueError`` naming the argument) by building the compressor once.

Layer-wise selection (``layerwise=True``): the compressor is applied to every parameter tensor
separately (:class:`peergrad.compress.Layerwise`), e.g. top-1% keeps 1% of every layer instead
of 1% of the whole model. The layout comes from ``segments`` (the parameter tensors' numels in
flat-buffer order), which ``peergrad train`` and :class:`peergrad.optim.DistributedOptimizer`
fill from the model (:func:`peergrad.algorithms.base.bind_run`); code that calls ``step``
itself passes ``segments=(...)``. Without ``layerwise`` the whole model is one vector (the default).

Exchange (``exchange``, for the methods that average the messages over all workers: ``ef-sgd``,
``compressed-sgd``, ``armijo-csgd``): a linear compressor (identity, ``randomk``,
``randomk-unscaled``: a support shared by all workers) is averaged by one all-reduce of its
values, ``2 (n - 1) / n * k * itemsize`` bytes per worker, the others by an all-gather of their
packed messages, ``(n - 1) * nbytes`` (:func:`peergrad.comm.compressed.compressed_mean`).
``allgather`` forces the all-gather for every compressor (the identity's packed values, too);
``allreduce`` with a non-linear compressor is a ``ValueError`` at construction. Methods that
gossip (``choco-sgd``, whose ``uses_topology()`` is true) accept only ``auto``.

Error feedback: methods with a memory (``ef-sgd``, ``armijo-csgd`` with ``memory=True``) use an
unbiased compressor C (``randomk``, ``qsgd``) as ``C / (1 + ω)`` (spec §2.1/§3.3; see
:meth:`CompressedSGDAlgorithm.compressor_for`). The message and its bytes are unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import cast

from peergrad.algorithms.base import SGDAlgorithm
from peergrad.comm.compressed import check_exchange
from peergrad.compress import (
    Compressor,
    Identity,
    Layerwise,
    for_error_feedback,
    make_compressor,
)


@dataclasses.dataclass(frozen=True)
class CompressedSGDAlgorithm(SGDAlgorithm):
    """Base of the compressed methods (see the module docstring).

    Options:

    - ``compressor`` a name of peergrad.compress.COMPRESSORS: the compressor of the messages
      (identity, topk, randomk, randomk-unscaled, sign, scaled-sign, qsgd, terngrad); default
      topk, the spec's top-k with k = 1%.
    - ``ratio`` in (0, 1]: the kept fraction of top-k and random-k; default 0.01.
    - ``levels`` integer >= 1: QSGD's quantisation levels s; default 16.
    - ``seed`` integer: seed of the generator of the random compressors (shared by all workers).
    - ``layerwise`` true or false: compress every parameter tensor separately (needs segments).
    - ``segments`` tuple of integers, or None: the parameter tensors' sizes for layerwise;
      None: filled from the model by peergrad train and DistributedOptimizer.
    - ``exchange`` one of auto, allreduce, allgather: how methods that average the messages over
      all workers (ef-sgd, compressed-sgd, armijo-csgd) exchange them; allreduce: one
      all-reduce of the values of a linear compressor (identity, randomk, randomk-unscaled,
      whose support is shared), 2(n-1)/n k itemsize bytes; allgather: all-gather of the packed
      messages, (n-1) nbytes; auto (default): allreduce for linear compressors, else allgather.
      Gossip methods (choco-sgd) accept only auto.
    """

    compressor: str = "topk"
    ratio: float = 0.01
    levels: int = 16
    seed: int = 0
    layerwise: bool = False
    segments: tuple[int, ...] | None = None
    exchange: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.segments is not None:
            object.__setattr__(self, "segments", tuple(self.segments))  # JSON gives a list
        check_exchange(self.exchange, self.make_compressor())
        if self.exchange != "auto" and self.uses_topology():
            raise ValueError(
                f"exchange={self.exchange!r} applies to methods that average over all workers; "
                f"{self.name} gossips its messages over the topology (use exchange='auto')"
            )

    def make_compressor(self) -> Compressor:
        """The compressor these hyper-parameters select (a small frozen dataclass); with
        ``layerwise`` and ``segments`` set, wrapped in :class:`~peergrad.compress.Layerwise`
        (the identity compressor is never wrapped)."""
        base = make_compressor(self.compressor, ratio=self.ratio, levels=self.levels)
        if not self.layerwise or self.segments is None or isinstance(base, Identity):
            return base
        return Layerwise(base, self.segments)

    def compressor_for(self, D: int, *, error_feedback: bool = False) -> Compressor:
        """:meth:`make_compressor` checked against the width ``D`` of ``x``; ``ValueError`` when
        ``layerwise`` is on without ``segments`` or the segments do not sum to ``D``.

        ``error_feedback=True`` (methods that keep an error-feedback memory) returns an unbiased
        compressor C with variance ω (``randomk``, ``qsgd``) as ``C / (1 + ω)``
        (:func:`~peergrad.compress.for_error_feedback`, spec §2.1), a δ-contraction with
        δ = 1/(1 + ω): error feedback diverges with the unscaled unbiased compressor."""
        if self.layerwise and self.segments is None:
            raise ValueError(
                "layerwise=True needs segments (the parameter tensors' sizes); peergrad train and "
                "DistributedOptimizer fill them from the model, otherwise pass segments=(...)"
            )
        if self.layerwise and sum(cast(tuple[int, ...], self.segments)) != D:
            segments = cast(tuple[int, ...], self.segments)
            raise ValueError(f"segments sum to {sum(segments)} but x has D = {D} entries")
        C = self.make_compressor()
        return for_error_feedback(C) if error_feedback else C
