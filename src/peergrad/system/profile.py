"""System profiles: how fast each worker computes, how fast each link is, what fails.

A :class:`SystemProfile` describes the *system* n workers run on, independently of the
algorithm: it is what :class:`peergrad.system.SystemClock` turns into per-worker simulated time.
It is built from a preset (:data:`PRESETS`), a TOML file (:meth:`SystemProfile.from_toml`), or
in Python from the frozen dataclasses below. Every field is validated at construction; a bad
value raises one ``ValueError`` line that names the field (as in the TOML file) and the allowed
range.

What is modelled (units: seconds, bytes, bytes per second; the TOML file uses milliseconds and
gigabits per second, converted exactly as :meth:`NetworkModel.from_ms_gbps` does):

- *compute*: one local step (forward, backward, update) of worker i takes
  ``step_s / speed[i]``, multiplied each step by a log-normal jitter
  ``exp(jitter_sigma * z - jitter_sigma**2 / 2)`` (mean one: our choice, so that jitter adds
  variance but not average slowness) and, with probability ``straggler_prob``, by
  ``straggler_slowdown`` (a transient straggler, the setting of AD-PSGD: Lian et al., "Asynchronous
  Decentralized Parallel Stochastic Gradient Descent", ICML 2018, arXiv:1710.06952). A persistent
  straggler is a worker with ``speed < 1``. ``step_s`` is ``step_ms / 1000`` or
  ``flops_per_step / device_flops`` (count the FLOPs of a model with :func:`count_step_flops`);
- *links*: every directed link ``j -> i`` has a latency (seconds) and a bandwidth (bytes/s), as in
  the alpha-beta model of :class:`peergrad.comm.NetworkModel` but per link (slow and
  high-latency networks are where Lian et al., "Can Decentralized Algorithms Outperform
  Centralized Algorithms?", NeurIPS 2017, arXiv:1705.09056, show D-PSGD beating all-reduce).
  Shorthands: uniform; groups (racks: intra- and inter-group values); random per link
  (log-uniform ranges, seeded); explicit per-link entries (in the TOML file or a CSV file);
- *failures*: each undirected link is down with probability ``link_drop_prob`` in each gossip
  round (independently); workers leave and rejoin, on a schedule (``offline`` intervals, in
  steps) or at random (each present worker leaves with probability ``leave_prob`` per step and
  stays away a geometric number of steps of mean ``mean_downtime_steps``).

What is not modelled: contention inside the network (two flows sharing a switch), congestion
control, packet loss within a message, memory or I/O time, the time to detect a failure, and
the cost of rejoining (a returning worker resumes with the state it left with).

TOML schema (every key optional; an unknown key is an error that names it and lists the
allowed ones; a file written for another number of workers is an error)::

    name = "two-racks"          # label in reports
    n_workers = 8               # if given, must equal the run's number of workers
    seed = 0                    # seeds the clock's random draws (jitter, stragglers, failures)

    [compute]
    step_ms = 5.0               # time of one local step, ms (>= 0) ...
    # flops_per_step = 2.0e9    # ... or FLOPs of one step (> 0) together with
    # device_flops = 1.0e13     #     the device throughput, FLOP/s (> 0); device_flops alone:
    #                           #     the FLOPs are counted from the model when wired in
    speed = [1, 1, 1, 0.25, 1, 1, 1, 1]  # per-worker speed factors (> 0), n values ...
    # persistent_stragglers = [3]        # ... or these workers are persistent_slowdown x slower
    # persistent_slowdown = 4.0          #     (>= 1)
    jitter_sigma = 0.1          # log-normal jitter of each step's time (>= 0)
    straggler_prob = 0.05       # transient straggler probability per worker per step, [0, 1)
    straggler_slowdown = 4.0    # its slowdown factor (>= 1)

    [links]
    latency_ms = 1.0            # default latency of every directed link, ms (>= 0)
    bandwidth_gbps = 10.0       # default bandwidth, Gbit/s (> 0)
    groups = [[0, 1, 2, 3], [4, 5, 6, 7]]  # racks: every worker in exactly one group
    intra_latency_ms = 0.01     # within a group (default: latency_ms)
    intra_bandwidth_gbps = 100.0
    inter_latency_ms = 5.0      # between groups (default: latency_ms)
    inter_bandwidth_gbps = 1.0
    # random_latency_ms = [0.1, 10.0]     # instead of groups: log-uniform per directed link
    # random_bandwidth_gbps = [0.1, 10.0]
    # seed = 0                            # seed of the random links
    # file = "links.csv"          # per-link entries, header src,dst,latency_ms,bandwidth_gbps
    [[links.link]]              # explicit entries override everything above
    src = 3
    dst = 4
    latency_ms = 20.0
    bandwidth_gbps = 0.1

    [failures]
    link_drop_prob = 0.1        # per undirected link per gossip round, [0, 1)
    leave_prob = 0.01           # per present worker per step, [0, 1)
    mean_downtime_steps = 20.0  # mean steps away after leaving (>= 1)
    [[failures.offline]]        # scheduled absence: worker is away for steps [start, stop)
    worker = 5
    start_step = 100
    stop_step = 150

See ``examples/system_two_racks.toml`` for a complete file.
"""

