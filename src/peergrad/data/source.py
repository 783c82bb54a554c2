"""Training and test data as the training loop reads them: in-memory tensors or any Dataset.

Two kinds of data, one interface (:class:`TensorData`, :class:`MapData`):

* **Tensors** ``(x [N, ...], y [N])`` (the built-in data sets, or a user's tensors) are moved to
  the device once and every step gathers the sampled rows into reused buffers
  (:class:`BatchGather`): the fast path, as fast as before tasks existed.
* **A map-style** ``torch.utils.data.Dataset`` (``len(ds)`` and ``ds[i] -> (input, target)``) is
  never materialised: every step reads exactly the ``n * B`` indices the samplers drew (on the
  distributed engine: this rank's ``B``, all from its own shard), collates them with
  ``torch.utils.data.default_collate`` and moves the batch to the device. With
  ``loader_workers > 0`` the reads go through a ``torch.utils.data.DataLoader`` with that many
  worker processes, fed by a copy of the run's sampler so that it reads ahead the very batches
  the run will ask for (:meth:`MapData.reader`).

Floating-point inputs and targets are cast to the run's dtype; integer ones (class labels, token
ids) are kept as they are.

Labels for partitioning (``sorted``, ``dirichlet``; ``iid`` needs only ``len``): a tensor's ``y``;
a Dataset's ``targets`` attribute when it has one (as torchvision's data sets do), otherwise every
item is read once, before the first step (one full pass over the data set).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, default_collate
from torch.utils.data import Dataset as TorchDataset

__all__ = ["BatchGather", "MapData", "TensorData", "as_data"]


class BatchGather:
    """``idx [w, B] -> (x [w, B, ...], y [w, B])`` gathered into reused buffers."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y
        self._xb: Tensor | None = None
        self._yb: Tensor | None = None

    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        flat = idx.reshape(-1)
        if self._xb is None or self._xb.shape[0] != flat.numel():
            self._xb = self.x.new_empty((flat.numel(), *self.x.shape[1:]))
            self._yb = self.y.new_empty((flat.numel(), *self.y.shape[1:]))
        assert self._yb is not None
        torch.index_select(self.x, 0, flat, out=self._xb)
        torch.index_select(self.y, 0, flat, out=self._yb)
        shape = tuple(idx.shape)
        return self._xb.view(*shape, *self.x.shape[1:]), self._yb.view(*shape, *self.y.shape[1:])


