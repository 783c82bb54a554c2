"""Logging and plots from folders (issue 17, item 4): every run folder gets ``metrics.csv`` equal
to ``metrics.jsonl`` (after a resume too); ``--tensorboard`` writes the records as TensorBoard
scalars (no step twice after a resume) and says in one line how to install the package when it
is missing; plots draw seeds as mean ± std bands (:func:`band`, checked by hand); ``peergrad
plot`` redraws run and compare folders (old and new ``compare.json``), refuses to replace its
plots without ``--overwrite`` and rejects bad input in one line."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import matplotlib.axes
import numpy as np
import pytest

from _helpers import SMALL
from peergrad.cli import main
from peergrad.study import plotting_io
from peergrad.train import TrainConfig, train
from peergrad.train.plots import PLOT_AXES, X_AXES, band, plot_curves

TINY = dict(
    dataset="digits",
    model="logreg",
    workers=2,
    steps=6,
    eval_every=2,
    batch_size=16,
    progress=False,
)


def records_of(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_csv_matches_jsonl(run: Path) -> None:
    """``metrics.csv`` holds exactly the records of ``metrics.jsonl``: same rows, same columns
    (the keys in first-seen order), floats exact, ``None`` as an empty cell."""
    records = records_of(run)
    with open(run / "metrics.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    keys: dict[str, None] = {}
    for rec in records:
        keys.update(dict.fromkeys(rec))
    assert header == list(keys)
    assert len(rows) == len(records)
    for row, rec in zip(rows, records, strict=True):
        assert len(row) == len(header)
        for key, cell in zip(header, row, strict=True):
            value = rec.get(key)
            if value is None:
                assert cell == "", (key, cell)
            elif isinstance(value, int):
                assert int(cell) == value, key
            else:
                assert float(cell) == value, key  # exact: floats are written with repr


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in ``log_dir``'s event files as TensorBoard shows it: tag -> (step, value)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_scalars_match_records(log_dir: Path, records: list[dict[str, Any]]) -> None:
    """Each numeric field (but ``step``) of each record is one scalar at its step: the same
    steps, once each, and the values (float32)."""
    found = scalars(log_dir)
    expected: dict[str, list[tuple[int, float]]] = {}
    for rec in records:
        for key, value in rec.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                expected.setdefault(key, []).append((rec["step"], float(value)))
    assert set(found) == set(expected)
    assert "test_accuracy" in found and "wall_time_s" in found
    for tag, points in expected.items():
        assert [s for s, _ in found[tag]] == [s for s, _ in points], tag  # no step twice
        np.testing.assert_allclose(
            [v for _, v in found[tag]], [v for _, v in points], rtol=1e-6, atol=0, err_msg=tag
        )


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two finished tiny runs of one setting with seeds 0 and 1."""
    root = tmp_path_factory.mktemp("seeds")
    out = []
    for seed in (0, 1):
        run = root / f"seed{seed}"
        train(TrainConfig(**TINY, seed=seed, out=str(run)))
        out.append(run)
    return out


# ---------------------------------------------------------------- metrics.csv
def test_every_run_folder_gets_a_metrics_csv_equal_to_metrics_jsonl(seed_runs: list[Path]) -> None:
    for run in seed_runs:
        assert (run / "metrics.csv").is_file()
        assert [r["step"] for r in records_of(run)] == [0, 2, 4, 6]
        assert_csv_matches_jsonl(run)


# ---------------------------------------------------------------- TensorBoard
def test_tensorboard_and_csv_after_an_interrupted_and_resumed_run(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "r"
    config = TrainConfig(
        **{**TINY, "eval_every": 1}, checkpoint_every=2, tensorboard=True, out=str(run)
    )
    train(config, stop_after=3)  # records 0..3, checkpoint at 2: record 3 is made again
    shutil.copytree(run, tmp_path / "copy")
    assert [r["step"] for r in records_of(run)] == [0, 1, 2, 3]
    assert_csv_matches_jsonl(run)
    assert_scalars_match_records(run / "tensorboard", records_of(run))
    result = train(config, resume=True)
    records = records_of(run)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5, 6]
    assert records == result.records
    # resumed at its last step (a smaller --steps): no record follows, yet step 3 is gone
    short = tmp_path / "short"
    shutil.copytree(tmp_path / "copy", short)
    train(dataclasses.replace(config, steps=2, out=str(short)), resume=True)
    assert [r["step"] for r in records_of(short)] == [0, 1, 2]
    assert_csv_matches_jsonl(short)
    assert_csv_matches_jsonl(run)
    assert len(list((run / "tensorboard").iterdir())) == 2  # one event file per process run
    assert_scalars_match_records(run / "tensorboard", records)  # step 3 once, the resumed one


