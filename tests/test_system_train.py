"""A system profile everywhere a user looks (issue 26, item 4): ``TrainConfig(system=...)`` and
``peergrad train --system``, the ``simulated_time_s`` record field and the summary's per-worker
split, resume with the clock's state, bad input, ``peergrad system`` and ``compare --system``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from _helpers import SMALL
from peergrad.cli import main
from peergrad.train import TrainConfig, train
from peergrad.train import checkpoint as ckpt
from peergrad.train.checkpoint import to_plain
from peergrad.train.plots import simulated_time_key
from peergrad.train.recorder import SYSTEM_SUMMARY_FIELDS

BASE: dict[str, Any] = dict(
    dataset="digits",
    model="logreg",
    workers=4,
    steps=6,
    eval_every=3,
    batch_size=8,
    seed=5,
    progress=False,
)

TWO_RACKS = """
name = "racks"
[compute]
step_ms = 2.0
{speed}
[links]
groups = [[0, 1], [2, 3]]
intra_latency_ms = 0.01
intra_bandwidth_gbps = 100.0
inter_latency_ms = 5.0
inter_bandwidth_gbps = 1.0
"""

CHURN = """
seed = 3
[compute]
step_ms = 1.0
jitter_sigma = 0.3
straggler_prob = 0.2
straggler_slowdown = 4.0
[failures]
link_drop_prob = 0.3
leave_prob = 0.2
mean_downtime_steps = 3.0
[[failures.offline]]
worker = 2
start_step = 2
stop_step = 5
"""


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def without(records: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in keys} for r in records]


# ---------------------------------------------------------------- the numbers
def test_the_uniform_profile_reproduces_todays_numbers_exactly() -> None:
    """--system uniform takes --latency-ms/--bandwidth-gbps (the uniform-links shorthand):
    the trajectory, every record and simulated_comm_time_s are today's, bit for bit, and the
    clock's time of identical workers without compute on a ring is the alpha-beta time."""
    links = dict(latency_ms=0.37, bandwidth_gbps=3.3)
    today = train(TrainConfig(**BASE, **links), write=False)
    uniform = train(TrainConfig(**BASE, **links, system="uniform"), write=False)
    assert torch.equal(uniform.x, today.x)
    assert without(uniform.records, "wall_time_s", "simulated_time_s") == without(
        today.records, "wall_time_s"
    )
    assert all("simulated_time_s" not in r for r in today.records)  # no profile: no field
    assert "system" not in today.summary
    for r in uniform.records:
        assert r["simulated_time_s"] == r["simulated_comm_time_s"]  # exact, rtol = 0
    assert uniform.records[-1]["simulated_comm_time_s"] > 0


def test_a_straggler_costs_time_and_changes_no_parameter(tmp_path: Path) -> None:
    """Without failures the clock changes no math: the same parameters and records bit for bit,
    only simulated_time_s grows with a persistent 4x straggler; the summary has the split."""
    even = write(tmp_path / "even.toml", TWO_RACKS.format(speed=""))
    slow = write(
        tmp_path / "slow.toml",
        TWO_RACKS.format(speed="persistent_stragglers = [1]\npersistent_slowdown = 4.0"),
    )
    a = train(TrainConfig(**BASE, system=even), write=False)
    b = train(TrainConfig(**BASE, system=slow), write=False)
    assert torch.equal(a.x, b.x)
    assert without(a.records, "wall_time_s", "simulated_time_s") == without(
        b.records, "wall_time_s", "simulated_time_s"
    )
    assert b.records[-1]["simulated_time_s"] > a.records[-1]["simulated_time_s"]
    system = b.summary["system"]
    assert set(system) == set(SYSTEM_SUMMARY_FIELDS)
    assert (system["profile"], system["name"]) == (slow, "racks")
    # the straggler computed 6 steps of 8 ms, the others 6 of 2 ms; they waited for it
    assert system["compute_s_max"] == pytest.approx(6 * 8e-3, rel=1e-12)
    assert system["compute_s_mean"] == pytest.approx(6 * (3 * 2e-3 + 8e-3) / 4, rel=1e-12)
    assert system["idle_s_max"] > a.summary["system"]["idle_s_max"]
    assert b.summary["simulated_time_s"] == b.records[-1]["simulated_time_s"]


def test_device_flops_only_counts_the_step_flops_of_the_model(tmp_path: Path) -> None:
    path = write(tmp_path / "flops.toml", "[compute]\ndevice_flops = 1.0e9\n")
    run = train(TrainConfig(**BASE, algorithm="allreduce", system=path), write=False)
    # logreg 64 -> 10 on a batch of 8: forward 2*8*64*10 FLOPs, backward the weight gradient
    # (the input gradient is not needed): 2 * 10240 FLOPs per step, 6 steps
    assert run.summary["system"]["compute_s_max"] == pytest.approx(6 * 20480 / 1e9, rel=1e-12)
    assert run.summary["system"]["resolved"]["compute"]["flops_per_step"] == 20480


