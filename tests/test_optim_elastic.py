"""``ElasticLoop`` (issue 29 item 3): elastic training from a user's own loop around a
``DistributedOptimizer`` on the elastic engine.

The multi-process tests start torchft's lighthouse in this process and each worker as a process
of its own running a small user loop (``WORKER``: a float64 linear model, dpsgd with momentum on
a ring, minibatches fixed by ``(worker, step.number)``). The reference is the same algorithm
on the simulated engine (``[n, D]``, gradients computed here per worker), with the absence of a
killed worker as a scheduled offline interval of the system clock (the simulated engine's churn:
Metropolis-Hastings weights of the workers present) and its rejoin as a copy of its source's
row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("torchft")

from peergrad.algorithms import make_algorithm  # noqa: E402
from peergrad.comm import SimulatedCommunicator  # noqa: E402
from peergrad.comm.elastic import ElasticCommunicator, start_lighthouse  # noqa: E402
from peergrad.optim import DistributedOptimizer, ElasticLoop  # noqa: E402
from peergrad.system import (  # noqa: E402
    FailureProfile,
    OfflineInterval,
    SystemClock,
    SystemProfile,
)
from peergrad.topology import make_topology  # noqa: E402

OPTIONS = {"lr": 0.1, "momentum": 0.9}

# One worker: the user's loop. cfg: n, steps, lighthouse; go (a standby waits for this file
# before it joins), pause_at (inside that step, after opt.step(): write pausedW and sleep, to be
# killed there), slow (sleep per step while a worker is missing, so the run outlasts a rejoin).
# After each committed step K it writes doneW_K.
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    cfg, out = json.loads(sys.argv[1]), Path(sys.argv[2])
    import torch
    from peergrad.comm.elastic import ElasticCommunicator
    from peergrad.optim import DistributedOptimizer, ElasticLoop
    from peergrad.topology import make_topology

    worker = int(os.environ["REPLICA_GROUP_ID"])
    if cfg.get("go"):
        while not Path(cfg["go"]).exists():
            time.sleep(0.02)
    torch.manual_seed(worker)  # its own init: the fresh start must broadcast worker 0's
    model = torch.nn.Linear(4, 3).double()
    comm = ElasticCommunicator(make_topology("ring", cfg["n"]), worker=worker,
                               lighthouse=cfg["lighthouse"], timeout_s=5)
    opt = DistributedOptimizer(model.parameters(), "dpsgd", comm, overlap=False,
                               **cfg["options"])
    loop = ElasticLoop(opt)
    start = loop.join()
    dropped, present = 0, []
    while loop.step_count < cfg["steps"]:
        with loop.step() as step:
            gen = torch.Generator().manual_seed(1000 * step.number + worker)
            xb = torch.randn(8, 4, generator=gen, dtype=torch.float64)
            yb = torch.randint(0, 3, (8,), generator=gen)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            if step.number == cfg.get("pause_at"):
                (out / f"paused{worker}").write_text("")
                time.sleep(60)
        dropped += not step.committed
        if step.committed:
            (out / f"done{worker}_{step.number}").write_text("")
        present.append((step.number, step.committed, step.workers_present))
        if cfg.get("slow") and loop.workers_present < cfg["n"]:
            time.sleep(cfg["slow"])
    torch.save({"x": opt.flat_params.clone(), "start": start, "events": loop.events,
                "dropped": dropped, "present": present, "steps": loop.step_count},
               out / f"w{worker}_{os.getpid()}.pt")
    comm.shutdown()
    """
)


def _batch(worker: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * step + worker)
    xb = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    return xb, torch.randint(0, 3, (8,), generator=gen)


