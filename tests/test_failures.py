"""Failure behaviour of the distributed engine: a dead or silent peer stops every worker with an
error that names the peer and the step, within the timeout; misconfiguration fails up front."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _distributed import start_workers, wait_all

TRAIN = [
    "-m",
    "peergrad",
    "train",
    "--engine",
    "distributed",
    "--workers",
    "4",
    "--dataset",
    "digits",
    "--model",
    "logreg",
    "--batch-size",
    "8",
    "--eval-every",
    "20",
    "--no-progress",
]


def wait_for_records(path: Path, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {count} records in {timeout_s} s")


@pytest.mark.parametrize(("sig", "timeout_s"), [(signal.SIGKILL, 20), (signal.SIGSTOP, 6)])
def test_a_lost_peer_stops_every_other_worker_with_a_named_error(
    tmp_path: Path, sig: signal.Signals, timeout_s: int
) -> None:
    run = tmp_path / "run"
    procs = start_workers(
        [*TRAIN, "--steps", "1000000", "--timeout-s", str(timeout_s), "--out", str(run)],
        4,
        cwd=tmp_path,
        log_dir=tmp_path,
    )
    try:
        wait_for_records(run / "metrics.jsonl", 3)
        victim = 2
        os.kill(procs[victim].pid, sig)
        t0 = time.monotonic()
        survivors = [p for r, p in enumerate(procs) if r != victim]
        codes = wait_all(survivors, timeout_s=timeout_s + 30)
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(c not in (None, 0) for c in codes), codes
    assert elapsed < timeout_s + 30
    for r in (0, 1, 3):
        err = (tmp_path / f"rank{r}.err").read_text()
        assert "peergrad train: error: worker" in err, err[-3000:]
        assert "failed at step" in err
        assert "Traceback" not in err, err[-3000:]
    # The neighbours of the victim on the ring name it.
    for r in (1, 3):
        err = (tmp_path / f"rank{r}.err").read_text()
        assert "2 (last seen at step" in err or "peer(s): 2" in err, err[-2000:]
    # The metrics written before the failure are intact.
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_distributed_engine_outside_torchrun_is_rejected(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    proc = subprocess.run(
        [sys.executable, *TRAIN, "--steps", "2", "--out", str(tmp_path / "r")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "must be started by torchrun" in proc.stderr and "RANK" in proc.stderr


def test_world_size_must_equal_workers(tmp_path: Path) -> None:
    procs = start_workers(
        [*TRAIN, "--steps", "2", "--out", str(tmp_path / "r")], 2, cwd=tmp_path, log_dir=tmp_path
    )
    codes = wait_all(procs, timeout_s=120)
    assert codes == [2, 2]
    err = (tmp_path / "rank0.err").read_text()
    assert "world size 2" in err and "--workers" in err and "n = 4" in err
