"""Cases of the overlap-parity test: every registered algorithm, in float64 and float32, plus the
forms whose messages differ (ATC gossip, CTA tracking, non-pipelined DeTAG)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peergrad.algorithms import ALGORITHMS

STEPS = 8


@dataclass(frozen=True)
class Case:
    algorithm: str
    dtype: str
    topology: str = "ring"
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.algorithm}[{self.topology};{self.dtype};{opts}]"


CASES: list[Case] = [
    Case(cls.name, dtype) for cls in ALGORITHMS for dtype in ("float64", "float32")
] + [
    Case("dpsgd", "float64", "one-peer-exponential", {"momentum": 0.9}),
    Case("dpsgd", "float64", "ring", {"form": "atc", "weight_decay": 0.01}),
    Case("gradient-tracking", "float64", "ring", {"form": "cta"}),
    Case("detag", "float64", "ring", {"pipelined": False, "rounds": 2}),
    Case("local-sgd", "float64", "ring", {"period": 3}),
    Case("allreduce", "float64", "ring", {"clip_grad_norm": 0.5, "momentum": 0.9}),
]
