"""What a comparison's runs reached: one run's row of ``compare.json`` (:func:`summarize_run`:
final metrics, best test metric, the cost to reach the target), and with seeds or a
learning-rate grid each label's (:func:`summarize_labels`: mean ± std over the seeds, the
grid value chosen on the validation split by :func:`select_lr`). See
:mod:`peergrad.study.compare`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from peergrad.study.entries import CompareEntry, RunSpec, grid_of
from peergrad.train.build import build_algorithm
from peergrad.train.config import TrainConfig
from peergrad.train.recorder import SYSTEM_FIELDS, metric_field, metric_fields, reaches

__all__ = [
    "TARGET_FIELDS",
    "TEST_KEYS",
    "best_of",
    "first_at_target",
    "mean_std",
    "reported_rows",
    "select_lr",
    "selection_metric",
    "summarize_labels",
    "summarize_run",
]

#: ``<key>_to_target`` -> the metric of the first record at or above the target accuracy.
TARGET_FIELDS: dict[str, str] = {
    "steps_to_target": "step",
    "samples_to_target": "samples_seen",
    "bytes_to_target": "bytes_sent_per_worker",
    "simulated_comm_time_s_to_target": "simulated_comm_time_s",
    "simulated_time_s_to_target": "simulated_time_s",  # --system only (else None)
    "wall_time_s_to_target": "wall_time_s",
    "rounds_to_target": "comm_rounds",
}


def first_at_target(
    records: Sequence[Mapping[str, Any]],
    target_accuracy: float,
    metric_mode: str = "max",
    metric_name: str | None = None,
) -> Mapping[str, Any] | None:
    """The first record whose test metric reaches the target, or None: ``test_accuracy >=
    target_accuracy``, or for a lower-is-better metric (``metric_mode="min"``) ``test_metric
    <= target_accuracy`` (``test_perplexity`` with ``metric_name="perplexity"``)."""
    key = metric_field("test_accuracy", metric_mode, metric_name)
    for rec in records:
        value = rec.get(key)
        if value is not None and reaches(value, target_accuracy, metric_mode):
            return rec
    return None


def best_of(values: Sequence[float | None], metric_mode: str = "max") -> float | None:
    """The best of ``values`` (None ones left out) in direction ``metric_mode``; None when none."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    return max(xs) if metric_mode == "max" else min(xs)


