"""Running a training job: the run's pieces and :func:`train`.

:func:`train` trains a :class:`~peergrad.train.task.Task` (a built-in preset when none is given:
:func:`~peergrad.train.task.task_from_config`) with ``config``'s algorithm on its engine. It is put
together from three small parts, each in its own file:

* the task, what is trained: model, data, loss, metric (:mod:`peergrad.train.task`, data reading in
  :mod:`peergrad.data.source`);
* the step loop, the same on both engines (:mod:`peergrad.train.steps`);
* the recorder: metrics, checkpoints, progress, plots and the NaN/Inf guard
  (:mod:`peergrad.train.recorder`, :mod:`peergrad.train.guard`).

This module checks the configuration (:func:`peergrad.train.validate.validate`, before any work),
builds the algorithm, communicator, task, sampler and schedule (:func:`prepare`, with
:mod:`peergrad.train.build`), and runs them.

Reliability: with ``checkpoint_every`` the run saves resumable checkpoints
(:mod:`peergrad.train.checkpoint`) and ``train(..., resume=True)`` continues one exactly; every
step a NaN/Inf guard (:func:`nonfinite_codes`) stops the run with :class:`NonFiniteError` at the
first step where some worker's loss or parameters stop being finite (the algorithm state is
checked before every checkpoint; on the distributed engine the ranks compare notes every
``NONFINITE_SYNC_EVERY`` steps and before every record and checkpoint).

Names that moved (``resolve_device``, ``system_profile``, ``build_algorithm``, ``DTYPES`` ... to
:mod:`peergrad.train.build`, ``ALGORITHM_FIELDS`` to :mod:`peergrad.train.config`, ``ENGINES``
and ``ROOT_DATASETS`` to :mod:`peergrad.train.names`) are still importable from here, with a
``DeprecationWarning``; ``validate_config`` is :func:`peergrad.train.validate.validate`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from peergrad.algorithms import Algorithm, check_failures
from peergrad.algorithms.base import bind_run
from peergrad.algorithms.registry import algorithm_spec
from peergrad.comm.base import Communicator
from peergrad.data.source import BatchGather
from peergrad.topology import torus_shape
from peergrad.train import build
from peergrad.train import checkpoint as ckpt
from peergrad.train.comms import clocked_communicator, gather_rows, make_communicator
from peergrad.train.config import PRESET_FIELDS, TrainConfig
from peergrad.train.folders import check_run_folder, clear_run_files
from peergrad.train.guard import (
    NONFINITE_SYNC_EVERY,
    NonFiniteError,
    TrainingInterrupted,
    describe_nonfinite,
    interrupt_as,
    nonfinite_codes,
    sigint_between_steps,
)
from peergrad.train.recorder import (
    METRIC_FIELDS,
    TRAIN_EVAL_MAX,
    WALL_CLOCK_FIELDS,
    Evaluator,
    Recorder,
    count_targets,
    format_summary,
)
from peergrad.train.sampler import ShardSampler, worker_seed
from peergrad.train.session import Session
from peergrad.train.spelling import field_names
from peergrad.train.steps import run_steps
from peergrad.train.task import BuiltTask, Task, build_task, task_from_config
from peergrad.train.validate import validate

__all__ = [
    "METRIC_FIELDS",
    "NONFINITE_SYNC_EVERY",
    "PRESET_FIELDS",
    "TRAIN_EVAL_MAX",
    "WALL_CLOCK_FIELDS",
    "BatchGather",
    "Evaluator",
    "NonFiniteError",
    "Prepared",
    "RunResult",
    "Task",
    "TrainingInterrupted",
    "describe_nonfinite",
    "format_summary",
    "nonfinite_codes",
    "prepare",
    "run_dir_for",
    "setting_warnings",
    "train",
]

#: Names that moved out of this module, with their new module: importing them from here still
#: works and warns (:func:`__getattr__`).
MOVED: dict[str, str] = {
    "ALGORITHM_FIELDS": "peergrad.train.config",
    "DEVICES_HELP": "peergrad.train.build",
    "DTYPES": "peergrad.train.build",
    "ENGINES": "peergrad.train.names",
    "ROOT_DATASETS": "peergrad.train.names",
    "build_algorithm": "peergrad.train.build",
    "resolve_device": "peergrad.train.build",
    "system_profile": "peergrad.train.build",
}


def __getattr__(name: str) -> Any:
    """The names of :data:`MOVED`, from their new module, with a ``DeprecationWarning``."""
    module = MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"peergrad.train.loop.{name} moved to {module}.{name}; import it from there",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)


def validate_config(config: TrainConfig, *, custom_task: bool = False) -> None:
    """Deprecated: :func:`peergrad.train.validate.validate` (which this calls)."""
    warnings.warn(
        "peergrad.train.loop.validate_config is deprecated: use peergrad.train.validate.validate",
        DeprecationWarning,
        stacklevel=2,
    )
    validate(config, custom_task=custom_task)


def check_names(config: TrainConfig) -> None:
    """Deprecated: part of :func:`peergrad.train.validate.validate`
    (:func:`peergrad.train.checks.check_names`, which this calls)."""
    from peergrad.train.checks import check_names as check

    warnings.warn(
        "peergrad.train.loop.check_names is deprecated: use peergrad.train.validate.validate",
        DeprecationWarning,
        stacklevel=2,
    )
    check(config, custom_task=True)


@dataclasses.dataclass
class RunResult:
    """What :func:`train` returns. ``hyperparameters``: every option of the algorithm as it ran
    (defaults and run-dependent values included), as in ``config.json``. ``buffers``: the model
    buffers of this process's workers, ``{name: [w, ...]}`` (empty for a model without any)."""

    out_dir: Path | None
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    x: Tensor
    state: Any
    comm: Communicator
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    buffers: dict[str, Tensor] = dataclasses.field(default_factory=dict)


