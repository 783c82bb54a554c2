"""A comparison's files: ``compare.json`` and ``compare.md`` rewritten after every run
(:func:`write_tables`), and what ``--resume`` reads back (:func:`finished_runs`,
:func:`load_plan`). See :mod:`peergrad.study.compare`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peergrad.study.entries import CompareEntry, RunSpec
from peergrad.study.results import reported_rows, summarize_labels
from peergrad.study.tables import format_study, format_table
from peergrad.train.config import TrainConfig

__all__ = ["atomic_write", "finished_runs", "load_plan", "read_records", "write_tables"]


def write_tables(
    root: Path,
    rows: list[dict[str, Any]],
    target_accuracy: float,
    shared: dict[str, Any],
    pending: list[str],
    plan: dict[str, Any],
    specs: Sequence[RunSpec],
    study: bool,
    metric_mode: str = "max",
    metric_name: str | None = None,
) -> None:
    data: dict[str, Any] = {
        "target_accuracy": target_accuracy,
        "metric_mode": metric_mode,
        "config": shared,
    }
    if metric_name == "perplexity":  # not the direction's default word
        data["metric_name"] = metric_name
    if study:
        with warnings.catch_warnings():  # the edge warning is given once, at the end
            warnings.simplefilter("ignore")
            labels = summarize_labels(
                specs, rows, target_accuracy, plan["lr_grid"], metric_mode, metric_name
            )
        reported = reported_rows(rows, labels)
        data.update(labels=labels, runs=reported, plan=plan, pending=pending)
        table = format_study(
            reported,
            labels,
            target_accuracy,
            shared,
            pending=pending,
            metric_mode=metric_mode,
            metric_name=metric_name,
        )
    else:
        data.update(runs=rows, plan=plan, pending=pending)
        table = format_table(
            rows,
            target_accuracy,
            shared,
            pending=pending,
            metric_mode=metric_mode,
            metric_name=metric_name,
        )
    atomic_write(root / "compare.json", json.dumps(data, indent=2) + "\n")
    atomic_write(root / "compare.md", table)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def finished_runs(root: Path) -> dict[str, tuple[list[dict[str, Any]], str]]:
    """Runs of the comparison in ``root`` that ended (finished or diverged), by folder name,
    with their records (read back from their ``metrics.jsonl``)."""
    data = json.loads((root / "compare.json").read_text())
    out = {}
    for row in data.get("runs", []):
        name = row.get("run") or row.get("run_dir") or row["label"]
        status = row.get("status", "finished")
        finished = (root / name / "summary.json").is_file()
        if finished or status.startswith("diverged"):
            recs = read_records(root / name)
            if recs:
                out[name] = (recs, status)
    return out


def load_plan(root: str | Path) -> dict[str, Any]:
    """The plan of the comparison in ``root`` (what ``--resume`` reruns): ``config``
    (:class:`TrainConfig`), ``entries`` (:class:`CompareEntry`), ``seeds``, ``lr_grid``,
    ``target_accuracy``, ``run_plots``. ``ValueError`` when ``root`` holds no resumable
    comparison."""
    path = Path(root) / "compare.json"
    if not path.is_file():
        raise ValueError(f"--resume {root}: no compare.json there (not a comparison folder)")
    data = json.loads(path.read_text())
    plan = data.get("plan")
    if plan is None:
        raise ValueError(
            f"--resume {root}: its compare.json was written by an older peergrad without the "
            "plan needed to resume; rerun the comparison"
        )
    if isinstance(plan.get("task"), dict):
        raise ValueError(
            f"--resume {root}: this comparison was made from Python with a peergrad.Task (task "
            f"{plan['task'].get('name')!r}), which the command line cannot rebuild; resume it "
            "from Python: compare(base, entries, out_dir, task=task, resume=True)"
        )
    return {
        "config": TrainConfig.from_dict(plan["config"]),
        "entries": [CompareEntry.from_dict(e) for e in plan["entries"]],
        "seeds": plan.get("seeds"),
        "lr_grid": plan.get("lr_grid"),
        "target_accuracy": plan["target_accuracy"],
        "run_plots": bool(plan.get("run_plots", False)),
    }
