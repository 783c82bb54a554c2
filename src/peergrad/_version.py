"""The installed distribution's version (``peergrad.__version__``).

Its own module so that code inside the package (the run's ``config.json``) reads the version
without importing the package's ``__init__`` (which imports :class:`peergrad.Task` on demand).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:  # the installed distribution's version: pyproject.toml is the one place it is written
    __version__ = version("peergrad")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
