"""``peergrad compare`` with seeds, a learning-rate grid selected on a validation split,
per-label task options and ``--resume`` (issue 17)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from peergrad.cli import main
from peergrad.data import validation_split
from peergrad.study.compare import (
    TASK_OPTIONS,
    compare,
    mean_std,
    parse_lr_grid,
    parse_seeds,
    plan_runs,
    select_lr,
)
from peergrad.train import CompareEntry, TrainConfig, build_entries

BASE = TrainConfig(
    dataset="digits",
    model="logreg",
    workers=4,
    steps=8,
    eval_every=4,
    batch_size=16,
    progress=False,
    val_fraction=0.2,
)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def interrupt_at_third_run(argv: list[str]) -> None:
    """Run ``peergrad compare ARGV`` with a Ctrl-C when its 3rd run starts (exit status 130)."""
    import peergrad.study.compare as cmp

    real_train = cmp.train
    calls: list[str] = []

    def stop_at_third(config, **kwargs):
        calls.append(config.out)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_train(config, **kwargs)

    cmp.train = stop_at_third
    try:
        assert main(argv) == 130
    finally:
        cmp.train = real_train


# ------------------------------------------------------------------ validation split
def test_validation_split_is_fixed_disjoint_and_complete() -> None:
    train, val = validation_split(1000, 0.1)
    assert len(val) == 100 and len(train) == 900
    both = torch.cat([train, val]).sort().values
    assert torch.equal(both, torch.arange(1000))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    # the same split whatever the run's seed (it never reads the global generator)
    torch.manual_seed(123)
    again = validation_split(1000, 0.1)
    assert torch.equal(again[1], val)
    assert math.ceil(0.25 * 7) == len(validation_split(7, 0.25)[1])


@pytest.mark.parametrize("fraction", [0, -0.1, 0.51, 1.0])
def test_validation_split_rejects_fractions_outside_range(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"--val-fraction must be in \(0, 0.5\]"):
        validation_split(100, fraction)


def test_training_never_reads_the_validation_samples(tmp_path: Path) -> None:
    """The shards hold only training indices, and val metrics are recorded."""
    from peergrad.train.task import build_task, task_from_config

    config = BASE
    built = build_task(task_from_config(config), config, torch.device("cpu"), torch.float32)
    full = build_task(
        task_from_config(config),
        TrainConfig(**{**config.to_dict(), "val_fraction": 0.0}),
        torch.device("cpu"),
        torch.float32,
    )
    keep, held = validation_split(len(full.train), config.val_fraction)
    assert len(built.train) == len(keep) and len(built.val) == len(held)
    assert torch.equal(built.val.x, full.train.x[held])
    assert torch.equal(built.train.x, full.train.x[keep])
    result = compare(BASE, [CompareEntry.from_label("dpsgd")], tmp_path / "c", write=True)
    last = result.records["dpsgd"][-1]
    assert last["val_accuracy"] is not None and 0 <= last["val_accuracy"] <= 1


# ------------------------------------------------------------------ parsing
def test_parse_grid_and_seeds() -> None:
    assert parse_lr_grid("0.01, 0.1") == (0.01, 0.1)
    assert parse_seeds("0,1,2") == (0, 1, 2)
    for bad, msg in [
        ("", "expects comma-separated numbers"),
        ("0.1,-1", "finite number > 0"),
        ("0.1,0", "finite number > 0"),
        ("0.1,0.1", "given twice"),
        ("0.1,abc", "expects comma-separated numbers"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_lr_grid(bad)
    for bad, msg in [("0,0", "given twice"), ("-1", "integers >= 0"), ("a", "integers >= 0")]:
        with pytest.raises(ValueError, match=msg):
            parse_seeds(bad)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--lr-grid", ""], "--lr-grid"),
        (["--lr-grid", "0.1,-0.3"], "finite number > 0"),
        (["--seeds", "0,1,1"], "seed 1 is given twice"),
        (["--lr-grid", "0.1", "--val-fraction", "0.6"], "--val-fraction must be in (0, 0.5]"),
        (["--lr-grid", "0.1", "--val-fraction", "0"], "--val-fraction must be in (0, 0.5]"),
        (["--set-for", "dpsgd:nonsense=1"], "has no option(s) nonsense"),
        (["--set-for", "dpsgd:seed=3"], "seed cannot differ between the runs"),
        (["--set-for", "dpsgd:workers=abc"], "expected int"),
        (["--set-for", "dpsgd:lr-grid=0,1"], "finite number > 0"),
        (["--set-for", "dpsgd:topology=moon"], "moon"),
        (["--lr", "0.1", "--lr-grid", "0.1,0.3"], "--lr and --lr-grid"),
        (["--set-for", "dpsgd:lr=0.1", "--set-for", "dpsgd:lr-grid=0.1,0.3"], "both set its lr"),
    ],
)
def test_bad_study_input_exits_2_before_any_run(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    base = ["compare", "--algorithms", "dpsgd,allreduce", "--dataset", "digits"]
    base += ["--model", "logreg", "--workers", "4", "--steps", "4", "--no-progress"]
    code, err = run_cli([*base, *argv, "--out", str(out)], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], err
    assert not out.exists()


def test_resume_refuses_other_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["compare", "--resume", str(tmp_path), "--workers", "3"], capsys)
    assert code == 2 and "do not give other options (workers)" in err
    code, err = run_cli(["compare", "--resume", str(tmp_path)], capsys)
    assert code == 2 and "no compare.json there" in err
    # compare's own flags too, not only those of `peergrad train`
    for flag, value in [("--seeds", "0,1"), ("--lr-grid", "0.1"), ("--target-accuracy", "0.5")]:
        code, err = run_cli(["compare", "--resume", str(tmp_path), flag, value], capsys)
        assert code == 2 and f"do not give other options ({flag[2:].replace('-', '_')})" in err
    code, err = run_cli(["compare", "--resume", str(tmp_path), "--overwrite"], capsys)
    assert code == 2 and "do not give other options (overwrite)" in err


def test_an_algorithm_option_wins_over_a_task_option_of_the_same_name() -> None:
    """The one clash: local-sgd's own ``warmup_steps`` (its post-local warm-up, inherited by
    its presets) is an algorithm option; for every other algorithm ``warmup-steps`` is the lr
    schedule's warm-up."""
    from peergrad.algorithms import REGISTRY, LocalSGD, algorithm_class

    clashes = {
        name: set(algorithm_class(name).hyperparameters()) & set(TASK_OPTIONS) for name in REGISTRY
    }
    local = {n for n, cls in REGISTRY.items() if issubclass(cls, LocalSGD)}
    assert {"local-sgd", "post-local-sgd"} <= local
    assert {k: v for k, v in clashes.items() if v} == dict.fromkeys(local, {"warmup_steps"})
    a, b = build_entries(
        "local-sgd,dpsgd", {}, {"local-sgd": {"warmup_steps": "3"}, "dpsgd": {"warmup-steps": "3"}}
    )
    assert a.options == {"warmup_steps": "3"} and a.task == {}
    assert b.options == {} and b.task == {"warmup_steps": 3}