def run_dir_for(
    config: TrainConfig, algorithm: Algorithm | None = None, label: str | None = None
) -> Path:
    """``config.out``, or ``runs/<algorithm>-<topology><n>-<dataset>-<partition>-seed<seed>``
    with the next free suffix (``-2``, ``-3``, ...): a default name never reuses a folder. The
    topology is left out (``<algorithm>-n<n>-...``) when ``algorithm`` does not use it.
    ``label`` replaces ``<dataset>`` (a user task's ``name``; ``/`` and ``:`` become ``_``)."""
    if config.out:
        return Path(config.out)
    label = (label or config.dataset).replace("/", "_").replace(":", "_")
    where = (
        f"n{config.workers}"
        if algorithm is not None and not algorithm.uses_topology()
        else f"{config.topology}{config.workers}"
    )
    name = algorithm.name if algorithm is not None else config.algorithm_label
    base = Path("runs") / f"{name}-{where}-{label}-{config.partition}-seed{config.seed}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


@dataclasses.dataclass
class Prepared:
    """Everything a run builds before its first step (all checks done).

    ``task``: the :class:`~peergrad.train.task.BuiltTask` (module, :class:`WorkerModel`, data on the
    run's device, shards); ``total``: the run's last step; ``schedule``: the
    :class:`~peergrad.train.schedules.LRSchedule` over ``total`` steps."""

    algorithm: Algorithm
    comm: Communicator
    task: BuiltTask
    sampler: ShardSampler
    device: torch.device
    dtype: torch.dtype
    schedule: Any = None
    total: int = 0
    eval_every: int = 1
    targets_per_sample: int = 1  # of the first batch's first sample (L for token windows)


