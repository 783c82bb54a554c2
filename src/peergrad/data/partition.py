"""Splitting a training set across workers: iid, label-sorted ("unshuffled"), Dirichlet and
contiguous.

* ``iid`` — a seeded random permutation cut into n equal shards of ``N // n`` samples (the
  remainder is dropped so every worker holds the same number of samples).
* ``sorted`` — the "unshuffled" setting of DeTAG (Lu & De Sa, ICML 2021): a stable sort by
  label cut into n contiguous equal blocks; worker 0 gets the smallest labels, so for n = C
  workers each one sees (mostly) a single class. The result ignores ``seed``.
* ``dirichlet`` — label skew of Hsu, Qi & Brown (2019, "Measuring the effects of non-identical
  data distribution for federated visual classification"): for every class c, proportions
  ``p_c ~ Dir(alpha * 1_n)`` over the workers and class c's (shuffled) samples are cut by the
  cumulative proportions. Drawn again until every worker holds at least ``min_size`` samples.
  Small ``alpha`` means strong skew; shard sizes differ.
* ``contiguous`` — worker i gets the samples ``[i * (N // n), (i + 1) * (N // n))`` in the data
  set's own order (the remainder is dropped); labels and ``seed`` are not read. On text windows
  (:mod:`peergrad.data.text`, in text order) every worker reads its own contiguous stretch of
  the text: the heterogeneous split of a language model (the text's topics differ along it).
  On a label-sorted training set (``mnist``) it equals ``sorted``.

Shards are CPU int64 tensors of indices into the train set. ``iid`` shards are in permutation
order, ``sorted`` shards in label order, ``dirichlet`` and ``contiguous`` shards in ascending
index order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "PARTITIONS",
    "VALIDATION_SEED",
    "label_histogram",
    "partition",
    "shard_sizes",
    "validation_split",
]

#: Schemes accepted by :func:`partition`.
PARTITIONS: tuple[str, ...] = ("iid", "sorted", "dirichlet", "contiguous")

_DIRICHLET_MAX_TRIES = 100

#: Seed of the permutation that picks the validation split (:func:`validation_split`); fixed, so
#: the split is the same for every run, seed, algorithm and label of a comparison.
VALIDATION_SEED = 20_211_115


def validation_split(n: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_indices, val_indices)`` of a training set of ``n`` samples: ``ceil(fraction *
    n)`` samples held out for validation, chosen by a permutation under the fixed
    :data:`VALIDATION_SEED` (never the run's ``--seed``: every run and label of a comparison
    sees the same split); both index tensors are CPU int64 in ascending order, so a label-sorted
    training set stays sorted. ``fraction`` in (0, 0.5] (``ValueError`` naming
    ``--val-fraction`` otherwise, or when a side would be empty)."""
    if not (isinstance(fraction, int | float) and 0 < fraction <= 0.5):
        raise ValueError(f"--val-fraction must be in (0, 0.5], got {fraction!r}")
    n_val = math.ceil(fraction * n)
    if n_val < 1 or n - n_val < 1:
        raise ValueError(
            f"--val-fraction {fraction}: {n} training samples cannot be split into a "
            "non-empty training and validation part"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _labels_numpy(labels: torch.Tensor) -> np.ndarray:
    y = torch.as_tensor(labels)
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got {y.dtype} {tuple(y.shape)}")
    arr = y.detach().cpu().numpy().astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    return arr


def partition(
    labels: torch.Tensor,
    n_workers: int,
    scheme: str,
    *,
    seed: int = 0,
    alpha: float = 0.5,
    min_size: int = 1,
) -> list[torch.Tensor]:
    """Split the indices ``0..N-1`` of a training set across ``n_workers`` workers.

    Args:
        labels: int ``[N]`` class labels of the training set (``iid`` and ``contiguous`` read
            only their number N).
        n_workers: number of shards, ``1 <= n_workers <= N``.
        scheme: one of :data:`PARTITIONS` (see the module docstring).
        seed: seeds ``numpy.random.default_rng`` (``iid``, ``dirichlet``).
        alpha: Dirichlet concentration (> 0), ``dirichlet`` only.
        min_size: least samples per worker (>= 0), ``dirichlet`` only.

    Returns:
        ``n_workers`` disjoint int64 index tensors. ``iid``/``sorted``/``contiguous`` shards
        hold ``N // n`` each; ``dirichlet`` shards cover all N samples.

    Raises:
        ValueError: bad ``labels``; ``n_workers`` outside ``[1, N]``; unknown ``scheme`` (the
            message lists :data:`PARTITIONS`); ``alpha <= 0``; ``min_size < 0`` or
            ``n_workers * min_size > N``; or no Dirichlet draw met ``min_size`` in 100 tries.
    """
    if scheme not in PARTITIONS:
        raise ValueError(f"unknown partition scheme {scheme!r}; allowed: {', '.join(PARTITIONS)}")
    y = _labels_numpy(labels)
    N = int(y.shape[0])
    if isinstance(n_workers, bool) or not isinstance(n_workers, int | np.integer):
        raise ValueError(f"n_workers must be an int, got {n_workers!r}")
    if not 1 <= n_workers <= N:
        raise ValueError(f"n_workers must be in [1, N={N}] (N = number of labels), got {n_workers}")
    if scheme == "iid":
        per = N // n_workers
        perm = np.random.default_rng(seed).permutation(N)
        return [torch.from_numpy(perm[i * per : (i + 1) * per].copy()) for i in range(n_workers)]
    if scheme == "contiguous":
        per = N // n_workers
        return [torch.arange(i * per, (i + 1) * per, dtype=torch.int64) for i in range(n_workers)]
    if scheme == "sorted":
        per = N // n_workers
        order = np.argsort(y, kind="stable")
        return [torch.from_numpy(order[i * per : (i + 1) * per].copy()) for i in range(n_workers)]
    return _dirichlet(y, n_workers, seed, alpha, min_size)


def _dirichlet(
    y: np.ndarray, n_workers: int, seed: int, alpha: float, min_size: int
) -> list[torch.Tensor]:
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    if min_size < 0 or n_workers * min_size > y.shape[0]:
        raise ValueError(
            f"min_size must be in [0, N / n_workers = {y.shape[0] // n_workers}], got {min_size}"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(_DIRICHLET_MAX_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_workers)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            p = rng.dirichlet(np.full(n_workers, alpha))
            cuts = (np.cumsum(p)[:-1] * idx.size).astype(np.int64)
            for w, chunk in enumerate(np.split(idx, cuts)):
                parts[w].append(chunk)
        shards = [np.sort(np.concatenate(p)) for p in parts]
        if min(s.size for s in shards) >= min_size:
            return [torch.from_numpy(s.astype(np.int64)) for s in shards]
    raise ValueError(
        f"no Dirichlet partition with at least min_size={min_size} samples per worker in "
        f"{_DIRICHLET_MAX_TRIES} draws (alpha={alpha}, n_workers={n_workers}); "
        "raise alpha or lower min_size"
    )


def shard_sizes(shards: list[torch.Tensor]) -> list[int]:
    """Number of samples of every shard."""
    return [int(s.numel()) for s in shards]


def label_histogram(
    labels: torch.Tensor, shards: list[torch.Tensor], num_classes: int
) -> torch.Tensor:
    """Class counts per worker, int64 ``[n_workers, num_classes]`` (row i = worker i).

    Raises:
        ValueError: bad ``labels``, or a label ``>= num_classes``.
    """
    y = torch.from_numpy(_labels_numpy(labels))
    if y.numel() and int(y.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, num_classes={num_classes})")
    rows = [torch.bincount(y[s.long()], minlength=num_classes) for s in shards]
    if not rows:
        return torch.zeros(0, num_classes, dtype=torch.int64)
    return torch.stack(rows)
