"""Collectives of compressed messages, beside the communicators: average and gossip.

Compressed messages cross the wire packed (``Compressor.pack``: ``uint8 [w, nbytes(D, dtype)]``)
on both engines, so ``bytes_sent`` counts exactly what is sent; receivers unpack and decompress.
The identity compressor sends its values as they are (the same bytes, ``D * itemsize``).

Averaging (:func:`compressed_mean`) has two exchanges. An all-gather of the packed messages works
for every compressor: each worker sends ``(n - 1) * nbytes(D)``. A *linear* compressor
(``Compressor.linear``: identity, random-k, and layer-wise / ``C / (1 + ω)`` forms of them; see
:mod:`peergrad.compress.compressors`) shares its support across the workers, so one all-reduce
of its values suffices: each worker sends ``2 (n - 1) / n * m * itemsize`` (``m = k`` for
random-k: no indices, no seed; every worker draws the same index set from the shared generator).
For random-k with 1% of D = 10^6 float32 values on 8 workers that is 70,000 bytes per worker and
step instead of 280,056 (k = 10^4 values of 4 bytes: 2 * 7/8 * 40,000 = 70,000 against
7 * (40,000 + 8)).
"""

from __future__ import annotations

from typing import cast

from torch import Tensor

from peergrad.comm.base import Communicator
from peergrad.compress.compressors import Compressor, Identity, Message
from peergrad.topology import MixingMatrix

EXCHANGES: tuple[str, ...] = ("auto", "allreduce", "allgather")
"""Values of ``exchange`` (:func:`compressed_mean` and the compressed methods' option)."""


def check_exchange(exchange: str, compressor: Compressor | None = None) -> None:
    """``ValueError`` (one line, naming the option) for an ``exchange`` that is not one of
    :data:`EXCHANGES`, or ``"allreduce"`` with a compressor that is not linear."""
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {', '.join(EXCHANGES)}; got {exchange!r}")
    if exchange == "allreduce" and compressor is not None and not compressor.linear:
        raise ValueError(
            f"exchange='allreduce' needs a linear compressor (shared support: identity, randomk, "
            f"randomk-unscaled); {compressor.name!r} is not linear, use exchange='auto' or "
            f"'allgather'"
        )


def compressed_mean(
    comm: Communicator, compressor: Compressor, msg: Message, *, exchange: str = "auto"
) -> Tensor:
    """``mean_j decompress(msg_j)`` over all n workers, shape ``[w, D]`` (read-only).

    ``exchange`` (one of :data:`EXCHANGES`):

    - ``"allreduce"``: one ``comm.mean`` of the ``[w, m]`` values ``compressor.linear_values``
      (``m = k`` for random-k, ``D`` for the identity; the parts' values concatenated under
      :class:`~peergrad.compress.Layerwise`), decoded on the shared support with
      ``compressor.linear_decode``; each worker sends ``2 (n - 1) / n * m * itemsize`` bytes.
      Linear compressors only (``ValueError`` otherwise);
    - ``"allgather"``: every compressor packs its message into the exact wire bytes
      (``uint8 [w, nbytes(D, dtype)]``) and all-gathers them (each worker sends
      ``(n - 1) * nbytes``); every worker decodes all n messages and averages them in worker
      order, identically on both engines;
    - ``"auto"`` (default): all-reduce for linear compressors, all-gather for the others.

    Both exchanges add the same per-coordinate terms (:class:`~peergrad.compress.Contraction`
    divides each worker's values by 1 + ω before the all-reduce, elementwise as its
    ``decompress`` does), so they agree up to the order of the additions: torch may sum a
    ``[n, k]`` mean in another order than a ``[n, D]`` one, and gloo/NCCL in theirs (float64:
    within a few ulps).
    Raises ``ValueError`` for an unknown ``exchange`` or ``"allreduce"`` with a compressor that
    is not linear.
    """
    check_exchange(exchange, compressor)
    if exchange == "allreduce" or (exchange == "auto" and compressor.linear):
        mean = comm.mean(compressor.linear_values(msg))
        w = mean.shape[0]
        return compressor.linear_decode(msg, mean[:1]).expand(w, msg.D)
    payload = compressor.pack(msg)
    w = payload.shape[0]
    gathered = comm.all_gather(payload)  # [w, n, P]; every row holds the same n payloads
    dense = compressor.decompress(compressor.unpack(gathered[0], msg.D, msg.dtype))
    return dense.mean(dim=0, keepdim=True).expand(w, msg.D)


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
