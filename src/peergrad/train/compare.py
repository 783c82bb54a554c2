"""Several algorithms on the same task, side by side (``peergrad compare``).

Every entry is one training run (:func:`peergrad.train.train`) of the shared configuration with
its own algorithm and options, written to ``out_dir/<label>/``. Then ``out_dir`` gets:

- ``compare.json``: ``{"target_accuracy", "config" (the shared configuration), "runs": [...]}``,
  one record per entry: ``label``, ``algorithm``, ``options`` (as given), ``hyperparameters``
  (resolved, defaults included), ``run_dir``, ``final`` (every metric of the last record),
  ``best_test_accuracy``, and ``steps_to_target``, ``samples_to_target``, ``bytes_to_target``,
  ``simulated_comm_time_s_to_target``, ``wall_time_s_to_target``, ``rounds_to_target``: the
  values of the first evaluation record whose ``test_accuracy`` is at least the target (``null``
  when none is);
- ``compare.md``: the same as Markdown tables, in human-readable units;
- ``compare_vs_samples.png``, ``compare_vs_bytes.png``, ``compare_vs_simulated_time.png``,
  ``compare_vs_rounds.png`` (communication rounds): train loss and test accuracy of x̄, one curve
  per entry.

Labels name the runs: ``dpsgd`` or ``dpsgd@atc`` (the part before ``@`` is the algorithm), so one
algorithm can appear several times with different options. Everything (names, options, data,
model, topology) is checked before the first run starts. ``compare(base, entries, task=task)``
compares on a user's :class:`peergrad.Task` (as ``train(config, task)``; ``task.name`` then
replaces ``base.dataset`` in the folder name and plot titles).

On the distributed engine every rank runs the same sequence of runs (one process group for all of
them) and rank 0 writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from peergrad.algorithms import algorithm_class
from peergrad.task import Task
from peergrad.train.config import TrainConfig
from peergrad.train.folders import check_compare_folder, clear_compare_files
from peergrad.train.loop import (
    ALGORITHM_FIELDS,
    METRIC_FIELDS,
    RunResult,
    build_algorithm,
    prepare,
    train,
)
from peergrad.train.plots import plot_comparison

#: ``<key>_to_target`` -> the metric of the first record at or above the target accuracy.
TARGET_FIELDS: dict[str, str] = {
    "steps_to_target": "step",
    "samples_to_target": "samples_seen",
    "bytes_to_target": "bytes_sent_per_worker",
    "simulated_comm_time_s_to_target": "simulated_comm_time_s",
    "wall_time_s_to_target": "wall_time_s",
    "rounds_to_target": "comm_rounds",
}
#: Fields of :class:`TrainConfig` that differ between entries (not part of the shared config).
PER_ENTRY_FIELDS = ("algorithm", "options", "out", "progress")
OUTPUT_FILES = (
    "compare.json",
    "compare.md",
    "compare_vs_samples.png",
    "compare_vs_bytes.png",
    "compare_vs_simulated_time.png",
    "compare_vs_rounds.png",
)
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]{0,99}")


@dataclasses.dataclass
class CompareEntry:
    """One run of a comparison: ``label`` names its folder and curve; ``options`` are the
    algorithm's hyper-parameters (strings as from ``--set`` are converted, as in ``train``)."""

    label: str
    algorithm: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_label(cls, label: str, options: Mapping[str, Any] | None = None) -> CompareEntry:
        """``"dpsgd@atc"`` -> algorithm ``dpsgd``, label ``dpsgd@atc``."""
        return cls(label, label.partition("@")[0], dict(options or {}))


@dataclasses.dataclass
class CompareResult:
    """``rows``: the records of ``compare.json`` (one per entry, in order); ``records``: every
    run's metrics by label; ``table``: the Markdown of ``compare.md``; ``out_dir``: None when
    nothing was written (``write=False`` or a rank other than 0)."""

    out_dir: Path | None
    target_accuracy: float
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    records: dict[str, list[dict[str, Any]]]
    runs: dict[str, RunResult]
    table: str

    def to_dict(self) -> dict[str, Any]:
        """The content of ``compare.json``."""
        return {"target_accuracy": self.target_accuracy, "config": self.config, "runs": self.rows}


