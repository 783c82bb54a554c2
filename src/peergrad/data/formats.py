"""Readers (and optional downloaders) for the standard on-disk formats of MNIST and CIFAR.

Formats
-------
* **IDX** (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
  ``0x00 0x00 <type code> <ndim>`` followed by ``ndim`` big-endian uint32 sizes and the row-major
  data. MNIST images have magic 2051 (``0x00000803``: uint8, 3 dims ``[N, 28, 28]``), labels have
  magic 2049 (``0x00000801``: uint8, 1 dim ``[N]``). Files may be gzip-compressed (``.gz``).
* **CIFAR "python version"** (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html):
  pickled dicts with bytes keys; ``b"data"`` is uint8 ``[N, 3072]`` (1024 red, then 1024 green,
  then 1024 blue values, each a row-major 32x32 plane) and ``b"labels"`` (CIFAR-10) or
  ``b"fine_labels"`` (CIFAR-100) a list of ints.

Nothing here touches the network unless a ``download_*`` function is called explicitly (or
``load_dataset(..., download=True)`` finds files missing). Downloads are verified against the
published MD5 checksums before they are used. CIFAR pickles are read with an unpickler that only
resolves the few NumPy constructors an array needs, so a tampered file cannot run code.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import pickle
import shutil
import tarfile
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CIFAR_ARCHIVES",
    "CIFAR_LAYOUTS",
    "MNIST_IDX_FILES",
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "cifar_missing_files",
    "download_cifar",
    "download_mnist_idx",
    "find_mnist_idx_files",
    "read_cifar_arrays",
    "read_idx",
    "read_mnist_idx_arrays",
]

# --------------------------------------------------------------------------------------- IDX

#: The four MNIST IDX files, by role, without the optional ``.gz`` suffix.
MNIST_IDX_FILES: Mapping[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: MD5 checksums of the canonical gzip-compressed MNIST files.
MNIST_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
#: Base URLs tried in order for the gzip-compressed MNIST files.
MNIST_MIRRORS: tuple[str, ...] = ("https://ossci-datasets.s3.amazonaws.com/mnist/",)

_IDX_MAGIC_IMAGES = 2051
_IDX_MAGIC_LABELS = 2049
_IDX_DTYPES: Mapping[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _read_bytes(path: Path) -> bytes:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return fh.read()


def read_idx(path: str | Path, *, expected_magic: int | None = None) -> np.ndarray:
    """Parse one IDX file (optionally ``.gz``) into a NumPy array.

    Args:
        path: the file; gzip-compressed when its name ends in ``.gz``.
        expected_magic: when given, the 32-bit big-endian magic number the file must carry
            (2051 for MNIST images, 2049 for MNIST labels).

    Returns:
        An array with the dims of the header and the header's element type (native byte order).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: malformed header, unknown type code, wrong magic, or a size mismatch.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (the magic number must start with two 0 bytes)")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"{path}: IDX magic number is {magic}, expected {expected_magic}")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: unknown IDX type code 0x{code:02X}; allowed: "
            + ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dims announced)")
    dims = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: IDX header announces dims {dims} ({expected} data bytes) but the file holds "
            f"{len(data) - header} data bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _mnist_search_dirs(root: Path) -> tuple[Path, ...]:
    # ``root`` itself, and torchvision's layout ``root/MNIST/raw``.
    return (root, root / "MNIST" / "raw")


def find_mnist_idx_files(root: str | Path) -> dict[str, Path] | None:
    """Locate the four MNIST IDX files under ``root``.

    Each file is looked up as ``<name>`` then ``<name>.gz`` in ``root`` and then in
    ``root/MNIST/raw`` (torchvision's layout). Returns a mapping role -> path (roles are the keys
    of :data:`MNIST_IDX_FILES`) when all four are found, else ``None``.
    """
    root = Path(root)
    found: dict[str, Path] = {}
    for role, name in MNIST_IDX_FILES.items():
        for folder in _mnist_search_dirs(root):
            hit = next((folder / f for f in (name, name + ".gz") if (folder / f).is_file()), None)
            if hit is not None:
                found[role] = hit
                break
        else:
            return None
    return found


