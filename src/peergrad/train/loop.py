"""The training loop of the simulated engine (``peergrad train``).

One step: every worker draws a minibatch from its shard, all per-worker gradients come from one
vectorised ``torch.func`` call (``vmap(grad_and_value)`` over the stacked parameters ``x: [n, D]``),
then the algorithm does its local math and communication through the communicator. Every
``eval_every`` steps one record of metrics is appended to ``metrics.jsonl`` (field units are in
the names; see :data:`METRIC_FIELDS`).

Reliability: :func:`validate_config` rejects bad options before any work; with
``checkpoint_every`` the run saves resumable checkpoints (:mod:`peergrad.train.checkpoint`) and
``train(..., resume=True)`` continues one exactly; every step a NaN/Inf guard
(:func:`nonfinite_codes`) stops the run with :class:`NonFiniteError` at the first step where some
worker's loss or parameters stop being finite (the algorithm state is checked before every
checkpoint; on the distributed engine the ranks compare notes every ``NONFINITE_SYNC_EVERY`` steps
and before every record and checkpoint).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from peergrad.algorithms import Algorithm, make_algorithm
from peergrad.algorithms.base import LossClosure, bind_run
from peergrad.comm import NetworkModel, SimulatedCommunicator, worker_sum
from peergrad.comm.base import Communicator
from peergrad.data import Dataset, load_dataset, partition
from peergrad.models import build_model
from peergrad.topology import make_topology, torus_shape
from peergrad.train import checkpoint as ckpt
from peergrad.train.config import TrainConfig
from peergrad.train.folders import check_run_folder, clear_run_files
from peergrad.train.params import (
    FlatParams,
    make_bound_grad_fn,
    make_eval_fn,
    make_worker_grad_fn,
    make_worker_loss_fn,
)
from peergrad.train.plots import plot_run
from peergrad.train.sampler import ShardSampler

METRIC_FIELDS: dict[str, str] = {
    "epoch": "passes over the training set by all workers together (float)",
    "step": "iterations done",
    "samples_seen": "training samples used by all workers together",
    "train_loss": "cross-entropy of the averaged model x̄ on (up to 10,000 of) the training set",
    "minibatch_loss": "mean of the workers' minibatch losses since the previous record",
    "test_loss": "cross-entropy of x̄ on the test set",
    "test_accuracy": "accuracy of x̄ on the test set, in [0, 1]",
    "worker_test_loss": "mean over (up to eval_workers) workers' own models of their test loss",
    "worker_test_accuracy": "mean over (up to eval_workers) workers' own models of test accuracy",
    "consensus_distance": "(1/n) sum_i ||x_i - x̄||^2",
    "bytes_sent_per_worker": "cumulative bytes sent, mean over workers",
    "comm_rounds": "communication rounds so far (all-reduces, gossip rounds and all-gathers)",
    "wall_time_s": "training wall-clock time in seconds, evaluation excluded",
    "simulated_comm_time_s": "modelled communication time in seconds (latency/bandwidth model)",
}
WALL_CLOCK_FIELDS = ("wall_time_s",)
TRAIN_EVAL_MAX = 10_000
DTYPES = {"float32": torch.float32, "float64": torch.float64}
ENGINES = ("simulated", "distributed")


@dataclasses.dataclass
class Task:
    """What a run trains on: data, shards, the model skeleton and the initial parameters."""

    dataset: Dataset
    shards: list[Tensor]
    module: nn.Module
    layout: FlatParams
    x0: Tensor  # [D], identical initial model of every worker


@dataclasses.dataclass
class RunResult:
    """What :func:`train` returns. ``hyperparameters``: every option of the algorithm as it ran
    (defaults and run-dependent values included), as in ``config.json``."""

    out_dir: Path | None
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    x: Tensor
    state: Any
    comm: Communicator
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)


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


def validate_config(config: TrainConfig) -> None:
    """Reject a bad configuration before any work starts (``ValueError`` naming the option)."""
    if not (isinstance(config.workers, int) and config.workers >= 1):
        raise ValueError(f"--workers must be an integer >= 1, got {config.workers!r}")
    if not (isinstance(config.batch_size, int) and config.batch_size >= 1):
        raise ValueError(f"--batch-size must be an integer >= 1, got {config.batch_size!r}")
    if config.steps is None and not (math.isfinite(config.epochs) and config.epochs > 0):
        raise ValueError(f"--epochs must be > 0, got {config.epochs!r}")
    if config.steps is not None and config.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {config.steps!r}")
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
    check_names(config)
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
    if config.dataset in ROOT_DATASETS:
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
    """Unknown algorithm / topology / data set / model / partition names, with the valid ones."""
    from peergrad.algorithms import REGISTRY
    from peergrad.data import DATASETS, PARTITIONS
    from peergrad.models import MODELS
    from peergrad.topology import TOPOLOGIES

    for flag, what, value, valid in (
        ("--algorithm", "algorithm", config.algorithm, tuple(REGISTRY)),
        ("--topology", "topology", config.topology, tuple(TOPOLOGIES)),
        ("--dataset", "data set", config.dataset, DATASETS),
        ("--model", "model", config.model, MODELS),
        ("--partition", "partition", config.partition, PARTITIONS),
    ):
        if value not in valid:
            raise ValueError(f"{flag}: unknown {what} {value!r}; choose one of: {', '.join(valid)}")


def build_task(config: TrainConfig) -> Task:
    dataset = load_dataset(
        config.dataset, root=config.data_root, seed=config.seed, download=config.download
    )
    n_train = len(dataset.y_train)
    if config.workers * config.batch_size > n_train:
        raise ValueError(
            f"--batch-size {config.batch_size}: batch_size must be in "
            f"[1, {n_train // config.workers}] here: --workers {config.workers} shards share "
            f"the {n_train} training samples of --dataset {config.dataset} and each must hold "
            "one batch; lower --batch-size or --workers"
        )
    shards = partition(
        dataset.y_train,
        config.workers,
        config.partition,
        seed=config.seed,
        alpha=config.dirichlet_alpha,
        min_size=config.batch_size,
    )
    torch.manual_seed(config.seed)
    module = build_model(config.model, dataset.input_shape, dataset.num_classes)
    layout = FlatParams.of(module)
    return Task(dataset, shards, module, layout, layout.flatten(module))


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


def run_dir_for(config: TrainConfig, algorithm: Algorithm | None = None) -> Path:
    """``config.out``, or ``runs/<algorithm>-<topology><n>-<dataset>-<partition>-seed<seed>``
    with the next free suffix (``-2``, ``-3``, ...): a default name never reuses a folder. The
    topology is left out (``<algorithm>-n<n>-...``) when ``algorithm`` does not use it."""
    if config.out:
        return Path(config.out)
    where = (
        f"n{config.workers}"
        if algorithm is not None and not algorithm.uses_topology()
        else f"{config.topology}{config.workers}"
    )
    base = Path("runs") / (
        f"{config.algorithm}-{where}-{config.dataset}-{config.partition}-seed{config.seed}"
    )
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


class BatchGather:
    """``idx [w, B] -> (x [w, B, ...], y [w, B])`` gathered into reused buffers."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y
        self._xb: Tensor | None = None
        self._yb: Tensor | None = None

    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        flat = idx.reshape(-1)
        if self._xb is None or self._xb.shape[0] != flat.numel():
            self._xb = self.x.new_empty((flat.numel(), *self.x.shape[1:]))
            self._yb = self.y.new_empty((flat.numel(),))
        assert self._yb is not None
        torch.index_select(self.x, 0, flat, out=self._xb)
        torch.index_select(self.y, 0, flat, out=self._yb)
        shape = tuple(idx.shape)
        return self._xb.view(*shape, *self.x.shape[1:]), self._yb.view(shape)


