"""The NaN/Inf guard: the first step at which a worker's loss, gradient or parameters stop being
finite ends the run with an error naming the step and the worker(s); the last good checkpoint is
kept and resumable; ``peergrad train`` exits with code 1."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from peergrad.cli import main
from peergrad.train import NonFiniteError, TrainConfig, train
from peergrad.train import checkpoint as ckpt
from peergrad.train.loop import describe_nonfinite, nonfinite_codes

DIVERGING = TrainConfig(
    algorithm="dpsgd",
    dataset="digits",
    model="mlp",
    workers=4,
    steps=40,
    eval_every=5,
    batch_size=8,
    lr=1e5,  # far beyond any stable step size: one worker's MLP overflows after ~20 steps
    momentum=0.9,
    progress=False,
    checkpoint_every=4,
)


def test_a_diverging_run_stops_at_the_first_non_finite_step(tmp_path: Path) -> None:
    config = TrainConfig(**{**DIVERGING.to_dict(), "out": str(tmp_path / "run")})
    with pytest.raises(NonFiniteError) as info:
        train(config)
    message = str(info.value)
    step = int(message.split("non-finite values at step ")[1].split(":")[0])
    assert 4 < step < 40 and "worker " in message and "smaller --lr" in message
    # Every step before it was finite: the same run stopped one step earlier never trips.
    before = train(
        TrainConfig(**{**config.to_dict(), "out": str(tmp_path / "before")}),
        write=False,
        stop_after=step - 1,
    )
    assert bool(torch.isfinite(before.x).all())
    # The last good checkpoint (the last multiple of 4 before it) is kept and finite.
    good = (step - 1) // 4 * 4
    record = json.loads((tmp_path / "run" / ckpt.MANIFEST).read_text())
    assert record["step"] == good and f"last good checkpoint (step {good})" in message
    shard = ckpt.load_shard(tmp_path / "run", record, 0)
    assert bool(torch.isfinite(shard["x"]).all())
    # The metrics stop before the bad step (each line is complete JSON).
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == (step - 1) // 5 * 5


def test_the_cli_exits_1_with_a_one_line_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--dataset", "digits", "--model", "mlp", "--workers", "4", "--steps", "40"]
    argv += [
        "--batch-size",
        "8",
        "--lr",
        "1e5",
        "--eval-every",
        "40",
        "--no-progress",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("peergrad train: error: non-finite values at step")
    assert "no checkpoint was saved (use --checkpoint-every N)" in err[0]
    assert not (tmp_path / "r" / "summary.json").exists()


def test_codes_name_what_went_bad_on_which_worker() -> None:
    x = torch.zeros(4, 6)
    x[3, 2] = math.inf
    losses = torch.tensor([0.1, math.nan, 0.3, 0.4])
    g = torch.zeros(4, 6)
    g[2, 5] = -math.inf
    assert nonfinite_codes(losses, x).tolist() == [0, 1, 0, 4]  # every step: loss, parameters
    codes = nonfinite_codes(losses, x, g)
    assert codes.tolist() == [0, 1, 2, 4]
    assert describe_nonfinite(codes) == (
        "worker 1 (loss), worker 2 (gradient), worker 3 (parameters)"
    )
    x[1, 0] = math.nan
    state = {"tracker": torch.zeros(4, 6), "eta": torch.tensor(0.5), "step": 3}
    state["tracker"][0, 1] = math.nan
    assert describe_nonfinite(nonfinite_codes(losses, x, g, state)) == (
        "worker 0 (algorithm state), worker 1 (loss, parameters), worker 2 (gradient), "
        "worker 3 (parameters)"
    )
    state["eta"] = torch.tensor(math.inf)  # a state tensor shared by all workers
    assert (nonfinite_codes(torch.zeros(4), torch.ones(4, 6), None, state) == 8).all()
    assert not nonfinite_codes(torch.zeros(4), torch.ones(4, 6), torch.ones(4, 6)).any()