# ---------------------------------------------------------------------------------- entries
def check_label(label: str) -> None:
    if not LABEL_RE.fullmatch(label):
        raise ValueError(
            f"bad run label {label!r}: use letters, digits and . _ @ + = - (starting with a "
            "letter or digit, at most 100 characters), e.g. dpsgd or dpsgd@atc"
        )
    if label in OUTPUT_FILES:
        raise ValueError(f"run label {label!r} is the name of an output file of compare")


def build_entries(
    algorithms: str | Sequence[str],
    common: Mapping[str, Any] | None = None,
    per_label: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[CompareEntry]:
    """Entries from labels (``"dpsgd,allreduce,dpsgd@atc"`` or a list of labels).

    ``common`` options go to every entry whose algorithm has that option; an option that none of
    them has is an error. ``per_label[label]`` options go to that entry and override ``common``.
    Raises ``ValueError`` for a bad or repeated label, an unknown algorithm, or a ``per_label``
    key that is not one of the labels. (Option values are checked by :func:`validate`.)
    """
    labels = algorithms.split(",") if isinstance(algorithms, str) else list(algorithms)
    labels = [label.strip() for label in labels]
    if not labels or any(not label for label in labels):
        raise ValueError(
            f"--algorithms expects a comma-separated list of names, got {','.join(labels)!r}"
        )
    for label in labels:
        check_label(label)
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(
            f"run label(s) {', '.join(repeated)} given twice; to run an algorithm twice give "
            "each run its own label, e.g. dpsgd,dpsgd@atc"
        )
    entries = [CompareEntry.from_label(label) for label in labels]
    fields = {e.label: algorithm_class(e.algorithm).hyperparameters() for e in entries}
    for key, value in (common or {}).items():
        takers = [e for e in entries if key in fields[e.label]]
        if not takers:
            names = ", ".join(dict.fromkeys(e.algorithm for e in entries))
            raise ValueError(f"--set {key}: none of the selected algorithms ({names}) has it")
        for e in takers:
            e.options[key] = value
    per_label = per_label or {}
    unknown = [label for label in per_label if label not in fields]
    if unknown:
        raise ValueError(
            f"--set-for {unknown[0]}: no run is labelled {unknown[0]!r}; "
            f"the labels are: {', '.join(labels)}"
        )
    for e in entries:
        e.options.update(per_label.get(e.label, {}))
    return entries


def entry_config(base: TrainConfig, entry: CompareEntry, out: str | Path | None) -> TrainConfig:
    """``base`` with the entry's algorithm and options (``base.options`` is not used). An entry
    option ``lr``, ``momentum`` or ``weight_decay`` replaces the shared value of ``base`` for
    that run (``--set-for dpsgd@slow:lr=0.01`` beside ``--lr 0.1``)."""
    shared = {k: None for k in ALGORITHM_FIELDS if k in entry.options}
    return dataclasses.replace(
        base,
        algorithm=entry.algorithm,
        options=dict(entry.options),
        out=None if out is None else str(out),
        **shared,
    )


def shared_config(base: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in base.to_dict().items() if k not in PER_ENTRY_FIELDS}


def validate(
    base: TrainConfig,
    entries: Sequence[CompareEntry],
    target_accuracy: float,
    task: Task | None = None,
) -> None:
    """Everything a run checks before training, for every entry; ``ValueError`` (or
    ``FileNotFoundError`` for missing data files) naming the entry. Loads the data set (or
    builds ``task``) once."""
    if not (
        isinstance(target_accuracy, int | float)
        and math.isfinite(target_accuracy)
        and 0 <= target_accuracy <= 1
    ):
        raise ValueError(f"--target-accuracy must be in [0, 1], got {target_accuracy!r}")
    if not entries:
        raise ValueError("compare needs at least one algorithm")
    labels = [e.label for e in entries]
    for e in entries:
        check_label(e.label)
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"run label(s) {', '.join(repeated)} given twice")
    algorithms = []
    for e in entries:
        try:
            algorithms.append(build_algorithm(entry_config(base, e, None)))
        except ValueError as exc:
            raise ValueError(f"{e.label}: {exc}") from None
    # The first run's set-up (joins the process group on the distributed engine and checks the
    # world size, loads the data, builds the model and the sampler); the others share all but
    # the algorithm, whose topology requirements are checked against the same communicator.
    comm = prepare(entry_config(base, entries[0], None), task).comm
    for e, algorithm in zip(entries, algorithms, strict=True):
        try:
            algorithm.check_topology(comm)
        except ValueError as exc:
            raise ValueError(f"{e.label}: {exc}") from None


