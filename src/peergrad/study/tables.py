"""``compare.md``: the Markdown tables of a comparison (:func:`format_table`; with seeds or a
learning-rate grid :func:`format_study`). See :mod:`peergrad.study.compare`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_study", "format_table"]


def _num(value: Any, fmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, fmt)


def _mb(value: Any) -> str:
    return "—" if value is None else f"{value / 1e6:.4g}"


def _options_text(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "—"


def _heading(labels: Sequence[str], pending: Sequence[str]) -> list[str]:
    """The title of ``compare.md`` and, while runs remain, which."""
    lines = [f"# peergrad compare: {', '.join(labels) or '(no run finished yet)'}", ""]
    if pending:
        lines += [f"Still to run: {', '.join(pending)}.", ""]
    return lines


def _footer(config: Mapping[str, Any]) -> list[str]:
    """The shared configuration, the last section of ``compare.md`` (a user's task, recorded
    under ``task``, as ``task=(name=..., model=..., ...)``)."""

    def shown(value: Any) -> str:
        if isinstance(value, Mapping):
            return "(" + ", ".join(f"{k}={v}" for k, v in value.items()) + ")"
        return str(value)

    text = ", ".join(f"{k}={shown(v)}" for k, v in config.items())
    return ["", "## Shared configuration", "", text, ""]


def _metric_words(metric_mode: str, metric_name: str | None = None) -> tuple[str, str, str]:
    """``(record word, words in tables, comparison)`` of the metric: ``("accuracy",
    "accuracy", "≥")``, or for a lower-is-better metric ``("metric", "metric (lower is
    better)", "≤")`` (``("perplexity", "perplexity (lower is better)", "≤")``)."""
    if metric_name == "perplexity":
        return "perplexity", "perplexity (lower is better)", "≤"
    if metric_mode == "min":
        return "metric", "metric (lower is better)", "≤"
    return "accuracy", "accuracy", "≥"


def format_table(
    rows: Sequence[Mapping[str, Any]],
    target_accuracy: float,
    config: Mapping[str, Any],
    *,
    pending: Sequence[str] = (),
    metric_mode: str = "max",
    metric_name: str | None = None,
) -> str:
    """``compare.md``: final metrics, cost to reach the target, and the shared configuration.
    ``metric_mode="min"``: the task's metric is lower-is-better (``test_metric``, or
    ``test_perplexity`` with ``metric_name="perplexity"``; the target is reached at or below
    it)."""
    word, words, cmp = _metric_words(metric_mode, metric_name)
    # --system: the simulated wall-clock beside the communication time
    timed = any("simulated_time_s" in r["final"] for r in rows)
    head, rule = (" simulated time (s) |", "--:|") if timed else ("", "")
    lines = _heading([r["label"] for r in rows], pending)
    lines += [
        "## Final metrics",
        "",
        f"| run | algorithm | options | test {words} | best test {word} | train loss | "
        f"consensus distance | MB sent / worker | simulated comm time (s) |{head} wall time (s) |",
        f"|---|---|---|--:|--:|--:|--:|--:|--:|{rule}--:|",
    ]
    for r in rows:
        f = r["final"]
        sim = f" {_num(f.get('simulated_time_s'), '.4g')} |" if timed else ""
        lines.append(
            f"| {r['label']} | {r['algorithm']} | {_options_text(r['options'])} | "
            f"{_num(f.get(f'test_{word}'), '.4f')} | {_num(r.get(f'best_test_{word}'), '.4f')} | "
            f"{_num(f['train_loss'], '.4g')} | {_num(f['consensus_distance'], '.3g')} | "
            f"{_mb(f['bytes_sent_per_worker'])} | {_num(f['simulated_comm_time_s'], '.4g')} |"
            f"{sim} {_num(f['wall_time_s'], '.3g')} |"
        )
    lines += [
        "",
        f"## To reach test {word} {cmp} {target_accuracy:g}",
        "",
        f"The first evaluation of x̄ {'at or above' if cmp == '≥' else 'at or below'} the target "
        "(evaluations are --eval-every steps apart); — means never reached.",
        "",
        f"| run | steps | samples | MB sent / worker | simulated comm time (s) |{head} "
        "wall time (s) | comm rounds |",
        f"|---|--:|--:|--:|--:|{rule}--:|--:|",
    ]
    for r in rows:
        sim = f" {_num(r.get('simulated_time_s_to_target'), '.4g')} |" if timed else ""
        lines.append(
            f"| {r['label']} | {_num(r['steps_to_target'], 'd')} | "
            f"{_num(r['samples_to_target'], ',d')} | {_mb(r['bytes_to_target'])} | "
            f"{_num(r['simulated_comm_time_s_to_target'], '.4g')} |{sim} "
            f"{_num(r['wall_time_s_to_target'], '.3g')} | {_num(r['rounds_to_target'], 'd')} |"
        )
    return "\n".join([*lines, *_footer(config)])


