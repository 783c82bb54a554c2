"""Module buffers (BatchNorm running statistics) averaged over the workers: the collectives on
the stacked buffers ``{name: [w, *shape]}`` of :class:`peergrad.train.params.WorkerModel` (and
on a module's own buffers, one row each, for :class:`peergrad.optim.DistributedOptimizer`).

Floating-point buffers are averaged with one ``comm.mean`` of all of them concatenated, per
dtype; integer buffers (``num_batches_tracked``) count alike on every worker and are never
averaged. Moved here from :mod:`peergrad.train.params` (issue 25: collectives live with the
communicators), which re-exports both functions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["average_buffers", "mean_buffers"]


def mean_buffers(
    buffers: dict[str, Tensor], comm: Any, *, account: bool = False
) -> dict[str, Tensor]:
    """The buffers of the averaged model x̄: ``{name: [1, *shape]}`` (new tensors).

    Floating-point buffers are their mean over all workers (one ``comm.mean`` of all of them
    concatenated, per dtype); integer buffers (``num_batches_tracked``, equal on every worker)
    are this process's first row. ``account=False`` (default, for evaluation) charges nothing to
    the communicator's byte counters. ``buffers`` is not changed.
    """
    out = {n: b[:1].clone() for n, b in buffers.items() if not b.is_floating_point()}
    for names, avg in _averaged(buffers, comm, account):
        for n, a in zip(names, avg, strict=True):
            out[n] = a[:1].clone()
    return {n: out[n] for n in buffers}


def average_buffers(
    buffers: dict[str, Tensor], comm: Any, *, account: bool = True
) -> dict[str, Tensor]:
    """Replace, in place, every floating-point buffer by its mean over all workers.

    One ``comm.mean`` of all floating-point buffers concatenated (per dtype), charged to the
    communicator as one all-reduce (``account=True``); integer buffers (``num_batches_tracked``)
    are left as they are (all workers count alike). The "average" buffers option calls this at
    every communication round. Returns ``buffers``.
    """
    for names, avg in _averaged(buffers, comm, account):
        for n, a in zip(names, avg, strict=True):
            buffers[n].copy_(a)
    return buffers


def _averaged(
    buffers: dict[str, Tensor], comm: Any, account: bool
) -> list[tuple[list[str], list[Tensor]]]:
    groups: dict[torch.dtype, list[str]] = {}
    for n, b in buffers.items():
        if b.is_floating_point():
            groups.setdefault(b.dtype, []).append(n)
    result = []
    for names in groups.values():
        rows = [buffers[n] for n in names]
        w = rows[0].shape[0]
        flat = torch.cat([r.reshape(w, -1) for r in rows], dim=1)
        mean = comm.mean(flat, account=account)
        pieces = torch.split(mean, [r[0].numel() for r in rows], dim=1)
        result.append((names, [p.reshape(r.shape) for p, r in zip(pieces, rows, strict=True)]))
    return result
