"""Plots redrawn from folders on disk (``peergrad plot PATH...``).

A PATH is a run folder (it holds ``metrics.jsonl``) or a compare folder (it holds
``compare.json``). :func:`plot_folders` reads them all, checks everything, and only then writes
``plot_vs_<axis>.png`` (train loss and test accuracy of x̄ against each axis of :data:`PLOT_AXES`)
into the output folder; any other file there is left alone, and existing ``plot_vs_*.png`` are
replaced only with ``overwrite``. Bad input raises ``ValueError`` with a one-line message (the
CLI prints it and exits with status 2).

``compare.json`` (see :mod:`peergrad.study.compare`) is read by :func:`load_compare_groups`:

- with a top-level ``"labels": [{"label", "runs": [run_dir, ...], ...}, ...]`` (seeds and
  step-size grids), each label's curve is the listed run folders, the label's chosen runs, one
  per seed: several become a mean ± std band;
- otherwise every row of ``"runs": [{"label", "run_dir", ...}, ...]`` is one run; rows that share
  a label (seeds) form one band.

``run_dir`` is relative to the compare folder (an absolute path is used as it is); a row
without one uses its label, the folder ``compare`` gives each run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from peergrad.train.plots import PLOT_AXES, plot_curves, simulated_time_key

__all__ = [
    "PLOT_AXES",
    "load_compare_groups",
    "load_folder",
    "parse_axes",
    "plot_folders",
    "plot_name",
    "read_records",
]

Groups = dict[str, list[list[dict[str, Any]]]]


def plot_name(axis: str) -> str:
    """The file ``peergrad plot`` writes for ``axis`` (a key of :data:`PLOT_AXES`)."""
    return f"plot_vs_{axis}.png"


def parse_axes(text: str | Sequence[str] | None) -> list[str]:
    """``--x``: a comma list of :data:`PLOT_AXES` names (None: all of them, in that order);
    repeats are dropped. ``ValueError`` names an unknown axis and lists the allowed ones."""
    if text is None:
        return list(PLOT_AXES)
    names = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        if name not in PLOT_AXES:
            raise ValueError(
                f"--x: unknown axis {name!r}; choose from: {', '.join(PLOT_AXES)} (comma-separated)"
            )
        if name not in out:
            out.append(name)
    return out


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``, in order. ``ValueError`` when the file is
    missing, holds a line that is not a JSON object, or holds no record."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{str(run_dir)!r} is not a run folder: it has no metrics.jsonl")
    records: list[dict[str, Any]] = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{str(path)!r} line {i} is not valid JSON: {exc.msg}") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{str(path)!r} line {i} is not a JSON object")
        records.append(rec)
    if not records:
        raise ValueError(f"{str(path)!r} holds no records")
    return records


def _run_dir_of(item: Any, where: str) -> str:
    if isinstance(item, str) and item:
        return item
    if isinstance(item, Mapping) and isinstance(item.get("run_dir"), str):
        return str(item["run_dir"])
    raise ValueError(f"{where}: expected a run folder name, got {item!r}")


def load_compare_groups(folder: str | Path) -> Groups:
    """``label -> [records of each of its runs]`` of the compare folder ``folder`` (its
    ``compare.json``; the schema is in the module docstring), in ``compare.json``'s order.
    ``ValueError`` for a missing or malformed ``compare.json`` and for a listed run folder
    without ``metrics.jsonl``."""
    folder = Path(folder)
    path = folder / "compare.json"
    if not path.is_file():
        raise ValueError(f"{str(folder)!r} is not a compare folder: it has no compare.json")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} is not a JSON object")

    def records(run_dir: str, label: str) -> list[dict[str, Any]]:
        try:
            return read_records(folder / run_dir)
        except ValueError as exc:
            raise ValueError(f"{str(path)!r}, label {label!r}: {exc}") from None

    groups: Groups = {}
    if data.get("labels") is not None:
        labels = data["labels"]
        if not isinstance(labels, list):
            raise ValueError(f'{str(path)!r}: "labels" must be a list')
        for entry in labels:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("label"), str):
                raise ValueError(f'{str(path)!r}: a "labels" entry lacks its "label"')
            label, runs = entry["label"], entry.get("runs")
            if not isinstance(runs, list):
                raise ValueError(f'{str(path)!r}: label {label!r} has no "runs" list')
            where = f"{str(path)!r}, label {label!r}"
            groups.setdefault(label, []).extend(
                records(_run_dir_of(run, where), label) for run in runs
            )
        return groups
    rows = data.get("runs")
    if not isinstance(rows, list):
        raise ValueError(f'{str(path)!r} has neither a "labels" nor a "runs" list')
    for row in rows:
        if not isinstance(row, Mapping) or not isinstance(row.get("label"), str):
            raise ValueError(f'{str(path)!r}: a "runs" row lacks its "label"')
        label = row["label"]
        run_dir = row.get("run_dir") or label
        groups.setdefault(label, []).append(records(_run_dir_of(run_dir, str(path)), label))
    return groups


def _folder_name(path: Path) -> str:
    return path.resolve().name or str(path)


def load_folder(path: str | Path) -> tuple[str, Groups, dict[str, Any]]:
    """One PATH of ``peergrad plot``: ``(kind, groups, info)``; ``kind`` is ``"compare"``
    (``compare.json``; it wins when a folder has both) or ``"run"`` (``metrics.jsonl``: one
    group, named after the folder). ``info``: ``compare.json`` (without its rows) or the run's
    ``config.json`` (empty when absent), for titles. ``ValueError`` for a missing folder or one
    that is neither."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"PATH {str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"PATH {str(path)!r} is not a folder")
    if (path / "compare.json").is_file():
        groups = load_compare_groups(path)  # checks compare.json
        data = json.loads((path / "compare.json").read_text())
        return "compare", groups, {k: v for k, v in data.items() if k not in ("runs", "labels")}
    if (path / "metrics.jsonl").is_file():
        info: dict[str, Any] = {}
        try:
            info = json.loads((path / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            pass  # the title then shows the folder name only
        if not isinstance(info, dict):
            info = {}
        return "run", {_folder_name(path): [read_records(path)]}, info
    raise ValueError(
        f"PATH {str(path)!r} is neither a run folder (metrics.jsonl) nor a compare folder "
        "(compare.json)"
    )


def _unique(label: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    out, k = label, 1
    while out in taken:
        k += 1
        out = f"{label} ({k})"
    return out


def _title(kind: str, groups: Groups, info: Mapping[str, Any], name: str) -> str:
    """``<run folder>: <algorithm>: <dataset>/<model> on <topology> (n=<workers>)`` for a run,
    ``<labels>: <dataset>/<model> on ...`` for a comparison (the parts that are known)."""
    config = info.get("config", {}) if kind == "compare" else info
    config = config if isinstance(config, Mapping) else {}
    if kind == "run":
        head = f"{name}: {config['algorithm']}" if config.get("algorithm") else name
    else:
        head = ", ".join(groups)
    if {"topology", "workers"} <= set(config):
        task = config.get("task")
        if isinstance(task, Mapping):  # a run on a user's Task (config.json records it)
            what = f"{task.get('name', '?')}/{str(task.get('model', '?')).rpartition('.')[2]}"
        else:
            what = f"{config.get('dataset', '?')}/{config.get('model', '?')}"
        return f"{head}: {what} on {config['topology']} (n={config['workers']})"
    return head


def plot_folders(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    axes: str | Sequence[str] | None = None,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Draw ``plot_vs_<axis>.png`` for every axis of ``axes`` (see :func:`parse_axes`; None:
    all) from the run and compare folders ``paths``; return the written files.

    One run folder: its curve. One compare folder: one curve (or mean ± std band) per label.
    Several folders: all overlaid; run folders are labelled by their folder name, and the labels
    of a compare folder are prefixed with its folder name (``cmp/dpsgd``). The plots go to
    ``out``, by default the one PATH (with several PATHs ``out`` is required). Existing
    ``plot_vs_*.png`` there are replaced only when ``overwrite``; no other file is touched.
    Everything is read and checked before anything is written; ``ValueError`` (one line)
    otherwise.
    """
    names = parse_axes(axes)
    if not paths:
        raise ValueError("give at least one PATH (a run folder or a compare folder)")
    paths = [Path(p) for p in paths]
    if out is None and len(paths) > 1:
        raise ValueError("--out DIR is required with several PATHs (where to write the plots)")
    loaded = [load_folder(p) for p in paths]
    groups: Groups = {}
    # paths holds Path objects from here on (its declared type is the argument's)
    for path, (kind, found, _) in zip(cast(list[Path], paths), loaded, strict=True):
        for label, runs in found.items():
            shown = (
                f"{_folder_name(path)}/{label}" if kind == "compare" and len(paths) > 1 else label
            )
            groups[_unique(shown, groups)] = runs
    out_dir = Path(out) if out is not None else cast(Path, paths[0])
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file, not a folder; choose a folder")
    files = [out_dir / plot_name(name) for name in names]
    found = [f.name for f in files if f.exists()]  # type: ignore[assignment]  # name reused
    if found and not overwrite:
        raise ValueError(
            f"{str(out_dir)!r} already holds {', '.join(found)}: replace them with --overwrite "
            "or choose another --out"
        )
    if len(paths) == 1:
        kind, found_groups, info = loaded[0]
        title = _title(kind, found_groups, info, _folder_name(cast(Path, paths[0])))
    else:
        title = ", ".join(_folder_name(cast(Path, p)) for p in paths)
    target, mode = None, None  # None: read the metric's direction from the records
    if len(paths) == 1 and loaded[0][0] == "compare":
        value = loaded[0][2].get("target_accuracy")
        target = float(value) if isinstance(value, int | float) else None
        recorded = loaded[0][2].get("metric_mode")
        mode = recorded if recorded in ("max", "min") else None
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_curves(
            groups,
            simulated_time_key(groups) if name == "simulated_time" else PLOT_AXES[name],
            file,
            title,
            target_accuracy=target,
            metric_mode=mode,
        )
        for name, file in zip(names, files, strict=True)
    ]