def _reference(
    n: int, steps: int, *, away: tuple[int, int, int] | None = None, source: int = 0
) -> torch.Tensor:
    """x ``[n, D]`` after ``steps`` of dpsgd on the simulated engine from worker 0's model.
    ``away = (worker, left, back)``: that worker is absent in steps ``left <= k < back`` and at
    step ``back`` starts again from worker ``source``'s x and momentum."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    x = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).repeat(n, 1)
    clock = None
    if away is not None:
        w, left, back = away  # the clock's steps are 0-based
        failures = FailureProfile(offline=(OfflineInterval(w, left - 1, back - 1),))
        clock = SystemClock(SystemProfile(n, failures=failures))
    comm = SimulatedCommunicator(make_topology("ring", n), clock=clock)
    algorithm = make_algorithm("dpsgd", **OPTIONS)
    state = algorithm.init(x, comm)
    for k in range(1, steps + 1):
        if away is not None and k == away[2]:
            x[away[0]] = x[source]
            if state.momentum_buffer is not None:
                state.momentum_buffer[away[0]] = state.momentum_buffer[source]
        comm.begin_step(k)
        held = comm.hold_absent(x, state)
        g = torch.zeros_like(x)
        for i in range(n):
            xi = x[i].clone().requires_grad_(True)
            xb, yb = _batch(i, k)
            logits = torch.nn.functional.linear(xb, xi[:12].view(3, 4), xi[12:])
            g[i] = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, yb), xi)[0]
        comm.compute()
        state = algorithm.step(x, g, state, comm)
        if held is not None:
            held.restore(x, state)
    return x


class _Run:
    """A lighthouse here and worker processes of ``WORKER``."""

    def __init__(self, tmp: Path, n: int, **cfg: Any) -> None:
        self.tmp, self.n = tmp, n
        self.lighthouse = start_lighthouse(0, min_replicas=1, heartbeat_timeout_ms=1000)
        self.cfg = {"n": n, "lighthouse": self.lighthouse.address(), "options": OPTIONS, **cfg}
        self.script = tmp / "worker.py"
        self.script.write_text(WORKER)
        self.procs: list[tuple[int, subprocess.Popen[bytes]]] = []

    def start(self, worker: int, **cfg: Any) -> subprocess.Popen[bytes]:
        env = {**os.environ, "REPLICA_GROUP_ID": str(worker), "RUST_LOG": "warn",
               "OMP_NUM_THREADS": "1"}
        log = open(self.tmp / f"log{worker}_{len(self.procs)}", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, str(self.script), json.dumps({**self.cfg, **cfg}), str(self.tmp)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append((worker, proc))
        return proc

    def wait_for(self, name: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.tmp / name).exists():
            assert time.monotonic() < deadline, f"no {name} after {timeout_s} s: {self.logs()}"
            time.sleep(0.02)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-1500:] for p in sorted(self.tmp.glob("log*")))

    def finish(self, procs: list[subprocess.Popen[bytes]], timeout_s: float = 120) -> None:
        for p in procs:
            assert p.wait(timeout=timeout_s) == 0, self.logs()

    def results(self, proc: subprocess.Popen[bytes], worker: int) -> dict[str, Any]:
        out: dict[str, Any] = torch.load(self.tmp / f"w{worker}_{proc.pid}.pt")
        return out

    def close(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.lighthouse.shutdown()


# ---------------------------------------------------------------------------------------------
# bad input, before any work
@pytest.fixture(scope="module")
def lighthouse() -> Any:
    server = start_lighthouse(0, min_replicas=1, heartbeat_timeout_ms=1000)
    yield server
    server.shutdown()


def _params() -> list[torch.Tensor]:
    return [torch.zeros(3, dtype=torch.float64, requires_grad=True)]


def test_a_communicator_that_is_not_elastic_is_refused() -> None:
    opt = DistributedOptimizer(_params(), "dpsgd", SimulatedCommunicator(make_topology("ring", 1)))
    with pytest.raises(ValueError, match=r"^opt: .*ElasticCommunicator.*SimulatedCommunicator$"):
        ElasticLoop(opt)


def test_overlap_and_half_of_the_state_callbacks_are_refused(lighthouse: Any) -> None:
    comm = ElasticCommunicator(
        make_topology("ring", 3), worker=0, lighthouse=lighthouse.address(), timeout_s=5
    )
    try:
        # dpsgd's atc form posts nothing at construction (cta would gossip before any quorum)
        opt = DistributedOptimizer(_params(), "dpsgd", comm, overlap=True, form="atc")
        with pytest.raises(ValueError, match=r"^opt: ElasticLoop needs overlap=False"):
            ElasticLoop(opt)
        opt = DistributedOptimizer(_params(), "dpsgd", comm, overlap=False)
        with pytest.raises(ValueError, match="state and load_state: give both"):
            ElasticLoop(opt, state=dict)
        detag = DistributedOptimizer(_params(), "detag", comm, overlap=False)
        with pytest.raises(ValueError, match="detag cannot survive"):
            ElasticLoop(detag)
        assert ElasticLoop(opt).step_count == 0  # accepted; nothing joined yet
    finally:
        comm.shutdown()


# ---------------------------------------------------------------------------------------------
# real runs
def test_no_faults_equals_the_simulated_engine(tmp_path: Path) -> None:
    """3 workers from different initialisations, 20 steps: every worker commits every step, and
    its parameters equal the simulated engine's from worker 0's model (float64, 1e-12)."""
    run = _Run(tmp_path, 3, steps=20)
    try:
        procs = [run.start(i) for i in range(3)]
        run.finish(procs)
        got = [run.results(p, i) for i, p in enumerate(procs)]
    finally:
        run.close()
    ref = _reference(3, 20)
    for i, r in enumerate(got):
        assert (r["start"], r["steps"], r["dropped"], r["events"]) == (0, 20, 0, []), i
        assert [p for p in r["present"]] == [(k, True, 3) for k in range(1, 21)]
        torch.testing.assert_close(r["x"][0], ref[i], rtol=0, atol=1e-12)
    assert not torch.equal(got[0]["x"], got[1]["x"])  # gossip: the workers differ


def test_a_killed_worker_is_dropped_and_a_restarted_one_rejoins(tmp_path: Path) -> None:
    """Worker 2 is killed inside step 8 after its opt.step() (its peers have updated x and
    wait in the commit): they drop step 8, restore the snapshot and redo it with the two of
    them; worker 2 is restarted and rejoins with the x a peer served (same SHA-1). Everyone
    ends at step 40 with the simulated engine's parameters for that history (1e-12), which
    fails if a dropped step is not rolled back."""
    n, steps, kill_at = 3, 40, 8
    run = _Run(tmp_path, n, steps=steps, slow=0.3)
    try:
        survivors = [run.start(i) for i in range(2)]
        victim = run.start(2, pause_at=kill_at)
        standby = run.start(2, go=str(tmp_path / "go"))
        run.wait_for("paused2")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        run.wait_for(f"done0_{kill_at + 1}")  # the survivors go on without it, then it rejoins
        (tmp_path / "go").write_text("")
        run.finish([*survivors, standby])
        got = [run.results(p, i) for i, p in enumerate([*survivors, standby])]
    finally:
        run.close()
    why = "\n".join(f"worker {i}: {r['events']} {r['present']}" for i, r in enumerate(got))
    for r in got:
        assert r["steps"] == steps, why
    left = [e for e in got[0]["events"] if e["event"] == "left"]
    joined = [e for e in got[0]["events"] if e["event"] == "joined"]
    assert [(e["worker"], e["step"]) for e in left] == [(2, kill_at)], why
    assert [e["worker"] for e in joined] == [2], why
    back = joined[0]["step"]
    assert kill_at < back <= steps, why
    for r in got[:2]:  # step 8 failed once on both survivors, then ran with 2 workers present
        assert r["dropped"] == 1, why
        assert (kill_at, False, 3) in r["present"] and (kill_at, True, 2) in r["present"], why
        assert (back, True, 3) in r["present"], why
    # the rejoin: worker 2 started at back - 1 from the state a survivor served, bit for bit
    mine = got[2]["events"][0]
    assert got[2]["start"] == back - 1 and mine["event"] == "joined" and mine["step"] == back, why
    served = [e for r in got[:2] for e in r["events"] if e["event"] == "served"]
    assert [(e["worker"], e["step"], e["x_sha1"]) for e in served] == [
        (mine["source"], back - 1, mine["x_sha1"])
    ], why
    # one line each on stderr: the lowest worker present reports, the rejoining one its own
    log0, log2 = (tmp_path / "log0_0").read_text(), (tmp_path / "log2_3").read_text()
    assert f"elastic: worker 2 left at step {kill_at} (2 of 3 workers present)" in log0
    assert f"elastic: worker 2 joined at step {back} (3 of 3 workers present)" in log0
    assert f"elastic: worker 2 rejoined at step {back}: parameters and optimizer state " in log2
    ref = _reference(n, steps, away=(2, kill_at, back), source=mine["source"])
    for i, r in enumerate(got):
        torch.testing.assert_close(r["x"][0], ref[i], rtol=0, atol=1e-12)