def read_mnist_idx_arrays(
    files: Mapping[str, Path],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the MNIST IDX files found by :func:`find_mnist_idx_files`.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: images uint8 ``[N, H, W]``, labels int64 ``[N]``.

    Raises:
        ValueError: wrong magic numbers (2051 images / 2049 labels), non-uint8 data, or image and
            label counts that disagree.
    """
    out: list[np.ndarray] = []
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"], expected_magic=_IDX_MAGIC_IMAGES)
        labels = read_idx(files[f"{split}_labels"], expected_magic=_IDX_MAGIC_LABELS)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"MNIST {split} split: {images.shape[0]} images but {labels.shape[0]} labels "
                f"({files[f'{split}_images']}, {files[f'{split}_labels']})"
            )
        out += [images, labels.astype(np.int64)]
    return out[0], out[1], out[2], out[3]


# ------------------------------------------------------------------------------------- CIFAR

#: Per data set: (folder inside root, train files, test files, label key, number of classes).
CIFAR_LAYOUTS: Mapping[str, tuple[str, tuple[str, ...], tuple[str, ...], bytes, int]] = {
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        b"labels",
        10,
    ),
    "cifar100": ("cifar-100-python", ("train",), ("test",), b"fine_labels", 100),
}
#: Per data set: (archive file name, MD5, base URLs tried in order).
CIFAR_ARCHIVES: Mapping[str, tuple[str, str, tuple[str, ...]]] = {
    "cifar10": (
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        ("https://www.cs.toronto.edu/~kriz/", "https://cave.cs.toronto.edu/kriz/"),
    ),
    "cifar100": (
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        ("https://www.cs.toronto.edu/~kriz/", "https://cave.cs.toronto.edu/kriz/"),
    ),
}


def _numpy_attr(modules: Sequence[str], name: str) -> Any:
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"cannot resolve numpy constructor {name!r}")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only what a dict of NumPy arrays, lists and bytes needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct",
            "scalar",
        ):
            return _numpy_attr(("numpy._core.multiarray", "numpy.core.multiarray"), name)
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return _numpy_attr(("numpy._core.numeric", "numpy.core.numeric"), name)
        if (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name} from a CIFAR pickle (only NumPy arrays, "
            "lists and bytes are expected)"
        )


def _load_cifar_pickle(path: Path) -> dict[bytes, Any]:
    with open(path, "rb") as fh:
        obj = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def cifar_missing_files(name: str, root: str | Path) -> list[Path]:
    """The expected CIFAR files (see :data:`CIFAR_LAYOUTS`) that are absent under ``root``."""
    folder, train, test, _, _ = CIFAR_LAYOUTS[name]
    base = Path(root) / folder
    return [base / f for f in (*train, *test) if not (base / f).is_file()]


def read_cifar_arrays(
    name: str, root: str | Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels).

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: folder holding ``cifar-10-batches-py/`` or ``cifar-100-python/``.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: images uint8 ``[N, 3, 32, 32]`` (RGB), labels
        int64 ``[N]``; the train batches are concatenated in file order.

    Raises:
        ValueError: unknown ``name``, missing keys, bad shapes or out-of-range labels.
        FileNotFoundError: a batch file is absent.
    """
    if name not in CIFAR_LAYOUTS:
        raise ValueError(f"name must be one of {tuple(CIFAR_LAYOUTS)}, got {name!r}")
    folder, train, test, label_key, num_classes = CIFAR_LAYOUTS[name]
    base = Path(root) / folder
    out: list[np.ndarray] = []
    for files in (train, test):
        xs, ys = [], []
        for fname in files:
            path = base / fname
            batch = _load_cifar_pickle(path)
            if b"data" not in batch or label_key not in batch:
                raise ValueError(
                    f"{path}: expected keys b'data' and {label_key!r}, found {sorted(batch)}"
                )
            x = np.asarray(batch[b"data"], dtype=np.uint8)
            y = np.asarray(batch[label_key], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{path}: b'data' must be uint8 [N, 3072] with N labels; got data "
                    f"{x.shape} and labels {y.shape}"
                )
            if y.size and (y.min() < 0 or y.max() >= num_classes):
                raise ValueError(f"{path}: labels must lie in [0, {num_classes - 1}]")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        out += [np.concatenate(xs), np.concatenate(ys)]
    return out[0], out[1], out[2], out[3]


# ---------------------------------------------------------------------------------- download


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(
    file_name: str, dest: Path, mirrors: Sequence[str], md5: str | None, timeout_s: float
) -> None:
    """Fetch ``file_name`` from the first mirror that serves it with the right checksum."""
    errors: list[str] = []
    part = dest.with_name(dest.name + ".part")
    for base in mirrors:
        url = base if base.endswith(file_name) else base.rstrip("/") + "/" + file_name
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(part, "wb") as fh:
                shutil.copyfileobj(resp, fh, length=1 << 20)
            if md5 is not None and (got := _md5(part)) != md5:
                raise OSError(f"MD5 mismatch: got {got}, expected {md5}")
            part.replace(dest)
            return
        except (OSError, ValueError) as err:  # URLError and socket timeouts are OSErrors
            errors.append(f"{url}: {err}")
        finally:
            part.unlink(missing_ok=True)
    raise OSError(f"could not download {file_name}: " + "; ".join(errors))


def download_mnist_idx(
    root: str | Path,
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    checksums: Mapping[str, str] | None = MNIST_MD5,
    timeout_s: float = 30.0,
) -> dict[str, Path]:
    """Download the four gzip-compressed MNIST IDX files into ``root`` (only those missing).

    Args:
        root: destination folder (created if needed).
        mirrors: base URLs tried in order (``file://`` URLs work too).
        checksums: expected MD5 per ``.gz`` file name; ``None`` skips verification.
        timeout_s: socket timeout per request, in seconds.

    Returns:
        The located files, as :func:`find_mnist_idx_files` returns them.

    Raises:
        OSError: a file could not be fetched from any mirror or failed its checksum (partial
            downloads are removed).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in MNIST_IDX_FILES.values():
        if any((d / n).is_file() for d in _mnist_search_dirs(root) for n in (name, name + ".gz")):
            continue
        gz = name + ".gz"
        md5 = None if checksums is None else checksums.get(gz)
        _download(gz, root / gz, mirrors, md5, timeout_s)
    found = find_mnist_idx_files(root)
    if found is None:  # pragma: no cover - every file was just written
        raise OSError(f"MNIST files still missing under {root} after download")
    return found


def download_cifar(
    name: str,
    root: str | Path,
    *,
    mirrors: Sequence[str] | None = None,
    md5: str | None = "default",
    timeout_s: float = 30.0,
) -> Path:
    """Download and extract the CIFAR "python version" archive into ``root``.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: destination folder (created if needed); the archive is kept there.
        mirrors: base URLs tried in order; default :data:`CIFAR_ARCHIVES` (Toronto).
        md5: expected archive MD5; ``"default"`` uses the published one, ``None`` skips the check.
        timeout_s: socket timeout per request, in seconds.

    Returns:
        The extracted folder (``root/cifar-10-batches-py`` or ``root/cifar-100-python``).

    Raises:
        ValueError: unknown ``name``.
        OSError: no mirror served the archive with the expected checksum, or extraction failed.
    """
    if name not in CIFAR_ARCHIVES:
        raise ValueError(f"name must be one of {tuple(CIFAR_ARCHIVES)}, got {name!r}")
    archive_name, default_md5, default_mirrors = CIFAR_ARCHIVES[name]
    expected = default_md5 if md5 == "default" else md5
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / archive_name
    if not (archive.is_file() and (expected is None or _md5(archive) == expected)):
        _download(
            archive_name,
            archive,
            default_mirrors if mirrors is None else mirrors,
            expected,
            timeout_s,
        )
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")
    except (tarfile.TarError, EOFError) as err:
        raise OSError(f"could not extract {archive}: {err}") from err
    return root / CIFAR_LAYOUTS[name][0]
