"""peergrad: communication-efficient distributed and decentralized training for PyTorch."""

from __future__ import annotations

from peergrad._version import __version__

__all__ = ["Task", "__version__"]


def __getattr__(name: str) -> object:
    """``peergrad.Task`` (imported on first use, so ``import peergrad`` stays light)."""
    if name == "Task":
        from peergrad.train.task import Task

        return Task
    raise AttributeError(f"module 'peergrad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
