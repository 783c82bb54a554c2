"""Wall-clock timing shared by the benchmark scripts (imported as a sibling module)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, with the device synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def rank_device(kind: str) -> torch.device:
    """This torchrun process's device: ``cuda:LOCAL_RANK`` for ``kind == "cuda"`` (made current;
    ``SystemExit`` when the machine has no such GPU, NCCL needs one per rank), else the CPU."""
    if kind != "cuda":
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
        raise SystemExit(
            f"--device cuda: local rank {local_rank} needs cuda:{local_rank}, but this "
            f"machine has {torch.cuda.device_count()} CUDA device(s) (NCCL needs one per rank)"
        )
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device