def prepare(config: TrainConfig, task: Task | None = None) -> Prepared:
    """Validate ``config`` (:func:`~peergrad.train.validate.validate`) and build the run's
    pieces, in the order that fails fastest.

    ``task``: what to train (None: the built-in preset of ``config.model`` / ``config.dataset``,
    :func:`~peergrad.train.task.task_from_config`). Raises ``ValueError`` / ``TypeError``
    (``FileNotFoundError`` for missing data files) naming the option or the task's attribute
    before any training starts: among others a Dataset whose items are not ``(input, target)``
    pairs, and a model, loss or metric that fails on a first batch
    (:meth:`~peergrad.train.params.WorkerModel.check`). On the distributed engine this joins the
    process group.
    """
    from peergrad.train.schedules import LRSchedule

    if task is not None and not isinstance(task, Task):
        raise TypeError(f"task must be a peergrad.Task, got {type(task).__name__}")
    validate(config, custom_task=task is not None)
    device, dtype = build.resolve_device(config.device), build.DTYPES[config.dtype]
    algorithm = build.build_algorithm(config)
    comm = make_communicator(config, device)
    algorithm.check_topology(comm)
    profile = build.system_profile(config)
    if profile is not None:  # failures the algorithm (or a directed topology) cannot take
        check_failures(algorithm, comm.topology, profile)
    worker_ids = comm.worker_ids.tolist()
    built = build_task(
        task if task is not None else task_from_config(config), config, device, dtype
    )
    n_train = len(built.train)
    per_epoch = n_train / (config.workers * config.batch_size)
    algorithm = bind_run(
        algorithm,
        segments=built.layout.numels,
        shapes=built.layout.shapes,
        batches_per_epoch=per_epoch,
    )
    sampler = ShardSampler(built.shards, config.batch_size, config.seed, worker_ids)
    first = built.shards[worker_ids[0]][: config.batch_size]
    first_batch = built.train.read(first.tolist())
    built.model.check(*first_batch)
    if profile is not None:
        comm = clocked_communicator(config, comm, profile, built, first_batch)
    total = config.steps or max(1, round(config.epochs * per_epoch))
    eval_every = config.eval_every or max(1, round(per_epoch / 2))
    schedule = LRSchedule.parse(
        config.lr_schedule, warmup_steps=config.warmup_steps, total_steps=total
    )
    per_sample = count_targets(torch.as_tensor(first_batch[1][0]))
    return Prepared(
        algorithm, comm, built, sampler, device, dtype, schedule, total, eval_every, per_sample
    )


def setting_warnings(
    config: TrainConfig, algorithm: Algorithm, *, topology_given: bool | None = None
) -> list[str]:
    """One line per degenerate setting (the run goes ahead):

    - ``--topology`` given to an algorithm that does not use it (``topology_given``; None means
      "differs from the default topology");
    - ``torus`` with a prime number of workers: the most square torus is 1 x n, a ring;
    - a gossip algorithm with one worker: there is no one to gossip with.
    """
    out = []
    gossips = algorithm.uses_topology()
    if topology_given is None:
        topology_given = config.topology != TrainConfig.topology
    if topology_given and not gossips:
        out.append(
            f"--topology {config.topology} is ignored: {algorithm.name} averages exactly and "
            "uses no topology"
        )
    n = config.workers
    if gossips and config.topology == "torus" and n > 1 and torus_shape(n)[0] == 1:
        out.append(
            f"--topology torus with --workers {n}: {n} is prime, so the torus is 1x{n}, which "
            "is a ring; choose a worker count with two factors for a 2-D torus"
        )
    if gossips and n == 1:
        out.append(
            f"--workers 1: {algorithm.name} gossips over --topology {config.topology}, but one "
            "worker has no one to gossip with; this is single-worker training"
        )
    return out


def progress_disabled(progress: bool | None, is_main: bool = True) -> bool | None:
    """tqdm's ``disable`` for ``config.progress``: None (auto) gives tqdm's ``disable=None``,
    which hides the bar when its stream (stderr) is not a terminal, so a log file gets no bar
    (a bar redrawn thousands of times is one line of thousands of characters there); True
    forces the bar (``--progress``), False hides it (``--no-progress``). Only rank 0 draws. (In
    a Jupyter notebook ``tqdm.auto`` draws its widget, which auto mode shows.)"""
    if not is_main or progress is False:
        return True
    return False if progress else None