class Evaluator:
    """Metrics of the averaged model x̄ and of (a fixed subset of) the workers' own models."""

    def __init__(
        self,
        task: Task,
        device: torch.device,
        dtype: torch.dtype,
        eval_workers: int,
        n_workers: int,
        chunk: int = 2048,
    ) -> None:
        ds = task.dataset
        self.eval_fn = make_eval_fn(task.module, task.layout)
        self.test = (ds.x_test.to(device, dtype), ds.y_test.to(device))
        g = torch.Generator().manual_seed(0)
        keep = torch.randperm(len(ds.y_train), generator=g)[:TRAIN_EVAL_MAX].sort().values
        self.train = (ds.x_train[keep].to(device, dtype), ds.y_train[keep].to(device))
        m = min(eval_workers, n_workers)
        self.worker_rows = torch.linspace(0, n_workers - 1, m).round().long().unique()
        self.chunk = chunk

    def _stats(self, X: Tensor, data: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        xs, ys = data
        loss = torch.zeros(X.shape[0], dtype=torch.float64, device=X.device)
        correct = torch.zeros(X.shape[0], dtype=torch.float64, device=X.device)
        for s in range(0, len(ys), self.chunk):
            l_, c_ = self.eval_fn(X, xs[s : s + self.chunk], ys[s : s + self.chunk])
            loss += l_.double()
            correct += c_.double()
        return loss / len(ys), correct / len(ys)

    @torch.no_grad()
    def __call__(self, x: Tensor, comm: Communicator) -> dict[str, float]:
        """Metrics of x (this process's rows ``[w, D]``); identical on every process."""
        x_bar = comm.mean(x, account=False)[:1]
        consensus = comm.mean(worker_sum((x - x_bar) ** 2)[:, None], account=False)[0, 0]
        train_loss, _ = self._stats(x_bar, self.train)
        test_loss, test_acc = self._stats(x_bar, self.test)
        # Workers' own models: each process evaluates its rows that are in the fixed subset.
        ids = comm.worker_ids.to(x.device)
        selected = torch.isin(ids, self.worker_rows.to(x.device))
        local = torch.zeros(x.shape[0], 3, dtype=torch.float64, device=x.device)
        if bool(selected.any()):
            w_loss, w_acc = self._stats(x[selected], self.test)
            local[selected] = torch.stack([w_loss, w_acc, torch.ones_like(w_loss)], dim=1)
        totals = comm.mean(local, account=False)[0] * comm.n_workers
        return {
            "train_loss": float(train_loss[0]),
            "test_loss": float(test_loss[0]),
            "test_accuracy": float(test_acc[0]),
            "worker_test_loss": float(totals[0] / totals[2]),
            "worker_test_accuracy": float(totals[1] / totals[2]),
            "consensus_distance": float(consensus),
        }


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
    """Everything a run builds before its first step (all checks done)."""

    algorithm: Algorithm
    comm: Communicator
    task: Task
    sampler: ShardSampler
    device: torch.device
    dtype: torch.dtype


def prepare(config: TrainConfig) -> Prepared:
    """Validate ``config`` and build the run's pieces, in the order that fails fastest.

    Raises ``ValueError`` (``FileNotFoundError`` for missing data files) naming the option before
    any training starts. On the distributed engine this joins the process group.
    """
    validate_config(config)
    device, dtype = resolve_device(config.device), DTYPES[config.dtype]
    algorithm = build_algorithm(config)
    comm = make_communicator(config, device)
    algorithm.check_topology(comm)
    task = build_task(config)
    per_epoch = len(task.dataset.y_train) / (config.workers * config.batch_size)
    algorithm = bind_run(algorithm, segments=task.layout.numels, batches_per_epoch=per_epoch)
    sampler = ShardSampler(task.shards, config.batch_size, config.seed, comm.worker_ids.tolist())
    return Prepared(algorithm, comm, task, sampler, device, dtype)


class NonFiniteError(RuntimeError):
    """A worker's loss, gradient or parameters became NaN or infinite; the message names the step,
    the worker(s) and what went bad, and where the last good checkpoint is."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped :func:`train`; a ``KeyboardInterrupt`` that knows where.

    ``step``: the last step done; ``total``: the run's last step; ``checkpoint_step``: the step
    of the last checkpoint saved (None: none); ``run_dir``: the run folder (None: none written);
    ``checkpoint_every``: the run's setting. ``str()`` is one line saying so, with the
    ``--resume`` command when there is a checkpoint.
    """

    def __init__(
        self,
        step: int,
        total: int,
        checkpoint_step: int | None,
        run_dir: Path | None,
        checkpoint_every: int | None = None,
    ) -> None:
        self.step, self.total = step, total
        self.checkpoint_step, self.run_dir = checkpoint_step, run_dir
        self.checkpoint_every = checkpoint_every
        super().__init__(self.describe())

    def describe(self) -> str:
        """``interrupted at step 37 of 100; last checkpoint: step 30 in DIR; continue with:
        peergrad train --resume DIR`` (or why it cannot be resumed)."""
        text = f"interrupted at step {self.step} of {self.total}; "
        if self.checkpoint_step is not None and self.run_dir is not None:
            return (
                f"{text}last checkpoint: step {self.checkpoint_step} in {self.run_dir}; "
                f"continue with: peergrad train --resume {self.run_dir}"
            )
        if self.checkpoint_every is not None:
            return (
                f"{text}no checkpoint was saved yet (--checkpoint-every {self.checkpoint_every}), "
                "so it cannot be resumed"
            )
        return text + "no checkpoint was saved, so it cannot be resumed (use --checkpoint-every N)"


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


#: Distributed engine: steps between the NaN/Inf guard's comparisons of notes across ranks (it
#: also compares before every record and checkpoint).
NONFINITE_SYNC_EVERY = 10

#: Bits of the per-worker non-finite code (see :func:`nonfinite_codes`).
_BAD_WHAT = ((1, "loss"), (2, "gradient"), (4, "parameters"), (8, "algorithm state"))


def _float_tensors(obj: Any) -> list[Tensor]:
    """The floating-point tensors inside a state (dataclasses, lists, tuples, dicts)."""
    if isinstance(obj, Tensor):
        return [obj] if obj.is_floating_point() else []
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in _float_tensors(item)]
    return []


