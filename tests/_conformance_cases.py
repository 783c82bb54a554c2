"""The registry through the conformance kit (:mod:`peergrad.testing`): the declarations the kit
reads from the classes, and the cases it runs.

``DECLARATIONS``: ``preserves_mean`` and the ``centralized`` reductions of every registered
algorithm, passed to the kit as keyword arguments. Every class also declares ``preserves_mean``
itself; ``tests/test_conformance.py`` checks that the class and this table agree (and will for
``centralized`` once a class declares it).

Cases (every algorithm of the registry in each list):

- ``CASES`` (in-process checks, float64 and float32): every algorithm with its defaults and with
  ``HEAVY`` options (momentum, weight decay, the lr the optimizer tests used), plus DeTAG with
  plain multi-round gossip (``eta=0``, the only form that runs on a time-varying schedule, for
  the resume check) and local SGD with gossip (``uses_topology`` true);
- ``DISTRIBUTED_CASES`` (one launch of 4 gloo processes): ``overlap`` for every algorithm with
  its defaults in both dtypes, plus the forms whose messages differ (ATC gossip, CTA tracking,
  non-pipelined DeTAG, local SGD's sync, clipping); ``engine_parity`` for every algorithm with
  ``PARITY`` options in both dtypes, plus the schedule and compressor variants of
  ``tests/_parity_cases.py`` (whose train-level runs ``tests/test_engine_parity.py`` keeps).
"""

from __future__ import annotations

from typing import Any

from peergrad.algorithms import ALGORITHMS, REGISTRY
from peergrad.testing import AlgorithmCase

NAMES = [cls.name for cls in ALGORITHMS]

#: Options of the second in-process case of every algorithm (those of the optimizer tests).
HEAVY: dict[str, Any] = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
#: Options of the engine-parity cases (those of the train-level parity runs).
PARITY: dict[str, Any] = {"momentum": 0.9, "weight_decay": 1e-4}
#: Options every generic row of an algorithm starts from, where its defaults would not
#: communicate within the kit's 8 to 20 steps (DiLoCo syncs every 50 by default).
BASE: dict[str, dict[str, Any]] = {
    "diloco": {"period": 4},
    # post-local-sgd warms up for 100 steps by default: a short warm-up, then averages
    "post-local-sgd": {"warmup_steps": 3, "period": 3},
}

#: torch.optim.SGD settings every SGD reduction is checked with.
SGD_SETTINGS: list[dict[str, Any]] = [
    {"lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    {"lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-3},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
]


def sgd(*extras: dict[str, Any]) -> tuple[tuple[dict[str, Any], str, dict[str, Any]], ...]:
    """Reductions to torch.optim.SGD: every extra option set under every :data:`SGD_SETTINGS`."""
    return tuple(({**s, **e}, "torch.optim.SGD", s) for e in extras for s in SGD_SETTINGS)


