"""What a run writes down: metrics records, checkpoints, progress and plots.

The :class:`Recorder` sits beside the step loop (:mod:`peergrad.train.steps`): after every step
it runs the NaN/Inf guard (:mod:`peergrad.train.guard`), accumulates the minibatch losses, every
``eval_every`` steps appends one record to ``metrics.jsonl`` (fields: :data:`METRIC_FIELDS`,
and :data:`SYSTEM_FIELDS` in a run with a system profile;
the same records go to ``metrics.csv`` and, with ``--tensorboard``, to TensorBoard event files in
``tensorboard/``: :mod:`peergrad.train.logs`), saves checkpoints every ``checkpoint_every``
steps (:mod:`peergrad.train.checkpoint`) and moves the progress bar. :meth:`Recorder.resume`
restores a run from its last checkpoint.

Evaluation (:class:`Evaluator`) is of the averaged model x̄ = mean of the workers' parameters,
with the mean of the workers' floating-point buffers (BatchNorm running statistics; integer
buffers such as ``num_batches_tracked`` count alike on every worker and are taken from one), and
of a fixed subset of the workers' own models with their own buffers. Both in eval mode (Dropout
off, BatchNorm on its running statistics), in chunks: test data held as a Dataset is read chunk
by chunk at every evaluation, never materialised whole.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from peergrad.comm import worker_sum
from peergrad.comm.base import Communicator
from peergrad.data.source import MapData, TensorData
from peergrad.train import checkpoint as ckpt
from peergrad.train.guard import (
    NONFINITE_SYNC_EVERY,
    NonFiniteError,
    describe_nonfinite,
    nonfinite_codes,
)
from peergrad.train.logs import TENSORBOARD_DIR, TensorBoardLog, write_metrics_csv
from peergrad.train.params import mean_buffers
from peergrad.train.plots import plot_run

if TYPE_CHECKING:
    from peergrad.train.config import TrainConfig
    from peergrad.train.params import WorkerModel
    from peergrad.train.session import Session

__all__ = [
    "METRIC_FIELDS",
    "METRIC_NAMES",
    "MIN_METRIC_FIELDS",
    "SYSTEM_FIELDS",
    "ELASTIC_FIELDS",
    "SYSTEM_SUMMARY_FIELDS",
    "TRAIN_EVAL_MAX",
    "WALL_CLOCK_FIELDS",
    "Evaluator",
    "Recorder",
    "format_summary",
    "metric_field",
    "metric_fields",
    "train_eval_indices",
]

METRIC_FIELDS: dict[str, str] = {
    "epoch": "passes over the training set by all workers together (float)",
    "step": "iterations done",
    "samples_seen": "training samples used by all workers together",
    "lr": "learning rate (step size) of the last step, after the schedule (record 0: of step 1); "
    "None for an algorithm without one",
    "train_loss": "loss (the task's; cross-entropy for the built-ins) of the averaged model x̄ "
    "on (up to 10,000 samples, or windows holding up to 10,000 tokens, of) the training set",
    "minibatch_loss": "mean of the workers' minibatch losses since the previous record",
    "test_loss": "loss of x̄ on the test set (None without test data)",
    "test_accuracy": "accuracy (or the task's metric) of x̄ on the test set, in [0, 1] for "
    "accuracy; None without a metric or test data",
    "val_loss": "loss of x̄ on the validation split held out from the training data "
    "(--val-fraction; None without one)",
    "val_accuracy": "accuracy (or the task's metric) of x̄ on the validation split; None without "
    "a split or a metric",
    "worker_test_loss": "mean over (up to eval_workers) workers' own models of their test loss",
    "worker_test_accuracy": "mean over (up to eval_workers) workers' own models of test accuracy",
    "consensus_distance": "(1/n) sum_i ||x_i - x̄||^2",
    "bytes_sent_per_worker": "cumulative bytes sent, mean over workers",
    "comm_rounds": "communication rounds so far (all-reduces, gossip rounds and all-gathers)",
    "wall_time_s": "training wall-clock time in seconds, evaluation excluded",
    "simulated_comm_time_s": "modelled communication time in seconds (latency/bandwidth model)",
}
#: Record fields present only in a run with a system profile (``--system``), after
#: :data:`METRIC_FIELDS`. Without a profile there is no per-worker clock, and the run's
#: time stays ``simulated_comm_time_s`` (communication only); nothing is made up in its place.
SYSTEM_FIELDS: dict[str, str] = {
    "simulated_time_s": "simulated wall-clock time in seconds under the system profile: "
    "compute + communication + waiting of the slowest worker (peergrad.system.SystemClock)",
}
#: Record fields of the elastic engine only (``--elastic``), after :data:`METRIC_FIELDS`.
ELASTIC_FIELDS = {"workers_present": "workers in the quorum at the record (elastic engine): "
                  "the record's means over workers are over these"}
#: Keys of ``summary.json``'s ``system`` object (a run with ``--system``): the profile as given
#: and each worker's clock split over the whole run, seconds, mean and max over the workers;
#: per worker ``compute_s + comm_s + idle_s + absent_s`` is its simulated time.
SYSTEM_SUMMARY_FIELDS: dict[str, str] = {
    "profile": "--system as given (a preset name or a TOML file)",
    "name": "the profile's name",
    "resolved": "the profile as it ran (every field of peergrad.system.SystemProfile, SI units: "
    "seconds, bytes/s; flops_per_step filled in when counted from the model)",
    "compute_s_mean": "time spent computing steps, mean over workers",
    "compute_s_max": "time spent computing steps, max over workers",
    "comm_s_mean": "time spent receiving messages (latency + transfer), mean over workers",
    "comm_s_max": "time spent receiving messages, max over workers",
    "idle_s_mean": "time waiting for slower workers or barriers, mean over workers",
    "idle_s_max": "time waiting for slower workers or barriers, max over workers",
    "absent_s_mean": "time away (churn), mean over workers",
    "absent_s_max": "time away (churn), max over workers",
}
WALL_CLOCK_FIELDS = ("wall_time_s",)
TRAIN_EVAL_MAX = 10_000

#: The fields of :data:`METRIC_FIELDS` named after the metric, as a run whose metric is lower
#: is better (``Task(metric_mode="min")``: an error, perplexity) names them: such a value is not
#: an accuracy, so its fields say ``metric``.
MIN_METRIC_FIELDS: dict[str, str] = {
    "test_accuracy": "test_metric",
    "val_accuracy": "val_metric",
    "worker_test_accuracy": "worker_test_metric",
    "best_test_accuracy": "best_test_metric",
}
#: The words a record's metric fields carry (``test_<word>``), with the direction of each:
#: ``accuracy`` (higher is better: accuracy, or a user's higher-is-better metric), ``metric``
#: (a user's lower-is-better metric) and ``perplexity`` (the built-in language-model metric,
#: ``Task(metric="perplexity")``).
METRIC_NAMES: dict[str, str] = {"accuracy": "max", "metric": "min", "perplexity": "min"}
_MIN_DOCS = {
    "test_metric": "the task's lower-is-better metric (metric_mode='min') of x̄ on the test set; "
    "None without test data",
    "val_metric": "the task's lower-is-better metric of x̄ on the validation split; None without "
    "a split",
    "worker_test_metric": "mean over (up to eval_workers) workers' own models of the task's "
    "lower-is-better test metric",
    "test_perplexity": "perplexity of x̄ on the test set: exp(test_loss), exp of the mean token "
    "cross-entropy (lower is better)",
    "val_perplexity": "perplexity of x̄ on the validation split: exp(val_loss)",
    "worker_test_perplexity": "mean over (up to eval_workers) workers' own models of their "
    "test perplexity exp(own test loss)",
}


def _word(metric_mode: str, metric_name: str | None) -> str:
    if metric_mode not in ("max", "min"):
        raise ValueError(f"metric_mode must be one of 'max', 'min', got {metric_mode!r}")
    if metric_name is None:
        return "accuracy" if metric_mode == "max" else "metric"
    if METRIC_NAMES.get(metric_name) != metric_mode:
        allowed = ", ".join(f"{k} ({v})" for k, v in METRIC_NAMES.items())
        raise ValueError(
            f"metric_name must be one of {allowed} and agree with metric_mode {metric_mode!r}, "
            f"got {metric_name!r}"
        )
    return metric_name


def metric_field(name: str, metric_mode: str = "max", metric_name: str | None = None) -> str:
    """The record field ``name`` (``test_accuracy``, ``val_accuracy``, ``worker_test_accuracy``,
    ``best_test_accuracy``; any other field is returned as is) of a run whose metric has
    direction ``metric_mode`` and the word ``metric_name`` (:data:`METRIC_NAMES`; None: the
    default word of the direction): ``test_metric`` ... for ``"min"`` (see
    :data:`MIN_METRIC_FIELDS`), ``test_perplexity`` ... for ``metric_name="perplexity"``.
    ``ValueError`` names ``metric_mode`` and its allowed values, or ``metric_name`` when it is
    unknown or disagrees with the direction."""
    word = _word(metric_mode, metric_name)
    if word == "accuracy" or name not in MIN_METRIC_FIELDS:
        return name
    return name.replace("accuracy", word)


def metric_fields(metric_mode: str = "max", metric_name: str | None = None) -> dict[str, str]:
    """The fields of every record of a run whose metric has direction ``metric_mode`` (and
    word ``metric_name``, see :func:`metric_field`), with their meaning: :data:`METRIC_FIELDS`,
    the metric's fields renamed."""
    out: dict[str, str] = {}
    for name, doc in METRIC_FIELDS.items():
        field = metric_field(name, metric_mode, metric_name)
        out[field] = _MIN_DOCS.get(field, doc)
    return out


