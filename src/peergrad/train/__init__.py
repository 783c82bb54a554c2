"""Training: the loop, its configuration, metrics and plots.

``peergrad.study.compare`` (the module) holds ``compare()``, which runs several algorithms on the
same task; ``CompareEntry``, ``CompareResult`` and ``build_entries`` are re-exported here, the
function is not, so that ``from peergrad.train import compare`` still gives the module (its old
path, ``peergrad.train.compare``, kept for one release with a ``DeprecationWarning``, as
``peergrad.train.plotting_io`` for :mod:`peergrad.study.plotting_io`).

The names below are imported on first use (module ``__getattr__``, PEP 562), so that importing
a light submodule such as :mod:`peergrad.train.config` does not import torch: ``peergrad
--help`` builds its parser from ``TrainConfig`` and stays fast (issue 25, item 8).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from peergrad.study.compare import CompareEntry, CompareResult, build_entries
    from peergrad.train.config import TrainConfig
    from peergrad.train.loop import (
        METRIC_FIELDS,
        NonFiniteError,
        RunResult,
        TrainingInterrupted,
        format_summary,
        train,
    )

#: Each public name and the module that defines it.
_EXPORTS: dict[str, str] = {
    "CompareEntry": "peergrad.study.compare",
    "CompareResult": "peergrad.study.compare",
    "build_entries": "peergrad.study.compare",
    "TrainConfig": "peergrad.train.config",
    "METRIC_FIELDS": "peergrad.train.loop",
    "NonFiniteError": "peergrad.train.loop",
    "RunResult": "peergrad.train.loop",
    "TrainingInterrupted": "peergrad.train.loop",
    "format_summary": "peergrad.train.loop",
    "train": "peergrad.train.loop",
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
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
