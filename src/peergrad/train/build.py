"""What a configuration builds before any data: device, dtype, algorithm and system profile.

:func:`check_environment` and :func:`build_algorithm` are the parts of
:func:`peergrad.train.validate.validate` that need torch (the torch-free part is
:func:`peergrad.train.checks.check_fields`); :func:`peergrad.train.loop.prepare` builds the run
with the same functions.
"""

from __future__ import annotations

import os

import torch

from peergrad.algorithms import Algorithm, make_algorithm
from peergrad.algorithms.registry import probe_algorithm
from peergrad.comm import NetworkModel
from peergrad.system import SystemProfile, load_profile
from peergrad.topology import Topology, make_topology
from peergrad.train.config import TrainConfig
from peergrad.train.names import DTYPE_NAMES

__all__ = [
    "DEVICES_HELP",
    "DTYPES",
    "build_algorithm",
    "build_topology",
    "check_algorithm",
    "check_environment",
    "resolve_device",
    "system_profile",
]

#: ``--dtype`` names (:data:`peergrad.train.names.DTYPE_NAMES`) -> torch dtypes.
DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}

#: What ``--device`` accepts (checked by :func:`resolve_device`).
DEVICES_HELP = "cpu, cuda, cuda:N (N < the number of visible GPUs) or mps (where available)"


def resolve_device(name: str) -> torch.device:
    """The device of ``--device``; ``ValueError`` (one line naming ``--device`` and what it
    accepts) for names torch does not know, devices this machine does not have (``cuda:9`` on
    a one-GPU machine, ``mps`` off Apple silicon) and devices that cannot train (``meta``)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device must be one of {DEVICES_HELP}; got {name!r}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {name}: CUDA is not available on this machine; use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
        return device
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"--device {name}: MPS is not available on this machine")
        if device.index not in (None, 0):
            raise ValueError(f"--device {name}: there is one MPS device, mps (or mps:0)")
        return device
    raise ValueError(f"--device must be one of {DEVICES_HELP}; got {name!r}")


def system_profile(config: TrainConfig) -> SystemProfile | None:
    """The system profile of ``config.system`` for ``config.workers`` workers (None without one).

    ``--system uniform`` takes its links from ``--latency-ms`` / ``--bandwidth-gbps`` (the
    uniform-links shorthand); any other profile brings its own links, so those two flags must
    then be left at their defaults. ``ValueError`` (one line naming ``--system``): an unknown
    preset, a TOML file that is missing, has an unknown key or a bad value, or was written for
    another number of workers (see :func:`peergrad.system.load_profile`); both link flags and
    another profile; churn (``failures.leave_prob``/``offline``) on the distributed engine,
    which imposes the rest of the profile on its processes (:mod:`peergrad.system.impose`).
    """
    if config.system is None:
        return None
    if not isinstance(config.system, str) or not config.system:
        raise ValueError(f"--system must be a preset name or a .toml file, got {config.system!r}")
    if config.system == "uniform":
        network = NetworkModel.from_ms_gbps(config.latency_ms, config.bandwidth_gbps)
        return SystemProfile.uniform(config.workers, network)
    given = [
        f"{flag} {value:g}"
        for flag, value, default in (
            ("--latency-ms", config.latency_ms, TrainConfig.latency_ms),
            ("--bandwidth-gbps", config.bandwidth_gbps, TrainConfig.bandwidth_gbps),
        )
        if value != default
    ]
    if given:
        raise ValueError(
            f"{' and '.join(given)} and --system {config.system} both set the links; the "
            "profile's links are used with --system, so put them in its [links] table "
            "(latency_ms, bandwidth_gbps), use --system uniform, or leave --system out"
        )
    try:
        profile = load_profile(config.system, config.workers)
    except ValueError as exc:
        raise ValueError(f"--system {config.system}: {exc}") from None
    churn = [o for o in profile.failures.options if o != "failures.link_drop_prob"]
    if config.engine == "distributed" and churn:  # peergrad.system.impose imposes no churn
        raise ValueError(
            f"--system {config.system}: {' and '.join(churn)}: the distributed engine does not "
            "impose churn (absent workers); use --engine simulated or remove it"
        )
    return profile


def build_algorithm(config: TrainConfig) -> Algorithm:
    """The algorithm of ``config`` (a name, ``package.module:Class``, a class or an instance:
    :func:`peergrad.algorithms.registry.resolve_algorithm`): ``config.options`` plus ``lr``,
    ``momentum`` and ``weight_decay`` where set (:meth:`TrainConfig.algorithm_options`); the
    algorithm's own defaults for everything else. ``ValueError``: one of those three set both ways
    (``--set momentum=0.5 --momentum 0.2``, naming both), or an option the algorithm does not
    have or does not accept (the algorithm's own checks)."""
    return make_algorithm(config.algorithm, **config.algorithm_options())


def build_topology(config: TrainConfig) -> Topology:
    """The gossip schedule of ``config``: ``--topology`` over ``--workers`` workers, seeded by
    ``--seed`` (``--erdos-renyi-p`` for that topology)."""
    return make_topology(
        config.topology,
        config.workers,
        seed=config.seed,
        p=config.erdos_renyi_p if config.topology == "erdos-renyi" else None,
    )


def check_algorithm(config: TrainConfig) -> Algorithm:
    """:func:`build_algorithm`, and for an algorithm from outside the registry one probe step
    on a tiny problem (:func:`peergrad.algorithms.registry.probe_algorithm`: ``ValueError``
    naming the class when ``step`` changes x's shape or dtype or returns another state type)."""
    algorithm = build_algorithm(config)
    probe_algorithm(algorithm, DTYPES.get(config.dtype, torch.float32))
    return algorithm


def check_environment(config: TrainConfig) -> None:
    """What ``config`` needs of this machine and process: ``--device`` exists here
    (:func:`resolve_device`), ``--system`` loads for ``--workers`` workers
    (:func:`system_profile`), and on the distributed engine this process was started by
    torchrun (else the process group's clear error) with as many processes as ``--workers``.

    Raises:
        ValueError: naming the option, e.g. ``world size 2 (torchrun --nproc-per-node x
            --nnodes) differs from the number of workers n = 4 (--workers)``.
    """
    resolve_device(config.device)
    system_profile(config)  # --system: the preset or TOML file, for --workers workers
    if config.engine != "distributed":
        return
    if config.elastic:  # one process per worker, no torchrun needed: its id from the environment
        from peergrad.comm.elastic import elastic_worker_id, require_torchft

        require_torchft()
        elastic_worker_id(config.workers)
        return
    from peergrad.comm import distributed

    if not distributed.launched_by_torchrun():
        distributed.init_process_group(timeout_s=config.timeout_s)  # raises the clear error
    world = int(os.environ["WORLD_SIZE"])
    if world != config.workers:
        raise ValueError(
            f"world size {world} (torchrun --nproc-per-node x --nnodes) differs from the "
            f"number of workers n = {config.workers} (--workers); they must be equal"
        )
