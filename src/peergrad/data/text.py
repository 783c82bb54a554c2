"""Real English text that ships with every Python, byte-level: the ``pydoc-topics`` data set.

Source: ``pydoc_data.topics.topics``, the standard library's dict of the documentation topics
that ``help()`` shows (the Python Language Reference's sections: ``assignment``, ``class``,
``exprlists`` ...). Its size depends on the Python version: 79 topics, 466,117 bytes on
CPython 3.11.7; the description of a loaded data set gives its exact size and the SHA-256 of the
stream, so a run says which text it trained on.

Stream: the topics' texts concatenated in sorted-key order (nothing between them), encoded as
UTF-8; every byte is a token (vocabulary :data:`VOCAB_SIZE` = 256; multi-byte characters are
several tokens).

Splits: contiguous blocks of the stream of ``T`` bytes: train ``[0, a)``, validation ``[a, b)``,
test ``[b, T)`` with ``a = floor(90 T / 100)`` and ``b = floor(95 T / 100)`` (90 / 5 / 5 %). The
blocks never change with the seed or ``seq_len``.

Samples: each split is cut into non-overlapping windows of ``seq_len`` input tokens (stride
``seq_len``) with their next-token targets: window ``i`` of a split ``s`` is ``x_i = s[i L : i
L + L]``, ``y_i = s[i L + 1 : i L + L + 1]`` (``L = seq_len``), for ``i < (len(s) - 1) // L``;
the last ``len(s) - 1 - L * N`` input bytes of a split (fewer than a window) are not used. So
inputs ``[N, L]`` and targets ``[N, L]`` are int64 token ids, and window ``i + 1`` starts where
window ``i``'s targets end. The windows are in text order, so the ``contiguous`` partition
(:func:`peergrad.data.partition`) gives every worker its own contiguous stretch of the text
and ``iid`` random windows from all of it.

Nothing is read at import time; no network is used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_SEQ_LEN",
    "SPLIT_PERCENT",
    "TEXT_DATASETS",
    "VOCAB_SIZE",
    "TextDataset",
    "check_seq_len",
    "load_text_dataset",
    "pydoc_topics_bytes",
    "split_bounds",
    "text_windows",
]

#: Names of the built-in text data sets (also in :data:`peergrad.data.DATASETS`).
TEXT_DATASETS: tuple[str, ...] = ("pydoc-topics",)
#: Byte-level vocabulary size.
VOCAB_SIZE = 256
#: Window length when none is given (``--data-set seq_len=...``).
DEFAULT_SEQ_LEN = 64
#: Train / validation / test shares of the stream, in percent (contiguous blocks, in order).
SPLIT_PERCENT: tuple[int, int, int] = (90, 5, 5)


@cache
def pydoc_topics_bytes() -> bytes:
    """The ``pydoc-topics`` byte stream: ``pydoc_data.topics.topics``'s texts concatenated in
    sorted-key order, UTF-8 (cached)."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics)).encode("utf-8")


def split_bounds(total: int) -> tuple[int, int]:
    """``(a, b)``: train is ``[0, a)``, validation ``[a, b)``, test ``[b, total)`` with ``a =
    floor(90 total / 100)``, ``b = floor(95 total / 100)`` (integer arithmetic)."""
    a = total * SPLIT_PERCENT[0] // 100
    b = total * (SPLIT_PERCENT[0] + SPLIT_PERCENT[1]) // 100
    return a, b


def _split_lengths(total: int) -> dict[str, int]:
    a, b = split_bounds(total)
    return {"train": a, "validation": b - a, "test": total - b}


def check_seq_len(seq_len: object, name: str = "pydoc-topics") -> int:
    """``seq_len`` when it fits every split of ``name`` (an int in ``[1, shortest split - 1]``:
    a window needs ``seq_len + 1`` bytes); ``ValueError`` naming ``seq_len`` and that range
    otherwise. Reads only the byte stream's length (no tensors)."""
    if name not in TEXT_DATASETS:
        raise ValueError(f"unknown text data set {name!r}; allowed: {', '.join(TEXT_DATASETS)}")
    lengths = _split_lengths(len(pydoc_topics_bytes()))
    split, shortest = min(lengths.items(), key=lambda kv: kv[1])
    high = shortest - 1
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= high:
        raise ValueError(
            f"seq_len must be an integer in [1, {high}] for {name} (its shortest split, "
            f"{split}, holds {shortest} bytes and a window needs seq_len + 1), got {seq_len!r}"
        )
    return seq_len


