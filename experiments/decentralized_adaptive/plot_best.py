"""Plot, for each algorithm of a `peergrad compare` folder, the run with the best final test
accuracy (the learning-rate search of run.sh), and print their table.

Usage: python experiments/decentralized_adaptive/plot_best.py COMPARE_DIR OUT_PNG
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from peergrad.train.plots import plot_curves


def main() -> None:
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    runs = json.loads((folder / "compare.json").read_text())["runs"]
    best: dict[str, dict] = {}
    for run in runs:
        kept = best.get(run["algorithm"])
        if kept is None or run["final"]["test_accuracy"] > kept["final"]["test_accuracy"]:
            best[run["algorithm"]] = run
    curves = {}
    print("| method | best lr | test accuracy (final / best) | workers' own | samples to target |")
    print("|---|---|---|---|---|")
    for alg, run in best.items():
        records = [json.loads(line) for line in (folder / run["label"] / "metrics.jsonl")
                   .read_text().splitlines()]
        curves[f"{alg} (lr {run['hyperparameters']['lr']:g})"] = records
        f = run["final"]
        print(f"| {alg} | {run['hyperparameters']['lr']:g} | {f['test_accuracy']:.3f} / "
              f"{run['best_test_accuracy']:.3f} | {f['worker_test_accuracy']:.3f} | "
              f"{run['samples_to_target'] or '—'} |")
    plot_curves(curves, "samples_seen", out, title=f"best learning rate per method: {folder.name}")


if __name__ == "__main__":
    main()
