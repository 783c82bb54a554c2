"""The layering inside the lower packages (issue 25): ``comm/`` builds on ``system/`` (the
communicators report every round to the system clock and impose profiles on real processes), so
``system/`` imports nothing of ``comm/``; the alpha-beta network model they share lives in
``system/network.py`` and stays importable from its old homes. The imports are read with
``ast`` (every import counts, also under ``TYPE_CHECKING`` or inside a function)."""

from __future__ import annotations

from peergrad.comm import NetworkModel as CommNetworkModel
from peergrad.comm.base import NetworkModel as BaseNetworkModel
from peergrad.comm.base import allgather_bytes, allreduce_bytes
from peergrad.system import NetworkModel as SystemNetworkModel
from peergrad.system import network
from test_import_graph import import_graph


def test_system_imports_nothing_of_comm() -> None:
    graph = import_graph()
    offenders = {
        name: sorted(m for m in targets if m.startswith("peergrad.comm"))
        for name, targets in graph.items()
        if name.startswith("peergrad.system")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_network_model_is_one_class_with_its_old_import_paths() -> None:
    assert CommNetworkModel is BaseNetworkModel is SystemNetworkModel is network.NetworkModel
    assert allreduce_bytes is network.allreduce_bytes
    assert allgather_bytes is network.allgather_bytes
    assert network.NetworkModel.__module__ == "peergrad.system.network"
