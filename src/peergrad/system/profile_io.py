"""Reading a system profile's parts from a parsed TOML mapping and a links CSV file (the schema:
:mod:`peergrad.system.profile`). Every unknown key is an error that names it and lists the
allowed ones. Split out of :mod:`peergrad.system.profile` (issue 25), whose
:meth:`~peergrad.system.SystemProfile.from_dict` assembles the parts.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from peergrad.system.checks import (
    at_least_one,
    gbps_to_bytes_per_s,
    integer,
    ms_to_s,
    nonneg,
    number,
    positive,
    value_range,
    worker_id,
)
from peergrad.system.components import (
    ComputeProfile,
    FailureProfile,
    LinkOverride,
    LinkProfile,
    OfflineInterval,
)

__all__ = [
    "TOP_KEYS",
    "check_keys",
    "compute_from",
    "failures_from",
    "links_from",
    "load_link_csv",
    "table",
]

TOP_KEYS = ("compute", "failures", "links", "n_workers", "name", "seed")
_COMPUTE_KEYS = (
    "device_flops",
    "flops_per_step",
    "jitter_sigma",
    "persistent_slowdown",
    "persistent_stragglers",
    "speed",
    "step_ms",
    "straggler_prob",
    "straggler_slowdown",
)
_LINK_KEYS = (
    "bandwidth_gbps",
    "file",
    "groups",
    "inter_bandwidth_gbps",
    "inter_latency_ms",
    "intra_bandwidth_gbps",
    "intra_latency_ms",
    "latency_ms",
    "link",
    "random_bandwidth_gbps",
    "random_latency_ms",
    "seed",
)
_LINK_ENTRY_KEYS = ("bandwidth_gbps", "dst", "latency_ms", "src")
_FAILURE_KEYS = ("leave_prob", "link_drop_prob", "mean_downtime_steps", "offline")
_OFFLINE_KEYS = ("start_step", "stop_step", "worker")


def check_keys(data: Mapping[str, Any], allowed: Iterable[str], prefix: str, source: str) -> None:
    allowed = tuple(allowed)
    for key in data:
        if key not in allowed:
            raise ValueError(
                f"unknown key {prefix + key!r} in {source}; allowed keys"
                f"{' in [' + prefix.rstrip('.') + ']' if prefix else ''}: {', '.join(allowed)}"
            )


def table(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} in {source} must be a table ([{key}]), got {value!r}")
    return value


def _entries(value: object, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError(f"{where} must be an array of tables ([[{where}]]), got {value!r}")
    return value


def compute_from(t: Mapping[str, Any], n: int, source: str) -> ComputeProfile:
    check_keys(t, _COMPUTE_KEYS, "compute.", source)
    speed: tuple[float, ...] | None = None
    if "speed" in t:
        if "persistent_stragglers" in t:
            raise ValueError("compute: give speed or persistent_stragglers, not both")
        if not isinstance(t["speed"], list):
            raise ValueError(f"compute.speed must be a list of n numbers, got {t['speed']!r}")
        speed = tuple(t["speed"])
    elif "persistent_stragglers" in t:
        ids = t["persistent_stragglers"]
        if not isinstance(ids, list):
            raise ValueError(f"compute.persistent_stragglers must be a list of ids, got {ids!r}")
        slowdown = at_least_one(t.get("persistent_slowdown", 4.0), "compute.persistent_slowdown")
        slow = {worker_id(w, "compute.persistent_stragglers", n) for w in ids}
        speed = tuple(1.0 / slowdown if i in slow else 1.0 for i in range(n))
    elif "persistent_slowdown" in t:
        raise ValueError("compute.persistent_slowdown needs compute.persistent_stragglers")

    def opt(key: str) -> float | None:
        return None if key not in t else number(t[key], f"compute.{key}")

    return ComputeProfile(
        step_ms=opt("step_ms"),
        flops_per_step=opt("flops_per_step"),
        device_flops=opt("device_flops"),
        speed=speed,
        jitter_sigma=number(t.get("jitter_sigma", 0.0), "compute.jitter_sigma"),
        straggler_prob=number(t.get("straggler_prob", 0.0), "compute.straggler_prob"),
        straggler_slowdown=number(t.get("straggler_slowdown", 1.0), "compute.straggler_slowdown"),
    )


def _link_entry(e: Mapping[str, Any], where: str) -> LinkOverride:
    check_keys(e, _LINK_ENTRY_KEYS, f"{where}.", where)
    for key in _LINK_ENTRY_KEYS:
        if key not in e:
            raise ValueError(f"{where} needs the key {key!r} (keys: {', '.join(_LINK_ENTRY_KEYS)})")
    return LinkOverride(
        integer(e["src"], f"{where}.src"),
        integer(e["dst"], f"{where}.dst"),
        ms_to_s(nonneg(e["latency_ms"], f"{where}.latency_ms")),
        gbps_to_bytes_per_s(positive(e["bandwidth_gbps"], f"{where}.bandwidth_gbps")),
    )


def load_link_csv(path: str | Path) -> tuple[LinkOverride, ...]:
    """Per-link entries from a CSV file with header ``src,dst,latency_ms,bandwidth_gbps``."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ValueError(f"cannot read links.file {str(path)!r}: {e}") from None
    out = []
    for r, row in enumerate(rows, start=2):
        where = f"{path.name} line {r}"
        if set(row) != set(_LINK_ENTRY_KEYS):
            raise ValueError(
                f"{path.name}: the header must be src,dst,latency_ms,bandwidth_gbps, "
                f"got {','.join(str(k) for k in row)}"
            )
        try:
            values = {
                "src": int(row["src"]),
                "dst": int(row["dst"]),
                "latency_ms": float(row["latency_ms"]),
                "bandwidth_gbps": float(row["bandwidth_gbps"]),
            }
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: expected integers src, dst and numbers, got {row}"
            ) from None
        out.append(_link_entry(values, where))
    return tuple(out)


