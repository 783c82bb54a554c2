"""Running a training job: checks, the run's pieces, and :func:`train`.

:func:`train` trains a :class:`~peergrad.train.task.Task` (a built-in preset when none is given:
:func:`~peergrad.train.task.task_from_config`) with ``config``'s algorithm on its engine. It is put
together from three small parts, each in its own file:

* the task, what is trained: model, data, loss, metric (:mod:`peergrad.train.task`, data reading in
  :mod:`peergrad.data.source`);
* the step loop, the same on both engines (:mod:`peergrad.train.steps`);
* the recorder: metrics, checkpoints, progress, plots and the NaN/Inf guard
  (:mod:`peergrad.train.recorder`, :mod:`peergrad.train.guard`).

This module checks the configuration (:func:`validate_config`, before any work), builds the
algorithm, communicator, task, sampler and schedule (:func:`prepare`), and runs them.

Reliability: with ``checkpoint_every`` the run saves resumable checkpoints
(:mod:`peergrad.train.checkpoint`) and ``train(..., resume=True)`` continues one exactly; every
step a NaN/Inf guard (:func:`nonfinite_codes`) stops the run with :class:`NonFiniteError` at the
first step where some worker's loss or parameters stop being finite (the algorithm state is
checked before every checkpoint; on the distributed engine the ranks compare notes every
``NONFINITE_SYNC_EVERY`` steps and before every record and checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from peergrad.algorithms import Algorithm, check_failures, make_algorithm
from peergrad.algorithms.base import bind_run
from peergrad.comm import NetworkModel, SimulatedCommunicator
from peergrad.comm.base import Communicator
from peergrad.data.source import BatchGather
from peergrad.system import SystemClock, SystemProfile, count_step_flops, load_profile
from peergrad.topology import make_topology, torus_shape
from peergrad.train import checkpoint as ckpt
from peergrad.train.config import TrainConfig
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
    format_summary,
)
from peergrad.train.resolve import check_config
from peergrad.train.sampler import ShardSampler, worker_seed
from peergrad.train.session import Session
from peergrad.train.spelling import field_names
from peergrad.train.steps import run_steps
from peergrad.train.task import BuiltTask, Task, build_task, task_from_config

__all__ = [
    "ALGORITHM_FIELDS",
    "DTYPES",
    "ENGINES",
    "METRIC_FIELDS",
    "NONFINITE_SYNC_EVERY",
    "TRAIN_EVAL_MAX",
    "WALL_CLOCK_FIELDS",
    "BatchGather",
    "Evaluator",
    "NonFiniteError",
    "Prepared",
    "RunResult",
    "Task",
    "TrainingInterrupted",
    "build_algorithm",
    "describe_nonfinite",
    "format_summary",
    "nonfinite_codes",
    "prepare",
    "resolve_device",
    "run_dir_for",
    "setting_warnings",
    "system_profile",
    "train",
    "validate_config",
]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
ENGINES = ("simulated", "distributed")


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


#: What ``--device`` accepts (checked by :func:`resolve_device`).
DEVICES_HELP = "cpu, cuda, cuda:N (N < the number of visible GPUs) or mps (where available)"


def resolve_device(name: str) -> torch.device:
    """The device of ``--device``; ``ValueError`` (one line naming ``--device`` and what it
    accepts) for names torch does not know, devices this machine does not have (``cuda:9`` on
    a one-GPU machine, ``mps`` off Apple silicon) and devices that cannot train (``meta``)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device must be one of {DEVICES_HELP}; got {name!r}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {name}: CUDA is not available on this machine; use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
        return device
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"--device {name}: MPS is not available on this machine")
        if device.index not in (None, 0):
            raise ValueError(f"--device {name}: there is one MPS device, mps (or mps:0)")
        return device
    raise ValueError(f"--device must be one of {DEVICES_HELP}; got {name!r}")


