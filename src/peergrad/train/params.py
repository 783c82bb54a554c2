"""Any ``nn.Module`` as per-worker pure functions of a flat parameter vector and stacked buffers.

The simulated engine keeps every worker's model in one buffer ``x: [n, D]``. :class:`FlatParams`
records the layout (names, shapes, offsets) of a module's *trainable* parameters in that vector;
:class:`WorkerModel` evaluates the module at every row of ``x`` at once with
``torch.func.functional_call`` vectorised over the worker axis by ``torch.vmap`` (never a Python
loop over workers). The built-in models are presets of the same path (no buffers, the default
cross-entropy loss); the module-level functions :func:`make_worker_grad_fn`,
:func:`make_worker_loss_fn`, :func:`make_eval_fn` and :func:`make_bound_grad_fn` are thin
wrappers over it.

What a worker's model is made of
--------------------------------
* **Trainable parameters** (``requires_grad=True``) are ``x``: stacked ``[w, D]``, communicated
  and updated by the algorithm.
* **Frozen parameters** (``requires_grad=False``) are not part of ``x``: one shared copy (the
  module's own), used by every worker's forward, never communicated, never updated.
* **Buffers** (BatchNorm running statistics, step counters, any ``register_buffer``) are stacked
  per worker, ``{name: [w, *shape]}`` (:meth:`WorkerModel.init_buffers`). Each worker's training
  forward (:meth:`WorkerModel.grad`) updates its own row in place, as its own module would. By
  default they stay local to each worker (as in Decent-DP); :func:`average_buffers` replaces the
  floating-point ones by their mean over workers (call it at every communication round for the
  "average" option) and :func:`mean_buffers` gives the averaged buffers with which the averaged
  model x̄ is evaluated. Integer buffers (``num_batches_tracked``) count the same on every worker
  and are never averaged.

Randomness
----------
Random layers (Dropout, ...) draw independent randomness per worker: the training forward runs
under ``vmap(..., randomness="different")``, which draws one ``[w, ...]`` sample from torch's
*global* generator (the CPU one, or the CUDA one of the device the data is on). A rerun from the
same global RNG state is therefore byte-identical; ``peergrad train`` seeds the global generator
and saves/restores its state in checkpoints, so a resumed run stays exact.
:meth:`WorkerModel.evaluate` and :meth:`WorkerModel.check` run under a forked generator and leave
the global RNG state as they found it. :meth:`WorkerModel.loss` (line-search trials) draws from
the global generator like :meth:`WorkerModel.grad`: a caller that wants the same Dropout masks at
every trial point must restore the RNG state itself (e.g. ``torch.random.fork_rng``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

# Averaging buffers over the workers is a collective: it lives with the communicators since
# issue 25 (peergrad.comm.buffers); importable from here as before.
from peergrad.comm.buffers import average_buffers as average_buffers
from peergrad.comm.buffers import mean_buffers as mean_buffers

__all__ = [
    "FlatParams",
    "WorkerModel",
    "average_buffers",
    "bind_flat",
    "cross_entropy",
    "make_bound_grad_fn",
    "make_eval_fn",
    "make_worker_grad_fn",
    "make_worker_loss_fn",
    "mean_buffers",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
GradFn = Callable[..., tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class FlatParams:
    """Layout of ``module``'s trainable parameters in a flat vector of length ``dim``.

    Only parameters with ``requires_grad=True`` are in the layout (in ``named_parameters()``
    order); frozen parameters and buffers are not (see :class:`WorkerModel`).
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]
    dim: int

    @classmethod
    def of(cls, module: nn.Module) -> FlatParams:
        """The layout of ``module``'s trainable parameters (``requires_grad=True``)."""
        named = trainable_parameters(module)
        return cls(
            names=tuple(named),
            shapes=tuple(p.shape for p in named.values()),
            numels=tuple(p.numel() for p in named.values()),
            dim=sum(p.numel() for p in named.values()),
        )

    def flatten(self, module: nn.Module) -> Tensor:
        """The module's current trainable parameters as one detached vector ``[dim]``."""
        params = dict(module.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten_rows(self, x: Tensor) -> dict[str, Tensor]:
        """Views of every worker's row of ``x`` (``[w, dim]``), shaped ``[w, *shape]``, by name."""
        w = x.shape[0]
        chunks = torch.split(x, self.numels, dim=1)  # type: ignore[arg-type]  # a tuple works
        return {n: c.view(w, *s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of ``flat`` (``[dim]``) shaped like the parameters, by name."""
        chunks = torch.split(flat, self.numels)  # type: ignore[arg-type]  # a tuple works
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """``module``'s parameters with ``requires_grad=True``, by name, in registration order."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def bind_flat(module: nn.Module, layout: FlatParams, x_row: Tensor, g_row: Tensor) -> None:
    """Make ``module``'s trainable parameters views of ``x_row`` and their ``.grad`` views of
    ``g_row``.

    ``x_row`` and ``g_row`` are contiguous ``[D]`` vectors (one worker's row of ``[w, D]``
    buffers; ``x_row`` must already hold the parameter values). Afterwards ``loss.backward()``
    accumulates gradients straight into ``g_row`` (zero it first) and an in-place update of
    ``x_row`` is an update of the module: no flattening copies on the hot path. Frozen parameters
    (``requires_grad=False``) are left as they are. Used by the distributed engine (one worker
    per process).

    Raises ``ValueError`` when the module does not match ``layout`` or the rows are not ``[D]``.
    """
    if x_row.shape != (layout.dim,) or g_row.shape != (layout.dim,):
        raise ValueError(
            f"x_row and g_row must have shape ({layout.dim},), got {tuple(x_row.shape)} and "
            f"{tuple(g_row.shape)}"
        )
    params = trainable_parameters(module)
    if tuple(params) != layout.names:
        raise ValueError("module parameters do not match the layout (names or order differ)")
    xs, gs = layout.unflatten(x_row), layout.unflatten(g_row)
    for name, p in params.items():
        if p.shape != xs[name].shape:
            raise ValueError(f"parameter {name}: shape {tuple(p.shape)} != {tuple(xs[name].shape)}")
        p.data = xs[name]
        p.grad = gs[name]


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits [B, C]`` against ``labels [B]``.

    Equal to ``F.cross_entropy`` (bit for bit in our tests) but built from ``log_softmax`` and
    ``gather``, whose ``vmap`` batching rules are faster on the CPU than ``nll_loss``'s.
    """
    return -torch.gather(torch.log_softmax(logits, dim=-1), -1, labels.unsqueeze(-1)).mean()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    line = line if len(line) <= 240 else line[:237] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class WorkerModel:
    """Any ``nn.Module`` as per-worker pure functions of ``(x [w, D], buffers {name: [w, ...]})``.

    Every method evaluates all ``w`` workers' models in one ``torch.vmap`` call over
    ``torch.func.functional_call`` (no Python loop over workers). See the module docstring for
    how trainable parameters, frozen parameters, buffers and randomness are handled.

    Args:
        module: the model skeleton. Its trainable parameters give the layout and
            :meth:`x0`; its buffers give :meth:`init_buffers`; its frozen parameters are
            used as they are. Move it (``module.to(device, dtype)``) before calling
            :meth:`x0` / :meth:`init_buffers`. ``forward`` must take one input batch
            ``[B, ...]`` and return one tensor of outputs (e.g. logits ``[B, C]``), and must be
            vmappable (no ``.item()`` or data-dependent Python control flow). Its modes are
            recorded here, per submodule (``{name: m.training}``): the training forward
            (:meth:`grad`, :meth:`loss`, :meth:`bound_grad_fn`) runs with exactly those modes
            (a BatchNorm the user keeps in eval mode for frozen-BN fine-tuning stays so, before
            and after any evaluation; a module handed over in eval mode trains in eval mode, so
            call ``model.train()`` first as before your own loop), and :meth:`evaluate` with
            ``module.eval()``.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, the mean over the batch. ``None``:
            cross-entropy of logits ``[B, C]`` against integer labels ``[B]``.
        metric: ``"accuracy"`` (``argmax(outputs, -1) == targets``, needs logits and integer
            labels), ``"perplexity"`` (``exp`` of the mean loss over the evaluated data:
            :meth:`evaluate` sums the loss as the metric, :meth:`metric_from_mean` takes the
            ``exp`` of its mean), ``None`` (no metric, e.g. regression), or ``metric(outputs,
            targets) -> scalar``, the mean over the batch (:meth:`evaluate` sums it as ``B *
            metric``).

    Attributes:
        module, layout (:class:`FlatParams` of the trainable parameters), loss_fn (``None``
        for the default cross-entropy), metric, buffer_names (tuple), frozen_names (tuple).

    Raises:
        TypeError: ``module`` is not an ``nn.Module``; ``loss_fn`` or ``metric`` is neither
            ``None`` nor callable (nor ``"accuracy"``).
        ValueError: ``metric`` is a string other than ``"accuracy"`` and ``"perplexity"``; the
            module has no trainable parameter.
    """

    def __init__(
        self,
        module: nn.Module,
        loss_fn: LossFn | None = None,
        metric: str | Callable[[Tensor, Tensor], Tensor] | None = "accuracy",
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(
                "loss_fn must be None or a callable loss_fn(outputs, targets) -> scalar, got "
                f"{type(loss_fn).__name__}"
            )
        if isinstance(metric, str):
            if metric not in ("accuracy", "perplexity"):
                raise ValueError(
                    f"metric must be 'accuracy', None or a callable (or 'perplexity'), got "
                    f"{metric!r}"
                )
        elif metric is not None and not callable(metric):
            raise TypeError(
                "metric must be 'accuracy', None or a callable metric(outputs, targets) -> "
                f"scalar, got {type(metric).__name__}"
            )
        self.module = module
        self.layout = FlatParams.of(module)
        if self.layout.dim == 0:
            raise ValueError(
                f"module: {type(module).__name__} has no trainable parameter "
                "(requires_grad=True); there is nothing to train"
            )
        self.loss_fn = loss_fn
        self.metric = metric
        self.buffer_names: tuple[str, ...] = tuple(n for n, _ in module.named_buffers())
        self.frozen_names: tuple[str, ...] = tuple(
            n for n, p in module.named_parameters() if not p.requires_grad
        )
        self._buffer_set = frozenset(self.buffer_names)
        #: the training modes of the module's submodules as handed over, ``{name: training}``
        self.train_modes: dict[str, bool] = {n: m.training for n, m in module.named_modules()}
        self._train_mode_list = [(m, m.training) for m in module.modules()]
        self._builtin = loss_fn is None and metric == "accuracy"
        self._loss: LossFn = cross_entropy if loss_fn is None else loss_fn
        self._build()

    # ------------------------------------------------------------------ vectorised functions
    def _build(self) -> None:
        module, layout, loss_of = self.module, self.layout, self._loss

        def train_loss(params: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
            return loss_of(functional_call(module, params, (xb,)), yb)

        def train_loss_b(
            params: dict[str, Tensor], buffers: dict[str, Tensor], xb: Tensor, yb: Tensor
        ) -> Tensor:
            return loss_of(functional_call(module, (params, buffers), (xb,)), yb)

        def flat_loss(flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
            return loss_of(functional_call(module, layout.unflatten(flat), (xb,)), yb)

        def flat_loss_b(flat: Tensor, buffers: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
            return loss_of(functional_call(module, (layout.unflatten(flat), buffers), (xb,)), yb)

        def stats(flat: Tensor, buffers: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Any:
            params = layout.unflatten(flat)
            out = functional_call(module, (params, buffers) if buffers else params, (xb,))
            return self._sums(out, yb)

        rnd = "different"
        self._grad = torch.vmap(grad_and_value(train_loss), randomness=rnd)
        self._grad_b = torch.vmap(grad_and_value(train_loss_b), randomness=rnd)
        self._loss_v = torch.vmap(flat_loss, randomness=rnd)
        self._loss_vb = torch.vmap(flat_loss_b, randomness=rnd)
        self._stats = torch.vmap(stats, in_dims=(0, 0, None, None), randomness=rnd)

    def _sums(self, out: Tensor, yb: Tensor) -> tuple[Tensor, Tensor] | Tensor:
        """(summed loss, summed metric) of one model's outputs on one batch (summed loss alone
        without a metric)."""
        if self.loss_fn is None:
            loss = F.cross_entropy(out, yb, reduction="sum")
        else:
            loss = self.loss_fn(out, yb) * yb.shape[0]
        if self.metric is None:
            return loss
        if self.metric == "accuracy":
            return loss, (out.argmax(dim=-1) == yb).sum()
        if self.metric == "perplexity":
            return loss, loss  # exp of its mean: metric_from_mean
        assert callable(self.metric)
        return loss, self.metric(out, yb) * yb.shape[0]

    def metric_from_mean(self, mean: Tensor) -> Tensor:
        """The metric of a data set from the mean of :meth:`evaluate`'s summed metric over its
        samples: ``exp(mean)`` for ``"perplexity"`` (the mean loss, so ``exp(mean token
        cross-entropy)`` for a language model), ``mean`` itself for every other metric."""
        return mean.exp() if self.metric == "perplexity" else mean

    def _mode(self, train: bool) -> None:
        """Training: every submodule back to its recorded mode (not a blanket ``train()``,
        which would switch on a BatchNorm the user froze in eval mode); evaluation: ``eval()``."""
        if train:
            for m, t in self._train_mode_list:
                if m.training is not t:
                    m.training = t
        else:
            self.module.eval()

    def _check_buffers(self, buffers: Mapping[str, Tensor], w: int | None, what: str) -> None:
        if not isinstance(buffers, Mapping):
            raise TypeError(
                f"{what}: buffers must be a dict of tensors, got {type(buffers).__name__}"
            )
        if buffers.keys() != self._buffer_set:
            raise ValueError(
                f"{what}: buffers must have the module's buffers {sorted(self._buffer_set)} as "
                f"keys (see init_buffers), got {sorted(buffers)}"
            )
        if w is not None:
            for name, b in buffers.items():
                if b.dim() == 0 or b.shape[0] != w:
                    raise ValueError(
                        f"{what}: buffers[{name!r}] must have {w} rows (worker axis first), got "
                        f"shape {tuple(b.shape)}"
                    )

    # ------------------------------------------------------------------ state
    def x0(self) -> Tensor:
        """The module's current trainable parameters, ``[D]`` (a detached copy)."""
        return self.layout.flatten(self.module)

    def init_buffers(self, w: int) -> dict[str, Tensor]:
        """Every buffer of the module stacked for ``w`` workers, ``{name: [w, *shape]}`` (fresh
        copies of the module's current buffers; an empty dict when the module has none).

        Raises:
            ValueError: ``w`` is not a positive integer.
        """
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"w must be a positive integer, got {w!r}")
        return {
            n: b.detach().unsqueeze(0).expand(w, *b.shape).clone()
            for n, b in self.module.named_buffers()
        }

    def frozen(self) -> dict[str, Tensor]:
        """The frozen parameters (``requires_grad=False``), ``{name: tensor}``: the module's own
        tensors (detached, not copies), shared by all workers and never updated."""
        params = dict(self.module.named_parameters())
        return {n: params[n].detach() for n in self.frozen_names}

    # ------------------------------------------------------------------ per-worker calls
    def grad(
        self,
        x: Tensor,
        buffers: dict[str, Tensor],
        xb: Tensor,
        yb: Tensor,
        out: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Every worker's gradient and loss on its own minibatch, in training mode.

        Args:
            x: ``[w, D]``, one row per worker.
            buffers: ``{name: [w, *shape]}`` (:meth:`init_buffers`); each worker's row is
                updated in place by its forward (BatchNorm running statistics, counters).
            xb: ``[w, B, ...]`` inputs, yb: ``[w, B]`` targets (worker ``i`` uses row ``i``).
            out: optional ``[w, D]`` tensor that receives the gradients.

        Returns:
            ``(g [w, D], loss [w])`` with ``g`` the gradient of worker i's ``loss_fn`` at
            ``x[i]`` (``out`` when given). Random layers draw per-worker randomness from torch's
            global generator.

        Raises:
            ValueError / TypeError: ``buffers`` do not have the module's buffer names.

        The gradient is taken with respect to per-parameter views of ``x`` (not the flat row):
        the backward of ``split`` under ``vmap`` concatenates transposed pieces, which costs
        about as much as a whole matrix product on the CPU; one contiguous ``cat`` at the end is
        cheaper.
        """
        if not isinstance(buffers, dict) or buffers.keys() != self._buffer_set:
            self._check_buffers(buffers, None, "grad")
        self._mode(True)
        params = self.layout.unflatten_rows(x)
        if self.buffer_names:
            grads, losses = self._grad_b(params, buffers, xb, yb)
        else:
            grads, losses = self._grad(params, xb, yb)
        w = x.shape[0]
        pieces = [grads[name].reshape(w, -1) for name in self.layout.names]
        if out is not None:
            return torch.cat(pieces, dim=1, out=out), losses
        return torch.cat(pieces, 1), losses

    def loss(self, x: Tensor, buffers: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        """Every worker's training-mode loss ``[w]`` at ``x [w, D]`` on ``xb [w, B, ...]``,
        ``yb [w, B]``, without a gradient and without changing ``buffers`` (they are cloned):
        the closure of line searches. BatchNorm normalises with the batch statistics, as in
        :meth:`grad`; random layers draw from the global generator (restore its state between
        trials for the same masks).

        Raises:
            ValueError / TypeError: ``buffers`` do not have the module's buffer names.
        """
        if not isinstance(buffers, dict) or buffers.keys() != self._buffer_set:
            self._check_buffers(buffers, None, "loss")
        self._mode(True)
        if self.buffer_names:
            return self._loss_vb(x, {n: b.clone() for n, b in buffers.items()}, xb, yb)
        return self._loss_v(x, xb, yb)

    def evaluate(
        self, x: Tensor, buffers: dict[str, Tensor], xb: Tensor, yb: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Summed loss and metric of ``m`` models on one shared batch, in evaluation mode.

        Args:
            x: ``[m, D]`` models (e.g. x̄ as ``[1, D]``, or some workers' rows).
            buffers: ``{name: [m, *shape]}``, the models' buffers (BatchNorm uses these
                running statistics); not changed.
            xb: ``[B, ...]`` inputs, yb: ``[B]`` targets, shared by all models.

        Returns:
            ``(loss [m], metric [m] or None)``: ``B * loss_fn`` (the exact summed cross-entropy
            by default) and the summed metric (the correct count for ``"accuracy"``, ``B *
            metric`` for a callable), ``None`` without a metric. Leaves the global RNG state
            unchanged.

        Raises:
            ValueError / TypeError: ``buffers`` do not match the module's buffers or ``m``.
        """
        self._check_buffers(buffers, x.shape[0], "evaluate")
        self._mode(False)
        with torch.random.fork_rng(devices=_cuda_devices(x)):
            res = self._stats(x, buffers, xb, yb)
        if self.metric is None:
            return res, None
        return res

    def bound_grad_fn(self, x: Tensor, buffers: dict[str, Tensor]) -> GradFn:
        """``fn(x, xb [1, B, ...], yb [1, B], out=None) -> (g [1, D], loss [1])`` with plain
        autograd, for one worker per process (the distributed engine).

        Same results as :meth:`grad` with ``w = 1``: a deep copy of the module, in the recorded
        training modes (:attr:`train_modes`), has its trainable parameters bound as views of
        ``x[0]`` (:func:`bind_flat`), its gradients land in ``out[0]``, and its buffers *are*
        the rows ``buffers[name][0]``, so its forward updates ``buffers`` in place (restore
        them with ``copy_``, never by assignment). ``fn`` must be called with this same ``x``.

        Raises:
            ValueError: ``x`` is not ``[1, D]``; ``buffers`` are not the module's, with 1 row.
        """
        if x.dim() != 2 or x.shape != (1, self.layout.dim):
            raise ValueError(
                f"x must have shape (1, {self.layout.dim}) (one worker per process), got "
                f"{tuple(x.shape)}"
            )
        self._check_buffers(buffers, 1, "bound_grad_fn")
        module = copy.deepcopy(self.module)
        for name, m in module.named_modules():
            m.training = self.train_modes[name]
        for name, b in buffers.items():
            owner, _, leaf = name.rpartition(".")
            module.get_submodule(owner)._buffers[leaf] = b[0]
        layout, loss_of = self.layout, self._loss
        bound: dict[str, Tensor | None] = {"g": None}

        def fn(
            xx: Tensor, xb: Tensor, yb: Tensor, out: Tensor | None = None
        ) -> tuple[Tensor, Tensor]:
            if xx is not x:
                raise ValueError("bound_grad_fn: call with the x it was built for")
            if out is None:
                out = torch.empty_like(x)
            if bound["g"] is not out:
                bind_flat(module, layout, x[0], out[0])
                bound["g"] = out
            out.zero_()
            loss = loss_of(module(xb[0]), yb[0])
            loss.backward()
            return out, loss.detach().reshape(1)

        return fn

    # ------------------------------------------------------------------ validation
    def check(self, xb: Tensor, yb: Tensor) -> None:
        """Refuse, before the first step, a model, loss or metric that cannot be trained.

        Runs the forward, ``loss_fn`` and the metric on one batch, first plainly, then through
        the vectorised paths (:meth:`grad`, :meth:`evaluate` with one worker). Changes nothing:
        the module's buffers and parameters, the global RNG state and the module's mode are as
        before.

        Args:
            xb: ``[B, ...]`` a batch of training inputs, yb: ``[B]`` their targets. Pass a batch
                of the run's batch size: BatchNorm in training mode needs more than one value
                per channel.

        Raises:
            TypeError: ``xb``/``yb`` are not tensors; the forward does not return a tensor;
                ``loss_fn`` or ``metric`` returns a non-tensor.
            ValueError (one line naming ``model``, ``loss_fn`` or ``metric``): the forward fails
                (or cannot be vectorised over workers); ``loss_fn`` fails or returns a
                non-scalar; ``metric="accuracy"`` with outputs that are not logits ``[B, C]`` or
                targets that are not integer labels ``[B]``; a callable metric fails or returns a
                non-scalar.
        """
        for arg, t in (("xb", xb), ("yb", yb)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{arg} must be a Tensor, got {type(t).__name__}")
        if xb.dim() == 0 or yb.dim() == 0 or xb.shape[0] != yb.shape[0]:
            raise ValueError(
                f"xb and yb must be one batch [B, ...] and [B], got shapes {tuple(xb.shape)} and "
                f"{tuple(yb.shape)}"
            )
        modes = {m: m.training for m in self.module.modules()}
        try:
            with torch.random.fork_rng(devices=_cuda_devices(xb)):
                self._check_plain(xb, yb)
                self._check_vectorised(xb, yb)
        finally:
            for m, training in modes.items():
                m.training = training

    def _check_plain(self, xb: Tensor, yb: Tensor) -> None:
        name = type(self.module).__name__
        shape = tuple(xb.shape)
        state = {n: b.detach().clone() for n, b in self.module.named_buffers()}
        self._mode(True)
        with torch.no_grad():
            try:
                out = functional_call(self.module, state, (xb,))
            except Exception as e:  # noqa: BLE001 - any failure of user code is reported
                raise ValueError(
                    f"model: {name}'s forward fails on a batch of shape {shape}: {_one_line(e)}"
                ) from e
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"model: {name}'s forward must return one Tensor of outputs, got "
                    f"{type(out).__name__}"
                )
            try:
                loss = self._loss(out, yb)
            except Exception as e:  # noqa: BLE001
                raise ValueError(
                    f"loss_fn fails on outputs of shape {tuple(out.shape)} and targets of shape "
                    f"{tuple(yb.shape)} ({yb.dtype}): {_one_line(e)}"
                ) from e
            if not isinstance(loss, Tensor):
                raise TypeError(f"loss_fn must return a scalar Tensor, got {type(loss).__name__}")
            if loss.dim() != 0 or not loss.is_floating_point():
                raise ValueError(
                    "loss_fn must return a floating-point scalar (the mean over the batch), got "
                    f"a {loss.dtype} tensor of shape {tuple(loss.shape)}"
                )
            if self.metric == "accuracy":
                if (
                    out.dim() < 2
                    or out.shape[:-1] != yb.shape
                    or yb.is_floating_point()
                    or yb.is_complex()
                ):
                    raise ValueError(
                        "metric='accuracy' needs logits [B, C] and integer labels [B], got "
                        f"outputs of shape {tuple(out.shape)} and targets of shape "
                        f"{tuple(yb.shape)} ({yb.dtype}); use metric=None for regression"
                    )
            elif self.metric is not None and self.metric != "perplexity":
                assert callable(self.metric)
                try:
                    value = self.metric(out, yb)
                except Exception as e:  # noqa: BLE001
                    raise ValueError(f"metric fails: {_one_line(e)}") from e
                if not isinstance(value, Tensor):
                    raise TypeError(
                        f"metric must return a scalar Tensor, got {type(value).__name__}"
                    )
                if value.dim() != 0:
                    raise ValueError(
                        "metric must return a scalar (the mean over the batch), got shape "
                        f"{tuple(value.shape)}"
                    )

    def _check_vectorised(self, xb: Tensor, yb: Tensor) -> None:
        x = self.x0().unsqueeze(0)
        try:
            self.grad(x, self.init_buffers(1), xb.unsqueeze(0), yb.unsqueeze(0))
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"model: {type(self.module).__name__} cannot be trained vectorised over workers "
                f"(torch.func.vmap + grad of forward and loss_fn): {_one_line(e)}"
            ) from e
        try:
            self.evaluate(x, self.init_buffers(1), xb, yb)
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"model: {type(self.module).__name__} cannot be evaluated vectorised over models "
                f"in eval mode (torch.func.vmap): {_one_line(e)}"
            ) from e


