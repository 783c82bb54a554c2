"""The elastic engine (issue 29): torchft quorum, live-peer rejoin, parity with the plain
distributed engine and with the simulated engine's churn.

The multi-process tests start torchft's lighthouse in this process and the workers as processes
of their own (``REPLICA_GROUP_ID``); ``peergrad.testing.elastic.ElasticWorkers`` runs the CLI,
the parity tests a small script calling :func:`peergrad.train.train` that saves the final x.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("RUST_LOG", "warn")  # before torchft's import: its lighthouse logs at info
pytest.importorskip("torchft")

from peergrad.algorithms import REGISTRY, check_elastic, make_algorithm  # noqa: E402
from peergrad.comm.elastic import elastic_worker_id, start_lighthouse  # noqa: E402
from peergrad.topology import make_topology  # noqa: E402
from peergrad.train import TrainConfig, train  # noqa: E402
from peergrad.train.elastic import check_elastic_config  # noqa: E402

# one run of peergrad.train.train per process: worker REPLICA_GROUP_ID, final x saved
WORKER = textwrap.dedent(
    """
    import json, sys, torch
    from peergrad.train import TrainConfig, train
    opts = json.loads(sys.argv[1])
    result = train(TrainConfig(**opts), write=bool(opts.get("out")))
    torch.save({"x": result.x, "records": result.records}, sys.argv[2])
    """
)

BASE: dict[str, Any] = {
    "workers": 4,
    "topology": "ring",
    "dtype": "float64",
    "eval_every": 5,
    "progress": False,
    "timeout_s": 10.0,
}


def _run_elastic(tmp: Path, per_worker: list[dict[str, Any]], timeout_s: float = 180) -> list[Any]:
    """Run one elastic worker process per entry (its options), with a lighthouse here; return
    each worker's saved ``{"x", "records"}``."""
    lighthouse = start_lighthouse(0, min_replicas=1, heartbeat_timeout_ms=1000)
    script = tmp / "worker.py"
    script.write_text(WORKER)
    procs = []
    try:
        for i, opts in enumerate(per_worker):
            opts = {**opts, "engine": "distributed", "elastic": True,
                    "lighthouse": lighthouse.address()}
            env = {**os.environ, "REPLICA_GROUP_ID": str(i), "RUST_LOG": "warn",
                   "OMP_NUM_THREADS": "1"}
            log = open(tmp / f"worker{i}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen(
                [sys.executable, str(script), json.dumps(opts), str(tmp / f"x{i}.pt")],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            ))
        for i, p in enumerate(procs):
            code = p.wait(timeout=timeout_s)
            assert code == 0, (tmp / f"worker{i}.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        lighthouse.shutdown()
    return [torch.load(tmp / f"x{i}.pt", weights_only=False) for i in range(len(per_worker))]


def _run_plain(tmp: Path, opts: dict[str, Any], n: int) -> list[Any]:
    """The same script under torchrun (the plain distributed engine), n processes."""
    script = tmp / "plain.py"
    script.write_text(
        WORKER.replace("sys.argv[2])", "sys.argv[2] + str(__import__('os').environ['RANK']))")
    )
    opts = {**opts, "engine": "distributed"}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         str(n), str(script), json.dumps(opts), str(tmp / "plain")],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [torch.load(tmp / f"plain{i}", weights_only=False) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# acceptance: no faults = the plain distributed engine; a scripted leave = simulated churn
def test_no_faults_equals_the_plain_distributed_engine(tmp_path: Path) -> None:
    """dpsgd on a ring, 4 workers, float64: every worker's x after 12 steps is bit-identical to
    the plain distributed engine's (torch.distributed under torchrun), and so are the records."""
    opts = {**BASE, "algorithm": "dpsgd", "steps": 12}
    elastic = _run_elastic(tmp_path, [opts] * 4)
    plain = _run_plain(tmp_path, opts, 4)
    everyone = plain[0]["x"]  # rank 0 of the plain engine returns every worker's row
    assert everyone.shape[0] == 4
    for i in range(4):
        assert torch.equal(elastic[i]["x"][0], everyone[i]), f"worker {i}"
    got = [r["test_loss"] for r in elastic[0]["records"]]
    assert got == [r["test_loss"] for r in plain[0]["records"]]
    assert [r["workers_present"] for r in elastic[0]["records"]] == [4, 4, 4, 4]
    assert not torch.equal(elastic[0]["x"], elastic[1]["x"])  # gossip: the workers differ


def test_a_worker_that_leaves_is_the_simulated_engines_churn(tmp_path: Path) -> None:
    """Worker 2 leaves after step 5 (its run ends there); the others run 10 more steps with
    the Metropolis-Hastings weights of the workers present (complete graph). The simulated
    engine with worker 2 offline from step 6 on gives the same parameters, to 1e-12, on all
    four workers."""
    # complete graph: the survivors' weights (1/3) differ from W's (1/4); on a ring they would
    # not (Metropolis-Hastings gives 1/3 on a ring and on the path that survives)
    opts = {**BASE, "algorithm": "dpsgd", "steps": 15, "topology": "complete"}
    per_worker = [opts, opts, {**opts, "steps": 5}, opts]
    elastic = _run_elastic(tmp_path, per_worker)
    profile = tmp_path / "leave.toml"
    profile.write_text('[failures]\noffline = [{worker = 2, start_step = 5, stop_step = 100}]\n')
    sim = train(
        TrainConfig(**{**opts, "engine": "simulated", "system": str(profile)}),
        write=False,
        plots=False,
    )
    for i in range(4):
        torch.testing.assert_close(elastic[i]["x"][0], sim.x[i], rtol=0, atol=1e-12)
    assert [r["workers_present"] for r in elastic[0]["records"]] == [4, 4, 3, 3]
    # the leave changed the weights: without it, the survivors would have mixed with worker 2
    no_leave = train(TrainConfig(**{**opts, "engine": "simulated"}), write=False, plots=False)
    assert (no_leave.x[0] - elastic[0]["x"][0]).abs().max() > 1e-6


# ---------------------------------------------------------------------------------------------
# checks before any work
@pytest.mark.parametrize("name", ["d2", "detag", "choco-sgd"])
def test_methods_that_cannot_survive_a_membership_change_are_refused(name: str) -> None:
    algorithm = make_algorithm(name)
    with pytest.raises(ValueError, match=f"--elastic: {name} cannot survive"):
        check_elastic(algorithm, make_topology("ring", 4))


def test_elastic_behaviour_of_every_registered_method() -> None:
    refused = sorted(
        n for n, cls in REGISTRY.items()
        if (cls.elastic if cls.elastic is not None else cls.failures) == "refused"
    )
    assert refused == ["choco-sgd", "d2", "detag"]
    check_elastic(make_algorithm("diloco"), make_topology("ring", 4))  # refused under churn only


def test_a_directed_topology_is_refused_for_gossip() -> None:
    with pytest.raises(ValueError, match="directed"):
        check_elastic(make_algorithm("dpsgd"), make_topology("exponential", 8))
    check_elastic(make_algorithm("allreduce"), make_topology("exponential", 8))  # no gossip


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"engine": "simulated"}, "--elastic needs --engine distributed"),
        ({"out": None}, "--elastic needs --out"),
        ({"checkpoint_every": 5}, "--checkpoint-every is not available"),
        ({"system": "stragglers"}, "--system is not available"),
        ({"tensorboard": True}, "--tensorboard is not available"),
    ],
)
def test_options_the_elastic_engine_refuses(
    change: dict[str, Any], match: str, tmp_path: Path
) -> None:
    config = TrainConfig(**{"engine": "distributed", "elastic": True, "out": str(tmp_path),
                            **change})
    with pytest.raises(ValueError, match=match):
        check_elastic_config(config)
    with pytest.raises(ValueError, match="--resume is not available"):
        check_elastic_config(TrainConfig(engine="distributed", elastic=True, out="x"), resume=True)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"REPLICA_GROUP_ID": "3"}, 3),
        ({"RANK": "1"}, 1),
        ({"REPLICA_GROUP_ID": "2", "RANK": "0"}, 2),
    ],
)
def test_worker_id_from_the_environment(env: dict[str, str], expected: int) -> None:
    assert elastic_worker_id(4, env) == expected


