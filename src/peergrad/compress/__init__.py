"""Compressors with exact wire sizes: see :mod:`peergrad.compress.compressors`."""

from __future__ import annotations

from peergrad.compress.compressors import (
    COMPRESSORS,
    QSGD,
    Compressor,
    Identity,
    Layerwise,
    Message,
    RandomK,
    Sign,
    TopK,
    load_generator,
    make_compressor,
    new_generator_state,
)

__all__ = [
    "COMPRESSORS",
    "QSGD",
    "Compressor",
    "Identity",
    "Layerwise",
    "Message",
    "RandomK",
    "Sign",
    "TopK",
    "load_generator",
    "make_compressor",
    "new_generator_state",
]
