"""The ``peergrad`` command: ``train``, ``compare``, ``topology``, ``system``, ``algorithms``,
``plot``, ``check-adam`` and ``counterexample``.

Algorithm hyper-parameters that have no flag of their own are given with ``--set key=value``
(repeatable), so a new algorithm needs no CLI change; ``--lr``, ``--momentum`` and
``--weight-decay`` default to the algorithm's own values (``peergrad algorithms NAME``). Options
of the model and of a data callable are given the same way with ``--model-set`` / ``--data-set``
(see :mod:`peergrad.train.resolve`); ``--lr-schedule`` / ``--warmup-steps`` schedule every
algorithm's step size (see :mod:`peergrad.train.schedules`).

Exit status: 0 on success, 1 when a run fails (non-finite values, a lost peer), 2 for bad input
(one ``error:`` line naming the argument; nothing is written), 130 after Ctrl-C (one line naming
the step reached, the last checkpoint and the ``--resume`` command), 141 when the reader of
stdout goes away (``peergrad topology ... | head -3``). Warnings are one line each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from typing import Any, NoReturn, TextIO

from peergrad.train.config import RESUMABLE_CHANGES, TrainConfig
from peergrad.train.spelling import cli_spelling

DEFAULTS = TrainConfig()

# The names the parser lists, as plain tuples: the registries they come from import torch, and
# building the parser must not (``peergrad --help`` answers in well under a second; issue 25).
# tests/test_startup.py checks that each equals its registry, in order.
#: ``peergrad.algorithms.REGISTRY``
ALGORITHM_NAMES: tuple[str, ...] = (
    "allreduce",
    "dpsgd",
    "d2",
    "gradient-tracking",
    "detag",
    "decentralized-amsgrad",
    "decentralized-adagrad",
    "decentralized-adam",
    "dadam",
    "dadam-naive",
    "decentralized-adam-naive",
    "ef-sgd",
    "compressed-sgd",
    "armijo-csgd",
    "powersgd",
    "choco-sgd",
    "distributed-adam",
    "local-sgd",
)
#: ``peergrad.topology.TOPOLOGIES``
TOPOLOGY_NAMES: tuple[str, ...] = (
    "ring",
    "torus",
    "exponential",
    "one-peer-exponential",
    "complete",
    "star",
    "erdos-renyi",
    "identity",
)
#: ``peergrad.data.DATASETS``
DATASET_NAMES: tuple[str, ...] = (
    "mnist",
    "digits",
    "mnist1d",
    "mnist-idx",
    "cifar10",
    "cifar100",
    "synthetic-logistic",
)
#: ``peergrad.data.PARTITIONS``
PARTITION_NAMES: tuple[str, ...] = ("iid", "sorted", "dirichlet")
#: ``peergrad.models.MODELS``
MODEL_NAMES: tuple[str, ...] = ("logreg", "mlp", "lenet5", "resnet20")
#: ``peergrad.system.PRESETS``
SYSTEM_PRESET_NAMES: tuple[str, ...] = ("uniform", "datacenter", "two-datacenters", "edge")
#: ``peergrad.train.plots.PLOT_AXES`` (that module imports matplotlib)
PLOT_AXIS_NAMES: tuple[str, ...] = (
    "steps",
    "samples",
    "bytes",
    "rounds",
    "simulated_time",
    "wall_time",
    "epochs",
)
#: ``peergrad.transforms.generic_adam.PRESETS``
ADAM_PRESET_NAMES: tuple[str, ...] = ("generic", "adam", "rmsprop", "adagrad", "adaema", "adamnc")

#: The value that ``--lr``, ``--momentum`` and ``--weight-decay`` take when not given.
ALGORITHM_DEFAULT = "the algorithm's own, see `peergrad algorithms NAME`"
#: Exit status after Ctrl-C (128 + SIGINT) and when stdout's reader has gone (128 + SIGPIPE).
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every option's default: ``(default: X)`` is added unless the help text
    already says it (options whose default is computed, e.g. ``--lr``), and on/off flags show
    ``(default: off)``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or not action.option_strings or action.required:
            return text
        if action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:  # store_true / store_false: the flag itself is the value
            return f"{text} (default: off)"
        if action.default == []:  # repeatable (--set)
            return f"{text} (default: none)"
        if action.default is None:
            return text
        return f"{text} (default: %(default)s)"


def parse_set(items: Sequence[str], *, flag: str = "--set") -> dict[str, str]:
    """``["a=1", "b=x"] -> {"a": "1", "b": "x"}``; ``ValueError`` naming ``flag`` on a missing
    ``=``. Values stay strings (``config.json`` records what was given); the algorithm, model or
    data callable converts them (see :func:`peergrad.train.resolve.parse_option_value`)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects key=value, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


