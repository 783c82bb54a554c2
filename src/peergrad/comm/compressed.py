"""Averaging compressed messages over all workers: a collective, beside the communicators."""

from __future__ import annotations

from torch import Tensor

from peergrad.comm.base import Communicator
from peergrad.compress.compressors import Compressor, Identity, Message


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
