"""Deprecated: moved to :mod:`peergrad.study.compare` (the study package, above the
single-run loop).

For one release ``import peergrad.train.compare`` (and ``from peergrad.train import
compare``) still gives the module, the very same object as ``peergrad.study.compare``, and
warns.
"""

from __future__ import annotations

import sys
import warnings

from peergrad.study import compare as _moved

warnings.warn(
    "peergrad.train.compare moved to peergrad.study.compare; import it from there "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)

sys.modules[__name__] = _moved
