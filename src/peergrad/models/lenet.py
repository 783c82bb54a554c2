"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
recognition"), adapted to the input size.

Architecture: ``conv 6@5x5 -> ReLU -> maxpool 2 -> conv 16@5x5 -> ReLU -> maxpool 2 -> 120 ->
84 -> C`` (ReLU between the fully connected layers).

Adapting to the input size ``[C, H, W]`` (s = min(H, W)):

* conv1 padding: 0 when s >= 32 (the paper's 32x32 input), else 2 ("same"), which turns 28x28
  MNIST into the classic 32x32 geometry;
* conv2 padding: 0 when the first pooled map is >= 10 wide, else 2 (small images).

Flattened features: 32x32 and 28x28 -> 16 x 5 x 5 = 400 (the classic layout); 8x8 digits ->
16 x 2 x 2 = 64. The flatten size follows from this arithmetic; inputs too small to leave a
1x1 map (s < 4) raise ``ValueError``.

Deviations from the paper: ReLU and max-pooling instead of scaled tanh and trainable
sub-sampling, a plain linear output layer instead of the RBF units, and full connectivity
between conv1 and conv2 (the paper's C3 used a sparse connection table).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LeNet5"]


def _out(size: int, padding: int) -> int:
    """Spatial size after a 5x5 valid-stride conv with ``padding`` and a 2x2 max-pool."""
    return (size + 2 * padding - 4) // 2


class LeNet5(nn.Module):
    """LeNet-5 for image inputs ``[B, C, H, W]``; output logits ``[B, num_classes]``.

    Raises:
        ValueError: ``input_shape`` is not ``(C, H, W)`` (e.g. a 1-D signal ``(40,)``), or the
            image is smaller than 4x4.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"lenet5 needs image input [C, H, W], got input_shape={tuple(input_shape)}; "
                "use 'logreg' or 'mlp' for vector inputs"
            )
        channels, height, width = input_shape
        pad1 = 0 if min(height, width) >= 32 else 2
        h1, w1 = _out(height, pad1), _out(width, pad1)
        pad2 = 0 if min(h1, w1) >= 10 else 2
        h2, w2 = _out(h1, pad2), _out(w1, pad2)
        if min(h2, w2) < 1:
            raise ValueError(
                f"lenet5 needs images of at least 4x4, got input_shape={tuple(input_shape)}"
            )
        self.flat_features = 16 * h2 * w2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=pad1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=pad2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.flat_features, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