def compare_dir_for(
    base: TrainConfig, entries: Sequence[CompareEntry], label: str | None = None
) -> Path:
    """``runs/compare-<labels>-<topology><n>-<dataset>-<partition>-seed<seed>`` (made unique);
    ``label`` (a user task's name) replaces ``<dataset>``."""
    names = "-".join(e.label for e in entries)
    data = (label or base.dataset).replace("/", "_").replace(":", "_")
    stem = f"compare-{names}-{base.topology}{base.workers}-{data}-{base.partition}-seed{base.seed}"
    path, k = Path("runs") / stem, 1
    while path.exists():
        k += 1
        path = path.with_name(f"{stem}-{k}")
    return path


# ---------------------------------------------------------------------------------- results
def first_at_target(
    records: Sequence[Mapping[str, Any]], target_accuracy: float
) -> Mapping[str, Any] | None:
    """The first record with ``test_accuracy >= target_accuracy``, or None."""
    for rec in records:
        acc = rec.get("test_accuracy")
        if acc is not None and acc >= target_accuracy:
            return rec
    return None


def summarize_run(
    entry: CompareEntry,
    config: TrainConfig,
    records: Sequence[Mapping[str, Any]],
    target_accuracy: float,
    run_dir: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``compare.json`` record of one run; ``hyperparameters``: the algorithm's options as
    it ran (:attr:`RunResult.hyperparameters`; by default rebuilt from ``config``)."""
    last = records[-1]
    hit = first_at_target(records, target_accuracy)
    row: dict[str, Any] = {
        "label": entry.label,
        "algorithm": entry.algorithm,
        "options": dict(entry.options),
        "hyperparameters": dict(
            hyperparameters if hyperparameters is not None else build_algorithm(config).options()
        ),
        "run_dir": run_dir,
        "final": {k: last.get(k) for k in METRIC_FIELDS},
        "best_test_accuracy": max(r["test_accuracy"] for r in records),
    }
    for key, field in TARGET_FIELDS.items():
        row[key] = None if hit is None else hit[field]
    return row


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


def format_table(
    rows: Sequence[Mapping[str, Any]],
    target_accuracy: float,
    config: Mapping[str, Any],
    *,
    pending: Sequence[str] = (),
) -> str:
    """``compare.md``: final metrics, cost to reach the target, and the shared configuration."""
    title = ", ".join(r["label"] for r in rows) or "(no run finished yet)"
    lines = [f"# peergrad compare: {title}", ""]
    if pending:
        lines += [f"Still to run: {', '.join(pending)}.", ""]
    lines += [
        "## Final metrics",
        "",
        "| run | algorithm | options | test accuracy | best test accuracy | train loss | "
        "consensus distance | MB sent / worker | simulated comm time (s) | wall time (s) |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        f = r["final"]
        lines.append(
            f"| {r['label']} | {r['algorithm']} | {_options_text(r['options'])} | "
            f"{_num(f['test_accuracy'], '.4f')} | {_num(r['best_test_accuracy'], '.4f')} | "
            f"{_num(f['train_loss'], '.4g')} | {_num(f['consensus_distance'], '.3g')} | "
            f"{_mb(f['bytes_sent_per_worker'])} | {_num(f['simulated_comm_time_s'], '.4g')} | "
            f"{_num(f['wall_time_s'], '.3g')} |"
        )
    lines += [
        "",
        f"## To reach test accuracy ≥ {target_accuracy:g}",
        "",
        "The first evaluation of x̄ at or above the target (evaluations are --eval-every steps "
        "apart); — means never reached.",
        "",
        "| run | steps | samples | MB sent / worker | simulated comm time (s) | wall time (s) | "
        "comm rounds |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {_num(r['steps_to_target'], 'd')} | "
            f"{_num(r['samples_to_target'], ',d')} | {_mb(r['bytes_to_target'])} | "
            f"{_num(r['simulated_comm_time_s_to_target'], '.4g')} | "
            f"{_num(r['wall_time_s_to_target'], '.3g')} | {_num(r['rounds_to_target'], 'd')} |"
        )
    shared = ", ".join(f"{k}={v}" for k, v in config.items())
    lines += ["", "## Shared configuration", "", shared, ""]
    return "\n".join(lines)


def _title(base: TrainConfig, task: Task | None = None) -> str:
    what = task.name if task is not None else f"{base.dataset}/{base.model}"
    return f"{what} on {base.topology} (n={base.workers})"


# ---------------------------------------------------------------------------------- compare
def compare(
    base: TrainConfig,
    entries: Sequence[CompareEntry],
    out_dir: str | Path | None = None,
    target_accuracy: float = 0.9,
    *,
    write: bool = True,
    on_run: Callable[[int, CompareEntry, TrainConfig], None] | None = None,
    overwrite: bool = False,
    topology_given: bool | None = None,
    task: Task | None = None,
) -> CompareResult:
    """Train every entry on ``base`` (its ``algorithm``, ``options`` and ``out`` are not used)
    and write the comparison (see the module docstring) to ``out_dir`` when ``write``.
    ``task``: what every run trains (a :class:`peergrad.Task`, as in :func:`train`); None: the
    built-in preset of ``base.model`` / ``base.dataset``.

    Everything is validated before the first run (``ValueError`` / ``FileNotFoundError``);
    nothing is written then. ``out_dir`` defaults to :func:`compare_dir_for` (a new folder); an
    ``out_dir`` that holds an earlier comparison is refused unless ``overwrite``, which removes
    that comparison (its files and run folders) once everything is validated, so no run that
    ``compare.json`` does not list is left behind. ``topology_given``: see :func:`train`.
    ``on_run(i, entry, config)`` is called before run ``i`` (0-based) starts.
    ``compare.json`` and ``compare.md`` are rewritten after every run, so an interrupted
    comparison keeps the finished runs; the plots are drawn at the end.
    """
    entries = list(entries)
    if write and out_dir is not None:  # before validate(), which joins the process group
        check_compare_folder(out_dir, OUTPUT_FILES, overwrite=overwrite)
    validate(base, entries, target_accuracy, task)
    label = task.name if task is not None else None
    root = Path(out_dir) if out_dir is not None else compare_dir_for(base, entries, label)
    is_main = base.engine == "simulated" or os.environ.get("RANK", "0") == "0"
    if write and out_dir is not None and overwrite and is_main:
        clear_compare_files(root, OUTPUT_FILES)
    shared = shared_config(base)
    rows: list[dict[str, Any]] = []
    records: dict[str, list[dict[str, Any]]] = {}
    runs: dict[str, RunResult] = {}
    writes = False
    for i, entry in enumerate(entries):
        config = entry_config(base, entry, root / entry.label if write else None)
        if on_run is not None:
            on_run(i, entry, config)
        # overwrite: on the distributed engine a rank may check a run folder before rank 0
        # has cleared the old comparison; the folder is cleared (again) either way.
        result = train(
            config, task=task, write=write, overwrite=overwrite, topology_given=topology_given
        )
        writes = result.out_dir is not None  # rank 0 only on the distributed engine
        runs[entry.label] = result
        records[entry.label] = result.records
        rows.append(
            summarize_run(
                entry,
                config,
                result.records,
                target_accuracy,
                entry.label if write else None,
                result.hyperparameters,
            )
        )
        if writes:
            pending = [e.label for e in entries[i + 1 :]]
            _write_tables(root, rows, target_accuracy, shared, pending)
    table = format_table(rows, target_accuracy, shared)
    if writes:
        title = f"{', '.join(records)}: {_title(base, task)}"
        plot_comparison(records, root, title, target_accuracy=target_accuracy)
    return CompareResult(
        root if writes else None, target_accuracy, shared, rows, records, runs, table
    )


def _write_tables(
    root: Path,
    rows: list[dict[str, Any]],
    target_accuracy: float,
    shared: dict[str, Any],
    pending: list[str],
) -> None:
    data = {"target_accuracy": target_accuracy, "config": shared, "runs": rows}
    (root / "compare.json").write_text(json.dumps(data, indent=2) + "\n")
    table = format_table(rows, target_accuracy, shared, pending=pending)
    (root / "compare.md").write_text(table)
