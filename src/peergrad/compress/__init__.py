"""Compressors with exact wire sizes: see :mod:`peergrad.compress.compressors`."""

from __future__ import annotations

from peergrad.compress.compressors import (
    COMPRESSORS,
    QSGD,
    Cast,
    ChunkQuant,
    Compressor,
    Contraction,
    Identity,
    Layerwise,
    Message,
    RandomK,
    Sign,
    TernGrad,
    TopK,
    for_error_feedback,
    load_generator,
    make_compressor,
    new_generator_state,
)

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
