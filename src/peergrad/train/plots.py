"""PNG plots of a run's (or several runs') metrics, drawn with matplotlib's Agg backend.

A curve's label maps to one run (its list of records) or to several runs of the same setting,
e.g. seeds: those are drawn as the mean over the runs with a shaded band of ±1 standard
deviation (:func:`band` computes it).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import matplotlib
import numpy as np

matplotlib.use("Agg")  # noqa: E402  (headless backend, chosen before pyplot is imported)
import matplotlib.pyplot as plt  # noqa: E402

#: Record fields that can be an x axis -> the axis label.
X_AXES = {
    "step": "step",
    "samples_seen": "samples seen (all workers)",
    "bytes_sent_per_worker": "bytes sent per worker",
    "comm_rounds": "communication rounds",
    "simulated_comm_time_s": "simulated communication time (s)",
    "simulated_time_s": "simulated time (s): compute + communication + waiting, slowest worker",
    "wall_time_s": "wall time (s)",
    "epoch": "epochs",
}
LOG_X = frozenset({"bytes_sent_per_worker"})  # compressed and dense runs differ by decades
LEGEND_INSIDE_MAX = 6  # more curves than this get one legend beside the panels
PANELS = (("train_loss", "train loss of x̄", True), ("test_accuracy", "test accuracy of x̄", False))
#: The second panel of a run whose metric is lower-is-better (``Task(metric_mode="min")``).
MIN_METRIC_PANEL = ("test_metric", "test metric of x̄ (lower is better)", False)
#: The second panel of a language model's run (``Task(metric="perplexity")``), log scale.
PERPLEXITY_PANEL = ("test_perplexity", "test perplexity of x̄ (lower is better)", True)

Records: TypeAlias = Sequence[Mapping[str, Any]]
#: What a curve's label maps to: one run's records, or several runs' (a band).
Runs: TypeAlias = Records | Sequence[Records]


def as_runs(value: Runs) -> list[Records]:
    """A label's runs: a list of records (dicts) is one run; a list of such lists is several.
    An empty list is no run."""
    items = list(value)
    if not items:
        return []
    if isinstance(items[0], Mapping):
        return [items]  # type: ignore[list-item]
    return [list(run) for run in items]  # type: ignore[arg-type]


def band(
    runs: Sequence[Records], x_key: str, y_key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The curve of several runs of one setting (e.g. seeds): ``(x, mean, std, n)``.

    In each run only the records that have both ``x_key`` and ``y_key`` (not ``None``) count;
    the runs are aligned by position among those records (runs of one setting share the
    evaluation schedule; when their lengths differ, the common prefix is used). ``x`` is the mean
    of the runs' x values, ``mean`` and ``std`` the mean and standard deviation (``ddof=1``; 0
    for a single run) of their y values, all float64 arrays of the common length; ``n`` is the
    number of runs. Raises ``ValueError`` for no runs.
    """
    if not runs:
        raise ValueError("band() needs at least one run")
    points = [
        [
            (float(r[x_key]), float(r[y_key]))
            for r in run
            if r.get(x_key) is not None and r.get(y_key) is not None
        ]
        for run in runs
    ]
    m = min(len(p) for p in points)
    arr = np.array([p[:m] for p in points], dtype=np.float64).reshape(len(runs), m, 2)
    xs, ys = arr[..., 0], arr[..., 1]
    n = len(runs)
    std = ys.std(axis=0, ddof=1) if n > 1 else np.zeros(m)
    return xs.mean(axis=0), ys.mean(axis=0), std, n


def _visible(run: Records, x_key: str) -> list[Mapping[str, Any]]:
    """The records drawn against ``x_key``: with its value, and > 0 on a log axis."""
    return [
        r
        for r in run
        if r.get(x_key) is not None and (x_key not in LOG_X or r[x_key] > 0)  # type: ignore[operator]
    ]


def metric_mode_of(runs: Mapping[str, Runs]) -> str:
    """``"min"`` when the records name a lower-is-better metric (``test_metric``,
    ``test_perplexity``) and none an accuracy, else ``"max"``: the direction of the runs'
    metric, read from their records."""
    records = [r for value in runs.values() for run in as_runs(value) for r in run]
    has_min = any(
        r.get("test_metric") is not None or r.get("test_perplexity") is not None for r in records
    )
    has_max = any(r.get("test_accuracy") is not None for r in records)
    return "min" if has_min and not has_max else "max"