#: the statistic of a field that no finished run of a label has yet (``_pm`` shows "—")
_NO_STAT: dict[str, Any] = {"mean": None, "std": None, "n": 0}


def _pm(stat: Mapping[str, Any], fmt: str, scale: float = 1.0) -> str:
    if stat["mean"] is None:
        return "—"
    text = format(stat["mean"] / scale, fmt)
    if stat["n"] > 1:
        text += f" ± {format(stat['std'] / scale, fmt)}"
    return text


def format_study(
    rows: Sequence[Mapping[str, Any]],
    labels: Sequence[Mapping[str, Any]],
    target_accuracy: float,
    config: Mapping[str, Any],
    *,
    pending: Sequence[str] = (),
    metric_mode: str = "max",
    metric_name: str | None = None,
) -> str:
    """``compare.md`` of a comparison with seeds or a learning-rate grid: per label the chosen
    lr and mean ± std (n) over its chosen runs, the cost to reach the target (and how many runs
    reached it), every grid value's validation result, and every run. ``metric_mode="min"``:
    the task's metric is lower-is-better (``test_metric``, ``val_metric``; ``test_perplexity``,
    ``val_perplexity`` with ``metric_name="perplexity"``)."""
    word, words, cmp = _metric_words(metric_mode, metric_name)
    # --system: the simulated wall-clock beside the communication time
    timed = any("simulated_time_s" in lab["final"] for lab in labels)
    lines = _heading([lab["label"] for lab in labels], pending)
    lines += _study_final(labels, word, words, timed)
    lines += _study_target(labels, f"{word} {cmp} {target_accuracy:g}", timed)
    lines += _study_grid(labels)
    lines += _study_runs(rows, word)
    return "\n".join([*lines, *_footer(config)])


def _study_final(
    labels: Sequence[Mapping[str, Any]], word: str, words: str, timed: bool
) -> list[str]:
    """:func:`format_study`'s final metrics, mean ± std over each label's chosen runs."""
    head, rule = (" simulated time (s) |", "--:|") if timed else ("", "")
    lines = [
        "## Final metrics (mean ± std over the seeds)",
        "",
        "Test metrics are those of the chosen runs only; the learning rate of a label with a "
        "grid is chosen on the validation split, never on the test set.",
        "",
        f"| label | algorithm | lr | runs | test {words} | best test {word} | train loss | "
        f"val {word} | MB sent / worker | simulated comm time (s) |{head} wall time (s) |",
        f"|---|---|--:|--:|--:|--:|--:|--:|--:|--:|{rule}--:|",
    ]
    for lab in labels:
        f = lab["final"]
        lr = lab.get("chosen_lr")
        lr_text = "—" if "lr_grid" not in lab else ("none" if lr is None else f"{lr:g}")
        if lab.get("chosen_at_edge"):
            lr_text += " (edge)"
        lines.append(
            f"| {lab['label']} | {lab['algorithm']} | {lr_text} | {len(lab['runs'])} | "
            f"{_pm(f[f'test_{word}'], '.4f')} | {_pm(lab[f'best_test_{word}'], '.4f')} | "
            f"{_pm(f['train_loss'], '.4g')} | {_pm(f[f'val_{word}'], '.4f')} | "
            f"{_pm(f['bytes_sent_per_worker'], '.4g', 1e6)} | "
            f"{_pm(f['simulated_comm_time_s'], '.4g')} |"
            + (f" {_pm(f.get('simulated_time_s', _NO_STAT), '.4g')} |" if timed else "")
            + f" {_pm(f['wall_time_s'], '.3g')} |"
        )
    return lines


