"""Validation of system-profile values: each check returns the value or raises one
``ValueError`` line that names the field (as in the TOML file) and the allowed range; and the
TOML file's unit conversions (milliseconds, Gbit/s). Split out of
:mod:`peergrad.system.profile` (issue 25)."""

from __future__ import annotations

import math

__all__ = [
    "at_least_one",
    "gbps_to_bytes_per_s",
    "integer",
    "ms_to_s",
    "nonneg",
    "number",
    "positive",
    "probability",
    "value_range",
    "worker_id",
]


def number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return float(value)


def nonneg(value: object, where: str) -> float:
    v = number(value, where)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return v


def positive(value: object, where: str) -> float:
    v = number(value, where)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{where} must be a finite number > 0, got {value!r}")
    return v


def at_least_one(value: object, where: str) -> float:
    v = number(value, where)
    if not (math.isfinite(v) and v >= 1):
        raise ValueError(f"{where} must be a finite number >= 1, got {value!r}")
    return v


def probability(value: object, where: str) -> float:
    v = number(value, where)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{where} must be a probability in [0, 1), got {value!r}")
    return v


def integer(value: object, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def worker_id(value: object, where: str, n: int) -> int:
    i = integer(value, where)
    if i >= n:
        raise ValueError(f"{where} names worker {i}, but the workers are 0..{n - 1} (n = {n})")
    return i


def value_range(value: object, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{where} must be a [low, high] pair, got {value!r}")
    lo = positive(value[0], f"{where}[0]")
    hi = positive(value[1], f"{where}[1]")
    if lo > hi:
        raise ValueError(f"{where} must be a [low, high] pair with low <= high, got {value!r}")
    return lo, hi


def ms_to_s(value: float) -> float:
    return value * 1e-3


def gbps_to_bytes_per_s(value: float) -> float:
    return value * 1e9 / 8
