"""What ``peergrad system PRESET|FILE.toml --workers N`` prints: a profile in a few numbers.

:func:`profile_report` summarises a :class:`~peergrad.system.SystemProfile` for n workers as an
ordered, JSON-serialisable dict, in the TOML file's units (milliseconds, Gbit/s): the compute
model (step time, speed factors, persistent and transient stragglers), the links (latency and
bandwidth over the n (n - 1) directed links: min, median, max; groups and per-link entries) and
the failures.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from peergrad.system.profile import SystemProfile

__all__ = ["profile_report"]

_LISTED = 10  # ids and intervals listed before "... (k more)"


def _stats(values: Tensor) -> tuple[float, float, float]:
    """Min, median (the lower middle value, as ``torch.median``) and max of a float64 tensor."""
    return float(values.min()), float(values.median()), float(values.max())


def _listed(items: list[Any]) -> str:
    head = ", ".join(str(i) for i in items[:_LISTED])
    more = len(items) - _LISTED
    return head + (f" ... ({more} more)" if more > 0 else "") if items else "none"


def profile_report(
    profile: SystemProfile, *, flops_per_step: float | None = None
) -> dict[str, Any]:
    """The profile's summary (see the module docstring).

    ``flops_per_step``: the FLOPs of one step, for a profile that gives only
    ``compute.device_flops`` (its step time then comes from the model at run time; without it
    the step time is reported as pending). O(n^2) for non-uniform links (the link matrices).
    """
    n = profile.n_workers
    if flops_per_step is not None:
        profile = profile.with_flops_per_step(flops_per_step)
    c, links, f = profile.compute, profile.links, profile.failures
    out: dict[str, Any] = {"name": profile.name, "n_workers": n, "seed": profile.seed}
    speeds = profile.speeds()
    step_s = profile.step_s
    if step_s is None:
        out["compute.step_ms"] = (
            "FLOPs of one step / device_flops, counted from the model at run time "
            "(give --flops-per-step to see it here)"
        )
    else:
        out["compute.step_ms"] = step_s * 1e3
    if c.device_flops is not None:
        out["compute.device_flops"] = c.device_flops
    if c.flops_per_step is not None:
        out["compute.flops_per_step"] = c.flops_per_step
    lo, mid, hi = _stats(speeds)
    out["compute.speed min/median/max"] = f"{lo:.6g} / {mid:.6g} / {hi:.6g}"
    slow = (speeds < 1).nonzero()[:, 0].tolist()
    out["compute.persistent_stragglers"] = _listed(slow)
    if step_s is not None:
        per_worker_ms = step_s * 1e3 / speeds
        out["compute.slowest_step_ms"] = float(per_worker_ms.max())
    out["compute.jitter_sigma"] = c.jitter_sigma
    out["compute.straggler_prob"] = c.straggler_prob
    out["compute.straggler_slowdown"] = c.straggler_slowdown
    if links.is_uniform:
        shape = "uniform"
    elif links.groups is not None:
        shape = f"{len(links.groups)} groups (sizes {_listed([len(g) for g in links.groups])})"
    elif links.random_latency_s is not None or links.random_bandwidth_bytes_per_s is not None:
        shape = f"random per link (seed {links.seed})"
    else:
        shape = "uniform with per-link entries"
    if links.overrides:
        shape += f", {len(links.overrides)} per-link entries"
    out["links.shape"] = shape
    if n < 2:
        out["links.latency_ms min/median/max"] = "no links (one worker)"
        out["links.bandwidth_gbps min/median/max"] = "no links (one worker)"
    else:
        if links.is_uniform:
            lat = torch.tensor([links.latency_s], dtype=torch.float64)
            bw = torch.tensor([links.bandwidth_bytes_per_s], dtype=torch.float64)
        else:
            lat_m, bw_m = links.matrices(n)
            off = ~torch.eye(n, dtype=torch.bool)
            lat, bw = lat_m[off], bw_m[off]
        lo, mid, hi = _stats(lat * 1e3)
        out["links.latency_ms min/median/max"] = f"{lo:.6g} / {mid:.6g} / {hi:.6g}"
        lo, mid, hi = _stats(bw * 8 / 1e9)
        out["links.bandwidth_gbps min/median/max"] = f"{lo:.6g} / {mid:.6g} / {hi:.6g}"
    out["failures.link_drop_prob"] = f.link_drop_prob
    out["failures.leave_prob"] = f.leave_prob
    out["failures.mean_downtime_steps"] = f.mean_downtime_steps
    out["failures.offline"] = _listed(
        [f"worker {o.worker} steps [{o.start_step}, {o.stop_step})" for o in f.offline]
    )
    return out