def _metric_panel(
    runs: Mapping[str, Runs], metric_mode: str, metric_name: str | None
) -> tuple[str, str, bool]:
    """The second panel: accuracy (``"max"``), perplexity (``metric_name="perplexity"``, or
    None with perplexity in the records), else the lower-is-better ``test_metric``."""
    if metric_mode == "max":
        return PANELS[1]
    if metric_name is None:
        records = [r for value in runs.values() for run in as_runs(value) for r in run]
        if any(r.get("test_perplexity") is not None for r in records):
            metric_name = "perplexity"
    return PERPLEXITY_PANEL if metric_name == "perplexity" else MIN_METRIC_PANEL


def plot_curves(
    runs: Mapping[str, Runs],
    x_key: str,
    path: str | Path,
    title: str = "",
    *,
    target_accuracy: float | None = None,
    metric_mode: str | None = None,
    metric_name: str | None = None,
) -> Path:
    """One figure with train loss and test accuracy against ``x_key`` (a key of
    :data:`X_AXES`), one curve per label.

    ``runs`` maps a label to one run's records, or to a list of several runs' records (seeds):
    those are drawn as their mean with a shaded ±1 standard deviation band (:func:`band`; the
    legend says ``n``). ``target_accuracy`` (optional) is drawn as a dashed horizontal line on
    the accuracy panel. Bytes are drawn on a log axis (records at 0 bytes, i.e. before any
    communication, are left out of that plot). ``metric_mode``: ``"min"`` draws the task's
    lower-is-better ``test_metric`` in the second panel (and the target there), ``"max"``
    ``test_accuracy``; None reads it from the records (:func:`metric_mode_of`).
    ``metric_name="perplexity"`` (or None with ``test_perplexity`` in the records) draws the
    perplexity on a log axis instead of ``test_metric``. Raises ``ValueError`` for an unknown
    ``x_key`` or ``metric_mode``.
    """
    if x_key not in X_AXES:
        raise ValueError(f"x_key must be one of {', '.join(X_AXES)}, got {x_key!r}")
    if metric_mode is None:
        metric_mode = metric_mode_of(runs)
    if metric_mode not in ("max", "min"):
        raise ValueError(f"metric_mode must be one of 'max', 'min', got {metric_mode!r}")
    panels = (PANELS[0], _metric_panel(runs, metric_mode, metric_name))
    # many curves: one legend for both panels, right of them, instead of one inside each panel
    outside = len(runs) > LEGEND_INSIDE_MAX
    fig, axes = plt.subplots(1, len(panels), figsize=(13.5 if outside else 11, 4))
    # the default cycle has 10 colours; more runs would share them
    # tab20 is a ListedColormap (the base Colormap type has no .colors)
    colors = plt.get_cmap("tab20").colors if len(runs) > 10 else [None] * len(runs)  # type: ignore[attr-defined]
    groups = [
        (name, [_visible(run, x_key) for run in as_runs(value)]) for name, value in runs.items()
    ]
    for ax, (key, label, log) in zip(axes, panels, strict=True):
        _draw_curves(ax, groups, colors, x_key, key, log)
        if key == panels[1][0] and target_accuracy is not None:
            ax.axhline(
                target_accuracy,
                color="0.4",
                linestyle="--",
                linewidth=1,
                label=f"target {target_accuracy:g}",
            )
        ax.set_xlabel(X_AXES[x_key])
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        if x_key in LOG_X:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        if not outside and ax.get_legend_handles_labels()[0]:  # none: e.g. no bytes sent (n = 1)
            ax.legend(fontsize=8)
    if outside:
        _figure_legend(fig, axes)
    return _save(fig, Path(path), title, outside)


