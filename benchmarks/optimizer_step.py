"""Local update cost of Decentralized AMSGrad vs ``torch.optim.Adam(amsgrad=True, foreach=True)``.

Times, in one run and interleaved (A, B, A, B, ...), on the same number of parameters (default
10M, float32):

- ``peergrad local``: the element-wise math of one Decentralized AMSGrad iteration (spec
  decentralized.md §4.2 steps 2, 3, 6, 7, 8) on flat ``[1, D]`` buffers, calling the same
  transform functions the algorithm calls, with the gossip replaced by the identity (the
  received ``[x, u_tilde]`` is the sent one: two ``u_tilde`` buffers swap roles every step);
- ``torch Adam``: ``torch.optim.Adam(amsgrad=True, foreach=True).step()`` on the same number of
  parameters split into 18 tensors like a real model (two large "embedding" matrices, a stack of
  square layers, biases);
- ``peergrad step()``: for reference, the whole ``DecentralizedAMSGrad.step`` with an identity
  communicator: the local math plus packing x into the send buffer and copying the "received"
  buffer, i.e. the memory traffic that real gossip adds on top.

It prints the median milliseconds per step and the ratio ``peergrad local / torch Adam``
(target <= 1.5).

On a CPU shared with other jobs, every multi-threaded kernel can wait milliseconds for its
second thread, whatever its size; the ratio then counts kernel launches (a few on one flat
buffer vs a few per tensor for torch), not memory traffic. ``--threads 1`` measures the memory
traffic.

Usage: ``python benchmarks/optimizer_step.py [--device cuda] [--numel 10000000] [--repeats 15]
[--threads 1]``
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch
from _timing import timed
from torch import Tensor

from peergrad.algorithms.decentralized_adaptive import DecentralizedAMSGrad
from peergrad.comm.base import Workspace
from peergrad.topology import make_topology
from peergrad.transforms import (
    adaptive_denominator,
    adaptive_step,
    amsgrad_max,
    ema_first_moment,
    ema_second_moment,
)


def model_shapes(numel: int) -> list[tuple[int, ...]]:
    """18 parameter shapes summing to exactly ``numel``: norms/biases, 12 square layers, and two
    large "embedding" and "output" matrices (flattened) holding the rest."""
    width = 512
    shapes: list[tuple[int, ...]] = [(width,)] * 4 + [(width, width)] * 12
    rest = numel - 4 * width - 12 * width * width
    if rest < 2:
        raise ValueError(f"--numel must be at least {numel - rest + 2}")
    return [*shapes, (rest // 2,), (rest - rest // 2,)]


class IdentityPending:
    def __init__(self, x: Tensor) -> None:
        self.x = x

    def wait(self, out: Tensor | None = None) -> Tensor:
        return self.x.clone() if out is None else out.copy_(self.x)


class IdentityComm:
    """One worker, W = [[1]]: ``mix`` copies its input (no accounting)."""

    def __init__(self) -> None:
        self.topology = make_topology("ring", 1)
        self.n_workers = 1
        self.workspace = Workspace()

    def mix_start(self, x: Tensor, W: Any, **_: Any) -> IdentityPending:
        return IdentityPending(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--numel", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device, dtype, D = torch.device(args.device), getattr(torch, args.dtype), args.numel
    gen = torch.Generator(device=device).manual_seed(0)
    lr, b1, b2, eps = 1e-3, 0.9, 0.99, 1e-8

    # ---- peergrad: flat [1, D] buffers, the algorithm's transforms, identity gossip
    x = torch.randn(1, D, generator=gen, device=device, dtype=dtype)
    g = torch.randn(1, D, generator=gen, device=device, dtype=dtype)
    m, v_raw = torch.zeros_like(x), torch.zeros_like(x)
    v = torch.full_like(x, eps)
    u = [torch.full_like(x, eps), torch.full_like(x, eps)]  # received u_t / next u_tilde

    def peergrad_local() -> None:
        u_t, u_next = u  # identity gossip: what was sent is what is received
        ema_first_moment(m, g, b1)  # step 2
        torch.sub(u_t, v, out=u_next)  # step 8: u_t - v_(t-1)
        amsgrad_max(v, ema_second_moment(v_raw, g, b2))  # step 3
        u_next.add_(v)  # step 8: + v_t
        denom = adaptive_denominator(u_t, eps, "floor", out=u_t)  # step 6
        adaptive_step(x, m, denom, lr)  # step 7 (x_half = x)
        u.reverse()

    # ---- the whole algorithm step with an identity communicator
    alg = DecentralizedAMSGrad(lr=lr, b1=b1, b2=b2, eps=eps, init_mode="paper")
    comm = IdentityComm()
    x_alg = x.clone()
    box = [alg.init(x_alg, comm)]  # type: ignore[arg-type]

    def peergrad_step() -> None:
        box[0] = alg.step(x_alg, g, box[0], comm)  # type: ignore[arg-type]

    # ---- torch.optim.Adam(amsgrad=True, foreach=True) on ~20 tensors of the same total size
    params = []
    for shape in model_shapes(D):
        p = torch.randn(shape, generator=gen, device=device, dtype=dtype, requires_grad=True)
        p.grad = torch.randn(shape, generator=gen, device=device, dtype=dtype)
        params.append(p)
    assert sum(p.numel() for p in params) == D
    opt = torch.optim.Adam(params, lr=lr, betas=(b1, b2), eps=eps, amsgrad=True, foreach=True)

    cases: dict[str, Callable[[], Any]] = {
        "peergrad local": peergrad_local,
        "torch Adam": opt.step,
        "peergrad step()": peergrad_step,
    }
    for fn in cases.values():
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):  # interleaved, so that load changes hit every case alike
        for name, fn in cases.items():
            times[name].append(timed(fn, device))
    med = {k: statistics.median(t) * 1e3 for k, t in times.items()}

    print(
        f"device={device} dtype={args.dtype} numel={D:,} threads={torch.get_num_threads()} "
        f"repeats={args.repeats} (median ms per step)"
    )
    print(f"torch Adam: {len(params)} tensors; peergrad: one flat [1, {D}] buffer")
    for name, ms in med.items():
        print(f"  {name:<16} {ms:9.2f} ms   ({ms / med['torch Adam']:.2f}x torch Adam)")
    ratio = med["peergrad local"] / med["torch Adam"]
    verdict = "OK" if ratio <= 1.5 else "ABOVE TARGET"
    print(f"ratio peergrad local / torch Adam(amsgrad, foreach) = {ratio:.2f} (<= 1.5: {verdict})")


if __name__ == "__main__":
    main()
