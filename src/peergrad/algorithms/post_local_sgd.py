"""Post-local SGD as PyTorch implements it: ``PostLocalSGDOptimizer`` + DDP's
``post_localSGD_hook``, a preset of :class:`~peergrad.algorithms.local_sgd.LocalSGD`.

Paper: Lin, Stich, Patel and Jaggi, "Don't Use Large Mini-Batches, Use Local SGD", ICLR 2020,
arXiv:1808.07217 (post-local SGD: mini-batch SGD first, local SGD after). The reference this
preset reproduces exactly is PyTorch's implementation of it
(``torch.distributed.optim.PostLocalSGDOptimizer`` wrapping ``torch.optim.SGD`` and a
``PeriodicModelAverager``, with ``torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook``
registered on a ``DistributedDataParallel`` model), checked on 4 gloo processes in float64
(``tests/test_torch_local_sgd.py``).

Update rule (one ``step`` = one minibatch per worker; shapes ``[w, D]``; ``t = state.step + 1``;
``W`` = ``warmup_steps``, ``K`` = ``period``)::

    t <= W (warm-up, DDP's gradient all-reduce; torch: the hook's iter < start_localSGD_iter):
        g_bar <- mean_i g_i                                   (one all-reduce of D values)
        x     <- x - lr * heavy_ball(buf, g_bar + weight_decay * x, momentum, nesterov)
                 (identical x and buf on every worker: torch.optim.SGD after DDP's backward)
    t > W (local SGD; torch: no gradient all-reduce with post_local_gradient_allreduce=False):
        x_i   <- x_i - lr * heavy_ball(buf_i, g_i + weight_decay * x_i, momentum, nesterov)
        t - W = 1, 1 + K, 1 + 2K, ... (torch's PeriodicModelAverager(period=K, warmup_steps=W),
        which counts its steps from 0 and averages when step >= W and (step - W) % K == 0):
            x_i <- mean_j x_j                                 (one all-reduce of D values)
            buf_i kept (torch averages the parameters only)

This is :class:`LocalSGD` with ``warmup_sync="gradients"``, ``first_sync="immediate"``,
``local_state="keep"``, ``block_momentum=0``, ``block_lr=1``, ``local_update="sgd"``; every
other :class:`LocalSGD` option can still be set (a block step, Adam local updates: then it is no
longer torch's recipe). The table mapping each option onto torch's arguments is in
``docs/guide/torch-local-sgd.md``.

Communication: ``warmup_steps`` all-reduces of the gradient (``D`` values each), then one
all-reduce of ``D`` values per sync; nothing on the other local steps.

Defaults and deviations ([D] = library decision, [R?] = recalled, not checked in the paper):
``period = 4`` and ``warmup_steps = 100`` are the values of the example in PyTorch's
documentation of ``PostLocalSGDOptimizer`` [D]; the paper switches to local SGD at the first
learning-rate decay and studies several H [R?]. Whether the paper's local phase keeps each
worker's momentum buffer (as torch does, and this preset) is not confirmed [R?]. torch's hook
by default (``post_local_gradient_allreduce=True``, ``subgroup=None``) keeps all-reducing the
gradients inside each node's subgroup after the warm-up (hierarchical local SGD); peergrad has
no node subgroups, so the preset is the hook with ``post_local_gradient_allreduce=False`` (or
subgroups of one process each, which is the same). Gradients are averaged as ``mean_i g_i``
(sum, then divide) where DDP sums ``g_i / n``: equal up to rounding.

Raises ``ValueError`` for the options :class:`LocalSGD` refuses (one line naming the option and
its range), e.g. ``warmup_steps < 0``, ``period < 1``, an unknown ``warmup_sync``.

Under failures (a system profile's dropped links or absent workers): the warm-up averages the
present workers' gradients and a sync averages the present workers' models; a returning worker
keeps its stale x until the next sync.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from peergrad.algorithms.local_sgd import LocalSGD


@dataclasses.dataclass(frozen=True)
class PostLocalSGD(LocalSGD):
    """PyTorch's post-local SGD: DDP's gradient all-reduce for ``warmup_steps`` iterations, then
    local SGD with a model average at the first iteration after the warm-up and every
    ``period`` iterations after it (see the module docstring).

    Options:

    - ``momentum`` in [0, 1): the local heavy-ball momentum (torch.optim.SGD's momentum inside
      PostLocalSGDOptimizer); default 0, plain SGD (--momentum 0.9 for the usual setting).
    - ``period`` integer >= 1: K, iterations between model averages after the warm-up (torch's
      PeriodicModelAverager period); default 4, the example of torch's documentation.
    - ``warmup_steps`` integer >= 0: W, the synchronous iterations first (torch's
      start_localSGD_iter and the averager's warmup_steps); default 100, the example of torch's
      documentation.
    - ``warmup_sync`` one of models, gradients, none: what a warm-up iteration communicates;
      default gradients (DDP's all-reduce of the gradients; every worker keeps the same x and
      momentum buffer).
    - ``first_sync`` one of period, immediate: when the model averages after the warm-up fall;
      default immediate (the first iteration after the warm-up, then every K: torch's
      PeriodicModelAverager).
    - ``local_state`` one of reset, keep, average: what the local momentum buffers do at a
      model average; default keep (torch averages the parameters only).
    - ``block_momentum`` in [0, 1), or None: μ of a block-momentum step at each average; default
      0, no block step (torch has none); None: the BMUF rule 1 - 1/n.
    """

    period: int = 4
    block_momentum: float | None = 0.0
    local_state: str = "keep"
    warmup_steps: int = 100
    warmup_sync: str = "gradients"
    first_sync: str = "immediate"

    name: ClassVar[str] = "post-local-sgd"
    failures_note: ClassVar[str] = (
        "the warm-up averages the present workers' gradients and a sync the present workers' "
        "models; a returning worker keeps its stale x until the next sync"
    )
    paper: ClassVar[str] = (
        "Lin, Stich, Patel & Jaggi, ICLR 2020, arXiv:1808.07217 (torch's PostLocalSGDOptimizer)"
    )
    summary: ClassVar[str] = (
        "post-local SGD as torch runs it: gradient all-reduce during the warm-up, then local SGD "
        "with a model average every K steps"
    )