def nonfinite_codes(
    losses: Tensor, x: Tensor, g: Tensor | None = None, state: Any = None
) -> Tensor:
    """Per-worker code ``[w]``: bits 1 = loss, 2 = gradient, 4 = parameters, 8 = algorithm state
    non-finite (ORed).

    The check every step costs one reduction over ``x`` (``[w, D]``): a row holding a NaN or an
    infinity sums to NaN or infinity (a finite row whose sum overflows, with entries near the
    dtype's largest value, also counts: that is a blow-up too). ``g`` (checked exactly, e.g. to
    say what went bad once a flag is up) and ``state`` (every floating-point tensor; those with a
    leading axis of size w are attributed per worker, others to every worker) are checked only
    when given.
    """
    codes = (~torch.isfinite(losses.detach())).to(torch.int64)
    codes += 4 * (~torch.isfinite(worker_sum(x))).to(torch.int64)
    if g is not None:
        codes += 2 * (~torch.isfinite(g).reshape(g.shape[0], -1).all(dim=1)).to(torch.int64)
    if state is not None:
        bad = torch.zeros(x.shape[0], dtype=torch.bool, device=codes.device)
        for t in _float_tensors(state):
            if t.dim() >= 1 and t.shape[0] == x.shape[0]:
                bad |= ~torch.isfinite(t).reshape(t.shape[0], -1).all(dim=1).to(bad.device)
            elif not bool(torch.isfinite(t).all()):
                bad[:] = True
        codes += 8 * bad.to(torch.int64)
    return codes


