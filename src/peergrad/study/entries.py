"""The runs of a comparison: labels and their options (:class:`CompareEntry`,
:func:`build_entries`), seeds and learning-rate grids (:func:`parse_seeds`,
:func:`parse_lr_grid`), each run's configuration (:func:`entry_config`) and the plan of every
run (:func:`plan_runs`). See :mod:`peergrad.study.compare`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from peergrad.algorithms import Algorithm, algorithm_class, algorithm_spec, resolve_algorithm
from peergrad.train.config import ALGORITHM_FIELDS, PER_LABEL_FIELDS, TrainConfig
from peergrad.train.fields import field_type

__all__ = [
    "GRID_KEYS",
    "LABEL_RE",
    "OUTPUT_FILES",
    "PER_ENTRY_FIELDS",
    "TASK_OPTIONS",
    "CompareEntry",
    "RunSpec",
    "build_entries",
    "check_label",
    "entry_config",
    "grid_of",
    "parse_lr_grid",
    "parse_seeds",
    "plan_runs",
]

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
    #: a registered name, ``package.module:Class``, or (from Python) a class or an instance
    algorithm: str | Any
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
        """What ``compare.json`` records: a class or instance as its spec
        (:func:`~peergrad.algorithms.algorithm_spec`), an instance's fields under the options
        given."""
        options = dict(self.options)
        if isinstance(self.algorithm, Algorithm):
            options = {**self.algorithm.options(), **options}
        return {
            "label": self.label,
            "algorithm": algorithm_spec(self.algorithm),
            "options": options,
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


#: :class:`TrainConfig` fields that one label may change with ``--set-for LABEL:KEY=VALUE``
#: (``-`` or ``_`` in KEY), e.g. ``--set-for dpsgd@exp:topology=one-peer-exponential``: those
#: whose metadata says ``per_label`` (:data:`peergrad.train.config.PER_LABEL_FIELDS`). The
#: others are shared: the engine and data source (every run reads the same data), the seed
#: (``--seeds``), ``val_fraction`` (one split for every label), the algorithm's own fields
#: (``lr``, ``momentum``, ``weight_decay`` are algorithm options there) and the output ones.
TASK_OPTIONS: tuple[str, ...] = PER_LABEL_FIELDS
#: ``--set-for LABEL:lr-grid=...``: that label's learning-rate grid.
GRID_KEYS = ("lr-grid", "lr_grid")


def _convert_task_value(key: str, text: Any) -> Any:
    """``text`` (a string from ``--set-for``, or a value) as the type of ``TrainConfig.key``
    (from its annotation: int, float or text; ``none`` for an optional field); ``ValueError``
    naming the option and the expected type."""
    if not isinstance(text, str):
        return text
    optional = TrainConfig.__dataclass_fields__[key].default is None
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    kind = field_type(TrainConfig, key)
    kind = kind if kind in (int, float) else str
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


def check_label(label: str) -> None:
    if not LABEL_RE.fullmatch(label):
        raise ValueError(
            f"bad run label {label!r}: use letters, digits and . _ @ + = - (starting with a "
            "letter or digit, at most 100 characters), e.g. dpsgd or dpsgd@atc"
        )
    if label in OUTPUT_FILES:
        raise ValueError(f"run label {label!r} is the name of an output file of compare")


def build_entries(
    algorithms: str | Sequence[str | type[Algorithm] | Algorithm],
    common: Mapping[str, Any] | None = None,
    per_label: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[CompareEntry]:
    """Entries from labels (``"dpsgd,allreduce,dpsgd@atc"`` or a list of labels).

    An item may also name a user's algorithm: ``package.module:Class`` (``@suffix`` allowed)
    or, from Python, a class or an instance; its label is the class's ``name`` (plus the
    suffix), which ``--set-for LABEL:KEY=VALUE`` uses.

    ``common`` options go to every entry whose algorithm has that option; an option that none of
    them has is an error. ``per_label[label]`` options go to that entry and override ``common``.
    Raises ``ValueError`` for a bad or repeated label, an unknown algorithm, or a ``per_label``
    key that is not one of the labels. (Option values are checked by :func:`validate`.)
    """
    items = algorithms.split(",") if isinstance(algorithms, str) else list(algorithms)
    items = [item.strip() if isinstance(item, str) else item for item in items]
    if not items or any(isinstance(item, str) and not item for item in items):
        raise ValueError(
            f"--algorithms expects a comma-separated list of names, got "
            f"{','.join(str(i) for i in items)!r}"
        )
    labels: list[str] = []
    specs: list[Any] = []  # what names each label's algorithm
    for item in items:
        spec: Any
        if isinstance(item, str) and ":" not in item:
            label, spec = item, item.partition("@")[0]
        else:  # package.module:Class[@suffix], a class or an instance: labelled by its name
            spec, at, suffix = item.partition("@") if isinstance(item, str) else (item, "", "")
            label = resolve_algorithm(spec).name + at + suffix
        check_label(label)
        labels.append(label)
        specs.append(spec)
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(
            f"run label(s) {', '.join(repeated)} given twice; to run an algorithm twice give "
            "each run its own label, e.g. dpsgd,dpsgd@atc"
        )
    entries = [CompareEntry(label, spec) for label, spec in zip(labels, specs, strict=True)]
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


def grid_of(entry: CompareEntry, lr_grid: Sequence[float] | None) -> tuple[float, ...] | None:
    """The learning rates ``entry`` runs: its own grid, else the comparison's unless the entry
    fixes ``lr`` itself (``--set-for LABEL:lr=...``), else None (one run at its lr)."""
    if entry.lr_grid is not None:
        return tuple(entry.lr_grid)
    if lr_grid is not None and "lr" not in entry.options:
        return tuple(lr_grid)
    return None


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
