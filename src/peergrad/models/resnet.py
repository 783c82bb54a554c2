"""ResNet-20 for CIFAR (He, Zhang, Ren & Sun, CVPR 2016, "Deep residual learning for image
recognition", §4.2).

Layout: a 3x3 conv to 16 channels, then 3 stages of 3 basic blocks (two 3x3 convs each) with
16, 32 and 64 channels (the first block of stages 2 and 3 has stride 2), global average pooling
and a linear classifier: 6 * 3 + 2 = 20 weighted layers, about 0.27 M parameters.

Shortcuts are the paper's **option A** (its CIFAR choice): identity, and where the shape changes
a parameter-free stride-2 subsample padded with zero channels. Convolutions use He (Kaiming
normal, fan-out) initialisation.

How normalisation layers behave across workers
----------------------------------------------
Decentralised training keeps one model per worker and gossips parameters only, and the simulated
engine evaluates all workers at once with ``torch.func`` over stacked *parameters*. So these
models carry no buffers (no running statistics): each worker's model is a pure function of its
parameters.

* ``norm="group"`` (default): GroupNorm (Wu & He 2018) with ``groups`` groups (default 2) and a
  learned per-channel scale and shift. It normalises each sample on its own, so training and
  evaluation behave identically, independent of the batch, and the statistics never need to be
  shared between workers (Hsieh et al. 2020 recommend it for non-iid decentralised data).
* ``norm="batch"``: ``BatchNorm2d(track_running_stats=False)``. Each worker normalises with the
  statistics of its own current minibatch, in training **and** in evaluation (there are no
  running averages to switch to); only the scale and shift are parameters, and only those are
  gossiped. Evaluation results therefore depend on the evaluation batch (size and content).
* ``norm="none"``: no normalisation (plain residual network).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NORMS", "ResNet20"]

#: Values accepted by ``ResNet20(norm=...)``.
NORMS: tuple[str, ...] = ("group", "batch", "none")


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(groups, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    return nn.Identity()


class _ShortcutA(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad channels to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[..., :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    """``conv3x3 -> norm -> ReLU -> conv3x3 -> norm``, plus the shortcut, then ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, norm: str, groups: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.norm1 = _norm(norm, out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.norm2 = _norm(norm, out_channels, groups)
        self.shortcut: nn.Module = (
            _ShortcutA(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 (3 stages x 3 basic blocks, 16/32/64 channels, option-A shortcuts).

    Args:
        input_shape: ``(C, H, W)``; any channel count and size (CIFAR is ``(3, 32, 32)``).
        num_classes: C of the output logits.
        norm: one of :data:`NORMS` — see the module docstring for how each behaves across
            workers. Default ``"group"``.
        groups: GroupNorm groups (``norm="group"`` only); must divide 16 (and so 32 and 64).

    Input ``[B, C, H, W]``; output logits ``[B, num_classes]``. The module has no buffers.

    Raises:
        ValueError: ``input_shape`` not ``(C, H, W)``, unknown ``norm``, or bad ``groups``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        norm: str = "group",
        groups: int = 2,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"resnet20 needs image input [C, H, W], got input_shape={tuple(input_shape)}"
            )
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or 16 % groups:
            raise ValueError(f"groups must be a positive divisor of 16, got {groups!r}")
        widths = (16, 32, 64)
        self.stem = nn.Conv2d(input_shape[0], widths[0], 3, 1, padding=1, bias=False)
        self.stem_norm = _norm(norm, widths[0], groups)
        blocks: list[nn.Module] = []
        in_channels = widths[0]
        for stage, width in enumerate(widths):
            for b in range(3):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_channels, width, stride, norm, groups))
                in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_norm(self.stem(x)))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(-2, -1)))
