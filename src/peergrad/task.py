"""Deprecated: moved to :mod:`peergrad.train.task` (the layer that trains it).

``peergrad.Task`` is unchanged. This module re-exports its names for one release and warns on
import.
"""

from __future__ import annotations

import warnings

from peergrad.train.task import METRIC_MODES, BuiltTask, Task, build_task, task_from_config

warnings.warn(
    "peergrad.task moved to peergrad.train.task; import it from there, or use peergrad.Task "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["METRIC_MODES", "BuiltTask", "Task", "build_task", "task_from_config"]
