"""The parts of a system profile: compute, links and failures.

The model they describe and the TOML schema: :mod:`peergrad.system.profile`.

Frozen dataclasses, each validated at construction; :class:`~peergrad.system.SystemProfile`
holds one of each for n workers. Split out of :mod:`peergrad.system.profile` (issue 25), which
re-exports every name here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from peergrad.system.checks import (
    at_least_one,
    integer,
    nonneg,
    positive,
    probability,
    value_range,
    worker_id,
)

__all__ = [
    "ComputeProfile",
    "FailureProfile",
    "LinkOverride",
    "LinkProfile",
    "OfflineInterval",
    "count_step_flops",
]


@dataclass(frozen=True)
class ComputeProfile:
    """Time of one local step per worker (see the module docstring for the model).

    Attributes:
        step_ms: time of one step of a speed-1 worker, milliseconds (``>= 0``); exclusive with
            ``flops_per_step``. Neither given (and no ``device_flops``): computation is left out
            (time 0), as the alpha-beta ``simulated_comm_time_s`` does.
        flops_per_step: FLOPs of one step (``> 0``); needs ``device_flops``.
        device_flops: throughput of a speed-1 worker, FLOP/s (``> 0``). Alone, the step time is
            pending until :meth:`SystemProfile.with_flops_per_step` supplies the FLOPs.
        speed: per-worker speed factors (``> 0``, n values; ``None``: all 1). Worker i's step
            takes ``step_s / speed[i]``: a persistent straggler has ``speed < 1``.
        jitter_sigma: sigma of the mean-one log-normal factor on every step's time (``>= 0``).
        straggler_prob: probability that a worker is a transient straggler in a step, [0, 1).
        straggler_slowdown: a transient straggler's slowdown factor (``>= 1``).
    """

    step_ms: float | None = None
    flops_per_step: float | None = None
    device_flops: float | None = None
    speed: tuple[float, ...] | None = None
    jitter_sigma: float = 0.0
    straggler_prob: float = 0.0
    straggler_slowdown: float = 1.0

    def __post_init__(self) -> None:
        if self.step_ms is not None:
            nonneg(self.step_ms, "compute.step_ms")
            if self.flops_per_step is not None or self.device_flops is not None:
                raise ValueError(
                    "compute: give either step_ms or flops_per_step/device_flops, not both"
                )
        if self.flops_per_step is not None:
            positive(self.flops_per_step, "compute.flops_per_step")
            if self.device_flops is None:
                raise ValueError("compute.flops_per_step needs compute.device_flops (FLOP/s)")
        if self.device_flops is not None:
            positive(self.device_flops, "compute.device_flops")
        if self.speed is not None:
            object.__setattr__(
                self,
                "speed",
                tuple(positive(s, f"compute.speed[{i}]") for i, s in enumerate(self.speed)),
            )
        nonneg(self.jitter_sigma, "compute.jitter_sigma")
        probability(self.straggler_prob, "compute.straggler_prob")
        at_least_one(self.straggler_slowdown, "compute.straggler_slowdown")

    @property
    def step_s(self) -> float | None:
        """Seconds of one step of a speed-1 worker; ``None`` while the FLOPs are pending."""
        if self.step_ms is not None:
            return self.step_ms * 1e-3
        if self.flops_per_step is not None and self.device_flops is not None:
            return self.flops_per_step / self.device_flops
        if self.device_flops is not None:
            return None
        return 0.0


# ---------------------------------------------------------------------------- links
@dataclass(frozen=True)
class LinkOverride:
    """One directed link's own latency (seconds, ``>= 0``) and bandwidth (bytes/s, ``> 0``)."""

    src: int
    dst: int
    latency_s: float
    bandwidth_bytes_per_s: float

    def __post_init__(self) -> None:
        integer(self.src, "links.link.src")
        integer(self.dst, "links.link.dst")
        if self.src == self.dst:
            raise ValueError(f"links.link: src and dst must differ, got {self.src} -> {self.dst}")
        nonneg(self.latency_s, "links.link.latency_s")
        positive(self.bandwidth_bytes_per_s, "links.link.bandwidth_bytes_per_s")


