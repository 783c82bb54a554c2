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
  the alpha-beta model of :class:`peergrad.system.network.NetworkModel` but per link (slow and
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

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from peergrad.system.checks import gbps_to_bytes_per_s, integer, ms_to_s, worker_id
from peergrad.system.components import (
    ComputeProfile,
    FailureProfile,
    LinkOverride,
    LinkProfile,
    OfflineInterval,
    count_step_flops,
)
from peergrad.system.network import NetworkModel
from peergrad.system.profile_io import (
    TOP_KEYS,
    check_keys,
    compute_from,
    failures_from,
    links_from,
    load_link_csv,
    table,
)

# The profile's parts (components.py) and its file reading (profile_io.py) are modules of their
# own since issue 25; their public names stay importable from here.
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
        n = integer(self.n_workers, "n_workers", minimum=1)
        integer(self.seed, "seed")
        if self.compute.speed is not None and len(self.compute.speed) != n:
            raise ValueError(
                f"compute.speed has {len(self.compute.speed)} values but there are "
                f"n = {n} workers; the profile was written for another number of workers"
            )
        self.links.check_workers(n)
        for i, o in enumerate(self.failures.offline):
            worker_id(o.worker, f"failures.offline[{i}].worker", n)

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
        n = integer(n_workers, "n_workers", minimum=1)
        check_keys(data, TOP_KEYS, "", source)
        if "n_workers" in data and integer(data["n_workers"], "n_workers", minimum=1) != n:
            raise ValueError(
                f"{source} was written for n_workers = {data['n_workers']} but the run has "
                f"{n} workers"
            )
        compute = compute_from(table(data, "compute", source), n, source)
        links = links_from(table(data, "links", source), source, base_dir or Path("."))
        failures = failures_from(table(data, "failures", source), source)
        return cls(
            n,
            compute=compute,
            links=links,
            failures=failures,
            seed=integer(data.get("seed", 0), "seed"),
            name=str(data.get("name", Path(source).stem)),
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
        links=LinkProfile(
            latency_s=ms_to_s(0.01), bandwidth_bytes_per_s=gbps_to_bytes_per_s(100.0)
        ),
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
            latency_s=ms_to_s(0.01),
            bandwidth_bytes_per_s=gbps_to_bytes_per_s(100.0),
            groups=(tuple(range(half)), tuple(range(half, n))),
            inter_latency_s=ms_to_s(5.0),
            inter_bandwidth_bytes_per_s=gbps_to_bytes_per_s(1.0),
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
        links=LinkProfile(latency_s=ms_to_s(20.0), bandwidth_bytes_per_s=gbps_to_bytes_per_s(0.1)),
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
