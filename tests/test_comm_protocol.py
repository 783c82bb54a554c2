"""The ``Communicator`` protocol names everything the algorithms and the optimizer call.

A user's communicator (or a user algorithm type-checked against the protocol) relies on
:class:`peergrad.comm.base.Communicator` being complete: every attribute that
``src/peergrad/algorithms/`` and ``src/peergrad/optim/`` read from a communicator must be a
member of the protocol, and both engines' communicators must have every member.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import peergrad
from peergrad.comm.base import Communicator
from peergrad.comm.distributed import DistributedCommunicator
from peergrad.comm.elastic import ElasticCommunicator
from peergrad.comm.segments import SegmentComm
from peergrad.comm.simulated import SimulatedCommunicator

SRC = Path(peergrad.__file__).parent
#: Feature probes (``hasattr(comm, ...)``) and engine-specific extras the callers check for
#: before use; they are not part of the protocol.
OPTIONAL = {"mix_start_takes_workspace", "system", "rank", "gather", "timeout_s", "clock", "rounds"}
#: Callers bound to one engine's communicator (checked at construction), which may use its own
#: members: ``ElasticLoop`` takes an ``ElasticCommunicator`` only (quorum, commit, rejoin).
ENGINE_SPECIFIC = {"optim/elastic.py"}


def protocol_members() -> set[str]:
    names = set(getattr(Communicator, "__annotations__", {}))
    names |= {n for n in vars(Communicator) if not n.startswith("_")}
    return names


def comm_attributes(folder: Path) -> dict[str, list[str]]:
    """Attributes read from names ``comm`` / ``self.comm`` / ``self._comm`` (file:line)."""
    used: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        if path.relative_to(SRC).as_posix() in ENGINE_SPECIFIC:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            base = node.value
            is_comm = (isinstance(base, ast.Name) and base.id == "comm") or (
                isinstance(base, ast.Attribute)
                and base.attr in {"comm", "_comm"}
                and isinstance(base.value, ast.Name)
                and base.value.id == "self"
            )
            if is_comm and not node.attr.startswith("_"):
                where = f"{path.relative_to(SRC)}:{node.lineno}"
                used.setdefault(node.attr, []).append(where)
    return used


@pytest.mark.parametrize("folder", ["algorithms", "optim"])
def test_callers_use_only_protocol_members(folder: str) -> None:
    used = comm_attributes(SRC / folder)
    assert used, "the scan found no communicator use at all"
    missing = {k: v[:3] for k, v in used.items() if k not in protocol_members() | OPTIONAL}
    assert not missing, f"used on communicators but not in the Communicator protocol: {missing}"


@pytest.mark.parametrize(
    "cls", [SimulatedCommunicator, DistributedCommunicator, ElasticCommunicator]
)
def test_both_engines_implement_the_protocol(cls: type) -> None:
    instance_attributes = {"topology", "n_workers", "network", "bytes_sent", "workspace"}
    instance_attributes |= {"simulated_comm_time_s"}
    missing = [
        name
        for name in sorted(protocol_members())
        if name not in instance_attributes and not hasattr(cls, name)
    ]
    assert not missing, f"{cls.__name__} lacks {missing}"


def test_the_collectives_of_issue_28_are_protocol_members() -> None:
    """Streaming DiLoCo's overlapped mean and the reduce-scatter exchange's all-to-all."""
    added = {"mean_start", "wait_for", "synchronize", "all_to_all", "account_all_to_all"}
    assert added <= protocol_members()


def test_segment_comm_charges_every_accounted_operation_itself() -> None:
    """``SegmentComm`` forwards the names it lacks to the real communicator (instance
    ``__getattr__``), which would charge them at once instead of at ``settle``: every protocol
    method that charges (an ``account`` argument, or ``account_*``) must be its own."""
    charging = {
        name
        for name in protocol_members()
        if callable(getattr(Communicator, name, None))
        and (
            name.startswith("account_")
            or "account" in inspect.signature(getattr(Communicator, name)).parameters
        )
    }
    assert {"mix", "mean", "mean_start", "all_gather", "all_to_all"} <= charging
    missing = sorted(name for name in charging if getattr(SegmentComm, name, None) is None)
    assert not missing, f"SegmentComm would forward (and charge at once) {missing}"
