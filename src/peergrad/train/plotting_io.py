"""Deprecated: moved to :mod:`peergrad.study.plotting_io` (the study package, above the
single-run loop).

For one release ``import peergrad.train.plotting_io`` (and ``from peergrad.train import
plotting_io``) still gives the module, the very same object as ``peergrad.study.plotting_io``, and
warns.
"""

from __future__ import annotations

import sys
import warnings

from peergrad.study import plotting_io as _moved

warnings.warn(
    "peergrad.train.plotting_io moved to peergrad.study.plotting_io; import it from there "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)

sys.modules[__name__] = _moved