def _cast(t: Any, device: torch.device, dtype: torch.dtype, what: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(
            f"{what}: items must be (input, target) pairs that default_collate turns into "
            f"tensors; got a batch of {type(t).__name__}"
        )
    if t.is_floating_point():
        return t.to(device=device, dtype=dtype, non_blocking=True)
    return t.to(device=device, non_blocking=True)


def _check_pair(item: Any, what: str, index: int) -> None:
    if not (isinstance(item, tuple | list) and len(item) == 2):
        kind = f"a {type(item).__name__}"
        if isinstance(item, tuple | list):
            kind += f" of length {len(item)}"
        raise ValueError(f"{what}: items must be (input, target) pairs; item {index} is {kind}")


class TensorData:
    """In-memory data ``(x [N, ...], y [N, ...])``: the fast path.

    Raises ``TypeError`` / ``ValueError`` naming ``what`` (e.g. ``train_data``) when ``x`` or
    ``y`` is not a tensor, they differ in length, or they are empty.
    """

    def __init__(self, x: Tensor, y: Tensor, *, what: str) -> None:
        if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
            raise TypeError(
                f"{what}: a tensor pair must be (inputs, targets) tensors, got "
                f"({type(x).__name__}, {type(y).__name__})"
            )
        if x.dim() < 1 or y.dim() < 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{what}: inputs and targets must have the same first (sample) dimension, got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{what}: no samples")
        self.x, self.y, self.what = x, y, what

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def labels(self) -> Tensor:
        """The targets ``y`` (on the CPU)."""
        return self.y.cpu()

    def to(self, device: torch.device, dtype: torch.dtype) -> TensorData:
        """The same data on ``device``; floating-point parts cast to ``dtype``."""
        return TensorData(
            _cast(self.x, device, dtype, self.what),
            _cast(self.y, device, dtype, self.what),
            what=self.what,
        )

    def read(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """The samples ``indices`` (a copy)."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.x.device)
        return self.x[idx], self.y[idx]

    def reader(self, sampler: Any) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """``read(idx [w, B]) -> (x [w, B, ...], y [w, B, ...])``, gathering into reused buffers
        (``sampler`` is not needed: tensors are read where the run's sampler points)."""
        return BatchGather(self.x, self.y)

    def subset(self, indices: Tensor) -> TensorData:
        """The rows ``indices`` (a copy)."""
        idx = indices.to(self.x.device)
        return TensorData(self.x[idx], self.y[idx], what=self.what)

    def chunks(self, size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive slices of at most ``size`` samples (views, no copy)."""
        for s in range(0, len(self), size):
            yield self.x[s : s + size], self.y[s : s + size]


class _Indexed(TorchDataset):  # type: ignore[type-arg]
    """A subset of a Dataset by position (reads only ``indices``)."""

    def __init__(self, ds: Any, indices: list[int]) -> None:
        self.ds, self.indices = ds, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.ds[self.indices[i]]


class _SamplerBatches:
    """Batch sampler for a DataLoader: the flat index batches a copy of the run's sampler draws."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.sampler.next().reshape(-1).tolist()


class MapData:
    """A map-style Dataset read per step, for the sampled indices only.

    Args:
        ds: any object with ``len(ds)`` and ``ds[i] -> (input, target)``.
        what: the argument's name in error messages (``train_data``, ``test_data``).
        loader_workers: ``DataLoader`` worker processes (0: read in this process).
        device, dtype: where batches go; floating-point parts are cast to ``dtype``.

    Raises ``TypeError`` when ``ds`` has no length or cannot be indexed, ``ValueError`` when it
    is empty or item 0 is not an ``(input, target)`` pair (read once, here).
    """

    def __init__(
        self,
        ds: Any,
        *,
        what: str,
        loader_workers: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        try:
            n = len(ds)
        except TypeError:
            raise TypeError(
                f"{what}: a Dataset must have a length (map-style, len(ds)); got "
                f"{type(ds).__name__}"
            ) from None
        if n == 0:
            raise ValueError(f"{what}: the Dataset is empty")
        if not hasattr(ds, "__getitem__"):
            raise TypeError(f"{what}: a Dataset must support ds[i]; got {type(ds).__name__}")
        _check_pair(ds[0], what, 0)
        self.ds, self.what, self.n = ds, what, int(n)
        self.loader_workers = int(loader_workers)
        self.device, self.dtype = torch.device(device), dtype

    def __len__(self) -> int:
        return self.n

    def labels(self) -> Tensor:
        """Targets of every item: ``ds.targets`` when present, else one pass reading every item."""
        targets = getattr(self.ds, "targets", None)
        if targets is not None:
            y = torch.as_tensor(targets)
            if y.shape[:1] == (self.n,):
                return y
        return torch.stack([torch.as_tensor(self.ds[i][1]) for i in range(self.n)])

    def to(self, device: torch.device, dtype: torch.dtype) -> MapData:
        """This data set read onto ``device``, floating-point parts cast to ``dtype``."""
        out = copy.copy(self)
        out.device, out.dtype = torch.device(device), dtype
        return out

    def collate(self, items: list[Any]) -> tuple[Tensor, Tensor]:
        """``default_collate`` of ``(input, target)`` items, moved and cast."""
        for k, item in enumerate(items[:1]):
            _check_pair(item, self.what, k)
        xb, yb = default_collate(items)
        return _cast(xb, self.device, self.dtype, self.what), _cast(
            yb, self.device, self.dtype, self.what
        )

    def read(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """The items ``indices`` collated (read in this process)."""
        return self.collate([self.ds[i] for i in indices])

    def reader(self, sampler: Any) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """``read(idx [w, B]) -> (x [w, B, ...], y [w, B, ...])`` for the run's next batch.

        Without loader workers this reads the items ``idx`` in this process. With them, a
        ``DataLoader`` reads ahead from a copy of ``sampler`` (same state, so it draws the very
        batches the run's sampler will draw; the run's sampler stays the one checkpoints save)
        and ``read`` returns its next batch, shaped like ``idx``. Call ``close()`` when done.
        """
        if self.loader_workers == 0:
            return _DirectReader(self)
        return _LoaderReader(self, sampler)

    def subset(self, indices: Tensor) -> MapData:
        """The items ``indices`` (not read now: read when evaluated)."""
        out = self.to(self.device, self.dtype)
        out.ds = _Indexed(self.ds, [int(i) for i in indices.tolist()])
        out.n = len(out.ds)
        return out

    def chunks(self, size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive batches of at most ``size`` items, read as they are consumed (through a
        ``DataLoader`` with ``loader_workers`` processes when > 0)."""
        if self.loader_workers == 0:
            for s in range(0, self.n, size):
                yield self.read(list(range(s, min(self.n, s + size))))
            return
        loader = DataLoader(
            self.ds,
            batch_size=size,
            shuffle=False,
            num_workers=self.loader_workers,
            collate_fn=self.collate,
            generator=_private_generator(),
        )
        yield from loader


def _shaped(xb: Tensor, yb: Tensor, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    return xb.view(*shape, *xb.shape[1:]), yb.view(*shape, *yb.shape[1:])


class _DirectReader:
    """Reads the sampled items in this process."""

    def __init__(self, data: MapData) -> None:
        self.data = data

    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        xb, yb = self.data.read(idx.reshape(-1).tolist())
        return _shaped(xb, yb, tuple(idx.shape))

    def close(self) -> None:
        """Nothing to release."""


class _LoaderReader:
    """Reads ahead through a DataLoader fed by a copy of the run's sampler."""

    def __init__(self, data: MapData, sampler: Any) -> None:
        self.data = data
        loader = DataLoader(
            data.ds,
            batch_sampler=_SamplerBatches(_copy_sampler(sampler)),  # type: ignore[arg-type]
            num_workers=data.loader_workers,
            collate_fn=default_collate,
            generator=_private_generator(),
        )
        self._batches: Any = iter(loader)

    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        items = next(self._batches)
        d = self.data
        xb, yb = (
            _cast(items[0], d.device, d.dtype, d.what),
            _cast(items[1], d.device, d.dtype, d.what),
        )
        return _shaped(xb, yb, tuple(idx.shape))

    def close(self) -> None:
        """Stop the loader's worker processes."""
        shutdown = getattr(self._batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._batches = None


def _private_generator() -> torch.Generator:
    """A DataLoader's own generator: without one, starting its workers draws a seed from torch's
    global generator, which would shift the run's Dropout masks."""
    return torch.Generator().manual_seed(0)


def _copy_sampler(sampler: Any) -> Any:
    shadow = copy.copy(sampler)
    shadow.generators = [torch.Generator().manual_seed(0) for _ in sampler.generators]
    shadow.load_state_dict(sampler.state_dict())
    return shadow


def as_data(
    data: Any,
    *,
    what: str,
    loader_workers: int = 0,
) -> TensorData | MapData:
    """``data`` as :class:`TensorData` (an ``(x, y)`` tensor pair) or :class:`MapData` (a
    map-style Dataset); ``TypeError`` / ``ValueError`` naming ``what`` otherwise."""
    if (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        return TensorData(data[0], data[1], what=what)
    if isinstance(data, TorchDataset) or (
        hasattr(data, "__getitem__")
        and hasattr(data, "__len__")
        and not isinstance(data, tuple | list | dict | str | Tensor)
    ):
        return MapData(data, what=what, loader_workers=loader_workers)
    raise TypeError(
        f"{what} must be a map-style torch.utils.data.Dataset or an (inputs, targets) pair of "
        f"tensors; got {type(data).__name__}"
    )
