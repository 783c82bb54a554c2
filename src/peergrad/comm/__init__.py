"""Communicators: the only way algorithms touch the worker axis (see :mod:`peergrad.comm.base`).

``peergrad.comm.distributed`` is the only module of peergrad that imports ``torch.distributed``;
it is not imported here so that the simulated engine never loads it.

Modules: ``base`` (the protocol, the accounting both engines share), ``simulated``,
``distributed`` with its mixins ``peer_failure`` (heartbeats, failure reports) and ``pacing``
(a system profile imposed on real processes) and ``pending`` (its operations in flight),
``compressed`` (compressed gossip and means: all-reduce, all-gather and reduce-scatter),
``gossip`` (accelerated gossip), ``segments`` (the optimizer's per-bucket communicators) and
``buffers`` (module buffers averaged over workers). ``comm/`` builds on ``system/`` (the
communicators drive the system clock); the network model is
:class:`peergrad.system.network.NetworkModel`, re-exported here.
"""

from __future__ import annotations

from peergrad.comm.base import (
    Communicator,
    NetworkModel,
    PeerFailure,
    Workspace,
    allreduce_bytes,
    message_nbytes,
    worker_dot,
    worker_norm,
    worker_sum,
)
from peergrad.comm.compressed import compressed_mean, compressed_mix, reduce_scatter_mean
from peergrad.comm.simulated import SimulatedCommunicator, apply_mixing

__all__ = [
    "Communicator",
    "NetworkModel",
    "PeerFailure",
    "SimulatedCommunicator",
    "Workspace",
    "allreduce_bytes",
    "apply_mixing",
    "compressed_mean",
    "compressed_mix",
    "message_nbytes",
    "reduce_scatter_mean",
    "worker_dot",
    "worker_norm",
    "worker_sum",
]
