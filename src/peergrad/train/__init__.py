"""Training: the loop, its configuration, metrics and plots."""

from __future__ import annotations

from peergrad.train.config import TrainConfig
from peergrad.train.loop import METRIC_FIELDS, RunResult, format_summary, train

__all__ = ["METRIC_FIELDS", "RunResult", "TrainConfig", "format_summary", "train"]
