"""What a run on a user's ``Task`` records, and how (issue 24, items 7-10 and 13).

- a metric says its direction (``Task(metric_mode="min"|"max")``): learning-rate grids, targets,
  best values, plots and ``compare.md`` follow it, and a lower-is-better metric (an error,
  perplexity) is never recorded as an "accuracy";
- ``config.json`` and ``compare.md`` describe the task that ran, not the preset fields it did not
  use; ``peergrad train --resume`` of such a run says in one line how to resume it from Python;
- run files respect the umask like an ordinary ``open()``;
- the progress bar stays out of files unless ``--progress`` asks for it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from peergrad import Task
from peergrad.cli import main
from peergrad.study.compare import compare, first_at_target, select_lr
from peergrad.train import CompareEntry, TrainConfig, train
from peergrad.train.checkpoint import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
PRESET_FIELDS = ("model", "dataset", "loss", "data_root", "download", "model_options")


# ------------------------------------------------------------------ tasks
def regression_data() -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """y = x w + noise, 6 features: 288 training and 96 test samples."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(384, 6, generator=g)
    y = x @ torch.randn(6, 1, generator=g) + 0.05 * torch.randn(384, 1, generator=g)
    return (x[:288], y[:288]), (x[288:], y[288:])


def blobs() -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Three Gaussian classes in 8 dimensions: 384 training and 128 test samples."""
    g = torch.Generator().manual_seed(1)
    centers = 2.0 * torch.randn(3, 8, generator=g)
    y = torch.randint(0, 3, (512,), generator=g)
    x = centers[y] + torch.randn(512, 8, generator=g)
    return (x[:384], y[:384]), (x[384:], y[384:])


def linear_model() -> nn.Module:
    return nn.Linear(6, 1)


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def mae(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean absolute error: lower is better."""
    return (outputs - targets).abs().mean()


def perplexity(outputs: Tensor, targets: Tensor) -> Tensor:
    """exp(cross-entropy) of the batch: a language model's lower-is-better metric."""
    return F.cross_entropy(outputs, targets).exp()


def regression_task(**kw: Any) -> Task:
    """Linear regression with the MSE loss and the MAE metric (``metric_mode`` from ``kw``)."""
    train_data, test_data = regression_data()
    kw.setdefault("metric", mae)
    return Task(
        model=linear_model,
        train_data=train_data,
        test_data=test_data,
        loss_fn=F.mse_loss,
        name="linreg",
        **kw,
    )


def classification_task(**kw: Any) -> Task:
    train_data, test_data = blobs()
    return Task(model=SmallNet, train_data=train_data, test_data=test_data, name="blobs", **kw)


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {"workers": 4, "batch_size": 16, "steps": 12, "eval_every": 4}
    base.update(kw)
    return TrainConfig(**base)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------ item 7: metric direction
@pytest.mark.parametrize("mode", ["lower", "MIN", "", None, 1])
def test_metric_mode_is_checked_naming_it_and_the_allowed_values(mode: Any) -> None:
    with pytest.raises(ValueError, match=r"^metric_mode must be one of 'max', 'min'") as info:
        classification_task(metric=perplexity, metric_mode=mode)
    assert "\n" not in str(info.value)


def test_accuracy_is_higher_is_better_and_max_stays_the_default() -> None:
    with pytest.raises(ValueError, match=r"metric_mode must be 'max' for metric='accuracy'"):
        classification_task(metric_mode="min")
    assert classification_task().metric_mode == "max"


def test_the_lr_grid_picks_the_smallest_validation_error_of_a_min_metric(tmp_path: Path) -> None:
    """MAE on a regression: lr 0.002 barely moves in 30 steps (large error), lr 0.1 fits (small
    error); the grid must keep 0.1, the value with the *smallest* validation MAE, and "to target"
    is the first evaluation at or below the target."""
    base = config(steps=30, eval_every=10, val_fraction=0.2, progress=False)
    task = regression_task(metric_mode="min")
    with pytest.warns(UserWarning, match="chosen lr 0.1 is the largest value of its grid"):
        result = compare(
            base,
            [CompareEntry("dpsgd", "dpsgd")],
            tmp_path / "cmp",
            0.5,
            task=task,
            lr_grid=[0.002, 0.1],
        )
    [label] = result.labels  # type: ignore[misc]
    assert label["selection_metric"] == "val_metric"
    means = {res["lr"]: res["val_metric"]["mean"] for res in label["grid"]}
    assert means[0.002] > 2 * means[0.1]  # the grid is informative
    assert label["chosen_lr"] == min(means, key=means.__getitem__) == 0.1
    # the chosen run's error ends below the target and was above it at step 0
    [chosen] = label["runs"]
    records = result.records[chosen]
    assert "test_accuracy" not in records[0] and records[0]["test_metric"] > 0.5
    hit = next(r for r in records if r["test_metric"] <= 0.5)
    assert label["to_target"]["steps_to_target"]["mean"] == hit["step"]
    assert label["best_test_metric"]["mean"] == min(r["test_metric"] for r in records)
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["metric_mode"] == "min"
    assert "test_metric" in saved["labels"][0]["final"]
    assert "test_accuracy" not in saved["labels"][0]["final"]
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "To reach test metric ≤ 0.5" in md and "accuracy" not in md
    assert "val_metric" in md


