"""Training: the loop, its configuration, metrics and plots.

``peergrad.train.compare`` (the module) holds ``compare()``, which runs several algorithms on the
same task; the function is not re-exported here so that the module name stays importable.
"""

from __future__ import annotations

from peergrad.train.compare import CompareEntry, CompareResult, build_entries
from peergrad.train.config import TrainConfig
from peergrad.train.loop import (
    METRIC_FIELDS,
    NonFiniteError,
    RunResult,
    TrainingInterrupted,
    format_summary,
    train,
)

__all__ = [
    "METRIC_FIELDS",
    "CompareEntry",
    "CompareResult",
    "NonFiniteError",
    "RunResult",
    "TrainConfig",
    "TrainingInterrupted",
    "build_entries",
    "format_summary",
    "train",
]
