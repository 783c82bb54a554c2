"""Base for the compressed methods: the compressor chosen by plain hyper-parameters.

``compressor`` (a name of :data:`peergrad.compress.COMPRESSORS`), ``ratio`` (kept fraction,
in (0, 1]), ``levels`` (QSGD levels, >= 1) and ``seed`` (of the generator shared by all workers)
are plain fields so that ``--set compressor=topk --set ratio=0.01`` works from the CLI; they are
validated at construction (``ValueError`` naming the argument) by building the compressor once.
"""

from __future__ import annotations

import dataclasses

from peergrad.algorithms.base import SGDAlgorithm
from peergrad.compress import Compressor, make_compressor


@dataclasses.dataclass(frozen=True)
class CompressedSGDAlgorithm(SGDAlgorithm):
    compressor: str = "topk"
    ratio: float = 0.01
    levels: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.make_compressor()

    def make_compressor(self) -> Compressor:
        """The compressor these hyper-parameters select (a small frozen dataclass)."""
        return make_compressor(self.compressor, ratio=self.ratio, levels=self.levels)
