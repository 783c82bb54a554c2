"""The communicator of a run: the engine's, with a system clock under ``--system``, the
elastic one under ``--elastic`` (split out of :mod:`peergrad.train.loop`, which re-exports
these names)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from peergrad.comm import NetworkModel, SimulatedCommunicator
from peergrad.comm.base import Communicator
from peergrad.system import SystemClock, SystemProfile, count_step_flops
from peergrad.train.build import build_topology
from peergrad.train.config import TrainConfig
from peergrad.train.task import BuiltTask

__all__ = ["clocked_communicator", "gather_rows", "make_communicator"]


def clocked_communicator(
    config: TrainConfig,
    comm: Communicator,
    profile: SystemProfile,
    built: BuiltTask,
    batch: tuple[Any, Any],
) -> Communicator:
    """The simulated communicator of ``comm``'s topology with a :class:`SystemClock` of
    ``profile``. A profile that gives ``compute.device_flops`` only gets its step's FLOPs from
    :func:`~peergrad.system.count_step_flops` on one worker's minibatch ``batch`` (forward and
    backward of the task's module and loss). ``simulated_comm_time_s`` uses the profile's links
    when they are uniform (the communicator's default), else ``--latency-ms`` /
    ``--bandwidth-gbps`` (their defaults: :func:`~peergrad.train.build.system_profile` refuses
    others)."""
    from peergrad.train.params import cross_entropy

    if profile.step_s is None:
        loss = built.model.loss_fn if built.model.loss_fn is not None else cross_entropy
        profile = profile.with_flops_per_step(count_step_flops(built.module, batch, loss))
    network = (
        None
        if profile.links.is_uniform
        else NetworkModel.from_ms_gbps(config.latency_ms, config.bandwidth_gbps)
    )
    if config.engine == "distributed":  # the profile imposed on the real processes
        from peergrad.comm import distributed

        assert isinstance(comm, distributed.DistributedCommunicator)
        if network is None:  # as the simulated engine: the profile's uniform links
            network = NetworkModel(profile.links.latency_s, profile.links.bandwidth_bytes_per_s)
        return distributed.DistributedCommunicator(
            comm.topology, network=network, timeout_s=comm.timeout_s, profile=profile
        )
    return SimulatedCommunicator(comm.topology, network=network, clock=SystemClock(profile))


def make_communicator(config: TrainConfig, device: torch.device) -> Communicator:
    """The communicator of ``config.engine`` (joins the process group for ``distributed``)."""
    topology = build_topology(config)
    network = NetworkModel.from_ms_gbps(config.latency_ms, config.bandwidth_gbps)
    if config.engine == "simulated":
        return SimulatedCommunicator(topology, network=network)
    if config.elastic:  # torchft: no process group of all workers (peergrad.train.elastic)
        from peergrad.train.elastic import elastic_communicator

        return elastic_communicator(config, topology, network)
    from peergrad.comm import distributed

    distributed.init_process_group(timeout_s=config.timeout_s, device=device)
    return distributed.DistributedCommunicator(
        topology, network=network, timeout_s=config.timeout_s
    )


def gather_rows(x: Tensor, comm: Communicator) -> Tensor:
    """All workers' rows ``[n, D]`` (on the distributed engine: on rank 0; others keep theirs)."""
    gather = getattr(comm, "gather", None)
    if gather is None:
        return x
    full = gather(x)
    return x if full is None else full
