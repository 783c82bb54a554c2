"""Worker of ``test_hung_peer.py``: a loop of gossip rounds (``gossip``) or all-reduces
(``all-reduce``) in which worker ``victim`` stops itself (SIGSTOP) right after announcing step
``stop_at``, as a hung process would.

Usage: ``_hang_worker.py MODE TIMEOUT_S VICTIM STOP_AT``, started with torchrun's environment
variables. The timeout is given to ``init_process_group`` only; the communicator is built without
one. The victim prints ``stopping at <unix time>``; every other worker prints
``failed at <unix time>: <PeerFailure message>`` (one line) on stderr and exits 1.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import torch

from peergrad.comm import PeerFailure, distributed
from peergrad.topology import make_topology


def main() -> int:
    mode, timeout_s, victim, stop_at = sys.argv[1], float(sys.argv[2]), *map(int, sys.argv[3:5])
    distributed.init_process_group(timeout_s=timeout_s)
    n = int(os.environ["WORLD_SIZE"])
    comm = distributed.DistributedCommunicator(make_topology("ring", n))  # no timeout_s here
    x = torch.full((1, 1000), float(comm.rank), dtype=torch.float64)
    try:
        for step in range(1, 100_000):
            comm.begin_step(step)
            if comm.rank == victim and step == stop_at:
                print(f"stopping at {time.time()!r}", flush=True)
                os.kill(os.getpid(), signal.SIGSTOP)
            if mode == "gossip":
                x = comm.mix(x, comm.topology.at(step)).clone()
            else:
                x = comm.mean(x).clone()
            time.sleep(0.002)
    except PeerFailure as exc:
        print(f"failed at {time.time()!r}: {exc}", file=sys.stderr, flush=True)
        if distributed.hosts_store():  # the others read the heartbeats from this process
            time.sleep(4.0)
        os._exit(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
