"""``peergrad train``: its flags (shared with ``peergrad compare``), the config they give,
``--resume`` and the command itself.

The flags are generated from :class:`~peergrad.train.config.TrainConfig`'s fields: one flag (two
for an on/auto/off field such as ``--progress`` / ``--no-progress``) per field, with the flag
name, help, choices, metavar and type of the field's metadata
(:class:`~peergrad.train.fields.Option`), in ``--help`` sections by
:data:`~peergrad.train.config.GROUPS`. Adding a field adds its flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Collection, Sequence
from typing import Any

from peergrad.train.config import GROUPS, RESUMABLE_CHANGES, TrainConfig
from peergrad.train.fields import FIELD_DEFAULT, Option, field_type, option_of
from peergrad.train.validate import validate

from .common import (
    EXIT_INTERRUPTED,
    KEY_VALUE_FIELDS,
    HelpFormatter,
    command_argv,
    flag_of,
    is_main_process,
    parse_set,
    stop_on_peer_failure,
)

#: ``peergrad train`` flags that are no ``TrainConfig`` field: what to do with the run folder.
COMMAND_FLAGS: tuple[str, ...] = ("--overwrite", "--resume")


def add_train_arguments(
    p: argparse.ArgumentParser,
    *,
    exclude: Collection[str] = (),
    config_class: type[TrainConfig] = TrainConfig,
    groups: dict[str, Any] | None = None,
) -> list[argparse.Action]:
    """The flags of ``peergrad train``, one per field of ``config_class`` (two for a
    ``tristate`` field), except those named in ``exclude`` (e.g. ``"--out"``).

    Each field's flag comes from its :class:`~peergrad.train.fields.Option`: ``value`` fields
    take ``--flag VALUE`` (typed as the field: int, float or text), ``key_value`` fields are
    repeatable ``KEY=VALUE``, ``switch`` / ``negated`` / ``tristate`` fields are on/off flags.
    ``groups`` (when given) receives the ``--help`` sections by key of
    :data:`~peergrad.train.config.GROUPS`, for more flags to join them. Returns the added
    actions."""
    groups = {} if groups is None else groups
    for key, title in GROUPS.items():
        if key not in groups:
            groups[key] = p.add_argument_group(title)
    actions: list[argparse.Action] = []
    for field in dataclasses.fields(config_class):
        opt = option_of(field)
        group = groups.get(opt.group)
        if group is None:
            group = groups[opt.group] = p.add_argument_group(opt.group)
        for flag, kwargs in _flag_arguments(config_class, field, opt):
            if flag not in exclude:
                actions.append(group.add_argument(flag, **kwargs))
    return actions


def _flag_arguments(
    cls: type, field: dataclasses.Field[Any], opt: Option
) -> list[tuple[str, dict[str, Any]]]:
    """``(flag, add_argument keywords)`` of one field (two for ``tristate``)."""
    name, flags = field.name, opt.flags_for(field.name)
    flag = flags[0]
    common: dict[str, Any] = {"dest": name, "help": opt.help}
    if opt.kind == "key_value":
        return [(flag, {**common, "action": "append", "default": [], "metavar": opt.metavar})]
    if opt.kind == "switch":
        return [(flag, {**common, "action": "store_true"})]
    if opt.kind == "negated":
        return [(flag, {**common, "action": "store_false"})]
    default = field.default if opt.parser_default is FIELD_DEFAULT else opt.parser_default
    if opt.kind == "tristate":
        negated = {**common, "help": opt.negated_help, "const": False}
        return [
            (flag, {**common, "action": "store_const", "const": True, "default": default}),
            (flags[1], {**negated, "action": "store_const", "default": default}),
        ]
    kind = field_type(cls, name)
    kwargs = {**common, "default": default}
    if kind in (int, float):
        kwargs["type"] = kind
    if opt.choices is not None:
        kwargs["choices"] = opt.choices
    if opt.metavar is not None:
        kwargs["metavar"] = opt.metavar
    return [(flag, kwargs)]


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
            allowed = ", ".join(flag_of(k) for k in RESUMABLE_CHANGES)
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
    """``peergrad train``: a flag per ``TrainConfig`` field, ``--overwrite`` and ``--resume``."""
    p_train = sub.add_parser(
        "train",
        formatter_class=HelpFormatter,
        help="train a model with one algorithm on a topology",
    )
    groups: dict[str, Any] = {}
    add_train_arguments(p_train, groups=groups)
    output = groups["output"]
    output.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (its config.json, metrics, plots and checkpoints; other "
        "files stay) instead of refusing",
    )
    output.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from its last checkpoint, with its config.json "
        "(only --steps, --epochs, --checkpoint-every, --timeout-s, --[no-]progress may change; "
        "default: a new run)",
    )
    p_train.set_defaults(func=cmd_train)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The configuration ``peergrad train ARGS`` runs: the flags' (:func:`config_from_args`),
    or with ``--resume`` the run's with the allowed changes (:func:`resume_config`), checked
    by :func:`~peergrad.train.validate.validate` (``ValueError`` naming the flag)."""
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
    validate(config)  # its torch-free checks answer before torch is imported
    return config


#: torch's note when ``vmap`` runs an operator without a batching rule once per worker: for
#: the built-in ``transformer`` it is the fused SDPA kernel, measured faster vmapped than the
#: batched alternatives (:mod:`peergrad.models.transformer`), so the note is not shown for it.
VMAP_FALLBACK_NOTE = "There is a performance drop because we have not yet implemented the batching"


def cmd_train(args: argparse.Namespace) -> int:
    config = train_config(args)
    if config.model == "transformer":  # the caller (cli.entry.main) restores the filters
        warnings.filterwarnings("ignore", message=VMAP_FALLBACK_NOTE, category=UserWarning)
    from peergrad.comm import PeerFailure
    from peergrad.train import NonFiniteError, format_summary, train
    from peergrad.train.loop import TrainingInterrupted

    try:
        result = train(
            config,
            resume=args.resume is not None,
            overwrite=args.overwrite,
            topology_given="topology" in explicit_fields(command_argv(args)),
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