# ---------------------------------------------------------------- resume
def test_resume_in_the_middle_of_a_churn_interval_is_bit_exact(tmp_path: Path) -> None:
    """Checkpoint at step 3 while worker 2 is away (steps 2-4) and random churn, link drops,
    jitter and stragglers are drawn: the resumed run equals the uninterrupted one."""
    churn = write(tmp_path / "churn.toml", CHURN)
    config = dict(BASE, eval_every=2, checkpoint_every=3, system=churn)
    straight = train(TrainConfig(**config, out=str(tmp_path / "a")), write=False)
    resumable = TrainConfig(**config, out=str(tmp_path / "b"))
    stopped = train(resumable, write=False, stop_after=5)
    assert json.loads((tmp_path / "b" / ckpt.MANIFEST).read_text())["step"] == 3
    resumed = train(resumable, write=False, resume=True)

    assert torch.equal(resumed.x, straight.x)
    assert not torch.equal(resumed.x, stopped.x)
    assert without(resumed.records, "wall_time_s") == without(straight.records, "wall_time_s")
    times = [r["simulated_time_s"] for r in straight.records]
    assert times == sorted(times) and len(set(times)) == len(times)  # the clock ran
    a, b = straight.comm.clock, resumed.comm.clock  # type: ignore[attr-defined]
    assert a.absent_s.max() > 0  # somebody was away
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        va, vb = to_plain(sa[k]), to_plain(sb[k])
        assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, k


def test_resume_refuses_another_system_profile(tmp_path: Path) -> None:
    churn = write(tmp_path / "churn.toml", CHURN)
    config = TrainConfig(**dict(BASE, checkpoint_every=3, system=churn), out=str(tmp_path / "r"))
    train(config, write=False, stop_after=3)
    write(tmp_path / "churn.toml", CHURN.replace("seed = 3", "seed = 4"))
    with pytest.raises(ValueError, match="resume.*another system profile"):
        train(config, write=False, resume=True)
    other = TrainConfig(**{**config.to_dict(), "system": None})
    with pytest.raises(ValueError, match="saved with a system profile"):
        train(other, write=False, resume=True)


