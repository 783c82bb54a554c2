"""PNG plots of a run's (or several runs') metrics, drawn with matplotlib's Agg backend."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # noqa: E402  (headless backend, chosen before pyplot is imported)
import matplotlib.pyplot as plt  # noqa: E402

X_AXES = {
    "step": "step",
    "samples_seen": "samples seen (all workers)",
    "bytes_sent_per_worker": "bytes sent per worker",
    "comm_rounds": "communication rounds",
    "simulated_comm_time_s": "simulated communication time (s)",
}
LOG_X = frozenset({"bytes_sent_per_worker"})  # compressed and dense runs differ by decades
PANELS = (("train_loss", "train loss of x̄", True), ("test_accuracy", "test accuracy of x̄", False))


def plot_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    x_key: str,
    path: str | Path,
    title: str = "",
    *,
    target_accuracy: float | None = None,
) -> Path:
    """One figure with train loss and test accuracy against ``x_key``, one curve per run.

    ``target_accuracy`` (optional) is drawn as a dashed horizontal line on the accuracy panel.
    Bytes are drawn on a log axis (records at 0 bytes, i.e. before any communication, are left
    out of that plot).
    """
    if x_key not in X_AXES:
        raise ValueError(f"x_key must be one of {', '.join(X_AXES)}, got {x_key!r}")
    fig, axes = plt.subplots(1, len(PANELS), figsize=(11, 4))
    # the default cycle has 10 colours; more runs would share them
    colors = plt.get_cmap("tab20").colors if len(runs) > 10 else [None] * len(runs)
    for ax, (key, label, log) in zip(axes, PANELS, strict=True):
        for color, (name, records) in zip(colors, runs.items(), strict=False):
            pts = [
                (r[x_key], r[key])
                for r in records
                if r.get(key) is not None and (x_key not in LOG_X or r[x_key] > 0)
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker=".", label=name, color=color)
        if key == "test_accuracy" and target_accuracy is not None:
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
        if ax.get_legend_handles_labels()[0]:  # nothing to plot, e.g. no bytes sent (n = 1)
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(
            textwrap.fill(title, 120, break_on_hyphens=False),
            fontsize=10 if len(title) > 90 else None,
        )
    fig.tight_layout()
    path = Path(path)
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


COMPARE_AXES = {
    "samples": "samples_seen",
    "bytes": "bytes_sent_per_worker",
    "simulated_time": "simulated_comm_time_s",
    "rounds": "comm_rounds",
}


def plot_comparison(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    out_dir: str | Path,
    title: str = "",
    *,
    target_accuracy: float | None = None,
) -> list[Path]:
    """``compare_vs_{samples,bytes,simulated_time,rounds}.png`` in ``out_dir``, one curve each."""
    out_dir = Path(out_dir)
    return [
        plot_curves(
            runs,
            x_key,
            out_dir / f"compare_vs_{suffix}.png",
            title,
            target_accuracy=target_accuracy,
        )
        for suffix, x_key in COMPARE_AXES.items()
    ]
