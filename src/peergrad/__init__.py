"""peergrad: communication-efficient distributed and decentralized training for PyTorch."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:  # the installed distribution's version: pyproject.toml is the one place it is written
    __version__ = version("peergrad")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


__all__ = ["Task", "__version__"]


def __getattr__(name: str) -> object:
    """``peergrad.Task`` (imported on first use, so ``import peergrad`` stays light)."""
    if name == "Task":
        from peergrad.task import Task

        return Task
    raise AttributeError(f"module 'peergrad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
