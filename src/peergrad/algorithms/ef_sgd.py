"""EF-SGD: compressed SGD with error feedback (memory), and compressed SGD without it.

Papers: S. U. Stich, J.-B. Cordonnier, M. Jaggi, "Sparsified SGD with Memory", NeurIPS 2018,
arXiv:1809.07599 (Mem-SGD); S. P. Karimireddy, Q. Rebjock, S. U. Stich, M. Jaggi, "Error Feedback
Fixes SignSGD and other Gradient Compression Schemes", ICML 2019, arXiv:1901.09847 (EF-SGD,
Algorithm 2). Spec: compression-momentum-adam.md §3.3.

Update rule (worker i, shapes ``[w, D]``; C = ``make_compressor(compressor, ratio, levels)``,
divided by 1 + ω when it is unbiased with variance ω and ``memory=True``: see below)::

    d     <- heavy_ball(buf, g + weight_decay * x, momentum, nesterov)   (d = g by default)
    p     <- lr * d + e                  (memory=True;  p <- lr * d when memory=False)
    Delta <- C(p)                        (the message; random compressors draw from ``rng``)
    e     <- p - Delta                   (memory=True; e stays 0 otherwise)
    x     <- x - mean_i Delta_i          (``exchange``: all-reduce of the values of a linear
                                          compressor, all-gather of the packed messages else)

Invariants (tested): with the identity compressor it is all-reduce SGD; the virtual iterate
``x - mean_i e_i`` follows plain SGD with the averaged gradient exactly (error feedback loses
nothing). Bytes per worker and step: ``(n - 1) * C.nbytes(D, dtype)`` (ring all-gather), or
``2 (n - 1) / n * k * itemsize`` (ring all-reduce of the k values) for a linear compressor
(identity: k = D; ``randomk``, ``randomk-unscaled``: the k kept values, with the index set drawn
by every worker from the shared generator) under ``exchange="auto"`` (default) or
``"allreduce"``; ``exchange="allgather"`` all-gathers every compressor's packed message. With
memory, ``randomk`` is used as ``C / (1 + ω)``, still linear: every worker divides its values by
1 + ω before the all-reduce.

Unbiased compressors (``randomk``, ``qsgd``) are not contractions, and error feedback with them
diverges (scaled random-k reaches 1e155 in 1000 steps on the test quadratics). With
``memory=True`` they are used as ``C / (1 + ω)``, a δ-contraction with δ = 1/(1 + ω) (spec §2.1;
Stich et al. 2018 analyse contractions only): same message and bytes, the decoded update divided
by 1 + ω; for scaled random-k that is unscaled random-k. ``compressed-sgd`` (no memory) uses
them unscaled (unbiased).

Deviations from the papers: heavy-ball/Nesterov momentum (on the local gradient, before the
memory) and weight decay are additions; the papers analyse plain SGD. x is replicated: every worker
applies the same averaged update. ``compressed-sgd`` (memory=False) is the no-memory baseline.

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1), ``weight_decay < 0``, ``ratio``
outside (0, 1], ``levels < 1`` and an unknown compressor name.

Under failures (a system profile's dropped links or absent workers): ef-sgd: the compressed mean is
over the present workers; a returning worker's x is stale, so the copies of x stop being identical;
its error memory is frozen while away; compressed-sgd: the compressed mean is over the present
workers; a returning worker's x is stale, so the copies of x stop being identical.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from peergrad.algorithms.base import Closure
from peergrad.algorithms.compressed import CompressedSGDAlgorithm
from peergrad.comm.base import Communicator
from peergrad.comm.compressed import compressed_mean
from peergrad.compress import load_generator, new_generator_state


@dataclasses.dataclass
class EFState:
    """``step``; ``momentum_buffer``, ``error`` (the memory e): ``[w, D]``; ``rng``: uint8 state
    of the CPU generator shared by all workers (same value on every worker and engine)."""

    step: int
    momentum_buffer: Tensor
    error: Tensor
    rng: Tensor


@dataclasses.dataclass(frozen=True)
class EFSGD(CompressedSGDAlgorithm):
    """EF-SGD (Stich et al. 2018; Karimireddy et al. 2019); see the module docstring.

    Options:

    - ``lr`` > 0: the step size γ; default 0.1.
    - ``momentum`` in [0, 1): heavy-ball momentum on the local gradient, before the memory;
      default 0: the papers analyse plain SGD.
    - ``memory`` true or false: error feedback (the memory e keeps what compression dropped);
      false is compressed-sgd, the no-memory baseline.
    """

    memory: bool = True

    name: ClassVar[str] = "ef-sgd"
    failures_note: ClassVar[str] = (
        "the compressed mean is over the present workers; a returning worker's x is stale, so "
        "the copies of x stop being identical; its error memory is frozen while away"
    )
    paper: ClassVar[str] = (
        "Stich et al. 2018, arXiv:1809.07599; Karimireddy et al. 2019, arXiv:1901.09847"
    )
    summary: ClassVar[str] = "compressed SGD with error feedback: averaged compressed updates"

    def uses_topology(self) -> bool:
        """False: the compressed messages are averaged over all workers, with no topology."""
        return False

    def init(self, x: Tensor, comm: Communicator) -> EFState:
        return EFState(
            step=0,
            momentum_buffer=torch.zeros_like(x),
            error=torch.zeros_like(x),
            rng=new_generator_state(self.seed),
        )

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: EFState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> EFState:
        C = self.compressor_for(x.shape[1], error_feedback=self.memory)
        d = self.direction(x, g, state)  # updates state.momentum_buffer
        p = torch.mul(d, self.lr)
        if self.memory:
            p.add_(state.error)
        gen = load_generator(state.rng)
        msg = C.compress(p, gen, worker_ids=comm.worker_ids, n_workers=comm.n_workers)
        if self.memory:
            torch.sub(p, C.decompress(msg), out=state.error)
        x.sub_(compressed_mean(comm, C, msg, exchange=self.exchange))
        return EFState(state.step + 1, state.momentum_buffer, state.error, gen.get_state())


@dataclasses.dataclass(frozen=True)
class CompressedSGD(EFSGD):
    """EF-SGD with ``memory=False``: x <- x - mean_i C(lr * d_i) (no error feedback)."""

    memory: bool = False

    name: ClassVar[str] = "compressed-sgd"
    failures_note: ClassVar[str] = (
        "the compressed mean is over the present workers; a returning worker's x is stale, so "
        "the copies of x stop being identical"
    )
    paper: ClassVar[str] = "baseline of Stich et al. 2018, arXiv:1809.07599 (no memory)"
    summary: ClassVar[str] = "compressed SGD without error feedback (baseline for ef-sgd)"
