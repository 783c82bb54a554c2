"""The cases of the engine-parity test: every registered algorithm, plus schedule variants."""

from __future__ import annotations

from dataclasses import dataclass, field

from peergrad.algorithms import ALGORITHMS
from peergrad.train import TrainConfig

WORKERS = 4
STEPS = 20


@dataclass(frozen=True)
class Case:
    algorithm: str
    dtype: str
    topology: str = "ring"
    options: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    model: str = "mlp"
    buffers: str = "local"

    @property
    def key(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        model = "" if self.model == "mlp" else f";{self.model};buffers={self.buffers}"
        return f"{self.algorithm}[{self.topology};{self.dtype};{opts}{model}]"


#: Options of the generic case of an algorithm whose defaults would not communicate within
#: STEPS (DiLoCo syncs every 50 steps by default).
BASE: dict[str, dict[str, str]] = {"diloco": {"period": "4"}}

CASES: list[Case] = [
    Case(cls.name, dtype, options=dict(BASE.get(cls.name, {})))
    for cls in ALGORITHMS
    for dtype in ("float32", "float64")
] + [
    Case("dpsgd", "float64", "one-peer-exponential"),
    Case("dpsgd", "float64", "exponential", {"form": "atc"}),
    Case("dpsgd", "float32", "star", {"nesterov": "true"}),
    Case("gradient-tracking", "float64", "ring", {"form": "cta"}),
    # time-varying W(k): CTA gossips [x_k, y_k] after the gradient (DIGing, issue 13 item 8)
    Case("gradient-tracking", "float64", "one-peer-exponential", {"form": "cta"}),
    Case("gradient-tracking", "float64", "one-peer-exponential", {"form": "atc"}),
    Case("detag", "float64", "ring", {"pipelined": "false", "rounds": "2"}),
    Case("detag", "float64", "one-peer-exponential", {"eta": "0"}),
    Case("d2", "float64", "torus"),
    Case("ef-sgd", "float64", "ring", {"layerwise": "true", "compressor": "randomk"}),
    # random-k averaged by one all-reduce of its k values (exchange=auto); TernGrad (all-gather,
    # per-worker draws) with error feedback as C / (1 + ω)
    Case("ef-sgd", "float32", "ring", {"compressor": "randomk"}),
    Case("ef-sgd", "float64", "ring", {"compressor": "terngrad"}),
    Case("choco-sgd", "float32", "ring", {"layerwise": "true"}),
    Case("distributed-adam", "float64", "complete", {"preset": "adam", "theta": "zou:0.5"}),
    # local-sgd: the default case syncs at steps 8 and 16 with block momentum 1 - 1/n; these add
    # plain K-AVG, the warm-up, averaged buffers, block Nesterov (both styles), gossip and Adam.
    Case("local-sgd", "float64", "ring", {"period": "4", "block_momentum": "0"}),
    Case(
        "local-sgd",
        "float64",
        "ring",
        {"period": "4", "warmup_steps": "3", "local_state": "average", "block_nesterov": "true"},
    ),
    Case(
        "local-sgd",
        "float64",
        "one-peer-exponential",
        {"period": "3", "gossip": "true", "block_nesterov": "true", "nesterov_style": "cntk"},
    ),
    Case(
        "local-sgd",
        "float32",
        "ring",
        {"period": "5", "local_update": "adam", "lr": "0.003", "local_state": "keep"},
    ),
    # streaming DiLoCo: two fragments of the MLP, each averaged behind 2 inner steps (mean_start
    # on gloo) and blended; int8 pseudo-gradients averaged by the reduce-scatter exchange
    Case(
        "diloco",
        "float64",
        "ring",
        {"period": "4", "fragments": "2", "overlap_steps": "2", "blend": "0.5"},
    ),
    Case(
        "diloco",
        "float32",
        "ring",
        {
            "period": "4",
            "fragments": "3",
            "overlap_steps": "1",
            "outer_compressor": "int8",
            "outer_exchange": "reduce-scatter",
            "outer_error_feedback": "true",
        },
    ),
    # a user's module given as an import path (tests/_task_models.py), with BatchNorm buffers
    # kept per worker. Dropout is left out: vmap's per-worker ("different") randomness draws one
    # [n, ...] sample from the simulated engine's single generator, which n processes each with
    # their own generator cannot reproduce; test_task.py checks distributed Dropout runs are
    # reproducible instead.
    Case("dpsgd", "float64", "ring", model="_task_models:bn_only"),
    Case(
        "local-sgd",
        "float64",
        "ring",
        {"period": "4"},
        model="_task_models:bn_only",
        buffers="average",
    ),
]


def config_for(case: Case, engine: str) -> TrainConfig:
    return TrainConfig(
        engine=engine,
        algorithm=case.algorithm,
        options=dict(case.options),
        topology=case.topology,
        workers=WORKERS,
        dataset="digits",
        model=case.model,
        buffers=case.buffers,
        steps=STEPS,
        eval_every=STEPS,
        batch_size=16,
        lr=None,  # each algorithm's own default step (SGD family 0.05-0.1, adaptive 1e-3)
        momentum=0.9,
        weight_decay=1e-4,
        dtype=case.dtype,
        seed=3,
        progress=False,
    )
