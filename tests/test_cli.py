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


# ---------------------------------------------------------------- issue 14: bring your own
NEW_FLAGS = [
    "--model-set",
    "hidden=8",
    "--model-set",
    "norm=batch",
    "--data-set",
    "n=256",
    "--loss",
    "mse",
    "--lr-schedule",
    "cosine",
    "--warmup-steps",
    "20",
    "--buffers",
    "average",
    "--loader-workers",
    "2",
]
NEW_VALUES = {
    "model_options": {"hidden": "8", "norm": "batch"},
    "data_options": {"n": "256"},
    "loss": "mse",
    "lr_schedule": "cosine",
    "warmup_steps": 20,
    "buffers": "average",
    "loader_workers": 2,
}


@pytest.mark.parametrize("command", ["train", "compare"])
def test_new_flags_reach_the_config(command: str) -> None:
    """train and compare share the flags; KEY=VALUE values stay text, as with --set."""
    from peergrad.cli import build_parser, config_from_args
    from peergrad.study.compare import PER_ENTRY_FIELDS

    extra = ["--algorithms", "dpsgd"] if command == "compare" else []
    args = build_parser().parse_args([command, *extra, *NEW_FLAGS])
    skip = PER_ENTRY_FIELDS if command == "compare" else ()
    config = config_from_args(args, skip=skip)
    assert {k: getattr(config, k) for k in NEW_VALUES} == NEW_VALUES
    defaults = config_from_args(build_parser().parse_args([command, *extra]), skip=skip)
    assert {k: getattr(defaults, k) for k in NEW_VALUES} == {
        k: getattr(TrainConfig(), k) for k in NEW_VALUES
    }


def test_new_flags_count_as_explicit() -> None:
    from peergrad.cli import explicit_fields

    assert set(NEW_VALUES) <= explicit_fields(NEW_FLAGS)
    assert not set(NEW_VALUES) & explicit_fields(["--steps", "3"])


def user_run_argv(out: Path, steps: int = 8) -> list[str]:
    return [
        "--model",
        "_user_task:make_model",
        "--model-set",
        "hidden=8",
        "--dataset",
        "_user_task:make_data",
        "--data-set",
        "n=256",
        "--workers",
        "4",
        "--batch-size",
        "8",
        "--steps",
        str(steps),
        "--eval-every",
        "1",
        "--no-progress",
        "--lr-schedule",
        "cosine",
        "--warmup-steps",
        "2",
        "--out",
        str(out),
    ]


def test_train_with_a_user_model_data_and_a_schedule(tmp_path: Path) -> None:
    """``peergrad train --model package.module:callable --model-set ... --lr-schedule cosine
    --warmup-steps N``: the run uses the user's model (hidden=8) and data, and every record holds
    the scheduled lr of its step."""
    import math

    out = tmp_path / "run"
    assert main(["train", *user_run_argv(out), "--lr", "0.2"]) == 0
    config = TrainConfig.load(out / "config.json")
    assert config.model_options == {"hidden": "8"} and config.data_options == {"n": "256"}
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(9))

    def factor(k: int) -> float:  # warm-up 2, then cosine over the remaining 6 steps
        return k / 3 if k <= 2 else (1 + math.cos(math.pi * (k - 3) / 6)) / 2

    got = [r["lr"] for r in records[1:]]
    assert got == pytest.approx([0.2 * factor(k) for k in range(1, 9)], rel=1e-12, abs=0)
    assert records[0]["lr"] == pytest.approx(0.2 * factor(1), rel=1e-12, abs=0)
    # The model is the user's: D = (8*8 + 8) + (8*3 + 3) values per worker.
    assert records[-1]["bytes_sent_per_worker"] == 8 * 2 * (8 * 8 + 8 + 8 * 3 + 3) * 4


def test_compare_takes_the_new_flags(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    argv = user_run_argv(out, steps=4)
    assert main(["compare", "--algorithms", "dpsgd,allreduce", *argv]) == 0
    for label in ("dpsgd", "allreduce"):
        config = TrainConfig.load(out / label / "config.json")
        assert config.model == "_user_task:make_model" and config.lr_schedule == "cosine"
        assert config.warmup_steps == 2 and config.model_options == {"hidden": "8"}


def test_user_module_is_found_from_the_current_folder(tmp_path: Path) -> None:
    """The console script finds ``tests._user_task`` in the working folder, as ``python -m``
    would (the script's own folder, not the working one, is on its sys.path)."""
    script = Path(sys.executable).parent / "peergrad"
    root = Path(__file__).resolve().parent.parent
    argv = user_run_argv(tmp_path / "run", steps=3)
    argv = [a.replace("_user_task:", "tests._user_task:") for a in argv]
    proc = subprocess.run(
        [str(script), "train", *argv], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert TrainConfig.load(tmp_path / "run" / "config.json").model == "tests._user_task:make_model"
