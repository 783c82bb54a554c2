"""Logistic regression and multi-layer perceptron classifiers (any input shape, flattened)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "LogisticRegression"]


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: ``Flatten`` + ``Linear(prod(input_shape), C)``.

    Input ``[B, *input_shape]`` float; output logits ``[B, num_classes]``.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))


def _hidden_sizes(hidden: int | Sequence[int]) -> tuple[int, ...]:
    sizes = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in sizes):
        raise ValueError(f"hidden must be a positive int or a tuple of them, got {hidden!r}")
    return sizes


class MLP(nn.Module):
    """Fully connected ReLU network: ``Flatten``, then ``Linear -> ReLU`` per hidden size, then a
    ``Linear`` to the logits.

    Args:
        input_shape: shape of one input; flattened to ``prod(input_shape)`` features.
        num_classes: C.
        hidden: width of each hidden layer, an int or a tuple (default ``(128,)``; ``()`` gives
            logistic regression).

    Input ``[B, *input_shape]``; output logits ``[B, C]``.

    Raises:
        ValueError: ``hidden`` is not a positive int or a tuple of positive ints.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        hidden: int | Sequence[int] = (128,),
    ) -> None:
        super().__init__()
        sizes = (math.prod(input_shape), *_hidden_sizes(hidden))
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