def test_tensorboard_flag_of_the_cli_and_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "r"
    assert main(["train", *SMALL, "--tensorboard", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["tensorboard"] is True
    assert_scalars_match_records(run / "tensorboard", records_of(run))
    assert_csv_matches_jsonl(run)
    # a folder holding only TensorBoard files of a run is a run's folder: refused ...
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "summary.json"):
        (run / name).unlink()
    capsys.readouterr()
    assert main(["train", *SMALL, "--out", str(run)]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert "tensorboard" in line and "--overwrite" in line
    # ... and --overwrite clears it
    assert main(["train", *SMALL, "--out", str(run), "--overwrite"]) == 0
    assert not (run / "tensorboard").exists()
    assert_csv_matches_jsonl(run)


def test_missing_tensorboard_package_is_one_line_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    hint = "pip install 'peergrad[tensorboard]'"
    for argv in (
        ["train", *SMALL, "--tensorboard", "--out", str(tmp_path / "t")],
        ["compare", "--algorithms", "dpsgd", *SMALL, "--tensorboard", "--out", str(tmp_path / "c")],
    ):
        assert main(argv) == 2
        [line] = error_lines(capsys.readouterr().err)
        assert "--tensorboard" in line and hint in line
    assert list(tmp_path.iterdir()) == []  # nothing was started
    with pytest.raises(ValueError, match="^tensorboard needs the tensorboard package"):
        train(TrainConfig(**TINY, tensorboard=True), write=False)  # Python names the field


def test_an_old_run_folder_without_the_new_fields_resumes(tmp_path: Path) -> None:
    run = tmp_path / "r"
    assert main(["train", *SMALL, "--checkpoint-every", "4", "--out", str(run)]) == 0
    path = run / "config.json"
    data = json.loads(path.read_text())
    del data["tensorboard"]  # as written before the field existed
    path.write_text(json.dumps(data))
    assert main(["train", "--resume", str(run), "--steps", "16", "--no-progress"]) == 0
    assert records_of(run)[-1]["step"] == 16
    assert_csv_matches_jsonl(run)


# ---------------------------------------------------------------- bands
def rec(x: float, y: float | None, **more: Any) -> dict[str, Any]:
    return {"step": x, "test_accuracy": y, **more}


def test_band_against_hand_computed_values() -> None:
    runs = [
        [rec(0, 1.0), rec(10, 2.0), rec(20, 3.0)],
        [rec(0, 3.0), rec(12, 4.0), rec(20, 5.0), rec(30, 6.0)],  # longer: common prefix
        [rec(0, 2.0), rec(5, None), rec(11, 6.0), rec(20, 4.0)],  # a record without y
    ]
    x, mean, std, n = band(runs, "step", "test_accuracy")
    assert n == 3
    np.testing.assert_array_equal(x, [0.0, 11.0, 20.0])  # (10 + 12 + 11) / 3 = 11
    np.testing.assert_array_equal(mean, [2.0, 4.0, 4.0])
    # sample standard deviations (ddof=1) of {1, 3, 2}, {2, 4, 6}, {3, 5, 4}
    np.testing.assert_allclose(std, [1.0, 2.0, 1.0], rtol=1e-15, atol=0)

    x1, mean1, std1, n1 = band(runs[:1], "step", "test_accuracy")
    assert n1 == 1
    np.testing.assert_array_equal(x1, [0.0, 10.0, 20.0])
    np.testing.assert_array_equal(mean1, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(std1, [0.0, 0.0, 0.0])

    x0, mean0, std0, _ = band([[rec(0, None)], runs[0]], "step", "test_accuracy")
    assert x0.shape == mean0.shape == std0.shape == (0,)
    with pytest.raises(ValueError):
        band([], "step", "test_accuracy")


def test_a_label_with_several_runs_is_drawn_as_a_band(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = matplotlib.axes.Axes.fill_between

    def spy(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(x))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", spy)
    one = [rec(s, 0.1 * s, train_loss=1.0 / (1 + s)) for s in range(4)]
    other = [rec(s, 0.1 * s + 0.05, train_loss=1.2 / (1 + s)) for s in range(4)]
    plot_curves({"single": one}, "step", tmp_path / "a.png")
    assert calls == []  # one run: a plain curve, as before
    plot_curves({"single": one, "seeds": [one, other]}, "step", tmp_path / "b.png")
    assert calls == [4, 4]  # one band in each panel
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0
    assert X_AXES["wall_time_s"] == "wall time (s)" and X_AXES["epoch"] == "epochs"


# ---------------------------------------------------------------- peergrad plot
def make_compare(root: Path, seed_runs: list[Path], schema: str) -> Path:
    """A compare folder built by hand around copies of the seed runs."""
    root.mkdir()
    for run in seed_runs:
        shutil.copytree(run, root / run.name)
    if schema == "old":
        rows = [
            {"label": "a", "run_dir": "seed0"},
            {"label": "b", "run_dir": str((root / "seed1").resolve())},  # absolute
        ]
        data: dict[str, Any] = {"target_accuracy": 0.5, "config": {}, "runs": rows}
    else:  # an lr grid: the rows hold every run, "labels" the chosen lr's (one per seed)
        shutil.copytree(seed_runs[0], root / "lr0.3-seed0")
        rows = [
            {"label": "dpsgd", "run_dir": "seed0", "seed": 0, "lr": 0.1},
            {"label": "dpsgd", "run_dir": "seed1", "seed": 1, "lr": 0.1},
            {"label": "dpsgd", "run_dir": "lr0.3-seed0", "seed": 0, "lr": 0.3},
        ]
        labels = [{"label": "dpsgd", "runs": ["seed1", "seed0"], "lr": 0.1}]
        data = {"target_accuracy": 0.5, "config": {}, "runs": rows, "labels": labels}
    (root / "compare.json").write_text(json.dumps(data))
    return root


def test_load_compare_groups_reads_both_schemas(tmp_path: Path, seed_runs: list[Path]) -> None:
    r0, r1 = (records_of(run) for run in seed_runs)
    old = plotting_io.load_compare_groups(make_compare(tmp_path / "old", seed_runs, "old"))
    assert old == {"a": [r0], "b": [r1]}
    new = plotting_io.load_compare_groups(make_compare(tmp_path / "new", seed_runs, "new"))
    assert new == {"dpsgd": [r1, r0]}  # the chosen runs only, in the order "labels" gives


def test_plot_a_run_folder_writes_every_axis_and_touches_nothing_else(
    seed_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(seed_runs[0], run)
    before = snapshot(run)
    assert main(["plot", str(run)]) == 0
    written = {f"plot_vs_{axis}.png" for axis in PLOT_AXES}
    assert set(snapshot(run)) == set(before) | written
    assert {k: v for k, v in snapshot(run).items() if k in before} == before
    assert {Path(line).name for line in capsys.readouterr().out.split()} == written


def test_plot_compare_folders_old_and_new_schema(
    seed_runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[tuple[str, dict[str, Any], float | None]] = []
    original = plotting_io.plot_curves

    def spy(runs: Any, x_key: str, path: Any, title: str = "", **kw: Any) -> Path:
        drawn.append((x_key, dict(runs), kw.get("target_accuracy")))
        return original(runs, x_key, path, title, **kw)

    monkeypatch.setattr(plotting_io, "plot_curves", spy)
    old = make_compare(tmp_path / "old", seed_runs, "old")
    new = make_compare(tmp_path / "new", seed_runs, "new")
    assert main(["plot", str(old), "--x", "steps,samples"]) == 0
    assert (old / "plot_vs_steps.png").is_file() and (old / "plot_vs_samples.png").is_file()
    assert [(x, list(g), t) for x, g, t in drawn] == [
        ("step", ["a", "b"], 0.5),
        ("samples_seen", ["a", "b"], 0.5),
    ]
    drawn.clear()
    assert main(["plot", str(new), "--x", "epochs"]) == 0
    assert [p.name for p in new.glob("plot_vs_*")] == ["plot_vs_epochs.png"]
    [(x_key, groups, _)] = drawn
    assert x_key == "epoch" and list(groups) == ["dpsgd"] and len(groups["dpsgd"]) == 2
    # several folders: overlaid; compare labels get their folder's name
    drawn.clear()
    out = tmp_path / "both"
    argv = ["plot", str(seed_runs[0]), str(old), str(new), "--x", "wall_time", "--out", str(out)]
    assert main(argv) == 0
    assert [p.name for p in out.iterdir()] == ["plot_vs_wall_time.png"]
    [(x_key, groups, target)] = drawn
    assert x_key == "wall_time_s" and target is None
    assert list(groups) == ["seed0", "old/a", "old/b", "new/dpsgd"]


def test_plot_refuses_to_replace_its_plots_without_overwrite(
    seed_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["plot", str(seed_runs[0]), "--x", "steps", "--out", str(out)]
    assert main(argv) == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    capsys.readouterr()
    assert main(argv) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert "plot_vs_steps.png" in line and "--overwrite" in line
    assert snapshot(out) == before
    assert main([*argv, "--x", "bytes"]) == 0  # another axis replaces nothing
    assert main([*argv, "--overwrite"]) == 0
    after = snapshot(out)
    assert after["notes.txt"] == before["notes.txt"]
    assert after["plot_vs_steps.png"][1] != before["plot_vs_steps.png"][1]


def test_plot_bad_input_is_one_line(
    seed_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "file").write_text("x")
    run = str(seed_runs[0])
    cases = [
        (["plot", str(tmp_path / "missing")], "does not exist"),
        (["plot", str(empty)], "neither a run folder (metrics.jsonl) nor a compare folder"),
        (["plot", run, "--x", "steps,time"], "unknown axis 'time'; choose from: steps, samples"),
        (["plot", run, str(seed_runs[1])], "--out DIR is required with several PATHs"),
        (["plot", run, "--out", str(tmp_path / "file")], "is a file, not a folder"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and expected in lines[0], (argv, lines)
        assert lines[0].startswith("peergrad plot: error:")
    assert list(empty.iterdir()) == []
    assert not list(Path(run).glob("plot_vs_*"))
    # a compare.json pointing at a folder that is not a run
    (empty / "compare.json").write_text(json.dumps({"runs": [{"label": "x", "run_dir": "nope"}]}))
    assert main(["plot", str(empty)]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert "label 'x'" in line and "no metrics.jsonl" in line


@pytest.mark.parametrize("n_labels", [3, 8])
def test_many_curves_share_one_legend_beside_the_panels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n_labels: int
) -> None:
    """Up to LEGEND_INSIDE_MAX curves: a legend in each panel; more: one figure legend with
    every label once (and the target line), so the legend does not cover the curves."""
    from peergrad.train import plots

    closed: list = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    recs = [{"step": s, "train_loss": 1.0 / (s + 1), "test_accuracy": 0.1 * s} for s in range(3)]
    runs = {f"label{i}": recs for i in range(n_labels)}
    plots.plot_curves(runs, "step", tmp_path / "p.png", "t", target_accuracy=0.15)
    [fig] = closed
    if n_labels <= plots.LEGEND_INSIDE_MAX:
        assert not fig.legends
        assert all(ax.get_legend() is not None for ax in fig.axes)
    else:
        assert all(ax.get_legend() is None for ax in fig.axes)
        [legend] = fig.legends
        texts = [t.get_text() for t in legend.get_texts()]
        assert texts == [*runs, "target 0.15"]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