#: name -> the declarations the kit reads from the class (``preserves_mean``, ``centralized``).
#: preserves_mean: communication preserves the workers' average of x (doubly stochastic gossip;
#: methods that use no topology are skipped by the kit). Not the adaptive methods whose gossiped
#: second moments enter the update of x (decentralized-amsgrad/-adagrad/-adam).
#: centralized: on one worker the method is the torch.optim one, under these options.
DECLARATIONS: dict[str, dict[str, Any]] = {
    "allreduce": {"preserves_mean": False, "centralized": sgd({})},
    "dpsgd": {"preserves_mean": True, "centralized": sgd({"form": "cta"}, {"form": "atc"})},
    # exact in exact arithmetic (telescoping recursions), equal to rounding on one worker
    "d2": {"preserves_mean": True, "centralized": sgd({})},
    "gradient-tracking": {
        "preserves_mean": True,
        "centralized": sgd({"form": "cta"}, {"form": "atc"}),
    },
    # the pipelined form uses one-phase-stale gradients
    "detag": {"preserves_mean": True, "centralized": sgd({"pipelined": False})},
    "decentralized-amsgrad": {"preserves_mean": False, "centralized": ()},
    "decentralized-adagrad": {"preserves_mean": False, "centralized": ()},
    "decentralized-adam": {"preserves_mean": False, "centralized": ()},
    "dadam": {"preserves_mean": True, "centralized": ()},
    "dadam-naive": {"preserves_mean": True, "centralized": ()},
    "decentralized-adam-naive": {"preserves_mean": True, "centralized": ()},
    "ef-sgd": {"preserves_mean": False, "centralized": ()},
    "compressed-sgd": {"preserves_mean": False, "centralized": ()},
    "armijo-csgd": {"preserves_mean": False, "centralized": ()},
    "powersgd": {"preserves_mean": False, "centralized": ()},
    # one worker: W = [[1]] makes s = x̂, so x = x_half whatever the compressor
    "choco-sgd": {
        "preserves_mean": True,
        "centralized": sgd({"ratio": 0.01}, {"compressor": "qsgd"}),
    },
    "distributed-adam": {
        "preserves_mean": False,
        "centralized": (
            (
                {"preset": "adam", "lr": 0.01, "b1": 0.9, "b2": 0.999, "eps": 1e-8},
                "torch.optim.Adam",
                {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8},
            ),
            (
                {"preset": "adam", "lr": 0.02, "b1": 0.5, "b2": 0.99, "weight_decay": 1e-2},
                "torch.optim.Adam",
                {"lr": 0.02, "betas": (0.5, 0.99), "weight_decay": 1e-2},
            ),
            (
                {"preset": "rmsprop", "lr": 0.01, "b2": 0.9, "eps": 1e-6},
                "torch.optim.RMSprop",
                {"lr": 0.01, "alpha": 0.9, "eps": 1e-6},
            ),
            (
                {"preset": "adagrad", "lr": 0.1, "eps": 1e-10},
                "torch.optim.Adagrad",
                {"lr": 0.1, "eps": 1e-10},
            ),
        ),
    },
    # one worker: averaging is the identity and the default block momentum 1 - 1/n is 0
    "local-sgd": {
        "preserves_mean": False,
        "centralized": sgd(
            {"period": 1, "local_state": "keep"}, {"period": 4, "local_state": "average"}
        ),
    },
    # one worker: the gradient all-reduce and the model averages are the identity
    "post-local-sgd": {
        "preserves_mean": False,
        "centralized": sgd({}, {"warmup_steps": 2, "period": 3, "first_sync": "period"}),
    },
    # one worker, no outer momentum and outer lr 1: x <- anchor - (anchor - x), AdamW to rounding
    "diloco": {
        "preserves_mean": False,
        "centralized": (
            (
                {"period": 3, "block_momentum": 0.0, "block_lr": 1.0, "lr": 0.01, "b2": 0.999},
                "torch.optim.AdamW",
                {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1},
            ),
        ),
    },
}

#: Checks a case leaves out, with the reason the report shows.
DETAG_IDENTITY = (
    "rounds=None resolves R from the spectrum of W: on W = I it is 8 with 4 workers and 1 for "
    "one worker, so the runs differ by their hyper-parameters, not by a coupling "
    "(tests/test_detag.py checks the phases)"
)
SKIPS: dict[str, dict[str, str]] = {
    "detag": {"identity_mixing": DETAG_IDENTITY},
    "local-sgd[gossip=True]": {
        "identity_mixing": "block_momentum defaults to 1 - 1/n: 0.75 with 4 workers, 0 for one"
    },
}


def _case(name: str, options: dict[str, Any], key: str, *, declared: bool) -> AlgorithmCase:
    settings: dict[str, Any] = {"preserves_mean": DECLARATIONS[name]["preserves_mean"]}
    # the reductions fix their own options: checked once, on the default case
    settings["centralized"] = DECLARATIONS[name]["centralized"] if declared else ()
    skip = dict(SKIPS.get(name, {}), **SKIPS.get(key, {}))
    if not declared:
        skip.setdefault("centralized", "the declared reductions run on the default case")
    settings["skip"] = skip
    return AlgorithmCase(REGISTRY[name], options, settings, id=key)


