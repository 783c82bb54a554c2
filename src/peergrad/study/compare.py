"""Several algorithms on the same task, side by side (``peergrad compare``).

Every entry is one training run (:func:`peergrad.train.train`) of the shared configuration with
its own algorithm and options, written to ``out_dir/<label>/``. Then ``out_dir`` gets:

- ``compare.json``: ``{"target_accuracy", "config" (the shared configuration), "runs": [...]}``,
  one record per entry: ``label``, ``algorithm``, ``options`` (as given), ``hyperparameters``
  (resolved, defaults included), ``run_dir``, ``final`` (every metric of the last record),
  ``best_test_accuracy``, and ``steps_to_target``, ``samples_to_target``, ``bytes_to_target``,
  ``simulated_comm_time_s_to_target``, ``simulated_time_s_to_target``,
  ``wall_time_s_to_target``, ``rounds_to_target``: the values of the first evaluation record
  whose ``test_accuracy`` is at least the target (``null`` when none is;
  ``simulated_time_s_to_target``, the simulated wall-clock under the system profile, is
  ``null`` in a comparison without ``--system``, whose records have no ``simulated_time_s``);
- ``compare.md``: the same as Markdown tables, in human-readable units (with ``--system`` a
  "simulated time (s)" column beside the communication time);
- ``compare_vs_samples.png``, ``compare_vs_bytes.png``, ``compare_vs_simulated_time.png``,
  ``compare_vs_rounds.png`` (communication rounds): train loss and test accuracy of x̄, one curve
  per entry (against simulated time: ``simulated_time_s`` with ``--system``, else
  ``simulated_comm_time_s``).

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
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from peergrad.algorithms import algorithm_class, check_failures
from peergrad.train.config import TrainConfig
from peergrad.train.folders import check_compare_folder, clear_compare_files
from peergrad.train.loop import (
    ALGORITHM_FIELDS,
    RunResult,
    build_algorithm,
    prepare,
    system_profile,
    train,
)
from peergrad.train.plots import plot_comparison
from peergrad.train.recorder import SYSTEM_FIELDS, metric_field, metric_fields, reaches
from peergrad.train.spelling import field_names
from peergrad.train.task import Task

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
    #: task options of this run only (:data:`TASK_OPTIONS`: ``topology``, ``workers`` ...),
    #: replacing the shared configuration's
    task: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: this label's learning-rate grid (None: the comparison's ``lr_grid``)
    lr_grid: tuple[float, ...] | None = None

    @classmethod
    def from_label(cls, label: str, options: Mapping[str, Any] | None = None) -> CompareEntry:
        """``"dpsgd@atc"`` -> algorithm ``dpsgd``, label ``dpsgd@atc``."""
        return cls(label, label.partition("@")[0], dict(options or {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "algorithm": self.algorithm,
            "options": dict(self.options),
            "task": dict(self.task),
            "lr_grid": list(self.lr_grid) if self.lr_grid is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompareEntry:
        grid = data.get("lr_grid")
        return cls(
            data["label"],
            data["algorithm"],
            dict(data.get("options") or {}),
            dict(data.get("task") or {}),
            tuple(grid) if grid is not None else None,
        )


@dataclasses.dataclass
class CompareResult:
    """``rows``: the records of ``compare.json`` (one per run, in order; with seeds or a grid
    the non-chosen grid runs' test metrics are None); ``records``: every run's metrics by its
    folder name (the label for a comparison without seeds or grid, else ``LABEL/lrV-seedS``);
    ``runs``: the :class:`RunResult` of every run trained by this call (a resumed comparison
    lacks the runs it kept); ``labels``: per label its chosen lr and mean ± std (``compare.json``
    ``labels``; None without seeds or grid); ``table``: the Markdown of ``compare.md``;
    ``out_dir``: None when nothing was written (``write=False`` or a rank other than 0)."""

    out_dir: Path | None
    target_accuracy: float
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    records: dict[str, list[dict[str, Any]]]
    runs: dict[str, RunResult]
    table: str
    labels: list[dict[str, Any]] | None = None
    #: the task's metric direction (``Task.metric_mode``; ``"max"`` for the built-ins)
    metric_mode: str = "max"

    def to_dict(self) -> dict[str, Any]:
        """The content of ``compare.json`` (without the resume ``plan``)."""
        out = {
            "target_accuracy": self.target_accuracy,
            "metric_mode": self.metric_mode,
            "config": self.config,
            "runs": self.rows,
        }
        if self.labels is not None:
            out["labels"] = self.labels
        return out


# ---------------------------------------------------------------------------------- options
#: :class:`TrainConfig` fields that one label may change with ``--set-for LABEL:KEY=VALUE``
#: (``-`` or ``_`` in KEY), e.g. ``--set-for dpsgd@exp:topology=one-peer-exponential``. The
#: others are shared: the engine and data source (every run reads the same data), the seed
#: (``--seeds``), ``val_fraction`` (one split for every label), the algorithm's own fields
#: (``lr``, ``momentum``, ``weight_decay`` are algorithm options there) and the output ones.
TASK_OPTIONS: tuple[str, ...] = (
    "topology",
    "workers",
    "erdos_renyi_p",
    "model",
    "partition",
    "dirichlet_alpha",
    "epochs",
    "steps",
    "batch_size",
    "device",
    "dtype",
    "eval_every",
    "eval_workers",
    "latency_ms",
    "bandwidth_gbps",
    "checkpoint_every",
    "loss",
    "lr_schedule",
    "warmup_steps",
    "buffers",
    "loader_workers",
)
#: ``--set-for LABEL:lr-grid=...``: that label's learning-rate grid.
GRID_KEYS = ("lr-grid", "lr_grid")


def _convert_task_value(key: str, text: Any) -> Any:
    """``text`` (a string from ``--set-for``, or a value) as the type of ``TrainConfig.key``;
    ``ValueError`` naming the option and the expected type."""
    if not isinstance(text, str):
        return text
    default = TrainConfig.__dataclass_fields__[key].default
    optional = default is None or key in ("steps", "eval_every", "checkpoint_every")
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    kind = {
        "workers": int,
        "steps": int,
        "batch_size": int,
        "eval_every": int,
        "eval_workers": int,
        "checkpoint_every": int,
        "warmup_steps": int,
        "loader_workers": int,
        "erdos_renyi_p": float,
        "dirichlet_alpha": float,
        "epochs": float,
        "latency_ms": float,
        "bandwidth_gbps": float,
    }.get(key, str)
    try:
        return kind(text)
    except ValueError:
        raise ValueError(
            f"--set-for ...:{key.replace('_', '-')}={text!r}: expected {kind.__name__}"
            + (" or none" if optional else "")
        ) from None


def parse_lr_grid(value: str | Sequence[float], flag: str = "--lr-grid") -> tuple[float, ...]:
    """``"0.01,0.03,0.1"`` (or a sequence) -> the grid; ``ValueError`` naming ``flag`` for an
    empty grid, a value that is not a finite number > 0, or a repeated value."""
    items = value.split(",") if isinstance(value, str) else list(value)
    grid: list[float] = []
    for item in items:
        try:
            v = float(item.strip() if isinstance(item, str) else item)
        except (TypeError, ValueError):
            raise ValueError(f"{flag} expects comma-separated numbers > 0, got {item!r}") from None
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{flag}: every learning rate must be a finite number > 0, got {v}")
        if v in grid:
            raise ValueError(f"{flag}: {v:g} is given twice")
        grid.append(v)
    if not grid:
        raise ValueError(f"{flag} is empty; give at least one learning rate, e.g. 0.03,0.1,0.3")
    return tuple(grid)


def parse_seeds(value: str | Sequence[int]) -> tuple[int, ...]:
    """``"0,1,2"`` (or a sequence) -> the seeds; ``ValueError`` naming ``--seeds`` for an empty
    list, a value that is not an integer >= 0, or a repeated seed."""
    items = value.split(",") if isinstance(value, str) else list(value)
    seeds: list[int] = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        try:
            v = int(text)
        except (TypeError, ValueError):
            raise ValueError(
                f"--seeds expects comma-separated integers >= 0, got {item!r}"
            ) from None
        if isinstance(text, float) or v < 0 or v >= 2**63:
            raise ValueError(f"--seeds expects comma-separated integers >= 0, got {item!r}")
        if v in seeds:
            raise ValueError(f"--seeds: seed {v} is given twice")
        seeds.append(v)
    if not seeds:
        raise ValueError("--seeds is empty; give at least one seed, e.g. 0,1,2")
    return tuple(seeds)


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
        for key, value in per_label.get(e.label, {}).items():
            field = key.replace("-", "_")
            if key in GRID_KEYS:
                e.lr_grid = parse_lr_grid(value, flag=f"--set-for {e.label}:lr-grid")
            elif field in TASK_OPTIONS and field not in fields[e.label]:
                e.task[field] = _convert_task_value(field, value)
            elif field in TrainConfig.__dataclass_fields__ and field not in fields[e.label]:
                raise ValueError(
                    f"--set-for {e.label}:{key}: {key} cannot differ between the runs of one "
                    f"comparison; per-label task options are: "
                    f"{', '.join(k.replace('_', '-') for k in TASK_OPTIONS)}"
                )
            else:
                e.options[key] = value
    return entries


def entry_config(
    base: TrainConfig,
    entry: CompareEntry,
    out: str | Path | None,
    *,
    seed: int | None = None,
    lr: float | None = None,
) -> TrainConfig:
    """``base`` with the entry's algorithm, options and task options (``base.options`` is not
    used). An entry option ``lr``, ``momentum`` or ``weight_decay`` replaces the shared value of
    ``base`` for that run (``--set-for dpsgd@slow:lr=0.01`` beside ``--lr 0.1``); ``lr`` (a
    grid value) and ``seed`` replace both."""
    options = dict(entry.options)
    if lr is not None:
        options["lr"] = lr
    shared: dict[str, Any] = {k: None for k in ALGORITHM_FIELDS if k in options}
    return dataclasses.replace(
        base,
        algorithm=entry.algorithm,
        options=options,
        out=None if out is None else str(out),
        **shared,
        **entry.task,
        **cast(dict[str, Any], {"seed": seed} if seed is not None else {}),
    )


def shared_config(base: TrainConfig, task: Task | None = None) -> dict[str, Any]:
    """The configuration every run shares (``compare.json`` ``config``, ``compare.md``'s last
    section); with a user's ``task`` the preset fields the runs do not read (``model``,
    ``dataset``, ``loss`` ...) are left out and ``task`` (:meth:`Task.describe`) is recorded."""
    from peergrad.train.loop import PRESET_FIELDS

    skip = (*PER_ENTRY_FIELDS, *(PRESET_FIELDS if task is not None else ()))
    out = {k: v for k, v in base.to_dict().items() if k not in skip}
    if task is not None:
        out["task"] = task.describe()
    return out


def validate(
    base: TrainConfig,
    entries: Sequence[CompareEntry],
    target_accuracy: float,
    task: Task | None = None,
    *,
    seeds: Sequence[int] | None = None,
    lr_grid: Sequence[float] | None = None,
) -> None:
    """Everything a run checks before training, for every entry (with its task options, every
    grid value and the first seed); ``ValueError`` (or ``FileNotFoundError`` for missing data
    files) naming the entry. Loads the data set (or builds ``task``) once per distinct set of
    task options."""
    custom_metric = task is not None and callable(task.metric)
    if not (isinstance(target_accuracy, int | float) and math.isfinite(target_accuracy)) or (
        not custom_metric and not 0 <= target_accuracy <= 1
    ):
        allowed = "a finite number (the task's metric)" if custom_metric else "in [0, 1]"
        raise ValueError(f"--target-accuracy must be {allowed}, got {target_accuracy!r}")
    if not entries:
        raise ValueError("compare needs at least one algorithm")
    labels = [e.label for e in entries]
    for e in entries:
        check_label(e.label)
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"run label(s) {', '.join(repeated)} given twice")
    if seeds is not None:
        parse_seeds(seeds)
    if lr_grid is not None:
        parse_lr_grid(lr_grid)
    seed = seeds[0] if seeds else None
    algorithms = []
    for e in entries:
        grid = grid_of(e, lr_grid)
        if grid is not None:
            if "lr" not in algorithm_class(e.algorithm).hyperparameters():
                raise ValueError(f"{e.label}: {e.algorithm} has no lr option to tune with a grid")
            if "lr" in e.options and e.lr_grid is not None:
                raise ValueError(
                    f"--set-for {e.label}:lr and --set-for {e.label}:lr-grid both set its lr; "
                    "give one"
                )
        try:
            for lr in grid or (None,):
                algorithms.append(build_algorithm(entry_config(base, e, None, seed=seed, lr=lr)))
            check_config_fields(entry_config(base, e, None, seed=seed))
        except ValueError as exc:
            raise ValueError(f"{e.label}: {exc}") from None
    # Each distinct task's set-up (joins the process group on the distributed engine and checks
    # the world size, loads the data, builds the model and the sampler); the algorithms' topology
    # requirements are checked against that task's communicator.
    comms: dict[str, Any] = {}
    for e in entries:
        key = json.dumps(e.task, sort_keys=True)
        if key not in comms:
            try:
                comms[key] = prepare(entry_config(base, e, None, seed=seed), task).comm
            except ValueError as exc:
                raise ValueError(f"{e.label}: {exc}") from None
        try:
            config = entry_config(base, e, None, seed=seed)
            algorithm = build_algorithm(config)
            algorithm.check_topology(comms[key])
            profile = system_profile(config)  # --system failures this algorithm cannot take
            if profile is not None:
                check_failures(algorithm, comms[key].topology, profile)
        except ValueError as exc:
            raise ValueError(f"{e.label}: {exc}") from None


def check_config_fields(config: TrainConfig) -> None:
    """The option checks of :func:`peergrad.train.resolve.check_config` (task options given
    per label: ``--lr-schedule`` syntax and the like)."""
    from peergrad.train.resolve import check_config

    check_config(config)


def grid_of(entry: CompareEntry, lr_grid: Sequence[float] | None) -> tuple[float, ...] | None:
    """The learning rates ``entry`` runs: its own grid, else the comparison's unless the entry
    fixes ``lr`` itself (``--set-for LABEL:lr=...``), else None (one run at its lr)."""
    if entry.lr_grid is not None:
        return tuple(entry.lr_grid)
    if lr_grid is not None and "lr" not in entry.options:
        return tuple(lr_grid)
    return None


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
    records: Sequence[Mapping[str, Any]], target_accuracy: float, metric_mode: str = "max"
) -> Mapping[str, Any] | None:
    """The first record whose test metric reaches the target, or None: ``test_accuracy >=
    target_accuracy``, or for a lower-is-better metric (``metric_mode="min"``) ``test_metric
    <= target_accuracy``."""
    key = metric_field("test_accuracy", metric_mode)
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
) -> dict[str, Any]:
    """The ``compare.json`` record of one run; ``hyperparameters``: the algorithm's options as
    it ran (:attr:`RunResult.hyperparameters`; by default rebuilt from ``config``);
    ``metric_mode``: the task's metric direction (the fields and the best value follow it)."""
    last = records[-1]
    hit = first_at_target(records, target_accuracy, metric_mode)
    test_key = metric_field("test_accuracy", metric_mode)
    row: dict[str, Any] = {
        "label": entry.label,
        "algorithm": entry.algorithm,
        "options": dict(entry.options),
        "hyperparameters": dict(
            hyperparameters if hyperparameters is not None else build_algorithm(config).options()
        ),
        "run_dir": run_dir,
        "final": {
            **{k: last.get(k) for k in metric_fields(metric_mode)},
            **{k: last[k] for k in SYSTEM_FIELDS if k in last},  # --system
        },
        metric_field("best_test_accuracy", metric_mode): best_of(
            [r.get(test_key) for r in records], metric_mode
        ),
    }
    for key, field in TARGET_FIELDS.items():
        row[key] = None if hit is None else hit.get(field)
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


