"""Distributed-engine step time: peergrad vs PyTorch DDP and Decent-DP (issue 15).

Under torchrun (one worker per process; gloo on the CPU, NCCL with ``--device cuda``), MLP
784-1024-1024-10 (ReLU), cross-entropy, SGD with momentum 0.9 and lr 0.01 for every contender,
per-worker batch B (default 32). All contenders are timed in the same run, interleaved in
round-robin blocks of steps whose order rotates from block to block, so that drift on a shared
machine hits all of them alike; the whole interleaved measurement is repeated ``--repeats`` times
(default 3) and every figure is reported per repeat and as the median over the repeats.

Contenders:

- ``ddp``: ``DistributedDataParallel(model)`` + ``torch.optim.SGD``: zero_grad, forward,
  backward (bucketed gradient all-reduce overlapping the backward), step;
- ``allreduce``: peergrad ``AllReduceSGD`` driven by hand: parameters bound to a flat
  ``x [1, D]`` and their gradients to a flat ``g [1, D]`` (``bind_flat``); ``comm.begin_step``,
  zero g, forward, backward, ``algorithm.step`` (one all-reduce of g, then the momentum update);
- ``optimizer allreduce``: the same method through the public API in a plain loop:
  ``opt = DistributedOptimizer(model.parameters(), "allreduce", comm, lr=..., momentum=...)``;
  ``opt.zero_grad(); loss_fn(model(xb), yb).backward(); opt.step()``;
- ``dpsgd ring`` / ``dpsgd one-peer``: peergrad ``DPSGD`` (CTA form) driven by hand on the ring
  and on the one-peer exponential schedule: as ``allreduce``, but ``pre_gradient`` posts the
  gossip of x before the forward/backward so that it overlaps the gradient, and
  ``step(..., pending=...)`` waits for it;
- ``optimizer dpsgd one-peer``: ``DistributedOptimizer(model.parameters(), "dpsgd", comm, ...)``
  on ``make_topology("one-peer-exponential", n)`` in the same plain loop as above (only the
  constructor, ``zero_grad`` and ``step`` are used, so whatever the optimizer does inside
  ``step`` is what is measured);
- ``decent-dp one-peer``: Decent-DP's ``decent_dp.ddp.DecentralizedDataParallel(model,
  optim_fn=lambda named: torch.optim.SGD([p for _, p in named], lr=..., momentum=...),
  topology="one-peer-exp")`` in its own loop: ``loss_fn(wrapper(xb), yb).backward()`` and nothing
  else. Its backward hooks do the work: per bucket (the model is one 7.5 MB bucket under its
  25 MB default) wait for the previous step's gossip (a 2-rank all-reduce on the pair's process
  group, pairs ``(j, j + 2^(k mod log2 n))``, weight 1/2), replace the parameters by the pair
  average, take the local SGD step, and post the next gossip, which then overlaps the next
  forward/backward. It is D-PSGD in the same CTA form as peergrad's (``x <- W x - lr m``, m the
  heavy-ball buffer of the gradient at x). Step 1 only traces the parameter order; the second
  forward builds the buckets and applies step 1's update (hence ``--warmup >= 2``). It needs
  ``n`` a power of two, and moves the model to CUDA whenever CUDA is available (so it is skipped
  for ``--device cpu`` on a machine with a visible GPU). Decent-DP is not a dependency of
  peergrad; install it for this benchmark only: ``pip install decent-dp`` (it pulls ``loguru``).
  When it is not importable the contender is skipped with a one-line note and the rest runs;
- ``floor (no comm)``: the same forward/backward/momentum update with no communication at all (a
  reference row: no method that computes one gradient per worker per step can be faster).

Communication probes (timed in the same interleaved blocks, so under the same load): each one
does, per step, only the communication of the contenders it stands for, on a ``[D]`` float32
buffer (``D = 1,863,690``):

- ``comm: all-reduce`` (for ``ddp``): ``dist.all_reduce`` over all ranks, then ``div_(n)``;
- ``comm: peergrad mean`` (for ``allreduce`` and ``optimizer allreduce``): peergrad's
  ``DistributedCommunicator.mean`` (heartbeat ``begin_step``, copy, all-reduce, division);
- ``comm: gossip ring`` / ``comm: gossip one-peer`` (for the peergrad ``dpsgd`` rows):
  ``begin_step`` and ``DistributedCommunicator.mix(x, W(k))`` on the same schedule (batched
  point-to-point ``batch_isend_irecv`` to/from the neighbours of W(k), then the weighted sum);
- ``comm: pair all-reduce`` (for ``decent-dp one-peer``): what Decent-DP does per step, on
  process groups of its own built the same way: copy the parameters into the message buffer
  (``D`` rounded up to a multiple of 32), scale by 1/2, all-reduce on the pair's 2-rank group,
  combine into the parameters.

Fraction of communication hidden behind computation, per contender (median step times over the
repeats)::

    exposed = step_time(contender) - step_time(floor)       # what communicating added
    alone   = step_time(probe of that contender)              # the communication by itself
    hidden  = clamp(1 - exposed / alone, 0, 1)

``hidden = 1``: the step is as fast as with no communication at all; ``hidden = 0``: the step
costs at least the whole communication on top of the computation (no overlap, or overlap that
slows the computation by as much as it saves). Caveats: (1) ``exposed`` also contains whatever
else the contender does beyond the floor (DDP's bucket copies, Python hooks, the optimizer
wrapper's bookkeeping), which is counted as unhidden communication; (2) the probe is not the
contender's exact traffic (DDP sends two buckets, not one message; the probes exercise the same
primitive on the same volume); (3) on a machine whose cores are fewer than the busy threads (4
processes on 2 cores, each with gloo's threads), sending through loopback TCP costs CPU time, so
communication that runs "in the background" still takes cycles from the forward/backward and
cannot be hidden in full whatever the method does: ``hidden`` then measures how well the method
avoids waiting, not how well the network is used, and ``CPU ms/step`` shows the cost; (4) both
terms are differences or medians of noisy times: on a shared machine small fractions are within
noise.

Each block is preceded by ``--lead-in`` (default 1) untimed steps of the same contender, so that
the timed steps are in steady state: a pipelined method (Decent-DP's gossip of step k completes
during step k + 1) left its last message in flight when its previous block ended, and its
first step would otherwise wait for nothing (too fast) while the contender running next would
absorb that traffic (too slow).

Inputs are synthetic: 784-dim standard-normal vectors, labelled by the argmax of a fixed random
linear map (a learnable teacher); each rank draws its own minibatches from a generator seeded
with its rank. Every contender starts from the same seeded weights and sees the same sequence of
minibatches, so the parameters of ``allreduce`` and of ``optimizer allreduce`` must equal DDP's,
and those of ``optimizer dpsgd one-peer`` must equal ``dpsgd one-peer``'s (checked to 1e-4
relative, ``max|x - x_ref| / max|x_ref|``, worst rank); a mismatch or a non-finite parameter
exits with status 1 (a missed speed target does not). The check compares the parameters after
``--check-step`` steps (default 60, as many steps as the script ran before ``--repeats``; a copy
is taken, untimed, when each contender reaches that step), not after the whole run: DDP divides
the gradient by n before its bucketed all-reduce and peergrad sums one flat buffer then divides,
so the two differ in the last bits (about 1e-7 relative), and over a long enough run such a
difference eventually flips a ReLU on some sample, after which the trajectories drift apart
chaotically (seed 0, 4 ranks: 2e-7 up to step 120, 3e-4 at step 130 and growing). The difference
after the whole run is printed too, for information.

Step time: each rank times every step on its own (no barrier inside the timed loop); the step
time of the synchronous system is the maximum over ranks of that step's time, and the tables
show the median of it over the timed steps of a repeat, and the median over the repeats. Bytes
per worker per step are peergrad's ``comm.bytes_sent`` (ring all-reduce: ``2 (n - 1) / n * 4 D``;
gossip: out-degree * ``4 D``), for DDP the ring all-reduce volume ``2 (n - 1) / n * 4 D``, and for
Decent-DP that of a 2-rank ring all-reduce, ``4 D`` (D rounded up to a multiple of 32). A second
table splits each step into phases (medians over steps and repeats, mean over ranks): ``pre``
(begin_step + zeroing the gradient + posting the gossip), ``forward``, ``backward`` (DDP:
includes its overlapped all-reduce; Decent-DP: includes its waits, updates and posts),
``comm`` (time inside the communicator during ``algorithm.step``: ``comm.mean``, i.e. copy +
all-reduce + division, or the gossip's ``wait``, i.e. waiting for the messages + the weighted
sum) and ``update`` (the rest of ``algorithm.step`` / ``optimizer.step``); ``-`` where a phase
cannot be told apart from outside (the ``optimizer`` rows' comm is inside ``update``, which
is the whole ``opt.step()``). On CUDA the phases are host-side times (only the end of a step
synchronises the device). ``CPU ms/step`` is the process CPU time of all threads (backend threads
included), summed over the ranks.

Targets (acceptance, issue 15; ratios of the medians over >= 3 repeats): ``optimizer dpsgd
one-peer`` <= 1.0x ``decent-dp one-peer``; ``optimizer allreduce`` <= 1.0x ``ddp``; ``allreduce``
<= 1.0x ``ddp``. Each is printed with its per-repeat ratios and PASS or MISS.

Usage::

    pip install decent-dp        # optional: the Decent-DP contender (benchmark only)
    torchrun --standalone --nproc-per-node 4 benchmarks/distributed.py \
        [--steps 50] [--warmup 10] [--block 5] [--lead-in 1] [--repeats 3] [--check-step 60] \
        [--device cpu|cuda] [--batch-size 32] [--threads N] [--seed 0] [--hooks]

``--hooks`` adds ``optimizer allreduce +hooks`` and ``optimizer dpsgd one-peer +hooks``: the
public optimizer with ``overlap=True``, i.e. buckets stepped on a background thread from the
gradient hooks, which ``overlap=None`` turns on only on accelerators.

``--steps`` timed steps per contender per repeat. torchrun sets ``OMP_NUM_THREADS=1`` by
default; with 4 processes on a 2-core machine one thread per process is the sane setting
(``--threads`` overrides it with ``torch.set_num_threads``).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from _timing import rank_device
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from peergrad.algorithms import DPSGD, Algorithm, AllReduceSGD
from peergrad.comm import distributed as pgdist
from peergrad.models import MLP
from peergrad.optim import DistributedOptimizer
from peergrad.topology import make_topology
from peergrad.train.params import FlatParams, bind_flat

LR, MOMENTUM = 0.01, 0.9
HIDDEN = (1024, 1024)
IN_FEATURES, CLASSES = 784, 10
PHASES = ("pre", "forward", "backward", "comm", "update")
NAN_PHASES = [math.nan] * len(PHASES)
ONE_PEER = "one-peer-exponential"  # peergrad's name of the one-peer exponential schedule
DECENT_DP = "decent-dp one-peer"
FLOOR = "floor (no comm)"
#: (contender, reference, bound): median step time of contender / reference <= bound.
TARGETS = (
    ("optimizer dpsgd one-peer", DECENT_DP, 1.0),
    ("optimizer allreduce", "ddp", 1.0),
    ("allreduce", "ddp", 1.0),
)
#: (contender, reference): parameters must be equal after the run (relative 1e-4).
SAME_PARAMS = (
    ("allreduce", "ddp"),
    ("optimizer allreduce", "ddp"),
    ("optimizer dpsgd one-peer", "dpsgd one-peer"),
)
#: Contender -> the probe that times its communication alone.
PROBE_OF = {
    "ddp": "comm: all-reduce",
    "allreduce": "comm: peergrad mean",
    "optimizer allreduce": "comm: peergrad mean",
    "dpsgd ring": "comm: gossip ring",
    "dpsgd one-peer": "comm: gossip one-peer",
    "optimizer dpsgd one-peer": "comm: gossip one-peer",
    "optimizer allreduce +hooks": "comm: peergrad mean",
    "optimizer dpsgd one-peer +hooks": "comm: gossip one-peer",
    DECENT_DP: "comm: pair all-reduce",
}
INSTALL_HINT = "pip install decent-dp"


# ---------------------------------------------------------------------- communicator timing proxy
class _TimedPending:
    """Wraps a ``PendingMix``; its whole ``wait`` (messages + weighted sum) counts as comm.

    The wait for the messages cannot be timed apart from the weighted sum from outside:
    waiting twice on a gloo send/receive blocks for a second message, and the work handles
    do not report completion without a wait.
    """

    def __init__(self, pending: Any, clock: CommTimer) -> None:
        self._pending, self._clock = pending, clock

    def wait(self, out: Tensor | None = None) -> Tensor:
        t0 = time.perf_counter()
        result = self._pending.wait(out)
        self._clock.comm += time.perf_counter() - t0
        return result


class TimedComm:
    """Delegates to a communicator, adding the time spent in communication to ``clock.comm``."""

    def __init__(self, comm: pgdist.DistributedCommunicator, clock: CommTimer) -> None:
        self._comm, self._clock = comm, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._comm, name)

    def mean(self, x: Tensor, **kwargs: Any) -> Tensor:
        t0 = time.perf_counter()
        out = self._comm.mean(x, **kwargs)
        self._clock.comm += time.perf_counter() - t0
        return out

    def mix_start(self, x: Tensor, W: Any, **kwargs: Any) -> _TimedPending:
        return _TimedPending(self._comm.mix_start(x, W, **kwargs), self._clock)

    def mix(self, x: Tensor, W: Any, *, out: Tensor | None = None, **kwargs: Any) -> Tensor:
        return self.mix_start(x, W, **kwargs).wait(out)


@dataclass
class CommTimer:
    comm: float = 0.0  # seconds spent inside the communicator during the current step


# ---------------------------------------------------------------------- contenders
@dataclass
class Contender:
    """A training contender, or (``params is None``) a communication probe."""

    name: str
    run_step: Callable[[int], None]  # step index (selects the minibatch)
    bytes_per_step: Callable[[], float]
    params: Callable[[], Tensor] | None  # flat parameters [D]; None for a probe
    step_times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)  # process CPU time, all threads
    phase_times: list[list[float]] = field(default_factory=list)  # one row per step run
    steps_done: int = 0
    snapshot: Tensor | None = None  # flat parameters after --check-step steps

    @property
    def is_probe(self) -> bool:
        return self.params is None


class Clock:
    """Phase timestamps. On CUDA only :meth:`end` synchronises the device: a synchronisation
    between phases would also wait for a gossip in flight on NCCL's stream and serialise the
    very overlap being measured, so the CUDA phases are host-side times."""

    def __init__(self, device: torch.device) -> None:
        self.device = device if device.type == "cuda" else None

    def phase(self) -> float:
        return time.perf_counter()

    def end(self) -> float:
        if self.device is not None:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def flat_params(module: nn.Module) -> Callable[[], Tensor]:
    return lambda: torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def make_ddp(
    model: nn.Module, batches: list[tuple[Tensor, Tensor]], device: torch.device, n: int
) -> Contender:
    module = copy.deepcopy(model)
    ids = [device.index] if device.type == "cuda" else None
    ddp = DistributedDataParallel(module, device_ids=ids)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=MOMENTUM)
    clock = Clock(device)
    dim = sum(p.numel() for p in module.parameters())
    c = Contender(
        "ddp", lambda k: None, lambda: 2.0 * (n - 1) / n * dim * 4, params=flat_params(module)
    )
    c.run_step = plain_loop_step(c, ddp, opt, batches, clock, comm_phase=0.0)
    return c


def plain_loop_step(
    c: Contender,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batches: list[tuple[Tensor, Tensor]],
    clock: Clock,
    comm_phase: float,
    after: Callable[[], None] | None = None,
) -> Callable[[int], None]:
    """The usual ``zero_grad(); loss.backward(); step()`` step, timed by phase (``comm_phase``
    goes in the comm column: 0 for DDP, whose all-reduce is inside backward; NaN when unknown)."""

    def run_step(k: int) -> None:
        xb, yb = batches[k]
        t0 = clock.phase()
        opt.zero_grad()
        t1 = clock.phase()
        loss = F.cross_entropy(model(xb), yb)
        t2 = clock.phase()
        loss.backward()
        t3 = clock.phase()
        opt.step()
        t4 = clock.end()
        if after is not None:
            after()
        c.phase_times.append([t1 - t0, t2 - t1, t3 - t2, comm_phase, t4 - t3])

    return run_step


def make_peergrad(
    name: str,
    algorithm: Algorithm | None,
    topology: str,
    model: nn.Module,
    batches: list[tuple[Tensor, Tensor]],
    device: torch.device,
    n: int,
) -> Contender:
    """A peergrad contender driven by hand (``algorithm=None``: the compute floor, no comm)."""
    module = copy.deepcopy(model)
    layout = FlatParams.of(module)
    x = layout.flatten(module).to(device).reshape(1, -1).clone()
    g = torch.zeros_like(x)
    bind_flat(module, layout, x[0], g[0])
    raw = pgdist.DistributedCommunicator(make_topology(topology, n))
    comm_clock = CommTimer()
    comm = TimedComm(raw, comm_clock)
    state: list[Any] = [None]
    if algorithm is not None:
        algorithm.check_topology(comm)
        state[0] = algorithm.init(x, comm)
    buf = torch.zeros_like(x)
    clock = Clock(device)
    step_no = [0]

    def bytes_per_step() -> float:
        return float(raw.bytes_sent[0]) / max(step_no[0], 1)

    c = Contender(name, lambda k: None, bytes_per_step, params=flat_params(module))

    def run_step(k: int) -> None:
        xb, yb = batches[k]
        comm_clock.comm = 0.0
        t0 = clock.phase()
        step_no[0] += 1
        if algorithm is not None:
            raw.begin_step(step_no[0])
        g.zero_()
        pending = algorithm.pre_gradient(x, state[0], comm) if algorithm is not None else None
        t1 = clock.phase()
        loss = F.cross_entropy(module(xb), yb)
        t2 = clock.phase()
        loss.backward()
        t3 = clock.phase()
        if algorithm is not None:
            state[0] = algorithm.step(x, g, state[0], comm, pending=pending)
        else:  # same local math as AllReduceSGD without the all-reduce
            torch.add(g, buf, alpha=MOMENTUM, out=buf)
            x.sub_(buf, alpha=LR)
        t4 = clock.end()
        comm_s = comm_clock.comm
        c.phase_times.append([t1 - t0, t2 - t1, t3 - t2, comm_s, t4 - t3 - comm_s])

    c.run_step = run_step
    return c


def make_optimizer(
    name: str,
    algorithm: str,
    topology: str,
    model: nn.Module,
    batches: list[tuple[Tensor, Tensor]],
    device: torch.device,
    n: int,
    overlap: bool | None = None,
) -> Contender:
    """The public ``DistributedOptimizer`` in a plain loop (constructor, zero_grad, step only)."""
    module = copy.deepcopy(model)
    comm = pgdist.DistributedCommunicator(make_topology(topology, n))
    opt = DistributedOptimizer(
        module.parameters(), algorithm, comm, lr=LR, momentum=MOMENTUM, overlap=overlap
    )
    clock = Clock(device)
    step_no = [0]

    def bytes_per_step() -> float:
        return float(comm.bytes_sent[0]) / max(step_no[0], 1)

    c = Contender(name, lambda k: None, bytes_per_step, params=flat_params(module))

    def count() -> None:
        step_no[0] += 1

    c.run_step = plain_loop_step(c, module, opt, batches, clock, math.nan, after=count)
    return c


def load_decent_dp(device: torch.device, n: int) -> tuple[Any, str]:
    """``(DecentralizedDataParallel, version)``, or ``(None, why it is skipped)``."""
    try:
        from decent_dp.ddp import DecentralizedDataParallel
    except ImportError as exc:
        return None, f"decent_dp is not importable ({exc}); `{INSTALL_HINT}` to include it"
    if n < 2 or n & (n - 1):
        return None, f"Decent-DP's one-peer-exp topology needs n a power of two >= 2, got {n}"
    if device.type == "cpu" and torch.cuda.is_available():
        return None, (
            "Decent-DP moves the model to CUDA whenever CUDA is available; run a CPU comparison "
            "with CUDA_VISIBLE_DEVICES= (or use --device cuda)"
        )
    from importlib.metadata import PackageNotFoundError, version

    from loguru import logger  # Decent-DP's logger; a dependency of decent-dp

    logger.disable("decent_dp")  # its debug lines would interleave with the tables
    try:
        ver = version("decent-dp")
    except PackageNotFoundError:
        ver = "?"
    return DecentralizedDataParallel, ver


def decent_dp_numel(model: nn.Module) -> int:
    """Length of Decent-DP's message for ``model`` (one bucket: every parameter rounded up to a
    multiple of 32 values)."""
    return sum(32 * math.ceil(p.numel() / 32) for p in model.parameters())


def make_decent_dp(
    wrapper_cls: Any, model: nn.Module, batches: list[tuple[Tensor, Tensor]], device: torch.device
) -> Contender:
    """Decent-DP, one-peer exponential: forward through the wrapper and backward, nothing else
    (its hooks wait for the last gossip, mix, take the local SGD step and post the next one)."""
    module = copy.deepcopy(model)
    wrapper = wrapper_cls(
        module,
        optim_fn=lambda named: torch.optim.SGD([p for _, p in named], lr=LR, momentum=MOMENTUM),
        topology="one-peer-exp",
    )
    wrapper.train()  # it counts steps (and picks the peer) only in training mode
    clock = Clock(device)
    padded = decent_dp_numel(module)
    c = Contender(DECENT_DP, lambda k: None, lambda: 4.0 * padded, params=flat_params(module))

    def run_step(k: int) -> None:
        xb, yb = batches[k]
        t0 = clock.phase()
        loss = F.cross_entropy(wrapper(xb), yb)
        t1 = clock.phase()
        loss.backward()
        t2 = clock.end()
        c.phase_times.append([0.0, t1 - t0, t2 - t1, math.nan, math.nan])

    c.run_step = run_step
    return c


# ---------------------------------------------------------------------- communication probes
def make_probe(
    name: str, body: Callable[[int], None], bytes_per_step: float, device: torch.device
) -> Contender:
    clock = Clock(device)
    c = Contender(name, lambda k: None, lambda: bytes_per_step, params=None)

    def run_step(k: int) -> None:
        body(k)
        clock.end()
        c.phase_times.append(NAN_PHASES)

    c.run_step = run_step
    return c


def make_probes(model: nn.Module, device: torch.device, n: int, decent_dp: bool) -> list[Contender]:
    """One probe per kind of communication; see the module docstring."""
    dim = sum(p.numel() for p in model.parameters())
    probes: list[Contender] = []
    flat = torch.zeros(dim, device=device)

    def world_all_reduce(k: int) -> None:
        dist.all_reduce(flat)
        flat.div_(n)

    probes.append(
        make_probe("comm: all-reduce", world_all_reduce, 2.0 * (n - 1) / n * dim * 4, device)
    )

    def peergrad_probe(name: str, topology: str, gossip: bool) -> Contender:
        comm = pgdist.DistributedCommunicator(make_topology(topology, n))
        x = torch.zeros(1, dim, device=device)
        out = torch.zeros_like(x)
        calls = [0]

        def body(k: int) -> None:
            calls[0] += 1
            comm.begin_step(calls[0])
            if gossip:
                comm.mix(x, comm.topology.at(calls[0] - 1), out=out)
            else:
                comm.mean(x)

        probe = make_probe(name, body, 0.0, device)
        probe.bytes_per_step = lambda: float(comm.bytes_sent[0]) / max(calls[0], 1)
        return probe

    probes.append(peergrad_probe("comm: peergrad mean", "ring", gossip=False))
    probes.append(peergrad_probe("comm: gossip ring", "ring", gossip=True))
    probes.append(peergrad_probe("comm: gossip one-peer", ONE_PEER, gossip=True))

    if decent_dp:  # Decent-DP's pairs: round i pairs j with j + 2^i (every rank builds every group)
        rank = dist.get_rank()
        mine: list[Any] = []
        for i in range(round(math.log2(n))):
            used = [False] * n
            for j in range(n):
                if not used[j]:
                    pair = sorted((j, (j + 2**i) % n))
                    used[pair[0]] = used[pair[1]] = True
                    group = dist.new_group(pair)
                    if rank in pair:
                        mine.append(group)
        padded = decent_dp_numel(model)
        message = torch.zeros(padded, device=device)
        params = torch.zeros(dim, device=device)

        def pair_all_reduce(k: int) -> None:
            message[:dim].copy_(params)
            message.mul_(0.5)
            dist.all_reduce(message, group=mine[k % len(mine)])
            params.mul_(0.0).add_(message[:dim])

        probes.append(make_probe("comm: pair all-reduce", pair_all_reduce, 4.0 * padded, device))
    return probes


# ---------------------------------------------------------------------- data
def make_batches(
    steps: int, batch: int, rank: int, seed: int, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """``steps`` synthetic minibatches of this rank: Gaussian inputs, teacher labels."""
    teacher = torch.randn(IN_FEATURES, CLASSES, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1 + rank)
    xs = torch.randn(steps, batch, IN_FEATURES, generator=gen)
    ys = (xs @ teacher).argmax(dim=-1)
    return [(xs[k].to(device), ys[k].to(device)) for k in range(steps)]


# ---------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50, help="timed steps per contender per repeat")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per contender first")
    p.add_argument("--block", type=int, default=5, help="timed steps per round-robin block")
    p.add_argument(
        "--lead-in", type=int, default=1, help="untimed steps before every block (steady state)"
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved measurements (>= 3)")
    p.add_argument(
        "--check-step",
        type=int,
        default=60,
        help="compare the parameters of equal methods after this many steps (capped at the run)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="per-worker batch size")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--hooks",
        action="store_true",
        help="add the public optimizer with overlap=True (gradient hooks on, also on the CPU)",
    )
    args = p.parse_args()
    for key in ("steps", "block", "batch_size", "repeats", "check_step"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 2:
        p.error(
            "--warmup must be >= 2 (Decent-DP traces the parameter order in step 1 and builds "
            "its buckets, applying step 1's update, in step 2)"
        )
    if args.lead_in < 0:
        p.error("--lead-in must be >= 0")
    return args


def main() -> None:
    args = parse_args()
    if not pgdist.launched_by_torchrun():
        raise SystemExit(
            "start this benchmark with torchrun, e.g. `torchrun --standalone --nproc-per-node 4 "
            "benchmarks/distributed.py`"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    device = rank_device(args.device)
    pgdist.init_process_group(device=device)
    rank, n = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(args.seed)
    model = MLP((IN_FEATURES,), CLASSES, hidden=HIDDEN).to(device)
    dim = sum(p.numel() for p in model.parameters())
    blocks = math.ceil(args.steps / args.block)  # per repeat
    total_steps = args.warmup + args.repeats * (args.steps + blocks * args.lead_in)
    batches = make_batches(total_steps, args.batch_size, rank, args.seed, device)
    check_step = min(args.check_step, total_steps)

    wrapper_cls, decent_dp_info = load_decent_dp(device, n)
    if rank == 0 and wrapper_cls is None:
        print(f"note: {DECENT_DP} skipped: {decent_dp_info}", flush=True)

    contenders = [
        make_ddp(model, batches, device, n),
        make_peergrad(
            "allreduce", AllReduceSGD(lr=LR, momentum=MOMENTUM), "ring", model, batches, device, n
        ),
        make_optimizer("optimizer allreduce", "allreduce", "ring", model, batches, device, n),
        make_peergrad(
            "dpsgd ring", DPSGD(lr=LR, momentum=MOMENTUM), "ring", model, batches, device, n
        ),
        make_peergrad(
            "dpsgd one-peer", DPSGD(lr=LR, momentum=MOMENTUM), ONE_PEER, model, batches, device, n
        ),
        make_optimizer("optimizer dpsgd one-peer", "dpsgd", ONE_PEER, model, batches, device, n),
    ]
    if args.hooks:  # the optimizer with its gradient hooks forced on (default: accelerators only)
        contenders += [
            make_optimizer(
                "optimizer allreduce +hooks", "allreduce", "ring", model, batches, device, n, True
            ),
            make_optimizer(
                "optimizer dpsgd one-peer +hooks",
                "dpsgd",
                ONE_PEER,
                model,
                batches,
                device,
                n,
                True,
            ),
        ]
    if wrapper_cls is not None:
        contenders.append(make_decent_dp(wrapper_cls, model, batches, device))
    contenders.append(make_peergrad(FLOOR, None, "ring", model, batches, device, n))
    trainers = list(contenders)
    contenders += make_probes(model, device, n, decent_dp=wrapper_cls is not None)
    names = [c.name for c in contenders]

    def run_block(c: Contender, lead_in: int, count: int, timed: bool) -> None:
        dist.barrier()  # blocks start together; nothing inside a block waits on a barrier
        for i in range(lead_in + count):
            c0, t0 = time.process_time(), time.perf_counter()
            c.run_step(c.steps_done)
            dt = time.perf_counter() - t0  # run_step synchronises the device at its end
            dc = time.process_time() - c0
            c.steps_done += 1
            if c.steps_done == check_step and c.params is not None:
                c.snapshot = c.params().clone()  # outside the timed region
            if timed and i >= lead_in:
                c.step_times.append(dt)
                c.cpu_times.append(dc)
            else:
                c.phase_times.pop()

    # Warm-up (round-robin as well), then the repeats of timed blocks; the order rotates every
    # round, and keeps rotating across repeats.
    order = list(range(len(contenders)))
    for start in range(0, args.warmup, args.block):
        for i in order:
            run_block(contenders[i], 0, min(args.block, args.warmup - start), timed=False)
        order = order[1:] + order[:1]
    for _ in range(args.repeats):
        for start in range(0, args.steps, args.block):
            for i in order:
                run_block(contenders[i], args.lead_in, min(args.block, args.steps - start), True)
            order = order[1:] + order[:1]

    def reduce(values: Any, op: dist.ReduceOp) -> Tensor:
        t = torch.as_tensor(values, dtype=torch.float64).to(device)  # NCCL: device tensors only
        dist.all_reduce(t, op=op)
        return t.cpu()

    # Synchronous step time: max over ranks of every step's time; phases: mean over ranks.
    shape = (len(contenders), args.repeats, args.steps)
    steps_t = reduce([c.step_times for c in contenders], dist.ReduceOp.MAX).reshape(shape)
    cpu_t = reduce([c.cpu_times for c in contenders], dist.ReduceOp.SUM).reshape(shape)
    phases_t = reduce([c.phase_times for c in contenders], dist.ReduceOp.SUM) / n
    per_repeat = steps_t.median(dim=2).values  # [contenders, repeats]
    medians = per_repeat.median(dim=1).values  # [contenders]: median over the repeats
    cpu_medians = cpu_t.median(dim=2).values.median(dim=1).values  # summed over ranks
    phase_medians = phases_t.median(dim=1).values  # [contenders, phases], all timed steps

    # Correctness guards: the same method through another path gives the same parameters.
    def difference(pa: Tensor, pb: Tensor) -> tuple[float, float]:
        """(max|a - b|, max|a - b| / max|b|), worst rank."""
        pa, pb = pa.double(), pb.double()
        abs_diff = float(reduce((pa - pb).abs().max(), dist.ReduceOp.MAX))
        rel = float(reduce((pa - pb).abs().max() / pb.abs().max(), dist.ReduceOp.MAX))
        return abs_diff, rel

    checks = []
    for mine, ref in SAME_PARAMS:
        a, b = contenders[names.index(mine)], contenders[names.index(ref)]
        assert a.snapshot is not None and b.snapshot is not None
        assert a.params is not None and b.params is not None
        abs_diff, rel = difference(a.snapshot, b.snapshot)
        _, rel_end = difference(a.params(), b.params())
        checks.append((mine, ref, abs_diff, rel, rel <= 1e-4, rel_end))
    finite = all(bool(c.params().isfinite().all()) for c in trainers if c.params is not None)
    finite = bool(reduce(float(finite), dist.ReduceOp.MIN) == 1)
    same = all(ok for _, _, _, _, ok, _ in checks)

    if rank == 0:
        report(args, device, n, dim, total_steps, contenders, per_repeat, medians, cpu_medians)
        report_phases(trainers, phase_medians)
        report_hidden(trainers, names, medians)
        report_targets(names, per_repeat, medians, args.repeats, wrapper_cls, decent_dp_info)
        for mine, ref, abs_diff, rel, ok, rel_end in checks:
            print(
                f"check {mine} == {ref} after {check_step} steps: max|diff| = {abs_diff:.3g}, "
                f"relative {rel:.3g} (<= 1e-4: {'PASS' if ok else 'FAIL'}); after all "
                f"{total_steps} steps: relative {rel_end:.3g} (information)"
            )
        print(f"all parameters finite: {'yes' if finite else 'NO'}")
    pgdist.destroy_process_group()
    if not (same and finite):  # a wrong result is an error; a missed speed target is not
        raise SystemExit(1)


# ---------------------------------------------------------------------- reports (rank 0)
W = 26  # name column


def report(
    args: argparse.Namespace,
    device: torch.device,
    n: int,
    dim: int,
    total_steps: int,
    contenders: list[Contender],
    per_repeat: Tensor,
    medians: Tensor,
    cpu_medians: Tensor,
) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"device={device} world_size={n} threads/process={torch.get_num_threads()} "
        f"backend={dist.get_backend()} torch={torch.__version__} cores={cores}"
    )
    print(
        f"model=MLP 784-1024-1024-10 (D={dim:,}) batch/worker={args.batch_size} "
        f"data=synthetic gaussian+teacher labels optimizer=SGD(lr={LR}, momentum={MOMENTUM})"
    )
    print(
        f"repeats={args.repeats} x steps={args.steps} timed per contender, in blocks of "
        f"{args.block} (+{args.lead_in} untimed lead-in step per block), after {args.warmup} "
        f"warm-up steps; {total_steps} steps per contender in all"
    )
    print("step time = median over a repeat's steps of the max over ranks; median over repeats\n")
    base = float(medians[0])
    reps = " ".join(f"{f'r{r + 1} ms':>8}" for r in range(per_repeat.shape[1]))
    header = (
        f"{'contender':<{W}} {reps} {'median':>8} {'vs DDP':>7} {'MB sent/worker/step':>20} "
        f"{'CPU ms/step':>12}"
    )
    print(header)
    rows = zip(contenders, per_repeat.tolist(), medians.tolist(), cpu_medians.tolist(), strict=True)
    probes_started = False
    for c, rep, m, cpu in rows:
        if c.is_probe and not probes_started:
            probes_started = True
            print("communication alone (probes):")
        cells = " ".join(f"{1e3 * v:>8.2f}" for v in rep)
        sent = c.bytes_per_step() / 1e6
        print(
            f"{c.name:<{W}} {cells} {1e3 * m:>8.2f} {m / base:>7.2f} {sent:>20.2f} "
            f"{1e3 * cpu:>12.2f}"
        )
    print(
        f"(CPU ms/step: process CPU time of all threads, median over steps of the sum over "
        f"the {n} ranks)\n"
    )


def report_phases(trainers: list[Contender], phase_medians: Tensor) -> None:
    print("phases, ms (median over the timed steps of all repeats, mean over ranks; - : n/a)")
    print(f"{'contender':<{W}} " + " ".join(f"{p:>9}" for p in PHASES) + f" {'sum':>9}")
    for c, row in zip(trainers, phase_medians.tolist(), strict=False):
        cells = " ".join(f"{'-':>9}" if math.isnan(v) else f"{1e3 * v:>9.2f}" for v in row)
        total = sum(v for v in row if not math.isnan(v))
        print(f"{c.name:<{W}} {cells} {1e3 * total:>9.2f}")
    print()


def report_hidden(trainers: list[Contender], names: list[str], medians: Tensor) -> None:
    floor = float(medians[names.index(FLOOR)])
    print(
        "communication hidden behind computation: exposed = step - floor, alone = probe, "
        "hidden = clamp(1 - exposed / alone, 0, 1)"
    )
    print(f"{'contender':<{W}} {'probe':<22} {'alone ms':>9} {'exposed ms':>11} {'hidden':>7}")
    for c in trainers:
        probe = PROBE_OF.get(c.name)
        if probe is None or probe not in names:
            continue
        alone = float(medians[names.index(probe)])
        exposed = float(medians[names.index(c.name)]) - floor
        hidden = min(max(1.0 - exposed / alone, 0.0), 1.0) if alone > 0 else math.nan
        print(
            f"{c.name:<{W}} {probe:<22} {1e3 * alone:>9.2f} {1e3 * exposed:>11.2f} "
            f"{100 * hidden:>6.0f}%"
        )
    print(f"(floor = {FLOOR}: {1e3 * floor:.2f} ms/step)\n")


def report_targets(
    names: list[str],
    per_repeat: Tensor,
    medians: Tensor,
    repeats: int,
    wrapper_cls: Any,
    decent_dp_info: str,
) -> None:
    print(
        "targets (ratio of the medians over repeats; per-repeat ratios in brackets)"
        + ("" if repeats >= 3 else f" -- only {repeats} repeat(s), the acceptance asks for >= 3")
    )
    if wrapper_cls is not None:
        print(f"({DECENT_DP}: decent-dp {decent_dp_info})")
    for mine, ref, bound in TARGETS:
        label = f"{mine} / {ref}"
        if mine not in names or ref not in names:
            print(f"target {label} <= {bound:.1f}x: SKIPPED ({decent_dp_info})")
            continue
        i, j = names.index(mine), names.index(ref)
        ratio = float(medians[i] / medians[j])
        each = " ".join(f"{v:.2f}" for v in (per_repeat[i] / per_repeat[j]).tolist())
        verdict = "PASS" if ratio <= bound else "MISS"
        print(f"target {label} <= {bound:.1f}x: {ratio:.2f}x [{each}]  {verdict}")


if __name__ == "__main__":
    main()