def validate_config(config: TrainConfig, *, custom_task: bool = False) -> None:
    """Reject a bad configuration before any work starts (``ValueError`` naming the option).

    ``custom_task``: the run trains a user's :class:`~peergrad.train.task.Task`, so
    ``config.model``, ``config.dataset`` and ``config.data_root`` are not read (and not
    checked)."""
    if not (isinstance(config.workers, int) and config.workers >= 1):
        raise ValueError(f"--workers must be an integer >= 1, got {config.workers!r}")
    if not (isinstance(config.batch_size, int) and config.batch_size >= 1):
        raise ValueError(f"--batch-size must be an integer >= 1, got {config.batch_size!r}")
    if config.steps is None and not (math.isfinite(config.epochs) and config.epochs > 0):
        raise ValueError(f"--epochs must be > 0, got {config.epochs!r}")
    if config.steps is not None and config.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {config.steps!r}")
    vf = config.val_fraction
    if not (isinstance(vf, int | float) and not isinstance(vf, bool) and 0 <= vf <= 0.5):
        raise ValueError(f"--val-fraction must be in [0, 0.5] (0: no validation split), got {vf!r}")
    if config.eval_every is not None and config.eval_every < 1:
        raise ValueError(f"--eval-every must be >= 1, got {config.eval_every!r}")
    if config.eval_workers < 1:
        raise ValueError(f"--eval-workers must be >= 1, got {config.eval_workers!r}")
    if config.engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {config.engine!r}")
    if not (math.isfinite(config.timeout_s) and config.timeout_s > 0):
        raise ValueError(f"--timeout-s must be a number > 0, got {config.timeout_s!r}")
    if config.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}")
    resolve_device(config.device)
    NetworkModel.from_ms_gbps(config.latency_ms, config.bandwidth_gbps)
    system_profile(config)  # --system: the preset or TOML file, for --workers workers
    check_names(config)
    # --loss, --lr-schedule, --warmup-steps, --buffers, --loader-workers, --model-set, --data-set
    # and import paths (the CLI runs the same check before it creates anything)
    check_config(config, custom_task=custom_task)
    if config.checkpoint_every is not None and not (
        isinstance(config.checkpoint_every, int) and config.checkpoint_every >= 1
    ):
        raise ValueError(
            f"--checkpoint-every must be an integer >= 1 (steps), got {config.checkpoint_every!r}"
        )
    if config.engine == "distributed" and config.checkpoint_every is not None and not config.out:
        raise ValueError(
            "--checkpoint-every with --engine distributed needs --out DIR: a folder every "
            "process can write (each rank saves its own shard there)"
        )
    if config.engine == "distributed":
        from peergrad.comm import distributed

        if not distributed.launched_by_torchrun():
            distributed.init_process_group(timeout_s=config.timeout_s)  # raises the clear error
        world = int(os.environ["WORLD_SIZE"])
        if world != config.workers:
            raise ValueError(
                f"world size {world} (torchrun --nproc-per-node x --nnodes) differs from the "
                f"number of workers n = {config.workers} (--workers); they must be equal"
            )
    if not (math.isfinite(config.dirichlet_alpha) and config.dirichlet_alpha > 0):
        raise ValueError(f"--dirichlet-alpha must be a number > 0, got {config.dirichlet_alpha!r}")
    if config.topology == "erdos-renyi" and not 0 < config.erdos_renyi_p <= 1:
        raise ValueError(f"--erdos-renyi-p must be in (0, 1], got {config.erdos_renyi_p!r}")
    for key in ("lr", "weight_decay"):
        value = getattr(config, key)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"--{key.replace('_', '-')} must be a finite number, got {value!r}")
    if config.dataset in ROOT_DATASETS and not custom_task:
        layout = ROOT_DATASETS[config.dataset]
        if config.data_root is None:
            raise ValueError(
                f"--dataset {config.dataset} needs --data-root DIR, a folder holding {layout}"
            )
        root = Path(config.data_root)
        if root.exists() and not root.is_dir():
            raise ValueError(
                f"--data-root {config.data_root!r} is not a folder; --dataset {config.dataset} "
                f"expects a folder holding {layout}"
            )
        if not root.exists() and not config.download:
            raise ValueError(
                f"--data-root {config.data_root!r} does not exist (and --no-download is set); "
                f"--dataset {config.dataset} expects a folder holding {layout}"
            )


#: Data sets read from ``--data-root``, with the layout their folder must have.
ROOT_DATASETS = {
    "mnist-idx": "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte (each optionally .gz) directly or in MNIST/raw",
    "cifar10": "cifar-10-batches-py/{data_batch_1..5, test_batch} (the CIFAR python version)",
    "cifar100": "cifar-100-python/{train, test} (the CIFAR python version)",
}


