"""Segments of a flat parameter buffer, each stepped by its own copy of an algorithm.

:class:`~peergrad.optim.DistributedOptimizer` keeps every trainable parameter in one flat buffer
``x`` (``[w, D]``). To honour per-group hyper-parameters and to overlap communication with the
backward pass it cuts ``x`` into contiguous *segments* (column ranges ``[start, stop)``) and runs
one instance of the algorithm per segment, on the views ``x[:, start:stop]`` and
``g[:, start:stop]``, with a state of its own.

That is the same computation as one step on the whole buffer exactly when the algorithm is
*coordinate-wise* (:attr:`peergrad.algorithms.Algorithm.coordinatewise`): every coordinate's new
value depends only on that coordinate of x, g and the state, and the communication (gossip,
all-reduce) acts coordinate by coordinate. Algorithms that couple coordinates (a top-k
compressor, a line search on the whole loss, clipping by the global norm) run as one segment.

Byte accounting: each segment sends its own messages, but the counters must say what one step
of the algorithm costs. A :class:`SegmentComm` therefore forwards every operation to the real
communicator with ``account=False`` and records it; :func:`settle` charges the k-th operation of
every segment as *one* operation carrying the sum of their bytes (one round, one latency), which
equals the whole-buffer step's bytes, rounds and modelled time. The distributed engine's wire log
still records every tensor handed to ``torch.distributed``.

State: :func:`split_state` and :func:`merge_state` convert between the state of the whole buffer
and the per-segment states, so checkpoints do not depend on how the buffer was cut. A state
tensor of shape ``[w, k * D]`` (k = 1, or k = 2 for the fused ``[x, y]`` gossip buffers) is cut
block by block; ints, floats and ``None`` are shared.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from torch import Tensor

from peergrad.comm.base import (
    Communicator,
    Decode,
    MixFromStart,
    Workspace,
    check_out,
    message_nbytes,
)
from peergrad.topology import MixingMatrix


@dataclasses.dataclass(frozen=True)
class Op:
    """One accounted operation of a segment: ``kind`` is ``gossip`` (with ``W``), ``mean``,
    ``all_gather`` or ``all_to_all``; ``nbytes``: bytes of this segment's message (one worker's
    payload; one slot for an all-to-all)."""

    kind: str
    nbytes: float
    W: MixingMatrix | None = None


class SegmentComm(MixFromStart):
    """The communicator one segment's algorithm sees: the real one, minus the accounting.

    Every operation goes to ``base`` with ``account=False`` and is appended to :attr:`ops`
    (``mix`` is ``mix_start(...).wait(out)``, :class:`~peergrad.comm.base.MixFromStart`);
    :func:`settle` charges them. Each segment has its own :class:`Workspace` (scratch and, on the
    distributed engine, the receive buffers of its gossip rounds), so the rounds of two segments
    of equal size can be in flight at once.
    """

    def __init__(self, base: Communicator) -> None:
        self.base = base
        self.ops: list[Op] = []
        self.workspace = Workspace()

    def __getattr__(self, name: str) -> Any:
        """Everything else (``topology``, ``n_workers``, ``network``, ``worker_ids``, the
        counters) is the real communicator's."""
        if name == "base":  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)

    def mix_start(
        self,
        x: Tensor,
        W: MixingMatrix,
        *,
        message_bytes: int | None = None,
        decode: Decode | None = None,
        account: bool = True,
    ) -> Any:
        kwargs: dict[str, Any] = {}
        if _takes_workspace(self.base):
            kwargs["workspace"] = self.workspace
        pending = self.base.mix_start(  # type: ignore[attr-defined]  # not in the Protocol
            x, W, message_bytes=message_bytes, decode=decode, account=False, **kwargs
        )
        if account:
            self.ops.append(Op("gossip", float(message_nbytes(x, message_bytes)), W))
        return pending

    def mean(
        self,
        x: Tensor,
        *,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> Tensor:
        record = account if record is None else record
        out = self.base.mean(x, message_bytes=message_bytes, account=False, record=record)
        if account:
            self.ops.append(Op("mean", float(message_nbytes(x, message_bytes))))
        return out

    def mean_start(
        self,
        x: Tensor,
        *,
        out: Tensor,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> None:
        """``base.mean_start`` unaccounted, recorded as a ``mean`` (``wait_for`` and
        ``synchronize`` are the base's)."""
        record = account if record is None else record
        self.base.mean_start(x, out=out, message_bytes=message_bytes, account=False, record=record)
        if account:
            self.ops.append(Op("mean", float(message_nbytes(x, message_bytes))))

    def all_gather(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        out = self.base.all_gather(payload, message_bytes=message_bytes, account=False)
        if account:
            self.ops.append(Op("all_gather", float(message_nbytes(payload, message_bytes))))
        return out

    def all_to_all(
        self, payload: Tensor, *, message_bytes: int | None = None, account: bool = True
    ) -> Tensor:
        out = self.base.all_to_all(payload, message_bytes=message_bytes, account=False)
        if account:
            nbytes = message_nbytes(payload[:, 0], message_bytes)
            self.ops.append(Op("all_to_all", float(nbytes)))
        return out

    def account_gossip(self, W: MixingMatrix, nbytes: float) -> None:
        self.ops.append(Op("gossip", float(nbytes), W))

    def account_mean(self, nbytes: float) -> None:
        self.ops.append(Op("mean", float(nbytes)))

    def account_all_gather(self, nbytes: float) -> None:
        self.ops.append(Op("all_gather", float(nbytes)))

    def account_all_to_all(self, nbytes: float) -> None:
        self.ops.append(Op("all_to_all", float(nbytes)))


class PreAveraged(SegmentComm):
    """A :class:`SegmentComm` for buckets whose gradient was already averaged over the workers
    (``DistributedOptimizer`` with ``allreduce`` and ``clip_grad_norm``: it all-reduces and clips
    g itself): ``mean`` returns its input, uncharged, since every worker holds the same value
    (the averaged g, and x, which all-reduce SGD keeps identical on every worker)."""

    def mean(
        self,
        x: Tensor,
        *,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> Tensor:
        return x

    def mean_start(
        self,
        x: Tensor,
        *,
        out: Tensor,
        message_bytes: int | None = None,
        account: bool = True,
        record: bool | None = None,
    ) -> None:
        """``out`` becomes ``x`` (already the average), uncharged; nothing is in flight."""
        check_out(x, out, "mean_start")
        if out is not x:
            out.copy_(x)


def _takes_workspace(comm: Communicator) -> bool:
    return bool(getattr(comm, "mix_start_takes_workspace", False))


def settle(comms: Sequence[SegmentComm], base: Communicator) -> None:
    """Charge the operations recorded by ``comms`` to ``base`` and clear them.

    When every segment recorded the same sequence of operations (same kinds, same W), the k-th
    operations of all segments are charged as one operation with the summed bytes: the cost of
    one step on the whole buffer. Otherwise every operation is charged on its own.
    """
    lists = [c.ops for c in comms]
    same = len({len(ops) for ops in lists}) <= 1 and all(
        len({(op.kind, id(op.W)) for op in column}) == 1 for column in zip(*lists, strict=True)
    )
    if same:
        columns = zip(*lists, strict=True)
        groups = [(column[0], sum(op.nbytes for op in column)) for column in columns]
    else:
        groups = [(op, op.nbytes) for ops in lists for op in ops]
    for op, nbytes in groups:
        if op.kind == "gossip":
            assert op.W is not None
            base.account_gossip(op.W, nbytes)
        elif op.kind == "mean":
            base.account_mean(nbytes)
        elif op.kind == "all_to_all":
            base.account_all_to_all(nbytes)
        else:
            base.account_all_gather(nbytes)
    for ops in lists:
        ops.clear()


# ---------------------------------------------------------------------- state split / merge
def _blocks(t: Tensor, D: int) -> int | None:
    """k when ``t`` is ``[w, k * D]`` (a per-coordinate state tensor), else None."""
    if t.dim() == 2 and D > 0 and t.shape[1] % D == 0 and t.shape[1] > 0:
        return t.shape[1] // D
    return None


def split_state(state: Any, D: int, bounds: Sequence[tuple[int, int]]) -> list[Any]:
    """Per-segment copies of ``state`` (a dataclass over the whole ``[w, D]`` buffer).

    Each ``[w, k * D]`` tensor field is cut into the segments' column ranges block by block (a
    copy, contiguous); other fields are shared. Raises ``ValueError`` for a tensor field of any
    other shape (the algorithm is not coordinate-wise).
    """
    if len(bounds) == 1 and bounds[0] == (0, D):
        return [state]
    parts: list[dict[str, Any]] = [{} for _ in bounds]
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if isinstance(value, Tensor):
            k = _blocks(value, D)
            if k is None:
                raise ValueError(
                    f"state field {f.name!r} of {type(state).__name__} has shape "
                    f"{tuple(value.shape)}, not [w, k*D] with D = {D}: it cannot be cut into "
                    "segments"
                )
            blocks = value.view(value.shape[0], k, D)
            for part, (a, b) in zip(parts, bounds, strict=True):
                part[f.name] = blocks[:, :, a:b].reshape(value.shape[0], k * (b - a)).clone()
        else:
            for part in parts:
                part[f.name] = value
    return [type(state)(**part) for part in parts]


def merge_state(states: Sequence[Any], D: int, bounds: Sequence[tuple[int, int]]) -> Any:
    """The whole-buffer state from per-segment states (inverse of :func:`split_state`; new
    tensors, ints and floats taken from the first segment, which all segments share)."""
    if len(states) == 1 and bounds[0] == (0, D):
        return states[0]
    first = states[0]
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(first):
        value = getattr(first, f.name)
        if isinstance(value, Tensor):
            w = value.shape[0]
            k = value.shape[1] // (bounds[0][1] - bounds[0][0])
            out = value.new_empty((w, k, D))
            for s, (a, b) in zip(states, bounds, strict=True):
                out[:, :, a:b] = getattr(s, f.name).view(w, k, b - a)
            fields[f.name] = out.view(w, k * D)
        else:
            fields[f.name] = value
    return type(first)(**fields)


# ---------------------------------------------------------------------- background thread
class CommThread:
    """One daemon thread that runs submitted functions in order (the optimizer's communication
    thread: it steps each bucket while the backward pass goes on). Daemon, so a thread waiting
    for a bucket that never comes does not keep the interpreter alive."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="peergrad-comm", daemon=True)
        self._thread.start()

    def submit(self, fn: Any) -> Any:
        future: Future[Any] = Future()
        self._queue.put((fn, future))
        return future

    def _loop(self) -> None:
        while True:
            fn, future = self._queue.get()
            if fn is None:
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # re-raised by the optimizer's step()
                future.set_exception(exc)

    def close(self) -> None:
        self._queue.put((None, None))


def cut(
    sizes: Sequence[int],
    keys: Sequence[Any],
    *,
    itemsize: int,
    first_cap_bytes: float | None,
    cap_bytes: float | None,
) -> list[tuple[int, int]]:
    """Cut consecutive parameters into segments, in reverse order, with DDP's bucket rule.

    ``sizes``: numel of each parameter in flat-buffer order; ``keys``: a segment never holds two
    parameters with different keys (their param groups). Walking from the last parameter to the
    first, parameters are added to the current segment, which is closed as soon as it holds at
    least its cap (``first_cap_bytes`` for the first segment, ``cap_bytes`` for the others;
    ``None``: no cap), as DDP closes a bucket. Returns ``(start_param, stop_param)`` index ranges
    in flat-buffer order, listed from the last segment to the first.
    """
    out: list[tuple[int, int]] = []
    stop = len(sizes)
    used = 0
    for i in range(len(sizes) - 1, -1, -1):
        if i + 1 < stop and keys[i] != keys[i + 1]:
            out.append((i + 1, stop))
            stop, used = i + 1, 0
        used += sizes[i] * itemsize
        cap = first_cap_bytes if not out else cap_bytes
        if cap is not None and used >= cap and i > 0:
            out.append((i, stop))
            stop, used = i, 0
    out.append((0, stop))
    return out
