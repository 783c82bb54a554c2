"""Worker of the engine-parity test: run every case on the distributed engine, save results.

Started 4 times by ``test_engine_parity.py`` with torchrun's environment variables. Rank 0 writes
``{case: {"x": [n, D], "bytes": [n], "comm_time": float, "buffers": {name: [n, ...]}}}`` to
``argv[1]``.
"""

from __future__ import annotations

import sys

import torch

from peergrad.comm import distributed
from peergrad.train import TrainConfig, train

sys.path.insert(0, sys.argv[2])
from _parity_cases import CASES, config_for  # noqa: E402


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    results = {}
    for case in CASES:
        config: TrainConfig = config_for(case, engine="distributed")
        result = train(config, write=False)
        comm = result.comm
        bytes_all = comm.gather(comm.bytes_sent[:, None].clone())
        buffers = {k: comm.gather(b.clone()) for k, b in result.buffers.items()}
        if comm.rank == 0:
            results[case.key] = {
                "x": result.x.clone(),
                "bytes": bytes_all[:, 0].clone(),
                "comm_time": comm.simulated_comm_time_s,
                "buffers": buffers,
            }
    if distributed.dist.get_rank() == 0:
        torch.save(results, sys.argv[1])
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
