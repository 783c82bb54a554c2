"""Your own model and data on 16 simulated workers: three decentralized algorithms compared.

A small CNN with BatchNorm and Dropout (:func:`make_model`) on scikit-learn's 8x8 digits
(:func:`make_data`), trained by 16 workers on a ring, each holding a ``sorted`` shard (one or two
classes per worker: the hard, heterogeneous case), with a cosine learning-rate schedule. It
compares ``dpsgd``, ``gradient-tracking`` and ``decentralized-amsgrad`` through
``peergrad.study.compare.compare(base, entries, task=task)``, prints the final test accuracy of
the averaged model x̄, the consensus distance (1/n) Σ‖x_i − x̄‖² and the bytes each worker sent,
and writes the comparison folder (``compare.json``, ``compare.md``, plots, one run folder per
algorithm)::

    python examples/own_model_simulated.py [--steps 300] [--out runs/own-model-simulated]

The same model trains from the command line, on either engine, as
``--model examples.own_model_simulated:make_model`` (from the repository root; ``--model-set
dropout=0.1`` passes options), and the data as ``--dataset examples.own_model_simulated:make_data``
(or the built-in ``--dataset digits``)::

    torchrun --standalone --nproc-per-node 4 -m peergrad train --engine distributed \\
        --workers 4 --model examples.own_model_simulated:make_model --dataset digits \\
        --steps 300 --lr 0.1 --momentum 0.9 --lr-schedule cosine --out runs/own-dist

(97.5% test accuracy of x̄ on 4 gloo processes; see examples/README.md for the figures.)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from peergrad import Task
from peergrad.study.compare import CompareEntry, compare
from peergrad.train import TrainConfig

#: Per-algorithm options: the SGD family with heavy-ball momentum and lr ~0.1, the Adam family
#: (decentralized AMSGrad, β₁ = 0.9 by default) with lr 1e-2.
ENTRIES = [
    CompareEntry("dpsgd", "dpsgd", {"lr": 0.1, "momentum": 0.9}),
    CompareEntry("gradient-tracking", "gradient-tracking", {"lr": 0.1, "momentum": 0.9}),
    CompareEntry("decentralized-amsgrad", "decentralized-amsgrad", {"lr": 1e-2}),
]


def make_model(num_classes: int = 10, channels: int = 8, dropout: float = 0.25) -> nn.Module:
    """A CNN for ``[B, 1, 8, 8]`` images: ``[conv3x3/2(c) - BN - ReLU] -> [conv3x3/2(2c) - BN -
    ReLU] -> flatten -> Dropout -> Linear(num_classes)`` (1,946 parameters for c = 8 and 10
    classes; the CLI fills in ``num_classes`` from the data set). Stride-2 convolutions rather
    than max-pooling: a little faster on CPU under the simulated engine's ``torch.func.vmap``."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, stride=2, padding=1),  # 8x8 -> 4x4
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),  # 4x4 -> 2x2
        nn.BatchNorm2d(2 * channels),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(2 * channels * 2 * 2, num_classes),
    )


def make_data(test_fraction: float = 0.2, seed: int = 0) -> tuple[tuple, tuple]:
    """scikit-learn's 1,797 digits as ``((x_train, y_train), (x_test, y_test))``: images
    ``[N, 1, 8, 8]`` (pixels / 16, standardised with the training split's mean and std), integer
    labels; a random ``test_fraction`` of the images (drawn with ``seed``) is held out."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(labels, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(y))
    test, train = perm[:n_test], perm[n_test:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return (x[train], y[train]), (x[test], y[test])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16, help="per worker")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/own-model-simulated", help="comparison folder")
    args = parser.parse_args(argv)

    train_data, test_data = make_data()
    task = Task(model=make_model, train_data=train_data, test_data=test_data, name="digits-cnn")
    base = TrainConfig(
        topology="ring",
        workers=args.workers,
        partition="sorted",
        batch_size=args.batch_size,
        steps=args.steps,
        lr_schedule="cosine",
        warmup_steps=args.steps // 20,
        eval_every=max(1, args.steps // 30),  # 30 evaluations of x̄ and of every worker
        seed=args.seed,
        progress=False,
    )
    result = compare(base, ENTRIES, args.out, task=task, overwrite=True)

    print(f"{task.name}, {args.workers} workers on a ring, sorted shards, {args.steps} steps:")
    print(f"{'algorithm':<24}{'test acc (x̄)':>14}{'consensus':>12}{'MB / worker':>13}")
    for row in result.rows:
        final = row["final"]
        print(
            f"{row['label']:<24}{final['test_accuracy']:>14.4f}"
            f"{final['consensus_distance']:>12.3g}{final['bytes_sent_per_worker'] / 1e6:>13.3f}"
        )
    print(f"comparison written to {result.out_dir}/ (compare.md, compare.json, plots)")


if __name__ == "__main__":
    main()