# ---------------------------------------------------------------- the command line
def test_train_with_system_writes_the_field_and_the_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    racks = write(tmp_path / "racks.toml", TWO_RACKS.format(speed=""))
    assert main(["train", *SMALL, "--system", racks, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "simulated_time_s" in printed and "system.idle_s_max" in printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["simulated_time_s"] >= r["simulated_comm_time_s"] for r in records)
    assert "simulated_time_s" in (out / "metrics.csv").read_text().splitlines()[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["system"]["profile"] == racks
    assert json.loads((out / "config.json").read_text())["system"] == racks


# (id, TOML text or None, extra argv, substrings of the error line)
BAD: list[tuple[str, str | None, list[str], list[str]]] = [
    ("preset", None, ["--system", "nope"], ["--system nope", "not a preset", "edge"]),
    ("missing-file", None, ["--system", "{tmp}/none.toml"], ["does not exist"]),
    (
        "unknown-key",
        "[compute]\nstep_mss = 1.0\n",
        [],
        ["unknown key 'compute.step_mss'", "step_ms"],
    ),
    ("zero-bandwidth", "[links]\nbandwidth_gbps = 0\n", [], ["links.bandwidth_gbps", "> 0"]),
    ("negative-speed", "[compute]\nspeed = [1, 1, -1, 1]\n", [], ["compute.speed[2]", "> 0"]),
    ("probability", "[failures]\nlink_drop_prob = 1.0\n", [], ["link_drop_prob", "[0, 1)"]),
    ("n-workers", "n_workers = 8\n", [], ["written for n_workers = 8", "4 workers"]),
    ("group", "[links]\ngroups = [[0, 1], [2, 9]]\n", [], ["links.groups[1]", "worker 9"]),
    (
        "refused-algorithm",
        "[failures]\nleave_prob = 0.1\n",
        ["--algorithm", "d2"],
        ["failures.leave_prob", "d2 cannot run under failures"],
    ),
    (
        "directed",
        "[failures]\nlink_drop_prob = 0.1\n",
        ["--topology", "exponential"],
        ["failures.link_drop_prob", "'exponential' is directed"],
    ),
    ("links-twice", None, ["--system", "edge", "--latency-ms", "5"], ["--latency-ms 5", "edge"]),
    (
        "distributed",
        None,
        ["--system", "edge", "--engine", "distributed"],
        ["failures.leave_prob", "distributed engine does not impose churn"],
    ),
]


@pytest.mark.parametrize(
    ("toml", "extra", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_system_input_exits_2_with_one_line_and_no_folder(
    toml: str | None,
    extra: list[str],
    expected: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # a default run folder would appear under runs/
    out = tmp_path / "never"
    argv = ["train", *SMALL, "--out", str(out)]
    if toml is not None:
        argv += ["--system", write(tmp_path / "bad.toml", toml)]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0], err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_peergrad_system_prints_a_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["system", "two-datacenters", "--workers", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = {line.split("  ")[0]: line.split("  ", 1)[1].strip() for line in lines}
    assert table["name"] == "two-datacenters" and table["n_workers"] == "8"
    assert table["links.shape"] == "2 groups (sizes 4, 4)"
    assert table["links.latency_ms min/median/max"] == "0.01 / 5 / 5"
    assert table["links.bandwidth_gbps min/median/max"] == "1 / 1 / 100"
    assert "counted from the model" in table["compute.step_ms"]

    slow = write(
        tmp_path / "slow.toml",
        TWO_RACKS.format(speed="persistent_stragglers = [1]\npersistent_slowdown = 4.0")
        + "[failures]"
        + CHURN.split("[failures]")[1],
    )
    assert main(["system", slow, "--workers", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compute.step_ms"] == 2.0 and report["compute.slowest_step_ms"] == 8.0
    assert report["compute.persistent_stragglers"] == "1"
    assert report["failures.leave_prob"] == 0.2
    assert report["failures.offline"] == "worker 2 steps [2, 5)"

    assert main(["system", "edge", "--workers", "4", "--flops-per-step", "1e9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["compute.step_ms"] == 10.0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["nope", "--workers", "4"], "not a preset"),
        (["uniform", "--workers", "0"], "--workers must be an integer >= 1"),
        (["{tmp}/eight.toml", "--workers", "4"], "written for n_workers = 8"),
        (["edge", "--workers", "4", "--flops-per-step", "-1"], "--flops-per-step must be > 0"),
    ],
)
def test_peergrad_system_bad_input_exits_2_with_one_line(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "eight.toml", "n_workers = 8\n")
    code = main(["system", *[a.replace("{tmp}", str(tmp_path)) for a in argv]])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and expected in err, err


def test_compare_with_system_reports_time_to_target_under_the_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    racks = write(tmp_path / "racks.toml", TWO_RACKS.format(speed=""))
    out = tmp_path / "cmp"
    argv = ["compare", "--algorithms", "dpsgd,allreduce", *SMALL, "--system", racks]
    assert main([*argv, "--target-accuracy", "0.05", "--out", str(out)]) == 0
    capsys.readouterr()
    report = json.loads((out / "compare.json").read_text())
    assert report["config"]["system"] == racks
    for row in report["runs"]:
        records = [
            json.loads(line)
            for line in (out / row["label"] / "metrics.jsonl").read_text().splitlines()
        ]
        first = next(r for r in records if r["test_accuracy"] >= 0.05)
        assert row["simulated_time_s_to_target"] == first["simulated_time_s"]
        assert row["final"]["simulated_time_s"] == records[-1]["simulated_time_s"]
        assert simulated_time_key({row["label"]: records}) == "simulated_time_s"
    table = (out / "compare.md").read_text()
    assert "simulated comm time (s) | simulated time (s) | wall time (s)" in table
    assert (out / "compare_vs_simulated_time.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_with_system_and_seeds_writes_its_table_while_labels_are_pending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare.md is rewritten after every run: a label with no finished run yet has no
    ``simulated_time_s`` (it crashed with a KeyError after the first run)."""
    racks = write(tmp_path / "racks.toml", TWO_RACKS.format(speed=""))
    out = tmp_path / "cmp"
    argv = ["compare", "--algorithms", "dpsgd,allreduce", *SMALL, "--system", racks]
    assert main([*argv, "--seeds", "0,1", "--out", str(out)]) == 0
    capsys.readouterr()
    report = json.loads((out / "compare.json").read_text())
    assert len(report["runs"]) == 4
    assert all(lab["final"]["simulated_time_s"]["n"] == 2 for lab in report["labels"])
    assert "simulated time (s)" in (out / "compare.md").read_text()


def test_without_system_the_tables_and_plots_keep_the_communication_time() -> None:
    records = [{"simulated_comm_time_s": 0.0}, {"simulated_comm_time_s": 1.0}]
    assert simulated_time_key({"a": records}) == "simulated_comm_time_s"
    mixed = [records, [{"simulated_comm_time_s": 0.0, "simulated_time_s": 0.5}]]
    assert simulated_time_key({"a": mixed}) == "simulated_comm_time_s"  # one clock per plot


def test_compare_refuses_an_algorithm_that_cannot_take_the_failures_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second label is refused before the first one runs (one line, exit 2, no folder)."""
    churn = write(tmp_path / "churn.toml", "[failures]\nleave_prob = 0.1\n")
    out = tmp_path / "cmp"
    argv = ["compare", "--algorithms", "dpsgd,d2", *SMALL, "--system", churn, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: d2: failures.leave_prob" in err, err
    assert not out.exists()