def test_select_lr_and_first_at_target_follow_the_direction() -> None:
    rows = [
        {"lr": 0.1, "status": "finished", "final": {"val_metric": 3.0}},
        {"lr": 0.3, "status": "finished", "final": {"val_metric": 1.0}},
        {"lr": 1.0, "status": "finished", "final": {"val_metric": 9.0}},
    ]
    chosen, _, field = select_lr([0.1, 0.3, 1.0], rows, "min")
    assert (chosen, field) == (0.3, "val_metric")
    records = [{"step": s, "test_metric": v} for s, v in ((0, 5.0), (4, 3.0), (8, 1.5), (12, 1.0))]
    assert first_at_target(records, 2.0, "min")["step"] == 8  # type: ignore[index]
    assert first_at_target(records, 0.5, "min") is None
    accs = [{"step": 0, "test_accuracy": 0.2}, {"step": 4, "test_accuracy": 0.95}]
    assert first_at_target(accs, 0.9)["step"] == 4  # type: ignore[index]


def test_a_perplexity_metric_is_recorded_as_a_lower_is_better_metric(tmp_path: Path) -> None:
    """A language-model style metric: recorded as ``test_metric`` (never ``test_accuracy``), the
    best value is the smallest, and config.json and summary.json record the direction."""
    out = tmp_path / "run"
    task = classification_task(metric=perplexity, metric_mode="min")
    result = train(config(steps=24, lr=0.1, out=str(out), progress=False), task)
    values = [r["test_metric"] for r in result.records]
    assert all("test_accuracy" not in r and "worker_test_accuracy" not in r for r in result.records)
    assert values[-1] < values[0]  # it learns: perplexity goes down
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric_mode"] == "min"
    assert summary["best_test_metric"] == min(values)
    assert "best_test_accuracy" not in summary
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["task"]["metric_mode"] == "min"
    assert recorded["task"]["metric"].endswith("perplexity")
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "test_metric" in header and "test_accuracy" not in header
    from peergrad.train.plots import metric_mode_of

    assert metric_mode_of({"run": result.records}) == "min"


# ------------------------------------------------------------------ item 8: records of a Task
def test_config_json_records_the_task_not_the_unused_presets(tmp_path: Path) -> None:
    out = tmp_path / "run"
    task = classification_task()
    train(config(out=str(out), val_fraction=0.25, progress=False), task, plots=False)
    recorded = json.loads((out / "config.json").read_text())
    for key in PRESET_FIELDS:
        assert key not in recorded, key
    info = recorded["task"]
    n_params = sum(p.numel() for p in SmallNet().parameters())
    assert info["name"] == "blobs"
    assert info["model"].endswith("SmallNet")
    assert info["parameters"] == info["trainable_parameters"] == n_params
    assert (info["train_size"], info["val_size"], info["test_size"]) == (288, 96, 128)
    assert info["loss"] == "cross-entropy (default)"
    assert (info["metric"], info["metric_mode"]) == ("accuracy", "max")
    # the algorithm's options and the run's own fields are still there
    assert recorded["algorithm"] == "dpsgd" and recorded["hyperparameters"]["lr"] > 0
    # a built-in preset run keeps its fields and gets no "task"
    preset = tmp_path / "preset"
    train(config(dataset="digits", model="logreg", out=str(preset), progress=False), plots=False)
    recorded = json.loads((preset / "config.json").read_text())
    assert (recorded["dataset"], recorded["model"]) == ("digits", "logreg")
    assert "task" not in recorded


