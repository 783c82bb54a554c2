"""Collectives of compressed messages, beside the communicators: average and gossip.

Compressed messages cross the wire packed (``Compressor.pack``: ``uint8 [w, nbytes(D, dtype)]``)
on both engines, so ``bytes_sent`` counts exactly what is sent; receivers unpack and decompress.
The identity compressor sends its values as they are (the same bytes, ``D * itemsize``).
"""

from __future__ import annotations

from torch import Tensor

from peergrad.comm.base import Communicator
from peergrad.compress.compressors import Compressor, Identity, Message
from peergrad.topology import MixingMatrix


def compressed_mean(comm: Communicator, compressor: Compressor, msg: Message) -> Tensor:
    """``mean_j decompress(msg_j)`` over all n workers, shape ``[w, D]`` (read-only).

    The identity compressor uses ``comm.mean`` (an all-reduce of ``D`` values). Every other
    compressor packs its message into the exact wire bytes (``uint8 [w, nbytes(D, dtype)]``),
    all-gathers them (each worker sends ``(n - 1) * nbytes``), decodes all n messages and averages
    them in worker order, identically on both engines.
    """
    if isinstance(compressor, Identity):
        return comm.mean(msg.values)
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
        return comm.mix(msg.values, W, out=out)
    D, dtype = msg.D, msg.dtype

    def decode(payload: Tensor) -> Tensor:
        return compressor.decompress(compressor.unpack(payload, D, dtype))

    return comm.mix(compressor.pack(msg), W, out=out, decode=decode)
