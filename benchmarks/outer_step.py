"""Outer (block) step of ``local-sgd`` / ``diloco`` vs ``torch.optim.SGD(nesterov=True,
momentum=0.9, foreach=True).step()``.

Times, in one run and interleaved (A, B, A, B, ...), on the same number of parameters (default
20M, float32):

- ``outer_sgd_step``: :func:`peergrad.algorithms.local_sgd.outer_sgd_step` with Nesterov
  momentum 0.9 and lr 0.7 (DiLoCo's outer optimizer) on flat ``[1, D]`` buffers, the block
  gradient ``d`` given and kept: torch's SGD written into ``x`` and ``anchor``;
  ``(overwrite_d)``: the Nesterov step written into ``d``, as torch writes it into ``.grad``
  (``d`` restored untimed before every call, as torch's ``.grad``);
- ``block step``: ``LocalSGD._block_step`` with ``nesterov_style="torch"``, the way the
  pseudo-gradient is used: ``d = anchor - x`` into a scratch buffer first, then
  ``outer_sgd_step(..., overwrite_d=True)``;
- ``torch SGD``: ``torch.optim.SGD(lr=0.7, momentum=0.9, nesterov=True, foreach=True).step()``
  on the same number of parameters split like a small decoder-only transformer (token embedding,
  per layer: two layer norms, the attention's in/out projections, the MLP, with biases; the
  output head), ``.grad`` given;
- ``torch DiLoCo outer step``: for context, the block step as a torch user writes it (torchft's
  layout): ``anchor - p`` into every ``.grad``, the parameters copied back to their anchors,
  the same ``step()``, the new anchors saved.

It prints the median milliseconds per step and the ratios of ``outer_sgd_step`` (both forms)
and ``block step`` to ``torch SGD`` (target <= 1.0), and of ``block step`` to ``torch DiLoCo
outer step``.

Memory passes over D (reads + writes), the cost on a memory-bound device: torch's Nesterov SGD
makes 11 (``buf *= mu`` 2, ``buf += g`` 3, ``g += mu buf`` 3, ``p -= lr g`` 3); the outer step
makes the same 11 in place (``anchor`` is torch's parameter) plus ``x <- anchor`` (2), because
the result must be in both the model ``x`` and the anchor; without ``overwrite_d`` the Nesterov
step goes to a workspace (a write to another buffer, which on a CPU also reads it first).
Fusing the operations would change the rounding (ATen's add with ``alpha`` is a fused
multiply-add, a ``mul_`` then ``add_`` is not), and the outer step is bit for bit torch's.

Usage: ``python benchmarks/outer_step.py [--device cuda] [--numel 20000000] [--repeats 15]
[--threads 1] [--dtype float32]``
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch
from _timing import timed

from peergrad.algorithms.local_sgd import LocalSGD, outer_sgd_step
from peergrad.comm.base import Workspace

MU, ZETA = 0.9, 0.7


def transformer_shapes(numel: int, width: int = 512, layers: int = 6) -> list[tuple[int, ...]]:
    """Parameter shapes of a decoder-only transformer summing to exactly ``numel``: per layer two
    layer norms (weight, bias), the attention's in-projection [3w, w] + bias and out-projection
    [w, w] + bias, the MLP [4w, w] + bias and [w, 4w] + bias; a final norm; the rest split
    between the token embedding and the output head (a vocabulary of about rest / 2w)."""
    w = width
    layer: list[tuple[int, ...]] = [
        (w,), (w,), (3 * w, w), (3 * w,), (w, w), (w,),
        (w,), (w,), (4 * w, w), (4 * w,), (w, 4 * w), (w,),
    ]  # fmt: skip
    shapes = layer * layers + [(w,), (w,)]
    rest = numel - sum(torch.Size(s).numel() for s in shapes)
    vocab = rest // (2 * w)
    if vocab < 1:
        raise ValueError(f"--numel must be at least {numel - rest + 2 * w + 1}")
    head = rest - vocab * w  # the output head takes the remainder (flattened if not a multiple)
    return [(vocab, w), *shapes, (head,)]


class _Comm:
    """One worker: the workspace the outer step takes its scratch buffers from."""

    n_workers = 1

    def __init__(self) -> None:
        self.workspace = Workspace()


Cases = dict[str, Callable[[], Any]]


def peergrad_cases(D: int, device: torch.device, dtype: torch.dtype) -> tuple[Cases, Callable]:
    """The outer step on flat ``[1, D]`` buffers, and the untimed reset of its scratch ``d``."""
    gen = torch.Generator(device=device).manual_seed(0)
    comm: Any = _Comm()

    def flat() -> torch.Tensor:
        return torch.randn(1, D, generator=gen, device=device, dtype=dtype)

    x, anchor, d, u = flat(), flat(), flat(), torch.zeros(1, D, device=device, dtype=dtype)
    d_scratch, d_saved = d.clone(), d.clone()
    alg = LocalSGD(block_momentum=MU, block_lr=ZETA, block_nesterov=True, nesterov_style="torch")
    state = alg.init(flat(), comm)
    xb = flat()
    cases: Cases = {
        "outer_sgd_step": lambda: outer_sgd_step(x, anchor, d, u, MU, ZETA, True, comm),
        "outer_sgd_step(overwrite_d)": lambda: outer_sgd_step(
            x, anchor, d_scratch, u, MU, ZETA, True, comm, overwrite_d=True
        ),
        "block step": lambda: alg._block_step(xb, state, comm),
    }
    return cases, lambda: d_scratch.copy_(d_saved)


def torch_cases(D: int, device: torch.device, dtype: torch.dtype) -> tuple[Cases, Callable, int]:
    """torch's SGD on a transformer's parameter tensors, the same with DiLoCo's bookkeeping,
    the untimed reset of ``.grad`` and the number of tensors."""
    gen = torch.Generator(device=device).manual_seed(1)
    params, grads, anchors = [], [], []
    for shape in transformer_shapes(D):
        p = torch.randn(shape, generator=gen, device=device, dtype=dtype, requires_grad=True)
        p.grad = torch.randn(shape, generator=gen, device=device, dtype=dtype)
        params.append(p)
        grads.append(p.grad)
        anchors.append(torch.randn(shape, generator=gen, device=device, dtype=dtype))
    assert sum(p.numel() for p in params) == D
    opt = torch.optim.SGD(params, lr=ZETA, momentum=MU, nesterov=True, foreach=True)
    saved = [g.clone() for g in grads]
    detached = [p.detach() for p in params]

    def diloco_outer() -> None:
        """DiLoCo with torch.optim (torchft's layout): the pseudo-gradient into ``.grad``, the
        parameters back to the anchor, the step there, the new anchor saved."""
        for g, a, p in zip(grads, anchors, detached, strict=True):
            torch.sub(a, p, out=g)
        torch._foreach_copy_(detached, anchors)
        opt.step()
        torch._foreach_copy_(anchors, detached)

    cases: Cases = {"torch SGD": opt.step, "torch DiLoCo outer step": diloco_outer}
    # untimed: torch's Nesterov step adds mu * buf into .grad in place, so reused gradients
    # would grow geometrically; a training loop has fresh ones every step
    return cases, lambda: torch._foreach_copy_(grads, saved), len(params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--numel", type=int, default=20_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device, dtype, D = torch.device(args.device), getattr(torch, args.dtype), args.numel
    ours, reset_d = peergrad_cases(D, device, dtype)
    theirs, reset_grads, n_tensors = torch_cases(D, device, dtype)
    cases = {**ours, **theirs}
    with torch.no_grad():
        for fn in cases.values():
            for _ in range(args.warmup):
                reset_d()
                reset_grads()
                fn()
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeats):  # interleaved, so that load changes hit every case alike
            for name, fn in cases.items():
                reset_d()
                reset_grads()
                times[name].append(timed(fn, device))
    med = {k: statistics.median(t) * 1e3 for k, t in times.items()}

    print(
        f"device={device} dtype={args.dtype} numel={D:,} threads={torch.get_num_threads()} "
        f"repeats={args.repeats} (median ms per step)"
    )
    print(f"torch SGD: {n_tensors} tensors; peergrad: one flat [1, {D}] buffer")
    for name, ms in med.items():
        print(f"  {name:<28} {ms:9.2f} ms")
    pairs = (
        ("outer_sgd_step", "torch SGD"),
        ("outer_sgd_step(overwrite_d)", "torch SGD"),
        ("block step", "torch SGD"),
        ("block step", "torch DiLoCo outer step"),
    )
    for a, b in pairs:
        ratio = med[a] / med[b]
        print(f"ratio {a} / {b} = {ratio:.2f} (<= 1.0: {'OK' if ratio <= 1.0 else 'ABOVE'})")


if __name__ == "__main__":
    main()