@dataclass(frozen=True)
class LinkProfile:
    """Latency (seconds) and bandwidth (bytes/s) of every directed link.

    Resolution order: the default ``latency_s``/``bandwidth_bytes_per_s``; then either
    ``groups`` (intra-/inter-group values, each defaulting to the default) or the random ranges
    (log-uniform per directed link, drawn once from ``seed``); then ``overrides``. The default
    (1 ms, 10 Gbit/s) is :class:`NetworkModel`'s.

    Attributes:
        latency_s, bandwidth_bytes_per_s: default values (``>= 0``, ``> 0``).
        groups: racks as tuples of worker ids; every worker in exactly one group.
        intra_latency_s, intra_bandwidth_bytes_per_s, inter_latency_s,
            inter_bandwidth_bytes_per_s: values within and between groups (``None``: default).
        random_latency_s, random_bandwidth_bytes_per_s: ``(low, high)`` log-uniform ranges.
        seed: seed of the random links.
        overrides: explicit per-link values, last wins.
    """

    latency_s: float = 1e-3
    bandwidth_bytes_per_s: float = 10e9 / 8
    groups: tuple[tuple[int, ...], ...] | None = None
    intra_latency_s: float | None = None
    intra_bandwidth_bytes_per_s: float | None = None
    inter_latency_s: float | None = None
    inter_bandwidth_bytes_per_s: float | None = None
    random_latency_s: tuple[float, float] | None = None
    random_bandwidth_bytes_per_s: tuple[float, float] | None = None
    seed: int = 0
    overrides: tuple[LinkOverride, ...] = ()

    def __post_init__(self) -> None:
        nonneg(self.latency_s, "links.latency_s")
        positive(self.bandwidth_bytes_per_s, "links.bandwidth_bytes_per_s")
        for name in ("intra_latency_s", "inter_latency_s"):
            if getattr(self, name) is not None:
                nonneg(getattr(self, name), f"links.{name}")
        for name in ("intra_bandwidth_bytes_per_s", "inter_bandwidth_bytes_per_s"):
            if getattr(self, name) is not None:
                positive(getattr(self, name), f"links.{name}")
        if self.random_latency_s is not None:
            object.__setattr__(
                self,
                "random_latency_s",
                value_range(self.random_latency_s, "links.random_latency_s"),
            )
        if self.random_bandwidth_bytes_per_s is not None:
            object.__setattr__(
                self,
                "random_bandwidth_bytes_per_s",
                value_range(
                    self.random_bandwidth_bytes_per_s, "links.random_bandwidth_bytes_per_s"
                ),
            )
        integer(self.seed, "links.seed")
        if self.groups is not None:
            if self.random_latency_s is not None or self.random_bandwidth_bytes_per_s is not None:
                raise ValueError("links: give groups or random ranges, not both")
            seen: dict[int, int] = {}
            groups = []
            for g, members in enumerate(self.groups):
                if not isinstance(members, list | tuple) or not members:
                    raise ValueError(
                        f"links.groups[{g}] must be a non-empty list of worker ids, got {members!r}"
                    )
                ids = tuple(integer(w, f"links.groups[{g}]") for w in members)
                for w in ids:
                    if w in seen:
                        raise ValueError(
                            f"links.groups: worker {w} is in group {seen[w]} and group {g}; "
                            "groups must not overlap"
                        )
                    seen[w] = g
                groups.append(ids)
            object.__setattr__(self, "groups", tuple(groups))
        for i, o in enumerate(self.overrides):
            if not isinstance(o, LinkOverride):
                raise ValueError(f"links.link[{i}] must be a LinkOverride, got {o!r}")

    @property
    def is_uniform(self) -> bool:
        """Whether every link has the default latency and bandwidth."""
        return (
            self.groups is None
            and self.random_latency_s is None
            and self.random_bandwidth_bytes_per_s is None
            and not self.overrides
        )

    def check_workers(self, n: int) -> None:
        """Raise ValueError if a group or override names a worker outside ``0..n-1``, or the
        groups leave a worker out."""
        if self.groups is not None:
            for g, members in enumerate(self.groups):
                for w in members:
                    worker_id(w, f"links.groups[{g}]", n)
            listed = {w for members in self.groups for w in members}
            missing = [w for w in range(n) if w not in listed]
            if missing:
                raise ValueError(
                    f"links.groups leave out worker(s) {missing[:10]}; every worker 0..{n - 1} "
                    "must be in exactly one group"
                )
        for i, o in enumerate(self.overrides):
            worker_id(o.src, f"links.link[{i}].src", n)
            worker_id(o.dst, f"links.link[{i}].dst", n)

    def matrices(self, n: int) -> tuple[Tensor, Tensor]:
        """Latency (s) and bandwidth (bytes/s) of every directed link ``src -> dst``.

        Returns float64 ``[n, n]`` tensors indexed ``[src, dst]`` (the diagonal is unused).
        O(n^2) memory: 16 MiB at n = 1024.
        """
        self.check_workers(n)
        lat = torch.full((n, n), self.latency_s, dtype=torch.float64)
        bw = torch.full((n, n), self.bandwidth_bytes_per_s, dtype=torch.float64)
        if self.groups is not None:
            gid = torch.empty(n, dtype=torch.int64)
            for g, members in enumerate(self.groups):
                gid[list(members)] = g
            same = gid[:, None] == gid[None, :]
            intra_l = self.latency_s if self.intra_latency_s is None else self.intra_latency_s
            inter_l = self.latency_s if self.inter_latency_s is None else self.inter_latency_s
            intra_b = self.bandwidth_bytes_per_s
            if self.intra_bandwidth_bytes_per_s is not None:
                intra_b = self.intra_bandwidth_bytes_per_s
            inter_b = self.bandwidth_bytes_per_s
            if self.inter_bandwidth_bytes_per_s is not None:
                inter_b = self.inter_bandwidth_bytes_per_s

            def f64(v: float) -> Tensor:
                return torch.tensor(v, dtype=torch.float64)

            lat = torch.where(same, f64(intra_l), f64(inter_l))
            bw = torch.where(same, f64(intra_b), f64(inter_b))
        gen = torch.Generator().manual_seed(self.seed)
        for rng, target in (
            (self.random_latency_s, lat),
            (self.random_bandwidth_bytes_per_s, bw),
        ):
            if rng is not None:
                lo, hi = math.log(rng[0]), math.log(rng[1])
                u = torch.rand((n, n), generator=gen, dtype=torch.float64)
                target.copy_(torch.exp(lo + (hi - lo) * u))
        for o in self.overrides:
            lat[o.src, o.dst] = o.latency_s
            bw[o.src, o.dst] = o.bandwidth_bytes_per_s
        return lat, bw