def links_from(t: Mapping[str, Any], source: str, base_dir: Path) -> LinkProfile:
    check_keys(t, _LINK_KEYS, "links.", source)

    def ms(key: str) -> float | None:
        return None if key not in t else ms_to_s(nonneg(t[key], f"links.{key}"))

    def gbps(key: str) -> float | None:
        return None if key not in t else gbps_to_bytes_per_s(positive(t[key], f"links.{key}"))

    def rng(key: str, conv: Callable[[float], float]) -> tuple[float, float] | None:
        if key not in t:
            return None
        lo, hi = value_range(t[key], f"links.{key}")
        return conv(lo), conv(hi)

    groups = t.get("groups")
    if groups is not None:
        if not isinstance(groups, list):
            raise ValueError(f"links.groups must be a list of lists of worker ids, got {groups!r}")
        groups = tuple(tuple(g) if isinstance(g, list) else g for g in groups)
    overrides: list[LinkOverride] = []
    if "file" in t:
        if not isinstance(t["file"], str):
            raise ValueError(f"links.file must be a path (string), got {t['file']!r}")
        overrides.extend(load_link_csv(base_dir / t["file"]))
    for i, e in enumerate(_entries(t.get("link", []), "links.link")):
        overrides.append(_link_entry(e, f"links.link[{i}]"))
    default = LinkProfile()
    latency = ms("latency_ms")
    bandwidth = gbps("bandwidth_gbps")
    return LinkProfile(
        latency_s=default.latency_s if latency is None else latency,
        bandwidth_bytes_per_s=default.bandwidth_bytes_per_s if bandwidth is None else bandwidth,
        groups=groups,
        intra_latency_s=ms("intra_latency_ms"),
        intra_bandwidth_bytes_per_s=gbps("intra_bandwidth_gbps"),
        inter_latency_s=ms("inter_latency_ms"),
        inter_bandwidth_bytes_per_s=gbps("inter_bandwidth_gbps"),
        random_latency_s=rng("random_latency_ms", ms_to_s),
        random_bandwidth_bytes_per_s=rng("random_bandwidth_gbps", gbps_to_bytes_per_s),
        seed=integer(t.get("seed", 0), "links.seed"),
        overrides=tuple(overrides),
    )


def failures_from(t: Mapping[str, Any], source: str) -> FailureProfile:
    check_keys(t, _FAILURE_KEYS, "failures.", source)
    offline = []
    for i, e in enumerate(_entries(t.get("offline", []), "failures.offline")):
        where = f"failures.offline[{i}]"
        check_keys(e, _OFFLINE_KEYS, f"{where}.", source)
        for key in _OFFLINE_KEYS:
            if key not in e:
                raise ValueError(
                    f"{where} needs the key {key!r} (keys: {', '.join(_OFFLINE_KEYS)})"
                )
        offline.append(
            OfflineInterval(
                integer(e["worker"], f"{where}.worker"),
                integer(e["start_step"], f"{where}.start_step"),
                integer(e["stop_step"], f"{where}.stop_step"),
            )
        )
    return FailureProfile(
        link_drop_prob=number(t.get("link_drop_prob", 0.0), "failures.link_drop_prob"),
        leave_prob=number(t.get("leave_prob", 0.0), "failures.leave_prob"),
        mean_downtime_steps=number(
            t.get("mean_downtime_steps", 1.0), "failures.mean_downtime_steps"
        ),
        offline=tuple(offline),
    )
