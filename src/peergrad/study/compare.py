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

Layout: this module runs the comparison (:func:`compare`, :func:`validate`); the runs and their
options are in :mod:`peergrad.study.entries`, what they reached in :mod:`peergrad.study.results`,
the Markdown tables in :mod:`peergrad.study.tables` and the files (and ``--resume``) in
:mod:`peergrad.study.files`. Every name they define that this module defined before is still
importable from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from peergrad.algorithms import Algorithm, algorithm_class, check_failures
from peergrad.study.entries import (
    GRID_KEYS,
    LABEL_RE,
    OUTPUT_FILES,
    PER_ENTRY_FIELDS,
    TASK_OPTIONS,
    CompareEntry,
    RunSpec,
    build_entries,
    check_label,
    entry_config,
    grid_of,
    parse_lr_grid,
    parse_seeds,
    plan_runs,
)
from peergrad.study.files import finished_runs, load_plan, read_records, write_tables
from peergrad.study.results import (
    TARGET_FIELDS,
    TEST_KEYS,
    best_of,
    first_at_target,
    mean_std,
    reported_rows,
    select_lr,
    selection_metric,
    summarize_labels,
    summarize_run,
)
from peergrad.study.tables import format_study, format_table
from peergrad.train.build import build_algorithm, system_profile
from peergrad.train.config import PRESET_FIELDS, TrainConfig
from peergrad.train.fields import Range
from peergrad.train.folders import check_compare_folder, clear_compare_files
from peergrad.train.loop import RunResult, prepare, train
from peergrad.train.plots import plot_comparison
from peergrad.train.spelling import field_names
from peergrad.train.task import Task
from peergrad.train.validate import validate as validate_run

__all__ = [
    "GRID_KEYS",
    "LABEL_RE",
    "OUTPUT_FILES",
    "PER_ENTRY_FIELDS",
    "TARGET_FIELDS",
    "TASK_OPTIONS",
    "TEST_KEYS",
    "CompareEntry",
    "CompareResult",
    "RunSpec",
    "best_of",
    "build_entries",
    "check_label",
    "compare",
    "compare_dir_for",
    "entry_config",
    "first_at_target",
    "format_study",
    "format_table",
    "grid_of",
    "load_plan",
    "mean_std",
    "parse_lr_grid",
    "parse_seeds",
    "plan_runs",
    "select_lr",
    "selection_metric",
    "shared_config",
    "summarize_labels",
    "summarize_run",
    "validate",
]

