"""Helpers for tests that start real worker processes on loopback (gloo), without torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_workers(
    argv: Sequence[str], world_size: int, *, cwd: Path, log_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """Start ``world_size`` copies of ``python argv...`` with torchrun's environment variables.

    Each process's stdout and stderr go to ``log_dir/rank{r}.out`` / ``.err``.
    """
    port = free_port()
    procs = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        out = open(log_dir / f"rank{rank}.out", "wb")  # noqa: SIM115 (closed with the process)
        err = open(log_dir / f"rank{rank}.err", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen([sys.executable, *argv], env=env, cwd=cwd, stdout=out, stderr=err)
        )
    return procs


def wait_all(procs: list[subprocess.Popen[bytes]], timeout_s: float) -> list[int | None]:
    """Exit codes (None for a process still running after ``timeout_s``, which is then killed)."""
    import time

    deadline = time.monotonic() + timeout_s
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    return codes
