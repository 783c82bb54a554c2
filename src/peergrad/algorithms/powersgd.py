"""PowerSGD: all-reduce SGD whose gradient average is a low-rank approximation, with error feedback.

Paper: T. Vogels, S. P. Karimireddy, M. Jaggi, "PowerSGD: Practical Low-Rank Gradient Compression
for Distributed Optimization", NeurIPS 2019, arXiv:1905.13727 (Algorithm 1: rank-r compression,
Algorithm 2: error feedback with momentum). Spec: compression-momentum-adam.md §2.2. The details
follow PyTorch's DDP communication hook ``torch.distributed.algorithms.ddp_comm_hooks.
powerSGD_hook`` (``PowerSGDState``, ``powerSGD_hook``, ``_orthogonalize``, ``_should_compress``):
``tests/test_powersgd.py`` runs DDP with that hook and ``torch.optim.SGD`` beside this class.

Every parameter tensor of ``shapes`` (segments of the flat buffer, in its order) is a matrix of
m = shape[0] rows and k = numel / m columns (a 1-D tensor is a column, a scalar 1 x 1), with rank
r' = min(rank, m, k). Update rule (worker i, iteration ``t = state.step``; shapes ``[w, D]``)::

    t < start_iter:   g_bar <- mean_i g_i                         (one all-reduce of D values)
    t >= start_iter:
        Delta_i <- g_i + e_i                       (error_feedback; e_i = 0 until start_iter)
        U: tensors with r' (m + k) * min_compression_rate >= m k (biases, small matrices)
            U_bar <- mean_i U_i                                  (all-reduce 1: U values)
        every other matrix M_i (m x k), all of them in one message per all-reduce:
            Q <- randn(k, r') from the shared seed, on the first compressed step (every
                 compressed step with warm_start=False); else Q of the previous step
            Q <- orthogonalise(Q)
            P_i <- M_i Q;    P <- orthogonalise(mean_i P_i)       (all-reduce 2: sum m r')
            Q_i <- M_i^T P;  Q <- mean_i Q_i                      (all-reduce 3: sum k r')
            M_bar <- P Q^T
        g_bar <- U_bar and the M_bar in the buffer's layout
        e_i   <- Delta_i - g_bar                                 (error_feedback)
    d <- heavy_ball(buf, g_bar + weight_decay * x, momentum, nesterov);  x <- x - lr * d

``orthogonalise`` is torch's: Gram-Schmidt on the columns (``col / (||col|| +
orthogonalization_epsilon)``) when r' <= 2 or in half precision, else the Q factor of
``torch.linalg.qr``. Weight decay is added after decompression, as ``torch.optim.SGD`` does on the
gradients the hook returns. Q, the same on every worker, is drawn as the hook draws it: a seed
``numpy.random.RandomState(seed).randint(10**9)`` (the next draw of that generator at every fresh
start), then ``torch.randn(1, k, r')`` per matrix under ``torch.manual_seed(seed_t)``, the
matrices in the hook's order (grouped by matrix shape, in order of first appearance).

Bytes per worker and step (item size s): ``2 (n - 1) / n * D * s`` before ``start_iter``, then
``2 (n - 1) / n * s * (U + sum_j r'_j (m_j + k_j))``: three all-reduces as in the hook
(uncompressed tensors, P, Q), two when every tensor is compressed. Invariants (tested): error
feedback loses nothing, ``mean_i Delta_i = g_bar + mean_i e_i``; with r' = min(m, k) for every
tensor (and ``min_compression_rate=0``) PowerSGD is exact and equals ``allreduce``.

State: ``momentum_buffer`` and ``error`` ``[w, D]``, ``q`` ``[w, sum_j k_j r'_j]`` (the averaged Q,
rows equal), ``rng`` (numpy's MT19937 state as int64 ``[625]``), ``compressed_steps``.

Deviations from the hook (and the paper): DDP runs the hook per gradient bucket (buckets in
reverse autograd order, rebuilt after the first iteration) with one error, Q and seed draw per
bucket; here the flat buffer in parameter order is one bucket, so the runs are equal when DDP
holds every parameter in one bucket and the parameters are given in the bucket's order (the
test does that). ``start_iter`` may be 0 or 1 (the hook needs >= 2 with error feedback or warm
start, because DDP rebuilds its buckets after the first iteration); its default 0 compresses
from the first step, as the paper's Algorithm 2 does (recalled; the hook's default is 1000). The
hook's all-reduce of an empty set of uncompressed tensors is skipped. P is averaged, not summed,
before orthogonalisation (the same result; with ``orthogonalization_epsilon > 0`` it is scaled by
n, as the sum). A scalar parameter is a 1 x 1 matrix (the hook cannot view it). Orthogonalising
the warm-started Q again, ``min_compression_rate`` and the three all-reduces come from the hook.
Momentum and weight decay act on the decompressed average, as ``torch.optim.SGD`` after DDP.

Zero gradients (spec §2.3 item 6: C(0) = 0, no division by a zero norm): a matrix whose averaged
P has an all-zero column (the whole matrix is zero on every worker, as dL/dA of a LoRA adapter
whose B starts at 0, or a parameter unused in a step; or M Q lost that direction exactly) is
not divided by that zero norm in Gram-Schmidt: the column stays 0, so does the matching column
of Q, and M_bar = P Q^T is exactly 0 for a zero matrix, with no NaN reaching the other
parameters (the hook gives 0/0 = NaN with ``orthogonalization_epsilon = 0``). With warm start an
all-zero column of the new Q is replaced by the previous step's (orthonormalised) column for the
next step, after decoding: with ``epsilon > 0`` the hook keeps the zero column and that matrix
then stays at M_bar = 0 for ever, its gradient piling up in the error memory. Both change
nothing where no column is exactly zero (every parity test is bit-exact).

Numerics: the warm-started rank-2 power iteration amplifies rounding where a matrix's second
direction is ill-determined; in float32 two runs that differ in the last bit (the two engines, or
this class and the hook) drift apart to ~1e-5 relative in 20 steps, in float64 to ~1e-14.

Raises ``ValueError`` for ``lr <= 0``, momentum outside [0, 1), ``weight_decay < 0``, ``rank < 1``,
``rank`` above min(m, k) of every tensor with two or more dimensions (when ``shapes`` is bound),
``start_iter < 0``, ``min_compression_rate < 0``, ``orthogonalization_epsilon < 0``, ``seed``
outside [0, 2**32 - 1], ``shapes`` whose sizes do not add up to D, and a state whose Q does not
fit the options (call ``init`` again).

Under failures (a system profile's dropped links or absent workers): the all-reduces are over the
present workers; a returning worker's x stays stale and its warm-start Q is stale for one step (one
poorer approximation, kept by error feedback).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor

from peergrad.algorithms.base import Closure, SGDAlgorithm, check_non_negative
from peergrad.comm.base import Communicator
from peergrad.transforms import add_weight_decay, heavy_ball

Shape = tuple[int, ...]


@dataclasses.dataclass
class PowerSGDState:
    """``step``; ``momentum_buffer``, ``error`` (e): ``[w, D]``; ``q``: ``[w, sum k r']``, the
    averaged Q of the last compressed step; ``rng``: int64 ``[625]``, the MT19937 state of the
    seed generator (as ``numpy.random.RandomState``); ``compressed_steps``: steps done with
    compression."""

    step: int
    momentum_buffer: Tensor
    error: Tensor
    q: Tensor
    rng: Tensor
    compressed_steps: int


@dataclasses.dataclass(frozen=True)
class Matrix:
    """One compressed tensor: ``start`` in the buffer, ``rows`` x ``cols``, ``rank`` r', and the
    offsets of its P and Q in the flat messages."""

    start: int
    rows: int
    cols: int
    rank: int
    p_offset: int
    q_offset: int


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which tensors are compressed (``matrices``, in the hook's order) and which are sent as
    they are (``uncompressed``: ``(start, stop)`` ranges of the buffer, merged when adjacent);
    ``u_size``, ``p_size``, ``q_size``: values in the three messages."""

    matrices: tuple[Matrix, ...]
    uncompressed: tuple[tuple[int, int], ...]
    u_size: int
    p_size: int
    q_size: int


def matrix_view(shape: Shape) -> tuple[int, int]:
    """(rows, cols) of a tensor viewed as the hook views it: shape[0] x the rest."""
    if len(shape) == 0:
        return 1, 1
    rows = int(shape[0])
    return rows, (math.prod(shape) // rows if rows else 0)


@functools.lru_cache(maxsize=64)
def make_plan(shapes: tuple[Shape, ...], rank: int, min_compression_rate: float) -> Plan:
    """The hook's ``_should_compress`` for every tensor: compressed when
    ``r' (m + k) * min_compression_rate < m k``."""
    kept: list[tuple[int, int, int, int]] = []  # (start, rows, cols, rank)
    uncompressed: list[tuple[int, int]] = []
    start = 0
    for shape in shapes:
        rows, cols = matrix_view(shape)
        numel = math.prod(shape)
        r = min(rows, cols, rank)
        if (rows + cols) * r * min_compression_rate < rows * cols:
            kept.append((start, rows, cols, r))
        elif uncompressed and uncompressed[-1][1] == start:
            uncompressed[-1] = (uncompressed[-1][0], start + numel)
        elif numel:
            uncompressed.append((start, start + numel))
        start += numel
    groups: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
    for item in kept:  # the hook's order: grouped by matrix shape, first appearance first
        groups.setdefault((item[1], item[2]), []).append(item)
    matrices, p, q = [], 0, 0
    for group in groups.values():
        for s, rows, cols, r in group:
            matrices.append(Matrix(s, rows, cols, r, p, q))
            p, q = p + rows * r, q + cols * r
    u_size = sum(b - a for a, b in uncompressed)
    return Plan(tuple(matrices), tuple(uncompressed), u_size, p, q)


def orthogonalize(matrices: Tensor, epsilon: float = 0.0) -> None:
    """Orthonormalise the columns of every ``[m, r]`` matrix of ``matrices`` (``[B, m, r]``,
    r <= m) in place, as the hook's ``_orthogonalize``: Gram-Schmidt for r <= 2 and half
    precision, otherwise the Q factor of ``torch.linalg.qr``. An all-zero column (a zero
    gradient matrix; ``epsilon`` 0) stays zero instead of becoming 0/0 = NaN: nothing is
    divided by a zero norm."""
    rank = matrices.shape[2]
    if rank <= 2 or matrices.dtype in (torch.float16, torch.bfloat16):
        for i in range(rank):
            col = matrices[:, :, i : i + 1]
            norm = torch.linalg.vector_norm(col, dim=1, keepdim=True)
            if epsilon:
                norm = norm + epsilon
            col /= torch.where(norm > 0, norm, 1.0)  # the same division wherever norm > 0
            if i + 1 < rank:
                rest = matrices[:, :, i + 1 :]
                rest -= torch.sum(col * rest, dim=1, keepdim=True) * col
    else:
        matrices.copy_(torch.linalg.qr(matrices).Q)


def _blocks(t: Tensor, matrices: tuple[Matrix, ...], which: str) -> list[Tensor]:
    """Views ``[w, a, b]`` of every matrix's part of ``t`` (``[w, ...]``): ``"m"`` the matrix
    (rows x cols) in the buffer, ``"p"`` its P (rows x r') and ``"q"`` its Q (cols x r') in the
    flat messages."""
    w, out = t.shape[0], []
    for m in matrices:
        start, a, b = {
            "m": (m.start, m.rows, m.cols),
            "p": (m.p_offset, m.rows, m.rank),
            "q": (m.q_offset, m.cols, m.rank),
        }[which]
        out.append(t[:, start : start + a * b].view(w, a, b))
    return out


def _rng_tensor(gen: np.random.RandomState) -> Tensor:
    _, keys, pos, *_ = cast(tuple[str, np.ndarray, int, int, float], gen.get_state())
    return torch.tensor(np.append(keys.astype(np.int64), pos))


def _next_seed(rng: Tensor) -> tuple[int, Tensor]:
    """The hook's ``state.rng.randint(1_000_000_000)`` from the saved state; the new state."""
    values = rng.cpu().numpy()
    gen = np.random.RandomState()
    # numpy accepts the 3-tuple (has_gauss and cached_gaussian default to 0); its stubs do not
    gen.set_state(("MT19937", values[:624].astype(np.uint32), int(values[624])))  # type: ignore[arg-type]
    seed = int(gen.randint(1_000_000_000))
    return seed, _rng_tensor(gen)


@dataclasses.dataclass(frozen=True)
class PowerSGD(SGDAlgorithm):
    """PowerSGD (Vogels, Karimireddy & Jaggi 2019); see the module docstring.

    Options:

    - ``rank`` integer >= 1: the rank r of the approximation of every matrix (r' = min(r, m, k));
      default 2, the paper's recommendation (recalled, not re-read: rank 2 matches uncompressed
      SGD's test accuracy on CIFAR-10/ResNet-18, rank 4 is used for its WikiText-2 LSTM); the
      hook's default is 1. At most min(m, k) of the largest matrix.
    - ``start_iter`` integer >= 0: steps done with plain all-reduce before compression (the
      hook's start_powerSGD_iter, default 1000 there); default 0: compress from the first
      step, as the paper's Algorithm 2 (recalled).
    - ``min_compression_rate`` >= 0: compress a tensor only when m k exceeds
      r' (m + k) times this; default 2, the hook's (below 1 even biases are compressed).
    - ``warm_start`` true or false: start the power iteration from the previous step's Q (the
      paper's and hook's default); false draws a new random Q at every step.
    - ``error_feedback`` true or false: keep what compression dropped and add it to the next
      gradient (the hook's use_error_feedback, default true).
    - ``orthogonalization_epsilon`` >= 0: added to the column norms in Gram-Schmidt; default
      0, the hook's (a zero gradient matrix needs no epsilon here: an all-zero column is never
      divided, and C(0) = 0; see the module docstring).
    - ``seed`` integer in [0, 2**32 - 1]: seed of the random initial Q, the same on every
      worker (the hook's random_seed).
    - ``shapes`` tuple of shapes, or None: the parameter tensors' shapes in buffer order; None:
      filled from the model by peergrad train and DistributedOptimizer (unbound, the buffer is
      one 1-D tensor and is not compressed).
    """

    rank: int = 2
    start_iter: int = 0
    min_compression_rate: float = 2.0
    warm_start: bool = True
    error_feedback: bool = True
    orthogonalization_epsilon: float = 0.0
    seed: int = 0
    shapes: tuple[Shape, ...] | None = None

    name: ClassVar[str] = "powersgd"
    failures_note: ClassVar[str] = (
        "the all-reduces are over the present workers; a returning worker's x stays stale and "
        "its warm-start Q is stale for one step (one poorer approximation, kept by error "
        "feedback)"
    )
    paper: ClassVar[str] = "Vogels, Karimireddy & Jaggi 2019, arXiv:1905.13727"
    summary: ClassVar[str] = (
        "all-reduce SGD with rank-r PowerSGD gradient compression and error feedback"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("rank", "start_iter", "seed"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{key} must be an integer, got {value!r}")
        if not 0 <= self.seed < 2**32:  # numpy.random.RandomState's seeds
            raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {self.seed}")
        if self.rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {self.rank}")
        if self.start_iter < 0:
            raise ValueError(f"start_iter must be an integer >= 0, got {self.start_iter}")
        check_non_negative("min_compression_rate", self.min_compression_rate)
        check_non_negative("orthogonalization_epsilon", self.orthogonalization_epsilon)
        if self.shapes is not None:  # JSON gives lists
            shapes = tuple(tuple(int(d) for d in s) for s in self.shapes)
            object.__setattr__(self, "shapes", shapes)
            limits = [min(matrix_view(s)) for s in shapes if len(s) >= 2]
            if limits and self.rank > max(limits):
                raise ValueError(
                    f"rank={self.rank} is larger than min(rows, cols) of every matrix of the "
                    f"model (largest {max(limits)}); rank must be in [1, {max(limits)}]"
                )

    def uses_topology(self) -> bool:
        """False: the gradients are averaged exactly (all-reduce), with no topology."""
        return False

    def plan(self, D: int) -> Plan:
        """The compression plan for a buffer of ``D`` values (``ValueError`` when ``shapes`` do
        not add up to D; unbound ``shapes``: one 1-D tensor)."""
        shapes = self.shapes if self.shapes is not None else ((D,),)
        total = sum(math.prod(s) for s in shapes)
        if total != D:
            raise ValueError(f"shapes add up to {total} values but x has D = {D}")
        return make_plan(shapes, self.rank, float(self.min_compression_rate))

    def init(self, x: Tensor, comm: Communicator) -> PowerSGDState:
        plan = self.plan(x.shape[1])
        return PowerSGDState(
            step=0,
            momentum_buffer=torch.zeros_like(x),
            error=torch.zeros_like(x),
            q=x.new_zeros(x.shape[0], plan.q_size),
            rng=_rng_tensor(np.random.RandomState(self.seed)),
            compressed_steps=0,
        )

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: PowerSGDState,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> PowerSGDState:
        rng, compressed = state.rng, state.compressed_steps
        if state.step < self.start_iter:
            g_bar = comm.mean(g)
        else:
            g_bar, rng = self._compressed_mean(g, state, comm)
            compressed += 1
        d = heavy_ball(
            state.momentum_buffer,
            add_weight_decay(g_bar, x, self.weight_decay),
            self.momentum,
            self.nesterov,
        )
        x.sub_(d, alpha=self.lr)
        return PowerSGDState(
            state.step + 1, state.momentum_buffer, state.error, state.q, rng, compressed
        )

    def _compressed_mean(
        self, g: Tensor, state: PowerSGDState, comm: Communicator
    ) -> tuple[Tensor, Tensor]:
        """g_bar of a compressed step (updates ``state.error`` and ``state.q`` in place)."""
        w, D = g.shape
        plan = self.plan(D)
        if state.q.shape != (w, plan.q_size):
            raise ValueError(
                f"powersgd state holds Q of shape {tuple(state.q.shape)} but rank={self.rank}, "
                f"min_compression_rate={self.min_compression_rate} need {(w, plan.q_size)}; "
                "call init again"
            )
        # delta = g + e is formed in the memory's own buffer (no temporary of D values: on the
        # CPU a fresh buffer that large costs page faults on every step), and e = delta - g_bar
        # is taken from it in place at the end.
        delta = state.error.add_(g) if self.error_feedback else g
        g_bar = comm.workspace(g, "powersgd.g_bar")  # scratch: used within this step only
        if plan.uncompressed:  # all-reduce 1: the tensors sent as they are
            u = torch.cat([delta[:, a:b] for a, b in plan.uncompressed], dim=1)
            u_bar, offset = comm.mean(u), 0
            for a, b in plan.uncompressed:
                g_bar[:, a:b] = u_bar[:, offset : offset + b - a]
                offset += b - a
        rng = state.rng
        if plan.matrices:
            q = state.q
            qs = _blocks(q, plan.matrices, "q")
            if not self.warm_start or state.compressed_steps == 0:
                seed, rng = _next_seed(state.rng)
                gen = torch.Generator().manual_seed(seed)
                for m, qm in zip(plan.matrices, qs, strict=True):
                    qm.copy_(torch.randn(1, m.cols, m.rank, generator=gen, dtype=g.dtype))
            eps = self.orthogonalization_epsilon
            for qm in qs:
                orthogonalize(qm, eps)
            ms = _blocks(delta, plan.matrices, "m")
            # The products are taken in the orientation that reads M row by row: M Q as
            # (Q^T M^T)^T and M^T P as (P^T M)^T (on one CPU thread 3-8x faster for 1000 x 1000
            # at r = 2 than bmm(M, Q) and bmm(M^T, P), same values up to summation order).
            p_local = g.new_empty(w, plan.p_size)
            for M, qm, pm in zip(ms, qs, _blocks(p_local, plan.matrices, "p"), strict=True):
                pm.copy_(torch.bmm(qm.transpose(1, 2).contiguous(), M.transpose(1, 2)).mT)
            p = comm.mean(p_local).clone()  # all-reduce 2
            if eps:  # the hook orthogonalises the sum of the P_i
                p.mul_(comm.n_workers)
            ps = _blocks(p, plan.matrices, "p")
            for pm in ps:
                orthogonalize(pm, eps)
            q_local = g.new_empty(w, plan.q_size)
            for M, pm, qm in zip(ms, ps, _blocks(q_local, plan.matrices, "q"), strict=True):
                qm.copy_(torch.bmm(pm.transpose(1, 2).contiguous(), M).mT)
            previous = q.clone() if self.warm_start else None
            q.copy_(comm.mean(q_local))  # all-reduce 3
            for block, pm, qm in zip(_blocks(g_bar, plan.matrices, "m"), ps, qs, strict=True):
                if block.is_contiguous():  # straight into the buffer, no temporary
                    torch.bmm(pm, qm.transpose(1, 2), out=block)
                else:
                    block.copy_(torch.bmm(pm, qm.transpose(1, 2)))
            if previous is not None:  # a zero column of Q keeps the previous one (below)
                for qm, old in zip(qs, _blocks(previous, plan.matrices, "q"), strict=True):
                    dead = (qm == 0).all(dim=1, keepdim=True)
                    qm.copy_(torch.where(dead, old, qm))
        if self.error_feedback:
            state.error.sub_(g_bar)
        return g_bar, rng
