"""The configuration of a training run: everything needed to rerun it (``config.json``).

``config.json`` holds the :class:`TrainConfig` fields, i.e. what the user gave (``lr``,
``momentum`` and ``weight_decay`` are ``null`` when left to the algorithm; ``options`` holds the
``--set`` values as given), next to :data:`RECORDED_KEYS`: ``hyperparameters``, every option of
the algorithm as it ran (defaults and run-dependent values included), and ``peergrad_version``.
So the run folder alone says what ran, and ``--resume`` compares against what the user gave.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

#: Keys of ``config.json`` that record what ran rather than what was asked for; they are not
#: :class:`TrainConfig` fields and :meth:`TrainConfig.from_dict` skips them. ``task``: a run on
#: a user's :class:`~peergrad.train.task.Task` (``train(config, task)``) records the task there
#: (name, model class, parameter counts, data sizes, loss, metric, ``metric_mode``) instead of
#: the preset fields it did not use (``model``, ``dataset``, ``loss`` ...).
RECORDED_KEYS: tuple[str, ...] = ("hyperparameters", "peergrad_version", "task")

#: Fields that ``peergrad train --resume`` may change; all others must match the run's.
RESUMABLE_CHANGES: tuple[str, ...] = (
    "steps",
    "epochs",
    "checkpoint_every",
    "timeout_s",
    "progress",
)


@dataclasses.dataclass
class TrainConfig:
    """Options of ``peergrad train``; field names match the CLI flags (``--batch-size`` ...).

    ``options`` holds algorithm hyper-parameters given with ``--set key=value``; ``lr``,
    ``momentum`` and ``weight_decay`` are passed to the algorithm when set (None, the default,
    keeps the algorithm's own default: see ``peergrad algorithms NAME``); setting one of them
    both here and in ``options`` is an error. ``epochs`` counts passes over the training set by
    all workers together (``samples_seen = step * n * batch_size``); ``steps`` overrides it.
    ``checkpoint_every`` (steps, None = never) saves a checkpoint into the run folder (see
    :mod:`peergrad.train.checkpoint`); the last step is always saved when it is set.

    ``model`` and ``dataset`` name a built-in (``mlp``, ``mnist`` ...), a user callable
    ``package.module:callable``, or ``torchvision:NAME`` / ``timm:NAME`` (see
    :mod:`peergrad.train.resolve`); ``model_options`` / ``data_options`` are the keyword
    arguments passed to it (``--model-set`` / ``--data-set key=value``; for built-in models
    ``hidden``, ``norm``, ``groups`` ...). ``loss`` is ``cross-entropy``, ``mse`` or
    ``package.module:callable``. ``lr_schedule`` (``constant``, ``step:EVERY,GAMMA``,
    ``multistep:M1,M2,...,GAMMA``, ``cosine``, ``linear``) with ``warmup_steps`` of linear
    warm-up multiplies every algorithm's step size (see :mod:`peergrad.train.schedules`).
    ``buffers`` says what happens to model buffers (BatchNorm running statistics): ``local``
    keeps one copy per worker (as Decent-DP does), ``average`` replaces the floating-point
    ones by their mean over the workers after every step in which the algorithm communicated
    (one extra all-reduce, counted in the bytes); x̄ is always evaluated with the mean buffers.
    ``loader_workers`` is the DataLoader ``num_workers`` for map-style datasets
    (0 = read in-process). ``val_fraction`` (in [0, 0.5]; 0 = none) holds that fraction of the
    training data out as a validation split (:func:`peergrad.data.validation_split`: a fixed
    split, the same for every seed and algorithm): the run trains on the rest and records
    ``val_loss`` / ``val_accuracy`` of x̄; ``peergrad compare --lr-grid`` selects on them.
    ``tensorboard`` also writes every record's numbers as TensorBoard scalars into the run
    folder's ``tensorboard/`` (needs the ``tensorboard`` package: ``peergrad[tensorboard]``).
    ``progress``: the progress bar on stderr; None (default) shows it only when stderr is a
    terminal (none in a log file), True forces it (``--progress``), False hides it
    (``--no-progress``).
    ``system`` (``--system``): a system profile, a preset name (``uniform``, ``datacenter``,
    ``two-datacenters``, ``edge``) or a TOML file (:mod:`peergrad.system.profile`), that the
    simulated engine's per-worker clock runs under (compute time, stragglers, uneven links,
    failures; records gain ``simulated_time_s``); None (default): no profile, every number as
    without one. ``latency_ms`` / ``bandwidth_gbps`` are the uniform-links shorthand: they set
    the links of the nominal ``simulated_comm_time_s`` model and of ``system="uniform"``; with
    any other profile the links are the profile's, and giving them other values than their
    defaults is an error naming both (put the links in the profile's ``[links]`` table).
    """

    engine: str = "simulated"
    algorithm: str = "dpsgd"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    topology: str = "ring"
    workers: int = 8
    erdos_renyi_p: float = 0.3
    dataset: str = "mnist"
    data_root: str | None = None
    download: bool = True
    model: str = "mlp"
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    epochs: float = 10.0
    steps: int | None = None
    batch_size: int = 32
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    eval_every: int | None = None
    eval_workers: int = 16
    latency_ms: float = 1.0
    bandwidth_gbps: float = 10.0
    system: str | None = None
    timeout_s: float = 60.0
    out: str | None = None
    progress: bool | None = None
    checkpoint_every: int | None = None
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    data_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    loss: str = "cross-entropy"
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    buffers: str = "local"
    loader_workers: int = 0
    val_fraction: float = 0.0
    tensorboard: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (what ``config.json`` holds besides :data:`RECORDED_KEYS`)."""
        return dataclasses.asdict(self)

    def record(self, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """The content of ``config.json``: the fields (what the user gave) and, under
        :data:`RECORDED_KEYS`, the algorithm's resolved ``hyperparameters`` and the version."""
        from peergrad._version import __version__

        return {
            **self.to_dict(),
            "hyperparameters": dict(hyperparameters),
            "peergrad_version": __version__,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config from a dict of fields (:data:`RECORDED_KEYS` are skipped); ``ValueError``
        names unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in RECORDED_KEYS}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(names)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write the fields as JSON (without :data:`RECORDED_KEYS`; runs write :meth:`record`)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """The config in a ``config.json`` (what the user gave)."""
        return cls.from_dict(json.loads(Path(path).read_text()))
