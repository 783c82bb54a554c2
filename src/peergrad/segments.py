"""Deprecated: moved to :mod:`peergrad.comm.segments` (next to the communicators it records for).

This module re-exports its names for one release and warns on import.
"""

from __future__ import annotations

import warnings

from peergrad.comm.segments import (
    CommThread,
    Op,
    PreAveraged,
    SegmentComm,
    cut,
    merge_state,
    settle,
    split_state,
)
from peergrad.comm.segments import _blocks as _blocks
from peergrad.comm.segments import _takes_workspace as _takes_workspace

warnings.warn(
    "peergrad.segments moved to peergrad.comm.segments; import it from there "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "CommThread",
    "Op",
    "PreAveraged",
    "SegmentComm",
    "cut",
    "merge_state",
    "settle",
    "split_state",
]
