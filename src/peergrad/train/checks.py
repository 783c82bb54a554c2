"""The checks of a configuration that need neither torch nor the data: :func:`check_fields`.

They are the first part of :func:`peergrad.train.validate.validate` (the one check every entry
point runs) and import nothing heavy, so that ``peergrad train --workers 0`` is refused before
the command imports torch. Ranges and choices come from the fields' metadata
(:func:`peergrad.train.fields.check_option`); names are checked against the torch-free tuples
of :mod:`peergrad.train.names` (equal to the registries, see ``tests/test_startup.py``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from peergrad.train.config import TrainConfig
from peergrad.train.fields import check_option
from peergrad.train.names import (
    ALGORITHM_NAMES,
    DATASET_NAMES,
    MODEL_NAMES,
    PARTITION_NAMES,
    ROOT_DATASETS,
    TEXT_DATA_OPTIONS,
    TEXT_DATASET_NAMES,
    TOPOLOGY_NAMES,
)

__all__ = [
    "check_algorithm_name",
    "check_fields",
    "check_names",
    "unknown_dataset",
    "unknown_model",
]


def check_fields(config: TrainConfig, *, custom_task: bool = False) -> None:
    """Every check of ``config`` that needs no import and no data, in this order:

    - each field against its metadata (:func:`~peergrad.train.fields.check_option`): numbers
      in their range (``--workers`` an integer >= 1, ``--epochs`` > 0 unless ``--steps`` is
      given, ``--val-fraction`` in [0, 0.5], ``--erdos-renyi-p`` in (0, 1] for that topology,
      ``--lr`` / ``--weight-decay`` finite ...), ``--engine`` / ``--dtype`` / ``--buffers``
      among their choices, ``--set`` / ``--model-set`` / ``--data-set`` dicts;
    - the names of ``--algorithm``, ``--topology``, ``--partition`` and built-in ``--model`` /
      ``--dataset`` (:func:`check_names`);
    - ``lr``, ``momentum`` or ``weight_decay`` set both by its flag and by ``--set``
      (:meth:`TrainConfig.algorithm_options`);
    - ``--lr-schedule`` parses, and ``--warmup-steps`` is shorter than ``--steps`` when given;
    - ``--checkpoint-every`` on the distributed engine has ``--out``;
    - ``--data-root`` of the data sets read from a folder (``mnist-idx``, ``cifar10``,
      ``cifar100``): given, a folder, and present unless it may be downloaded.

    ``custom_task``: the run trains a user's :class:`~peergrad.train.task.Task`, so the preset
    fields (``--model``, ``--dataset``, ``--data-root``) are labels only and are not checked.

    Raises:
        ValueError: the first bad field, naming its flag, what it accepts and the value given.
        TypeError: ``--lr-schedule`` is not a string.
    """
    for field in dataclasses.fields(config):
        check_option(config, field)
    check_names(config, custom_task=custom_task)
    config.algorithm_options()
    _check_schedule(config)
    if config.engine == "distributed" and config.checkpoint_every is not None and not config.out:
        raise ValueError(
            "--checkpoint-every with --engine distributed needs --out DIR: a folder every "
            "process can write (each rank saves its own shard there)"
        )
    if not custom_task:
        _check_data_root(config)


def unknown_model(spec: object) -> ValueError:
    """The error of a ``--model`` that is no built-in name and no ``module:callable``."""
    return ValueError(
        f"--model {spec!r}: unknown model; allowed: {', '.join(MODEL_NAMES)}, "
        "package.module:callable, torchvision:NAME, timm:NAME"
    )


def unknown_dataset(spec: object) -> ValueError:
    """The error of a ``--dataset`` that is no built-in name and no ``module:callable``."""
    return ValueError(
        f"--dataset {spec!r}: unknown data set; allowed: {', '.join(DATASET_NAMES)}, "
        "package.module:callable"
    )


def check_names(config: TrainConfig, *, custom_task: bool = False) -> None:
    """Unknown ``--algorithm`` / ``--topology`` / ``--partition`` names, with the valid ones;
    a ``--model`` / ``--dataset`` without ``:`` that is no built-in, and ``--data-set``
    options given to a built-in data set other than a text one's
    (:data:`~peergrad.train.names.TEXT_DATA_OPTIONS`: ``seq_len``) (not checked with
    ``custom_task``). Import paths
    (``package.module:callable``) are checked by :func:`peergrad.train.resolve.check_resolvable`.

    Raises:
        ValueError: ``--algorithm: unknown algorithm 'nope'; choose one of: allreduce, ...``,
            ``--model 'vit': unknown model; allowed: ...`` and the like.
    """
    check_algorithm_name(config.algorithm)
    for flag, what, value, valid in (
        ("--topology", "topology", config.topology, TOPOLOGY_NAMES),
        ("--partition", "partition", config.partition, PARTITION_NAMES),
    ):
        if value not in valid:
            raise ValueError(f"{flag}: unknown {what} {value!r}; choose one of: {', '.join(valid)}")
    if custom_task:
        return
    model, dataset = config.model, config.dataset
    if isinstance(model, str) and ":" not in model and model not in MODEL_NAMES:
        raise unknown_model(model)
    if isinstance(dataset, str) and ":" not in dataset:
        if dataset not in DATASET_NAMES:
            raise unknown_dataset(dataset)
        if dataset in TEXT_DATASET_NAMES:
            unknown = sorted(set(config.data_options) - set(TEXT_DATA_OPTIONS))
            if unknown:
                raise ValueError(
                    f"--data-set {', '.join(unknown)}: the built-in data set {dataset!r} has "
                    f"no such option; accepted: {', '.join(TEXT_DATA_OPTIONS)}"
                )
        elif config.data_options:
            raise ValueError(
                f"--data-set {', '.join(sorted(config.data_options))}: the built-in data set "
                f"{dataset!r} takes no options"
            )


def check_algorithm_name(algorithm: object) -> None:
    """``--algorithm``: a built-in name, the name of an installed plugin (entry-point group
    ``peergrad.algorithms``, listed without loading it), or left to the resolver: a
    ``package.module:Class`` string, a class or an instance
    (:func:`peergrad.algorithms.registry.resolve_algorithm`, run by
    :func:`peergrad.train.build.build_algorithm`, imports and checks them).

    Raises:
        ValueError: ``--algorithm: unknown algorithm 'nope'; choose one of: allreduce, ...``.
    """
    if not isinstance(algorithm, str) or ":" in algorithm or algorithm in ALGORITHM_NAMES:
        return
    import importlib.metadata  # only for a name that is no built-in: plugins are rare

    plugins = [
        ep.name
        for ep in importlib.metadata.entry_points(group="peergrad.algorithms")
        if ep.name not in ALGORITHM_NAMES
    ]
    if algorithm not in plugins:
        raise ValueError(
            f"--algorithm: unknown algorithm {algorithm!r}; choose one of: "
            f"{', '.join([*ALGORITHM_NAMES, *plugins])}, or package.module:Class"
        )


def _check_schedule(config: TrainConfig) -> None:
    """``--lr-schedule`` parses with ``--warmup-steps`` (shorter than ``--steps`` when given;
    against the run's steps once they are known, in :func:`peergrad.train.loop.prepare`)."""
    from peergrad.train.schedules import LRSchedule

    w = config.warmup_steps
    total = config.steps if isinstance(config.steps, int) and config.steps >= 1 else w + 1
    LRSchedule.parse(config.lr_schedule, warmup_steps=w, total_steps=total)


def _check_data_root(config: TrainConfig) -> None:
    """``--data-root`` of a data set read from a folder: given, a folder, and there unless it
    may be downloaded (the files themselves are checked when they are read)."""
    if config.dataset not in ROOT_DATASETS:
        return
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