def describe_nonfinite(codes: Tensor) -> str:
    """``"worker 2 (loss, gradient), worker 5 (parameters)"`` from global codes ``[n]``."""
    parts = []
    for i in torch.nonzero(codes).flatten().tolist():
        what = ", ".join(name for bit, name in _BAD_WHAT if int(codes[i]) & bit)
        parts.append(f"worker {i} ({what})")
    return ", ".join(parts)


def _comm_counters(comm: Communicator) -> dict[str, Any]:
    return {
        "bytes_sent": comm.bytes_sent.detach().clone(),
        "simulated_comm_time_s": float(comm.simulated_comm_time_s),
        "rounds": int(getattr(comm, "rounds", 0)),
    }


def _restore_comm_counters(comm: Communicator, saved: dict[str, Any]) -> None:
    if tuple(saved["bytes_sent"].shape) != tuple(comm.bytes_sent.shape):
        raise ValueError(
            f"--resume: the checkpoint counts bytes for {saved['bytes_sent'].shape[0]} local "
            f"worker(s), this process holds {comm.bytes_sent.shape[0]}"
        )
    comm.bytes_sent.copy_(saved["bytes_sent"])
    comm.simulated_comm_time_s = float(saved["simulated_comm_time_s"])
    if hasattr(comm, "rounds"):
        comm.rounds = int(saved["rounds"])  # type: ignore[attr-defined]


