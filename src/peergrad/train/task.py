"""What a run trains: a model, training and test data, a loss and a metric (:class:`Task`).

``peergrad.train.train(config, task)`` trains any ``nn.Module`` on any map-style Dataset (or
tensors) with any loss; ``config`` then says only *how* (algorithm, topology, workers, steps ...),
and ``config.model`` / ``config.dataset`` are not read (``task.name`` labels the run folder). The
built-in models and data sets of ``peergrad train --model/--dataset`` are presets of the same type
(:func:`task_from_config`), trained by the same code.

Example::

    import torch
    from torch import nn
    from peergrad import Task
    from peergrad.train import TrainConfig, train

    task = Task(
        model=lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
        train_data=(x_train, y_train),         # or any torch.utils.data.Dataset
        test_data=(x_test, y_test),
    )
    result = train(TrainConfig(algorithm="dpsgd", workers=8, steps=300), task)
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from peergrad.data.source import MapData, TensorData, as_data

if TYPE_CHECKING:
    from peergrad.train.config import TrainConfig
    from peergrad.train.params import WorkerModel

__all__ = [
    "BUILTIN_METRICS",
    "METRIC_MODES",
    "BuiltTask",
    "Task",
    "build_task",
    "task_from_config",
]

#: Values of :attr:`Task.metric_mode`: higher is better (``"max"``), lower is better (``"min"``).
METRIC_MODES: tuple[str, ...] = ("max", "min")
#: Built-in metrics of :attr:`Task.metric`, with the direction each must have.
BUILTIN_METRICS: dict[str, str] = {"accuracy": "max", "perplexity": "min"}


@dataclasses.dataclass
class Task:
    """A model, data, a loss and a metric: everything about *what* is trained.

    Attributes:
        model: an ``nn.Module`` (copied: every worker starts from its current parameters and
            buffers; the instance itself is never changed) or a zero-argument factory returning
            one (called once, under ``torch.manual_seed(config.seed)``, so the initial model is
            a function of the seed; on the distributed engine rank 0's initial model is given
            to every rank either way). Parameters with ``requires_grad=False`` stay frozen;
            buffers (BatchNorm running statistics ...) are kept per worker
            (``config.buffers``). Random layers (Dropout) draw each worker's own randomness.
            Training runs in the module's own train/eval modes, per submodule, as handed over
            (a BatchNorm kept in eval mode stays frozen after evaluations too); evaluation
            runs in eval mode.
        train_data: a map-style ``torch.utils.data.Dataset`` whose items are
            ``(input, target)`` pairs (read per step, for the sampled indices only, never
            materialised), or a pair of tensors ``(inputs [N, ...], targets [N, ...])`` (kept in
            memory: the fast path).
        test_data: the same kinds, or None (then the test metrics are None).
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (the mean over the batch); None means
            cross-entropy on class labels.
        metric: ``"accuracy"`` (argmax of the outputs equals the target), ``"perplexity"``
            (a language model's: ``exp`` of the mean loss over the evaluated split, so with the
            token cross-entropy ``exp(mean token cross-entropy)``; needs ``metric_mode="min"``),
            a callable ``metric(outputs, targets) -> scalar`` (the mean over the batch, like
            ``loss_fn``), or None (regression: no metric).
        metric_mode: the metric's direction: ``"max"`` (default: higher is better, as accuracy)
            or ``"min"`` (lower is better: an error such as MAE or RMSE, perplexity). Learning-
            rate grids select, targets are reached and ``best_*`` values are taken in this
            direction. A ``"max"`` metric is recorded as ``test_accuracy`` / ``val_accuracy`` /
            ``worker_test_accuracy`` (``best_test_accuracy`` in the summary), a ``"min"`` one
            as ``test_metric`` / ``val_metric`` / ``worker_test_metric`` (``best_test_metric``):
            a value that should go down is not called an accuracy. ``"accuracy"`` is ``"max"``;
            ``"perplexity"`` is ``"min"`` and recorded under its own name: ``test_perplexity``
            / ``val_perplexity`` / ``worker_test_perplexity`` (``best_test_perplexity``).
        name: label of the run (run-folder names, plots).
        val_data: a validation split of the task's own (the same kinds as ``test_data``), or
            None. When given, it is the run's validation split: ``val_loss`` and the validation
            metric of x̄ are recorded at every evaluation and ``config.val_fraction`` cuts
            nothing from ``train_data`` (its value is not used). The built-in text data set
            ``pydoc-topics`` brings its contiguous validation block this way.

    Construction checks the types (``TypeError`` naming the attribute); the data's items are
    checked when a run starts (a Dataset whose items are not ``(input, target)`` pairs is refused
    with ``ValueError`` before the first step).
    """

    model: nn.Module | Callable[[], nn.Module]
    train_data: Any
    test_data: Any = None
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None
    metric: str | Callable[[Tensor, Tensor], Tensor] | None = "accuracy"
    name: str = "custom"
    metric_mode: str = "max"
    val_data: Any = None

    def __post_init__(self) -> None:
        if not (isinstance(self.model, nn.Module) or callable(self.model)):
            raise TypeError(
                "model must be an nn.Module or a zero-argument callable returning one, got "
                f"{type(self.model).__name__}"
            )
        for what in ("train_data", "test_data", "val_data"):
            data = getattr(self, what)
            if data is None and what != "train_data":
                continue
            if not _data_like(data):
                raise TypeError(
                    f"{what} must be a map-style torch.utils.data.Dataset or an (inputs, targets) "
                    f"pair of tensors, got {type(data).__name__}"
                )
        if self.loss_fn is not None and not callable(self.loss_fn):
            raise TypeError(
                f"loss_fn must be callable(outputs, targets) -> scalar or None, got "
                f"{type(self.loss_fn).__name__}"
            )
        if not (self.metric is None or self.metric in BUILTIN_METRICS or callable(self.metric)):
            raise TypeError(
                f"metric must be 'accuracy', 'perplexity', a callable(outputs, targets) or None, "
                f"got {self.metric!r}"
            )
        if not (isinstance(self.name, str) and self.name and "/" not in self.name):
            raise TypeError(f"name must be a non-empty string without '/', got {self.name!r}")
        if not (isinstance(self.metric_mode, str) and self.metric_mode in METRIC_MODES):
            raise ValueError(
                f"metric_mode must be one of {', '.join(map(repr, METRIC_MODES))} (higher or "
                f"lower is better), got {self.metric_mode!r}"
            )
        if self.metric == "accuracy" and self.metric_mode != "max":
            raise ValueError(
                "metric_mode must be 'max' for metric='accuracy' (higher is better); "
                "metric_mode='min' is for a callable metric that should go down"
            )
        if self.metric == "perplexity" and self.metric_mode != "min":
            raise ValueError(
                "metric_mode must be 'min' for metric='perplexity' (lower is better), got "
                f"{self.metric_mode!r}"
            )

    @property
    def metric_name(self) -> str:
        """The word of the metric's record fields (``test_<word>``, ``val_<word>`` ...):
        ``"perplexity"`` for that metric, else ``"accuracy"`` for a higher-is-better metric and
        ``"metric"`` for a lower-is-better one (:func:`peergrad.train.recorder.metric_field`)."""
        if self.metric == "perplexity":
            return "perplexity"
        return "accuracy" if self.metric_mode == "max" else "metric"

    def describe(self, module: nn.Module | None = None) -> dict[str, Any]:
        """What ``config.json`` records about this task (``"task"``): ``name``, ``model`` (the
        class of ``module``, or of ``model`` when it is a module, else the factory's name),
        ``parameters`` / ``trainable_parameters`` (counted on ``module``, when given), the
        ``loss`` and ``metric`` (repr; ``"cross-entropy (default)"`` for ``loss_fn=None``) and
        ``metric_mode``. Data sizes are added by the run, which knows its splits."""
        shown = module if module is not None else self.model
        out: dict[str, Any] = {
            "name": self.name,
            "model": _qualname(type(shown)) if isinstance(shown, nn.Module) else _shown(shown),
        }
        if module is not None:
            out["parameters"] = sum(p.numel() for p in module.parameters())
            out["trainable_parameters"] = sum(
                p.numel() for p in module.parameters() if p.requires_grad
            )
        out["loss"] = "cross-entropy (default)" if self.loss_fn is None else _shown(self.loss_fn)
        out["metric"] = self.metric if isinstance(self.metric, str | None) else _shown(self.metric)
        out["metric_mode"] = self.metric_mode
        return out

    def make_module(self, seed: int) -> nn.Module:
        """The initial module: a copy of ``model``, or ``model()`` under
        ``torch.manual_seed(seed)``; ``TypeError`` when the factory returns no ``nn.Module``."""
        if isinstance(self.model, nn.Module):
            return copy.deepcopy(self.model)
        torch.manual_seed(seed)
        module = self.model()
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"model: the factory returned a {type(module).__name__}, not an nn.Module"
            )
        return module


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _shown(fn: Any) -> str:
    """A function or class by its qualified name (its repr holds a memory address, which would
    make two records of the same run differ), anything else (an ``nn.Module`` loss, a partial)
    by its repr."""
    if isinstance(fn, type) or inspect.isfunction(fn) or inspect.isbuiltin(fn):
        return f"{getattr(fn, '__module__', None) or '?'}.{fn.__qualname__}"
    return repr(fn)


def _data_like(data: Any) -> bool:
    if isinstance(data, tuple | list):
        return len(data) == 2 and all(isinstance(t, Tensor) for t in data)
    if isinstance(data, torch.utils.data.Dataset):
        return True
    return (
        hasattr(data, "__getitem__")
        and hasattr(data, "__len__")
        and not isinstance(data, dict | str | Tensor)
    )


def task_from_config(config: TrainConfig) -> Task:
    """The built-in preset named by ``config.model`` and ``config.dataset`` as a :class:`Task`.

    Data, model and loss come from :mod:`peergrad.train.resolve` (built-in names load the
    in-memory tensors of :func:`peergrad.data.load_dataset`; ``package.module:callable`` specs
    call the user's code); the model is a factory, so its initialisation follows
    ``config.seed``. ``task.name`` is ``config.dataset``. A built-in text data set
    (``pydoc-topics``) selects the language-model task: ``--loss cross-entropy`` is the mean
    token cross-entropy with the ``"perplexity"`` metric (``metric_mode="min"``), and its
    contiguous validation block is ``val_data``.
    """
    from peergrad.train import resolve

    train_data, test_data, info = resolve.resolve_dataset(
        config.dataset,
        dict(config.data_options),
        root=config.data_root,
        download=config.download,
        seed=config.seed,
    )
    factory = resolve.resolve_model(
        config.model, dict(config.model_options), info.get("input_shape"), info.get("num_classes")
    )
    if info.get("text"):
        text_loss, text_metric, mode = resolve.resolve_text_loss(config.loss)
        return Task(
            model=factory,
            train_data=train_data,
            test_data=test_data,
            loss_fn=text_loss,
            metric=text_metric,
            name=config.dataset,
            metric_mode=mode,
            val_data=info["val"],
        )
    loss_fn, metric = resolve.resolve_loss(config.loss)
    return Task(
        model=factory,
        train_data=train_data,
        test_data=test_data,
        # cross-entropy: the WorkerModel default (the same loss, vmap-friendly and fastest)
        loss_fn=None if config.loss == "cross-entropy" else loss_fn,
        metric=metric,
        name=config.dataset,
    )


@dataclasses.dataclass
class BuiltTask:
    """A :class:`Task` made ready for one run: the module, its :class:`WorkerModel`, the initial
    parameters and buffers, the data as the loop reads it and the workers' shards (all on the
    run's device; floating-point parameters, buffers and data in the run's dtype)."""

    task: Task
    module: nn.Module
    model: WorkerModel
    x0: Tensor  # [D]: every worker's initial trainable parameters
    train: TensorData | MapData
    test: TensorData | MapData | None
    shards: list[Tensor]
    # the validation split: task.val_data, else cut by config.val_fraction > 0
    val: TensorData | MapData | None = None

    @property
    def layout(self) -> Any:
        """The flat layout of the trainable parameters (:class:`FlatParams`)."""
        return self.model.layout

    @property
    def dataset(self) -> Any:
        """The train and test tensors of an in-memory task (``x_train``, ``y_train``, ``x_test``,
        ``y_test``; None where the data is a Dataset), as the loop's former ``Task.dataset``."""
        tr, te = self.train, self.test
        return _TensorView(
            tr.x if isinstance(tr, TensorData) else None,
            tr.y if isinstance(tr, TensorData) else None,
            te.x if isinstance(te, TensorData) else None,
            te.y if isinstance(te, TensorData) else None,
        )


@dataclasses.dataclass(frozen=True)
class _TensorView:
    x_train: Tensor | None
    y_train: Tensor | None
    x_test: Tensor | None
    y_test: Tensor | None


def build_task(
    task: Task, config: TrainConfig, device: torch.device, dtype: torch.dtype
) -> BuiltTask:
    """Check the data and build the module, shards and :class:`WorkerModel` for ``config``.

    Validation: ``task.val_data`` when given (nothing is cut from the training data); else with
    ``config.val_fraction > 0`` the training data is first cut by
    :func:`peergrad.data.validation_split` (fixed, seed-independent); the shards are drawn from
    the rest and the held-out part is ``val``.

    Shards: :func:`peergrad.data.partition` of the train labels (``iid`` and ``contiguous``
    need only the number of samples; ``sorted`` and ``dirichlet`` need integer class labels: a
    Dataset's ``targets``, or one pass reading every item). Then the module
    (:meth:`Task.make_module` with ``config.seed``), moved to ``device`` and ``dtype``
    (floating-point tensors only).

    Raises ``TypeError`` / ``ValueError`` naming the attribute (``train_data``, ``test_data``,
    ``model``) or the option (``--batch-size``, ``--partition``) before any step.
    """
    from peergrad.data import partition
    from peergrad.train.params import WorkerModel

    workers = int(config.loader_workers)
    train = as_data(task.train_data, what="train_data", loader_workers=workers)
    test = None
    if task.test_data is not None:
        test = as_data(task.test_data, what="test_data", loader_workers=workers)
    val = None
    if task.val_data is not None:
        val = as_data(task.val_data, what="val_data", loader_workers=workers)
    elif config.val_fraction:
        from peergrad.data import validation_split

        keep, held_out = validation_split(len(train), config.val_fraction)
        train, val = train.subset(keep), train.subset(held_out)
    n_train = len(train)
    if config.workers * config.batch_size > n_train:
        source = (
            f"--dataset {config.dataset}" if task.name == config.dataset else f"task {task.name!r}"
        )
        raise ValueError(
            f"--batch-size {config.batch_size}: batch_size must be in "
            f"[1, {n_train // config.workers}] here: --workers {config.workers} shards share "
            f"the {n_train} training samples of {source} and each must hold "
            "one batch; lower --batch-size or --workers"
        )
    if config.partition in ("iid", "contiguous"):
        labels = torch.zeros(n_train, dtype=torch.int64)  # these shards depend on N only
    else:
        labels = train.labels()
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(
                f"--partition {config.partition} needs integer class labels as targets; the "
                f"train_data targets are {labels.dtype} {tuple(labels.shape)} (use --partition "
                "iid or contiguous)"
            )
    shards = partition(
        labels,
        config.workers,
        config.partition,
        seed=config.seed,
        alpha=config.dirichlet_alpha,
        min_size=config.batch_size,
    )
    module = task.make_module(config.seed).to(device=device, dtype=dtype)
    model = WorkerModel(module, task.loss_fn, task.metric)
    return BuiltTask(
        task,
        module,
        model,
        model.x0(),
        train.to(device, dtype),
        test.to(device, dtype) if test is not None else None,
        shards,
        val.to(device, dtype) if val is not None else None,
    )
