"""peergrad's ``destroy_process_group`` leaves no process group of its own alive.

A gloo group that survives into interpreter finalization keeps its worker threads, and a thread
that releases a finished work there aborts the process (``terminate called without an active
exception``, exit -6) after all work is done: seen in CI on 3 of 5 runs, on distributed test
workers, before peergrad dropped its private groups on destroy.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
import torch

from peergrad.comm import distributed
from peergrad.topology import make_topology

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _distributed import free_port, start_workers, wait_all  # noqa: E402


@pytest.fixture
def one_rank(monkeypatch: pytest.MonkeyPatch):
    for name, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }.items():
        monkeypatch.setenv(name, value)
    distributed.init_process_group(timeout_s=30)
    try:
        yield
    finally:
        distributed.destroy_process_group()


def test_destroy_drops_the_private_groups(one_rank: None) -> None:
    comm = distributed.DistributedCommunicator(make_topology("complete", 1))
    comm.mean(torch.ones(1, 3))
    assert distributed._PRIVATE_GROUPS  # created by the first communicator
    data_group = comm.group
    del comm
    gc.collect()
    distributed.destroy_process_group()
    assert distributed._PRIVATE_GROUPS == []
    # the only reference left to the group is this test's own
    assert sys.getrefcount(data_group) == 2
    assert not distributed.dist.is_initialized()


def test_new_process_group_gets_new_private_groups(one_rank: None) -> None:
    first = distributed.DistributedCommunicator(make_topology("complete", 1)).group
    distributed.destroy_process_group()
    distributed.init_process_group(timeout_s=30)
    second = distributed.DistributedCommunicator(make_topology("complete", 1)).group
    assert second is not first
    assert len(distributed._PRIVATE_GROUPS) == 1


WORKER = """
import sys, torch
from peergrad.comm import distributed
from peergrad.topology import make_topology
distributed.init_process_group(timeout_s=60)
n = distributed.dist.get_world_size()
for name in ("ring", "complete"):
    topology = make_topology(name, n)
    comm = distributed.DistributedCommunicator(topology)
    comm.keep = comm  # a reference cycle, as optimizers with hooks make
    x = torch.randn(1, 1000)
    for _ in range(5):
        x = comm.mix(x, topology.at(0))
        comm.mean(x)
distributed.destroy_process_group()
"""


def test_workers_exit_cleanly_after_destroy(tmp_path: Path) -> None:
    """Before the fix this aborted about one run in three (exit -6 on one rank); 6 rounds of
    3 processes make a regression show up with probability above 0.9."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    for round_ in range(6):
        log_dir = tmp_path / f"round{round_}"
        log_dir.mkdir()
        codes = wait_all(start_workers([str(script)], 3, cwd=tmp_path, log_dir=log_dir), 120)
        errors = {r: (log_dir / f"rank{r}.err").read_text()[-500:] for r in range(3)}
        assert codes == [0, 0, 0], (round_, codes, errors)
