"""The configuration of a training run: everything needed to rerun it (``config.json``).

``config.json`` holds the :class:`TrainConfig` fields, i.e. what the user gave (``lr``,
``momentum`` and ``weight_decay`` are ``null`` when left to the algorithm; ``options`` holds the
``--set`` values as given), next to :data:`RECORDED_KEYS`: ``hyperparameters``, every option of
the algorithm as it ran (defaults and run-dependent values included), and ``peergrad_version``.
So the run folder alone says what ran, and ``--resume`` compares against what the user gave.

Every field carries its metadata (:func:`peergrad.train.fields.option`: help, unit, range or
choices, flag): the command-line flags, the range checks of
:func:`peergrad.train.validate.validate`, the error messages' spelling and ``peergrad compare
--set-for`` are generated from it, so adding an option is adding one field. This module imports
no torch (``peergrad --help`` builds its parser from it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peergrad._importing import algorithm_label, algorithm_spec
from peergrad.train.fields import Range, option, option_of
from peergrad.train.names import (
    ALGORITHM_DEFAULT,
    ALGORITHM_NAMES,
    BUFFERS,
    DATASET_NAMES,
    DTYPE_NAMES,
    ENGINES,
    MODEL_NAMES,
    PARTITION_NAMES,
    SYSTEM_PRESET_NAMES,
    TOPOLOGY_NAMES,
)

__all__ = [
    "ALGORITHM_FIELDS",
    "GROUPS",
    "KEY_VALUE_FIELDS",
    "PER_LABEL_FIELDS",
    "PRESET_FIELDS",
    "RECORDED_KEYS",
    "RESUMABLE_CHANGES",
    "TrainConfig",
    "flag_of",
    "merge_algorithm_options",
]

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

#: The ``--help`` sections of the ``peergrad train`` flags (:attr:`Option.group
#: <peergrad.train.fields.Option.group>`), in order.
GROUPS: dict[str, str] = {
    "setup": "engine, algorithm and topology",
    "data": "data, model and loss",
    "steps": "length of the run, step size and numerics",
    "records": "evaluation, network and system model",
    "output": "run folder, progress and checkpoints",
}

#: ``TrainConfig`` fields passed to the algorithm when set (None: the algorithm's default).
ALGORITHM_FIELDS: tuple[str, ...] = ("lr", "momentum", "weight_decay")

_AN_INTEGER = "an integer"


def _one_of(names: tuple[str, ...]) -> str:
    return f"one of: {', '.join(names)}"


@dataclasses.dataclass
class TrainConfig:
    """Options of ``peergrad train``; field names match the CLI flags (``--batch-size`` ...).

    ``options`` holds algorithm hyper-parameters given with ``--set key=value``; ``lr``,
    ``momentum`` and ``weight_decay`` are passed to the algorithm when set (None, the default,
    keeps the algorithm's own default: see ``peergrad algorithms NAME``); setting one of them
    both here and in ``options`` is an error (:meth:`algorithm_options`). ``epochs`` counts
    passes over the training set by all workers together (``samples_seen = step * n *
    batch_size``); ``steps`` overrides it. ``checkpoint_every`` (steps, None = never) saves a
    checkpoint into the run folder (see :mod:`peergrad.train.checkpoint`); the last step is
    always saved when it is set.

    ``model`` and ``dataset`` name a built-in (``mlp``, ``mnist`` ...), a user callable
    ``package.module:callable``, or ``torchvision:NAME`` / ``timm:NAME`` (see
    :mod:`peergrad.train.resolve`); ``model_options`` / ``data_options`` are the keyword
    arguments passed to it (``--model-set`` / ``--data-set key=value``; for built-in models
    ``hidden``, ``norm``, ``groups``, the ``transformer``'s ``d_model``, ``n_layers`` ...; for
    the built-in text data set ``pydoc-topics`` ``seq_len``, which also selects the
    language-model task: token cross-entropy, perplexity, its own validation block). ``loss`` is
    ``cross-entropy``, ``mse`` or ``package.module:callable``. ``lr_schedule`` (``constant``,
    ``step:EVERY,GAMMA``, ``multistep:M1,M2,...,GAMMA``, ``cosine``, ``linear``) with
    ``warmup_steps`` of linear warm-up multiplies every algorithm's step size (see
    :mod:`peergrad.train.schedules`). ``buffers`` says what happens to model buffers (BatchNorm
    running statistics): ``local`` keeps one copy per worker (as Decent-DP does), ``average``
    replaces the floating-point ones by their mean over the workers after every step in which
    the algorithm communicated (one extra all-reduce, counted in the bytes); x̄ is always
    evaluated with the mean buffers.
    ``loader_workers`` is the DataLoader ``num_workers`` for map-style datasets
    (0 = read in-process). ``val_fraction`` (in [0, 0.5]; 0 = none) holds that fraction of the
    training data out as a validation split (:func:`peergrad.data.validation_split`: a fixed
    split, the same for every seed and algorithm): the run trains on the rest and records
    ``val_loss`` / ``val_accuracy`` of x̄; ``peergrad compare --lr-grid`` selects on them. A
    task with a validation split of its own (``Task.val_data``: ``pydoc-topics``'s contiguous
    block) is evaluated on that one, always, and nothing is cut.
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

    Each field's metadata (``dataclasses.fields(TrainConfig)[i].metadata["option"]``, a
    :class:`~peergrad.train.fields.Option`) holds its flag, help text, unit and range.
    """

    engine: str = option(
        "simulated",
        group="setup",
        choices=ENGINES,
        help="simulated: all workers in this process; distributed: one worker per process "
        "(start with torchrun --nproc-per-node N)",
    )
    algorithm: str | Any = option(
        "dpsgd",
        group="setup",
        help=f"{_one_of(ALGORITHM_NAMES)}; or an installed plugin's name, or "
        "package.module:Class (your own algorithm; see `peergrad algorithms package.module:Class`)",
    )
    options: dict[str, Any] = option(
        factory=dict,
        group="setup",
        flag="--set",
        kind="key_value",
        metavar="KEY=VALUE",
        help="algorithm hyper-parameter (repeatable), e.g. --set form=atc",
    )
    topology: str = option("ring", group="setup", per_label=True, help=_one_of(TOPOLOGY_NAMES))
    workers: int = option(
        8,
        group="setup",
        range=Range(1, prefix=_AN_INTEGER),
        per_label=True,
        help="number of workers n",
    )
    erdos_renyi_p: float = option(
        0.3,
        group="setup",
        range=Range(0, 1, low_open=True),
        applies=lambda c: c.topology == "erdos-renyi",
        per_label=True,
        help="edge probability of --topology erdos-renyi",
    )
    dataset: str = option(
        "mnist",
        group="data",
        preset=True,
        help=f"{_one_of(DATASET_NAMES)}; or package.module:callable returning (train, test), "
        "each a torch Dataset or an (x, y) pair of tensors",
    )
    data_root: str | None = option(
        None,
        group="data",
        preset=True,
        help="directory of mnist-idx / cifar10 / cifar100 files (default: none)",
    )
    download: bool = option(
        True,
        group="data",
        kind="negated",
        preset=True,
        help="never download --dataset mnist-idx / cifar10 / cifar100 files missing from "
        "--data-root (fail with the expected layout instead)",
    )
    model: str = option(
        "mlp",
        group="data",
        preset=True,
        per_label=True,
        help=f"{_one_of(MODEL_NAMES)}; or package.module:callable returning an nn.Module, "
        "torchvision:NAME, timm:NAME (when installed)",
    )
    partition: str = option("iid", group="data", per_label=True, help=_one_of(PARTITION_NAMES))
    dirichlet_alpha: float = option(
        0.5,
        group="data",
        range=Range(0, low_open=True, prefix="a number"),
        per_label=True,
        help="concentration of --partition dirichlet (smaller = more skewed)",
    )
    epochs: float = option(
        10.0,
        group="steps",
        unit="passes over the training set",
        range=Range(0, low_open=True),
        applies=lambda c: c.steps is None,
        per_label=True,
        help="passes over the training set by all workers together",
    )
    steps: int | None = option(
        None,
        group="steps",
        unit="steps",
        range=Range(1),
        per_label=True,
        help="iterations; overrides --epochs (default: from --epochs)",
    )
    batch_size: int = option(
        32,
        group="steps",
        unit="samples per worker",
        range=Range(1, prefix=_AN_INTEGER),
        per_label=True,
        help="per-worker minibatch B",
    )
    lr: float | None = option(
        None,
        group="steps",
        range=Range(prefix="a finite number"),
        help=f"step size (default: {ALGORITHM_DEFAULT})",
    )
    momentum: float | None = option(
        None,
        group="steps",
        help=f"local heavy-ball momentum, or beta1 of the Adam family (default: "
        f"{ALGORITHM_DEFAULT}: 0 for the SGD family, 0.9 for the Adam family)",
    )
    weight_decay: float | None = option(
        None,
        group="steps",
        range=Range(prefix="a finite number"),
        help=f"L2 weight decay (default: {ALGORITHM_DEFAULT}: 0)",
    )
    seed: int = option(0, group="steps", help="seed of the data split, model and sampling")
    device: str = option("cpu", group="steps", per_label=True, help="cpu, cuda, cuda:N or mps")
    dtype: str = option(
        "float32",
        group="steps",
        choices=DTYPE_NAMES,
        per_label=True,
        help="floating-point type of the parameters, the data and the algorithm state",
    )
    eval_every: int | None = option(
        None,
        group="records",
        unit="steps",
        range=Range(1),
        per_label=True,
        help="steps between metric records (default: half an epoch)",
    )
    eval_workers: int = option(
        16,
        group="records",
        range=Range(1),
        per_label=True,
        help="how many workers' own models to evaluate (evenly spaced)",
    )
    latency_ms: float = option(
        1.0,
        group="records",
        unit="ms",
        range=Range(0),
        per_label=True,
        help="network model: per-message latency in milliseconds (uniform links; with --system "
        "only for --system uniform, other profiles bring their own links)",
    )
    bandwidth_gbps: float = option(
        10.0,
        group="records",
        unit="Gbit/s",
        range=Range(0, low_open=True),
        per_label=True,
        help="network model: link bandwidth in gigabits per second (uniform links; with "
        "--system only for --system uniform)",
    )
    system: str | None = option(
        None,
        group="records",
        metavar="PRESET|FILE.toml",
        help="simulated engine: run a per-worker clock under this system profile (compute "
        "time, stragglers, uneven links, failures; the distributed engine imposes it on its "
        "processes with sleeps and dropped links, churn excepted): a preset "
        f"({', '.join(SYSTEM_PRESET_NAMES)}) or a TOML file; records gain simulated_time_s and "
        "the summary each worker's compute / communication / idle split; see `peergrad system` "
        "(default: none, the communication-only simulated_comm_time_s)",
    )
    elastic: bool = option(
        False,
        group="setup",
        kind="switch",
        help="distributed engine: keep training when a worker dies and let a restarted worker "
        "rejoin from a live peer (torchft; each worker its own process, REPLICA_GROUP_ID=i; "
        "needs pip install 'peergrad[ft]' and --out; see docs/guide/elastic.md)",
    )
    lighthouse: str | None = option(
        None,
        group="setup",
        metavar="URL",
        help="--elastic: the torchft lighthouse, http://HOST:PORT (default: $TORCHFT_LIGHTHOUSE, "
        "else worker 0 starts one on port 29510 of this machine)",
    )
    timeout_s: float = option(
        60.0,
        group="setup",
        unit="s",
        range=Range(0, low_open=True, prefix="a number"),
        help="distributed engine: seconds to wait for a peer before stopping with an error",
    )
    out: str | None = option(
        None,
        group="output",
        help="run folder; one that holds a run is refused unless --overwrite (default: a new "
        "runs/<algorithm>-<topology><n>-<dataset>-<partition>-seed<seed>, the topology left out "
        "for algorithms that do not use it)",
    )
    progress: bool | None = option(
        None,
        group="output",
        kind="tristate",
        help="show the progress bar even when stderr is not a terminal (default: shown only on a "
        "terminal, so a log file gets none)",
        negated_help="hide the progress bar (default: shown only when stderr is a terminal)",
    )
    checkpoint_every: int | None = option(
        None,
        group="output",
        unit="steps",
        range=Range(1, prefix=_AN_INTEGER, note=" (steps)"),
        metavar="N",
        per_label=True,
        help="save a checkpoint into the run folder every N steps and after the last one "
        "(resume with --resume RUN_DIR; default: never)",
    )
    model_options: dict[str, Any] = option(
        factory=dict,
        group="data",
        flag="--model-set",
        kind="key_value",
        metavar="KEY=VALUE",
        preset=True,
        help="model option (repeatable): hidden=256,128 (mlp), norm=batch|group|none and "
        "groups=N (resnet20), d_model, n_layers, n_heads, context, mlp_ratio, dropout, "
        "tie_weights, attention (transformer), or a keyword argument of the --model callable",
    )
    data_options: dict[str, Any] = option(
        factory=dict,
        group="data",
        flag="--data-set",
        kind="key_value",
        metavar="KEY=VALUE",
        preset=True,
        help="keyword argument of a --dataset callable (repeatable), or seq_len=N of "
        "--dataset pydoc-topics (default 64); values read as int, float, true/false, "
        "comma-separated tuple, else text",
    )
    loss: str = option(
        "cross-entropy",
        group="data",
        preset=True,
        per_label=True,
        help="cross-entropy (records accuracy), mse, or package.module:callable "
        "loss_fn(outputs, targets) -> batch mean",
    )
    lr_schedule: str = option(
        "constant",
        group="steps",
        metavar="SCHEDULE",
        per_label=True,
        help="multiplier of every algorithm's step size over the run: constant, "
        "step:EVERY,GAMMA, multistep:M1,M2,...,GAMMA, cosine (to 0), linear (to 0); "
        "steps counted after the warm-up",
    )
    warmup_steps: int = option(
        0,
        group="steps",
        unit="steps",
        range=Range(0, prefix=_AN_INTEGER),
        metavar="N",
        per_label=True,
        help="linear warm-up: the step size at step k <= N is k/(N+1) times the base one",
    )
    buffers: str = option(
        "local",
        group="data",
        choices=BUFFERS,
        per_label=True,
        help="model buffers (BatchNorm running statistics): local = each worker its own; "
        "average = averaged over the workers for evaluation and checkpoints",
    )
    loader_workers: int = option(
        0,
        group="data",
        range=Range(0, prefix=_AN_INTEGER),
        metavar="N",
        per_label=True,
        help="DataLoader worker processes reading a map-style --dataset (0: in this process)",
    )
    val_fraction: float = option(
        0.0,
        group="data",
        range=Range(0, 0.5, note=" (0: no validation split)"),
        metavar="F",
        parser_default=None,
        help="hold F in [0, 0.5] of the training data out as a fixed validation split (the same "
        "for every seed and algorithm; records val_loss and val_accuracy); default 0 (none), "
        "and 0.1 in `peergrad compare` when a learning-rate grid is given",
    )
    tensorboard: bool = option(
        False,
        group="output",
        kind="switch",
        help="also write every record as TensorBoard scalars into RUN_DIR/tensorboard/ "
        "(needs pip install 'peergrad[tensorboard]')",
    )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (what ``config.json`` holds besides :data:`RECORDED_KEYS`).

        An ``algorithm`` given as a class or an instance is recorded as its spec
        (:func:`peergrad._importing.algorithm_spec`: a built-in's name, else
        ``package.module:Class``); an instance's fields join ``options`` (those set by
        ``options`` or by ``lr`` / ``momentum`` / ``weight_decay`` keep their value)."""
        algorithm, options = self.algorithm, dict(self.options)
        if not isinstance(algorithm, str | type) and hasattr(algorithm, "options"):
            given = {k for k in ALGORITHM_FIELDS if getattr(self, k) is not None}
            inherited = {k: v for k, v in algorithm.options().items() if k not in given}
            options = {**inherited, **options}
        plain = dataclasses.replace(self, algorithm=algorithm_spec(algorithm), options=options)
        return dataclasses.asdict(plain)

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

    @property
    def algorithm_label(self) -> str:
        """The algorithm's short name for titles, messages and folder names (its ``name`` when
        ``algorithm`` is a class or instance; the ``Class`` of ``package.module:Class``)."""
        return algorithm_label(self.algorithm)

    def algorithm_options(self) -> dict[str, Any]:
        """The options the algorithm is built with: :attr:`options` (``--set``) and each of
        :data:`ALGORITHM_FIELDS` that is set (:func:`merge_algorithm_options`; ``ValueError``
        when one is set both ways). An ``algorithm`` instance's own fields are the defaults
        these replace (:func:`peergrad.algorithms.make_algorithm`)."""
        return merge_algorithm_options(
            self.options, {k: getattr(self, k) for k in ALGORITHM_FIELDS}
        )