def _draw_curves(
    ax: Any,
    groups: list[tuple[str, list[list[Mapping[str, Any]]]]],
    colors: Sequence[Any],
    x_key: str,
    key: str,
    log: bool,
) -> None:
    """One panel's curves of ``key`` against ``x_key``: a line per label, with a ±1 std band
    for a label of several runs (clipped above 0 on a log axis)."""
    for color, (name, group) in zip(colors, groups, strict=False):
        if not group:
            continue
        xs, mean, std, n = band(group, x_key, key)
        if not len(xs):
            continue
        if n == 1:
            ax.plot(xs, mean, marker=".", label=name, color=color)
            continue
        (line,) = ax.plot(xs, mean, marker=".", label=f"{name} (mean ± std, n={n})", color=color)
        low, high = mean - std, mean + std
        if log:  # a band reaching 0 or below cannot be drawn on a log axis: clip it
            low = np.maximum(low, mean / 10)
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend for all panels, right of them (each label once)."""
    handles, labels = [], []
    for ax in axes:  # the accuracy panel adds the target line
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)


def _save(fig: Any, path: Path, title: str, outside: bool) -> Path:
    """Title the figure, lay it out, write it to ``path`` (PNG) and close it."""
    if title:
        fig.suptitle(
            textwrap.fill(title, 120, break_on_hyphens=False),
            fontsize=10 if len(title) > 90 else None,
        )
    # tight_layout fits any tick labels (a user's metric, log axes); the figure legend keeps the
    # right-hand strip it is drawn in
    fig.tight_layout(rect=(0, 0, 0.78 if outside else 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(records: Sequence[Mapping[str, Any]], out_dir: str | Path, name: str) -> list[Path]:
    """The run folder's plots: loss and accuracy against steps and against bytes."""
    out_dir = Path(out_dir)
    return [
        plot_curves({name: records}, "step", out_dir / "loss_accuracy_vs_steps.png", name),
        plot_curves(
            {name: records}, "bytes_sent_per_worker", out_dir / "loss_accuracy_vs_bytes.png", name
        ),
    ]


#: ``compare_vs_<name>.png`` -> record field; ``simulated_time`` is resolved per plot by
#: :func:`simulated_time_key`.
COMPARE_AXES = {
    "samples": "samples_seen",
    "bytes": "bytes_sent_per_worker",
    "simulated_time": "simulated_comm_time_s",
    "rounds": "comm_rounds",
}


def simulated_time_key(runs: Mapping[str, Runs]) -> str:
    """The record field of the ``simulated_time`` axis: ``simulated_time_s`` (the system
    clock's time, compute and waiting included) when every record of ``runs`` has it (runs with
    ``--system``), else ``simulated_comm_time_s`` (the communication-only alpha-beta time), so
    that all curves of one plot share one clock."""
    records = [r for value in runs.values() for run in as_runs(value) for r in run]
    timed = bool(records) and all(r.get("simulated_time_s") is not None for r in records)
    return "simulated_time_s" if timed else "simulated_comm_time_s"


def plot_comparison(
    runs: Mapping[str, Runs],
    out_dir: str | Path,
    title: str = "",
    *,
    target_accuracy: float | None = None,
    metric_mode: str | None = None,
    metric_name: str | None = None,
) -> list[Path]:
    """``compare_vs_{samples,bytes,simulated_time,rounds}.png`` in ``out_dir``, one curve per
    label; a label mapping to several runs (seeds) is drawn as mean ± std (see
    :func:`plot_curves`, also for ``metric_mode``). The simulated-time plot uses
    :func:`simulated_time_key`."""
    out_dir = Path(out_dir)
    return [
        plot_curves(
            runs,
            simulated_time_key(runs) if suffix == "simulated_time" else x_key,
            out_dir / f"compare_vs_{suffix}.png",
            title,
            target_accuracy=target_accuracy,
            metric_mode=metric_mode,
            metric_name=metric_name,
        )
        for suffix, x_key in COMPARE_AXES.items()
    ]


#: ``peergrad plot --x`` names -> record fields; each gives ``plot_vs_<name>.png``
#: (``simulated_time``: resolved by :func:`simulated_time_key`).
PLOT_AXES = {
    "steps": "step",
    "samples": "samples_seen",
    "bytes": "bytes_sent_per_worker",
    "rounds": "comm_rounds",
    "simulated_time": "simulated_comm_time_s",
    "wall_time": "wall_time_s",
    "epochs": "epoch",
}
