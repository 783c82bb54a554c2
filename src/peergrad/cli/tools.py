"""The smaller commands: ``topology``, ``system``, ``algorithms``, ``plot``, ``check-adam`` and
``counterexample``. Each parses, calls the library and prints; heavy modules are imported
inside the ``cmd_*`` functions."""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

from .common import ADAM_PRESET_NAMES, ALGORITHM_NAMES, PLOT_AXIS_NAMES, HelpFormatter


def add_topology_command(sub: Any) -> None:
    """``peergrad topology NAME --workers N``."""
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


def add_system_command(sub: Any) -> None:
    """``peergrad system PROFILE --workers N``."""
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


def add_algorithms_command(sub: Any) -> None:
    """``peergrad algorithms [NAME]``."""
    p_alg = sub.add_parser(
        "algorithms",
        formatter_class=HelpFormatter,
        help="list the registered algorithms; with NAME, every option of one of them",
        description="Without NAME: every registered algorithm (and those that installed "
        "packages register in the entry-point group peergrad.algorithms), its paper and default "
        "options. NAME may also be package.module:Class, your own algorithm. "
        "With NAME: each option of that algorithm with its default, its range and its meaning "
        "(from the algorithm's docstrings).",
    )
    p_alg.add_argument(
        "name",
        nargs="?",
        default=None,
        help=f"one of: {', '.join(ALGORITHM_NAMES)}; an installed plugin's name; or "
        "package.module:Class (your own algorithm)",
    )
    p_alg.add_argument("--json", action="store_true", help="print JSON")
    p_alg.set_defaults(func=cmd_algorithms)


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
    from peergrad.algorithms import resolve_algorithm
    from peergrad.algorithms.docs import describe_options

    cls = resolve_algorithm(name)
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
    """``peergrad plot PATH...``: see :func:`peergrad.study.plotting_io.plot_folders`."""
    from peergrad.study.plotting_io import plot_folders

    for path in plot_folders(args.paths, args.out, args.x, overwrite=args.overwrite):
        print(path)
    return 0


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
