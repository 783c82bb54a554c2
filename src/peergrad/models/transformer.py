"""A small decoder-only transformer language model (the ``transformer`` preset).

Architecture (GPT-style, decoder only): a token embedding and a learned positional embedding,
``n_layers`` pre-LN blocks ``x = x + Attention(LN(x)); x = x + MLP(LN(x))``, a final LayerNorm
and a linear head to the vocabulary. Sources: the transformer and its scaled dot-product
attention, Vaswani et al., NeurIPS 2017, "Attention is all you need", arXiv:1706.03762; the
decoder-only language model with learned positions, Radford et al. 2018/2019 (GPT, GPT-2,
OpenAI reports, no arXiv id); LayerNorm before each sub-layer (pre-LN), Xiong et al., ICML 2020,
"On layer normalization in the transformer architecture", arXiv:2002.04745.

Shapes: input token ids int64 ``[B, L]`` with ``L <= context``; output logits ``[B, L, V]``
(``V = vocab_size``); position ``t`` of the output sees the inputs ``0..t`` only (causal).

Attention, per head of width ``E = d_model / n_heads``::

    q, k, v = split(qkv(h))                           # [B, H, L, E] each
    a = softmax(q k^T / sqrt(E) + M) v                # M[s, t] = -inf for t > s, else 0
    out = proj(concat_heads(a))

``attention`` chooses how ``a`` is computed; all three are the same function (equal to
rounding, which ``tests/test_transformer.py`` checks) and all work under ``torch.func.vmap`` and
``grad`` (the simulated engine), with and without dropout (``randomness="different"`` draws
every worker's own masks, reproducibly from torch's generator):

* ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention(q, k, v,
  is_causal=True)`` with torch's own choice of kernel (the fused flash kernel on the CPU).
  torch 2.13 has no ``vmap`` batching rule for that kernel on the CPU: under ``vmap`` it runs
  once per worker (a loop in C++) and torch warns once per process (``UserWarning: There is a
  performance drop ...``; ``peergrad train`` hides that note for this model). Measured on 2
  CPU cores (``benchmarks/simulator.py``) the vmapped step is still no slower with it than
  with the two batched forms, and in a loop over module copies it is the fastest;
* ``"sdpa-math"``: the same call on SDPA's math backend (``torch.nn.attention.sdpa_kernel(
  SDPBackend.MATH)``), made of ordinary tensor ops that ``vmap`` batches over the workers
  (no warning; slower than the fused kernel on the CPU);
* ``"explicit"``: the masked softmax above, written out.

Initialisation (GPT-2's, as commonly reimplemented; [R?] not checked against OpenAI's code):
every ``Linear`` and ``Embedding`` weight ~ N(0, 0.02²), biases 0, LayerNorm (1, 0), and the
two projections that write into the residual stream (``attn.proj``, ``mlp.down``) ~ N(0,
(0.02 / sqrt(2 n_layers))²). Random numbers come from torch's global generator.

Deviations: no dropout by default (``dropout=0``; when > 0 it is applied to the summed
embeddings, the attention weights and both residual branches, as in GPT-2); the head has a
bias-free ``Linear`` that is tied to the token embedding only with ``tie_weights=True`` (GPT-2
ties them always). The module has no buffers (the causal mask is made in ``forward``), so a
worker's model is a pure function of its parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["ATTENTIONS", "CausalSelfAttention", "TransformerLM", "token_cross_entropy"]

#: Values of ``TransformerLM(attention=...)``.
ATTENTIONS: tuple[str, ...] = ("sdpa", "sdpa-math", "explicit")

_INIT_STD = 0.02


def token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy (nats per token) of ``logits [B, L, V]`` against
    ``targets [B, L]`` (int64 token ids): ``-(1 / (B L)) sum_{b,t} log softmax(logits[b,
    t])[targets[b, t]]``. With windows of equal length the mean over a batch of windows of
    their own means, so ``WorkerModel.evaluate``'s ``B * loss`` sums are exact per window.

    Built from ``log_softmax`` and ``gather`` (vmap-friendly, equal to ``F.cross_entropy`` on
    the flattened tokens up to rounding)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -torch.gather(logp, -1, targets.unsqueeze(-1)).mean()


def _explicit_attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
    """``softmax(q k^T / sqrt(E) + causal mask) v`` for ``q, k, v [B, H, L, E]``."""
    length = q.shape[-2]
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-2, -1))
    future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return torch.matmul(weights, v)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: ``qkv = Linear(d, 3d)``, attention per head,
    ``proj = Linear(d, d)``. Input and output ``[B, L, d_model]``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, attention: str) -> None:
        super().__init__()
        self.n_heads, self.dropout, self.attention = n_heads, dropout, attention
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, h: Tensor) -> Tensor:
        batch, length, width = h.shape
        q, k, v = (
            t.reshape(batch, length, self.n_heads, width // self.n_heads).transpose(1, 2)
            for t in self.qkv(h).split(width, dim=-1)
        )
        p = self.dropout if self.training else 0.0
        if self.attention == "sdpa":
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        elif self.attention == "sdpa-math":
            with sdpa_kernel([SDPBackend.MATH]):  # composite: vmap batches it (module doc)
                a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            a = _explicit_attention(q, k, v, p)
        return self.proj(a.transpose(1, 2).reshape(batch, length, width))


class _MLP(nn.Module):
    """``Linear(d, r d) -> GELU -> Linear(r d, d)``."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)

    def forward(self, h: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(h)))


