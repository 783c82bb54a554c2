"""What a comparison with seeds and a learning-rate grid costs beyond its runs (issue 17).

``peergrad compare --seeds 0,1,2 --lr-grid 0.03,0.1,0.3`` over 4 labels (dpsgd, d2,
gradient-tracking, detag) on the default task (MNIST digits, MLP, ring of 8, 10 epochs, 10%
validation split): 36 runs in one process, sharing one load of the data set. Measured in one
run of this script, on the same machine, one after the other:

- ``T``: the wall clock of ``compare(...)`` (validation of every label, the 36 runs, the tables
  and plots), started with the data set not loaded yet;
- ``L``: one load of the data set (``load_dataset``), cold;
- ``S_train``: the sum over the 36 runs of their training wall time (``wall_time_s`` of the last
  record: the steps, evaluation excluded), as recorded by the comparison itself;
- ``S_run``: the sum over the same 36 configurations of the wall clock of one ``train(config)``
  call each (steps, evaluations, the run folder and its two plots), i.e. what the runs cost one
  by one in a warm process, as ``peergrad train`` would run them (without its start-up and its
  own data load).

Both at two evaluation cadences, in one run of the script: the default (``eval_every`` unset:
every half epoch, 21 evaluations of x̄ on the training, validation and test data and of the
workers' own models on the test data) and ``--sparse-eval-every`` (default 1000: one evaluation
at step 0 and one at the end), which leaves the comparison's own cost (set-up of each run, the
tables, the four comparison plots) next to the steps.

Printed: ``T / (S_train + L)`` (the issue's target: <= 1.2) and ``T / (S_run + L)`` (what the
comparison adds to the runs themselves). Usage: ``python benchmarks/compare_overhead.py
[--epochs 10] [--repeats 1] [--sparse-eval-every 1000]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from peergrad.data import load_dataset
from peergrad.study.compare import compare, entry_config, plan_runs
from peergrad.train import TrainConfig, build_entries, resolve, train

LABELS = "dpsgd,d2,gradient-tracking,detag"
SEEDS = (0, 1, 2)
GRID = (0.03, 0.1, 0.3)


def one_repeat(epochs: float, root: Path, eval_every: int | None) -> dict[str, float]:
    base = TrainConfig(epochs=epochs, progress=False, val_fraction=0.1, eval_every=eval_every)
    entries = build_entries(LABELS, {}, {})
    resolve._load_builtin.cache_clear()
    t0 = time.perf_counter()
    load_dataset("mnist")
    load_s = time.perf_counter() - t0
    resolve._load_builtin.cache_clear()  # the comparison starts cold
    t0 = time.perf_counter()
    result = compare(base, entries, root / "cmp", 0.9, seeds=SEEDS, lr_grid=GRID)
    compare_s = time.perf_counter() - t0
    train_s = sum(recs[-1]["wall_time_s"] for recs in result.records.values())
    run_s = 0.0
    for spec in plan_runs(entries, SEEDS, GRID):
        config = entry_config(
            base, spec.entry, root / "single" / spec.name, seed=spec.seed, lr=spec.lr
        )
        t0 = time.perf_counter()
        train(config)
        run_s += time.perf_counter() - t0
    return {
        "T": compare_s,
        "L": load_s,
        "S_train": train_s,
        "S_run": run_s,
        "runs": len(result.records),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--sparse-eval-every", type=int, default=1000)
    args = p.parse_args()
    train(TrainConfig(steps=1, progress=False), write=False)  # warm-up
    print(
        f"compare --seeds 0,1,2 --lr-grid 0.03,0.1,0.3 over {LABELS}, default task, "
        f"{args.epochs:g} epochs"
    )
    print(
        "repeat  evaluations        runs   T (s)   L (s)  S_train (s)  S_run (s)  "
        "T/(S_train+L)  T/(S_run+L)"
    )
    for k in range(args.repeats):
        for name, every in (
            ("every half epoch", None),
            (f"every {args.sparse_eval_every}", args.sparse_eval_every),
        ):
            root = Path(tempfile.mkdtemp(prefix="peergrad-compare-bench-"))
            try:
                r = one_repeat(args.epochs, root, every)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            print(
                f"{k + 1:6d}  {name:17s}  {r['runs']:4d}  {r['T']:6.1f}  {r['L']:6.2f}  "
                f"{r['S_train']:11.1f}  {r['S_run']:9.1f}  "
                f"{r['T'] / (r['S_train'] + r['L']):13.2f}  {r['T'] / (r['S_run'] + r['L']):11.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
