"""The system model: how fast workers compute, how fast links are, what fails, and the
per-worker simulated clock that turns it into time (design §8).

It lives beside the communicators, below ``algorithms/`` and ``train/``: algorithms stay unaware
of it. :class:`SystemProfile` describes the system (presets, TOML files); :class:`SystemClock`
advances one time per worker with a vectorised max-plus update over the edges of each round.
"""

from __future__ import annotations

from peergrad.system.clock import SystemClock
from peergrad.system.profile import (
    PRESETS,
    ComputeProfile,
    FailureProfile,
    LinkOverride,
    LinkProfile,
    OfflineInterval,
    SystemProfile,
    count_step_flops,
    load_link_csv,
    load_profile,
)

__all__ = [
    "PRESETS",
    "ComputeProfile",
    "FailureProfile",
    "LinkOverride",
    "LinkProfile",
    "OfflineInterval",
    "SystemClock",
    "SystemProfile",
    "count_step_flops",
    "load_link_csv",
    "load_profile",
]
