"""Checkpoint and resume: k steps, a crash, a resume and the remaining steps give exactly the
uninterrupted run (parameters, every piece of algorithm state, byte counters, metrics), on both
engines and for every algorithm of the registry; checkpoints are written atomically."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from _checkpoint_cases import CASES, STOP, Case, config_for
from _distributed import start_workers, wait_all
from peergrad.algorithms import REGISTRY
from peergrad.cli import main
from peergrad.train import TrainConfig, train
from peergrad.train import checkpoint as ckpt
from peergrad.train.checkpoint import to_plain

HERE = Path(__file__).parent


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Exact equality of plain containers (tensors: same dtype, shape and bits)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_same(u, v, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def strip_wall(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


# ---------------------------------------------------------------- simulated engine, every algorithm
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.key)
def test_resume_after_a_crash_equals_the_uninterrupted_run(case: Case, tmp_path: Path) -> None:
    straight = train(config_for(case, "simulated", str(tmp_path / "a")), write=False)
    config = config_for(case, "simulated", str(tmp_path / "b"))
    stopped = train(config, write=False, stop_after=STOP)
    assert [r["step"] for r in stopped.records] == [0, 4]  # step 4 comes after the checkpoint
    assert json.loads((tmp_path / "b" / ckpt.MANIFEST).read_text())["step"] == 3
    resumed = train(config, write=False, resume=True)

    assert torch.equal(resumed.x, straight.x)
    assert not torch.equal(resumed.x, stopped.x)
    assert_same(to_plain(resumed.state), to_plain(straight.state))
    assert torch.equal(resumed.comm.bytes_sent, straight.comm.bytes_sent)
    assert resumed.comm.simulated_comm_time_s == straight.comm.simulated_comm_time_s
    assert resumed.comm.rounds == straight.comm.rounds
    assert strip_wall(resumed.records) == strip_wall(straight.records)
    assert [r["step"] for r in resumed.records] == [0, 4, 6]


def test_cases_cover_the_whole_registry() -> None:
    assert {c.algorithm for c in CASES} == set(REGISTRY)


def test_the_run_folder_continues_seamlessly(tmp_path: Path) -> None:
    """write=True: metrics.jsonl of the resumed run is the uninterrupted run's, byte for byte
    apart from wall-clock fields; only the last checkpoint is kept."""
    case = Case("choco-sgd", "ring", {"compressor": "randomk", "ratio": "0.3"})
    straight = train(config_for(case, "simulated", str(tmp_path / "a")))
    config = config_for(case, "simulated", str(tmp_path / "b"))
    train(config, stop_after=STOP)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 4]
    assert not (tmp_path / "b" / "summary.json").exists()
    resumed = train(config, resume=True)
    assert torch.equal(resumed.x, straight.x)

    def text(run: str) -> list[str]:
        rows = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.dumps(strip_wall([json.loads(r)])[0]) for r in rows]

    assert text("b") == text("a")
    assert [p.name for p in (tmp_path / "b" / ckpt.FOLDER).iterdir()] == ["step-00000006"]
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["step"] == 6


# ---------------------------------------------------------------- distributed engine (gloo)
def run_distributed(tmp: Path, keys: str) -> dict[str, Any]:
    procs = start_workers(
        [str(HERE / "_checkpoint_worker.py"), str(tmp), str(HERE), keys], 4, cwd=tmp, log_dir=tmp
    )
    codes = wait_all(procs, timeout_s=600)
    logs = "\n".join((tmp / f"rank{r}.err").read_text()[-2000:] for r in range(4))
    assert codes == [0, 0, 0, 0], f"worker exit codes {codes}\n{logs}"
    return torch.load(tmp / "results.pt", weights_only=True)


def check_distributed(results: dict[str, Any], keys: list[str]) -> None:
    nan_messages = results.pop("__nan_guard__")
    assert len(set(nan_messages)) == 1, nan_messages  # every rank stops at the same step
    assert nan_messages[0].startswith("non-finite values at step "), nan_messages[0]
    assert sorted(results) == sorted(keys)
    for key in keys:
        straight, resumed = results[key]["straight"], results[key]["resumed"]
        assert torch.equal(resumed["x"], straight["x"]), key
        assert_same(resumed["ranks"], straight["ranks"], key)
        assert resumed["records"] == straight["records"], key
        assert [r["step"] for r in resumed["records"]] == [0, 4, 6]


def test_distributed_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    """Every case (the whole registry and the variants) in one 4-process launch: about 35 s."""
    results = run_distributed(tmp_path, "all")
    check_distributed(results, [c.key for c in CASES])
    # Each rank wrote its own shard; rank 0 the commit record.
    run = next(p for p in tmp_path.iterdir() if p.name.endswith("-b"))
    record = json.loads((run / ckpt.MANIFEST).read_text())
    assert record["engine"] == "distributed" and record["shards"] == 4
    assert sorted(p.name for p in (run / record["path"]).iterdir()) == [
        f"shard-{r}.pt" for r in range(4)
    ]


# ---------------------------------------------------------------- a real process, SIGKILL
KILL_RUN = [
    "--algorithm",
    "ef-sgd",
    "--set",
    "compressor=qsgd",
    "--dataset",
    "digits",
    "--model",
    "logreg",
    "--workers",
    "4",
    "--batch-size",
    "8",
    "--steps",
    "100",
    "--eval-every",
    "20",
    "--checkpoint-every",
    "10",
    "--no-progress",
]


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_run(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    assert main(["train", *KILL_RUN, "--out", str(straight)]) == 0

    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "peergrad", "train"]
    proc = subprocess.Popen([*cmd, *KILL_RUN, "--out", str(run)], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (run / ckpt.MANIFEST).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed_at = json.loads((run / ckpt.MANIFEST).read_text())["step"]
    assert 10 <= killed_at < 100 and not (run / "summary.json").exists()

    resumed = subprocess.run(
        [*cmd, "--resume", str(run), "--no-progress"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def metrics(folder: Path) -> list[dict[str, Any]]:
        return strip_wall(
            [json.loads(r) for r in (folder / "metrics.jsonl").read_text().splitlines()]
        )

    assert metrics(run) == metrics(straight)
    assert [r["step"] for r in metrics(run)] == [*range(0, 100, 20), 100]
    a = torch.load(run / "checkpoints" / "step-00000100" / "shard-0.pt", weights_only=True)
    b = torch.load(straight / "checkpoints" / "step-00000100" / "shard-0.pt", weights_only=True)
    for key in ("x", "state", "sampler", "comm", "torch_rng"):
        assert_same(a[key], b[key], key)
    config = TrainConfig.load(run / "config.json")
    assert config == TrainConfig(
        **{**TrainConfig.load(straight / "config.json").to_dict(), "out": str(run)}
    )


def test_a_finished_run_can_be_extended(tmp_path: Path) -> None:
    argv = ["--dataset", "digits", "--model", "logreg", "--workers", "2", "--batch-size", "8"]
    argv += ["--eval-every", "2", "--checkpoint-every", "2", "--no-progress"]
    assert main(["train", *argv, "--steps", "4", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *argv, "--steps", "2", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--steps", "4", "--no-progress"]) == 0

    def rows(run: str) -> list[dict[str, Any]]:
        text = (tmp_path / run / "metrics.jsonl").read_text()
        return strip_wall([json.loads(r) for r in text.splitlines()])

    assert rows("b") == rows("a") and [r["step"] for r in rows("b")] == [0, 2, 4]
    assert TrainConfig.load(tmp_path / "b" / "config.json").steps == 4


# ---------------------------------------------------------------- atomic writes
def test_a_crash_while_writing_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "checkpoint.json"
    ckpt.atomic_write_text(target, "old")

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_write_text(target, "new, half written")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]  # no temporary left


def test_state_round_trip_handles_nested_containers_and_generators() -> None:
    import dataclasses

    @dataclasses.dataclass
    class Inner:
        gen: torch.Generator
        pair: tuple[torch.Tensor, int]

    @dataclasses.dataclass
    class Outer:
        step: int
        eta: float
        flag: bool
        missing: torch.Tensor | None
        inner: Inner
        buffers: list[torch.Tensor]

    def make(seed: int) -> Outer:
        g = torch.Generator().manual_seed(seed)
        t = torch.randn(3, generator=g)
        return Outer(seed, 0.5 * seed, bool(seed), None, Inner(g, (t, seed)), [t * 2, t.double()])

    live = make(1)
    torch.rand(2, generator=live.inner.gen)  # move the generator on
    import io

    buf = io.BytesIO()
    torch.save(to_plain(live), buf)
    buf.seek(0)
    restored = ckpt.restore_into(make(0), torch.load(buf, weights_only=True))
    assert_same(to_plain(restored), to_plain(live))
    assert torch.equal(
        torch.rand(4, generator=restored.inner.gen), torch.rand(4, generator=live.inner.gen)
    )
    wrong = make(0)
    wrong.buffers[0] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"state.buffers\[0\].*shape \(3,\).*\(5,\)"):
        ckpt.restore_into(wrong, to_plain(live))


# ---------------------------------------------------------------- the drop-in optimizer
def test_optimizer_state_dict_checks_names_and_state_shapes() -> None:
    import io

    from torch import nn

    from peergrad.comm import SimulatedCommunicator
    from peergrad.optim import DistributedOptimizer
    from peergrad.topology import make_topology

    def optimizer(model: nn.Module) -> DistributedOptimizer:
        comm = SimulatedCommunicator(make_topology("ring", 1))
        return DistributedOptimizer(model.named_parameters(), "ef-sgd", comm, compressor="qsgd")

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    opt = optimizer(model)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)  # plain containers only (the generator state included)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)

    renamed = nn.Module()
    renamed.head = nn.Linear(4, 3)  # same shapes, other names
    other = optimizer(renamed)
    with pytest.raises(ValueError, match=r"parameter 0 is named 'head.weight' here but '0.weight'"):
        other.load_state_dict(sd)

    same = optimizer(nn.Sequential(nn.Linear(4, 3)))
    before = same.flat_params.clone()
    bad = {**sd, "state": {**sd["state"], "error": torch.zeros(1, 7)}}
    with pytest.raises(ValueError, match=r"ef-sgd state.error.*shape \(1, 7\).*\(1, 15\)"):
        same.load_state_dict(bad)
    assert torch.equal(same.flat_params, before)  # nothing changed
    same.load_state_dict(sd)
    assert torch.equal(same.flat_params, opt.flat_params)
    assert_same(to_plain(same.algorithm_state), to_plain(opt.algorithm_state))
