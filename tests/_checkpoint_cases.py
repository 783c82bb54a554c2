"""Cases of the checkpoint/resume tests: every registered algorithm with its defaults, plus
variants whose state holds more (random compressors' generators, time-varying schedules,
DeTAG's phases), and the run they share."""

from __future__ import annotations

from dataclasses import dataclass, field

from peergrad.algorithms import ALGORITHMS
from peergrad.train import TrainConfig

STEPS = 6  # the uninterrupted run
STOP = 5  # the interrupted run stops (as if killed) after this step ...
EVERY = 3  # ... with its last checkpoint at step 3 and a record (step 4) written after it
EVAL_EVERY = 4


@dataclass(frozen=True)
class Case:
    algorithm: str
    topology: str = "ring"
    options: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.algorithm}[{self.topology};{opts}]"


CASES: list[Case] = [Case(cls.name) for cls in ALGORITHMS] + [
    Case("dpsgd", "one-peer-exponential"),
    Case("ef-sgd", "ring", {"compressor": "qsgd"}),
    Case("choco-sgd", "ring", {"compressor": "randomk", "ratio": "0.3"}),
    Case("detag", "ring", {"rounds": "2", "pipelined": "false"}),  # checkpoint mid-phase
    # syncs at steps 2, 4, 6: block momentum and the anchor cross the checkpoint
    Case("local-sgd", "ring", {"period": "2", "local_update": "adam", "local_state": "keep"}),
    # streaming DiLoCo: fragment 1 (logreg's bias) posted at step 3, applied at step 4: the
    # checkpoint at step 3 holds it in flight (on gloo: posted with mean_start, drained first)
    Case("diloco", "ring", {"period": "3", "fragments": "2", "overlap_steps": "1", "blend": "0.5"}),
]


def config_for(case: Case, engine: str, out: str) -> TrainConfig:
    return TrainConfig(
        engine=engine,
        algorithm=case.algorithm,
        options=dict(case.options),
        topology=case.topology,
        workers=4,
        dataset="digits",
        model="logreg",
        steps=STEPS,
        eval_every=EVAL_EVERY,
        batch_size=8,
        momentum=0.9,
        seed=5,
        progress=False,
        checkpoint_every=EVERY,
        out=out,
    )
