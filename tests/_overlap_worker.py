"""Worker of ``test_clock_overlap.py``: a profile's ring time imposed on ``mean_start`` /
``wait_for`` of real gloo processes (the clock's asynchronous all-reduce, issue 28).

Started ``world_size`` times with torchrun's environment variables; rank 0 writes to ``argv[1]``
a dict of seconds (``time.monotonic()`` differences on rank 0):

- ``ring_s``: the profile's ring time of the all-reduce (``ImposedSystem.all_reduce_s``);
- ``blocking_s``: a blocking ``mean``;
- ``at_once_s``: ``mean_start`` then ``wait_for`` at once (no overlap: the ring time is slept);
- ``overlapped_wait_s``: the ``wait_for`` after a ``mean_start`` and ``1.5 x ring_s`` of
  compute (a sleep): the ring time has passed, nothing is slept;
- ``partial_s``: post to the end of the ``wait_for`` with ``0.5 x ring_s`` of compute between;
- ``equal``: 1.0 if every mean equals the blocking one bit for bit.
"""

from __future__ import annotations

import sys
import time

import torch

from peergrad.comm import distributed
from peergrad.system import LinkProfile, SystemProfile
from peergrad.topology import make_topology

D = 64


def main() -> None:
    distributed.init_process_group(timeout_s=60)
    n = distributed.dist.get_world_size()
    # 2 (n - 1) x 50 ms of latency: 0.1 s for 2 workers; bandwidth too high to matter
    profile = SystemProfile(n, links=LinkProfile(latency_s=0.05, bandwidth_bytes_per_s=1e15))
    comm = distributed.DistributedCommunicator(make_topology("ring", n), profile=profile)
    assert comm.system is not None
    x = torch.arange(D, dtype=torch.float64)[None] * (comm.rank + 1)
    ring = comm.system.all_reduce_s(x.numel() * x.element_size())
    out: dict[str, float] = {"ring_s": ring}
    comm.barrier()

    t0 = time.monotonic()
    expected = comm.mean(x).clone()
    out["blocking_s"] = time.monotonic() - t0
    comm.barrier()

    means = []
    buf = torch.empty_like(x)
    t0 = time.monotonic()
    comm.mean_start(x, out=buf)
    comm.wait_for(buf)
    out["at_once_s"] = time.monotonic() - t0
    means.append(buf.clone())
    comm.barrier()

    comm.mean_start(x, out=buf)
    time.sleep(1.5 * ring)  # compute behind which the all-reduce runs
    t0 = time.monotonic()
    comm.wait_for(buf)
    out["overlapped_wait_s"] = time.monotonic() - t0
    means.append(buf.clone())
    comm.barrier()

    t0 = time.monotonic()
    comm.mean_start(x, out=buf)
    time.sleep(0.5 * ring)
    comm.wait_for(buf)
    out["partial_s"] = time.monotonic() - t0
    means.append(buf.clone())

    out["equal"] = float(all(torch.equal(m, expected) for m in means))
    if comm.rank == 0:
        torch.save(out, sys.argv[1])
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
