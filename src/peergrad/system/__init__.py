"""The system model: how fast workers compute, how fast links are, what fails, and the
per-worker simulated clock that turns it into time (design §8).

It lives beside the communicators, below ``algorithms/`` and ``train/``: algorithms stay unaware
of it. :class:`SystemProfile` describes the system (presets, TOML files); :class:`SystemClock`
advances one time per worker with a vectorised max-plus update over the edges of each round.

Layering (issue 25): ``comm/`` builds on ``system/`` (the communicators report every round to
the clock and impose profiles on real processes), so nothing here imports ``peergrad.comm``; the
alpha-beta :class:`NetworkModel` the two share lives here (:mod:`peergrad.system.network`) and
``peergrad.comm`` re-exports it.

Modules: ``network`` (alpha-beta model), ``checks`` (value validation), ``components`` (the
compute, link and failure parts of a profile), ``profile_io`` (TOML/CSV reading), ``profile``
(:class:`SystemProfile`, presets), ``clock`` (with ``inflight``: its asynchronous all-reduces),
``impose`` (profiles on real processes), ``report``.
"""

from __future__ import annotations

from peergrad.system.clock import SystemClock
from peergrad.system.network import NetworkModel
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
    "NetworkModel",
    "OfflineInterval",
    "SystemClock",
    "SystemProfile",
    "count_step_flops",
    "load_link_csv",
    "load_profile",
]
