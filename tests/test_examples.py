"""The examples in ``examples/`` run: ``own_model_simulated``'s model through the CLI
(``--model examples.own_model_simulated:make_model``, found from the repository root as under
torchrun) and its comparison of three algorithms on a user ``Task``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from peergrad.cli import main
from peergrad.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SPEC = "examples.own_model_simulated"
D = 1946  # make_model()'s parameters for 10 classes


@pytest.fixture
def from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work from the repository root, as ``torchrun ... -m peergrad`` there does; the resolver's
    addition of the current folder to ``sys.path`` is undone afterwards."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.usefixtures("from_repo_root")
def test_example_model_trains_from_the_cli(tmp_path: Path) -> None:
    """``peergrad train --model examples.own_model_simulated:make_model --model-set ...``: the
    module imports from the repository root, the CLI fills in ``num_classes``, and every
    worker sends its 1,946 parameters to its 2 ring neighbours at every step."""
    out = tmp_path / "run"
    argv = ["train", "--model", f"{SPEC}:make_model", "--model-set", "dropout=0.1"]
    argv += ["--dataset", f"{SPEC}:make_data", "--workers", "4", "--batch-size", "8"]
    argv += ["--steps", "5", "--lr-schedule", "cosine", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    config = TrainConfig.load(out / "config.json")
    assert config.model == f"{SPEC}:make_model" and config.model_options == {"dropout": "0.1"}
    records = read_jsonl(out / "metrics.jsonl")
    assert records[-1]["step"] == 5
    assert records[-1]["bytes_sent_per_worker"] == 5 * 2 * D * 4
    assert 0 <= records[-1]["test_accuracy"] <= 1


def test_example_compares_three_algorithms_on_a_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``own_model_simulated.main`` trains the Task with each algorithm through
    ``compare(..., task=task)``, writes the comparison folder and prints one row per run."""
    sys.path.insert(0, str(ROOT))
    try:
        from examples import own_model_simulated as example
    finally:
        sys.path.remove(str(ROOT))
    out = tmp_path / "cmp"
    example.main(["--steps", "4", "--workers", "4", "--out", str(out)])
    labels = [e.label for e in example.ENTRIES]
    assert labels == ["dpsgd", "gradient-tracking", "decentralized-amsgrad"]
    data = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in data["runs"]] == labels
    assert data["config"]["partition"] == "sorted" and data["config"]["lr_schedule"] == "cosine"
    for row, entry in zip(data["runs"], example.ENTRIES, strict=True):
        assert row["hyperparameters"]["lr"] == entry.options["lr"]
        assert (out / row["label"] / "metrics.jsonl").is_file()
    assert (out / "compare.md").is_file() and (out / "compare_vs_bytes.png").is_file()
    printed = capsys.readouterr().out
    assert all(label in printed for label in labels)
