"""An invalid option is named as the caller spells it: the field from Python (``lr``), the flag
on the command line (``--lr``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from peergrad.cli import main
from peergrad.study.compare import CompareEntry, compare
from peergrad.train import TrainConfig, train

TINY = {"dataset": "digits", "model": "logreg", "workers": 2, "steps": 1, "batch_size": 8}
CLI_TINY = ["--dataset", "digits", "--model", "logreg", "--workers", "2", "--steps", "1"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": math.nan}, "lr must be a finite number, got nan"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"timeout_s": 0}, "timeout_s must be a number > 0, got 0"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0, got -1"),
        (
            {"model": "mlp", "model_options": {"bogus": 1}},
            "model_options bogus: model 'mlp' has no such option; accepted: hidden",
        ),
    ],
)
def test_train_from_python_names_the_field(changes: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        train(TrainConfig(**{**TINY, **changes}), write=False)
    assert str(info.value) == message


def test_compare_from_python_names_its_keyword() -> None:
    entries = [CompareEntry("dpsgd", "dpsgd")]
    with pytest.raises(ValueError) as info:
        compare(TrainConfig(**TINY), entries, write=False, target_accuracy=2.0)
    assert str(info.value) == "target_accuracy must be in [0, 1], got 2.0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "nan"], "--lr must be a finite number, got nan"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (
            ["--model", "mlp", "--model-set", "bogus=1"],
            "--model-set bogus: model 'mlp' has no such option; accepted: hidden",
        ),
    ],
)
def test_the_command_line_names_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["train", *CLI_TINY, *argv, "--out", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"peergrad train: error: {message}"


def test_only_known_flags_are_renamed() -> None:
    from peergrad.train.spelling import python_spelling

    text = (
        "world size 2 (torchrun --nproc-per-node x --nnodes) differs from n = 4 (--workers); "
        "--no-download is set; --set-for LABEL:lr=...; --data-set k; --lr-schedule x; --lr. "
        "Start it as `torchrun -m peergrad train --engine distributed --lr 0.1` (--engine)"
    )
    assert python_spelling(text) == (
        "world size 2 (torchrun --nproc-per-node x --nnodes) differs from n = 4 (workers); "
        "download=False is set; --set-for LABEL:lr=...; data_options k; lr_schedule x; lr. "
        "Start it as `torchrun -m peergrad train --engine distributed --lr 0.1` (engine)"
    )