def train(
    config: TrainConfig,
    *,
    write: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    overwrite: bool = False,
    topology_given: bool | None = None,
) -> RunResult:
    """Run ``config`` on its engine; write the run folder (rank 0 only) when ``write``.

    Run folder: ``config.out``, or a new ``runs/<name>`` (:func:`run_dir_for`). A ``config.out``
    that already holds a run is refused (``ValueError`` naming ``--resume`` and
    ``--overwrite``) unless ``overwrite``, which removes the earlier run's files once every
    check has passed. ``config.json`` records the config and the algorithm's resolved
    ``hyperparameters``. Degenerate settings (:func:`setting_warnings`; ``topology_given`` says
    whether the user chose ``config.topology``) each give one ``UserWarning``.

    On the distributed engine (``config.engine == "distributed"``, under torchrun) this process is
    worker ``rank``: it draws the minibatches the simulated engine gives that worker, and the
    returned ``x`` is all workers' parameters ``[n, D]`` on rank 0 (its own row elsewhere).

    Checkpoints (:mod:`peergrad.train.checkpoint`): with ``config.checkpoint_every = N`` a
    checkpoint is saved into the run folder every N steps and after the last step. ``resume=True``
    continues the run in ``config.out`` from its last checkpoint (the config must be the run's,
    see :data:`peergrad.train.config.RESUMABLE_CHANGES`); the result equals an uninterrupted run.
    ``stop_after=k`` stops after step k (after its checkpoint) as a crash would: no summary, no
    plots.

    Raises ``ValueError`` for a bad configuration or checkpoint (before any step) and
    :class:`NonFiniteError` when some worker's loss or parameters (or, before a checkpoint, its
    algorithm state) stop being finite: nothing from that step on is recorded or saved, so the
    last checkpoint stays the last good state. Ctrl-C during the steps raises
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
    prep = prepare(config)
    algorithm, comm, task, sampler = prep.algorithm, prep.comm, prep.task, prep.sampler
    device, dtype = prep.device, prep.dtype
    n = config.workers
    worker_ids = comm.worker_ids.tolist()
    is_main = worker_ids[0] == 0
    distributed = config.engine == "distributed"
    shard_index = worker_ids[0] if distributed else 0
    shards = n if distributed else 1
    module = task.module.to(device=device, dtype=dtype)
    loss_fn = make_worker_loss_fn(module, task.layout)
    evaluator = Evaluator(task, device, dtype, config.eval_workers, n)
    x_train = task.dataset.x_train.to(device, dtype)
    y_train = task.dataset.y_train.to(device)

    n_train = len(task.dataset.y_train)
    steps_per_epoch = n_train / (n * config.batch_size)
    total = config.steps or max(1, round(config.epochs * steps_per_epoch))
    eval_every = config.eval_every or max(1, round(steps_per_epoch / 2))

    x = task.x0.to(device, dtype).expand(len(worker_ids), -1).clone()
    g_buffer = torch.empty_like(x)  # reused every step (see Algorithm.step on g's lifetime)
    if len(worker_ids) == 1 and config.engine == "distributed":
        grad_fn = make_bound_grad_fn(copy.deepcopy(module), task.layout, x)
    else:
        grad_fn = make_worker_grad_fn(module, task.layout)
    gather = BatchGather(x_train, y_train)
    state = algorithm.init(x, comm)
    if is_main:
        for line in setting_warnings(config, algorithm, topology_given=topology_given):
            warnings.warn(line, UserWarning, stacklevel=2)
    hyperparameters = algorithm.options()
    if writes_out and distributed and getattr(comm, "barrier", None) is not None:
        comm.barrier()  # type: ignore[attr-defined]  # all ranks checked the folder first
    if writes_out and overwrite and is_main:
        clear_run_files(str(config.out))
    out_dir = run_dir_for(config, algorithm) if write and is_main else None
    ckpt_dir = Path(config.out) if config.out else out_dir
    saving = config.checkpoint_every is not None

    records: list[dict[str, Any]] = []
    lines: list[str] = []  # metrics.jsonl so far, exactly as written
    wall = 0.0
    loss_sum = torch.zeros(len(worker_ids), 1, dtype=torch.float64)
    loss_count = 0
    start = 0
    last_saved: int | None = None
    if resume:
        assert ckpt_dir is not None
        manifest = ckpt.read_manifest(ckpt_dir)
        if (manifest["engine"], manifest["workers"]) != (config.engine, n):
            raise ValueError(
                f"--resume: the checkpoint in {str(ckpt_dir)!r} was written by the "
                f"{manifest['engine']} engine with {manifest['workers']} workers; this run is "
                f"--engine {config.engine} --workers {n}"
            )
        saved = ckpt.load_shard(ckpt_dir, manifest, shard_index)
        if list(saved["worker_ids"]) != worker_ids:
            raise ValueError(
                f"--resume: checkpoint shard {shard_index} holds worker(s) "
                f"{list(saved['worker_ids'])}, this process is worker(s) {worker_ids}"
            )
        x.copy_(ckpt.restore_into(x.clone(), saved["x"], "x"))
        state = ckpt.restore_into(state, saved["state"], f"{config.algorithm} state")
        sampler.load_state_dict(saved["sampler"])
        torch.set_rng_state(saved["torch_rng"])
        _restore_comm_counters(comm, saved["comm"])
        loop = saved["loop"]
        start, wall, loss_count = int(saved["step"]), float(loop["wall"]), int(loop["loss_count"])
        if start > total:
            raise ValueError(
                f"--resume: the checkpoint is at step {start}, beyond this run's last step "
                f"{total} (--steps / --epochs); give at least --steps {start}"
            )
        loss_sum.copy_(loop["loss_sum"])
        lines = list(saved["metrics_lines"])
        records = [json.loads(line) for line in lines]
        last_saved = start
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(
            out_dir / "config.json",
            json.dumps(config.record(hyperparameters), indent=2, sort_keys=True, default=str)
            + "\n",
        )
        # A resumed run drops the records written after its checkpoint: it makes them again.
        ckpt.atomic_write_text(out_dir / "metrics.jsonl", "".join(lines))

    if ckpt_dir is not None and is_main and not resume:
        # A fresh run in an old folder must never resume the old run's state.
        (ckpt_dir / ckpt.MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(ckpt_dir / ckpt.FOLDER, ignore_errors=True)

    def record(step: int) -> dict[str, Any]:
        nonlocal loss_count
        rec: dict[str, Any] = {
            "epoch": step * n * config.batch_size / n_train,
            "step": step,
            "samples_seen": step * n * config.batch_size,
        }
        rec.update(evaluator(x, comm))
        mean_loss = comm.mean(loss_sum, account=False)[0, 0]
        rec["minibatch_loss"] = float(mean_loss) / loss_count if loss_count else None
        rec["bytes_sent_per_worker"] = float(
            comm.mean(comm.bytes_sent[:, None], account=False)[0, 0]
        )
        rec["comm_rounds"] = int(getattr(comm, "rounds", 0))
        rec["wall_time_s"] = wall
        rec["simulated_comm_time_s"] = comm.simulated_comm_time_s
        loss_sum.zero_()
        loss_count = 0
        records.append(rec)
        line = json.dumps(rec) + "\n"
        lines.append(line)
        if out_dir is not None:
            with open(out_dir / "metrics.jsonl", "a") as fh:
                fh.write(line)
        if on_record is not None:
            on_record(rec)
        return rec

    def save(step: int) -> None:
        nonlocal last_saved
        assert ckpt_dir is not None
        payload = {
            "format": ckpt.FORMAT,
            "step": step,
            "worker_ids": worker_ids,
            "x": ckpt.to_plain(x),
            "state": ckpt.to_plain(state),
            "sampler": ckpt.to_plain(sampler.state_dict()),
            "torch_rng": torch.get_rng_state(),
            "comm": _comm_counters(comm),
            "loop": {"wall": wall, "loss_sum": loss_sum.clone(), "loss_count": loss_count},
            "metrics_lines": list(lines),
        }
        ckpt.save_shard(ckpt_dir, step, shard_index, payload)
        barrier = getattr(comm, "barrier", None)
        if distributed and barrier is not None:
            barrier()  # every shard of this step is on disk before rank 0 commits it
        if is_main:
            ckpt.commit(ckpt_dir, step, engine=config.engine, workers=n, shards=shards)
        last_saved = step

    first_bad: list[tuple[int, int]] = []  # distributed: (step, code) of this worker's first

    def check_finite(step: int, losses: Tensor, g: Tensor, saving: bool, sync: bool) -> None:
        """Stop when some worker's loss or parameters (every step), or its state (before a
        checkpoint, so no saved state is bad) are not finite; name the step and what went bad.

        Simulated engine: at once. Distributed engine: each rank checks its worker every step
        and remembers the first bad step; the ranks compare notes (one all-reduce of 2n numbers)
        only when ``sync`` (every ``NONFINITE_SYNC_EVERY`` steps and before every record and
        checkpoint), so that the guard adds no collective to most steps and all ranks stop
        together, before anything non-finite is recorded or saved."""
        codes = nonfinite_codes(losses, x, state=state if saving else None)
        if bool(codes.any()):  # rare: say exactly what went bad
            codes = nonfinite_codes(losses, x, g, state)
        found = step
        if distributed:
            if bool(codes.any()) and not first_bad:
                first_bad.append((step, int(codes[0])))
            if not sync:
                return
            full = torch.zeros(1, 2 * n, dtype=torch.float64)
            if first_bad:
                full[0, worker_ids[0]], full[0, n + worker_ids[0]] = first_bad[0]
            both = (comm.mean(full, account=False)[0] * n).round().to(torch.int64)
            steps_all, codes_all = both[:n], both[n:]
            if not bool(steps_all.any()):
                return
            step = int(steps_all[steps_all > 0].min())
            codes_all = torch.where(steps_all == step, codes_all, 0)
        elif bool(codes.any()):
            codes_all = codes.cpu()
        else:
            return
        where = str(ckpt_dir) if ckpt_dir is not None else "the run folder"
        kept = (
            f"the last good checkpoint (step {last_saved}) is kept in {where}"
            if last_saved is not None
            else "no checkpoint was saved (use --checkpoint-every N)"
        )
        seen = f" (the ranks compared notes at step {found})" if found != step else ""
        raise NonFiniteError(
            f"non-finite values at step {step}: {describe_nonfinite(codes_all)}{seen}; the run "
            f"stopped and nothing from step {step} on was recorded or saved; {kept}. The run "
            f"diverged: try a smaller --lr (now {getattr(algorithm, 'lr', config.lr)})"
        )

    desc = f"{config.algorithm} {config.topology}{n}"
    show = config.progress and is_main
    stopped = False
    reached = start  # the last step done, for the Ctrl-C message

    def interrupted() -> TrainingInterrupted:
        return TrainingInterrupted(reached, total, last_saved, ckpt_dir, config.checkpoint_every)

    with (
        _interrupt_as(interrupted),
        tqdm(total=total, initial=start, desc=desc, disable=not show, dynamic_ncols=True) as bar,
    ):
        if not resume:
            rec = record(0)
        for step in range(start + 1, total + 1):
            t0 = time.perf_counter()
            comm.begin_step(step)
            pending = algorithm.pre_gradient(x, state, comm)
            idx = sampler.next().to(device)
            xb, yb = gather(idx)
            g, losses = grad_fn(x, xb, yb, out=g_buffer)
            state = algorithm.step(
                x,
                g,
                state,
                comm,
                # line searches get the loss at x from the gradient pass, trials from loss_fn
                closure=LossClosure(lambda xt, xb=xb, yb=yb: loss_fn(xt, xb, yb), losses),
                pending=pending,
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall += time.perf_counter() - t0
            saving_now = saving and (step % config.checkpoint_every == 0 or step == total)  # type: ignore[operator]
            recording = step % eval_every == 0 or step == total
            sync = saving_now or recording or step % NONFINITE_SYNC_EVERY == 0
            check_finite(step, losses, g, saving_now, sync)
            loss_sum += losses.detach().to("cpu", torch.float64)[:, None]
            loss_count += 1
            if recording:
                rec = record(step)
                bar.set_postfix(loss=f"{rec['train_loss']:.4f}", acc=f"{rec['test_accuracy']:.4f}")
            if saving_now:
                save(step)
            bar.update(1)
            reached = step
            if stop_after is not None and step >= stop_after and step < total:
                stopped = True
                break

    summary = dict(records[-1])
    summary["best_test_accuracy"] = max(r["test_accuracy"] for r in records)
    summary["engine"] = config.engine
    x_all = gather_rows(x, comm)
    if out_dir is not None and not stopped:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_run(records, out_dir, f"{config.algorithm} on {config.topology} (n={n})")
    return RunResult(out_dir, records, summary, x_all, state, comm, hyperparameters)


@contextlib.contextmanager
def _interrupt_as(make: Callable[[], TrainingInterrupted]) -> Iterator[None]:
    """Turn a plain ``KeyboardInterrupt`` (Ctrl-C) inside the block into ``make()``."""
    try:
        yield
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        raise make() from None


def format_summary(summary: dict[str, Any]) -> str:
    """A two-column text table of the final metrics."""
    rows = [(k, summary[k]) for k in (*METRIC_FIELDS, "best_test_accuracy") if k in summary]
    width = max(len(k) for k, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 14}"]
    for k, v in rows:
        if isinstance(v, float):
            text = f"{v:.6g}" if not k.endswith("accuracy") else f"{v:.4f}"
        else:
            text = str(v)
        lines.append(f"{k:<{width}}  {text}")
    return "\n".join(lines)