from __future__ import annotations

import copy
import csv
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from peergrad.comm.base import NetworkModel

__all__ = [
    "PRESETS",
    "ComputeProfile",
    "FailureProfile",
    "LinkOverride",
    "LinkProfile",
    "OfflineInterval",
    "SystemProfile",
    "count_step_flops",
    "load_link_csv",
    "load_profile",
]


# ---------------------------------------------------------------------------- validation
def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return float(value)


def _nonneg(value: object, where: str) -> float:
    v = _number(value, where)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return v


def _positive(value: object, where: str) -> float:
    v = _number(value, where)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{where} must be a finite number > 0, got {value!r}")
    return v


def _at_least_one(value: object, where: str) -> float:
    v = _number(value, where)
    if not (math.isfinite(v) and v >= 1):
        raise ValueError(f"{where} must be a finite number >= 1, got {value!r}")
    return v


def _probability(value: object, where: str) -> float:
    v = _number(value, where)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{where} must be a probability in [0, 1), got {value!r}")
    return v


def _int(value: object, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def _worker(value: object, where: str, n: int) -> int:
    i = _int(value, where)
    if i >= n:
        raise ValueError(f"{where} names worker {i}, but the workers are 0..{n - 1} (n = {n})")
    return i


def _range(value: object, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{where} must be a [low, high] pair, got {value!r}")
    lo = _positive(value[0], f"{where}[0]")
    hi = _positive(value[1], f"{where}[1]")
    if lo > hi:
        raise ValueError(f"{where} must be a [low, high] pair with low <= high, got {value!r}")
    return lo, hi


def _ms(value: float) -> float:
    return value * 1e-3


def _gbps(value: float) -> float:
    return value * 1e9 / 8


# ---------------------------------------------------------------------------- compute
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
            _nonneg(self.step_ms, "compute.step_ms")
            if self.flops_per_step is not None or self.device_flops is not None:
                raise ValueError(
                    "compute: give either step_ms or flops_per_step/device_flops, not both"
                )
        if self.flops_per_step is not None:
            _positive(self.flops_per_step, "compute.flops_per_step")
            if self.device_flops is None:
                raise ValueError("compute.flops_per_step needs compute.device_flops (FLOP/s)")
        if self.device_flops is not None:
            _positive(self.device_flops, "compute.device_flops")
        if self.speed is not None:
            object.__setattr__(
                self,
                "speed",
                tuple(_positive(s, f"compute.speed[{i}]") for i, s in enumerate(self.speed)),
            )
        _nonneg(self.jitter_sigma, "compute.jitter_sigma")
        _probability(self.straggler_prob, "compute.straggler_prob")
        _at_least_one(self.straggler_slowdown, "compute.straggler_slowdown")

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
        _int(self.src, "links.link.src")
        _int(self.dst, "links.link.dst")
        if self.src == self.dst:
            raise ValueError(f"links.link: src and dst must differ, got {self.src} -> {self.dst}")
        _nonneg(self.latency_s, "links.link.latency_s")
        _positive(self.bandwidth_bytes_per_s, "links.link.bandwidth_bytes_per_s")


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
        _nonneg(self.latency_s, "links.latency_s")
        _positive(self.bandwidth_bytes_per_s, "links.bandwidth_bytes_per_s")
        for name in ("intra_latency_s", "inter_latency_s"):
            if getattr(self, name) is not None:
                _nonneg(getattr(self, name), f"links.{name}")
        for name in ("intra_bandwidth_bytes_per_s", "inter_bandwidth_bytes_per_s"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), f"links.{name}")
        if self.random_latency_s is not None:
            object.__setattr__(
                self, "random_latency_s", _range(self.random_latency_s, "links.random_latency_s")
            )
        if self.random_bandwidth_bytes_per_s is not None:
            object.__setattr__(
                self,
                "random_bandwidth_bytes_per_s",
                _range(self.random_bandwidth_bytes_per_s, "links.random_bandwidth_bytes_per_s"),
            )
        _int(self.seed, "links.seed")
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
                ids = tuple(_int(w, f"links.groups[{g}]") for w in members)
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
                    _worker(w, f"links.groups[{g}]", n)
            listed = {w for members in self.groups for w in members}
            missing = [w for w in range(n) if w not in listed]
            if missing:
                raise ValueError(
                    f"links.groups leave out worker(s) {missing[:10]}; every worker 0..{n - 1} "
                    "must be in exactly one group"
                )
        for i, o in enumerate(self.overrides):
            _worker(o.src, f"links.link[{i}].src", n)
            _worker(o.dst, f"links.link[{i}].dst", n)

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
        _int(self.worker, "failures.offline.worker")
        _int(self.start_step, "failures.offline.start_step")
        _int(self.stop_step, "failures.offline.stop_step", minimum=self.start_step + 1)


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
        _probability(self.link_drop_prob, "failures.link_drop_prob")
        _probability(self.leave_prob, "failures.leave_prob")
        _at_least_one(self.mean_downtime_steps, "failures.mean_downtime_steps")
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


# ---------------------------------------------------------------------------- profile
@dataclass(frozen=True)
class SystemProfile:
    """Everything the simulated clock needs to know about the system n workers run on.

    Args:
        n_workers: number of workers n (``>= 1``).
        compute: see :class:`ComputeProfile`.
        links: see :class:`LinkProfile`.
        failures: see :class:`FailureProfile`.
        seed: seed of the clock's random draws (jitter, stragglers, link drops, churn).
        name: label used in reports.

    Raises:
        ValueError: one line naming the field and the allowed range, also when a per-worker
            value (``speed``, a group, a link, an offline interval) does not fit n workers.
    """

    n_workers: int
    compute: ComputeProfile = field(default_factory=ComputeProfile)
    links: LinkProfile = field(default_factory=LinkProfile)
    failures: FailureProfile = field(default_factory=FailureProfile)
    seed: int = 0
    name: str = "custom"

    def __post_init__(self) -> None:
        n = _int(self.n_workers, "n_workers", minimum=1)
        _int(self.seed, "seed")
        if self.compute.speed is not None and len(self.compute.speed) != n:
            raise ValueError(
                f"compute.speed has {len(self.compute.speed)} values but there are "
                f"n = {n} workers; the profile was written for another number of workers"
            )
        self.links.check_workers(n)
        for i, o in enumerate(self.failures.offline):
            _worker(o.worker, f"failures.offline[{i}].worker", n)

    # ------------------------------------------------------------------ derived
    @property
    def step_s(self) -> float | None:
        """Seconds of one step of a speed-1 worker (``None`` while the FLOPs are pending)."""
        return self.compute.step_s

    def speeds(self) -> Tensor:
        """Per-worker speed factors, float64 ``[n]``."""
        if self.compute.speed is None:
            return torch.ones(self.n_workers, dtype=torch.float64)
        return torch.tensor(self.compute.speed, dtype=torch.float64)

    def with_flops_per_step(self, flops_per_step: float) -> SystemProfile:
        """This profile with the step's FLOPs filled in (for a profile giving only
        ``device_flops``); a profile whose step time is already known is returned unchanged."""
        if self.compute.step_s is not None:
            return self
        return replace(self, compute=replace(self.compute, flops_per_step=float(flops_per_step)))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def uniform(cls, n_workers: int, network: NetworkModel | None = None) -> SystemProfile:
        """Today's model: identical workers with no compute time, every link ``network``'s
        latency and bandwidth (default :class:`NetworkModel`: 1 ms, 10 Gbit/s), no failures."""
        network = NetworkModel() if network is None else network
        return cls(
            n_workers,
            links=LinkProfile(network.latency_s, network.bandwidth_bytes_per_s),
            name="uniform",
        )

    @classmethod
    def preset(cls, name: str, n_workers: int) -> SystemProfile:
        """One of :data:`PRESETS` for n workers; ValueError naming the presets otherwise."""
        if name not in PRESETS:
            raise ValueError(
                f"unknown system preset {name!r}; presets: {', '.join(sorted(PRESETS))}"
            )
        return PRESETS[name](n_workers)

    @classmethod
    def from_toml(cls, path: str | Path, n_workers: int) -> SystemProfile:
        """Read a profile for ``n_workers`` workers from a TOML file (schema: module docstring).

        Raises:
            ValueError: unreadable TOML, an unknown key (named, with the allowed keys), a value
                out of range, or a profile written for another number of workers.
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"cannot read system profile {str(path)!r}: {e}") from None
        return cls.from_dict(data, n_workers, source=str(path), base_dir=path.parent)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        n_workers: int,
        *,
        source: str = "profile",
        base_dir: Path | None = None,
    ) -> SystemProfile:
        """Build from the parsed TOML mapping (see :meth:`from_toml`); ``base_dir`` resolves a
        relative ``links.file``."""
        n = _int(n_workers, "n_workers", minimum=1)
        _check_keys(data, _TOP_KEYS, "", source)
        if "n_workers" in data and _int(data["n_workers"], "n_workers", minimum=1) != n:
            raise ValueError(
                f"{source} was written for n_workers = {data['n_workers']} but the run has "
                f"{n} workers"
            )
        compute = _compute_from(_table(data, "compute", source), n, source)
        links = _links_from(_table(data, "links", source), source, base_dir or Path("."))
        failures = _failures_from(_table(data, "failures", source), source)
        return cls(
            n,
            compute=compute,
            links=links,
            failures=failures,
            seed=_int(data.get("seed", 0), "seed"),
            name=str(data.get("name", Path(source).stem)),
        )


# ---------------------------------------------------------------------------- TOML parsing
_TOP_KEYS = ("compute", "failures", "links", "n_workers", "name", "seed")
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


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], prefix: str, source: str) -> None:
    allowed = tuple(allowed)
    for key in data:
        if key not in allowed:
            raise ValueError(
                f"unknown key {prefix + key!r} in {source}; allowed keys"
                f"{' in [' + prefix.rstrip('.') + ']' if prefix else ''}: {', '.join(allowed)}"
            )


def _table(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} in {source} must be a table ([{key}]), got {value!r}")
    return value


def _entries(value: object, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError(f"{where} must be an array of tables ([[{where}]]), got {value!r}")
    return value


def _compute_from(t: Mapping[str, Any], n: int, source: str) -> ComputeProfile:
    _check_keys(t, _COMPUTE_KEYS, "compute.", source)
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
        slowdown = _at_least_one(t.get("persistent_slowdown", 4.0), "compute.persistent_slowdown")
        slow = {_worker(w, "compute.persistent_stragglers", n) for w in ids}
        speed = tuple(1.0 / slowdown if i in slow else 1.0 for i in range(n))
    elif "persistent_slowdown" in t:
        raise ValueError("compute.persistent_slowdown needs compute.persistent_stragglers")

    def opt(key: str) -> float | None:
        return None if key not in t else _number(t[key], f"compute.{key}")

    return ComputeProfile(
        step_ms=opt("step_ms"),
        flops_per_step=opt("flops_per_step"),
        device_flops=opt("device_flops"),
        speed=speed,
        jitter_sigma=_number(t.get("jitter_sigma", 0.0), "compute.jitter_sigma"),
        straggler_prob=_number(t.get("straggler_prob", 0.0), "compute.straggler_prob"),
        straggler_slowdown=_number(t.get("straggler_slowdown", 1.0), "compute.straggler_slowdown"),
    )


def _link_entry(e: Mapping[str, Any], where: str) -> LinkOverride:
    _check_keys(e, _LINK_ENTRY_KEYS, f"{where}.", where)
    for key in _LINK_ENTRY_KEYS:
        if key not in e:
            raise ValueError(f"{where} needs the key {key!r} (keys: {', '.join(_LINK_ENTRY_KEYS)})")
    return LinkOverride(
        _int(e["src"], f"{where}.src"),
        _int(e["dst"], f"{where}.dst"),
        _ms(_nonneg(e["latency_ms"], f"{where}.latency_ms")),
        _gbps(_positive(e["bandwidth_gbps"], f"{where}.bandwidth_gbps")),
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


def _links_from(t: Mapping[str, Any], source: str, base_dir: Path) -> LinkProfile:
    _check_keys(t, _LINK_KEYS, "links.", source)

    def ms(key: str) -> float | None:
        return None if key not in t else _ms(_nonneg(t[key], f"links.{key}"))

    def gbps(key: str) -> float | None:
        return None if key not in t else _gbps(_positive(t[key], f"links.{key}"))

    def rng(key: str, conv: Callable[[float], float]) -> tuple[float, float] | None:
        if key not in t:
            return None
        lo, hi = _range(t[key], f"links.{key}")
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
        random_latency_s=rng("random_latency_ms", _ms),
        random_bandwidth_bytes_per_s=rng("random_bandwidth_gbps", _gbps),
        seed=_int(t.get("seed", 0), "links.seed"),
        overrides=tuple(overrides),
    )


def _failures_from(t: Mapping[str, Any], source: str) -> FailureProfile:
    _check_keys(t, _FAILURE_KEYS, "failures.", source)
    offline = []
    for i, e in enumerate(_entries(t.get("offline", []), "failures.offline")):
        where = f"failures.offline[{i}]"
        _check_keys(e, _OFFLINE_KEYS, f"{where}.", source)
        for key in _OFFLINE_KEYS:
            if key not in e:
                raise ValueError(
                    f"{where} needs the key {key!r} (keys: {', '.join(_OFFLINE_KEYS)})"
                )
        offline.append(
            OfflineInterval(
                _int(e["worker"], f"{where}.worker"),
                _int(e["start_step"], f"{where}.start_step"),
                _int(e["stop_step"], f"{where}.stop_step"),
            )
        )
    return FailureProfile(
        link_drop_prob=_number(t.get("link_drop_prob", 0.0), "failures.link_drop_prob"),
        leave_prob=_number(t.get("leave_prob", 0.0), "failures.leave_prob"),
        mean_downtime_steps=_number(
            t.get("mean_downtime_steps", 1.0), "failures.mean_downtime_steps"
        ),
        offline=tuple(offline),
    )


# ---------------------------------------------------------------------------- presets
def _uniform(n: int) -> SystemProfile:
    return SystemProfile.uniform(n)


def _datacenter(n: int) -> SystemProfile:
    """One datacenter: 100 Gbit/s, 10 us links; 10 TFLOP/s effective devices (the step time
    comes from the model's FLOPs); 2% log-normal jitter; no failures."""
    return SystemProfile(
        n,
        compute=ComputeProfile(device_flops=10e12, jitter_sigma=0.02),
        links=LinkProfile(latency_s=_ms(0.01), bandwidth_bytes_per_s=_gbps(100.0)),
        name="datacenter",
    )


def _two_datacenters(n: int) -> SystemProfile:
    """Two racks (workers ``0..n//2-1`` and ``n//2..n-1``) of the datacenter preset joined by a
    WAN link 100x slower in bandwidth (1 Gbit/s) with 5 ms latency."""
    if n < 2:
        raise ValueError(f"the two-datacenters preset needs n_workers >= 2, got {n}")
    half = n // 2
    return SystemProfile(
        n,
        compute=ComputeProfile(device_flops=10e12, jitter_sigma=0.02),
        links=LinkProfile(
            latency_s=_ms(0.01),
            bandwidth_bytes_per_s=_gbps(100.0),
            groups=(tuple(range(half)), tuple(range(half, n))),
            inter_latency_s=_ms(5.0),
            inter_bandwidth_bytes_per_s=_gbps(1.0),
        ),
        name="two-datacenters",
    )


def _edge(n: int) -> SystemProfile:
    """Edge devices: 100 GFLOP/s devices with 30% jitter and 10% transient 4x stragglers;
    100 Mbit/s, 20 ms links; 5% link drops per round; 1% of workers leave per step, for 20
    steps on average."""
    return SystemProfile(
        n,
        compute=ComputeProfile(
            device_flops=100e9, jitter_sigma=0.3, straggler_prob=0.1, straggler_slowdown=4.0
        ),
        links=LinkProfile(latency_s=_ms(20.0), bandwidth_bytes_per_s=_gbps(0.1)),
        failures=FailureProfile(link_drop_prob=0.05, leave_prob=0.01, mean_downtime_steps=20.0),
        name="edge",
    )


#: Preset name -> builder ``(n_workers) -> SystemProfile``.
PRESETS: dict[str, Callable[[int], SystemProfile]] = {
    "uniform": _uniform,
    "datacenter": _datacenter,
    "two-datacenters": _two_datacenters,
    "edge": _edge,
}


def load_profile(name_or_path: str | Path, n_workers: int) -> SystemProfile:
    """A preset by name (:data:`PRESETS`) or a TOML file by path, for ``n_workers`` workers.

    Raises:
        ValueError: neither a preset nor an existing file (naming the presets), or any error of
            :meth:`SystemProfile.from_toml`.
    """
    text = str(name_or_path)
    if text in PRESETS:
        return SystemProfile.preset(text, n_workers)
    path = Path(text)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ValueError(f"system profile file {text!r} does not exist")
        return SystemProfile.from_toml(path, n_workers)
    raise ValueError(
        f"unknown system profile {text!r}: not a preset ({', '.join(sorted(PRESETS))}) "
        "nor a .toml file"
    )


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
