"""``peergrad train``: its flags (shared with ``peergrad compare``), the config they give,
``--resume`` and the command itself.

The flag table restates ``TrainConfig``'s fields by hand; generating it from the fields'
metadata is issue 25 item 1. It is split into groups (in ``--help`` order) only to keep each
function short.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Collection, Sequence
from typing import Any

from peergrad.train.config import RESUMABLE_CHANGES, TrainConfig

from .common import (
    ALGORITHM_DEFAULT,
    ALGORITHM_NAMES,
    DATASET_NAMES,
    DEFAULTS,
    EXIT_INTERRUPTED,
    KEY_VALUE_FIELDS,
    MODEL_NAMES,
    PARTITION_NAMES,
    SYSTEM_PRESET_NAMES,
    TOPOLOGY_NAMES,
    HelpFormatter,
    check_config,
    command_argv,
    flag_of,
    is_main_process,
    parse_set,
    stop_on_peer_failure,
)

#: ``add(flag, *more, **kwargs)``: adds one ``peergrad train`` flag unless it is excluded.
AddArgument = Callable[..., None]


def add_train_arguments(
    p: argparse.ArgumentParser, *, exclude: Collection[str] = ()
) -> list[argparse.Action]:
    """The flags of ``peergrad train``, except those named in ``exclude`` (e.g. ``"--out"``).

    Returns the added actions."""
    actions: list[argparse.Action] = []

    def add(flag: str, *more: str, **kwargs: Any) -> None:
        if flag not in exclude:
            actions.append(p.add_argument(flag, *more, **kwargs))

    for group in (
        _setup_arguments,
        _model_data_arguments,
        _step_arguments,
        _record_arguments,
        _output_arguments,
    ):
        group(add, DEFAULTS)
    return actions


def _setup_arguments(add: AddArgument, d: TrainConfig) -> None:
    """Engine, algorithm and topology."""
    add(
        "--engine",
        default=d.engine,
        choices=("simulated", "distributed"),
        help="simulated: all workers in this process; distributed: one worker per process "
        "(start with torchrun --nproc-per-node N)",
    )
    add(
        "--timeout-s",
        type=float,
        default=d.timeout_s,
        help="distributed engine: seconds to wait for a peer before stopping with an error",
    )
    add("--algorithm", default=d.algorithm, help=f"one of: {', '.join(ALGORITHM_NAMES)}")
    add(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="algorithm hyper-parameter (repeatable), e.g. --set form=atc",
    )
    add("--topology", default=d.topology, help=f"one of: {', '.join(TOPOLOGY_NAMES)}")
    add("--workers", type=int, default=d.workers, help="number of workers n")
    add(
        "--erdos-renyi-p",
        type=float,
        default=d.erdos_renyi_p,
        help="edge probability of --topology erdos-renyi",
    )


def _model_data_arguments(add: AddArgument, d: TrainConfig) -> None:
    """Data set, model, loss and partition."""
    add(
        "--dataset",
        default=d.dataset,
        help=f"one of: {', '.join(DATASET_NAMES)}; or package.module:callable returning "
        "(train, test), each a torch Dataset or an (x, y) pair of tensors",
    )
    add(
        "--data-set",
        dest="data_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of a --dataset callable (repeatable); values read as int, float, "
        "true/false, comma-separated tuple, else text",
    )
    add(
        "--data-root",
        default=d.data_root,
        help="directory of mnist-idx / cifar10 / cifar100 files (default: none)",
    )
    add(
        "--no-download",
        dest="download",
        action="store_false",
        help="never download --dataset mnist-idx / cifar10 / cifar100 files missing from "
        "--data-root (fail with the expected layout instead)",
    )
    add(
        "--model",
        default=d.model,
        help=f"one of: {', '.join(MODEL_NAMES)}; or package.module:callable returning an "
        "nn.Module, torchvision:NAME, timm:NAME (when installed)",
    )
    add(
        "--model-set",
        dest="model_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model option (repeatable): hidden=256,128 (mlp), norm=batch|group|none and "
        "groups=N (resnet20), or a keyword argument of the --model callable",
    )
    add(
        "--loss",
        default=d.loss,
        help="cross-entropy (records accuracy), mse, or package.module:callable "
        "loss_fn(outputs, targets) -> batch mean",
    )
    add("--partition", default=d.partition, help=f"one of: {', '.join(PARTITION_NAMES)}")
    add(
        "--dirichlet-alpha",
        type=float,
        default=d.dirichlet_alpha,
        help="concentration of --partition dirichlet (smaller = more skewed)",
    )


def _step_arguments(add: AddArgument, d: TrainConfig) -> None:
    """Length of the run, batch, step size, seed and numerics."""
    add(
        "--epochs",
        type=float,
        default=d.epochs,
        help="passes over the training set by all workers together",
    )
    add(
        "--steps",
        type=int,
        default=d.steps,
        help="iterations; overrides --epochs (default: from --epochs)",
    )
    add("--batch-size", type=int, default=d.batch_size, help="per-worker minibatch B")
    add("--lr", type=float, default=d.lr, help=f"step size (default: {ALGORITHM_DEFAULT})")
    add(
        "--lr-schedule",
        default=d.lr_schedule,
        metavar="SCHEDULE",
        help="multiplier of every algorithm's step size over the run: constant, "
        "step:EVERY,GAMMA, multistep:M1,M2,...,GAMMA, cosine (to 0), linear (to 0); "
        "steps counted after the warm-up",
    )
    add(
        "--warmup-steps",
        type=int,
        default=d.warmup_steps,
        metavar="N",
        help="linear warm-up: the step size at step k <= N is k/(N+1) times the base one",
    )
    add(
        "--momentum",
        type=float,
        default=d.momentum,
        help=f"local heavy-ball momentum, or beta1 of the Adam family (default: "
        f"{ALGORITHM_DEFAULT}: 0 for the SGD family, 0.9 for the Adam family)",
    )
    add(
        "--weight-decay",
        type=float,
        default=d.weight_decay,
        help=f"L2 weight decay (default: {ALGORITHM_DEFAULT}: 0)",
    )
    add("--seed", type=int, default=d.seed, help="seed of the data split, model and sampling")
    add("--device", default=d.device, help="cpu, cuda, cuda:N or mps")
    add(
        "--dtype",
        default=d.dtype,
        choices=("float32", "float64"),
        help="floating-point type of the parameters, the data and the algorithm state",
    )


def _record_arguments(add: AddArgument, d: TrainConfig) -> None:
    """Evaluation, the network and system model, and the run folder."""
    add(
        "--eval-every",
        type=int,
        default=d.eval_every,
        help="steps between metric records (default: half an epoch)",
    )
    add(
        "--eval-workers",
        type=int,
        default=d.eval_workers,
        help="how many workers' own models to evaluate (evenly spaced)",
    )
    add(
        "--latency-ms",
        type=float,
        default=d.latency_ms,
        help="network model: per-message latency in milliseconds (uniform links; with --system "
        "only for --system uniform, other profiles bring their own links)",
    )
    add(
        "--bandwidth-gbps",
        type=float,
        default=d.bandwidth_gbps,
        help="network model: link bandwidth in gigabits per second (uniform links; with "
        "--system only for --system uniform)",
    )
    add(
        "--system",
        default=d.system,
        metavar="PRESET|FILE.toml",
        help="simulated engine: run a per-worker clock under this system profile (compute "
        "time, stragglers, uneven links, failures; the distributed engine imposes it on its "
        "processes with sleeps and dropped links, churn excepted): a preset "
        f"({', '.join(SYSTEM_PRESET_NAMES)}) or a TOML file; records gain simulated_time_s and the "
        "summary each worker's compute / communication / idle split; see `peergrad system` "
        "(default: none, the communication-only simulated_comm_time_s)",
    )
    add(
        "--out",
        default=d.out,
        help="run folder; one that holds a run is refused unless --overwrite (default: a new "
        "runs/<algorithm>-<topology><n>-<dataset>-<partition>-seed<seed>, the topology left out "
        "for algorithms that do not use it)",
    )
    add(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (its config.json, metrics, plots and checkpoints; other "
        "files stay) instead of refusing",
    )


def _output_arguments(add: AddArgument, d: TrainConfig) -> None:
    """Progress bar, buffers, loading, validation split, checkpoints and TensorBoard."""
    add(
        "--progress",
        dest="progress",
        action="store_const",
        const=True,
        default=d.progress,
        help="show the progress bar even when stderr is not a terminal (default: shown only on a "
        "terminal, so a log file gets none)",
    )
    add(
        "--no-progress",
        dest="progress",
        action="store_const",
        const=False,
        default=d.progress,
        help="hide the progress bar (default: shown only when stderr is a terminal)",
    )
    add(
        "--buffers",
        default=d.buffers,
        choices=("local", "average"),
        help="model buffers (BatchNorm running statistics): local = each worker its own; "
        "average = averaged over the workers for evaluation and checkpoints",
    )
    add(
        "--loader-workers",
        type=int,
        default=d.loader_workers,
        metavar="N",
        help="DataLoader worker processes reading a map-style --dataset (0: in this process)",
    )
    add(
        "--val-fraction",
        type=float,
        default=None,
        metavar="F",
        help="hold F in [0, 0.5] of the training data out as a fixed validation split (the same "
        "for every seed and algorithm; records val_loss and val_accuracy); default 0 (none), "
        "and 0.1 in `peergrad compare` when a learning-rate grid is given",
    )
    add(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        metavar="N",
        help="save a checkpoint into the run folder every N steps and after the last one "
        "(resume with --resume RUN_DIR; default: never)",
    )
    add(
        "--tensorboard",
        action="store_true",
        help="also write every record as TensorBoard scalars into RUN_DIR/tensorboard/ "
        "(needs pip install 'peergrad[tensorboard]')",
    )


def config_from_args(args: argparse.Namespace, *, skip: Collection[str] = ()) -> TrainConfig:
    """The ``TrainConfig`` of parsed ``train`` (or ``compare``) arguments; fields in ``skip``
    keep their defaults. ``KEY=VALUE`` flags become dicts of strings."""
    values: dict[str, Any] = {}
    for name in TrainConfig.__dataclass_fields__:
        if name in skip:
            continue
        if name in KEY_VALUE_FIELDS:
            values[name] = parse_set(getattr(args, name), flag=KEY_VALUE_FIELDS[name])
        elif (
            getattr(args, name) is not None
            or TrainConfig.__dataclass_fields__[name].default is None
        ):
            values[name] = getattr(args, name)
    return TrainConfig(**values)


def resume_config(args: argparse.Namespace, explicit: Collection[str]) -> TrainConfig:
    """The config of the run in ``args.resume`` with the allowed changes from the command line.

    ``explicit``: the ``TrainConfig`` fields given on the command line. Only
    ``RESUMABLE_CHANGES`` may differ from the run's ``config.json``; anything else
    raises ``ValueError`` naming the flag, so a resumed run is the run that was started.
    """
    from peergrad.train import checkpoint

    run_dir = args.resume
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise ValueError(f"--resume: run folder {run_dir!r} does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"--resume: {run_dir!r} is not a run folder (no config.json)")
    refuse_python_task(run_dir, path)
    checkpoint.read_manifest(run_dir)  # a clear error when the run saved no checkpoint
    saved = TrainConfig.load(path)
    given = config_from_args(args)
    changes: dict[str, Any] = {}
    for name in (f for f in TrainConfig.__dataclass_fields__ if f in explicit):
        if name == "out":
            if os.path.abspath(str(given.out)) != os.path.abspath(run_dir):
                raise ValueError(
                    f"--out {given.out!r} differs from --resume {run_dir!r}; a resumed run "
                    "continues in its own folder"
                )
            continue
        value, before = getattr(given, name), getattr(saved, name)
        if value == before:
            continue
        if name not in RESUMABLE_CHANGES:
            flag = flag_of(name)
            allowed = ", ".join("--" + k.replace("_", "-") for k in RESUMABLE_CHANGES)
            raise ValueError(
                f"{flag} {value!r} differs from the run's {before!r}: a resumed run keeps its "
                f"configuration (it may change only {allowed})"
            )
        changes[name] = value
    return TrainConfig(**{**saved.to_dict(), **changes, "out": run_dir})


def refuse_python_task(run_dir: str, path: str) -> None:
    """``ValueError`` (one line) when the run in ``run_dir`` (its ``config.json`` at ``path``)
    was made from Python with a user's ``Task`` (``config.json`` records ``task``): the CLI
    cannot rebuild its model and data, so say how to resume it from Python instead."""
    try:
        with open(path) as fh:
            recorded = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return  # TrainConfig.load gives the clear error
    task = recorded.get("task") if isinstance(recorded, dict) else None
    if not isinstance(task, dict):
        return
    name, model = task.get("name", "?"), task.get("model", "?")
    raise ValueError(
        f"--resume: {run_dir!r} was made from Python with a peergrad.Task (task {name!r}, "
        f"model {model}), which the command line cannot rebuild; resume it from Python with "
        f"the same task and config: train(config, task, resume=True) with config.out = "
        f"{run_dir!r}"
    )


def explicit_fields(argv: Sequence[str]) -> set[str]:
    """The ``TrainConfig`` fields that ``argv`` (the arguments after ``train``) sets."""
    unset = object()
    p = argparse.ArgumentParser(add_help=False)
    actions = add_train_arguments(p)
    p.add_argument("--resume")
    # ``KEY=VALUE`` flags append to their default, so they get None (= not given).
    p.set_defaults(**{**{a.dest: unset for a in actions}, **dict.fromkeys(KEY_VALUE_FIELDS, None)})
    ns, _ = p.parse_known_args(list(argv))
    return {
        k
        for k, v in vars(ns).items()
        if v is not unset and v is not None and k in TrainConfig.__dataclass_fields__
    }


def add_train_command(sub: Any) -> None:
    """``peergrad train``."""
    p_train = sub.add_parser(
        "train",
        formatter_class=HelpFormatter,
        help="train a model with one algorithm on a topology",
    )
    add_train_arguments(p_train)
    p_train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from its last checkpoint, with its config.json "
        "(only --steps, --epochs, --checkpoint-every, --timeout-s, --[no-]progress may change; "
        "default: a new run)",
    )
    p_train.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from peergrad.comm import PeerFailure
    from peergrad.train import NonFiniteError, format_summary, train
    from peergrad.train.loop import TrainingInterrupted

    explicit = explicit_fields(command_argv(args))
    if args.resume is not None:
        if args.overwrite:
            raise ValueError(
                "--overwrite and --resume contradict each other: --resume continues the run in "
                "its folder, --overwrite replaces it; give one of them"
            )
        config = resume_config(args, explicit)
    else:
        config = config_from_args(args)
    check_config(config)
    try:
        result = train(
            config,
            resume=args.resume is not None,
            overwrite=args.overwrite,
            topology_given="topology" in explicit,
        )
    except TrainingInterrupted as exc:
        if is_main_process(config):
            print(f"peergrad train: {exc.describe()}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except PeerFailure as exc:
        stop_on_peer_failure("train", exc, config)
    except NonFiniteError as exc:
        print(f"peergrad train: error: {exc}", file=sys.stderr, flush=True)
        if config.engine == "distributed":
            from peergrad.comm import distributed

            distributed.destroy_process_group()
        return 1
    if config.engine == "distributed":
        from peergrad.comm import distributed

        distributed.destroy_process_group()
    if result.out_dir is not None:
        print(format_summary(result.summary))
        print(f"run folder: {result.out_dir}")
    return 0