# ------------------------------------------------------------------ selection
def _row(lr: float, seed: int, val: float, test: float, status: str = "finished") -> dict:
    return {
        "lr": lr,
        "seed": seed,
        "status": status,
        "final": {"val_accuracy": val, "val_loss": 1 - val, "test_accuracy": test},
    }


def test_select_lr_uses_the_seed_mean_validation_metric_never_test() -> None:
    rows = [
        # lr 0.1: best on test, worse on validation (seed mean 0.70)
        _row(0.1, 0, 0.72, 0.99),
        _row(0.1, 1, 0.68, 0.99),
        # lr 0.3: best seed-mean validation (0.75) although one seed is below 0.72
        _row(0.3, 0, 0.80, 0.50),
        _row(0.3, 1, 0.70, 0.50),
        # lr 1.0: best single validation value, but one seed diverged
        _row(1.0, 0, 0.95, 0.99),
        _row(1.0, 1, 0.10, 0.10, status="diverged: loss is nan"),
    ]
    chosen, results, field = select_lr([0.1, 0.3, 1.0], rows)
    assert (chosen, field) == (0.3, "val_accuracy")
    assert results[1]["val_accuracy"]["mean"] == pytest.approx(0.75, rel=0, abs=1e-12)
    assert results[2]["diverged"] == 1
    # without a metric, the validation loss (lower is better) decides
    for r in rows:
        r["final"]["val_accuracy"] = None
    chosen, _, field = select_lr([0.1, 0.3, 1.0], rows)
    assert (chosen, field) == (0.3, "val_loss")


