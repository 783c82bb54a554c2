"""Local update math shared by the algorithms: small element-wise pieces on ``[w, D]`` tensors.

Every function here is per worker and needs no communication, so it runs unchanged on both
engines.
"""

from __future__ import annotations

from peergrad.transforms.adaptive import (
    EPS_MODES,
    adagrad_mean,
    adaptive_denominator,
    adaptive_step,
    amsgrad_max,
    ema_first_moment,
    ema_second_moment,
    mixed_max,
)
from peergrad.transforms.basic import add_weight_decay, clip_rows, heavy_ball
from peergrad.transforms.generic_adam import (
    PRESETS,
    GenericAdam,
    Schedule,
    check_sufficient_condition,
    generic_adam_step,
    parse_schedule,
)

__all__ = [
    "EPS_MODES",
    "PRESETS",
    "GenericAdam",
    "Schedule",
    "check_sufficient_condition",
    "generic_adam_step",
    "parse_schedule",
    "adagrad_mean",
    "adaptive_denominator",
    "adaptive_step",
    "add_weight_decay",
    "clip_rows",
    "amsgrad_max",
    "ema_first_moment",
    "ema_second_moment",
    "heavy_ball",
    "mixed_max",
]
