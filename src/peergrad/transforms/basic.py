"""Weight decay and heavy-ball / Nesterov momentum, in PyTorch's conventions."""

from __future__ import annotations

import torch
from torch import Tensor


def add_weight_decay(g: Tensor, x: Tensor, weight_decay: float) -> Tensor:
    """Return ``g + weight_decay * x`` (L2 regularisation folded into the gradient).

    Shapes ``[w, D]``. Returns ``g`` itself when ``weight_decay == 0``; otherwise a new tensor
    (``g`` is never modified, the caller may still need it).
    """
    return g if weight_decay == 0 else g.add(x, alpha=weight_decay)


def clip_rows(g: Tensor, max_norm: float) -> Tensor:
    """Clip each worker's row of ``g`` (``[w, D]``) in place to Euclidean norm ``max_norm``.

    The factor is ``torch.nn.utils.clip_grad_norm_``'s: ``min(1, max_norm / (||g_i|| + 1e-6))``.
    Returns ``g``.
    """
    norms = torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1)
    factor = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    return g.mul_(factor.reshape((-1,) + (1,) * (g.dim() - 1)))


def heavy_ball(buf: Tensor, g: Tensor, momentum: float, nesterov: bool) -> Tensor:
    """One momentum step as ``torch.optim.SGD`` does it (dampening 0); returns the direction.

    ``buf <- momentum * buf + g`` in place (start ``buf`` at zeros: the first step then gives
    ``buf = g`` exactly, as torch does); the direction is ``buf``, or ``g + momentum * buf`` with
    ``nesterov``. With ``momentum == 0`` the direction is ``g`` and ``buf`` is left alone.
    Shapes ``[w, D]``.
    """
    if momentum == 0:
        return g
    torch.add(g, buf, alpha=momentum, out=buf)  # one memory pass: buf = g + momentum * buf
    return g.add(buf, alpha=momentum) if nesterov else buf