#: ``--val-fraction`` with a learning-rate grid: a validation split to select on.
GRID_SPLIT = Range(0, 0.5, low_open=True)


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
    #: the task's metric direction (``Task.metric_mode``; ``"max"`` for the built-ins but the
    #: text data set's perplexity)
    metric_mode: str = "max"
    #: the word of the metric's fields (``Task.metric_name``): None for the direction's own
    #: (``accuracy`` / ``metric``), ``"perplexity"``
    metric_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The content of ``compare.json`` (without the resume ``plan``)."""
        out = {
            "target_accuracy": self.target_accuracy,
            "metric_mode": self.metric_mode,
            "config": self.config,
            "runs": self.rows,
        }
        if self.metric_name is not None:
            out["metric_name"] = self.metric_name
        if self.labels is not None:
            out["labels"] = self.labels
        return out


def shared_config(base: TrainConfig, task: Task | None = None) -> dict[str, Any]:
    """The configuration every run shares (``compare.json`` ``config``, ``compare.md``'s last
    section); with a user's ``task`` the preset fields the runs do not read (``model``,
    ``dataset``, ``loss`` ...) are left out and ``task`` (:meth:`Task.describe`) is recorded."""
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
    """Everything a comparison checks before its first run; ``ValueError`` (or
    ``FileNotFoundError`` for missing data files) naming the entry. In this order:

    1. the comparison's own arguments (:func:`_check_study`): ``target_accuracy``, the labels,
       ``seeds``, the grids (``--lr`` beside ``--lr-grid``, an entry's lr and its grid, an
       algorithm without ``lr``, ``--val-fraction`` in (0, 0.5] with a grid);
    2. every entry's run configuration (with its task options, at the first seed) by the one
       check of a training configuration, :func:`peergrad.train.validate.validate`, and its
       algorithm at every value of its grid;
    3. each distinct task's set-up (:func:`~peergrad.train.loop.prepare`: joins the process
       group on the distributed engine and checks the world size, loads the data set or builds
       ``task``, builds the model and the sampler), once per distinct set of task options, and
       every algorithm's topology requirements and ``--system`` failures against it.
    """
    _check_study(base, entries, target_accuracy, task, seeds=seeds, lr_grid=lr_grid)
    seed = seeds[0] if seeds else None
    for e in entries:
        with _labelled(e.label):
            validate_run(entry_config(base, e, None, seed=seed), custom_task=task is not None)
            for lr in grid_of(e, lr_grid) or ():
                build_algorithm(entry_config(base, e, None, seed=seed, lr=lr))
    comms: dict[str, Any] = {}
    for e in entries:
        config = entry_config(base, e, None, seed=seed)
        key = json.dumps(e.task, sort_keys=True)
        with _labelled(e.label):
            if key not in comms:
                comms[key] = prepare(config, task).comm
            algorithm = build_algorithm(config)
            algorithm.check_topology(comms[key])
            profile = system_profile(config)  # --system failures this algorithm cannot take
            if profile is not None:
                check_failures(algorithm, comms[key].topology, profile)


@contextlib.contextmanager
def _labelled(label: str) -> Iterator[None]:
    """A ``ValueError`` raised inside names the run label: ``LABEL: message``."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None


def _check_study(
    base: TrainConfig,
    entries: Sequence[CompareEntry],
    target_accuracy: float,
    task: Task | None,
    *,
    seeds: Sequence[int] | None,
    lr_grid: Sequence[float] | None,
) -> None:
    """The checks of :func:`validate` that concern the comparison, not one run."""
    custom_metric = (
        task is not None and (callable(task.metric) or task.metric == "perplexity")
    ) or (task is None and _text_preset(base))
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
        if base.lr is not None:
            raise ValueError("--lr and --lr-grid both set the learning rate; give one")
    tuned = [e for e in entries if grid_of(e, lr_grid) is not None]
    for e in tuned:
        if "lr" not in algorithm_class(e.algorithm).hyperparameters():
            raise ValueError(f"{e.label}: {e.algorithm} has no lr option to tune with a grid")
        if "lr" in e.options and e.lr_grid is not None:
            raise ValueError(
                f"--set-for {e.label}:lr and --set-for {e.label}:lr-grid both set its lr; give one"
            )
    if tuned and not GRID_SPLIT.accepts(base.val_fraction):
        raise ValueError(
            f"--val-fraction must be {GRID_SPLIT.text} with a learning-rate grid (it selects "
            f"on the validation split), got {base.val_fraction!r}"
        )


def _text_preset(base: TrainConfig) -> bool:
    """The built-in preset on a text data set with its token cross-entropy: its metric is the
    perplexity (lower is better, any number >= 1)."""
    from peergrad.train.names import TEXT_DATASET_NAMES

    return base.dataset in TEXT_DATASET_NAMES and base.loss == "cross-entropy"


def check_config_fields(config: TrainConfig) -> None:
    """Deprecated: :func:`peergrad.train.validate.validate` (which this calls) checks every
    option of a run's configuration."""
    warnings.warn(
        "peergrad.study.compare.check_config_fields is deprecated: use "
        "peergrad.train.validate.validate",
        DeprecationWarning,
        stacklevel=2,
    )
    validate_run(config)


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


def _title(base: TrainConfig, task: Task | None = None) -> str:
    what = task.name if task is not None else f"{base.dataset}/{base.model}"
    return f"{what} on {base.topology} (n={base.workers})"