def test_mean_std_matches_numpy() -> None:
    xs = [0.91, 0.93, 0.88]
    stat = mean_std([*xs, None])
    assert stat["n"] == 3
    assert stat["mean"] == pytest.approx(np.mean(xs), rel=0, abs=1e-15)
    assert stat["std"] == pytest.approx(np.std(xs, ddof=1), rel=0, abs=1e-15)
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0}


def test_plan_runs_names_and_order() -> None:
    entries = build_entries("dpsgd,allreduce", {}, {"allreduce": {"lr": "0.2"}})
    names = [s.name for s in plan_runs(entries, [0, 1], [0.1, 0.3])]
    assert names == [
        "dpsgd/lr0.1-seed0",
        "dpsgd/lr0.1-seed1",
        "dpsgd/lr0.3-seed0",
        "dpsgd/lr0.3-seed1",
        "allreduce/seed0",  # fixes its lr: out of the grid
        "allreduce/seed1",
    ]
    assert [s.name for s in plan_runs(entries)] == ["dpsgd", "allreduce"]


# ------------------------------------------------------------------ whole comparisons
def test_grid_and_seeds_select_on_validation_and_report_mean_std(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    entries = build_entries("dpsgd,allreduce", {}, {})
    with pytest.warns(UserWarning, match="is the (smallest|largest) value of its grid"):
        result = compare(BASE, entries, out, 0.5, seeds=[0, 1], lr_grid=[0.003, 0.3], write=True)
    data = json.loads((out / "compare.json").read_text())
    assert [lab["label"] for lab in data["labels"]] == ["dpsgd", "allreduce"]
    for lab in data["labels"]:
        label = lab["label"]
        # the choice is the argmax of the seed-mean final val_accuracy read from the folders
        means = {}
        for lr in (0.003, 0.3):
            vals = [
                read_jsonl(out / label / f"lr{lr:g}-seed{s}" / "metrics.jsonl")[-1]["val_accuracy"]
                for s in (0, 1)
            ]
            means[lr] = float(np.mean(vals))
        assert lab["chosen_lr"] == max(means, key=lambda k: means[k])
        assert lab["chosen_at_edge"] is True
        assert lab["runs"] == [f"{label}/lr{lab['chosen_lr']:g}-seed{s}" for s in (0, 1)]
        tests = [
            read_jsonl(out / run / "metrics.jsonl")[-1]["test_accuracy"] for run in lab["runs"]
        ]
        acc = lab["final"]["test_accuracy"]
        assert acc["n"] == 2
        assert acc["mean"] == pytest.approx(np.mean(tests), rel=0, abs=1e-12)
        assert acc["std"] == pytest.approx(np.std(tests, ddof=1), rel=0, abs=1e-12)
        reached = lab["to_target"]["steps_to_target"]
        assert reached["runs"] == 2 and 0 <= reached["reached"] <= 2
    # only the chosen runs' test metrics are reported
    chosen = {run for lab in data["labels"] for run in lab["runs"]}
    for row in data["runs"]:
        if row["run"] in chosen:
            assert row["final"]["test_accuracy"] is not None and row["chosen"] is True
        else:
            assert row["final"]["test_accuracy"] is None and row["best_test_accuracy"] is None
            assert row["final"]["val_accuracy"] is not None
    md = (out / "compare.md").read_text()
    assert "Learning-rate grid" in md and "±" in md
    assert result.labels == data["labels"]
    for name in ("compare_vs_samples.png", "compare_vs_bytes.png"):
        assert (out / name).stat().st_size > 0


def test_per_label_task_options_reach_the_run(tmp_path: Path) -> None:
    entries = build_entries(
        "dpsgd,dpsgd@star",
        {},
        {"dpsgd@star": {"topology": "star", "batch-size": "8", "lr-schedule": "cosine"}},
    )
    assert entries[1].task == {"topology": "star", "batch_size": 8, "lr_schedule": "cosine"}
    compare(BASE, entries, tmp_path / "c", 0.5, seeds=[3])
    plain = json.loads((tmp_path / "c" / "dpsgd" / "seed3" / "config.json").read_text())
    star = json.loads((tmp_path / "c" / "dpsgd@star" / "seed3" / "config.json").read_text())
    assert (plain["topology"], plain["batch_size"], plain["seed"]) == ("ring", 16, 3)
    assert (star["topology"], star["batch_size"], star["lr_schedule"]) == ("star", 8, "cosine")
    recs = read_jsonl(tmp_path / "c" / "dpsgd@star" / "seed3" / "metrics.jsonl")
    assert recs[-1]["samples_seen"] == 8 * 4 * 8  # steps x workers x its batch size
    assert recs[-1]["lr"] < recs[0]["lr"]  # the cosine schedule ran


def test_a_diverged_grid_value_is_recorded_and_never_chosen(tmp_path: Path) -> None:
    entries = build_entries("dpsgd", {}, {})
    with pytest.warns(UserWarning, match="smallest value of its grid"):
        result = compare(BASE, entries, tmp_path / "c", 0.5, seeds=[0], lr_grid=[0.1, 1e38])
    (lab,) = result.labels
    assert lab["chosen_lr"] == 0.1
    assert lab["diverged_runs"] == ["dpsgd/lr1e+38-seed0"]
    statuses = {r["run"]: r["status"] for r in result.rows}
    assert statuses["dpsgd/lr1e+38-seed0"].startswith("diverged")


def test_interrupted_comparison_resumes_and_keeps_finished_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "--algorithms", "dpsgd,allreduce", "--dataset", "digits"]
    argv += ["--model", "logreg", "--workers", "4", "--steps", "8", "--eval-every", "4"]
    argv += ["--batch-size", "16", "--no-progress", "--seeds", "0", "--lr-grid", "0.05,0.2"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*argv, "--out", str(full)]) == 0
    interrupt_at_third_run([*argv, "--out", str(part)])
    data = json.loads((part / "compare.json").read_text())
    assert len(data["runs"]) == 2 and len(data["pending"]) == 2
    # the pending label's grid rows name no metric yet; the finished label's name its metric
    md = (part / "compare.md").read_text().splitlines()
    grid_rows = [line for line in md if line.startswith(("| allreduce | 0.", "| dpsgd | 0."))]
    assert len(grid_rows) == 4, md
    for line in grid_rows:
        expected = "| val_accuracy " if line.startswith("| dpsgd") else "| — |"
        assert expected in line, line
    kept = (part / "dpsgd" / "lr0.05-seed0" / "metrics.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["compare", "--resume", str(part), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "run 1/4" not in err and "run 3/4" in err  # finished runs are not run again
    assert (part / "dpsgd" / "lr0.05-seed0" / "metrics.jsonl").stat().st_mtime_ns == kept
    a = json.loads((full / "compare.json").read_text())
    b = json.loads((part / "compare.json").read_text())
    assert b["pending"] == []
    for la, lb in zip(a["labels"], b["labels"], strict=True):
        assert la["chosen_lr"] == lb["chosen_lr"]
        for key in ("test_accuracy", "train_loss", "val_accuracy", "bytes_sent_per_worker"):
            assert la["final"][key] == lb["final"][key], key


RUN_PNGS = ("loss_accuracy_vs_steps.png", "loss_accuracy_vs_bytes.png")


@pytest.mark.parametrize("run_plots", [False, True])
def test_run_plots_only_on_request_and_kept_by_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], run_plots: bool
) -> None:
    """A comparison draws its own plots; each run folder's two PNGs only with --run-plots, and
    --resume keeps the choice made when the comparison started."""
    argv = ["compare", "--algorithms", "dpsgd,allreduce", "--dataset", "digits"]
    argv += ["--model", "logreg", "--workers", "4", "--steps", "4", "--eval-every", "2"]
    argv += ["--batch-size", "16", "--no-progress", "--seeds", "0,1"]
    argv += ["--run-plots"] if run_plots else []
    out = tmp_path / "cmp"
    interrupt_at_third_run([*argv, "--out", str(out)])
    assert json.loads((out / "compare.json").read_text())["plan"]["run_plots"] is run_plots
    assert main(["compare", "--resume", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    run_dirs = [out / label / f"seed{s}" for label in ("dpsgd", "allreduce") for s in (0, 1)]
    for run_dir in run_dirs:
        assert (run_dir / "metrics.jsonl").is_file()
        for name in RUN_PNGS:
            assert (run_dir / name).is_file() is run_plots, (run_dir, name)
    for name in ("compare_vs_samples.png", "compare_vs_rounds.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    code, err = run_cli(["compare", "--resume", str(out), "--run-plots"], capsys)
    assert code == 2 and "do not give other options (run_plots)" in err