def _cuda_devices(t: Tensor) -> list[torch.device]:
    return [t.device] if t.device.type == "cuda" else []


# ---------------------------------------------------------------------- the built-in presets
def _model_for(module: nn.Module, layout: FlatParams) -> WorkerModel:
    model = WorkerModel(module)
    if model.layout != layout:
        raise ValueError("layout does not match the module's trainable parameters")
    return model


def make_worker_grad_fn(module: nn.Module, layout: FlatParams) -> GradFn:
    """``fn(x [w, D], xb [w, B, ...], yb [w, B], out=None) -> (g [w, D], loss [w])``: the
    per-worker mean cross-entropy and its gradient (:meth:`WorkerModel.grad` of a module
    without buffers)."""
    model = _model_for(module, layout)
    no_buffers: dict[str, Tensor] = {}

    def fn(x: Tensor, xb: Tensor, yb: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return model.grad(x, no_buffers, xb, yb, out)

    return fn


def make_worker_loss_fn(
    module: nn.Module, layout: FlatParams
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``fn(x [w, D], xb [w, B, ...], yb [w, B]) -> loss [w]`` (no gradient), for line searches
    (:meth:`WorkerModel.loss` of a module without buffers)."""
    model = _model_for(module, layout)
    no_buffers: dict[str, Tensor] = {}

    def fn(x: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        return model.loss(x, no_buffers, xb, yb)

    return fn


def make_eval_fn(
    module: nn.Module, layout: FlatParams
) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``fn(x [m, D], xb [B, ...], yb [B]) -> (summed loss [m], correct count [m])``: m models
    (rows of x) on one shared batch (:meth:`WorkerModel.evaluate` of a module without
    buffers)."""
    model = _model_for(module, layout)
    no_buffers: dict[str, Tensor] = {}

    def fn(x: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        loss, correct = model.evaluate(x, no_buffers, xb, yb)
        assert correct is not None
        return loss, correct

    return fn


def make_bound_grad_fn(module: nn.Module, layout: FlatParams, x: Tensor) -> GradFn:
    """Per-worker gradients for a single local worker (``x`` is ``[1, D]``) with plain autograd
    (:meth:`WorkerModel.bound_grad_fn` of a module without buffers; binds a copy of
    ``module``)."""
    return _model_for(module, layout).bound_grad_fn(x, {})
