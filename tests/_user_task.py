"""A user's own model, data and loss, imported by path in the tests (``--model
tests._user_task:make_model``, ``--dataset tests._user_task:make_data``, ``--loss
tests._user_task:smooth_loss``)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Not callable: ``--model tests._user_task:NOT_CALLABLE`` is refused.
NOT_CALLABLE = 3


def make_model(
    hidden: int = 16, *, input_shape: tuple[int, ...] = (8,), num_classes: int = 3
) -> nn.Module:
    """A one-hidden-layer MLP; ``input_shape`` and ``num_classes`` come from the data."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def make_bn_model(hidden: int = 16, *, input_shape: tuple[int, ...] = (8,), num_classes: int = 3):
    """A model with buffers: ``Linear -> BatchNorm1d -> ReLU -> Linear``."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def make_data(
    n: int = 512, dim: int = 8, classes: int = 3, seed: int = 0, name: str = "blobs"
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Gaussian blobs: ``(x_train, y_train), (x_test, y_test)``, 3/4 train; ``name`` is
    annotated ``str`` so ``--data-set name=123`` stays text."""
    g = torch.Generator().manual_seed(seed)
    centers = 3.0 * torch.randn(classes, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, dim, generator=g)
    cut = 3 * n // 4
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def make_dataset(n: int = 256, dim: int = 8, classes: int = 3):
    """The same blobs as map-style ``TensorDataset``\\ s."""
    (x, y), (xt, yt) = make_data(n, dim, classes)
    return torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(xt, yt)


def make_one_split(n: int = 64):
    """Wrong: returns one split, not ``(train, test)``."""
    return make_data(n)[0]


def make_not_a_model():
    """Wrong: returns no ``nn.Module``."""
    return "not a model"


def smooth_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with label smoothing 0.1 (a user loss)."""
    return F.cross_entropy(outputs, targets, label_smoothing=0.1)