def _metric_words(metric_mode: str) -> tuple[str, str, str]:
    """``(record word, words in tables, comparison)`` of the metric: ``("accuracy",
    "accuracy", "≥")``, or for a lower-is-better metric ``("metric", "metric (lower is
    better)", "≤")``."""
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
) -> str:
    """``compare.md``: final metrics, cost to reach the target, and the shared configuration.
    ``metric_mode="min"``: the task's metric is lower-is-better (``test_metric``; the target is
    reached at or below it)."""
    word, words, cmp = _metric_words(metric_mode)
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


def _title(base: TrainConfig, task: Task | None = None) -> str:
    what = task.name if task is not None else f"{base.dataset}/{base.model}"
    return f"{what} on {base.topology} (n={base.workers})"


# ---------------------------------------------------------------------------------- compare
@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a comparison: ``entry`` at ``seed`` (None: the shared seed) and ``lr`` (a
    grid value; None: no grid); ``name`` is its folder relative to the comparison folder."""

    entry: CompareEntry
    seed: int | None
    lr: float | None
    name: str


def plan_runs(
    entries: Sequence[CompareEntry],
    seeds: Sequence[int] | None = None,
    lr_grid: Sequence[float] | None = None,
) -> list[RunSpec]:
    """Every run, label by label, grid value by grid value, seed by seed. Folders: ``LABEL``
    for a single run, else ``LABEL/seedS``, ``LABEL/lrV`` or ``LABEL/lrV-seedS``."""
    out = []
    for e in entries:
        grid = grid_of(e, lr_grid)
        for lr in grid or (None,):
            for seed in seeds or (None,):
                parts = ([f"lr{lr:g}"] if lr is not None else []) + (
                    [f"seed{seed}"] if seed is not None else []
                )
                name = f"{e.label}/{'-'.join(parts)}" if parts else e.label
                out.append(RunSpec(e, seed, lr, name))
    return out


@field_names
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
    seeds: Sequence[int] | None = None,
    lr_grid: Sequence[float] | None = None,
    resume: bool = False,
    run_plots: bool = False,
) -> CompareResult:
    """Train every entry on ``base`` (its ``algorithm``, ``options`` and ``out`` are not used)
    and write the comparison (see the module docstring) to ``out_dir`` when ``write``.
    ``task``: what every run trains (a :class:`peergrad.Task`, as in :func:`train`); None: the
    built-in preset of ``base.model`` / ``base.dataset``.

    ``seeds``: run every entry once per seed (``base.seed`` is then not used); the tables give
    mean ± standard deviation over the seeds. ``lr_grid``: run every entry that has an ``lr``
    option and does not fix it (``--set-for LABEL:lr=...``) at every value (an entry's own
    ``lr_grid`` replaces it) and select, per label, the value with the best seed-mean
    validation metric (:func:`select_lr`); ``base.val_fraction`` must then be > 0 (the CLI
    makes it 0.1), and only the chosen runs' test metrics are reported. A chosen value at an
    edge of its grid gives a ``UserWarning``.

    Everything is validated before the first run (``ValueError`` / ``FileNotFoundError``);
    nothing is written then. ``out_dir`` defaults to :func:`compare_dir_for` (a new folder); an
    ``out_dir`` that holds an earlier comparison is refused unless ``overwrite``, which removes
    that comparison (its files and run folders) once everything is validated, so no run that
    ``compare.json`` does not list is left behind. ``resume``: ``out_dir`` holds this
    comparison, interrupted; runs that finished are kept (read back from their folders), a run
    with a checkpoint continues from it, and a run that stopped without one starts again.
    ``topology_given``: see :func:`train`. ``on_run(i, entry, config)`` is called before run
    ``i`` (0-based) starts. ``compare.json`` and ``compare.md`` are rewritten after every run,
    so an interrupted comparison keeps the finished runs; the plots are drawn at the end. A run
    that diverges (:class:`~peergrad.train.guard.NonFiniteError`) in a comparison with seeds or
    a grid is recorded as diverged (its grid value is then never chosen) and the comparison
    goes on; in a plain comparison it stops the comparison, as before. ``run_plots``: also draw
    each run folder's own two PNGs (:func:`~peergrad.train.plots.plot_run`); off by default,
    since the comparison's plots show every run and drawing two figures costs about as much as
    a short run's steps (``peergrad plot DIR/LABEL`` draws them later).
    """
    from peergrad.train.guard import NonFiniteError

    entries = list(entries)
    seeds = parse_seeds(seeds) if seeds is not None else None
    lr_grid = parse_lr_grid(lr_grid) if lr_grid is not None else None
    tuned = any(grid_of(e, lr_grid) is not None for e in entries)
    study = seeds is not None or tuned
    if lr_grid is not None and base.lr is not None:
        raise ValueError("--lr and --lr-grid both set the learning rate; give one")
    if tuned and not base.val_fraction:
        raise ValueError(
            "--lr-grid selects on a validation split: --val-fraction must be in (0, 0.5]"
        )
    if write and out_dir is not None and not resume:  # before validate(): joins the group
        check_compare_folder(out_dir, OUTPUT_FILES, overwrite=overwrite)
    if resume and (out_dir is None or not (Path(out_dir) / "compare.json").is_file()):
        raise ValueError(f"--resume {out_dir}: no compare.json there")
    validate(base, entries, target_accuracy, task, seeds=seeds, lr_grid=lr_grid)
    label = task.name if task is not None else None
    root = Path(out_dir) if out_dir is not None else compare_dir_for(base, entries, label)
    is_main = base.engine == "simulated" or os.environ.get("RANK", "0") == "0"
    if write and out_dir is not None and overwrite and is_main and not resume:
        clear_compare_files(root, OUTPUT_FILES)
    shared = shared_config(base, task)
    mode = task.metric_mode if task is not None else "max"
    plan = {
        "config": base.to_dict(),
        "entries": [e.to_dict() for e in entries],
        "seeds": list(seeds) if seeds is not None else None,
        "lr_grid": list(lr_grid) if lr_grid is not None else None,
        "target_accuracy": target_accuracy,
        "run_plots": run_plots,
    }
    if task is not None:  # the CLI cannot rebuild a Python Task: load_plan refuses this plan
        plan["task"] = task.describe()
    specs = plan_runs(entries, seeds, lr_grid)
    done = _finished_runs(root) if resume else {}
    rows: list[dict[str, Any]] = []
    records: dict[str, list[dict[str, Any]]] = {}
    runs: dict[str, RunResult] = {}
    writes = write and is_main
    for i, spec in enumerate(specs):
        entry = spec.entry
        run_dir = root / spec.name
        config = entry_config(base, entry, run_dir if write else None, seed=spec.seed, lr=spec.lr)
        if spec.name in done:
            recs, status = done[spec.name]
        else:
            if on_run is not None:
                on_run(i, entry, config)
            collected: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {"overwrite": overwrite}
            if resume and write and (run_dir / "config.json").is_file():
                if (run_dir / "checkpoint.json").is_file():
                    kwargs = {"resume": True}  # continue from its last checkpoint
                else:
                    kwargs = {"overwrite": True}  # stopped without a checkpoint: start again
            status = "finished"
            try:
                result = train(
                    config,
                    task=task,
                    write=write,
                    topology_given=topology_given,
                    on_record=collected.append,
                    plots=run_plots,
                    **kwargs,
                )
                recs = result.records
                runs[spec.name] = result
                writes = result.out_dir is not None  # rank 0 only on the distributed engine
            except NonFiniteError as exc:
                if not study:
                    raise
                recs, status = _read_records(run_dir) or collected, f"diverged: {exc}"
        records[spec.name] = recs
        row = summarize_run(
            entry,
            config,
            recs,
            target_accuracy,
            spec.name if write else None,
            runs[spec.name].hyperparameters if spec.name in runs else None,
            metric_mode=mode,
        )
        if study:
            row.update(run=spec.name, seed=config.seed, lr=spec.lr, status=status)
        rows.append(row)
        if writes:
            pending = [sp.name for sp in specs[i + 1 :]]
            _write_tables(root, rows, target_accuracy, shared, pending, plan, specs, study, mode)
    labels = summarize_labels(specs, rows, target_accuracy, lr_grid, mode) if study else None
    out_rows = _reported_rows(rows, labels) if labels is not None else rows
    table = (
        format_study(out_rows, labels, target_accuracy, shared, metric_mode=mode)
        if labels is not None
        else format_table(rows, target_accuracy, shared, metric_mode=mode)
    )
    if writes:
        _write_tables(root, rows, target_accuracy, shared, [], plan, specs, study, mode)
        title = f"{', '.join(e.label for e in entries)}: {_title(base, task)}"
        groups: dict[str, Any] = {}
        if labels is not None:
            for lab in labels:
                groups[lab["label"]] = [records[name] for name in lab["runs"]]
        else:
            groups = {spec.name: records[spec.name] for spec in specs}
        plot_comparison(groups, root, title, target_accuracy=target_accuracy, metric_mode=mode)
    return CompareResult(
        root if writes else None,
        target_accuracy,
        shared,
        out_rows,
        records,
        runs,
        table,
        labels,
        mode,
    )


def _read_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _finished_runs(root: Path) -> dict[str, tuple[list[dict[str, Any]], str]]:
    """Runs of the comparison in ``root`` that ended (finished or diverged), by folder name,
    with their records (read back from their ``metrics.jsonl``)."""
    data = json.loads((root / "compare.json").read_text())
    out = {}
    for row in data.get("runs", []):
        name = row.get("run") or row.get("run_dir") or row["label"]
        status = row.get("status", "finished")
        finished = (root / name / "summary.json").is_file()
        if finished or status.startswith("diverged"):
            recs = _read_records(root / name)
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


# ---------------------------------------------------------------------------------- statistics
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
    rows: Sequence[Mapping[str, Any]], metric_mode: str = "max"
) -> tuple[str, bool]:
    """``(field, higher_is_better)``: the validation metric when every finished run has one
    (``val_accuracy``, higher is better; ``val_metric``, lower is better, for
    ``metric_mode="min"``), else ``val_loss``."""
    field = metric_field("val_accuracy", metric_mode)
    finished = [r for r in rows if r.get("status", "finished") == "finished"]
    if finished and all(r["final"].get(field) is not None for r in finished):
        return field, metric_mode == "max"
    return "val_loss", False


def select_lr(
    grid: Sequence[float], rows: Sequence[Mapping[str, Any]], metric_mode: str = "max"
) -> tuple[float | None, list[dict[str, Any]], str]:
    """The grid value with the best seed-mean final validation metric of ``rows`` (one label's
    runs; each with ``lr``, ``status`` and ``final``), the per-value results and the metric's
    name. Best is the largest for ``metric_mode="max"`` (accuracy), the smallest for ``"min"``
    (an error, perplexity) and for the validation loss (without a metric). Test metrics are never
    read. A value with a diverged or missing run is never chosen; ties go to the first value of
    the grid. None when no value has all its runs finished."""
    field, higher = selection_metric(rows, metric_mode)
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
            chosen_lr, results, field = select_lr(grid, have, metric_mode)
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
        fields = [*metric_fields(metric_mode)]
        fields += [k for k in SYSTEM_FIELDS if any(k in r["final"] for r in chosen)]
        item["final"] = {k: mean_std([r["final"].get(k) for r in chosen]) for k in fields}
        best = metric_field("best_test_accuracy", metric_mode)
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
)


def _reported_rows(
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
            for best in ("best_test_accuracy", "best_test_metric"):
                if best in r:
                    r[best] = None
            for key in TARGET_FIELDS:
                r[key] = None
            r["chosen"] = False
        elif r.get("lr") is not None:
            r["chosen"] = True
        out.append(r)
    return out


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
) -> str:
    """``compare.md`` of a comparison with seeds or a learning-rate grid: per label the chosen
    lr and mean ± std (n) over its chosen runs, the cost to reach the target (and how many runs
    reached it), every grid value's validation result, and every run. ``metric_mode="min"``:
    the task's metric is lower-is-better (``test_metric``, ``val_metric``)."""
    word, words, cmp = _metric_words(metric_mode)
    # --system: the simulated wall-clock beside the communication time
    timed = any("simulated_time_s" in lab["final"] for lab in labels)
    head, rule = (" simulated time (s) |", "--:|") if timed else ("", "")
    lines = _heading([lab["label"] for lab in labels], pending)
    lines += [
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
    lines += [
        "",
        f"## To reach test {word} {cmp} {target_accuracy:g} (mean ± std over the runs that did)",
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
    grids = [lab for lab in labels if "lr_grid" in lab]
    if grids:
        lines += [
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
    lines += [
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
    return "\n".join([*lines, *_footer(config)])


def _write_tables(
    root: Path,
    rows: list[dict[str, Any]],
    target_accuracy: float,
    shared: dict[str, Any],
    pending: list[str],
    plan: dict[str, Any],
    specs: Sequence[RunSpec],
    study: bool,
    metric_mode: str = "max",
) -> None:
    data: dict[str, Any] = {
        "target_accuracy": target_accuracy,
        "metric_mode": metric_mode,
        "config": shared,
    }
    if study:
        with warnings.catch_warnings():  # the edge warning is given once, at the end
            warnings.simplefilter("ignore")
            labels = summarize_labels(specs, rows, target_accuracy, plan["lr_grid"], metric_mode)
        reported = _reported_rows(rows, labels)
        data.update(labels=labels, runs=reported, plan=plan, pending=pending)
        table = format_study(
            reported, labels, target_accuracy, shared, pending=pending, metric_mode=metric_mode
        )
    else:
        data.update(runs=rows, plan=plan, pending=pending)
        table = format_table(
            rows, target_accuracy, shared, pending=pending, metric_mode=metric_mode
        )
    _atomic_write(root / "compare.json", json.dumps(data, indent=2) + "\n")
    _atomic_write(root / "compare.md", table)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
