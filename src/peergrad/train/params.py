"""A model's parameters as one flat vector per worker, and vectorised per-worker calls.

The simulated engine keeps every worker's model in one buffer ``x: [n, D]``. ``FlatParams``
records the layout (names, shapes, offsets) of a module's parameters in that vector, and builds
functions that evaluate the module at a flat vector with ``torch.func.functional_call``; those
functions are vectorised over the worker axis with ``torch.vmap`` (never a Python loop over
workers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value


@dataclass(frozen=True)
class FlatParams:
    """Layout of ``module``'s parameters in a flat vector of length ``dim``."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]
    dim: int

    @classmethod
    def of(cls, module: nn.Module) -> FlatParams:
        buffers = [n for n, _ in module.named_buffers()]
        if buffers:
            raise ValueError(
                "peergrad's engines stack only parameters; the model has buffers "
                f"{buffers[:3]} (use GroupNorm or BatchNorm(track_running_stats=False))"
            )
        named = list(module.named_parameters())
        return cls(
            names=tuple(n for n, _ in named),
            shapes=tuple(p.shape for _, p in named),
            numels=tuple(p.numel() for _, p in named),
            dim=sum(p.numel() for _, p in named),
        )

    def flatten(self, module: nn.Module) -> Tensor:
        """The module's current parameters as one detached vector ``[dim]``."""
        params = dict(module.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten_rows(self, x: Tensor) -> dict[str, Tensor]:
        """Views of every worker's row of ``x`` (``[w, dim]``), shaped ``[w, *shape]``, by name."""
        w = x.shape[0]
        chunks = torch.split(x, self.numels, dim=1)
        return {n: c.view(w, *s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of ``flat`` (``[dim]``) shaped like the parameters, by name."""
        chunks = torch.split(flat, self.numels)
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}


def bind_flat(module: nn.Module, layout: FlatParams, x_row: Tensor, g_row: Tensor) -> None:
    """Make ``module``'s parameters views of ``x_row`` and their ``.grad`` views of ``g_row``.

    ``x_row`` and ``g_row`` are contiguous ``[D]`` vectors (one worker's row of ``[w, D]``
    buffers; ``x_row`` must already hold the parameter values). Afterwards ``loss.backward()``
    accumulates gradients straight into ``g_row`` (zero it first) and an in-place update of
    ``x_row`` is an update of the module: no flattening copies on the hot path. Used by the
    distributed engine (one worker per process) and :class:`peergrad.optim.DistributedOptimizer`.

    Raises ``ValueError`` when the module does not match ``layout`` or the rows are not ``[D]``.
    """
    if x_row.shape != (layout.dim,) or g_row.shape != (layout.dim,):
        raise ValueError(
            f"x_row and g_row must have shape ({layout.dim},), got {tuple(x_row.shape)} and "
            f"{tuple(g_row.shape)}"
        )
    params = dict(module.named_parameters())
    if tuple(params) != layout.names:
        raise ValueError("module parameters do not match the layout (names or order differ)")
    xs, gs = layout.unflatten(x_row), layout.unflatten(g_row)
    for name, p in params.items():
        if p.shape != xs[name].shape:
            raise ValueError(f"parameter {name}: shape {tuple(p.shape)} != {tuple(xs[name].shape)}")
        p.data = xs[name]
        p.grad = gs[name]


def make_bound_grad_fn(
    module: nn.Module, layout: FlatParams, x: Tensor
) -> Callable[..., tuple[Tensor, Tensor]]:
    """Per-worker gradients for a single local worker (``x`` is ``[1, D]``) with plain autograd.

    Same contract as :func:`make_worker_grad_fn` (``fn(x, xb [1, B, ...], yb [1, B], out)``),
    but the module's parameters are bound to ``x[0]`` and gradients land in ``out[0]`` directly,
    which avoids ``vmap``'s overhead when there is one worker per process.
    """
    bound: dict[str, Tensor | None] = {"g": None}

    def fn(xx: Tensor, xb: Tensor, yb: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if xx is not x:
            raise ValueError("make_bound_grad_fn: call with the x it was built for")
        if out is None:
            out = torch.empty_like(x)
        if bound["g"] is not out:
            bind_flat(module, layout, x[0], out[0])
            bound["g"] = out
        out.zero_()
        loss = cross_entropy(module(xb[0]), yb[0])
        loss.backward()
        return out, loss.detach().reshape(1)

    return fn


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits [B, C]`` against ``labels [B]``.

    Equal to ``F.cross_entropy`` (bit for bit in our tests) but built from ``log_softmax`` and
    ``gather``, whose ``vmap`` batching rules are faster on the CPU than ``nll_loss``'s.
    """
    return -torch.gather(torch.log_softmax(logits, dim=-1), -1, labels.unsqueeze(-1)).mean()


def make_worker_grad_fn(
    module: nn.Module, layout: FlatParams
) -> Callable[..., tuple[Tensor, Tensor]]:
    """``fn(x [w, D], xb [w, B, ...], yb [w, B], out=None) -> (g [w, D], loss [w])``.

    The per-worker mean cross-entropy and its gradient, in one vectorised call
    (``vmap(grad_and_value(loss))`` over the worker axis).

    The gradient is taken with respect to per-parameter views of ``x`` (not the flat row): the
    backward of ``split`` under ``vmap`` concatenates transposed pieces, which costs about as
    much as a whole matrix product on the CPU; one contiguous ``cat`` at the end is cheaper.
    """

    def loss(params: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        return cross_entropy(functional_call(module, params, (xb,)), yb)

    batched = torch.vmap(grad_and_value(loss))

    def fn(x: Tensor, xb: Tensor, yb: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        grads, losses = batched(layout.unflatten_rows(x), xb, yb)
        w = x.shape[0]
        pieces = [grads[name].reshape(w, -1) for name in layout.names]
        return torch.cat(pieces, dim=1, out=out) if out is not None else torch.cat(
            pieces, 1
        ), losses

    return fn


def make_worker_loss_fn(
    module: nn.Module, layout: FlatParams
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``fn(x [w, D], xb [w, B, ...], yb [w, B]) -> loss [w]`` (no gradient), for line searches."""

    def loss(flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        return cross_entropy(functional_call(module, layout.unflatten(flat), (xb,)), yb)

    return torch.vmap(loss)


def make_eval_fn(
    module: nn.Module, layout: FlatParams
) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``fn(x [m, D], xb [B, ...], yb [B]) -> (summed loss [m], correct count [m])``.

    Evaluates m models (rows of x) on one shared batch, vectorised over the models.
    """

    def stats(flat: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        out = functional_call(module, layout.unflatten(flat), (xb,))
        loss = F.cross_entropy(out, yb, reduction="sum")
        correct = (out.argmax(dim=-1) == yb).sum()
        return loss, correct

    return torch.vmap(stats, in_dims=(0, None, None))