# ---------------------------------------------------------------------------- failures
@dataclass(frozen=True)
class OfflineInterval:
    """Worker ``worker`` is absent in steps ``start_step <= k < stop_step``."""

    worker: int
    start_step: int
    stop_step: int

    def __post_init__(self) -> None:
        integer(self.worker, "failures.offline.worker")
        integer(self.start_step, "failures.offline.start_step")
        integer(self.stop_step, "failures.offline.stop_step", minimum=self.start_step + 1)


@dataclass(frozen=True)
class FailureProfile:
    """Link drops and worker churn (see the module docstring).

    Attributes:
        link_drop_prob: probability that an undirected link is down in a gossip round, [0, 1).
        leave_prob: probability that a present worker leaves at a step, [0, 1).
        mean_downtime_steps: mean of the geometric number of steps (``>= 1``) a worker that
            leaves stays away.
        offline: scheduled absences.
    """

    link_drop_prob: float = 0.0
    leave_prob: float = 0.0
    mean_downtime_steps: float = 1.0
    offline: tuple[OfflineInterval, ...] = ()

    def __post_init__(self) -> None:
        probability(self.link_drop_prob, "failures.link_drop_prob")
        probability(self.leave_prob, "failures.leave_prob")
        at_least_one(self.mean_downtime_steps, "failures.mean_downtime_steps")
        for i, o in enumerate(self.offline):
            if not isinstance(o, OfflineInterval):
                raise ValueError(f"failures.offline[{i}] must be an OfflineInterval, got {o!r}")

    @property
    def any(self) -> bool:
        """Whether any failure can happen."""
        return self.link_drop_prob > 0 or self.leave_prob > 0 or bool(self.offline)

    @property
    def options(self) -> list[str]:
        """The failure options in force, named as in the TOML file (for error messages)."""
        named = (
            ("failures.link_drop_prob", self.link_drop_prob > 0),
            ("failures.leave_prob", self.leave_prob > 0),
            ("failures.offline", bool(self.offline)),
        )
        return [name for name, on in named if on]


# ---------------------------------------------------------------------------- FLOPs
def count_step_flops(
    model: nn.Module,
    example_batch: tuple[Any, Any],
    loss_fn: Callable[[Any, Any], Tensor],
) -> int:
    """FLOPs of one forward and backward pass on ``example_batch = (inputs, targets)``.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and
    convolutions; element-wise operations are not counted) on a deep copy of ``model``, so the
    model's gradients and buffers are untouched. The optimizer update is not counted (O(D),
    negligible next to the passes).
    """
    from torch.utils.flop_counter import FlopCounterMode

    clone = copy.deepcopy(model)
    params = [p for p in clone.parameters() if p.requires_grad]
    inputs, targets = example_batch
    counter = FlopCounterMode(display=False)
    with counter:
        loss = loss_fn(clone(inputs), targets)
        if params:
            torch.autograd.grad(loss, params)
    return int(counter.get_total_flops())
