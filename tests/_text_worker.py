"""Worker of the language-model engine-parity test: every case of ``_text_cases.CASES`` on the
distributed engine. Started 2 times with torchrun's environment variables; rank 0 writes
``{case: {"x": [n, D], "bytes": [n], "records": [...]}}`` to ``argv[1]``."""

from __future__ import annotations

import sys

import torch

from peergrad.comm import distributed
from peergrad.train import train

sys.path.insert(0, sys.argv[2])
from _text_cases import CASES, text_config  # noqa: E402


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    results = {}
    for case in CASES:
        result = train(text_config(case, "distributed"), write=False)
        comm = result.comm
        bytes_all = comm.gather(comm.bytes_sent[:, None].clone())
        if comm.rank == 0:
            results[case] = {
                "x": result.x.clone(),
                "bytes": bytes_all[:, 0].clone(),
                "records": result.records,
            }
    if distributed.dist.get_rank() == 0:
        torch.save(results, sys.argv[1])
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
