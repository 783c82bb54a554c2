"""Run folders are never silently replaced, and ``config.json`` says what ran (issue 13, items 1
and 2): ``--out`` into an existing run is refused (exit 2, one line naming ``--resume`` and
``--overwrite``, nothing changed); ``--overwrite`` replaces only the run's files; default names
take the next free suffix; ``compare --out`` likewise, and ``--overwrite`` leaves no stale run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _helpers import SMALL
from peergrad.algorithms import DPSGD, EFSGD
from peergrad.cli import main
from peergrad.train import TrainConfig


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time (ns)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def test_out_into_an_existing_run_is_refused_and_nothing_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "ck"
    first = ["train", *SMALL, "--algorithm", "choco-sgd", "--checkpoint-every", "10"]
    assert main([*first, "--out", str(run)]) == 0
    assert (run / "checkpoint.json").exists() and (run / "checkpoints").is_dir()
    before = snapshot(run)
    capsys.readouterr()

    assert main(["train", *SMALL, "--algorithm", "dpsgd", "--steps", "5", "--out", str(run)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert "already holds a run (config.json)" in lines[0]
    assert f"--resume {run}" in lines[0] and "--overwrite" in lines[0]
    assert snapshot(run) == before  # not a byte, not a timestamp
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # still resumable


def test_a_folder_with_only_a_checkpoint_is_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "checkpoint.json").write_text("{}")
    assert main(["train", *SMALL, "--out", str(run)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "checkpoint.json of an earlier run" in lines[0]
    assert [p.name for p in run.iterdir()] == ["checkpoint.json"]


def test_overwrite_replaces_the_run_and_keeps_other_files(tmp_path: Path) -> None:
    run = tmp_path / "ck"
    first = ["train", *SMALL, "--algorithm", "choco-sgd", "--checkpoint-every", "10"]
    assert main([*first, "--out", str(run)]) == 0
    (run / "notes.txt").write_text("mine")
    argv = ["train", *SMALL, "--algorithm", "dpsgd", "--steps", "5", "--eval-every", "5"]
    assert main([*argv, "--out", str(run), "--overwrite"]) == 0
    assert not (run / "checkpoint.json").exists() and not (run / "checkpoints").exists()
    assert TrainConfig.load(run / "config.json").algorithm == "dpsgd"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 5]  # nothing of the old run's records
    assert (run / "notes.txt").read_text() == "mine"


def test_a_rejected_overwrite_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    assert main(["train", *SMALL, "--out", str(run)]) == 0
    before = snapshot(run)
    assert main(["train", *SMALL, "--lr", "-1", "--out", str(run), "--overwrite"]) == 2
    assert "lr must be a finite number > 0" in capsys.readouterr().err
    assert snapshot(run) == before


def test_default_folder_names_never_reuse_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["train", *SMALL]) == 0
    # allreduce ignores the topology, so its folder name leaves it out
    assert main(["train", *SMALL, "--algorithm", "allreduce"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "allreduce-n4-digits-iid-seed0",
        "dpsgd-ring4-digits-iid-seed0",
        "dpsgd-ring4-digits-iid-seed0-2",
    ]


def test_config_json_records_the_resolved_hyperparameters(tmp_path: Path) -> None:
    run = tmp_path / "r"
    argv = ["train", *SMALL, "--algorithm", "ef-sgd", "--set", "layerwise=true", "--lr", "0.05"]
    assert main([*argv, "--out", str(run)]) == 0
    data = json.loads((run / "config.json").read_text())
    # what the user gave ...
    assert data["options"] == {"layerwise": "true"}
    assert data["lr"] == 0.05 and data["momentum"] is None and data["weight_decay"] is None
    # ... and what ran: every option, defaults and run-dependent values included
    expected = {**EFSGD().options(), "lr": 0.05, "layerwise": True, "segments": [640, 10]}
    assert data["hyperparameters"] == expected
    assert isinstance(data["peergrad_version"], str)
    assert TrainConfig.load(run / "config.json").options == {"layerwise": "true"}


def test_resume_compares_against_what_the_user_gave(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    assert main(["train", *SMALL, "--checkpoint-every", "6", "--out", str(run)]) == 0
    hyper = json.loads((run / "config.json").read_text())["hyperparameters"]
    assert hyper == DPSGD().options()
    capsys.readouterr()
    # momentum ran as 0.0, but the user gave none: naming it now is a change
    assert main(["train", "--resume", str(run), "--momentum", "0.0"]) == 2
    assert "--momentum 0.0 differs from the run's None" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--steps", "16", "--no-progress"]) == 0
    data = json.loads((run / "config.json").read_text())
    assert data["steps"] == 16 and data["hyperparameters"] == hyper


# ---------------------------------------------------------------- compare --out
COMPARE = ["compare", *SMALL, "--steps", "4", "--eval-every", "4"]


def test_compare_into_an_existing_comparison_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    assert main([*COMPARE, "--algorithms", "dpsgd,allreduce", "--out", str(out)]) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main([*COMPARE, "--algorithms", "d2", "--out", str(out)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "already holds a comparison" in lines[0]
    assert "--overwrite" in lines[0]
    assert snapshot(out) == before


def test_compare_overwrite_leaves_no_stale_runs(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert main([*COMPARE, "--algorithms", "dpsgd,allreduce", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert main([*COMPARE, "--algorithms", "d2", "--out", str(out), "--overwrite"]) == 0
    listed = [r["label"] for r in json.loads((out / "compare.json").read_text())["runs"]]
    assert listed == ["d2"]
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["d2"]  # dpsgd/ and allreduce/ are gone
    assert (out / "notes.txt").read_text() == "mine"