#: ``TrainConfig`` fields given as repeatable ``KEY=VALUE`` flags, with their flag.
KEY_VALUE_FIELDS: dict[str, str] = {
    "options": "--set",
    "model_options": "--model-set",
    "data_options": "--data-set",
}


def flag_of(name: str) -> str:
    """The command-line flag of the ``TrainConfig`` field ``name`` (``model_options`` ->
    ``--model-set``, ``batch_size`` -> ``--batch-size``)."""
    return KEY_VALUE_FIELDS.get(name, "--" + name.replace("_", "-"))


def add_train_arguments(
    p: argparse.ArgumentParser, *, exclude: Collection[str] = ()
) -> list[argparse.Action]:
    """The flags of ``peergrad train``, except those named in ``exclude`` (e.g. ``"--out"``).

    Returns the added actions."""
    actions: list[argparse.Action] = []

    def add(flag: str, *more: str, **kwargs: Any) -> None:
        if flag not in exclude:
            actions.append(p.add_argument(flag, *more, **kwargs))

    d = DEFAULTS
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
    return actions


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


def check_config(config: TrainConfig) -> None:
    """The checks of issue 14's fields that need no data (``ValueError`` naming the flag):
    see :func:`peergrad.train.resolve.check_config`."""
    from peergrad.train.resolve import check_config as check

    check(config)


