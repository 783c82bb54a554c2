"""Worker of ``test_system_distributed.py``: a system profile imposed on real gloo processes.

Started ``world_size`` times with torchrun's environment variables; rank 0 writes its results
(and every worker's rows, gathered) to ``argv[1]``:

- ``compute_s``: ``[n]`` seconds each worker's ``compute()`` took under a profile with
  ``step_ms = 40`` and worker 1 a 4x persistent straggler (absolute mode: the sleep is the
  profile's compute time);
- ``plain``, ``delayed``: ``[n, D]`` float64 after 6 gossip rounds and an all-reduce, without
  and with slow links (every link 3 ms, one 2 ms + 1 MB/s): link delays must not change them;
- ``dropped``: ``[n, D]`` after 8 steps of gossip under ``link_drop_prob = 0.4`` (seed 3), for
  the parity check against the simulated engine; ``dropped_bytes``: ``[n]`` bytes sent.
"""

from __future__ import annotations

import sys
import time

import torch

from peergrad.comm import distributed
from peergrad.system import ComputeProfile, FailureProfile, LinkOverride, LinkProfile, SystemProfile
from peergrad.topology import make_topology

D = 7


def profiles(n: int) -> dict[str, SystemProfile]:
    """The profiles of the test (also built by the test for the simulated engine)."""
    fast = LinkProfile(latency_s=0.0, bandwidth_bytes_per_s=1e15)
    return {
        "straggler": SystemProfile(
            n,
            compute=ComputeProfile(step_ms=40.0, speed=(1.0, 0.25) + (1.0,) * (n - 2)),
            links=fast,
        ),
        "slow": SystemProfile(
            n,
            links=LinkProfile(
                latency_s=3e-3,
                bandwidth_bytes_per_s=1e9,
                overrides=(LinkOverride(0, 1, 2e-3, 1e6), LinkOverride(1, 0, 2e-3, 1e6)),
            ),
        ),
        "drops": SystemProfile(n, links=fast, failures=FailureProfile(link_drop_prob=0.4), seed=3),
    }


def start(n: int, seed: int) -> torch.Tensor:
    """Worker rows of the starting point, float64 ``[n, D]``."""
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gossip(comm: object, x: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` steps of begin_step, a pre-gradient round, compute, a local change, a round
    after it and every third step an all-reduce (the loop's call order)."""
    topo = comm.topology  # type: ignore[attr-defined]
    for k in range(1, steps + 1):
        comm.begin_step(k)  # type: ignore[attr-defined]
        pending = comm.mix_start(x, topo.at(k))  # type: ignore[attr-defined]
        comm.compute()  # type: ignore[attr-defined]
        x = pending.wait() - 0.01 * k * x
        x = comm.mix(x, topo.at(k))  # type: ignore[attr-defined]
        if k % 3 == 0:
            x = x + comm.mean(x)  # type: ignore[attr-defined]
    return x


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    n = distributed.dist.get_world_size()
    topo = make_topology("ring", n)
    p = profiles(n)
    out: dict[str, object] = {}

    comm = distributed.DistributedCommunicator(topo, profile=p["straggler"])
    comm.begin_step(1)
    t0 = time.monotonic()
    comm.compute()
    took = torch.tensor([[time.monotonic() - t0]], dtype=torch.float64)
    out["compute_s"] = comm.gather(took)

    for key, profile in (("plain", None), ("delayed", p["slow"])):
        comm = distributed.DistributedCommunicator(topo, profile=profile)
        x = start(n, 0)[comm.rank : comm.rank + 1].clone()
        out[key] = comm.gather(gossip(comm, x, 6))

    comm = distributed.DistributedCommunicator(topo, profile=p["drops"])
    x = start(n, 1)[comm.rank : comm.rank + 1].clone()
    out["dropped"] = comm.gather(gossip(comm, x, 8))
    out["dropped_bytes"] = comm.gather(comm.bytes_sent[:, None].clone())
    if comm.rank == 0:
        torch.save(out, sys.argv[1])
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