#: local-sgd's warm-up forms: gradients averaged (with a block step after it), none (torch's
#: PeriodicModelAverager, first average right after the warm-up)
LSGD_WARMUPS: dict[str, dict[str, Any]] = {
    "warmup_sync=gradients": {
        "warmup_steps": 3,
        "warmup_sync": "gradients",
        "period": 3,
        "block_momentum": 0.5,
        "momentum": 0.9,
    },
    "warmup_sync=none": {
        "warmup_steps": 2,
        "warmup_sync": "none",
        "first_sync": "immediate",
        "period": 3,
        "local_state": "keep",
        "momentum": 0.9,
    },
}
DILOCO_STREAMING: dict[str, Any] = {"period": 4, "fragments": 2, "overlap_steps": 2, "blend": 0.5}
DILOCO_TOPK: dict[str, Any] = {
    "period": 3,
    "fragments": 2,
    "overlap_steps": 1,
    "outer_compressor": "topk",
    "outer_ratio": 0.1,
    "outer_error_feedback": True,
}
DILOCO_RANDOMK: dict[str, Any] = {
    "period": 4,
    "overlap_steps": 3,
    "outer_compressor": "randomk",
    "outer_ratio": 0.25,
    "outer_exchange": "allreduce",
}


CASES: list[AlgorithmCase] = [
    *[_case(name, dict(BASE.get(name, {})), name, declared=True) for name in NAMES],
    *[
        _case(name, {**BASE.get(name, {}), **HEAVY}, f"{name}[heavy]", declared=False)
        for name in NAMES
    ],
    # plain multi-round gossip: the DeTAG that runs on a time-varying schedule (resume there)
    _case("detag", {"eta": 0.0, "momentum": 0.9}, "detag[eta=0]", declared=False),
    _case("local-sgd", {"gossip": True}, "local-sgd[gossip=True]", declared=False),
    *[_case("local-sgd", o, f"local-sgd[{k}]", declared=False) for k, o in LSGD_WARMUPS.items()],
    # DiLoCo's streaming and compressed forms; the resume check (after step 4 of 10) restarts
    # with a fragment posted at step 4 and applied at step 6 (streaming), 5 (topk), 7 (randomk)
    _case("diloco", DILOCO_STREAMING, "diloco[streaming]", declared=False),
    _case("diloco", DILOCO_TOPK, "diloco[topk]", declared=False),
    _case("diloco", DILOCO_RANDOMK, "diloco[randomk]", declared=False),
]


def _dist(
    name: str,
    check: str,
    options: dict[str, Any] | None = None,
    *,
    dtypes: tuple[str, ...] = ("float64", "float32"),
    topology: str = "ring",
    **settings: Any,
) -> AlgorithmCase:
    options = dict(options or {})
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    extra = ",".join(f"{k}={v}" for k, v in sorted(settings.get("optimizer_options", {}).items()))
    key = f"{check}:{name}[{topology};{','.join(dtypes)};{opts}{';' + extra if extra else ''}]"
    return AlgorithmCase(
        REGISTRY[name],
        options,
        {"checks": {check}, "dtypes": dtypes, "topology": topology, **settings},
        id=key,
    )


#: PowerSGD's warm-started rank-2 power iteration amplifies float32 rounding (the second
#: direction of a nearly rank-1 gradient is ill-determined): 1.3e-5 after 20 steps; float64
#: agrees within 1e-10, and tests/test_powersgd.py checks it against PyTorch's hook.
LOOSER = {"powersgd": {"engine_parity": {"float32": 1e-4}}}