def test_compare_md_shares_the_task_not_the_unused_presets(tmp_path: Path) -> None:
    base = config(progress=False)
    entries = [CompareEntry("dpsgd", "dpsgd")]
    result = compare(base, entries, tmp_path / "cmp", task=regression_task())
    shared = (tmp_path / "cmp" / "compare.md").read_text().split("## Shared configuration")[1]
    assert "model=mlp" not in shared and "dataset=mnist" not in shared
    assert "loss=cross-entropy" not in shared
    assert "task=(name=linreg" in shared and "metric_mode=max" in shared
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert not set(PRESET_FIELDS) & set(saved["config"])
    assert saved["config"]["task"]["loss"].endswith("mse_loss")
    assert result.config == saved["config"]


def test_compare_on_a_task_without_a_metric_has_no_best_value(tmp_path: Path) -> None:
    entries = [CompareEntry("dpsgd", "dpsgd")]
    result = compare(
        config(progress=False), entries, tmp_path / "cmp", task=regression_task(metric=None)
    )
    [row] = result.rows
    assert row["best_test_accuracy"] is None and row["steps_to_target"] is None
    assert row["final"]["test_loss"] > 0


# ------------------------------------------------------------------ item 9: CLI resume
def test_cli_resume_of_a_python_task_run_says_how_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    task = classification_task()
    train(config(out=str(out), checkpoint_every=6, progress=False), task, stop_after=6)
    before = snapshot(out)
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("peergrad train: error: --resume:")
    assert "peergrad.Task" in lines[0] and "'blobs'" in lines[0]
    assert "train(config, task, resume=True)" in lines[0]
    assert snapshot(out) == before  # nothing changed in the folder
    # and from Python it resumes (the way the message names)
    result = train(config(out=str(out), checkpoint_every=6, progress=False), task, resume=True)
    assert result.records[-1]["step"] == 12


def test_cli_resume_of_a_python_task_comparison_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "cmp"
    entries = [CompareEntry("dpsgd", "dpsgd")]
    compare(config(progress=False), entries, root, task=regression_task())
    before = snapshot(root)
    capsys.readouterr()
    assert main(["compare", "--resume", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "peergrad.Task" in err[0] and "resume=True" in err[0]
    assert snapshot(root) == before


# ------------------------------------------------------------------ item 10: permissions
@pytest.fixture
def umask() -> Any:
    """Set the process umask for one test; the previous one is restored afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask_like_open(
    mask: int, mode: int, umask: Any, tmp_path: Path
) -> None:
    umask(mask)
    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == mode


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o027])
def test_reading_the_umask_does_not_change_it(mask: int, umask: Any) -> None:
    from peergrad.train.checkpoint import current_umask

    umask(mask)
    assert current_umask() == mask
    assert current_umask() == mask
    assert os.umask(mask) == mask  # still set, by the test, not by current_umask


def test_every_file_of_a_run_folder_gets_the_same_permissions(umask: Any, tmp_path: Path) -> None:
    umask(0o022)
    out = tmp_path / "run"
    train(config(out=str(out), checkpoint_every=6, progress=False), classification_task())
    modes = {
        str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode)
        for p in out.rglob("*")
        if p.is_file()
    }
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "summary.json"):
        assert name in modes
    assert any(name.endswith(".png") for name in modes)
    assert set(modes.values()) == {0o644}, modes


# ------------------------------------------------------------------ item 13: progress bar
def test_no_progress_bar_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """Under pytest stderr is captured (not a terminal), as when it goes to a log file."""
    assert TrainConfig().progress is None  # auto
    train(config(), classification_task(), write=False)
    err = capsys.readouterr().err
    assert "it/s" not in err and "12/12" not in err, err[:300]


def test_progress_true_forces_the_bar(capsys: pytest.CaptureFixture[str]) -> None:
    train(config(progress=True), classification_task(), write=False)
    assert "12/12" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "shown"), [([], False), (["--progress"], True)])
def test_cli_progress_flag_forces_the_bar(
    flags: list[str], shown: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--dataset", "digits", "--model", "logreg", "--workers", "2", "--steps", "5"]
    assert main([*argv, "--out", str(tmp_path / "run"), *flags]) == 0
    err = capsys.readouterr().err
    assert ("5/5" in err) is shown, err[:300]
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["progress"] is (True if shown else None)


def test_train_guide_lists_the_progress_flag() -> None:
    # the options of `peergrad train` moved from the README to the user guide's train page
    guide = (ROOT / "docs" / "guide" / "train.md").read_text()
    options = guide.split("## Options")[1].split("## Your own model")[0]
    assert "`--progress`" in options and "`--no-progress`" in options