@field_names
def compare(
    base: TrainConfig,
    entries: Sequence[CompareEntry | str | type[Algorithm] | Algorithm],
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
    and write the comparison (see the module docstring) to ``out_dir`` when ``write``. An
    entry may also be a label (``"dpsgd@atc"``, ``"package.module:Class"``), an algorithm
    class or an instance (labelled by its ``name``; an instance's fields are its options),
    made into a :class:`CompareEntry` by :func:`~peergrad.study.entries.build_entries`.
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
    entries_: list[CompareEntry] = [
        e if isinstance(e, CompareEntry) else build_entries([e])[0] for e in entries
    ]
    entries = entries_
    seeds = parse_seeds(seeds) if seeds is not None else None
    lr_grid = parse_lr_grid(lr_grid) if lr_grid is not None else None
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
    plan = _Plan(base, entries, seeds, lr_grid, target_accuracy, task, run_plots)
    runs = _Runs(plan, root, write=write, writes=write and is_main, resume=resume)
    for i, spec in enumerate(runs.specs):
        runs.run(i, spec, on_run=on_run, topology_given=topology_given, overwrite=overwrite)
    return runs.result()


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a comparison runs (``compare.json`` ``plan``, what ``--resume`` reruns)."""

    base: TrainConfig
    entries: list[CompareEntry]
    seeds: tuple[int, ...] | None
    lr_grid: tuple[float, ...] | None
    target_accuracy: float
    task: Task | None
    run_plots: bool

    @property
    def study(self) -> bool:
        """Seeds or a grid: the tables give each label's mean ± std and chosen lr."""
        tuned = any(grid_of(e, self.lr_grid) is not None for e in self.entries)
        return self.seeds is not None or tuned

    @property
    def metric_mode(self) -> str:
        if self.task is not None:
            return self.task.metric_mode
        return "min" if self._text_preset() else "max"

    @property
    def metric_name(self) -> str | None:
        """``"perplexity"`` for a task with that metric (a user's, or the built-in text data
        set's with ``--loss cross-entropy``); None: the direction's own word."""
        if self.task is not None:
            return "perplexity" if self.task.metric_name == "perplexity" else None
        return "perplexity" if self._text_preset() else None

    def _text_preset(self) -> bool:
        return _text_preset(self.base)

    def to_dict(self) -> dict[str, Any]:
        """``compare.json`` ``plan`` (with a user's task :func:`load_plan` refuses it: the
        command line cannot rebuild a Python Task)."""
        plan: dict[str, Any] = {
            "config": self.base.to_dict(),
            "entries": [e.to_dict() for e in self.entries],
            "seeds": list(self.seeds) if self.seeds is not None else None,
            "lr_grid": list(self.lr_grid) if self.lr_grid is not None else None,
            "target_accuracy": self.target_accuracy,
            "run_plots": self.run_plots,
        }
        if self.task is not None:
            plan["task"] = self.task.describe()
        return plan


class _Runs:
    """The runs of one :func:`compare` call (after validation), their rows and its files.

    ``write``: the runs write their folders; ``writes``: this process writes the comparison's
    files (rank 0); ``resume``: runs that ended (read back from ``root``) are kept."""

    def __init__(self, plan: _Plan, root: Path, *, write: bool, writes: bool, resume: bool):
        self.plan, self.root, self.resume = plan, root, resume
        self.write, self.writes = write, writes
        self.specs = plan_runs(plan.entries, plan.seeds, plan.lr_grid)
        self.shared = shared_config(plan.base, plan.task)
        self.done = finished_runs(root) if resume else {}
        self.rows: list[dict[str, Any]] = []
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.runs: dict[str, RunResult] = {}

    def run(
        self,
        i: int,
        spec: RunSpec,
        *,
        on_run: Callable[[int, CompareEntry, TrainConfig], None] | None,
        topology_given: bool | None,
        overwrite: bool,
    ) -> None:
        """Run ``spec`` (the ``i``-th run; kept as it was when it ended before a resume), add
        its row and rewrite the tables."""
        plan, entry = self.plan, spec.entry
        run_dir = self.root / spec.name
        out = run_dir if self.write else None
        config = entry_config(plan.base, entry, out, seed=spec.seed, lr=spec.lr)
        if spec.name in self.done:
            recs, status = self.done[spec.name]
        else:
            if on_run is not None:
                on_run(i, entry, config)
            recs, status = self._train(config, run_dir, spec.name, topology_given, overwrite)
        self.records[spec.name] = recs
        hyperparameters = self.runs[spec.name].hyperparameters if spec.name in self.runs else None
        name = spec.name if self.write else None
        target, mode = plan.target_accuracy, plan.metric_mode
        row = summarize_run(
            entry,
            config,
            recs,
            target,
            name,
            hyperparameters,
            metric_mode=mode,
            metric_name=plan.metric_name,
        )
        if plan.study:
            row.update(run=spec.name, seed=config.seed, lr=spec.lr, status=status)
        self.rows.append(row)
        if self.writes:
            self._write_tables([sp.name for sp in self.specs[i + 1 :]])

    def _train(
        self,
        config: TrainConfig,
        run_dir: Path,
        name: str,
        topology_given: bool | None,
        overwrite: bool,
    ) -> tuple[list[dict[str, Any]], str]:
        """Train one run: its records and status (``finished``, or ``diverged: ...`` in a
        comparison with seeds or a grid, which goes on). On a resume, a run with a checkpoint
        continues from it, one without starts again."""
        from peergrad.train.guard import NonFiniteError

        kwargs: dict[str, Any] = {"overwrite": overwrite}
        if self.resume and self.write and (run_dir / "config.json").is_file():
            resumable = (run_dir / "checkpoint.json").is_file()
            kwargs = {"resume": True} if resumable else {"overwrite": True}
        collected: list[dict[str, Any]] = []
        try:
            result = train(
                config,
                task=self.plan.task,
                write=self.write,
                topology_given=topology_given,
                on_record=collected.append,
                plots=self.plan.run_plots,
                **kwargs,
            )
        except NonFiniteError as exc:
            if not self.plan.study:
                raise
            return read_records(run_dir) or collected, f"diverged: {exc}"
        self.runs[name] = result
        self.writes = result.out_dir is not None  # rank 0 only on the distributed engine
        return result.records, "finished"

    def _write_tables(self, pending: list[str]) -> None:
        plan = self.plan
        write_tables(
            self.root,
            self.rows,
            plan.target_accuracy,
            self.shared,
            pending,
            plan.to_dict(),
            self.specs,
            plan.study,
            plan.metric_mode,
            plan.metric_name,
        )

    def result(self) -> CompareResult:
        """Every run done: the final tables, ``compare.json`` / ``compare.md`` and the plots."""
        plan, target, mode = self.plan, self.plan.target_accuracy, self.plan.metric_mode
        word = plan.metric_name
        labels = None
        if plan.study:
            labels = summarize_labels(self.specs, self.rows, target, plan.lr_grid, mode, word)
        out_rows = reported_rows(self.rows, labels) if labels is not None else self.rows
        table = (
            format_study(out_rows, labels, target, self.shared, metric_mode=mode, metric_name=word)
            if labels is not None
            else format_table(self.rows, target, self.shared, metric_mode=mode, metric_name=word)
        )
        if self.writes:
            self._write_tables([])
            title = f"{', '.join(e.label for e in plan.entries)}: {_title(plan.base, plan.task)}"
            groups: dict[str, Any] = {sp.name: self.records[sp.name] for sp in self.specs}
            if labels is not None:
                groups = {lab["label"]: [self.records[n] for n in lab["runs"]] for lab in labels}
            plot_comparison(
                groups,
                self.root,
                title,
                target_accuracy=target,
                metric_mode=mode,
                metric_name=word,
            )
        return CompareResult(
            self.root if self.writes else None,
            target,
            self.shared,
            out_rows,
            self.records,
            self.runs,
            table,
            labels,
            mode,
            word,
        )
