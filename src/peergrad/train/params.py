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

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of ``flat`` (``[dim]``) shaped like the parameters, by name."""
        chunks = torch.split(flat, self.numels)
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}


def make_worker_grad_fn(
    module: nn.Module, layout: FlatParams
) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``fn(x [w, D], xb [w, B, ...], yb [w, B]) -> (g [w, D], loss [w])``.

    The per-worker mean cross-entropy and its gradient, in one vectorised call
    (``vmap(grad_and_value(loss))`` over the worker axis).
    """

    def loss(flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        out = functional_call(module, layout.unflatten(flat), (xb,))
        return F.cross_entropy(out, yb)

    return torch.vmap(grad_and_value(loss))


def make_worker_loss_fn(
    module: nn.Module, layout: FlatParams
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``fn(x [w, D], xb [w, B, ...], yb [w, B]) -> loss [w]`` (no gradient), for line searches."""

    def loss(flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        out = functional_call(module, layout.unflatten(flat), (xb,))
        return F.cross_entropy(out, yb)

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
