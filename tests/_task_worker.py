"""Worker of the distributed task test: train a user's module with BatchNorm and Dropout.

Started 2 times with torchrun's environment variables; trains the same config twice (and once
without Dropout) on the distributed engine and rank 0 saves ``{"runs": [x, x], "records":
[records, records], "no_dropout": x}`` to ``argv[1]``.
"""

from __future__ import annotations

import sys

import torch

from peergrad.comm import distributed
from peergrad.train import TrainConfig, train

sys.path.insert(0, sys.argv[2])


def config(dropout: float) -> TrainConfig:
    return TrainConfig(
        engine="distributed",
        workers=2,
        dataset="digits",
        model="_task_models:BNNet",
        model_options={"dropout": dropout},
        steps=8,
        eval_every=4,
        batch_size=16,
        seed=5,
        progress=False,
    )


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    runs = [train(config(0.5), write=False) for _ in range(2)]
    plain = train(config(0.0), write=False)
    if distributed.dist.get_rank() == 0:
        strip = [
            [{k: v for k, v in r.items() if k != "wall_time_s"} for r in run.records]
            for run in runs
        ]
        torch.save(
            {"runs": [r.x for r in runs], "records": strip, "no_dropout": plain.x}, sys.argv[1]
        )
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
