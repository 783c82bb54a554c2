"""Tests of peergrad.data: loaders (built-in and standard on-disk formats), quadratics, partitions.

The on-disk formats are exercised on tiny archives written here in the exact standard layouts;
nothing touches the network (downloads are tested against ``file://`` mirrors).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import random
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from peergrad.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    MNIST_MEAN,
    MNIST_STD,
    PARTITIONS,
    Dataset,
    download_cifar,
    download_mnist_idx,
    label_histogram,
    load_dataset,
    partition,
    read_idx,
    shard_sizes,
)
from peergrad.problems import QuadraticProblem, heterogeneous_quadratics

# ----------------------------------------------------------------------------- IDX fixtures

IDX_NAMES = {
    "train-images-idx3-ubyte": (2051, (6, 28, 28)),
    "train-labels-idx1-ubyte": (2049, (6,)),
    "t10k-images-idx3-ubyte": (2051, (4, 28, 28)),
    "t10k-labels-idx1-ubyte": (2049, (4,)),
}


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file: magic 0x00 0x00 <type> <ndim>, big-endian uint32 dims, big-endian data."""
    big = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(big).tobytes()


def tiny_mnist_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name, (magic, shape) in IDX_NAMES.items():
        if magic == 2051:
            out[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            out[name] = np.arange(shape[0], dtype=np.uint8) % 10
    out["train-images-idx3-ubyte"][0] = 0  # an all-black and an all-white image
    out["train-images-idx3-ubyte"][1] = 255
    return out


def write_tiny_mnist(folder: Path, gz: bool) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = tiny_mnist_arrays()
    for name, arr in arrays.items():
        data = idx_bytes(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_parses_standard_files(tmp_path: Path, gz: bool) -> None:
    arrays = write_tiny_mnist(tmp_path, gz)
    ds = load_dataset("mnist-idx", root=tmp_path, download=False)
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (4, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.y_train.tolist() == [0, 1, 2, 3, 4, 5] and ds.y_test.tolist() == [0, 1, 2, 3]
    lo, hi = -MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD
    assert torch.allclose(ds.x_train[0], torch.full((1, 28, 28), lo))
    assert torch.allclose(ds.x_train[1], torch.full((1, 28, 28), hi))
    expected = (arrays["t10k-images-idx3-ubyte"] / 255.0 - MNIST_MEAN) / MNIST_STD
    assert torch.allclose(ds.x_test[:, 0].double(), torch.from_numpy(expected), atol=1e-6, rtol=0)


def test_mnist_idx_accepts_torchvision_layout(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path / "MNIST" / "raw", gz=True)
    ds = load_dataset("mnist-idx", root=tmp_path, download=False)
    assert ds.num_train == 6 and ds.num_test == 4


def test_mnist_idx_missing_files_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist-idx", root=tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path) in msg
    for name in IDX_NAMES:
        assert name in msg
    with pytest.raises(ValueError, match="root"):
        load_dataset("mnist-idx", root=None, download=False)


def test_read_idx_header_checks(tmp_path: Path) -> None:
    values = np.array([[1, -2, 70000], [3, 4, -5]], dtype=np.int64)
    f = tmp_path / "ints.idx"
    f.write_bytes(idx_bytes(values, 0x0C))
    arr = read_idx(f)
    assert arr.shape == (2, 3) and arr.dtype == np.int32 and arr.tolist() == values.tolist()
    fl = tmp_path / "floats.idx"
    fl.write_bytes(idx_bytes(np.array([0.5, -1.25]), 0x0D))
    assert read_idx(fl).tolist() == [0.5, -1.25]
    with pytest.raises(ValueError, match="magic"):
        read_idx(f, expected_magic=2051)
    f.write_bytes(idx_bytes(values, 0x0C)[:-1])
    with pytest.raises(ValueError, match="data bytes"):
        read_idx(f)
    f.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(f)
    f.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="type code"):
        read_idx(f)


def test_mnist_idx_label_count_mismatch(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        load_dataset("mnist-idx", root=tmp_path, download=False)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_download_mnist_idx_from_file_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    write_tiny_mnist(mirror, gz=True)
    sums = {p.name: md5_of(p) for p in mirror.iterdir()}
    root = tmp_path / "root"
    found = download_mnist_idx(root, mirrors=(mirror.as_uri() + "/",), checksums=sums)
    assert sorted(p.name for p in found.values()) == sorted(sums)
    assert load_dataset("mnist-idx", root=root, download=False).num_train == 6
    bad = dict(sums, **{"train-images-idx3-ubyte.gz": "0" * 32})
    root2 = tmp_path / "root2"
    with pytest.raises(OSError, match="MD5 mismatch"):
        download_mnist_idx(root2, mirrors=(mirror.as_uri(),), checksums=bad)
    assert not (root2 / "train-images-idx3-ubyte.gz").exists()
    assert not any(p.name.endswith(".part") for p in root2.iterdir())


# --------------------------------------------------------------------------- CIFAR fixtures


def cifar_images(n: int, seed: int) -> np.ndarray:
    data = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 255, 0, 128  # R, G, B planes
    return data


def write_cifar10(root: Path, *, old_numpy_names: bool = False) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, fname in enumerate(files):
        n = 3 if fname == "test_batch" else 2
        batch = {
            b"batch_label": f"batch {k}".encode(),
            b"labels": [(k * 2 + j) % 10 for j in range(n)],
            b"data": cifar_images(n, k),
            b"filenames": [f"img{j}.png".encode() for j in range(n)],
        }
        blob = pickle.dumps(batch, protocol=2)
        if old_numpy_names:  # as written by Python 2 / NumPy 1 (the real archive)
            blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / fname).write_bytes(blob)
    return folder


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for fname, n in (("train", 5), ("test", 2)):
        batch = {
            b"fine_labels": [99 - j for j in range(n)],
            b"coarse_labels": [19 - j for j in range(n)],
            b"data": cifar_images(n, n),
        }
        (folder / fname).write_bytes(pickle.dumps(batch, protocol=4))
    return folder


@pytest.mark.parametrize("old_numpy_names", [False, True])
def test_cifar10_parses_python_pickles(tmp_path: Path, old_numpy_names: bool) -> None:
    write_cifar10(tmp_path, old_numpy_names=old_numpy_names)
    ds = load_dataset("cifar10", root=tmp_path, download=False)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    assert ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    assert ds.y_train.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert ds.y_test.tolist() == [0, 1, 2]
    # Plane order R, G, B and per-channel normalisation.
    for c, value in enumerate((255, 0, 128)):
        want = (value / 255 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
        assert torch.allclose(ds.x_train[0, c], torch.full((32, 32), want), atol=1e-6, rtol=0)
    raw = cifar_images(2, 1)[1].reshape(3, 32, 32) / 255.0
    want = (raw - np.array(CIFAR10_MEAN)[:, None, None]) / np.array(CIFAR10_STD)[:, None, None]
    assert np.allclose(ds.x_train[3].numpy(), want, atol=1e-6, rtol=0)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    ds = load_dataset("cifar100", root=tmp_path, download=False)
    assert ds.x_train.shape == (5, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    assert ds.num_classes == 100
    assert ds.y_train.tolist() == [99, 98, 97, 96, 95] and ds.y_test.tolist() == [99, 98]
    want = (1.0 - CIFAR100_MEAN[0]) / CIFAR100_STD[0]
    assert torch.allclose(ds.x_train[0, 0], torch.full((32, 32), want), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", ["cifar-10-batches-py", "data_batch_1", "data_batch_5", "test_batch"]),
        ("cifar100", ["cifar-100-python", "train", "test"]),
    ],
)
def test_cifar_missing_files_raise(tmp_path: Path, name: str, expected: list[str]) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, root=tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path) in msg
    for part in expected:
        assert part in msg


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getcwd, ())


def test_cifar_pickle_refuses_foreign_globals(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(
        pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2)
    )
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_download_cifar_from_file_mirror(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_cifar10(src)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = mirror / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    root = tmp_path / "root"
    out = download_cifar("cifar10", root, mirrors=(mirror.as_uri(),), md5=md5_of(archive))
    assert out == root / "cifar-10-batches-py" and (out / "data_batch_3").is_file()
    assert load_dataset("cifar10", root=root, download=False).num_train == 10
    with pytest.raises(OSError, match="MD5 mismatch"):
        download_cifar("cifar10", tmp_path / "other", mirrors=(mirror.as_uri(),), md5="0" * 32)
    with pytest.raises(ValueError, match="cifar10"):
        download_cifar("cifar1000", root)


# ------------------------------------------------------------------------- built-in loaders


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_dataset("mnist")


def test_mnist_default_dataset(mnist: Dataset) -> None:
    assert mnist.name == "mnist" and DATASETS[0] == "mnist"
    assert mnist.x_train.shape == (4000, 1, 28, 28) and mnist.x_test.shape == (1000, 1, 28, 28)
    assert mnist.x_train.dtype == torch.float32 and mnist.y_train.dtype == torch.int64
    assert mnist.num_classes == 10 and mnist.input_shape == (1, 28, 28)
    assert torch.bincount(mnist.y_test).tolist() == [100] * 10
    assert torch.bincount(mnist.y_train).tolist() == [400] * 10
    assert bool((mnist.y_train[1:] >= mnist.y_train[:-1]).all())  # label-sorted
    lo, hi = -MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD
    assert mnist.x_train.min().item() == pytest.approx(lo, abs=1e-5)
    assert mnist.x_train.max().item() == pytest.approx(hi, abs=1e-5)
    assert abs(mnist.x_train.mean().item()) < 0.2 and 0.8 < mnist.x_train.std().item() < 1.2


def test_mnist_test_split_is_fixed_across_seeds(mnist: Dataset) -> None:
    other = load_dataset("mnist", seed=123)
    assert torch.equal(other.x_test, mnist.x_test) and torch.equal(other.y_test, mnist.y_test)
    assert torch.equal(other.x_train, mnist.x_train)
    # Train and test images are different samples (no test image reappears in train).
    train = {row.tobytes() for row in mnist.x_train.flatten(1).numpy()}
    assert sum(row.tobytes() in train for row in mnist.x_test.flatten(1).numpy()) == 0


def test_digits() -> None:
    ds = load_dataset("digits")
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.input_shape == (1, 8, 8)
    assert ds.num_train + ds.num_test == 1797 and 350 <= ds.num_test <= 370
    assert ds.num_classes == 10 and set(ds.y_test.tolist()) == set(range(10))
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-3
    again = load_dataset("digits", seed=7)
    assert torch.equal(again.y_test, ds.y_test) and torch.equal(again.x_test, ds.x_test)


def test_mnist1d_offline_and_side_effect_free() -> None:
    np_state, py_state = np.random.get_state(), random.getstate()
    ds = load_dataset("mnist1d")
    after = np.random.get_state()
    assert np_state[0] == after[0] and np.array_equal(np_state[1], after[1])
    assert random.getstate() == py_state
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.input_shape == (40,) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and set(ds.y_train.tolist()) == set(range(10))


def test_synthetic_logistic_is_seeded() -> None:
    a, b = load_dataset("synthetic-logistic"), load_dataset("synthetic-logistic", seed=0)
    c = load_dataset("synthetic-logistic", seed=1)
    assert a.x_train.shape == (2000, 20) and a.x_test.shape == (500, 20)
    assert a.num_classes == 2 and a.input_shape == (20,)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert 0.3 < a.y_train.double().mean().item() < 0.7


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(info.value)


def test_dataset_validates_fields() -> None:
    x, y = torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64)
    Dataset("t", x, y, x, y, 2, (2,), "tiny")
    with pytest.raises(ValueError, match="float32"):
        Dataset("t", x.double(), y, x, y, 2, (2,), "tiny")
    with pytest.raises(ValueError, match=r"\[N"):
        Dataset("t", x, y[:2], x, y, 2, (2,), "tiny")
    with pytest.raises(ValueError, match="lie in"):
        Dataset("t", x, y + 2, x, y, 2, (2,), "tiny")


# ------------------------------------------------------------------------------- quadratics


def test_heterogeneous_quadratics_recipe() -> None:
    for kwargs in ({}, {"n": 6, "d": 3, "seed": 4, "a_range": (0.5, 5.0)}):
        p = heterogeneous_quadratics(**kwargs)
        n, d, seed = kwargs.get("n", 8), kwargs.get("d", 5), kwargs.get("seed", 0)
        lo, hi = kwargs.get("a_range", (0.5, 2.0))
        rng = np.random.default_rng(seed)
        a = rng.uniform(lo, hi, (n, d))
        b = rng.normal(0.0, 3.0, (n, d))
        assert np.array_equal(p.a, a) and np.array_equal(p.b, b)
        assert p.a.dtype == np.float64 and (p.n, p.d) == (n, d)
        assert np.allclose(p.x_star, (a * b).sum(0) / a.sum(0), rtol=0, atol=0)
    with pytest.raises(ValueError):
        p.a[0, 0] = 1.0  # read-only


def test_quadratics_x_star_grad_loss_error() -> None:
    p = heterogeneous_quadratics()
    x_star = torch.from_numpy(p.x_star)
    X_star = x_star.expand(p.n, p.d).clone()
    assert p.grad(X_star).mean(0).abs().max().item() < 1e-12
    assert p.error(X_star) == 0.0 and p.error(x_star) == 0.0
    X = torch.randn(p.n, p.d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X.requires_grad_(True)
    losses = p.loss(X)
    assert losses.shape == (p.n,)
    (autograd,) = torch.autograd.grad(losses.sum(), X)
    assert torch.allclose(p.grad(X.detach()), autograd, rtol=0, atol=1e-12)
    want = np.abs(X.detach().numpy() - p.x_star).max()
    assert p.error(X) == pytest.approx(want, rel=1e-15)
    assert p.grad(X.detach().float()).dtype == torch.float32
    # x* minimises the average objective: any perturbation increases it.
    base = p.loss(X_star).mean()
    for c in range(p.d):
        bumped = X_star.clone()
        bumped[:, c] += 1e-3
        assert p.loss(bumped).mean() > base


def test_quadratics_errors() -> None:
    p = heterogeneous_quadratics(n=4, d=3)
    with pytest.raises(ValueError, match=r"\[4, 3\]"):
        p.grad(torch.zeros(3, 4))
    with pytest.raises(ValueError):
        p.error(torch.zeros(5))
    with pytest.raises(ValueError, match="a_range"):
        heterogeneous_quadratics(a_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="n and d"):
        heterogeneous_quadratics(n=0)
    with pytest.raises(ValueError, match="positive"):
        QuadraticProblem(a=-np.ones((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        QuadraticProblem(a=np.ones((2, 2)), b=np.zeros((2, 3)))


# ------------------------------------------------------------------------------- partitions


def labels_example(n: int = 1003, classes: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, classes, n))


def assert_disjoint(shards: list[torch.Tensor], N: int) -> None:
    flat = torch.cat(shards)
    assert flat.dtype == torch.int64
    assert flat.unique().numel() == flat.numel()
    assert flat.numel() == 0 or (0 <= int(flat.min()) and int(flat.max()) < N)


def test_partition_iid() -> None:
    y = labels_example()
    shards = partition(y, 8, "iid", seed=3)
    assert shard_sizes(shards) == [1003 // 8] * 8
    assert_disjoint(shards, 1003)
    again = partition(y, 8, "iid", seed=3)
    assert all(torch.equal(s, t) for s, t in zip(shards, again, strict=True))
    other = partition(y, 8, "iid", seed=4)
    assert not all(torch.equal(s, t) for s, t in zip(shards, other, strict=True))


def test_partition_sorted_is_label_monotone(mnist: Dataset) -> None:
    y = labels_example()
    shards = partition(y, 7, "sorted", seed=1)
    assert shard_sizes(shards) == [1003 // 7] * 7
    assert_disjoint(shards, 1003)
    blocks = [y[s] for s in shards]
    for blk in blocks:
        assert bool((blk[1:] >= blk[:-1]).all())
    for left, right in zip(blocks[:-1], blocks[1:], strict=True):
        assert int(left.max()) <= int(right.min())
    assert all(
        torch.equal(s, t) for s, t in zip(shards, partition(y, 7, "sorted", seed=9), strict=True)
    )
    # On the balanced default data set, 10 sorted workers each hold exactly one class.
    hist = label_histogram(mnist.y_train, partition(mnist.y_train, 10, "sorted"), 10)
    assert torch.equal(hist, 400 * torch.eye(10, dtype=torch.int64))


def test_partition_dirichlet() -> None:
    y = labels_example(2000)
    shards = partition(y, 10, "dirichlet", seed=0, alpha=0.1, min_size=20)
    assert_disjoint(shards, 2000)
    assert sum(shard_sizes(shards)) == 2000 and min(shard_sizes(shards)) >= 20
    again = partition(y, 10, "dirichlet", seed=0, alpha=0.1, min_size=20)
    assert all(torch.equal(s, t) for s, t in zip(shards, again, strict=True))
    hist = label_histogram(y, shards, 10)
    assert hist.shape == (10, 10) and hist.sum(1).tolist() == shard_sizes(shards)
    assert torch.equal(hist.sum(0), torch.bincount(y, minlength=10))
    # Small alpha skews labels far more than a large one.
    skewed = (hist.max(1).values / hist.sum(1)).mean()
    mild_hist = label_histogram(y, partition(y, 10, "dirichlet", alpha=100.0), 10)
    assert skewed > (mild_hist.max(1).values / mild_hist.sum(1)).mean() + 0.2


def test_partition_errors() -> None:
    y = labels_example(100)
    with pytest.raises(ValueError) as info:
        partition(y, 4, "random")
    for scheme in PARTITIONS:
        assert scheme in str(info.value)
    for bad in (0, 101):
        with pytest.raises(ValueError, match="n_workers"):
            partition(y, bad, "iid")
    with pytest.raises(ValueError, match="alpha"):
        partition(y, 4, "dirichlet", alpha=0.0)
    with pytest.raises(ValueError, match="min_size"):
        partition(y, 4, "dirichlet", min_size=26)
    with pytest.raises(ValueError, match=r"min_size=10 .*alpha=0\.001"):
        partition(y, 10, "dirichlet", alpha=0.001, min_size=10)
    with pytest.raises(ValueError, match="integer"):
        partition(y.double(), 4, "iid")
    with pytest.raises(ValueError, match="num_classes"):
        label_histogram(y, [torch.arange(3)], 5)