def text_windows(tokens: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    """Non-overlapping windows of a 1-D token tensor: ``(x [N, L], y [N, L])`` with ``x[i] =
    tokens[i L : i L + L]``, ``y[i] = tokens[i L + 1 : i L + L + 1]``, ``N = (len - 1) // L``
    (``L = seq_len``); contiguous copies, the dtype of ``tokens``. ``ValueError`` when
    ``tokens`` is not 1-D or holds fewer than ``seq_len + 1`` tokens."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    count = (tokens.shape[0] - 1) // seq_len
    if seq_len < 1 or count < 1:
        raise ValueError(
            f"seq_len must be in [1, {tokens.shape[0] - 1}] for {tokens.shape[0]} tokens, "
            f"got {seq_len}"
        )
    starts = torch.arange(count, device=tokens.device) * seq_len
    idx = starts[:, None] + torch.arange(seq_len + 1, device=tokens.device)
    w = tokens[idx]
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


@dataclass(frozen=True)
class TextDataset:
    """A byte-level text data set cut into next-token windows (see the module docstring).

    Attributes:
        name: ``"pydoc-topics"``.
        seq_len: L, input tokens per window.
        x_train, y_train: int64 ``[N_train, L]`` input windows and their targets (shifted by
            one token); likewise ``x_val, y_val`` (the validation block) and ``x_test, y_test``.
        tokens: int64 ``[T]``, the whole stream (train, validation, test blocks in order).
        bounds: ``(a, b)`` of :func:`split_bounds`: the blocks are ``tokens[:a]``,
            ``tokens[a:b]`` and ``tokens[b:]``.
        num_classes: the vocabulary size V = 256 (the model's output width).
        description: one line: source, size, SHA-256, split and window counts.
    """

    name: str
    seq_len: int
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    tokens: Tensor
    bounds: tuple[int, int]
    num_classes: int
    description: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(seq_len,)``: the shape of one input window."""
        return (self.seq_len,)

    @property
    def num_train(self) -> int:
        """Number of training windows."""
        return int(self.x_train.shape[0])

    @property
    def num_val(self) -> int:
        """Number of validation windows."""
        return int(self.x_val.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test windows."""
        return int(self.x_test.shape[0])


def load_text_dataset(name: str = "pydoc-topics", *, seq_len: int = DEFAULT_SEQ_LEN) -> TextDataset:
    """Load a built-in text data set (:data:`TEXT_DATASETS`) as next-token windows.

    Args:
        name: ``"pydoc-topics"``.
        seq_len: input tokens per window, in ``[1, shortest split - 1]`` (:func:`check_seq_len`).

    Returns:
        A :class:`TextDataset` (CPU int64 tensors).

    Raises:
        ValueError: unknown ``name``; ``seq_len`` out of its range (one line naming it and the
            range), checked before any tensor is made.
    """
    check_seq_len(seq_len, name)
    stream = pydoc_topics_bytes()
    tokens = torch.frombuffer(bytearray(stream), dtype=torch.uint8).to(torch.int64)
    a, b = split_bounds(len(stream))
    x_tr, y_tr = text_windows(tokens[:a], seq_len)
    x_va, y_va = text_windows(tokens[a:b], seq_len)
    x_te, y_te = text_windows(tokens[b:], seq_len)
    digest = hashlib.sha256(stream).hexdigest()[:16]
    return TextDataset(
        name=name,
        seq_len=seq_len,
        x_train=x_tr,
        y_train=y_tr,
        x_val=x_va,
        y_val=y_va,
        x_test=x_te,
        y_test=y_te,
        tokens=tokens,
        bounds=(a, b),
        num_classes=VOCAB_SIZE,
        description=(
            f"pydoc-topics: the standard library's pydoc_data.topics, {len(stream):,} UTF-8 bytes "
            f"(sha256 {digest}...), byte-level (vocabulary 256); contiguous blocks 90/5/5 %: "
            f"{a:,} / {b - a:,} / {len(stream) - b:,} bytes = {x_tr.shape[0]} / "
            f"{x_va.shape[0]} / {x_te.shape[0]} windows of seq_len {seq_len} (stride {seq_len})"
        ),
    )