def task_record(recorded: dict[str, Any], built: BuiltTask) -> dict[str, Any]:
    """``config.json`` of a run on a user's Task: ``recorded`` (:meth:`TrainConfig.record`)
    without :data:`PRESET_FIELDS`, which the run did not use, and with ``task``: the task's
    name, model class and parameter counts, data sizes, loss, metric and ``metric_mode``
    (:meth:`Task.describe`). ``peergrad train --resume`` reads ``task`` to refuse such a run
    (the CLI cannot rebuild a Python object)."""
    out = {k: v for k, v in recorded.items() if k not in PRESET_FIELDS}
    info = built.task.describe(built.module)
    info["train_size"] = len(built.train)
    info["test_size"] = len(built.test) if built.test is not None else None
    info["val_size"] = len(built.val) if built.val is not None else None
    out["task"] = info
    return out


def check_resumed_algorithm(config: TrainConfig, hyperparameters: dict[str, Any]) -> None:
    """``--resume``: the algorithm is the run's. ``config.json`` in ``config.out`` records the
    algorithm's spec (a name or ``package.module:Class``) and its hyper-parameters; the class
    the spec imports now must have the same hyper-parameter names (a changed class cannot
    restore the saved state exactly). ``ValueError``, one line, naming the class."""
    path = Path(str(config.out)) / "config.json"
    if not config.out or not path.is_file():
        return
    saved = json.loads(path.read_text())
    spec, before = saved.get("algorithm"), saved.get("hyperparameters")
    now = algorithm_spec(config.algorithm)
    if spec is not None and spec != now:
        raise ValueError(
            f"--resume: the run was made with algorithm {spec!r}, this run's is {now!r}; a "
            "resumed run keeps its algorithm"
        )
    if isinstance(before, dict) and sorted(before) != sorted(hyperparameters):
        raise ValueError(
            f"--resume: algorithm {now!r} differs from the class the run was made with: its "
            f"hyper-parameters are {sorted(hyperparameters)}, the run recorded {sorted(before)}"
        )