def summarize_run(
    entry: CompareEntry,
    config: TrainConfig,
    records: Sequence[Mapping[str, Any]],
    target_accuracy: float,
    run_dir: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    metric_mode: str = "max",
    metric_name: str | None = None,
) -> dict[str, Any]:
    """The ``compare.json`` record of one run; ``hyperparameters``: the algorithm's options as
    it ran (:attr:`RunResult.hyperparameters`; by default rebuilt from ``config``);
    ``metric_mode``: the task's metric direction (the fields and the best value follow it);
    ``metric_name``: the word of its fields (``Task.metric_name``; None: the direction's)."""
    last = records[-1]
    hit = first_at_target(records, target_accuracy, metric_mode, metric_name)
    test_key = metric_field("test_accuracy", metric_mode, metric_name)
    row: dict[str, Any] = {
        "label": entry.label,
        "algorithm": entry.algorithm,
        "options": dict(entry.options),
        "hyperparameters": dict(
            hyperparameters if hyperparameters is not None else build_algorithm(config).options()
        ),
        "run_dir": run_dir,
        "final": {
            **{k: last.get(k) for k in metric_fields(metric_mode, metric_name)},
            **{k: last[k] for k in SYSTEM_FIELDS if k in last},  # --system
        },
        metric_field("best_test_accuracy", metric_mode, metric_name): best_of(
            [r.get(test_key) for r in records], metric_mode
        ),
    }
    for key, field in TARGET_FIELDS.items():
        row[key] = None if hit is None else hit.get(field)
    return row


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` of the values that are not None (std with ddof = 1; 0 for one
    value; mean and std None for none)."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if not n:
        return {"mean": None, "std": None, "n": 0}
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def selection_metric(
    rows: Sequence[Mapping[str, Any]], metric_mode: str = "max", metric_name: str | None = None
) -> tuple[str, bool]:
    """``(field, higher_is_better)``: the validation metric when every finished run has one
    (``val_accuracy``, higher is better; ``val_metric``, lower is better, for
    ``metric_mode="min"``; ``val_perplexity`` for ``metric_name="perplexity"``), else
    ``val_loss``."""
    field = metric_field("val_accuracy", metric_mode, metric_name)
    finished = [r for r in rows if r.get("status", "finished") == "finished"]
    if finished and all(r["final"].get(field) is not None for r in finished):
        return field, metric_mode == "max"
    return "val_loss", False


def select_lr(
    grid: Sequence[float],
    rows: Sequence[Mapping[str, Any]],
    metric_mode: str = "max",
    metric_name: str | None = None,
) -> tuple[float | None, list[dict[str, Any]], str]:
    """The grid value with the best seed-mean final validation metric of ``rows`` (one label's
    runs; each with ``lr``, ``status`` and ``final``), the per-value results and the metric's
    name. Best is the largest for ``metric_mode="max"`` (accuracy), the smallest for ``"min"``
    (an error, perplexity) and for the validation loss (without a metric). Test metrics are never
    read. A value with a diverged or missing run is never chosen; ties go to the first value of
    the grid. None when no value has all its runs finished."""
    field, higher = selection_metric(rows, metric_mode, metric_name)
    results, best, best_value = [], None, None
    for lr in grid:
        mine = [r for r in rows if r.get("lr") == lr]
        ok = bool(mine) and all(r.get("status", "finished") == "finished" for r in mine)
        values = [r["final"].get(field) for r in mine] if ok else []
        stat = mean_std(values)
        usable = ok and stat["mean"] is not None and math.isfinite(stat["mean"])
        results.append(
            {
                "lr": lr,
                field: stat,
                "runs": len(mine),
                "diverged": sum(1 for r in mine if r.get("status", "").startswith("diverged")),
            }
        )
        if usable:
            score = stat["mean"] if higher else -stat["mean"]
            if best_value is None or score > best_value:
                best, best_value = lr, score
    return best, results, field


def summarize_labels(
    specs: Sequence[RunSpec],
    rows: Sequence[Mapping[str, Any]],
    target_accuracy: float,
    lr_grid: Sequence[float] | None,
    metric_mode: str = "max",
    metric_name: str | None = None,
) -> list[dict[str, Any]]:
    """The ``labels`` of ``compare.json``: per label its chosen learning rate (with the whole
    grid's validation results, selected in the direction of ``metric_mode``), the chosen runs
    and, over them (one per seed), mean ± std of every final metric and of every "to target"
    figure (with how many runs reached it)."""
    out = []
    by_name = {r["run"]: r for r in rows}
    for entry in dict.fromkeys(sp.entry.label for sp in specs):
        mine = [sp for sp in specs if sp.entry.label == entry]
        e = mine[0].entry
        grid = grid_of(e, lr_grid)
        have = [by_name[sp.name] for sp in mine if sp.name in by_name]
        item: dict[str, Any] = {"label": entry, "algorithm": e.algorithm}
        item["options"], item["task"] = dict(e.options), dict(e.task)
        chosen_lr = None
        if grid is not None:
            chosen_lr, results, field = select_lr(grid, have, metric_mode, metric_name)
            edge = chosen_lr is not None and len(grid) > 1 and chosen_lr in (min(grid), max(grid))
            item.update(
                lr_grid=list(grid),
                selection_metric=field,
                chosen_lr=chosen_lr,
                chosen_at_edge=edge,
                grid=results,
            )
            if edge and len(have) == len(mine):
                side = "smallest" if chosen_lr == min(grid) else "largest"
                warnings.warn(
                    f"{entry}: the chosen lr {chosen_lr:g} is the {side} value of its grid "
                    f"{','.join(f'{v:g}' for v in grid)}; the best value may lie outside it, "
                    "extend the grid",
                    UserWarning,
                    stacklevel=3,
                )
        chosen = [
            r for r in have if grid is None or (chosen_lr is not None and r["lr"] == chosen_lr)
        ]
        item["runs"] = [r["run"] for r in chosen]
        item["seeds"] = [r["seed"] for r in chosen]
        fields = [*metric_fields(metric_mode, metric_name)]
        fields += [k for k in SYSTEM_FIELDS if any(k in r["final"] for r in chosen)]
        item["final"] = {k: mean_std([r["final"].get(k) for r in chosen]) for k in fields}
        best = metric_field("best_test_accuracy", metric_mode, metric_name)
        item[best] = mean_std([r.get(best) for r in chosen])
        item["to_target"] = {}
        for key in TARGET_FIELDS:
            stat = mean_std([r.get(key) for r in chosen])
            item["to_target"][key] = {**stat, "reached": stat["n"], "runs": len(chosen)}
        item["diverged_runs"] = [
            r["run"] for r in have if r.get("status", "").startswith("diverged")
        ]
        out.append(item)
    return out


TEST_KEYS = (
    "test_loss",
    "test_accuracy",
    "worker_test_loss",
    "worker_test_accuracy",
    "test_metric",
    "worker_test_metric",
    "test_perplexity",
    "worker_test_perplexity",
)


def reported_rows(
    rows: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``rows`` with the test metrics of every run that is not a chosen one (the other grid
    values) left out (None), so that only the selected runs' test figures are reported."""
    chosen = {name for lab in labels for name in lab["runs"]}
    out = []
    for r in rows:
        r = dict(r)
        if r.get("lr") is not None and r["run"] not in chosen:
            r["final"] = {k: (None if k in TEST_KEYS else v) for k, v in r["final"].items()}
            for best in ("best_test_accuracy", "best_test_metric", "best_test_perplexity"):
                if best in r:
                    r[best] = None
            for key in TARGET_FIELDS:
                r[key] = None
            r["chosen"] = False
        elif r.get("lr") is not None:
            r["chosen"] = True
        out.append(r)
    return out
