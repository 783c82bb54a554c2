"""``peergrad compare``: run folders, comparison table and plots, validation, determinism."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from _helpers import SMALL
from peergrad.cli import main, parse_set_for
from peergrad.study.compare import TARGET_FIELDS, compare, first_at_target
from peergrad.train import METRIC_FIELDS, CompareEntry, TrainConfig, build_entries

BASE = TrainConfig(
    dataset="digits",
    model="logreg",
    workers=4,
    steps=12,
    eval_every=4,
    batch_size=16,
    progress=False,
)
ROW_KEYS = {
    "label",
    "algorithm",
    "options",
    "hyperparameters",
    "run_dir",
    "final",
    "best_test_accuracy",
    *TARGET_FIELDS,
}
PLOTS = (
    "compare_vs_samples.png",
    "compare_vs_bytes.png",
    "compare_vs_simulated_time.png",
    "compare_vs_rounds.png",
)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_wall_clock(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


def test_compare_writes_runs_table_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    target = 0.8
    argv = [
        "compare",
        "--algorithms",
        "dpsgd,allreduce,dpsgd@atc",
        "--set-for",
        "dpsgd@atc:form=atc",
        *SMALL,
        "--momentum",  # 12 steps: with momentum the target is reached
        "0.9",
        "--target-accuracy",
        str(target),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    labels = ["dpsgd", "allreduce", "dpsgd@atc"]

    # One ordinary run folder per label.
    for label in labels:
        names = {p.name for p in (out / label).iterdir()}
        assert {"config.json", "metrics.jsonl", "summary.json"} <= names
    config = TrainConfig.load(out / "dpsgd@atc" / "config.json")
    assert config.algorithm == "dpsgd" and config.options == {"form": "atc"}
    assert TrainConfig.load(out / "dpsgd" / "config.json").options == {}

    data = json.loads((out / "compare.json").read_text())
    assert data["target_accuracy"] == target
    assert data["config"]["workers"] == 4 and "algorithm" not in data["config"]
    rows = data["runs"]
    assert [r["label"] for r in rows] == labels
    assert [r["algorithm"] for r in rows] == ["dpsgd", "allreduce", "dpsgd"]
    reached = 0
    for row in rows:
        assert set(row) == ROW_KEYS
        assert set(row["final"]) == set(METRIC_FIELDS)
        records = read_jsonl(out / row["label"] / "metrics.jsonl")
        assert row["final"] == records[-1]
        assert row["best_test_accuracy"] == max(r["test_accuracy"] for r in records)
        # Computed independently from the run's own metrics.jsonl.
        hits = [r for r in records if r["test_accuracy"] >= target]
        if hits:
            reached += 1
            assert row["samples_to_target"] == hits[0]["samples_seen"]
            assert row["steps_to_target"] == hits[0]["step"]
            assert row["bytes_to_target"] == hits[0]["bytes_sent_per_worker"]
            assert row["simulated_comm_time_s_to_target"] == hits[0]["simulated_comm_time_s"]
            assert row["wall_time_s_to_target"] == hits[0]["wall_time_s"]
            assert row["rounds_to_target"] == hits[0]["comm_rounds"]
        else:
            assert all(row[k] is None for k in TARGET_FIELDS)
    assert reached >= 1  # the target is chosen so that the non-null path is exercised
    assert rows[2]["options"] == {"form": "atc"} and rows[2]["hyperparameters"]["form"] == "atc"
    assert rows[0]["hyperparameters"]["form"] == "cta"
    # Same algorithm, different options: different results.
    assert rows[0]["final"]["train_loss"] != rows[2]["final"]["train_loss"]
    assert rows[0]["final"]["consensus_distance"] != rows[2]["final"]["consensus_distance"]

    md = (out / "compare.md").read_text()
    assert f"test accuracy ≥ {target:g}" in md
    for label in labels:  # a row in the final-metrics table and in the to-target table
        assert sum(line.startswith(f"| {label} |") for line in md.splitlines()) == 2
    assert "form=atc" in md and "Still to run" not in md
    assert md.strip() in printed and f"compare folder: {out}" in printed

    for name in PLOTS:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_unreached_target_gives_null() -> None:
    result = compare(BASE, [CompareEntry("dpsgd", "dpsgd")], target_accuracy=1.0, write=False)
    assert result.out_dir is None
    (row,) = result.rows
    assert max(r["test_accuracy"] for r in result.records["dpsgd"]) < 1.0
    assert all(row[k] is None for k in TARGET_FIELDS)
    assert "| dpsgd | — | — | — | — | — | — |" in result.table


def test_first_at_target_is_the_first_record_at_or_above() -> None:
    records = [
        {"step": 0, "test_accuracy": 0.1},
        {"step": 1, "test_accuracy": None},
        {"step": 2, "test_accuracy": 0.5},
        {"step": 3, "test_accuracy": 0.7},
        {"step": 4, "test_accuracy": 0.4},
    ]
    assert first_at_target(records, 0.5)["step"] == 2  # type: ignore[index]
    assert first_at_target(records, 0.6)["step"] == 3  # type: ignore[index]
    assert first_at_target(records, 0.0)["step"] == 0  # type: ignore[index]
    assert first_at_target(records, 0.71) is None


def test_identical_entries_give_identical_metrics() -> None:
    entries = [
        CompareEntry("dpsgd@a", "dpsgd", {"form": "atc"}),
        CompareEntry("dpsgd@b", "dpsgd", {"form": "atc"}),
    ]
    result = compare(BASE, entries, target_accuracy=0.5, write=False)
    a, b = result.records["dpsgd@a"], result.records["dpsgd@b"]
    assert len(a) == 4 and without_wall_clock(a) == without_wall_clock(b)
    row_a, row_b = ({k: v for k, v in r.items() if k != "label"} for r in result.rows)
    for row in (row_a, row_b):
        row["final"] = {k: v for k, v in row["final"].items() if k != "wall_time_s"}
        row.pop("wall_time_s_to_target")
    assert row_a == row_b


def test_global_set_goes_to_the_algorithms_that_have_the_option() -> None:
    entries = build_entries(
        "dpsgd,allreduce,dpsgd@cta",
        {"form": "atc", "lr": "0.05"},
        {"dpsgd@cta": {"form": "cta"}},
    )
    assert [(e.label, e.algorithm) for e in entries] == [
        ("dpsgd", "dpsgd"),
        ("allreduce", "allreduce"),
        ("dpsgd@cta", "dpsgd"),
    ]
    assert entries[0].options == {"form": "atc", "lr": "0.05"}
    assert entries[1].options == {"lr": "0.05"}  # allreduce has no form
    assert entries[2].options == {"form": "cta", "lr": "0.05"}  # --set-for wins


def test_parse_set_for() -> None:
    assert parse_set_for(["dpsgd@atc:form=atc", "dpsgd@atc:lr=0.1", "allreduce:momentum=0"]) == {
        "dpsgd@atc": {"form": "atc", "lr": "0.1"},
        "allreduce": {"momentum": "0"},
    }
    for bad in ("form=atc", ":form=atc", "dpsgd:form"):
        with pytest.raises(ValueError, match="LABEL:key=value"):
            parse_set_for([bad])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algorithms", "dpsgd,allreduce,nope"], "unknown algorithm 'nope'; choose one of: "),
        (
            ["--algorithms", "dpsgd,allreduce,dpsgd@x", "--set-for", "dpsgd@x:gamma=1"],
            "dpsgd@x: algorithm 'dpsgd' has no option(s) gamma",
        ),
        (
            ["--algorithms", "dpsgd,allreduce,dpsgd@x", "--set-for", "dpsgd@x:lr=-1"],
            "dpsgd@x: lr must be a finite number > 0",
        ),
        (
            ["--algorithms", "allreduce,allreduce@b", "--set", "form=atc"],
            "--set form: none of the selected algorithms (allreduce) has it",
        ),
        (
            ["--algorithms", "dpsgd,allreduce", "--set-for", "dpsgd@atc:form=atc"],
            "no run is labelled 'dpsgd@atc'; the labels are: dpsgd, allreduce",
        ),
        (["--algorithms", "dpsgd,allreduce,dpsgd"], "run label(s) dpsgd given twice"),
        (["--algorithms", "dpsgd,../x"], "bad run label '../x'"),
        (["--algorithms", "dpsgd,,allreduce"], "comma-separated list"),
        (["--algorithms", "dpsgd", "--set-for", "dpsgd"], "--set-for expects LABEL:key=value"),
        (["--algorithms", "dpsgd,allreduce", "--target-accuracy", "1.5"], "--target-accuracy"),
        (["--algorithms", "dpsgd,allreduce", "--dataset", "imagenet"], "imagenet"),
        (["--algorithms", "dpsgd,allreduce", "--topology", "hypercube"], "hypercube"),
        (["--algorithms", "dpsgd,allreduce", "--batch-size", "100000"], "batch_size must be in"),
    ],
)
def test_everything_is_validated_before_the_first_run(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a run started before validation finished")

    monkeypatch.setattr("peergrad.study.compare.train", no_run)
    out = tmp_path / "never"
    assert main(["compare", *SMALL, "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("peergrad compare: error: ") and message in err
    assert not out.exists()


@pytest.mark.slow
def test_compare_on_the_distributed_engine_matches_the_simulated_engine(tmp_path: Path) -> None:
    """Every rank runs the same sequence of runs in one process group; rank 0 writes."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _distributed import start_workers, wait_all

    flags = [*SMALL, "--workers", "2", "--algorithms", "dpsgd,allreduce,dpsgd@atc"]
    flags += ["--set-for", "dpsgd@atc:form=atc"]
    procs = start_workers(
        ["-m", "peergrad", "compare", "--engine", "distributed", *flags, "--out", "dist"],
        2,
        cwd=tmp_path,
        log_dir=tmp_path,
    )
    assert wait_all(procs, timeout_s=180) == [0, 0], (tmp_path / "rank0.err").read_text()
    assert main(["compare", *flags, "--out", str(tmp_path / "sim")]) == 0
    for label in ("dpsgd", "allreduce", "dpsgd@atc"):
        dist = read_jsonl(tmp_path / "dist" / label / "metrics.jsonl")
        sim = read_jsonl(tmp_path / "sim" / label / "metrics.jsonl")
        assert [r["step"] for r in dist] == [r["step"] for r in sim]
        for d, s in zip(dist, sim, strict=True):
            for key in ("train_loss", "test_accuracy", "bytes_sent_per_worker"):
                assert d[key] == pytest.approx(s[key], rel=1e-5)
    assert (tmp_path / "dist" / "compare.md").exists()