def reaches(value: float, target: float, metric_mode: str = "max") -> bool:
    """Whether ``value`` is at the ``target`` or beyond it (``>=`` for ``"max"``, ``<=`` for
    ``"min"``)."""
    return value >= target if metric_mode == "max" else value <= target


def train_eval_indices(n_train: int, limit: int = TRAIN_EVAL_MAX) -> Tensor:
    """The training samples ``train_loss`` is measured on: all of them up to ``limit``
    (:data:`TRAIN_EVAL_MAX`), else that many chosen by a fixed generator (seed 0), in order."""
    g = torch.Generator().manual_seed(0)
    return torch.randperm(n_train, generator=g)[:limit].sort().values


def targets_per_sample(data: TensorData | MapData) -> int:
    """How many class targets one sample of in-memory data holds (:func:`count_targets` of the
    first sample's target); 1 for a Dataset (not read here: the run passes the count of its
    first batch, :class:`Evaluator`)."""
    if isinstance(data, TensorData):
        return count_targets(data.y[0])
    return 1


def count_targets(target: Tensor) -> int:
    """The class targets of one sample: ``L`` for a window of ``L`` integer token ids, 1 for a
    class label and for floating-point targets (regression outputs count as one sample)."""
    if target.is_floating_point() or target.is_complex():
        return 1
    return max(1, int(target.numel()))


