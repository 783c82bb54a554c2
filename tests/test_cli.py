"""The ``peergrad`` command: run folder contents, determinism, topology report, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import SMALL
from peergrad.cli import main
from peergrad.train import METRIC_FIELDS, TrainConfig, train


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_writes_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out), "--set", "form=atc"]) == 0
    printed = capsys.readouterr().out
    assert "test_accuracy" in printed and "run folder" in printed
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "loss_accuracy_vs_steps.png",
        "loss_accuracy_vs_bytes.png",
    } <= names
    config = TrainConfig.load(out / "config.json")
    assert config.options == {"form": "atc"} and config.workers == 4
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 4, 8, 12]
    for r in records:
        assert set(METRIC_FIELDS) <= set(r)
    assert records[-1]["samples_seen"] == 12 * 4 * 16
    # Ring of 4 in float32: every step each worker sends its model to its 2 neighbours.
    dim = 64 * 10 + 10
    assert records[-1]["bytes_sent_per_worker"] == 12 * 2 * dim * 4
    assert [r["comm_rounds"] for r in records] == [0, 4, 8, 12]  # one gossip round per step
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 12 and 0 <= summary["test_accuracy"] <= 1
    assert (out / "loss_accuracy_vs_steps.png").read_bytes()[:4] == b"\x89PNG"


def test_same_config_gives_byte_identical_metrics_except_wall_clock(tmp_path: Path) -> None:
    """Same config and seed: metrics.jsonl is byte-identical once the wall-clock field is
    removed from each line (Dirichlet partition, sampling and the QSGD compressor's randomness
    are all seeded). (ef-sgd all-gathers its messages: a topology would be ignored.)"""
    config = TrainConfig(
        algorithm="ef-sgd",
        options={"compressor": "qsgd"},
        dataset="digits",
        model="mlp",
        workers=4,
        steps=10,
        eval_every=5,
        batch_size=8,
        progress=False,
        partition="dirichlet",
    )

    def metrics(name: str, seed: int = 0) -> bytes:
        run = TrainConfig(**{**config.to_dict(), "seed": seed, "out": str(tmp_path / name)})
        train(run)
        text = (tmp_path / name / "metrics.jsonl").read_text()
        assert text.count("wall_time_s") == 3
        # Drop only the wall-clock field, keeping every other byte of each line as written.
        return re.sub(r', "wall_time_s": [0-9.e+-]+', "", text).encode()

    a = metrics("a")
    assert b"wall_time_s" not in a and a.count(b"\n") == 3
    assert metrics("b") == a
    assert metrics("c", seed=1) != a


def test_topology_command_reports_named_spectral_quantities(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["topology", "ring", "--workers", "8", "--json", "--params", "100"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert abs(report["spectral_gap"] - 0.1953) < 1e-4
    assert abs(report["rho"] - 0.8047) < 1e-4
    assert report["max_out_degree"] == 2
    assert report["bytes_per_round_per_worker"] == 2 * 100 * 4
    assert main(["topology", "exponential", "--workers", "16"]) == 0
    text = capsys.readouterr().out
    assert "spectral_gap" in text and "lambda_2" in text


def test_algorithms_command_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["algorithms"]) == 0
    text = capsys.readouterr().out
    assert "dpsgd" in text and "allreduce" in text and "arXiv:1705.09056" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algorithm", "nope"], "unknown algorithm 'nope'; choose one of: allreduce, dpsgd"),
        (["--topology", "hypercube"], "hypercube"),
        (["--dataset", "imagenet"], "imagenet"),
        (["--model", "vit"], "vit"),
        (["--partition", "random"], "random"),
        (["--lr", "-1"], "lr must be a finite number > 0"),
        (["--workers", "0"], "--workers must be an integer >= 1"),
        (["--batch-size", "100000"], "batch_size must be in"),
        (["--set", "noequals"], "--set expects key=value"),
        (["--set", "gamma=2"], "has no option"),
        (
            ["--device", "cuda:7"]
            if not __import__("torch").cuda.is_available()
            else ["--device", "tpu"],
            "--device",
        ),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "never"
    assert main(["train", *SMALL, "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "peergrad", "algorithms"], capture_output=True, text=True, check=True
    )
    assert "dpsgd" in proc.stdout