@field_names
def train(
    config: TrainConfig,
    task: Task | None = None,
    *,
    write: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    overwrite: bool = False,
    topology_given: bool | None = None,
    plots: bool = True,
) -> RunResult:
    """Train ``task`` with ``config`` on its engine; write the run folder (rank 0) when ``write``.
    ``plots``: draw the run folder's two PNGs at the end (``peergrad compare`` leaves them out
    unless ``--run-plots``; ``peergrad plot RUN_DIR`` draws them later).

    ``task``: a :class:`peergrad.Task` (any ``nn.Module``, Dataset or tensors, loss and metric);
    ``config.model`` and ``config.dataset`` are then not read, and ``task.name`` labels the run
    folder. None trains the built-in preset of ``config.model`` / ``config.dataset``
    (:func:`~peergrad.train.task.task_from_config`).

    Run folder: ``config.out``, or a new ``runs/<name>`` (:func:`run_dir_for`). A ``config.out``
    that already holds a run is refused (``ValueError`` naming ``--resume`` and
    ``--overwrite``) unless ``overwrite``, which removes the earlier run's files once every
    check has passed. ``config.json`` records the config and the algorithm's resolved
    ``hyperparameters``. Degenerate settings (:func:`setting_warnings`; ``topology_given`` says
    whether the user chose ``config.topology``) each give one ``UserWarning``.

    On the distributed engine (``config.engine == "distributed"``, under torchrun) this process is
    worker ``rank``: it reads only the minibatches the simulated engine gives that worker (from
    its own shard), starts from rank 0's initial model, and the returned ``x`` is all workers'
    parameters ``[n, D]`` on rank 0 (its own row elsewhere).

    Model buffers (BatchNorm running statistics) are kept per worker, ``[w, ...]``, updated by
    each worker's own forward; ``config.buffers == "average"`` replaces the floating-point ones by
    their mean over the workers after every step in which the algorithm communicated (one more
    all-reduce, accounted). The averaged model x̄ is evaluated with the mean of the workers'
    buffers. Random layers (Dropout) draw from torch's global generator, which the run seeds from
    ``config.seed`` (per rank on the distributed engine) and checkpoints save.

    Checkpoints (:mod:`peergrad.train.checkpoint`): with ``config.checkpoint_every = N`` a
    checkpoint is saved into the run folder every N steps and after the last step. ``resume=True``
    continues the run in ``config.out`` from its last checkpoint (the config and task must be the
    run's, see :data:`peergrad.train.config.RESUMABLE_CHANGES`); the result equals an
    uninterrupted run. ``stop_after=k`` stops after step k (after its checkpoint) as a crash
    would: no summary, no plots.

    Raises ``ValueError`` (or ``TypeError``) for a bad configuration, task or checkpoint (before
    any step) and :class:`NonFiniteError` when some worker's loss or parameters (or, before a
    checkpoint, its algorithm state) stop being finite: nothing from that step on is recorded or
    saved, so the last checkpoint stays the last good state. Ctrl-C during the steps raises
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) naming the step reached and the last
    checkpoint.
    """
    if config.elastic:  # torchft: peergrad.train.elastic
        return _train_elastic(config, task, write, on_record, resume, stop_after, overwrite, plots)
    writes_out = _check_run_arguments(config, write, resume, stop_after, overwrite)
    prep = prepare(config, task)
    session = _session(config, prep)
    is_main = int(prep.comm.worker_ids[0]) == 0
    if is_main:
        for line in setting_warnings(config, session.algorithm, topology_given=topology_given):
            warnings.warn(line, UserWarning, stacklevel=2)
    hyperparameters = session.algorithm.options()
    if resume:
        check_resumed_algorithm(config, hyperparameters)
    _claim_folder(config, prep.comm, writes_out, overwrite=overwrite, main=is_main)
    recorder = _recorder(config, prep, session, task, write and is_main, on_record)
    start = recorder.resume() if resume else 0
    recorded = config.record(hyperparameters)
    _start_files(recorder, recorded, prep.task, task is not None, fresh=is_main and not resume)
    last = _run(config, session, recorder, prep, start, stop_after, resume=resume, main=is_main)
    summary = recorder.summary()
    x_all = gather_rows(session.x, prep.comm)
    if last >= prep.total:
        title = f"{config.algorithm_label} on {config.topology} (n={config.workers})"
        recorder.finish(summary, title, plots=plots)
    out = (recorder.out_dir, recorder.records, summary, x_all, session.state, prep.comm)
    return RunResult(*out, hyperparameters, session.buffers)


def _train_elastic(
    config: TrainConfig,
    task: Task | None,
    write: bool,
    on_record: Callable[[dict[str, Any]], None] | None,
    resume: bool,
    stop_after: int | None,
    overwrite: bool,
    plots: bool,
) -> RunResult:
    """:func:`train` on the elastic engine (:mod:`peergrad.train.elastic`): ``x`` of the result
    is this worker's row; ``out_dir`` the run folder on the worker that wrote it last."""
    from peergrad.train import elastic

    elastic.check_elastic_config(config, resume=resume, stop_after=stop_after, write=write)
    prep = prepare(config, task)
    session = _session(config, prep)
    run_dir = Path(config.out) if write and config.out else None
    recorder = _recorder(config, prep, session, task, False, on_record)
    run = elastic.ElasticRun(config, session, recorder, run_dir)
    elastic.check_not_finished(run_dir, overwrite=overwrite)
    start = run.comm.join()  # 0: a fresh run; > 0: rejoined, with a live peer's state (run.load)
    hyperparameters = session.algorithm.options()

    def first_files() -> None:
        if run_dir is not None:
            if overwrite:
                clear_run_files(str(run_dir))
            recorder.out_dir = run_dir
            recorded = config.record(hyperparameters)
            _start_files(recorder, recorded, prep.task, task is not None, True)

    if start == 0:

        def check() -> None:
            if run_dir is not None:
                check_run_folder(str(run_dir), overwrite=overwrite)

        elastic.start_fresh(config, session, check_folder=check, write_first_files=first_files)
    session.read = prep.task.train.reader(prep.sampler)
    with tqdm(total=prep.total, initial=start, dynamic_ncols=True,
              disable=progress_disabled(config.progress, run.is_writer)) as bar:
        last = run.run(prep.total, bar, record_first=start == 0)
    summary = recorder.summary()
    if last >= prep.total and run.is_writer:
        recorder.out_dir = run_dir
        title = f"{config.algorithm_label} on {config.topology} (n={config.workers}, elastic)"
        recorder.finish(summary, title, plots=plots)
    recorder.close()
    run.comm.shutdown()
    out = (run_dir if run.is_writer else None, recorder.records, summary, session.x)
    return RunResult(*out, session.state, run.comm, hyperparameters, session.buffers)


