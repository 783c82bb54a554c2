"""Helpers for tests that start real worker processes on loopback (gloo), without torchrun.

The launcher is the conformance kit's (:mod:`peergrad.testing._distributed`), so the tests and
the kit start workers one way: ``start_workers(argv, world_size, cwd=, log_dir=)`` writes each
process's output to ``log_dir/rank{r}.out`` / ``.err``; ``wait_all(procs, timeout_s)`` returns
the exit codes (None for a process killed at the deadline); ``free_port()``.
"""

from __future__ import annotations

from peergrad.testing._distributed import free_port, start_workers, wait_all

__all__ = ["free_port", "start_workers", "wait_all"]
