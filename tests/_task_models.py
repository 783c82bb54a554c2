"""User-defined models for the task tests: a small MLP with BatchNorm and Dropout (importable by
the distributed test workers, which put this folder on ``sys.path``)."""

from __future__ import annotations

from torch import Tensor, nn


class BNNet(nn.Module):
    """``[B, 1, 8, 8]`` digits -> 10 logits: Linear, BatchNorm1d, ReLU, Dropout, Linear."""

    def __init__(self, hidden: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def bn_only() -> BNNet:
    """The same network without Dropout (for engine parity: BatchNorm only)."""
    return BNNet(dropout=0.0)
