"""Configurations of the language-model engine-parity test (``test_text_data.py``), shared with
its distributed worker ``_text_worker.py``: the ``transformer`` preset (tiny sizes) on
``pydoc-topics`` windows, float64, 2 workers, a few steps."""

from __future__ import annotations

from typing import Any

from peergrad.train import TrainConfig

#: case name -> the algorithm's settings
CASES: dict[str, dict[str, Any]] = {
    "allreduce": {"algorithm": "allreduce", "momentum": 0.9, "partition": "iid"},
    "dpsgd-contiguous": {"algorithm": "dpsgd", "momentum": 0.9, "partition": "contiguous"},
    "local-sgd-adam": {
        "algorithm": "local-sgd",
        "momentum": 0.9,
        "lr": 3e-3,
        "options": {"local_update": "adam", "period": 2},
        "partition": "contiguous",
    },
}
WORKERS = 2
TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "context": 16}


def text_config(case: str, engine: str, **changes: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "engine": engine,
        "workers": WORKERS,
        "dataset": "pydoc-topics",
        "data_options": {"seq_len": 16},
        "model": "transformer",
        "model_options": dict(TINY),
        "steps": 4,
        "eval_every": 2,
        "eval_workers": 2,
        "batch_size": 4,
        "dtype": "float64",
        "seed": 1,
        "progress": False,
        **CASES[case],
    }
    settings.update(changes)
    return TrainConfig(**settings)