def merge_algorithm_options(
    options: Mapping[str, Any], values: Mapping[str, Any], *, hint: str = ""
) -> dict[str, Any]:
    """``options`` (``--set``) with every value of ``values`` (``lr``, ``momentum`` and
    ``weight_decay`` given by their own flags) that is not None: the one place where the two
    ways of setting those meet (``peergrad train``, ``train()``, ``peergrad compare``).

    Raises:
        ValueError: a key set both ways, naming both: ``--set momentum=0.5 and --momentum 0.2
            both set momentum; give only one of them``, followed by ``hint`` (formatted with
            ``key``, e.g. ``peergrad compare``'s `` (--set-for LABEL:{key}=... changes it for
            one run)``).
    """
    merged = dict(options)
    for key, value in values.items():
        if value is None:
            continue
        if key in merged:
            raise ValueError(
                f"--set {key}={merged[key]} and {flag_of(key)} {value} both set {key}; give only "
                f"one of them{hint.format(key=key)}"
            )
        merged[key] = value
    return merged


def flag_of(name: str) -> str:
    """The command-line flag of the ``TrainConfig`` field ``name`` (``model_options`` ->
    ``--model-set``, ``batch_size`` -> ``--batch-size``, ``download`` -> ``--no-download``);
    ``KeyError`` for a name that is no field."""
    return option_of(TrainConfig.__dataclass_fields__[name]).flag_for(name)


def _fields_where(test: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if test(option_of(f)))


#: ``TrainConfig`` fields given as repeatable ``KEY=VALUE`` flags, with their flag.
KEY_VALUE_FIELDS: dict[str, str] = {
    name: flag_of(name) for name in _fields_where(lambda o: o.kind == "key_value")
}
#: ``TrainConfig`` fields that one label of ``peergrad compare`` may change (``--set-for
#: LABEL:KEY=VALUE``): :attr:`Option.per_label <peergrad.train.fields.Option.per_label>`.
PER_LABEL_FIELDS: tuple[str, ...] = _fields_where(lambda o: o.per_label)
#: ``TrainConfig`` fields that only the built-in preset task reads; a run on a user's
#: :class:`~peergrad.train.task.Task` leaves them out of ``config.json`` and records ``task``.
PRESET_FIELDS: tuple[str, ...] = _fields_where(lambda o: o.preset)
