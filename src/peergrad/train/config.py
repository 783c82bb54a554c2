"""The configuration of a training run: everything needed to rerun it (``config.json``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

#: Fields that ``peergrad train --resume`` may change; all others must match the run's.
RESUMABLE_CHANGES: tuple[str, ...] = (
    "steps",
    "epochs",
    "checkpoint_every",
    "timeout_s",
    "progress",
)


@dataclasses.dataclass
class TrainConfig:
    """Options of ``peergrad train``; field names match the CLI flags (``--batch-size`` ...).

    ``options`` holds algorithm hyper-parameters given with ``--set key=value``; ``lr``,
    ``momentum`` and ``weight_decay`` are passed to the algorithm when set (None keeps the
    algorithm's default). ``epochs`` counts passes over the training set by all workers together
    (``samples_seen = step * n * batch_size``); ``steps`` overrides it. ``checkpoint_every``
    (steps, None = never) saves a checkpoint into the run folder (see
    :mod:`peergrad.train.checkpoint`); the last step is always saved when it is set.
    """

    engine: str = "simulated"
    algorithm: str = "dpsgd"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    topology: str = "ring"
    workers: int = 8
    erdos_renyi_p: float = 0.3
    dataset: str = "mnist"
    data_root: str | None = None
    download: bool = True
    model: str = "mlp"
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    epochs: float = 10.0
    steps: int | None = None
    batch_size: int = 32
    lr: float | None = None
    momentum: float | None = 0.9
    weight_decay: float | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    eval_every: int | None = None
    eval_workers: int = 16
    latency_ms: float = 1.0
    bandwidth_gbps: float = 10.0
    timeout_s: float = 60.0
    out: str | None = None
    progress: bool = True
    checkpoint_every: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(names)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