class Evaluator:
    """Metrics of the averaged model x̄ and of (a fixed subset of) the workers' own models.

    ``chunk`` and the training subset of ``train_loss`` (:data:`TRAIN_EVAL_MAX`) count targets:
    for data whose samples hold ``k`` targets each (windows of ``k`` next tokens,
    :func:`targets_per_sample`) they are ``chunk // k`` and ``TRAIN_EVAL_MAX // k`` samples
    (at least 1), so a language model is evaluated on as many tokens per chunk and per
    ``train_loss`` as a classifier on samples (``per_sample``: ``k``; None:
    :func:`targets_per_sample`). ``metric_name``: the word of the metric's fields
    (:func:`metric_field`)."""

    def __init__(
        self,
        model: WorkerModel,
        train: TensorData | MapData,
        test: TensorData | MapData | None,
        eval_workers: int,
        n_workers: int,
        chunk: int = 2048,
        *,
        val: TensorData | MapData | None = None,
        metric_mode: str = "max",
        metric_name: str | None = None,
        per_sample: int | None = None,
    ) -> None:
        self.model = model
        self.metric_mode = metric_mode
        self.metric_name = _word(metric_mode, metric_name)
        self.test = test
        self.val = val
        per = max(1, per_sample) if per_sample is not None else targets_per_sample(train)
        keep = train_eval_indices(len(train), max(1, TRAIN_EVAL_MAX // per))
        self.train = train.subset(keep)
        m = min(eval_workers, n_workers)
        self.worker_rows = torch.linspace(0, n_workers - 1, m).round().long().unique()
        self.chunk = max(1, chunk // per)

    def _stats(
        self, models: list[tuple[Tensor, dict[str, Tensor]]], data: TensorData | MapData
    ) -> list[tuple[Tensor, Tensor | None]]:
        """Mean loss and metric of every group of models ``(X [m, D], buffers [m, ...])`` on
        ``data``, read once (chunk by chunk) for all groups."""
        sums: list[list[Tensor | None]] = [
            [torch.zeros(X.shape[0], dtype=torch.float64, device=X.device), None] for X, _ in models
        ]
        for xb, yb in data.chunks(self.chunk):
            for (X, buffers), acc in zip(models, sums, strict=True):
                l_, m_ = self.model.evaluate(X, buffers, xb, yb)
                acc[0] = acc[0] + l_.double()  # type: ignore[operator]
                if m_ is not None:
                    acc[1] = m_.double() if acc[1] is None else acc[1] + m_.double()
        count = len(data)
        finish = self.model.metric_from_mean
        return [
            (loss / count, finish(metric / count) if metric is not None else None)  # type: ignore[operator, misc]
            for loss, metric in sums
        ]

    @torch.no_grad()
    def __call__(
        self, x: Tensor, buffers: dict[str, Tensor], comm: Communicator
    ) -> dict[str, float | None]:
        """Metrics of x (this process's rows ``[w, D]``, buffers ``[w, ...]``); identical on
        every process."""
        x_bar = comm.mean(x, account=False)[:1]
        b_bar = mean_buffers(buffers, comm)
        consensus = comm.mean(worker_sum((x - x_bar) ** 2)[:, None], account=False)[0, 0]
        [(train_loss, _)] = self._stats([(x_bar, b_bar)], self.train)
        out: dict[str, float | None] = {"train_loss": float(train_loss[0])}
        if self.test is None:
            out.update(test_loss=None, test_accuracy=None)
            out.update(worker_test_loss=None, worker_test_accuracy=None)
        else:
            # Workers' own models: each process evaluates its rows that are in the fixed subset.
            ids = comm.worker_ids.to(x.device)
            selected = torch.isin(ids, self.worker_rows.to(x.device))
            models = [(x_bar, b_bar)]
            if bool(selected.any()):
                models.append((x[selected], {k: b[selected] for k, b in buffers.items()}))
            stats = self._stats(models, self.test)
            test_loss, test_acc = stats[0]
            out["test_loss"] = float(test_loss[0])
            out["test_accuracy"] = float(test_acc[0]) if test_acc is not None else None
            local = torch.zeros(x.shape[0], 3, dtype=torch.float64, device=x.device)
            if len(stats) > 1:
                w_loss, w_acc = stats[1]
                w_acc = w_acc if w_acc is not None else torch.zeros_like(w_loss)
                local[selected] = torch.stack([w_loss, w_acc, torch.ones_like(w_loss)], dim=1)
            totals = comm.mean(local, account=False)[0] * comm.n_workers
            out["worker_test_loss"] = float(totals[0] / totals[2])
            out["worker_test_accuracy"] = (
                float(totals[1] / totals[2]) if out["test_accuracy"] is not None else None
            )
        if self.val is None:
            out.update(val_loss=None, val_accuracy=None)
        else:
            [(val_loss, val_metric)] = self._stats([(x_bar, b_bar)], self.val)
            out["val_loss"] = float(val_loss[0])
            out["val_accuracy"] = float(val_metric[0]) if val_metric is not None else None
        out["consensus_distance"] = float(consensus)
        if self.metric_name != "accuracy":  # a lower-is-better metric is not called an accuracy
            out = {metric_field(k, self.metric_mode, self.metric_name): v for k, v in out.items()}
        return out


def _comm_counters(comm: Communicator) -> dict[str, Any]:
    out = {
        "bytes_sent": comm.bytes_sent.detach().clone(),
        "simulated_comm_time_s": float(comm.simulated_comm_time_s),
        "rounds": int(getattr(comm, "rounds", 0)),
    }
    system_clock = getattr(comm, "clock", None)
    if system_clock is not None:  # --system: every worker's time, churn counters, generator
        out["clock"] = system_clock.state_dict()
    return out


def _restore_comm_counters(comm: Communicator, saved: dict[str, Any]) -> None:
    if tuple(saved["bytes_sent"].shape) != tuple(comm.bytes_sent.shape):
        raise ValueError(
            f"--resume: the checkpoint counts bytes for {saved['bytes_sent'].shape[0]} local "
            f"worker(s), this process holds {comm.bytes_sent.shape[0]}"
        )
    system_clock, clock_state = getattr(comm, "clock", None), saved.get("clock")
    if (system_clock is None) != (clock_state is None):
        raise ValueError(
            "--resume: the checkpoint was saved "
            f"{'without' if clock_state is None else 'with'} a system profile (--system) and "
            f"this run has {'one' if clock_state is None else 'none'}; resume with the run's "
            "configuration"
        )
    if system_clock is not None:
        try:
            system_clock.load_state_dict(clock_state)
        except ValueError as exc:
            raise ValueError(f"--resume: {exc}") from None
    comm.bytes_sent.copy_(saved["bytes_sent"])
    comm.simulated_comm_time_s = float(saved["simulated_comm_time_s"])
    if hasattr(comm, "rounds"):
        comm.rounds = int(saved["rounds"])  # type: ignore[attr-defined]


class Recorder:
    """Records, checkpoints, the NaN/Inf guard and the progress bar of one run (see the module
    docstring). ``out_dir``: where ``metrics.jsonl`` goes (None: not written, or not rank 0);
    ``ckpt_dir``: where checkpoints go; ``bar``: a tqdm bar (set by the caller)."""

    def __init__(
        self,
        config: TrainConfig,
        session: Session,
        evaluator: Evaluator,
        *,
        n_train: int,
        total: int,
        eval_every: int,
        out_dir: Path | None,
        ckpt_dir: Path | None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config, self.session, self.evaluator = config, session, evaluator
        self.n_train, self.total, self.eval_every = n_train, total, eval_every
        self.out_dir, self.ckpt_dir, self.on_record = out_dir, ckpt_dir, on_record
        comm = session.comm
        self.n = config.workers
        self.worker_ids: list[int] = comm.worker_ids.tolist()
        self.is_main = self.worker_ids[0] == 0
        self.distributed = config.engine == "distributed"
        self.shard_index = self.worker_ids[0] if self.distributed else 0
        self.shards = self.n if self.distributed else 1
        self.saving = config.checkpoint_every is not None
        self.records: list[dict[str, Any]] = []
        self.lines: list[str] = []  # metrics.jsonl so far, exactly as written
        self.wall = 0.0
        self.loss_sum = torch.zeros(len(self.worker_ids), 1, dtype=torch.float64)
        self.loss_count = 0
        self.last_saved: int | None = None
        self.first_bad: list[tuple[int, int]] = []  # distributed: this worker's first bad step
        self.bar: Any = None
        self.reached = 0  # the last step done (for the Ctrl-C message)
        self.tensorboard = (
            TensorBoardLog(out_dir / TENSORBOARD_DIR)
            if config.tensorboard and out_dir is not None
            else None
        )

    # ------------------------------------------------------------------ resume
    def resume(self) -> int:
        """Restore the session and these counters from the last checkpoint in ``ckpt_dir``;
        return its step. ``ValueError`` names what does not match this run."""
        s, config, n = self.session, self.config, self.n
        assert self.ckpt_dir is not None
        manifest = ckpt.read_manifest(self.ckpt_dir)
        if (manifest["engine"], manifest["workers"]) != (config.engine, n):
            raise ValueError(
                f"--resume: the checkpoint in {str(self.ckpt_dir)!r} was written by the "
                f"{manifest['engine']} engine with {manifest['workers']} workers; this run is "
                f"--engine {config.engine} --workers {n}"
            )
        saved = ckpt.load_shard(self.ckpt_dir, manifest, self.shard_index)
        if list(saved["worker_ids"]) != self.worker_ids:
            raise ValueError(
                f"--resume: checkpoint shard {self.shard_index} holds worker(s) "
                f"{list(saved['worker_ids'])}, this process is worker(s) {self.worker_ids}"
            )
        s.x.copy_(ckpt.restore_into(s.x.clone(), saved["x"], "x"))
        s.state = ckpt.restore_into(s.state, saved["state"], f"{config.algorithm_label} state")
        saved_buffers = saved.get("buffers", {})
        if set(saved_buffers) != set(s.buffers):
            raise ValueError(
                f"--resume: the checkpoint holds model buffers {sorted(saved_buffers)}, this "
                f"run's model has {sorted(s.buffers)}"
            )
        for name, buf in s.buffers.items():
            buf.copy_(ckpt.restore_into(buf.clone(), saved_buffers[name], f"buffer {name}"))
        s.sampler.load_state_dict(saved["sampler"])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and s.device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], s.device)
        _restore_comm_counters(s.comm, saved["comm"])
        loop = saved["loop"]
        start = int(saved["step"])
        self.wall, self.loss_count = float(loop["wall"]), int(loop["loss_count"])
        if start > self.total:
            raise ValueError(
                f"--resume: the checkpoint is at step {start}, beyond this run's last step "
                f"{self.total} (--steps / --epochs); give at least --steps {start}"
            )
        self.loss_sum.copy_(loop["loss_sum"])
        self.lines = list(saved["metrics_lines"])
        self.records = [json.loads(line) for line in self.lines]
        self.write_csv()  # drop the rows recorded after the checkpoint, as metrics.jsonl
        if self.tensorboard is not None:  # hide the scalars recorded after the checkpoint
            self.tensorboard.purge_step = start + 1
        self.last_saved = start
        self.reached = start
        return start

    # ------------------------------------------------------------------ records
    def record(self, step: int) -> dict[str, Any]:
        """Evaluate, append one record to ``metrics.jsonl`` (rewrite ``metrics.csv``, add it to
        the TensorBoard log) and return it."""
        s, config, n = self.session, self.config, self.n
        comm = s.comm
        rec: dict[str, Any] = {
            "epoch": step * n * config.batch_size / self.n_train,
            "step": step,
            "samples_seen": step * n * config.batch_size,
            "lr": s.lr_at(max(step, 1)),
        }
        rec.update(self.evaluator(s.x, s.buffers, comm))
        mean_loss = comm.mean(self.loss_sum, account=False)[0, 0]
        rec["minibatch_loss"] = float(mean_loss) / self.loss_count if self.loss_count else None
        rec["bytes_sent_per_worker"] = float(
            comm.mean(comm.bytes_sent[:, None], account=False)[0, 0]
        )
        rec["comm_rounds"] = int(getattr(comm, "rounds", 0))
        rec["wall_time_s"] = self.wall
        rec["simulated_comm_time_s"] = comm.simulated_comm_time_s
        simulated_time_s = getattr(comm, "simulated_time_s", None)
        if simulated_time_s is not None:  # a system profile (SYSTEM_FIELDS)
            rec["simulated_time_s"] = simulated_time_s
        workers_present = getattr(comm, "workers_present", None)
        if workers_present is not None:  # the elastic engine (ELASTIC_FIELDS)
            rec["workers_present"] = int(workers_present)
        self.loss_sum.zero_()
        self.loss_count = 0
        self.records.append(rec)
        line = json.dumps(rec) + "\n"
        self.lines.append(line)
        if self.out_dir is not None:
            with open(self.out_dir / "metrics.jsonl", "a") as fh:
                fh.write(line)
            self.write_csv()
        if self.tensorboard is not None:
            self.tensorboard.add(rec)
        if self.on_record is not None:
            self.on_record(rec)
        return rec

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> None:
        """Save this process's checkpoint shard of ``step``; rank 0 commits it."""
        s = self.session
        assert self.ckpt_dir is not None
        payload = {
            "format": ckpt.FORMAT,
            "step": step,
            "worker_ids": self.worker_ids,
            "x": ckpt.to_plain(s.x),
            "state": ckpt.to_plain(s.state),
            "buffers": ckpt.to_plain(s.buffers),
            "sampler": ckpt.to_plain(s.sampler.state_dict()),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(s.device) if s.device.type == "cuda" else None,
            "comm": _comm_counters(s.comm),
            "loop": {
                "wall": self.wall,
                "loss_sum": self.loss_sum.clone(),
                "loss_count": self.loss_count,
            },
            "metrics_lines": list(self.lines),
        }
        ckpt.save_shard(self.ckpt_dir, step, self.shard_index, payload)
        barrier = getattr(s.comm, "barrier", None)
        if self.distributed and barrier is not None:
            barrier()  # every shard of this step is on disk before rank 0 commits it
        if self.is_main:
            ckpt.commit(
                self.ckpt_dir, step, engine=self.config.engine, workers=self.n, shards=self.shards
            )
        self.last_saved = step

    # ------------------------------------------------------------------ the guard
    def check_finite(self, step: int, losses: Tensor, g: Tensor, saving: bool, sync: bool) -> None:
        """Stop when some worker's loss or parameters (every step), or its state (before a
        checkpoint, so no saved state is bad) are not finite; name the step and what went bad.

        Simulated engine: at once. Distributed engine: each rank checks its worker every step
        and remembers the first bad step; the ranks compare notes (one all-reduce of 2n numbers)
        only when ``sync`` (every ``NONFINITE_SYNC_EVERY`` steps and before every record and
        checkpoint), so that the guard adds no collective to most steps and all ranks stop
        together, before anything non-finite is recorded or saved."""
        s, n = self.session, self.n
        codes = nonfinite_codes(losses, s.x, state=s.state if saving else None)
        if bool(codes.any()):  # rare: say exactly what went bad
            codes = nonfinite_codes(losses, s.x, g, s.state)
        found = step
        if self.distributed:
            if bool(codes.any()) and not self.first_bad:
                self.first_bad.append((step, int(codes[0])))
            if not sync:
                return
            full = torch.zeros(1, 2 * n, dtype=torch.float64)
            if self.first_bad:
                full[0, self.worker_ids[0]], full[0, n + self.worker_ids[0]] = self.first_bad[0]
            m = getattr(s.comm, "workers_present", n)  # elastic: the mean is over the quorum
            both = (s.comm.mean(full, account=False)[0] * m).round().to(torch.int64)
            steps_all, codes_all = both[:n], both[n:]
            if not bool(steps_all.any()):
                return
            step = int(steps_all[steps_all > 0].min())
            codes_all = torch.where(steps_all == step, codes_all, 0)
        elif bool(codes.any()):
            codes_all = codes.cpu()
        else:
            return
        where = str(self.ckpt_dir) if self.ckpt_dir is not None else "the run folder"
        kept = (
            f"the last good checkpoint (step {self.last_saved}) is kept in {where}"
            if self.last_saved is not None
            else "no checkpoint was saved (use --checkpoint-every N)"
        )
        seen = f" (the ranks compared notes at step {found})" if found != step else ""
        raise NonFiniteError(
            f"non-finite values at step {step}: {describe_nonfinite(codes_all)}{seen}; the run "
            f"stopped and nothing from step {step} on was recorded or saved; {kept}. The run "
            f"diverged: try a smaller --lr (now {s.lr_at(step)})"
        )

    # ------------------------------------------------------------------ after every step
    def after_step(self, step: int, losses: Tensor, g: Tensor, seconds: float) -> None:
        """Count the step's time and losses; guard, record, save and move the bar as due."""
        config = self.config
        self.reached = step  # done: Ctrl-C from here on reports it (never below a checkpoint)
        self.wall += seconds
        every = config.checkpoint_every
        saving_now = self.saving and (step % every == 0 or step == self.total)  # type: ignore[operator]
        recording = step % self.eval_every == 0 or step == self.total
        sync = saving_now or recording or step % NONFINITE_SYNC_EVERY == 0
        if saving_now:  # averages posted with mean_start land in the state before it is read
            ckpt.drain_in_flight(self.session.comm)
        self.check_finite(step, losses, g, saving_now, sync)
        self.loss_sum += losses.detach().to("cpu", torch.float64)[:, None]
        self.loss_count += 1
        if recording:
            rec = self.record(step)
            if self.bar is not None:
                self.bar.set_postfix(_postfix(rec))
        if saving_now:
            self.save(step)
        if self.bar is not None:
            self.bar.update(1)

    # ------------------------------------------------------------------ the end
    def summary(self) -> dict[str, Any]:
        """The last record, the best test metric (``best_test_accuracy``, the largest; for a
        lower-is-better metric ``best_test_metric`` or ``best_test_perplexity``, the smallest;
        None without one), the metric's direction ``metric_mode`` (and ``metric_name`` for
        perplexity) and the engine."""
        mode, word = self.evaluator.metric_mode, self.evaluator.metric_name
        summary = dict(self.records[-1])
        key = metric_field("test_accuracy", mode, word)
        values = [r[key] for r in self.records if r.get(key) is not None]
        pick = max if mode == "max" else min
        summary[metric_field("best_test_accuracy", mode, word)] = pick(values) if values else None
        summary["metric_mode"] = mode
        if word == "perplexity":  # not the direction's default word: say which it is
            summary["metric_name"] = word
        summary["engine"] = self.config.engine
        system_clock = getattr(self.session.comm, "clock", None)
        if system_clock is not None:  # SYSTEM_SUMMARY_FIELDS
            split = system_clock.summary()
            del split["simulated_time_s"]  # the last record's, already in the summary
            summary["system"] = {
                "profile": self.config.system,
                "name": system_clock.profile.name,
                "resolved": dataclasses.asdict(system_clock.profile),
                **split,
            }
        return summary

    def finish(self, summary: dict[str, Any], title: str, *, plots: bool = True) -> None:
        """Write ``summary.json`` and, with ``plots``, the plots (rank 0 with a run folder)."""
        if self.out_dir is None:
            return
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if plots:
            plot_run(self.records, self.out_dir, title)
        self.close()

    def write_csv(self) -> None:
        """Rewrite ``metrics.csv`` from :attr:`records` (rank 0 with a run folder), so that it
        always holds what ``metrics.jsonl`` holds (see :mod:`peergrad.train.logs`)."""
        if self.out_dir is not None and self.out_dir.is_dir():
            write_metrics_csv(self.out_dir / "metrics.csv", self.records)

    def close(self) -> None:
        """Close the TensorBoard event file (with ``--tensorboard``); idempotent. Called at the
        end (:meth:`finish`) and when the step loop stops early or is interrupted."""
        if self.tensorboard is not None:
            self.tensorboard.close()


def _postfix(rec: dict[str, Any]) -> dict[str, str]:
    out = {"loss": f"{rec['train_loss']:.4f}"}
    if rec.get("test_accuracy") is not None:
        out["acc"] = f"{rec['test_accuracy']:.4f}"
    elif rec.get("test_perplexity") is not None:
        out["ppl"] = f"{rec['test_perplexity']:.4g}"
    elif rec.get("test_metric") is not None:
        out["metric"] = f"{rec['test_metric']:.4g}"
    if rec.get("lr") is not None:
        out["lr"] = f"{rec['lr']:.3g}"
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """A two-column text table of the final metrics."""
    mode = summary.get("metric_mode") if summary.get("metric_mode") in ("max", "min") else "max"
    # mode is "max" or "min" (checked on the line above)
    word = summary.get("metric_name")
    word = word if METRIC_NAMES.get(word) == mode else None  # type: ignore[arg-type]
    names = (
        *metric_fields(cast(str, mode), word),
        *SYSTEM_FIELDS,
        *ELASTIC_FIELDS,
        metric_field("best_test_accuracy", cast(str, mode), word),
    )
    rows = [(k, summary[k]) for k in names if k in summary]
    system = summary.get("system")
    if isinstance(system, dict):  # --system: each worker's clock split, mean and max
        rows += [
            (f"system.{k}", system[k])
            for k in SYSTEM_SUMMARY_FIELDS
            if k in system and k != "resolved"  # the whole profile: summary.json only
        ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 14}"]
    for k, v in rows:
        if isinstance(v, float):
            text = f"{v:.6g}" if not k.endswith("accuracy") else f"{v:.4f}"
        else:
            text = str(v)
        lines.append(f"{k:<{width}}  {text}")
    return "\n".join(lines)


def clock() -> float:
    """The wall clock the step loop measures with (``time.perf_counter``)."""
    return time.perf_counter()