def _stop_on_peer_failure(command: str, exc: Exception, config: TrainConfig) -> NoReturn:
    """A peer is gone: report and leave at once. Tearing down the process group could wait on
    the dead peer, which is the silent hang this error exists to prevent."""
    print(f"peergrad {command}: error: {exc}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    from peergrad.comm import distributed

    if distributed.hosts_store():  # let the peers read the heartbeats before it goes
        time.sleep(min(3.0, config.timeout_s))
    os._exit(1)


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


def _command_argv(args: argparse.Namespace) -> list[str]:
    """The arguments after the sub-command's name."""
    argv = list(args.argv)
    return argv[argv.index(args.command) + 1 :]


def _is_main_process(config: TrainConfig) -> bool:
    return config.engine == "simulated" or os.environ.get("RANK", "0") == "0"


def cmd_train(args: argparse.Namespace) -> int:
    from peergrad.comm import PeerFailure
    from peergrad.train import NonFiniteError, format_summary, train
    from peergrad.train.loop import TrainingInterrupted

    explicit = explicit_fields(_command_argv(args))
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
        if _is_main_process(config):
            print(f"peergrad train: {exc.describe()}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except PeerFailure as exc:
        _stop_on_peer_failure("train", exc, config)
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


def parse_set_for(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["dpsgd@atc:form=atc"] -> {"dpsgd@atc": {"form": "atc"}}``; ``ValueError`` otherwise."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        label, sep, rest = item.partition(":")
        if not sep or not label.strip() or "=" not in rest:
            raise ValueError(f"--set-for expects LABEL:key=value, got {item!r}")
        out.setdefault(label.strip(), {}).update(parse_set([rest]))
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    from peergrad.comm import PeerFailure
    from peergrad.train.compare import (
        PER_ENTRY_FIELDS,
        CompareEntry,
        build_entries,
        compare,
        load_plan,
        parse_lr_grid,
        parse_seeds,
        plan_runs,
    )
    from peergrad.train.loop import ALGORITHM_FIELDS, TrainingInterrupted

    if args.resume is not None:
        # every flag counts, not only the train flags: --seeds, --lr-grid, --target-accuracy ...
        # would otherwise be ignored without a word
        given = {
            tok[2:].split("=", 1)[0].replace("-", "_")
            for tok in _command_argv(args)
            if tok.startswith("--") and tok != "--"
        } - {"resume", "progress", "no_progress"}
        if given:
            raise ValueError(
                f"--resume {args.resume} continues the comparison as it was planned (its "
                f"compare.json); do not give other options ({', '.join(sorted(given))})"
            )
        plan = load_plan(args.resume)
        base = dataclasses.replace(plan["config"], progress=args.progress)
        entries, seeds, lr_grid = plan["entries"], plan["seeds"], plan["lr_grid"]
        args.out, args.target_accuracy = args.resume, plan["target_accuracy"]
        run_plots = plan["run_plots"]
    else:
        run_plots = args.run_plots
        if not args.algorithms:
            raise ValueError("compare needs --algorithms LABEL[,LABEL...] (or --resume DIR)")
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
        lr_grid = parse_lr_grid(args.lr_grid) if args.lr_grid is not None else None
        base = dataclasses.replace(
            config_from_args(args, skip=PER_ENTRY_FIELDS), progress=args.progress
        )
        check_config(base)
        common = parse_set(args.options)
        for key in ALGORITHM_FIELDS:
            value = getattr(args, key)
            if value is not None and key in common:
                flag = "--" + key.replace("_", "-")
                raise ValueError(
                    f"--set {key}={common[key]} and {flag} {value} both set {key}; give only one "
                    f"of them (--set-for LABEL:{key}=... changes it for one run)"
                )
        if lr_grid is not None and "lr" in common:
            raise ValueError("--set lr and --lr-grid both set the learning rate; give one")
        entries = build_entries(args.algorithms, common, parse_set_for(args.set_for))
        tuned = lr_grid is not None or any(e.lr_grid is not None for e in entries)
        if args.val_fraction is None and tuned:
            base = dataclasses.replace(base, val_fraction=0.1)
        elif tuned and not (0 < base.val_fraction <= 0.5):
            raise ValueError(
                f"--val-fraction must be in (0, 0.5] with a learning-rate grid, got "
                f"{base.val_fraction!r}"
            )
    is_main = _is_main_process(base)
    current: list[tuple[int, CompareEntry, TrainConfig]] = []

    total = len(plan_runs(entries, seeds, lr_grid))

    def announce(i: int, entry: CompareEntry, config: TrainConfig) -> None:
        current[:] = [(i, entry, config)]
        if is_main:
            extra = {"lr": config.options["lr"]} if "lr" in config.options else {}
            if seeds is not None:
                extra["seed"] = config.seed
            options = {**entry.options, **entry.task, **extra}
            opts = ", ".join(f"{k}={v}" for k, v in options.items())
            where = f" -> {config.out}" if config.out else ""
            print(
                f"peergrad compare: run {i + 1}/{total}: {entry.label} "
                f"({entry.algorithm}{': ' + opts if opts else ''}){where}",
                file=sys.stderr,
                flush=True,
            )

    try:
        result = compare(
            base,
            entries,
            args.out,
            args.target_accuracy,
            on_run=announce,
            overwrite=args.overwrite,
            topology_given=None
            if args.resume is not None
            else "topology" in explicit_fields(_command_argv(args)),
            seeds=seeds,
            lr_grid=lr_grid,
            resume=args.resume is not None,
            run_plots=run_plots,
        )
    except TrainingInterrupted as exc:
        if is_main and current:
            i, entry, _ = current[0]
            root = None
            if exc.run_dir is not None:  # LABEL/ or LABEL/lr0.1-seed0/ of the comparison
                root = next(
                    (p for p in exc.run_dir.parents if (p / "compare.json").is_file()),
                    exc.run_dir.parent,
                )
            done = (
                f"the {i} finished run(s) are in {root / 'compare.json'}; continue the "
                f"comparison with: peergrad compare --resume {root}"
                if i and root is not None
                else "no run had finished"
            )
            print(
                f"peergrad compare: run {i + 1}/{total} ({entry.label}) {exc.describe()}; {done}",
                file=sys.stderr,
                flush=True,
            )
        return EXIT_INTERRUPTED
    except PeerFailure as exc:
        _stop_on_peer_failure("compare", exc, base)
    if base.engine == "distributed":
        from peergrad.comm import distributed

        distributed.destroy_process_group()
    if result.out_dir is not None:
        print(result.table)
        print(f"compare folder: {result.out_dir}")
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    from peergrad.topology import make_topology, torus_shape

    p = args.erdos_renyi_p if args.name == "erdos-renyi" else None
    topo = make_topology(args.name, args.workers, seed=args.seed, p=p)
    if args.name == "torus" and args.workers > 1 and torus_shape(args.workers)[0] == 1:
        warnings.warn(
            f"torus with --workers {args.workers}: {args.workers} is prime, so the torus is "
            f"1x{args.workers}, which is a ring",
            UserWarning,
            stacklevel=1,
        )
    report = topo.report(num_params=args.params, bytes_per_element=args.bytes_per_element)
    if _print_report(report, as_json=args.json):
        return 0
    if args.show_matrix:
        import numpy as np

        with np.printoptions(precision=4, suppress=True, linewidth=160):
            for k, W in enumerate(topo.matrices):
                print(f"W({k}) =\n{W.dense}")
    return 0


def cmd_system(args: argparse.Namespace) -> int:
    """``peergrad system PRESET|FILE.toml --workers N``: the profile's compute, links and
    failures (:func:`peergrad.system.report.profile_report`)."""
    from peergrad.system import load_profile
    from peergrad.system.report import profile_report

    if args.workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {args.workers}")
    if args.flops_per_step is not None and not args.flops_per_step > 0:
        raise ValueError(f"--flops-per-step must be > 0, got {args.flops_per_step}")
    profile = load_profile(args.profile, args.workers)
    _print_report(profile_report(profile, flops_per_step=args.flops_per_step), as_json=args.json)
    return 0


def _print_report(report: dict[str, Any], *, as_json: bool) -> bool:
    """Print a ``peergrad topology`` / ``peergrad system`` report: JSON, or one aligned
    ``key  value`` line per entry; returns ``as_json``."""
    if as_json:
        print(json.dumps(report, indent=2))
        return True
    width = max(len(k) for k in report)
    for k, v in report.items():
        text = f"{v:.6g}" if isinstance(v, float) else str(v)
        print(f"{k:<{width}}  {text}")
    return False


def cmd_algorithms(args: argparse.Namespace) -> int:
    from peergrad.algorithms import describe

    if args.name is not None:
        return _describe_algorithm(args.name, as_json=args.json)
    records = describe()
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for r in records:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        print(
            f"{r['name']:<12} {r['summary']}\n{'':<12} paper: {r['paper']}\n"
            f"{'':<12} options: {opts}"
        )
    return 0


def _describe_algorithm(name: str, *, as_json: bool) -> int:
    """``peergrad algorithms NAME``: every option with its default, range and meaning."""
    from peergrad.algorithms import algorithm_class
    from peergrad.algorithms.docs import describe_options

    cls = algorithm_class(name)
    options = describe_options(cls)
    record = {
        "name": cls.name,
        "summary": cls.summary,
        "paper": cls.paper,
        "uses_topology": cls().uses_topology(),
        "options": options,
    }
    if as_json:
        print(json.dumps(record, indent=2, default=str))
        return 0
    topology = (
        "gossips over --topology"
        if record["uses_topology"]
        else "averages exactly; ignores --topology"
    )
    print(f"{cls.name}: {cls.summary}\npaper: {cls.paper}\ncommunication: {topology}\n")
    rows = [("option", "default", "range", "meaning")]
    rows += [(o["name"], repr(o["default"]), o["range"], o["meaning"]) for o in options]
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3])
    print(
        "\nSet with --set KEY=VALUE (lr, momentum, weight_decay also with --lr, --momentum, "
        "--weight-decay)."
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``peergrad plot PATH...``: see :func:`peergrad.train.plotting_io.plot_folders`."""
    from peergrad.train.plotting_io import plot_folders

    for path in plot_folders(args.paths, args.out, args.x, overwrite=args.overwrite):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from peergrad import __version__

    parser = argparse.ArgumentParser(
        prog="peergrad",
        description="Communication-efficient distributed and decentralized training.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"peergrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
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

    p_cmp = sub.add_parser(
        "compare",
        formatter_class=HelpFormatter,
        help="run several algorithms on the same task; table and curves side by side",
        description="Train every algorithm of --algorithms on the same task (the flags of "
        "`peergrad train`), then write DIR/<label>/ (one run folder each), DIR/compare.json, "
        "DIR/compare.md (final metrics; steps, samples, bytes, simulated time and rounds to "
        "reach --target-accuracy) and DIR/compare_vs_{samples,bytes,simulated_time,rounds}.png. "
        "Everything is checked before the first run starts.",
    )
    p_cmp.add_argument(
        "--algorithms",
        default=None,
        metavar="LABEL[,LABEL...]",
        help="comma-separated run labels: an algorithm name, optionally followed by @name to "
        "run one algorithm several times, e.g. dpsgd,allreduce,dpsgd@atc "
        f"(algorithms: {', '.join(ALGORITHM_NAMES)}); no default: required unless --resume",
    )
    add_train_arguments(p_cmp, exclude=("--algorithm", "--set", "--out", "--overwrite"))
    p_cmp.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="algorithm hyper-parameter for every run whose algorithm has it (runs whose "
        "algorithm lacks it are left alone; an option none of them has is an error); "
        "repeatable",
    )
    p_cmp.add_argument(
        "--set-for",
        dest="set_for",
        action="append",
        default=[],
        metavar="LABEL:KEY=VALUE",
        help="option of one label, overriding --set: an algorithm hyper-parameter (--set-for "
        "dpsgd@atc:form=atc), a task option of `peergrad train` (topology, workers, batch-size, "
        "lr-schedule, partition, epochs ...: --set-for dpsgd@exp:topology=exponential) or its "
        "lr-grid (--set-for detag:lr-grid=0.1,0.3); repeatable",
    )
    p_cmp.add_argument(
        "--seeds",
        default=None,
        metavar="S[,S...]",
        help="run every label once per seed (integers >= 0, no repeats); the tables give mean ± "
        "std over the seeds and the plots a ±1 std band (default: one run at --seed)",
    )
    p_cmp.add_argument(
        "--lr-grid",
        default=None,
        metavar="LR[,LR...]",
        help="run every label that has an lr at each of these values (> 0, no repeats; "
        "--set-for LABEL:lr-grid=... for one label, --set-for LABEL:lr=... to fix it) and keep, "
        "per label, the value with the best seed-mean final validation accuracy (validation "
        "loss without a metric) on the --val-fraction split, never the test set (default: no "
        "grid, each label at its lr)",
    )
    p_cmp.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the interrupted comparison in DIR: finished runs are kept, a run with a "
        "checkpoint continues from it, others start again (no other options; default: a new "
        "comparison)",
    )
    p_cmp.add_argument(
        "--run-plots",
        action="store_true",
        help="also draw each run folder's loss_accuracy_vs_{steps,bytes}.png (default: only "
        "the comparison's plots; `peergrad plot DIR/LABEL` draws a run's later)",
    )
    p_cmp.add_argument(
        "--target-accuracy",
        type=float,
        default=0.9,
        help="test accuracy of x̄ whose first crossing is reported (default: 0.9)",
    )
    p_cmp.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="comparison folder; one that holds a comparison is refused unless --overwrite "
        "(default: a new runs/compare-<labels>-<topology><n>-<dataset>-...)",
    )
    p_cmp.add_argument(
        "--overwrite",
        action="store_true",
        help="first remove the comparison in --out (compare.json, compare.md, the plots and "
        "every run folder in it; other files stay) instead of refusing",
    )
    p_cmp.set_defaults(func=cmd_compare)

    p_topo = sub.add_parser(
        "topology",
        formatter_class=HelpFormatter,
        help="mixing matrix, spectral gap and degree of a graph",
    )
    p_topo.add_argument("name", help="topology name")
    p_topo.add_argument("--workers", type=int, required=True, help="number of workers n")
    p_topo.add_argument(
        "--erdos-renyi-p", type=float, default=0.3, help="edge probability of erdos-renyi"
    )
    p_topo.add_argument("--seed", type=int, default=0, help="seed of erdos-renyi")
    p_topo.add_argument(
        "--params",
        type=int,
        default=1_000_000,
        help="model size D (values per message) for bytes per gossip round",
    )
    p_topo.add_argument(
        "--bytes-per-element", type=int, default=4, help="bytes per value (4: float32)"
    )
    p_topo.add_argument("--json", action="store_true", help="print JSON")
    p_topo.add_argument("--show-matrix", action="store_true", help="print W(k)")
    p_topo.set_defaults(func=cmd_topology)

    p_sys = sub.add_parser(
        "system",
        formatter_class=HelpFormatter,
        help="compute, links and failures of a system profile (--system)",
        description="Print a system profile for N workers: the step time, speeds and "
        "stragglers, the links' latency and bandwidth (min / median / max over the directed "
        "links, groups) and the failures, in the TOML file's units (ms, Gbit/s). PROFILE is a "
        "preset or a TOML file (format: the docstring of peergrad.system.profile and "
        "examples/system_two_racks.toml).",
    )
    p_sys.add_argument(
        "profile",
        metavar="PROFILE",
        help="a preset (uniform, datacenter, two-datacenters, edge) or a .toml file",
    )
    p_sys.add_argument("--workers", type=int, required=True, help="number of workers n")
    p_sys.add_argument(
        "--flops-per-step",
        type=float,
        default=None,
        metavar="F",
        help="FLOPs of one step, to show the step time of a profile that gives only "
        "compute.device_flops (default: reported as counted from the model at run time)",
    )
    p_sys.add_argument("--json", action="store_true", help="print JSON")
    p_sys.set_defaults(func=cmd_system)

    p_alg = sub.add_parser(
        "algorithms",
        formatter_class=HelpFormatter,
        help="list the registered algorithms; with NAME, every option of one of them",
        description="Without NAME: every registered algorithm, its paper and default options. "
        "With NAME: each option of that algorithm with its default, its range and its meaning "
        "(from the algorithm's docstrings).",
    )
    p_alg.add_argument(
        "name", nargs="?", default=None, help=f"one of: {', '.join(ALGORITHM_NAMES)}"
    )
    p_alg.add_argument("--json", action="store_true", help="print JSON")
    p_alg.set_defaults(func=cmd_algorithms)

    add_plot_command(sub)
    add_generic_adam_commands(sub)
    return parser


def add_plot_command(sub: Any) -> None:
    """``peergrad plot PATH... [--x AXES] [--out DIR] [--overwrite]``."""
    p_plot = sub.add_parser(
        "plot",
        formatter_class=HelpFormatter,
        help="redraw the plots of run and compare folders (against any x axis)",
        description="Read run folders (metrics.jsonl) and compare folders (compare.json) and "
        "write plot_vs_<axis>.png (train loss and test accuracy of x̄) for each axis of --x. One "
        "folder: its curves (a label with several seeds: mean ± std band). Several folders: "
        "overlaid, labelled by folder name. No other file is touched.",
    )
    p_plot.add_argument(
        "paths", nargs="+", metavar="PATH", help="a run folder or a compare folder (repeatable)"
    )
    p_plot.add_argument(
        "--x",
        default=None,
        metavar="AXES",
        help=f"comma-separated x axes among {', '.join(PLOT_AXIS_NAMES)} (default: all of them)",
    )
    p_plot.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="folder of the plots (default: the PATH itself; required with several PATHs)",
    )
    p_plot.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing plot_vs_<axis>.png files in the output folder instead of refusing",
    )
    p_plot.set_defaults(func=cmd_plot)


# ---------------------------------------------------------------- generic Adam (issue 8)
SCHEDULE_HELP = (
    "schedule text [SCALE*]NAME[:P1,P2,...], NAME one of: const[:c], poly:p (t^-p), inv-sqrt, "
    "one-minus-poly:r[,c] (1 - c t^-r), adagrad (1 - 1/t), zou:r (1 - (0.001+0.999r)/t^r), "
    "geometric:lam (lam^(t-1)), adam-bias:b1,b2[,p], sqrt-bias:b2"
)


def add_generic_adam_commands(sub: Any) -> None:
    """``peergrad check-adam`` and ``peergrad counterexample`` (generic Adam, spec §5)."""
    p_chk = sub.add_parser(
        "check-adam",
        formatter_class=HelpFormatter,
        help="check Zou et al.'s sufficient condition for generic-Adam schedules",
        description="Evaluate the sufficient condition SC1-SC4 of Zou et al. (CVPR 2019, "
        "arXiv:1811.09358) for the schedules alpha_t, theta_t, beta_t over t = 1..HORIZON, "
        "say which parts fail and print the SC4 ratio at every decade. Exit status 0 when the "
        "condition holds, 1 when it fails. Example: peergrad check-adam --alpha inv-sqrt "
        "--theta adagrad --beta const:0.9. " + SCHEDULE_HELP + ".",
    )
    p_chk.add_argument(
        "--preset",
        choices=ADAM_PRESET_NAMES,
        default="generic",
        help="start from a preset's schedules (default: generic = alpha_t 1/sqrt(t), "
        "theta_t zou:1, beta 0.9); --alpha/--theta/--beta replace them",
    )
    p_chk.add_argument(
        "--alpha", default=None, help="alpha_t (its scale is irrelevant; default: the preset's)"
    )
    p_chk.add_argument(
        "--theta",
        default=None,
        help="theta_t (Adam's beta2, time-varying; default: the preset's)",
    )
    p_chk.add_argument(
        "--beta", default=None, help="beta_t (first-moment weight; default: the preset's)"
    )
    p_chk.add_argument("--horizon", type=int, default=10**6, help="T (default 10^6; >= 100)")
    p_chk.add_argument("--json", action="store_true", help="print JSON")
    p_chk.set_defaults(func=cmd_check_adam)

    p_cex = sub.add_parser(
        "counterexample",
        formatter_class=HelpFormatter,
        help="run Reddi et al.'s counterexample: Adam vs generic Adam, with plots",
        description="Run the counterexample of Reddi et al. (ICLR 2018) on [-1, 1] (optimum "
        "x* = -1). online: f_t = 3x when t mod 3 = 1, else -x; Adam (beta1 = 0, beta2 = 0.1) vs "
        "generic Adam with theta_t = 1 - 1/t. stochastic: f_t = 1010x w.p. 0.01, else -10x, 16 "
        "seeds; generic Adam with theta_t = zou:r for each --r, and bias-corrected Adam. "
        "alpha_t = ALPHA/sqrt(t). Writes DIR/counterexample_VARIANT.{png,json}.",
    )
    p_cex.add_argument(
        "--variant",
        choices=("online", "stochastic"),
        default="online",
        help="the online (deterministic) or the stochastic counterexample",
    )
    p_cex.add_argument(
        "--steps", type=int, default=None, help="T (default: 10^4 online, 10^6 stochastic)"
    )
    p_cex.add_argument("--alpha", type=float, default=0.5, help="alpha_t = ALPHA/sqrt(t)")
    p_cex.add_argument("--x1", type=float, default=0.5, help="starting point in [-1, 1]")
    p_cex.add_argument(
        "--r",
        default="0,0.25,0.5,0.75,1",
        metavar="R[,R...]",
        help="stochastic: exponents r of theta_t = zou:r",
    )
    p_cex.add_argument(
        "--out", default="runs/counterexample", metavar="DIR", help="folder of the plot and JSON"
    )
    p_cex.set_defaults(func=cmd_counterexample)


def cmd_check_adam(args: argparse.Namespace) -> int:
    from peergrad.transforms.generic_adam import PRESETS, check_sufficient_condition

    base = PRESETS[args.preset]()
    alpha = args.alpha if args.alpha is not None else base.alpha
    theta = args.theta if args.theta is not None else base.theta
    beta = args.beta if args.beta is not None else base.beta
    report = check_sufficient_condition(alpha, theta, beta, args.horizon)
    if args.json:
        decades = [10**k for k in range(1, 10) if 10**k <= args.horizon]
        print(
            json.dumps(
                {
                    "alpha": str(report_schedule(alpha)),
                    "theta": str(report_schedule(theta)),
                    "beta": str(report_schedule(beta)),
                    "horizon": report.horizon,
                    "holds": report.passed,
                    "failed": list(report.failed),
                    "conditions": {
                        c.name: {"ok": c.ok, "detail": c.detail} for c in report.conditions
                    },
                    "c0": report.c0,
                    "sc4_ratio": {str(T): report.ratio_at(T) for T in decades},
                },
                indent=2,
            )
        )
    else:
        print(
            f"alpha_t = {report_schedule(alpha)}, theta_t = {report_schedule(theta)}, "
            f"beta_t = {report_schedule(beta)}"
        )
        print(report.summary())
    return 0 if report.passed else 1


def report_schedule(value: Any) -> str:
    from peergrad.transforms.generic_adam import as_schedule

    return str(as_schedule(value))


def cmd_counterexample(args: argparse.Namespace) -> int:
    from pathlib import Path

    from peergrad.problems.reddi import plot_counterexample, run_counterexample, standard_runs

    try:
        r_values = tuple(float(r) for r in args.r.split(","))
    except ValueError:
        raise ValueError(f"--r expects comma-separated numbers, got {args.r!r}") from None
    steps = args.steps if args.steps is not None else (10**4 if args.variant == "online" else 10**6)
    problem, runs = standard_runs(args.variant, r_values, alpha=args.alpha)
    start = time.perf_counter()
    result = run_counterexample(problem, runs, steps, x1=args.x1)
    wall = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = (
        f"Reddi et al. counterexample ({args.variant}), alpha_t = {args.alpha:g}/sqrt(t), "
        f"x1 = {args.x1:g}, T = {steps:,}"
        + (f", {problem.seeds} seeds" if problem.seeds > 1 else "")
    )
    png = plot_counterexample(result, out / f"counterexample_{args.variant}.png", title)
    summary = {
        "variant": args.variant,
        "problem": repr(problem),
        "steps": steps,
        "alpha": args.alpha,
        "x1": args.x1,
        "wall_time_s": wall,
        "runs": {
            name: {
                "schedules": runs[name].describe(),
                "final_x_mean": float(result.final_x[i].mean()),
                "final_x_min": float(result.final_x[i].min()),
                "final_x_max": float(result.final_x[i].max()),
                "average_regret_mean": float(result.average_regret[i].mean()),
                "objective_gap_mean": float(
                    result.mean_gradient * (result.final_x[i].mean() + 1.0)
                ),
            }
            for i, name in enumerate(result.names)
        },
    }
    (out / f"counterexample_{args.variant}.json").write_text(json.dumps(summary, indent=2) + "\n")
    width = max(len(n) for n in result.names)
    print(f"{'run':<{width}}  x_(T+1) (mean)  F(x_(T+1)) - F(x*)  average regret R_T/T")
    for name, rec in summary["runs"].items():
        print(
            f"{name:<{width}}  {rec['final_x_mean']:+.4f}         "
            f"{rec['objective_gap_mean']:<18.4g}  {rec['average_regret_mean']:.4g}"
        )
    print(f"optimum x* = -1; T = {steps:,}; {wall:.1f} s; plot: {png}")
    return 0


def _one_line_warnings(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints ``peergrad COMMAND: warning: ...`` on one line."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split())
        print(f"peergrad {command}: warning: {text}", file=file or sys.stderr, flush=True)

    return show


def _stdout_gone() -> int:
    """The reader of stdout has gone (``| head``): point stdout at /dev/null so that the
    interpreter's final flush is quiet, and leave with 128 + SIGPIPE, as ``cat`` would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (e.g. captured)
        pass
    finally:
        os.close(devnull)
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``peergrad ARGV``; returns the exit status (see the module docstring)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        with warnings.catch_warnings(), cli_spelling():  # messages name --flags, not fields
            warnings.showwarning = _one_line_warnings(args.command)
            code = int(args.func(args))
        sys.stdout.flush()  # a broken pipe shows up here, not at interpreter exit
        return code
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the exception held
        print(f"peergrad {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt:  # before or after the steps (the loop reports its own step)
        print(f"peergrad {args.command}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
