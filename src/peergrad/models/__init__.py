"""Classifiers and a language model for the data sets of :mod:`peergrad.data`, built by name.

Every classifier maps float inputs ``[B, *input_shape]`` to logits ``[B, num_classes]``; the
``transformer`` language model maps int64 token windows ``[B, L]`` to next-token logits
``[B, L, V]`` (``num_classes`` is the vocabulary size V). Every model has **no buffers**: a
worker's model is a pure function of its parameters, so the simulated engine can stack the
parameters of all workers and evaluate them in one ``torch.func.vmap`` call, and the gossip
of parameters is all the communication a model needs. For how normalisation layers behave
across workers see :mod:`peergrad.models.resnet`.

Initialisation draws from PyTorch's global generator: call ``torch.manual_seed(seed)`` right
before :func:`build_model` for a reproducible model.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from torch import nn

from .lenet import LeNet5
from .resnet import NORMS, ResNet20
from .simple import MLP, LogisticRegression
from .transformer import ATTENTIONS, TransformerLM, token_cross_entropy

__all__ = [
    "ATTENTIONS",
    "MLP",
    "MODELS",
    "NORMS",
    "LeNet5",
    "LogisticRegression",
    "ResNet20",
    "TransformerLM",
    "build_model",
    "token_cross_entropy",
]

#: Names accepted by :func:`build_model`.
MODELS: tuple[str, ...] = ("logreg", "mlp", "lenet5", "resnet20", "transformer")

# name -> (class, keyword arguments it accepts); immutable.
_SPECS: MappingProxyType[str, tuple[type[nn.Module], tuple[str, ...]]] = MappingProxyType(
    {
        "logreg": (LogisticRegression, ()),
        "mlp": (MLP, ("hidden",)),
        "lenet5": (LeNet5, ()),
        "resnet20": (ResNet20, ("norm", "groups")),
        "transformer": (
            TransformerLM,
            (
                "d_model",
                "n_layers",
                "n_heads",
                "context",
                "mlp_ratio",
                "dropout",
                "tie_weights",
                "attention",
            ),
        ),
    }
)


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any
) -> nn.Module:
    """Build a freshly initialised classifier (or the ``transformer`` language model).

    ===========  ==================================================  ===========================
    name         model                                               keyword arguments
    ===========  ==================================================  ===========================
    logreg       ``Flatten`` + ``Linear`` (multinomial logistic)     —
    mlp          ``Flatten`` + (``Linear``-``ReLU``) x len(hidden)    ``hidden=(128,)`` (int or
                 + ``Linear``                                        tuple)
    lenet5       LeNet-5 (LeCun et al. 1998), sized to the image     —
    resnet20     ResNet-20 (He et al. 2016), option-A shortcuts      ``norm="group"`` |
                                                                     ``"batch"`` | ``"none"``,
                                                                     ``groups=2``
    transformer  decoder-only transformer language model            ``d_model=64``,
                 (:class:`TransformerLM`): token ids ``[B, L]`` ->   ``n_layers=2``,
                 logits ``[B, L, V]``, ``input_shape=(L,)``,         ``n_heads=4``,
                 ``num_classes=V``                                   ``context=64``,
                                                                     ``mlp_ratio=4``,
                                                                     ``dropout=0.0``,
                                                                     ``tie_weights=False``,
                                                                     ``attention="sdpa"``
    ===========  ==================================================  ===========================

    Args:
        name: one of :data:`MODELS`.
        input_shape: shape of one input, e.g. ``(1, 28, 28)`` or ``(40,)``; ``lenet5`` and
            ``resnet20`` need ``(C, H, W)``, ``transformer`` the window length ``(L,)``.
        num_classes: number of output logits (>= 1); the vocabulary size for ``transformer``.
        **kwargs: model options from the table above.

    Returns:
        A float32 ``nn.Module`` on the CPU, without buffers. Move it with ``.to(...)``.

    Raises:
        ValueError: unknown ``name`` (the message lists :data:`MODELS`), unsupported keyword
            (the message lists the accepted ones), a bad option value, a non-positive entry of
            ``input_shape``, ``num_classes < 1``, or a 1-D ``input_shape`` for an image model.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; allowed: {', '.join(MODELS)}")
    shape = tuple(input_shape)
    if not shape or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    cls, allowed = _SPECS[name]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise ValueError(
            f"model {name!r} got unsupported keyword argument(s) {', '.join(unknown)}; "
            f"accepted: {accepted}"
        )
    return cls(shape, num_classes, **kwargs)