def check_names(config: TrainConfig) -> None:
    """Unknown algorithm / topology / partition names, with the valid ones. ``--model`` and
    ``--dataset`` (built-in names, ``package.module:callable`` ...) are checked by
    :func:`peergrad.train.resolve.check_config`."""
    from peergrad.algorithms import REGISTRY
    from peergrad.data import PARTITIONS
    from peergrad.topology import TOPOLOGIES

    for flag, what, value, valid in (
        ("--algorithm", "algorithm", config.algorithm, tuple(REGISTRY)),
        ("--topology", "topology", config.topology, tuple(TOPOLOGIES)),
        ("--partition", "partition", config.partition, PARTITIONS),
    ):
        if value not in valid:
            raise ValueError(f"{flag}: unknown {what} {value!r}; choose one of: {', '.join(valid)}")


#: ``TrainConfig`` fields passed to the algorithm when set (None: the algorithm's default).
ALGORITHM_FIELDS = ("lr", "momentum", "weight_decay")


def build_algorithm(config: TrainConfig) -> Algorithm:
    """The algorithm of ``config``: ``config.options`` plus ``lr``, ``momentum`` and
    ``weight_decay`` where set; the algorithm's own defaults for everything else. Setting one of
    those three both ways (``--set momentum=0.5 --momentum 0.2``) raises ``ValueError`` naming
    both."""
    options = dict(config.options)
    for key in ALGORITHM_FIELDS:
        value = getattr(config, key)
        if value is None:
            continue
        if key in options:
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"--set {key}={options[key]} and {flag} {value} both set {key}; give only one "
                "of them"
            )
        options[key] = value
    return make_algorithm(config.algorithm, **options)


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
    base = Path("runs") / (
        f"{config.algorithm}-{where}-{label}-{config.partition}-seed{config.seed}"
    )
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def system_profile(config: TrainConfig) -> SystemProfile | None:
    """The system profile of ``config.system`` for ``config.workers`` workers (None without one).

    ``--system uniform`` takes its links from ``--latency-ms`` / ``--bandwidth-gbps`` (the
    uniform-links shorthand); any other profile brings its own links, so those two flags must
    then be left at their defaults. ``ValueError`` (one line naming ``--system``): an unknown
    preset, a TOML file that is missing, has an unknown key or a bad value, or was written for
    another number of workers (see :func:`peergrad.system.load_profile`); both link flags and
    another profile; churn (``failures.leave_prob``/``offline``) on the distributed engine,
    which imposes the rest of the profile on its processes (:mod:`peergrad.system.impose`).
    """
    if config.system is None:
        return None
    if not isinstance(config.system, str) or not config.system:
        raise ValueError(f"--system must be a preset name or a .toml file, got {config.system!r}")
    if config.system == "uniform":
        network = NetworkModel.from_ms_gbps(config.latency_ms, config.bandwidth_gbps)
        return SystemProfile.uniform(config.workers, network)
    given = [
        f"{flag} {value:g}"
        for flag, value, default in (
            ("--latency-ms", config.latency_ms, TrainConfig.latency_ms),
            ("--bandwidth-gbps", config.bandwidth_gbps, TrainConfig.bandwidth_gbps),
        )
        if value != default
    ]
    if given:
        raise ValueError(
            f"{' and '.join(given)} and --system {config.system} both set the links; the "
            "profile's links are used with --system, so put them in its [links] table "
            "(latency_ms, bandwidth_gbps), use --system uniform, or leave --system out"
        )
    try:
        profile = load_profile(config.system, config.workers)
    except ValueError as exc:
        raise ValueError(f"--system {config.system}: {exc}") from None
    churn = [o for o in profile.failures.options if o != "failures.link_drop_prob"]
    if config.engine == "distributed" and churn:  # peergrad.system.impose imposes no churn
        raise ValueError(
            f"--system {config.system}: {' and '.join(churn)}: the distributed engine does not "
            "impose churn (absent workers); use --engine simulated or remove it"
        )
    return profile