class _Block(nn.Module):
    """Pre-LN block: ``x + drop(attn(ln1(x)))``, then ``x + drop(mlp(ln2(x)))``."""

    def __init__(self, d_model: int, n_heads: int, hidden: int, dropout: float, attention: str):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout, attention)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = _MLP(d_model, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class TransformerLM(nn.Module):
    """Decoder-only transformer language model (see the module docstring).

    Args:
        input_shape: ``(L,)``: the length of the input windows (the data set's ``seq_len``);
            must satisfy ``L <= context``.
        num_classes: the vocabulary size V (256 for byte-level text).
        d_model: width of the residual stream (default 64); a multiple of ``n_heads``.
        n_layers: number of blocks (default 2).
        n_heads: attention heads per block (default 4).
        context: longest input the positional embedding covers (default 64).
        mlp_ratio: hidden width of the MLP in units of ``d_model`` (default 4).
        dropout: in [0, 1) (default 0): embeddings, attention weights and both residual
            branches.
        tie_weights: share the head's weight with the token embedding (default False).
        attention: one of :data:`ATTENTIONS` (default ``"sdpa"``).

    Input int64 ``[B, L]`` token ids in ``[0, V)``; output logits ``[B, L, V]``.

    Raises:
        ValueError: one line naming the option and its allowed range: ``input_shape`` not
            ``(L,)``, ``L > context`` (the data set's ``seq_len`` is longer than the model's
            context), a size that is not an integer >= 1, ``d_model`` not divisible by
            ``n_heads``, ``dropout`` outside [0, 1), an unknown ``attention``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        context: int = 64,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        tie_weights: bool = False,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        for name, value in (
            ("d_model", d_model),
            ("n_layers", n_layers),
            ("n_heads", n_heads),
            ("context", context),
            ("mlp_ratio", mlp_ratio),
        ):
            _positive_int(name, value)
        if len(input_shape) != 1:
            raise ValueError(
                f"transformer needs token windows [L] (a text data set such as pydoc-topics), "
                f"got input_shape={tuple(input_shape)}"
            )
        if input_shape[0] > context:
            raise ValueError(
                f"seq_len {input_shape[0]} is longer than the model's context {context}: "
                f"seq_len must be in [1, {context}] (or raise --model-set context)"
            )
        if d_model % n_heads:
            raise ValueError(
                f"d_model {d_model} must be divisible by n_heads {n_heads} (head width "
                "d_model / n_heads)"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        if not isinstance(tie_weights, bool):
            raise ValueError(f"tie_weights must be true or false, got {tie_weights!r}")
        self.context, self.vocab_size = context, num_classes
        self.tok = nn.Embedding(num_classes, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(
            *(
                _Block(d_model, n_heads, mlp_ratio * d_model, float(dropout), attention)
                for _ in range(n_layers)
            )
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes, bias=False)
        self.drop = nn.Dropout(float(dropout))
        self._init(n_layers)
        if tie_weights:
            self.head.weight = self.tok.weight

    def _init(self, n_layers: int) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, 0.0, _INIT_STD)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            assert isinstance(block, _Block)
            for proj in (block.attn.proj, block.mlp.down):
                nn.init.normal_(proj.weight, 0.0, _INIT_STD / math.sqrt(2 * n_layers))

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[-1]
        h = self.drop(self.tok(tokens) + self.pos.weight[:length])
        return self.head(self.ln_f(self.blocks(h)))
