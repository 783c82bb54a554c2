"""Tables and plots of the DiLoCo study from a finished `peergrad compare` folder.

Reads DIR/compare.json (the label, the lr chosen on validation and its runs) and each chosen
run's metrics.jsonl, then prints (Markdown) per label, mean ± std over the seeds:

- the final validation loss and test perplexity, bytes sent per worker, simulated time under the
  run's system profile;
- for each target validation perplexity, the first evaluation (every 100 steps) at or below it:
  tokens seen (all workers), MB sent per worker, simulated seconds; runs that never reach it are
  counted apart;

and writes DIR/val_loss_vs_tokens_bytes_time.png: validation loss of x̄ against tokens, bytes
sent per worker and simulated time (seed mean; a band of ±1 std).

Usage: python experiments/diloco_language_model/summarize.py DIR [--seq-len 32] [--out PNG]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

TARGETS = (10.0, 8.0, 7.0)


def load(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def first_reach(records: list[dict[str, float]], target: float) -> dict[str, float] | None:
    for r in records:
        if r.get("val_perplexity") is not None and r["val_perplexity"] <= target:
            return r
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    compare = json.loads((args.dir / "compare.json").read_text())
    runs = {
        entry["label"]: (entry.get("chosen_lr"), [load(args.dir / r / "metrics.jsonl")
                                                  for r in entry["runs"]])
        for entry in compare["labels"]
    }
    print("| label | chosen lr | final val loss | final test perplexity | MB sent / worker |"
          " simulated time (s) |")
    print("|---|--:|--:|--:|--:|--:|")
    for label, (lr, recs) in runs.items():
        last = [r[-1] for r in recs]
        print(f"| {label} | {lr} | {mean_std([r['val_loss'] for r in last])} | "
              f"{mean_std([r['test_perplexity'] for r in last])} | "
              f"{mean_std([r['bytes_sent_per_worker'] / 1e6 for r in last])} | "
              f"{mean_std([r['simulated_time_s'] for r in last])} |")
    for target in TARGETS:
        print(f"\nTo reach validation perplexity <= {target:g} (first evaluation at or below):\n")
        print("| label | reached | million tokens | MB sent / worker | simulated time (s) |")
        print("|---|--:|--:|--:|--:|")
        for label, (_, recs) in runs.items():
            hits = [h for h in (first_reach(r, target) for r in recs) if h is not None]
            print(f"| {label} | {len(hits)}/{len(recs)} | "
                  f"{mean_std([h['samples_seen'] * args.seq_len / 1e6 for h in hits])} | "
                  f"{mean_std([h['bytes_sent_per_worker'] / 1e6 for h in hits])} | "
                  f"{mean_std([h['simulated_time_s'] for h in hits])} |")
    plot(runs, args.seq_len, args.out or args.dir / "val_loss_vs_tokens_bytes_time.png")


def plot(runs: dict[str, tuple[object, list[list[dict[str, float]]]]], seq_len: int,
         out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    axes_spec = (
        ("samples_seen", "tokens seen (all workers)", seq_len, False),
        ("bytes_sent_per_worker", "bytes sent per worker", 1, True),
        ("simulated_time_s", "simulated time (s), two-datacenters profile", 1, True),
    )
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for label, (_, recs) in runs.items():
        if not recs:
            continue
        n = min(len(r) for r in recs)
        loss = np.array([[r[i]["val_loss"] for i in range(n)] for r in recs])
        for ax, (key, _title, scale, log) in zip(axes, axes_spec, strict=True):
            xs = np.array([[r[i][key] * scale for i in range(n)] for r in recs]).mean(0)
            m, s = loss.mean(0), loss.std(0)
            start = 1 if log else 0  # the first record is at x = 0
            (line,) = ax.plot(xs[start:], m[start:], marker=".", label=label)
            ax.fill_between(xs[start:], (m - s)[start:], (m + s)[start:], alpha=0.2,
                            color=line.get_color())
    for ax, (_, title, _, log) in zip(axes, axes_spec, strict=True):
        ax.set_xlabel(title)
        ax.set_ylabel("validation loss of x̄ (nats per byte)")
        if log:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("8 workers, transformer on pydoc-topics: sync Adam vs DiLoCo (mean ± std)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
