"""Data sets and partitioners (test problems such as the quadratics: :mod:`peergrad.problems`).

Nothing is loaded at import time: call :func:`load_dataset` (``"mnist"`` is the default of the
tool and needs no network), then :func:`partition` its train labels across workers. Text for
language models: ``load_dataset("pydoc-topics", seq_len=64)`` (:mod:`peergrad.data.text`).
"""

from __future__ import annotations

from .datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    MNIST_MEAN,
    MNIST_STD,
    SPLIT_SEED,
    Dataset,
    load_dataset,
)
from .formats import download_cifar, download_mnist_idx, read_cifar_arrays, read_idx
from .partition import (
    PARTITIONS,
    VALIDATION_SEED,
    label_histogram,
    partition,
    shard_sizes,
    validation_split,
)
from .text import (
    DEFAULT_SEQ_LEN,
    TEXT_DATASETS,
    VOCAB_SIZE,
    TextDataset,
    load_text_dataset,
    text_windows,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "DEFAULT_SEQ_LEN",
    "MNIST_MEAN",
    "MNIST_STD",
    "PARTITIONS",
    "SPLIT_SEED",
    "TEXT_DATASETS",
    "VALIDATION_SEED",
    "VOCAB_SIZE",
    "Dataset",
    "TextDataset",
    "download_cifar",
    "download_mnist_idx",
    "label_histogram",
    "load_dataset",
    "load_text_dataset",
    "partition",
    "read_cifar_arrays",
    "read_idx",
    "shard_sizes",
    "text_windows",
    "validation_split",
]
