"""``peergrad compare``: several algorithms (labels) on one task, with seeds and a
learning-rate grid; the study itself is :func:`peergrad.study.compare.compare`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from peergrad.train.config import ALGORITHM_FIELDS, TrainConfig, merge_algorithm_options

from .common import (
    ALGORITHM_NAMES,
    EXIT_INTERRUPTED,
    HelpFormatter,
    command_argv,
    is_main_process,
    parse_set,
    stop_on_peer_failure,
)
from .train import add_train_arguments, config_from_args, explicit_fields

if TYPE_CHECKING:
    from peergrad.study.compare import CompareEntry
    from peergrad.train.loop import TrainingInterrupted

#: What a comparison runs: base config, entries, seeds, learning-rate grid, per-run plots.
Plan = tuple[TrainConfig, list["CompareEntry"], Any, Any, bool]


def add_compare_command(sub: Any) -> None:
    """``peergrad compare``: the flags of ``peergrad train`` plus the study's own."""
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
        f"(algorithms: {', '.join(ALGORITHM_NAMES)}; or package.module:Class, your own, "
        "labelled by its name); no default: required unless --resume",
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
    _add_study_arguments(p_cmp)
    p_cmp.set_defaults(func=cmd_compare)


def _add_study_arguments(p: argparse.ArgumentParser) -> None:
    """``--seeds``, ``--lr-grid``, ``--resume``, ``--run-plots``, ``--target-accuracy``,
    ``--out`` and ``--overwrite`` of ``peergrad compare``."""
    p.add_argument(
        "--seeds",
        default=None,
        metavar="S[,S...]",
        help="run every label once per seed (integers >= 0, no repeats); the tables give mean ± "
        "std over the seeds and the plots a ±1 std band (default: one run at --seed)",
    )
    p.add_argument(
        "--lr-grid",
        default=None,
        metavar="LR[,LR...]",
        help="run every label that has an lr at each of these values (> 0, no repeats; "
        "--set-for LABEL:lr-grid=... for one label, --set-for LABEL:lr=... to fix it) and keep, "
        "per label, the value with the best seed-mean final validation accuracy (validation "
        "loss without a metric) on the --val-fraction split, never the test set (default: no "
        "grid, each label at its lr)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the interrupted comparison in DIR: finished runs are kept, a run with a "
        "checkpoint continues from it, others start again (no other options; default: a new "
        "comparison)",
    )
    p.add_argument(
        "--run-plots",
        action="store_true",
        help="also draw each run folder's loss_accuracy_vs_{steps,bytes}.png (default: only "
        "the comparison's plots; `peergrad plot DIR/LABEL` draws a run's later)",
    )
    p.add_argument(
        "--target-accuracy",
        type=float,
        default=0.9,
        help="test accuracy of x̄ whose first crossing is reported (default: 0.9)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="comparison folder; one that holds a comparison is refused unless --overwrite "
        "(default: a new runs/compare-<labels>-<topology><n>-<dataset>-...)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="first remove the comparison in --out (compare.json, compare.md, the plots and "
        "every run folder in it; other files stay) instead of refusing",
    )


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
    from peergrad.study.compare import compare, plan_runs
    from peergrad.train.loop import TrainingInterrupted

    if args.resume is not None:
        base, entries, seeds, lr_grid, run_plots = _resumed_plan(args)
    else:
        base, entries, seeds, lr_grid, run_plots = _new_plan(args)
    is_main = is_main_process(base)
    current: list[tuple[int, CompareEntry, TrainConfig]] = []

    total = len(plan_runs(entries, seeds, lr_grid))
    announce = _announcer(current, total, seeds, is_main=is_main)
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
            else "topology" in explicit_fields(command_argv(args)),
            seeds=seeds,
            lr_grid=lr_grid,
            resume=args.resume is not None,
            run_plots=run_plots,
        )
    except TrainingInterrupted as exc:
        if is_main and current:
            _report_interrupted(exc, current[0], total)
        return EXIT_INTERRUPTED
    except PeerFailure as exc:
        stop_on_peer_failure("compare", exc, base)
    if base.engine == "distributed":
        from peergrad.comm import distributed

        distributed.destroy_process_group()
    if result.out_dir is not None:
        print(result.table)
        print(f"compare folder: {result.out_dir}")
    return 0


def _resumed_plan(args: argparse.Namespace) -> Plan:
    """``--resume DIR``: the plan recorded in ``DIR/compare.json``; sets ``args.out`` and
    ``args.target_accuracy`` from it. Any other option is refused (the comparison continues as
    it was planned); :func:`~peergrad.study.compare.compare` validates every run again."""
    from peergrad.study.compare import load_plan

    # every flag counts, not only the train flags: --seeds, --lr-grid, --target-accuracy ...
    # would otherwise be ignored without a word
    given = {
        tok[2:].split("=", 1)[0].replace("-", "_")
        for tok in command_argv(args)
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
    return base, entries, seeds, lr_grid, plan["run_plots"]


def _new_plan(args: argparse.Namespace) -> Plan:
    """A new comparison from the command line. What only the command line knows is checked
    here: ``--set KEY=...`` beside the shared ``--lr`` / ``--momentum`` / ``--weight-decay``
    (:func:`~peergrad.train.config.merge_algorithm_options`, the check of ``peergrad train``)
    and ``--set lr`` beside ``--lr-grid``; a grid without ``--val-fraction`` holds 0.1 out.
    Everything else is validated by :func:`~peergrad.study.compare.compare`, before the first
    run."""
    from peergrad.study.compare import PER_ENTRY_FIELDS, build_entries, parse_lr_grid, parse_seeds

    if not args.algorithms:
        raise ValueError("compare needs --algorithms LABEL[,LABEL...] (or --resume DIR)")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    lr_grid = parse_lr_grid(args.lr_grid) if args.lr_grid is not None else None
    base = dataclasses.replace(
        config_from_args(args, skip=PER_ENTRY_FIELDS), progress=args.progress
    )
    common = parse_set(args.options)
    shared = {key: getattr(args, key) for key in ALGORITHM_FIELDS}
    merge_algorithm_options(
        common, shared, hint=" (--set-for LABEL:{key}=... changes it for one run)"
    )
    if lr_grid is not None and "lr" in common:
        raise ValueError("--set lr and --lr-grid both set the learning rate; give one")
    entries = build_entries(args.algorithms, common, parse_set_for(args.set_for))
    tuned = lr_grid is not None or any(e.lr_grid is not None for e in entries)
    if args.val_fraction is None and tuned:
        base = dataclasses.replace(base, val_fraction=0.1)
    return base, entries, seeds, lr_grid, args.run_plots


def _announcer(
    current: list[tuple[int, CompareEntry, TrainConfig]],
    total: int,
    seeds: Any,
    *,
    is_main: bool,
) -> Callable[[int, CompareEntry, TrainConfig], None]:
    """The ``on_run`` callback: remembers the run in ``current`` and, on the main process,
    prints ``peergrad compare: run I/TOTAL: LABEL (...)`` to stderr."""

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

    return announce


def _report_interrupted(
    exc: TrainingInterrupted, run: tuple[int, CompareEntry, TrainConfig], total: int
) -> None:
    """Ctrl-C during run ``run``: one line naming it, the finished runs and the ``--resume``
    command."""
    i, entry, _ = run
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
