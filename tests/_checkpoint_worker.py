"""Worker of the distributed checkpoint test (started 4 times with torchrun's variables).

For every case named in ``argv[3]`` (keys separated by ``|``; ``all`` = every case): an
uninterrupted run, a run stopped after step ``STOP`` and its resume, all in folders under
``argv[1]``. Rank 0 saves ``{key: {"straight": ..., "resumed": ...}}`` (parameters ``[n, D]``,
every rank's plain state and byte counters, metric records) to ``argv[1]/results.pt``, and under
``"__nan_guard__"`` every rank's error message from a diverging run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from peergrad.comm import distributed
from peergrad.train import NonFiniteError, TrainConfig, train
from peergrad.train.checkpoint import to_plain

sys.path.insert(0, sys.argv[2])
from _checkpoint_cases import CASES, STOP, config_for  # noqa: E402


def summary(result) -> dict:  # type: ignore[no-untyped-def]
    comm = result.comm
    mine = {
        "state": to_plain(result.state),
        "bytes": comm.bytes_sent.clone(),
        "time": comm.simulated_comm_time_s,
        "rounds": comm.rounds,
    }
    everyone = [None] * comm.n_workers
    distributed.dist.all_gather_object(everyone, mine)
    records = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in result.records]
    return {"x": result.x.clone(), "ranks": everyone, "records": records}


def main() -> None:
    root, wanted = Path(sys.argv[1]), sys.argv[3]
    distributed.init_process_group(timeout_s=60)
    results = {}
    for case in CASES:
        if wanted != "all" and case.key not in wanted.split("|"):
            continue
        name = case.key.replace("[", "_").replace("]", "").replace(";", "_").replace(",", "_")
        straight = train(config_for(case, "distributed", str(root / f"{name}-a")), write=False)
        config = config_for(case, "distributed", str(root / f"{name}-b"))
        train(config, write=False, stop_after=STOP)
        resumed = train(config, write=False, resume=True)
        results[case.key] = {"straight": summary(straight), "resumed": summary(resumed)}
    # The NaN guard: every rank stops at the same step with the same message.
    diverging = TrainConfig(
        **{**config_for(CASES[0], "distributed", "").to_dict(), "out": None},
    )
    diverging.algorithm, diverging.model, diverging.lr, diverging.steps = "dpsgd", "mlp", 1e5, 40
    diverging.checkpoint_every, diverging.options = None, {}
    try:
        train(diverging, write=False)
        message = "no error"
    except NonFiniteError as exc:
        message = str(exc)
    messages = [None] * 4
    distributed.dist.all_gather_object(messages, message)
    results["__nan_guard__"] = messages
    if distributed.dist.get_rank() == 0:
        torch.save(results, root / "results.pt")
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
