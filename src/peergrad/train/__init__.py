"""Training: the loop, its configuration, metrics and plots.

``peergrad.train.compare`` (the module) holds ``compare()``, which runs several algorithms on the
same task; the function is not re-exported here so that the module name stays importable.

The names below are imported on first use (module ``__getattr__``, PEP 562), so that importing
a light submodule such as :mod:`peergrad.train.config` does not import torch: ``peergrad
--help`` builds its parser from ``TrainConfig`` and stays fast (issue 25, item 8).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
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

#: Each public name and the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "CompareEntry": "compare",
    "CompareResult": "compare",
    "build_entries": "compare",
    "TrainConfig": "config",
    "METRIC_FIELDS": "loop",
    "NonFiniteError": "loop",
    "RunResult": "loop",
    "TrainingInterrupted": "loop",
    "format_summary": "loop",
    "train": "loop",
}

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


def __getattr__(name: str) -> object:
    """The public names, imported from their submodule on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