DISTRIBUTED_CASES: list[AlgorithmCase] = [
    *[_dist(name, "overlap", BASE.get(name)) for name in NAMES],
    _dist(
        "dpsgd", "overlap", {"momentum": 0.9}, dtypes=("float64",), topology="one-peer-exponential"
    ),
    _dist("dpsgd", "overlap", {"form": "atc", "weight_decay": 0.01}, dtypes=("float64",)),
    _dist("gradient-tracking", "overlap", {"form": "cta"}, dtypes=("float64",)),
    _dist("detag", "overlap", {"pipelined": False, "rounds": 2}, dtypes=("float64",)),
    _dist("local-sgd", "overlap", {"period": 3}, dtypes=("float64",)),
    # clipping goes to the optimizer: allreduce then averages and clips g in step() and steps
    # the buckets there (the global norm needs every gradient: no hooks)
    _dist(
        "allreduce",
        "overlap",
        {"momentum": 0.9},
        dtypes=("float64",),
        optimizer_options={"clip_grad_norm": 0.5},
    ),
    *[
        _dist(
            name, "engine_parity", {**PARITY, **BASE.get(name, {})}, tolerances=LOOSER.get(name, {})
        )
        for name in NAMES
    ],
    *[
        _dist(name, "engine_parity", {**PARITY, **options}, dtypes=(dtype,), topology=topology)
        for name, dtype, topology, options in [
            ("dpsgd", "float64", "one-peer-exponential", {}),
            ("dpsgd", "float64", "exponential", {"form": "atc"}),
            ("dpsgd", "float32", "star", {"nesterov": True}),
            ("gradient-tracking", "float64", "ring", {"form": "cta"}),
            # time-varying W(k): CTA gossips [x_k, y_k] after the gradient (DIGing)
            ("gradient-tracking", "float64", "one-peer-exponential", {"form": "cta"}),
            ("gradient-tracking", "float64", "one-peer-exponential", {"form": "atc"}),
            ("detag", "float64", "ring", {"pipelined": False, "rounds": 2}),
            ("detag", "float64", "one-peer-exponential", {"eta": 0.0}),
            ("d2", "float64", "torus", {}),
            ("ef-sgd", "float64", "ring", {"layerwise": True, "compressor": "randomk"}),
            # random-k averaged by one all-reduce of its k values; TernGrad (all-gather,
            # per-worker draws) with error feedback as C / (1 + ω)
            ("ef-sgd", "float32", "ring", {"compressor": "randomk"}),
            ("ef-sgd", "float64", "ring", {"compressor": "terngrad"}),
            ("choco-sgd", "float32", "ring", {"layerwise": True}),
            ("distributed-adam", "float64", "complete", {"preset": "adam", "theta": "zou:0.5"}),
            # local-sgd: the default syncs every 8 steps with block momentum 1 - 1/n; these add
            # plain K-AVG, the warm-up, averaged buffers, block Nesterov (both styles), gossip
            # and Adam
            ("local-sgd", "float64", "ring", {"period": 4, "block_momentum": 0.0}),
            (
                "local-sgd",
                "float64",
                "ring",
                {"period": 4, "warmup_steps": 3, "local_state": "average", "block_nesterov": True},
            ),
            (
                "local-sgd",
                "float64",
                "one-peer-exponential",
                {"period": 3, "gossip": True, "block_nesterov": True, "nesterov_style": "cntk"},
            ),
            (
                "local-sgd",
                "float32",
                "ring",
                {"period": 5, "local_update": "adam", "lr": 0.003, "local_state": "keep"},
            ),
            # diloco: streaming fragments in flight (posted with mean_start on gloo), top-k with
            # error feedback (all-gather, blocking at the post), random-k (one all-reduce of k)
            ("local-sgd", "float64", "ring", LSGD_WARMUPS["warmup_sync=gradients"]),
            ("local-sgd", "float64", "ring", LSGD_WARMUPS["warmup_sync=none"]),
            ("diloco", "float64", "ring", DILOCO_STREAMING),
            ("diloco", "float64", "ring", DILOCO_TOPK),
            ("diloco", "float32", "ring", DILOCO_RANDOMK),
        ]
    ],
    # DistributedOptimizer on gloo: the overlapped run resumed from a state_dict taken after
    # step 4 of 8, with a fragment posted at step 4 still in flight (streaming: fragment 1,
    # applied at 6; topk: fragment 0, applied at 5)
    _dist("diloco", "overlap", DILOCO_STREAMING, dtypes=("float64",)),
    _dist("diloco", "overlap", DILOCO_TOPK, dtypes=("float64",)),
]


#: The conformance kit's own tests (``tests/test_conformance_kit.py``) in the same launch: a
#: user's algorithm, imported by the gloo processes from ``tests/_user_algorithms.py``, and a
#: variant that averages with ``x.mean(0)`` instead of the communicator.
def _user_cases() -> list[AlgorithmCase]:
    from _user_algorithms import AveragesWithoutComm, MomentumDSGD

    return [
        AlgorithmCase(
            MomentumDSGD,
            {"momentum": 0.9},
            {"checks": {"engine_parity", "overlap"}},
            id="user:my-dsgd",
        ),
        AlgorithmCase(
            AveragesWithoutComm, {}, {"checks": {"engine_parity"}}, id="user:averages-without-comm"
        ),
    ]


USER_DISTRIBUTED_CASES: list[AlgorithmCase] = _user_cases()