def clocked_communicator(
    config: TrainConfig,
    comm: Communicator,
    profile: SystemProfile,
    built: BuiltTask,
    batch: tuple[Any, Any],
) -> Communicator:
    """The simulated communicator of ``comm``'s topology with a :class:`SystemClock` of
    ``profile``. A profile that gives ``compute.device_flops`` only gets its step's FLOPs from
    :func:`~peergrad.system.count_step_flops` on one worker's minibatch ``batch`` (forward and
    backward of the task's module and loss). ``simulated_comm_time_s`` uses the profile's links
    when they are uniform (the communicator's default), else ``--latency-ms`` /
    ``--bandwidth-gbps`` (their defaults: :func:`system_profile` refuses others)."""
    from peergrad.train.params import cross_entropy

    if profile.step_s is None:
        loss = built.model.loss_fn if built.model.loss_fn is not None else cross_entropy
        profile = profile.with_flops_per_step(count_step_flops(built.module, batch, loss))
    network = (
        None
        if profile.links.is_uniform
        else NetworkModel.from_ms_gbps(config.latency_ms, config.bandwidth_gbps)
    )
    if config.engine == "distributed":  # the profile imposed on the real processes
        from peergrad.comm import distributed

        assert isinstance(comm, distributed.DistributedCommunicator)
        if network is None:  # as the simulated engine: the profile's uniform links
            network = NetworkModel(profile.links.latency_s, profile.links.bandwidth_bytes_per_s)
        return distributed.DistributedCommunicator(
            comm.topology, network=network, timeout_s=comm.timeout_s, profile=profile
        )
    return SimulatedCommunicator(comm.topology, network=network, clock=SystemClock(profile))


def make_communicator(config: TrainConfig, device: torch.device) -> Communicator:
    """The communicator of ``config.engine`` (joins the process group for ``distributed``)."""
    topology = make_topology(
        config.topology,
        config.workers,
        seed=config.seed,
        p=config.erdos_renyi_p if config.topology == "erdos-renyi" else None,
    )
    network = NetworkModel.from_ms_gbps(config.latency_ms, config.bandwidth_gbps)
    if config.engine == "simulated":
        return SimulatedCommunicator(topology, network=network)
    from peergrad.comm import distributed

    distributed.init_process_group(timeout_s=config.timeout_s, device=device)
    return distributed.DistributedCommunicator(
        topology, network=network, timeout_s=config.timeout_s
    )


def gather_rows(x: Tensor, comm: Communicator) -> Tensor:
    """All workers' rows ``[n, D]`` (on the distributed engine: on rank 0; others keep theirs)."""
    gather = getattr(comm, "gather", None)
    if gather is None:
        return x
    full = gather(x)
    return x if full is None else full


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