def _check_run_arguments(
    config: TrainConfig, write: bool, resume: bool, stop_after: int | None, overwrite: bool
) -> bool:
    """The checks of :func:`train`'s own arguments, and of the run folder ``config.out`` when
    the run writes there (``ValueError`` when it holds a run and not ``overwrite``); returns
    whether it does (a new run with ``--out``, writing its files or its checkpoints)."""
    if resume and not config.out:
        raise ValueError("--resume needs the run folder (config.out)")
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1, got {stop_after!r}")
    if config.checkpoint_every is not None and not config.out and not write:
        raise ValueError("--checkpoint-every needs a run folder: pass --out DIR (config.out)")
    writes_out = bool(config.out) and not resume and (write or config.checkpoint_every is not None)
    if writes_out:
        check_run_folder(str(config.out), overwrite=overwrite)
    return writes_out


def _session(config: TrainConfig, prep: Prepared) -> Session:
    """The run's state before its first step: every worker starts from the task's ``x0`` (on
    the distributed engine from rank 0's) with fresh buffers, and torch's global generator (that
    random layers draw from) is seeded for the run (per rank on the distributed engine)."""
    from peergrad.train.params import average_buffers

    comm, model = prep.comm, prep.task.model
    worker_ids = comm.worker_ids.tolist()
    distributed = config.engine == "distributed"
    x = prep.task.x0.expand(len(worker_ids), -1).clone()
    buffers = model.init_buffers(len(worker_ids))
    if distributed and not config.elastic:  # every rank starts from rank 0's model (elastic:
        # after the first quorum, peergrad.train.elastic)
        comm.broadcast(x)  # type: ignore[attr-defined]
        for b in buffers.values():
            comm.broadcast(b)  # type: ignore[attr-defined]
    n = config.workers
    torch.manual_seed(worker_seed(config.seed, n + (1 + worker_ids[0] if distributed else 0)))
    if len(worker_ids) == 1 and distributed:
        grad = model.bound_grad_fn(x, buffers)
    else:

        def grad(
            x: Tensor, xb: Tensor, yb: Tensor, out: Tensor | None = None
        ) -> tuple[Tensor, Tensor]:
            return model.grad(x, buffers, xb, yb, out)

    return Session(
        algorithm=prep.algorithm,
        schedule=prep.schedule,
        comm=comm,
        sampler=prep.sampler,
        grad=grad,
        loss=lambda xt, xb, yb: model.loss(xt, buffers, xb, yb),
        x=x,
        state=prep.algorithm.init(x, comm),
        buffers=buffers,
        average_buffers=average_buffers if config.buffers == "average" and buffers else None,
        device=prep.device,
    )


