"""Run, kill, hang and restart elastic workers on one machine (tests, benchmarks, demos).

:class:`ElasticWorkers` starts torchft's lighthouse in this process and n workers of
``peergrad train --engine distributed --elastic`` as processes of their own
(``REPLICA_GROUP_ID=i``), and lets a test do to them what a cluster does: ``kill(i)``
(SIGKILL), ``stop(i)`` / ``cont(i)`` (SIGSTOP / SIGCONT: a hung worker), ``restart(i)``. It
follows the run through the run folder (``metrics.jsonl``, ``membership.jsonl``), so the train
arguments should record often (``--eval-every``)::

    from peergrad.testing.elastic import ElasticWorkers

    with ElasticWorkers(4, ["--algorithm", "dpsgd", "--steps", "100", "--eval-every", "5"],
                        out="runs/elastic-demo") as run:
        run.wait_for_step(30); run.kill(2)
        run.wait_for_step(50); run.restart(2)
        codes = run.wait()          # {worker: exit code} of the last process of each worker

A restarted worker is started ahead of time as a *standby*: a process that has imported torch,
torchft and peergrad and waits for a file before it runs ``peergrad train`` (about 5 s of
imports on a small CPU machine, which would otherwise delay the rejoin); :meth:`restart` starts
it. ``python -m peergrad.testing.elastic GO_FILE ARGS...`` is that standby.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from peergrad.comm.elastic import start_lighthouse

__all__ = ["ElasticWorkers", "read_jsonl"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file (a line being written is left out)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


class ElasticWorkers:
    """n elastic workers of ``peergrad train`` and a lighthouse (see the module docstring).

    Args:
        n: workers (``--workers``).
        train_args: the other ``peergrad train`` arguments (``--engine distributed --elastic
            --workers n --out OUT --lighthouse URL`` are added).
        out: the run folder.
        heartbeat_timeout_ms: the lighthouse's: how long a silent worker stays in the quorum.
        timeout_s: ``--timeout-s`` of the workers (a hung peer's collective fails after it).
        threads: ``OMP_NUM_THREADS`` of the workers (default 1, as torchrun sets it: several
            workers with torch's default threads each oversubscribe the cores, 5-18x slower
            steps on a 2-core machine); None leaves the environment's.
        env: extra environment of the workers.
    """

    def __init__(
        self,
        n: int,
        train_args: list[str],
        *,
        out: str | Path,
        heartbeat_timeout_ms: int = 1000,
        timeout_s: float = 5.0,
        threads: int | None = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n, self.out = n, Path(out)
        self.logs = self.out.parent / f"{self.out.name}-logs"
        self.lighthouse = start_lighthouse(
            0, min_replicas=1, heartbeat_timeout_ms=heartbeat_timeout_ms, join_timeout_ms=5000
        )
        self.address = str(self.lighthouse.address())
        self.args = [
            *train_args,
            *("--engine", "distributed", "--elastic", "--workers", str(n)),
            *("--out", str(self.out), "--lighthouse", self.address, "--timeout-s", str(timeout_s)),
        ]
        omp = {} if threads is None else {"OMP_NUM_THREADS": str(threads)}
        self.env = {**os.environ, "RUST_LOG": "warn", **omp, **(env or {})}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.standbys: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
        self.events: list[dict[str, Any]] = []  # what this harness did, with times
        self._incarnation: dict[int, int] = {}

    # ------------------------------------------------------------------ processes
    def _spawn(self, worker: int, standby: Path | None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        k = self._incarnation[worker] = self._incarnation.get(worker, -1) + 1
        log = open(self.logs / f"worker{worker}-{k}.log", "wb")  # noqa: SIM115 - kept by Popen
        head = [sys.executable, "-m", "peergrad.testing.elastic", str(standby)] if standby else [
            sys.executable, "-m", "peergrad", "train"
        ]
        env = {**self.env, "REPLICA_GROUP_ID": str(worker)}
        return subprocess.Popen([*head, *self.args], stdout=log, stderr=subprocess.STDOUT, env=env)

    def start(self) -> ElasticWorkers:
        """Start the n workers (a fresh run: they wait for each other before step 1)."""
        for i in range(self.n):
            self.procs[i] = self._spawn(i, None)
        self._note("start", None)
        return self

    def prepare_restart(self, worker: int) -> None:
        """Start the standby that :meth:`restart` will release (imports now, runs later)."""
        go = self.logs / f"go-{worker}-{time.monotonic_ns()}"
        self.standbys[worker] = (self._spawn(worker, go), go)

    def restart(self, worker: int) -> None:
        """Start worker ``worker`` again (its standby, if prepared, else a new process)."""
        if worker not in self.standbys:
            self.prepare_restart(worker)
        proc, go = self.standbys.pop(worker)
        go.touch()
        self.procs[worker] = proc
        self._note("restart", worker)

    def kill(self, worker: int) -> None:
        """SIGKILL worker ``worker`` (a machine that dies)."""
        self.procs[worker].send_signal(signal.SIGKILL)
        self._note("kill", worker)

    def stop(self, worker: int) -> None:
        """SIGSTOP worker ``worker`` (a hung machine: it holds its connections, says nothing)."""
        self.procs[worker].send_signal(signal.SIGSTOP)
        self._note("stop", worker)

    def cont(self, worker: int) -> None:
        """SIGCONT a stopped worker."""
        self.procs[worker].send_signal(signal.SIGCONT)
        self._note("cont", worker)

    def _note(self, what: str, worker: int | None) -> None:
        self.events.append({"event": what, "worker": worker, "time": time.time(),
                            "step": self.step()})

    # ------------------------------------------------------------------ progress
    def log(self, worker: int) -> str:
        """The output (stdout and stderr) of worker ``worker``'s last process so far."""
        return (self.logs / f"worker{worker}-{self._incarnation[worker]}.log").read_text()

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.out / "metrics.jsonl")

    def membership(self) -> list[dict[str, Any]]:
        return read_jsonl(self.out / "membership.jsonl")

    def step(self) -> int:
        """The last recorded step (0 before the first record)."""
        records = self.records()
        return int(records[-1]["step"]) if records else 0

    def wait_for_step(self, step: int, timeout_s: float = 300.0) -> int:
        """Wait until a record of step ``step`` or later is written; return its step."""
        deadline = time.monotonic() + timeout_s
        while (reached := self.step()) < step:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no record of step {step} after {timeout_s} s ({reached})")
            if all(p.poll() is not None for p in self.procs.values()):
                raise RuntimeError(f"every worker exited before step {step} (reached {reached})")
            time.sleep(0.02)
        return reached

    def wait(self, timeout_s: float = 600.0) -> dict[int, int | None]:
        """Wait for every worker's last process; return their exit codes (killed: -9)."""
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return {i: p.poll() for i, p in self.procs.items()}

    def close(self) -> None:
        """Kill whatever still runs (processes, standbys) and stop the lighthouse."""
        alive = list(self.procs.values()) + [p for p, _ in self.standbys.values()]
        for proc in alive:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
        self.lighthouse.shutdown()

    def __enter__(self) -> ElasticWorkers:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _standby(argv: list[str]) -> int:
    """Import what a worker needs, wait for the file ``argv[0]``, then run ``peergrad train``."""
    go = Path(argv[0])
    import peergrad.cli
    from peergrad.comm.elastic import preload

    preload()
    import peergrad.train.elastic  # noqa: F401

    while not go.exists():
        time.sleep(0.01)
    return int(peergrad.cli.main(["train", *argv[1:]]) or 0)


if __name__ == "__main__":
    sys.exit(_standby(sys.argv[1:]))