def prepare(config: TrainConfig, task: Task | None = None) -> Prepared:
    """Validate ``config`` and build the run's pieces, in the order that fails fastest.

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
    validate_config(config, custom_task=task is not None)
    device, dtype = resolve_device(config.device), DTYPES[config.dtype]
    algorithm = build_algorithm(config)
    comm = make_communicator(config, device)
    algorithm.check_topology(comm)
    profile = system_profile(config)
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
    return Prepared(algorithm, comm, built, sampler, device, dtype, schedule, total, eval_every)


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
            f"--topology {config.topology} is ignored: {config.algorithm} averages exactly and "
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
            f"--workers 1: {config.algorithm} gossips over --topology {config.topology}, but one "
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


#: :class:`TrainConfig` fields that a run on a user's :class:`~peergrad.train.task.Task` does not
#: read (the built-in preset's); ``config.json`` leaves them out and records ``task`` instead.
PRESET_FIELDS: tuple[str, ...] = (
    "dataset",
    "data_root",
    "download",
    "model",
    "model_options",
    "data_options",
    "loss",
)


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
    if resume and not config.out:
        raise ValueError("--resume needs the run folder (config.out)")
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1, got {stop_after!r}")
    if config.checkpoint_every is not None and not config.out and not write:
        raise ValueError("--checkpoint-every needs a run folder: pass --out DIR (config.out)")
    writes_out = bool(config.out) and not resume and (write or config.checkpoint_every is not None)
    if writes_out:
        check_run_folder(str(config.out), overwrite=overwrite)
    prep = prepare(config, task)
    algorithm, comm, built, sampler = prep.algorithm, prep.comm, prep.task, prep.sampler
    device, total = prep.device, prep.total
    n = config.workers
    worker_ids = comm.worker_ids.tolist()
    is_main = worker_ids[0] == 0
    distributed = config.engine == "distributed"
    model = built.model

    x = built.x0.expand(len(worker_ids), -1).clone()
    buffers = model.init_buffers(len(worker_ids))
    if distributed:  # every rank starts from rank 0's model (a user's module may differ per rank)
        comm.broadcast(x)  # type: ignore[attr-defined]
        for b in buffers.values():
            comm.broadcast(b)  # type: ignore[attr-defined]
    # Random layers draw from the global generator: seeded per run (per rank when distributed).
    torch.manual_seed(worker_seed(config.seed, n + (1 + worker_ids[0] if distributed else 0)))
    if len(worker_ids) == 1 and distributed:
        grad = model.bound_grad_fn(x, buffers)
    else:

        def grad(
            x: Tensor, xb: Tensor, yb: Tensor, out: Tensor | None = None
        ) -> tuple[Tensor, Tensor]:
            return model.grad(x, buffers, xb, yb, out)

    from peergrad.train.params import average_buffers

    session = Session(
        algorithm=algorithm,
        schedule=prep.schedule,
        comm=comm,
        sampler=sampler,
        grad=grad,
        loss=lambda xt, xb, yb: model.loss(xt, buffers, xb, yb),
        x=x,
        state=algorithm.init(x, comm),
        buffers=buffers,
        average_buffers=average_buffers if config.buffers == "average" and buffers else None,
        device=device,
    )
    if is_main:
        for line in setting_warnings(config, algorithm, topology_given=topology_given):
            warnings.warn(line, UserWarning, stacklevel=2)
    hyperparameters = algorithm.options()
    if writes_out and distributed and getattr(comm, "barrier", None) is not None:
        comm.barrier()  # type: ignore[attr-defined]  # all ranks checked the folder first
    if writes_out and overwrite and is_main:
        clear_run_files(str(config.out))
    label = built.task.name if task is not None else None
    out_dir = run_dir_for(config, algorithm, label) if write and is_main else None
    ckpt_dir = Path(config.out) if config.out else out_dir
    evaluator = Evaluator(
        model,
        built.train,
        built.test,
        config.eval_workers,
        n,
        val=built.val,
        metric_mode=built.task.metric_mode,
    )
    recorder = Recorder(
        config,
        session,
        evaluator,
        n_train=len(built.train),
        total=total,
        eval_every=prep.eval_every,
        out_dir=out_dir,
        ckpt_dir=ckpt_dir,
        on_record=on_record,
    )
    start = recorder.resume() if resume else 0
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        recorded = config.record(hyperparameters)
        if task is not None:  # a user's Task: the preset fields were not used, the task was
            recorded = task_record(recorded, built)
        ckpt.atomic_write_text(
            out_dir / "config.json",
            json.dumps(recorded, indent=2, sort_keys=True, default=str) + "\n",
        )
        # A resumed run drops the records written after its checkpoint: it makes them again.
        ckpt.atomic_write_text(out_dir / "metrics.jsonl", "".join(recorder.lines))
    if ckpt_dir is not None and is_main and not resume:
        # A fresh run in an old folder must never resume the old run's state.
        (ckpt_dir / ckpt.MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(ckpt_dir / ckpt.FOLDER, ignore_errors=True)

    def interrupted() -> TrainingInterrupted:
        return TrainingInterrupted(
            recorder.reached, total, recorder.last_saved, ckpt_dir, config.checkpoint_every
        )

    session.read = built.train.reader(sampler)  # after a resume: it may read ahead from here
    desc = f"{config.algorithm} {config.topology}{n}"
    try:
        with (
            interrupt_as(interrupted),
            sigint_between_steps() as stop_requested,
            tqdm(
                total=total,
                initial=start,
                desc=desc,
                disable=progress_disabled(config.progress, is_main),
                dynamic_ncols=True,
            ) as bar,
        ):
            recorder.bar = bar
            session.stop_requested = stop_requested
            if not resume:
                recorder.record(0)
            last = run_steps(session, recorder, start, total, stop_after)
    finally:
        close = getattr(session.read, "close", None)
        if close is not None:
            close()
        recorder.close()  # the TensorBoard writer, whatever stopped the run
    stopped = last < total
    summary = recorder.summary()
    x_all = gather_rows(session.x, comm)
    if not stopped:
        recorder.finish(summary, f"{config.algorithm} on {config.topology} (n={n})", plots=plots)
    return RunResult(
        out_dir, recorder.records, summary, x_all, session.state, comm, hyperparameters, buffers
    )