@pytest.mark.parametrize(
    ("env", "match"),
    [({}, "set REPLICA_GROUP_ID"), ({"REPLICA_GROUP_ID": "4"}, r"in \[0, 3\]"),
     ({"REPLICA_GROUP_ID": "a"}, "must be an integer")],
)
def test_bad_worker_id(env: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        elastic_worker_id(4, env)


def test_gradient_tracking_reinitialises_its_tracker_when_the_workers_change() -> None:
    """After a leave, the survivors' trackers no longer average their gradients; the elastic
    hook restores mean(tracker) = mean(grad_prev) over the workers present."""
    from peergrad.comm import SimulatedCommunicator

    gt = make_algorithm("gradient-tracking", lr=0.1)
    comm = SimulatedCommunicator(make_topology("ring", 4))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    state = gt.init(x, comm)
    for _ in range(3):
        state = gt.step(x, torch.randn(4, 6, generator=gen, dtype=torch.float64), state, comm)
    present = [0, 1, 3]  # worker 2 left with its share of the tracker
    gap = (state.tracker[present].mean(0) - state.grad_prev[present].mean(0)).abs().max()
    assert gap > 1e-3
    state = gt.membership_changed(x, state, comm)
    torch.testing.assert_close(
        state.tracker[present].mean(0), state.grad_prev[present].mean(0), rtol=0, atol=1e-15
    )


# ---------------------------------------------------------------------------------------------
# the communicator's collectives, with and without a worker
COLLECTIVES = textwrap.dedent(
    """
    import sys, torch
    from peergrad.comm.elastic import ElasticCommunicator
    from peergrad.topology import make_topology
    worker, address, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    comm = ElasticCommunicator(make_topology("complete", 3), worker=worker, lighthouse=address,
                               timeout_s=10)
    W = comm.topology.at(0)
    x = torch.arange(5, dtype=torch.float64)[None] * (worker + 1) + 0.25 * worker
    results = []
    for step in (1, 2):
        comm.begin_step()
        r = {"present": comm.present, "mean": comm.mean(x).clone(), "mix": comm.mix(x, W).clone(),
             "gather": comm.all_gather(x).clone(), "max": comm.max_over_workers(10 * worker),
             "bcast": comm.broadcast(x.clone(), src=1)}
        try:
            r["a2a"] = comm.all_to_all(x[:, None, :1].expand(1, 3, 1).contiguous()).clone()
        except ValueError as exc:
            r["a2a"] = str(exc)
        r["bytes"] = float(comm.bytes_sent[0])
        assert comm.commit()
        results.append(r)
        if worker == 2:
            break
    torch.save(results, out)
    comm.shutdown()
    """
)


def test_the_communicators_collectives_over_the_workers_present(tmp_path: Path) -> None:
    """3 workers on a complete graph, then worker 2 leaves: mean, gossip, all-gather,
    broadcast and max are over the workers present (gossip with the Metropolis-Hastings
    weights of the survivors); all-to-all needs every worker."""
    lighthouse = start_lighthouse(0, min_replicas=1, heartbeat_timeout_ms=500)
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    env = {**os.environ, "RUST_LOG": "warn", "OMP_NUM_THREADS": "1"}
    try:
        procs = [
            subprocess.Popen([sys.executable, str(script), str(i), lighthouse.address(),
                              str(tmp_path / f"r{i}.pt")], env=env, stderr=subprocess.PIPE)
            for i in range(3)
        ]
        for p in procs:
            _, err = p.communicate(timeout=180)
            assert p.returncode == 0, err.decode()[-3000:]
    finally:
        lighthouse.shutdown()
    res = [torch.load(tmp_path / f"r{i}.pt", weights_only=False) for i in range(3)]
    xs = torch.stack([torch.arange(5, dtype=torch.float64) * (i + 1) + 0.25 * i for i in range(3)])
    for i in range(3):  # step 1: everyone
        r = res[i][0]
        assert r["present"] == [0, 1, 2]
        torch.testing.assert_close(r["mean"][0], xs.mean(0), rtol=0, atol=1e-14)
        torch.testing.assert_close(r["mix"][0], xs.mean(0), rtol=0, atol=1e-14)  # W = J / 3
        assert torch.equal(r["gather"][0], xs)
        assert r["max"] == 20
        assert torch.equal(r["bcast"][0], xs[1])
        assert torch.equal(r["a2a"][0, :, 0], xs[:, 0])
    for i in (0, 1):  # step 2: worker 2 has left
        r = res[i][1]
        assert r["present"] == [0, 1]
        torch.testing.assert_close(r["mean"][0], xs[:2].mean(0), rtol=0, atol=1e-14)
        # survivors' Metropolis-Hastings weights: 1/2 each (degree 1), not W's 1/3
        torch.testing.assert_close(r["mix"][0], xs[:2].mean(0), rtol=0, atol=1e-14)
        assert torch.equal(r["gather"][0], xs[:2])
        assert r["max"] == 10
        assert "all_to_all needs every worker" in r["a2a"]
        sent = r["bytes"] - res[i][0]["bytes"]
        # step 1: all-reduce 2(3-1)/3·40, gossip 2·40, all-gather (3-1)·40 -> step 2 among 2
        assert sent == 2 * 1 / 2 * 40 + 1 * 40 + 1 * 40, sent


def test_worker_0_starts_the_lighthouse_when_none_is_given(tmp_path: Path) -> None:
    """Without --lighthouse and $TORCHFT_LIGHTHOUSE, worker 0 starts one on port 29510 and the
    other worker finds it on localhost (the single-machine default)."""
    import socket

    with socket.socket() as probe:
        if probe.connect_ex(("localhost", 29510)) == 0:
            pytest.skip("port 29510 is in use here")
    env = {k: v for k, v in os.environ.items() if k != "TORCHFT_LIGHTHOUSE"}
    env.update(RUST_LOG="warn", OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    args = [sys.executable, "-m", "peergrad", "train", "--engine", "distributed", "--elastic",
            "--workers", "2", "--steps", "6", "--eval-every", "3", "--out", str(out),
            "--timeout-s", "10"]
    procs = [
        subprocess.Popen(args, env={**env, "REPLICA_GROUP_ID": str(i)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for i in range(2)
    ]
    logs = [p.communicate(timeout=180)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["workers_present"]) for r in records] == [(0, 2), (3, 2), (6, 2)]
