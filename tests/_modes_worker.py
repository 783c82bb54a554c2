"""A model whose BatchNorm the user keeps in eval mode (frozen-BN fine-tuning), its reference
that can never leave eval mode, and the worker of the distributed modes test.

Started 2 times with torchrun's environment variables (argv: output prefix, tests folder):
trains :func:`config` on the distributed engine with the user's model and with the reference,
and every rank saves ``{"user": (x, buffers), "reference": (x, buffers), "records": ...}`` to
``<prefix>.<rank>``.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn

from peergrad import Task
from peergrad.train import TrainConfig, train

HIDDEN = 16


class EvalOnlyBatchNorm(nn.BatchNorm1d):
    """A BatchNorm1d that no ``train()`` call can put in training mode: the reference that
    never changes modes (the same forward code as a BatchNorm1d in eval mode)."""

    def train(self, mode: bool = True) -> EvalOnlyBatchNorm:
        return super().train(False)


class FrozenBNNet(nn.Module):
    """``[B, 12]`` -> 5 logits: Linear, BatchNorm1d, ReLU, Dropout(0), Linear."""

    def __init__(self, bn: nn.BatchNorm1d) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, HIDDEN)
        self.bn = bn
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Linear(HIDDEN, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def make_model(reference: bool) -> FrozenBNNet:
    """The user's model (``model.train(); model.bn.eval()``), or the reference with the same
    parameters and running statistics whose BatchNorm cannot leave eval mode."""
    torch.manual_seed(0)
    bn = EvalOnlyBatchNorm(HIDDEN) if reference else nn.BatchNorm1d(HIDDEN)
    net = FrozenBNNet(bn)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # "pretrained" statistics, far from a fresh batch's
        bn.running_mean.copy_(torch.rand(HIDDEN, generator=gen) - 0.5)
        bn.running_var.copy_(0.5 + torch.rand(HIDDEN, generator=gen))
    net.train()
    net.bn.eval()
    return net


def make_task(reference: bool) -> Task:
    gen = torch.Generator().manual_seed(2)
    inputs = torch.randn(256, 12, generator=gen)
    labels = torch.randint(0, 5, (256,), generator=gen)
    return Task(
        model=make_model(reference),
        train_data=(inputs, labels),
        test_data=(inputs[:64], labels[:64]),
        name="frozen-bn",
    )


def config(engine: str, workers: int) -> TrainConfig:
    """Evaluations at steps 0, 2, 4 and 6 between the gradients: each one puts the module in
    eval mode, and the next gradient must bring back exactly the user's modes."""
    return TrainConfig(
        engine=engine,
        workers=workers,
        algorithm="dpsgd",
        batch_size=8,
        steps=6,
        eval_every=2,
        lr=0.1,
        dtype="float64",
        seed=3,
        progress=False,
    )


def run(engine: str, workers: int, reference: bool) -> tuple[Tensor, dict[str, Tensor], Any]:
    result = train(config(engine, workers), make_task(reference), write=False)
    records = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in result.records]
    return result.x, result.buffers, records


def main() -> None:
    from peergrad.comm import distributed

    distributed.init_process_group(timeout_s=60)
    rank = distributed.dist.get_rank()
    user = run("distributed", 2, reference=False)
    reference = run("distributed", 2, reference=True)
    torch.save({"user": user, "reference": reference}, f"{sys.argv[1]}.{rank}")
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
