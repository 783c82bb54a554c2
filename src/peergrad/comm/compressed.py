"""Collectives of compressed messages, beside the communicators: average and gossip.

Compressed messages cross the wire packed (``Compressor.pack``: ``uint8 [w, nbytes(D, dtype)]``)
on both engines, so ``bytes_sent`` counts exactly what is sent; receivers unpack and decompress.
The identity compressor sends its values as they are (the same bytes, ``D * itemsize``).

Averaging (:func:`compressed_mean`) has three exchanges; bytes per worker and step, with
``nbytes(D)`` the compressor's message of D values and ``b`` the itemsize of ``x``:

- ``allreduce``: one all-reduce of a linear compressor's ``[w, m]`` values (``m = k`` for
  random-k, ``D`` for the identity): ``2 (n - 1) / n * m * b``;
- ``allgather``: every worker's packed message, all-gathered: ``(n - 1) * nbytes(D)``;
- ``reduce-scatter``: shard j of every worker's message to worker j (an all-to-all), then the
  n averaged shards, compressed again, all-gathered: ``2 (n - 1) * nbytes(S)`` with ``S``
  the shard width (below), about ``2 (n - 1) / n * nbytes(D)``.

When each is exact: ``allreduce`` (linear compressors only: identity, random-k and their
:class:`~peergrad.compress.Layerwise` / :class:`~peergrad.compress.Contraction` forms, whose
support is shared, see :mod:`peergrad.compress.compressors`) and ``allgather`` (every
compressor) both give exactly ``mean_j decompress(msg_j)``, up to the order of the additions.
``reduce-scatter`` (every compressor but layer-wise and ``C / (1 + ω)`` ones; random ones with a
shared ``generator``) compresses twice:
worker j's average of shard j is compressed again before the all-gather, so the result is
``C(mean_j decompress(...))`` shard by shard, exact only for the identity, and its first phase
compresses the decoded message shard by shard again, which changes nothing for the compressors
with ``C(C(x)) == C(x)`` on aligned shards (identity, sign, bf16, fp16, int8, int4) and loses more
for the others (top-k keeps ``ceil(ratio S)`` values of every shard of the decoded message).
For random-k with 1% of D = 10^6 float32 values on 8 workers, the all-reduce costs 70,000 bytes
per worker and step instead of 280,056 for the all-gather (k = 10^4 values of 4 bytes:
2 * 7/8 * 40,000 = 70,000 against 7 * (40,000 + 8)); for int8 (chunk 64) on the same D and n
the reduce-scatter costs 2 * 7 * (125,056 + 4 * 1954) = 1,860,208 bytes (S = 125,056), 3.8x
below the float32 all-reduce's 7,000,000 and 4.0x below int8's all-gather (7,437,500); int4:
984,816 bytes, 7.1x below the float32 all-reduce.

The reduce-scatter exchange (:func:`reduce_scatter_mean`) on n workers, ``x`` ``[w, D]``:

1. shards: ``S = ceil(ceil(D / n) / a) * a`` with ``a = compressor.alignment`` (int8/int4: the
   chunk, so that no chunk straddles two shards; 1 otherwise); ``x`` is zero-padded to
   ``n S`` columns and shard j is columns ``[j S, (j + 1) S)`` (trailing shards may be all
   padding when D is small). Every message has the same size ``P = nbytes(S)``;
2. every worker compresses its n shards, one compress call on the ``[w n, S]`` rows, row
   ``(i, j)`` drawing as virtual worker ``i n + j`` of ``n²`` (``worker_ids``/``n_workers``, so
   both engines draw alike), and sends shard j's packed message to worker j
   (:meth:`~peergrad.comm.base.Communicator.all_to_all`, ``(n - 1) P`` bytes);
3. worker j decodes the n messages of shard j, adds them in worker order in ``x``'s dtype
   (``acc = q_0; acc += q_1; ...``) and divides by n;
4. worker j compresses its averaged shard (as worker j of n) and an all-gather (``(n - 1) P``
   bytes) gives every worker the n averaged shards, decoded into ``[w, D]`` (padding dropped).

Random compressors (random-k, QSGD, TernGrad) need ``generator`` (the same state on every
worker, like the compressed methods' shared generator), drawn from in both phases; the simulated
engine performs the same operations on the same rows in the same order as the n processes, so the
two engines agree bit for bit. Under churn (absent workers) the all-to-all raises ``ValueError``
(an exchange of shards needs every worker's); use ``auto``/``allgather`` there.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from peergrad.comm.base import Communicator
from peergrad.compress.compressors import Compressor, Contraction, Identity, Layerwise, Message
from peergrad.topology import MixingMatrix

EXCHANGES: tuple[str, ...] = ("auto", "allreduce", "allgather", "reduce-scatter")
"""Values of ``exchange`` (:func:`compressed_mean` and the compressed methods' option)."""


def check_exchange(
    exchange: str, compressor: Compressor | None = None, *, generator: bool = False
) -> None:
    """``ValueError`` (one line, naming the option) for an ``exchange`` that is not one of
    :data:`EXCHANGES`, ``"allreduce"`` with a compressor that is not linear, or
    ``"reduce-scatter"`` with a layer-wise or ``C / (1 + ω)`` compressor, or with a random one
    when no generator is given (``generator``: whether the caller passes one)."""
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {', '.join(EXCHANGES)}; got {exchange!r}")
    if exchange == "allreduce" and compressor is not None and not compressor.linear:
        raise ValueError(
            f"exchange='allreduce' needs a linear compressor (shared support: identity, randomk, "
            f"randomk-unscaled); {compressor.name!r} is not linear, use exchange='auto' or "
            f"'allgather'"
        )
    if exchange != "reduce-scatter" or compressor is None:
        return
    if isinstance(compressor, Layerwise | Contraction):
        raise ValueError(
            f"exchange='reduce-scatter' cuts D into n shards itself and compresses each with the "
            f"plain compressor; {compressor.name!r} (layer-wise, or C / (1 + omega) for error "
            f"feedback) cannot be cut so, use exchange='auto' or 'allgather'"
        )
    if compressor.stochastic and not generator:
        raise ValueError(
            f"exchange='reduce-scatter' compresses again on every worker and the random "
            f"compressor {compressor.name!r} would need a generator shared by the workers; use a "
            f"deterministic compressor (identity, topk, sign, scaled-sign, bf16, fp16, int8, "
            f"int4) or exchange='auto'"
        )


def compressed_mean(
    comm: Communicator,
    compressor: Compressor,
    msg: Message,
    *,
    exchange: str = "auto",
    generator: torch.Generator | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """``mean_j decompress(msg_j)`` over all n workers, shape ``[w, D]`` (read-only unless
    ``out`` is given; then ``out`` holds it and is returned).

    ``exchange`` (one of :data:`EXCHANGES`; bytes and exactness in the module docstring):

    - ``"allreduce"``: one ``comm.mean`` of the ``[w, m]`` values ``compressor.linear_values``
      (``m = k`` for random-k, ``D`` for the identity; the parts' values concatenated under
      :class:`~peergrad.compress.Layerwise`), decoded on the shared support with
      ``compressor.linear_decode``; each worker sends ``2 (n - 1) / n * m * itemsize`` bytes.
      Linear compressors only (``ValueError`` otherwise);
    - ``"allgather"``: every compressor packs its message into the exact wire bytes
      (``uint8 [w, nbytes(D, dtype)]``) and all-gathers them (each worker sends
      ``(n - 1) * nbytes``); every worker decodes all n messages and averages them in worker
      order, identically on both engines;
    - ``"reduce-scatter"``: :func:`reduce_scatter_mean` of the decoded messages
      ``decompress(msg)``, ``2 (n - 1) * nbytes(S)`` bytes (``generator``: for random
      compressors, the same state on every worker);
    - ``"auto"`` (default): all-reduce for linear compressors, all-gather for the others.

    The all-reduce and the all-gather add the same per-coordinate terms
    (:class:`~peergrad.compress.Contraction` divides each worker's values by 1 + ω before the
    all-reduce, elementwise as its ``decompress`` does), so they agree up to the order of the
    additions: torch may sum a ``[n, k]`` mean in another order than a ``[n, D]`` one, and
    gloo/NCCL in theirs (float64: within a few ulps).
    Raises ``ValueError`` as :func:`check_exchange` does (unknown ``exchange``, ``"allreduce"``
    with a compressor that is not linear, ``"reduce-scatter"`` with a layer-wise, ``C / (1 +
    ω)`` or, without ``generator``, random compressor), and from ``all_to_all`` under churn.
    """
    check_exchange(exchange, compressor, generator=generator is not None)
    if exchange == "reduce-scatter":
        dense = compressor.decompress(msg)
        return reduce_scatter_mean(comm, compressor, dense, generator=generator, out=out)
    if exchange == "allreduce" or (exchange == "auto" and compressor.linear):
        mean = comm.mean(compressor.linear_values(msg))
        w = mean.shape[0]
        result = compressor.linear_decode(msg, mean[:1]).expand(w, msg.D)
    else:
        payload = compressor.pack(msg)
        w = payload.shape[0]
        gathered = comm.all_gather(payload)  # [w, n, P]; every row holds the same n payloads
        dense = compressor.decompress(compressor.unpack(gathered[0], msg.D, msg.dtype))
        result = dense.mean(dim=0, keepdim=True).expand(w, msg.D)
    return result if out is None else out.copy_(result)


def shard_width(D: int, n: int, alignment: int = 1) -> int:
    """Width S of each of the n shards of the reduce-scatter exchange: ``ceil(D / n)`` rounded
    up to a multiple of ``alignment`` (the compressor's; shard j is ``[j S, (j + 1) S)`` of x
    zero-padded to ``n S`` columns)."""
    return math.ceil(math.ceil(D / n) / alignment) * alignment


def reduce_scatter_mean(
    comm: Communicator,
    compressor: Compressor,
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """The reduce-scatter exchange of ``x`` (``[w, D]``, every worker's values) with
    ``compressor`` applied per shard (steps 1-4 of the module docstring): ``[w, D]``, every row
    the same, read-only unless ``out`` (``[w, D]``) is given. Sends ``(n - 1) * nbytes(S)``
    bytes per worker in each of the all-to-all and the all-gather.

    ``generator``: random compressors draw from it in both phases (give every worker the same
    state). Raises ``ValueError`` as :func:`check_exchange` for ``"reduce-scatter"``, for an
    ``x`` that is not ``[w, D]``, and under churn (``all_to_all``).
    """
    check_exchange("reduce-scatter", compressor, generator=generator is not None)
    if x.dim() != 2:
        raise ValueError(f"reduce_scatter_mean: x must be [w, D], got shape {tuple(x.shape)}")
    n, (w, D), dtype = comm.n_workers, x.shape, x.dtype
    S = shard_width(D, n, compressor.alignment)
    ids = comm.worker_ids
    rows = F.pad(x, (0, n * S - D)).reshape(w * n, S)  # row (i, j): worker i's shard j
    virtual = (ids.unsqueeze(1) * n + torch.arange(n)).reshape(-1)
    sent = compressor.compress(rows, generator, worker_ids=virtual, n_workers=n * n)
    P = compressor.nbytes(S, dtype)
    received = comm.all_to_all(compressor.pack(sent).reshape(w, n, P))  # [w, n, P]
    received = received.reshape(w * n, P)
    decoded = compressor.decompress(compressor.unpack(received, S, dtype)).reshape(w, n, S)
    acc = decoded[:, 0].clone()
    for j in range(1, n):  # in worker order, in x's dtype
        acc.add_(decoded[:, j])
    acc.div_(n)  # [w, S]: row i is worker i's averaged shard i
    averaged = compressor.compress(acc, generator, worker_ids=ids, n_workers=n)
    gathered = comm.all_gather(compressor.pack(averaged))  # [w, n, P]
    shards = compressor.decompress(compressor.unpack(gathered[0], S, dtype))  # [n, S]
    result = shards.reshape(1, n * S)[:, :D].expand(w, D)
    return result if out is None else out.copy_(result)


def compressed_mix(
    comm: Communicator,
    compressor: Compressor,
    msg: Message,
    W: MixingMatrix,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """Gossip of compressed messages: ``W @ decompress(msg)`` over the worker axis, ``[w, D]``.

    Every worker sends its packed message (``uint8 [nbytes(D, dtype)]``) to each out-neighbour
    of W, so a round costs worker i ``out_degree(i) * nbytes`` bytes, exactly what is sent. Each
    worker then decodes its own and every received message (``unpack`` + ``decompress``) and
    forms ``W_ii q_i + sum_j W_ij q_j``. The identity compressor gossips its values directly
    (``comm.mix``, ``D * itemsize`` bytes). ``out`` (``[w, D]``) receives the result when given.
    """
    if isinstance(compressor, Identity):
        return comm.mix(cast(Tensor, msg.values), W, out=out)
    D, dtype = msg.D, msg.dtype

    def decode(payload: Tensor) -> Tensor:
        return compressor.decompress(compressor.unpack(payload, D, dtype))

    return comm.mix(compressor.pack(msg), W, out=out, decode=decode)