def _study_target(labels: Sequence[Mapping[str, Any]], target: str, timed: bool) -> list[str]:
    """:func:`format_study`'s cost to reach the ``target`` (``accuracy ≥ 0.9``)."""
    head, rule = (" simulated time (s) |", "--:|") if timed else ("", "")
    lines = [
        "",
        f"## To reach test {target} (mean ± std over the runs that did)",
        "",
        f"| label | reached | steps | samples | MB sent / worker | simulated comm time (s) |{head} "
        "wall time (s) | comm rounds |",
        f"|---|--:|--:|--:|--:|--:|{rule}--:|--:|",
    ]
    for lab in labels:
        t = lab["to_target"]
        lines.append(
            f"| {lab['label']} | {t['steps_to_target']['reached']}/"
            f"{t['steps_to_target']['runs']} | {_pm(t['steps_to_target'], '.1f')} | "
            f"{_pm(t['samples_to_target'], ',.0f')} | {_pm(t['bytes_to_target'], '.4g', 1e6)} | "
            f"{_pm(t['simulated_comm_time_s_to_target'], '.4g')} |"
            + (f" {_pm(t.get('simulated_time_s_to_target', _NO_STAT), '.4g')} |" if timed else "")
            + f" {_pm(t['wall_time_s_to_target'], '.3g')} | {_pm(t['rounds_to_target'], '.1f')} |"
        )
    return lines


def _study_grid(labels: Sequence[Mapping[str, Any]]) -> list[str]:
    """:func:`format_study`'s learning-rate grids (none without one)."""
    grids = [lab for lab in labels if "lr_grid" in lab]
    if not grids:
        return []
    lines = [
        "",
        "## Learning-rate grid (selection on the validation split)",
        "",
        "| label | lr | validation metric (mean ± std) | runs | diverged | chosen |",
        "|---|--:|--:|--:|--:|:-:|",
    ]
    for lab in grids:
        field = lab["selection_metric"]
        for res in lab["grid"]:
            mark = "✓" if res["lr"] == lab["chosen_lr"] else ""
            # nothing finished yet (an interrupted or running comparison): no metric to name
            shown = f"{field} {_pm(res[field], '.4f')}" if res[field]["n"] else "—"
            lines.append(
                f"| {lab['label']} | {res['lr']:g} | {shown} | "
                f"{res['runs']} | {res['diverged']} | {mark} |"
            )
    return lines


def _study_runs(rows: Sequence[Mapping[str, Any]], word: str) -> list[str]:
    """:func:`format_study`'s list of every run."""
    lines = [
        "",
        "## Every run",
        "",
        f"| run | seed | lr | status | val {word} | test {word} | train loss |",
        "|---|--:|--:|---|--:|--:|--:|",
    ]
    for r in rows:
        f = r["final"]
        status = "diverged" if r.get("status", "").startswith("diverged") else r.get("status")
        lr = "—" if r.get("lr") is None else f"{r['lr']:g}"
        lines.append(
            f"| {r['run']} | {r['seed']} | {lr} | {status} | "
            f"{_num(f.get(f'val_{word}'), '.4f')} | {_num(f.get(f'test_{word}'), '.4f')} | "
            f"{_num(f.get('train_loss'), '.4g')} |"
        )
    return lines