def _recorder(
    config: TrainConfig,
    prep: Prepared,
    session: Session,
    task: Task | None,
    write: bool,
    on_record: Callable[[dict[str, Any]], None] | None,
) -> Recorder:
    """The run's recorder: its evaluator, and its folders when ``write`` (on rank 0):
    ``out_dir`` (:func:`run_dir_for`) and ``ckpt_dir`` (``config.out``, else ``out_dir``)."""
    built = prep.task
    label = built.task.name if task is not None else None
    out_dir = run_dir_for(config, prep.algorithm, label) if write else None
    evaluator = Evaluator(
        built.model,
        built.train,
        built.test,
        config.eval_workers,
        config.workers,
        val=built.val,
        metric_mode=built.task.metric_mode,
        metric_name=built.task.metric_name,
        per_sample=prep.targets_per_sample,
    )
    return Recorder(
        config,
        session,
        evaluator,
        n_train=len(built.train),
        total=prep.total,
        eval_every=prep.eval_every,
        out_dir=out_dir,
        ckpt_dir=Path(config.out) if config.out else out_dir,
        on_record=on_record,
    )


def _claim_folder(
    config: TrainConfig, comm: Communicator, writes_out: bool, *, overwrite: bool, main: bool
) -> None:
    """Once every check has passed: on the distributed engine wait until every rank has checked
    the run folder; with ``overwrite`` remove the earlier run's files from it (rank 0)."""
    if writes_out and config.engine == "distributed" and getattr(comm, "barrier", None) is not None:
        comm.barrier()  # type: ignore[attr-defined]  # all ranks checked the folder first
    if writes_out and overwrite and main:
        clear_run_files(str(config.out))


def _start_files(
    recorder: Recorder, recorded: dict[str, Any], built: BuiltTask, custom_task: bool, fresh: bool
) -> None:
    """The run folder's first files: ``config.json`` (``recorded``; a user's Task recorded by
    :func:`task_record`) and the ``metrics.jsonl`` so far (a resumed run drops the records
    written after its checkpoint: it makes them again). ``fresh`` (a new run, rank 0): remove
    the checkpoints of an earlier run in the checkpoint folder, which must never be resumed."""
    out_dir, ckpt_dir = recorder.out_dir, recorder.ckpt_dir
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if custom_task:  # a user's Task: the preset fields were not used, the task was
            recorded = task_record(recorded, built)
        text = json.dumps(recorded, indent=2, sort_keys=True, default=str) + "\n"
        ckpt.atomic_write_text(out_dir / "config.json", text)
        ckpt.atomic_write_text(out_dir / "metrics.jsonl", "".join(recorder.lines))
    if ckpt_dir is not None and fresh:
        (ckpt_dir / ckpt.MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(ckpt_dir / ckpt.FOLDER, ignore_errors=True)


def _run(
    config: TrainConfig,
    session: Session,
    recorder: Recorder,
    prep: Prepared,
    start: int,
    stop_after: int | None,
    *,
    resume: bool,
    main: bool,
) -> int:
    """The steps from ``start`` on, under the progress bar and the Ctrl-C handlers (records
    step 0 first in a new run); returns the last step done. The data reader and the
    TensorBoard writer are closed whatever stops the run."""
    total = prep.total

    def interrupted() -> TrainingInterrupted:
        return TrainingInterrupted(
            recorder.reached, total, recorder.last_saved, recorder.ckpt_dir, config.checkpoint_every
        )

    session.read = prep.task.train.reader(prep.sampler)  # after a resume: it reads ahead from here
    try:
        with (
            interrupt_as(interrupted),
            sigint_between_steps() as stop_requested,
            tqdm(
                total=total,
                initial=start,
                desc=f"{config.algorithm_label} {config.topology}{config.workers}",
                disable=progress_disabled(config.progress, main),
                dynamic_ncols=True,
            ) as bar,
        ):
            recorder.bar = bar
            session.stop_requested = stop_requested
            if not resume:
                recorder.record(0)
            return run_steps(session, recorder, start, total, stop_after)
    finally:
        close = getattr(session.read, "close", None)
        if close is not None:
            close()
        recorder.close()  # the TensorBoard writer, whatever stopped the run
