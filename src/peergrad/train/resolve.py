"""From the names of ``--model``, ``--dataset`` and ``--loss`` to a model, data and a loss.

Each accepts a built-in name, or a user callable ``package.module:callable`` (imported with
:mod:`importlib`; the current directory is searched too, as ``python -m`` does), and ``--model``
also ``torchvision:NAME`` / ``timm:NAME`` when that package is installed. Keyword arguments of
the model and data callables come from ``--model-set`` / ``--data-set key=value``
(:attr:`~peergrad.train.config.TrainConfig.model_options` / ``data_options``); string values are
read by :func:`parse_option_value` (``128`` -> int, ``0.5`` -> float, ``true``/``false`` -> bool,
``256,128`` or ``64,`` -> tuple, anything else stays a string, as does every value of a
parameter annotated ``str``). Values that are not strings (from Python) pass unchanged.

Every check of these options that can be made without building anything is made by
:func:`check_resolvable` (part of :func:`peergrad.train.validate.validate`), so bad input fails
before the first step with one line naming the flag (``ValueError``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from peergrad._importing import import_object
from peergrad.train.checks import check_fields, unknown_dataset, unknown_model
from peergrad.train.names import BUFFERS as BUFFERS
from peergrad.train.names import LOSSES as _LOSSES
from peergrad.train.names import TEXT_DATA_OPTIONS, TEXT_DATASET_NAMES

__all__ = [
    "LOSSES",
    "check_resolvable",
    "import_callable",
    "mse_loss",
    "parse_option_value",
    "resolve_dataset",
    "resolve_loss",
    "resolve_model",
    "resolve_text_loss",
    "text_seq_len",
]

#: Built-in names of ``--loss`` (besides ``package.module:callable``).
LOSSES: tuple[str, ...] = _LOSSES
#: Prefixes of ``--model`` naming a model of another package.
PACKAGES: tuple[str, ...] = ("torchvision", "timm")


def import_callable(spec: str, *, flag: str) -> Callable[..., Any]:
    """The callable named ``package.module:callable`` (``callable`` may be dotted: ``Cls.make``).

    The module is imported with :func:`importlib.import_module`; when its top-level package is
    not found and the current directory is not on ``sys.path``, the current directory is added
    (as ``python -m`` and ``python script.py`` do) and the import is tried again.

    Raises:
        ValueError: ``spec`` is not ``module:callable``, the module cannot be imported (the
            message has the import error), it has no such attribute, or the attribute is not
            callable; the message starts with ``flag`` and ``spec``.
    """
    obj = import_object(spec, flag=flag)
    if not callable(obj):
        attr = spec.partition(":")[2].strip()
        raise ValueError(f"{flag} {spec!r}: {attr!r} is a {type(obj).__name__}, not a callable")
    return obj


def parse_option_value(text: str) -> Any:
    """A ``--model-set`` / ``--data-set`` value: int, float, bool (``true``/``false``), a tuple
    of those when it has a comma (``64,`` is a one-element tuple), else the string itself."""
    value = text.strip()
    if "," in value:
        return tuple(parse_option_value(p) for p in value.split(",") if p.strip())
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C extensions have none
        return None


def _convert(fn: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with string values parsed (kept as strings for ``str``-annotated ones)."""
    sig = _signature(fn)
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, str):
            param = sig.parameters.get(key) if sig is not None else None
            keep = param is not None and param.annotation in (str, "str")
            value = value if keep else parse_option_value(value)
        out[key] = value
    return out


def _check_options(
    fn: Callable[..., Any],
    options: Mapping[str, Any],
    *,
    flag: str,
    what: str,
    exclude: tuple[str, ...] = (),
) -> None:
    """``ValueError`` naming ``flag`` when ``fn`` cannot take every key of ``options``."""
    sig = _signature(fn)
    if sig is None:
        return
    params = {
        name: p
        for name, p in sig.parameters.items()
        if name not in exclude
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.VAR_KEYWORD)
    }
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        accepted = ", ".join(params) or "none"
        raise ValueError(
            f"{flag} {', '.join(unknown)}: {what} has no such option; accepted: {accepted}"
        )


def _needs_package(flag: str, spec: str, package: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"{flag} {spec} needs the package {package} (pip install {package})")


def resolve_model(
    spec: str,
    options: Mapping[str, Any],
    input_shape: tuple[int, ...] | None,
    num_classes: int | None,
) -> Callable[[], nn.Module]:
    """A factory of freshly initialised models for ``--model SPEC --model-set ...``.

    ``spec`` is one of

    * a built-in name of :data:`peergrad.models.MODELS`: :func:`peergrad.models.build_model`
      ``(spec, input_shape, num_classes, **options)`` (options ``hidden``, ``norm``, ``groups``);
      it is built once on the ``meta`` device here (no memory, no random numbers drawn), so a
      bad option value fails now;
    * ``package.module:callable``: ``callable(**options)``, also given ``input_shape`` and
      ``num_classes`` when it has parameters of those names that ``options`` does not set;
    * ``torchvision:NAME``: ``torchvision.models.get_model(NAME, num_classes=..., **options)``;
    * ``timm:NAME``: ``timm.create_model(NAME, num_classes=..., in_chans=..., **options)``.

    Call the factory right after seeding (``torch.manual_seed``) for a reproducible model.

    Raises:
        ValueError: unknown name, an import path that does not exist or is not callable, a
            missing package (``--model torchvision:resnet18 needs the package torchvision``),
            an option the model does not take (``--model-set KEY ...; accepted: ...``), a
            built-in model without ``num_classes``; the factory raises ``ValueError`` when the
            callable returns something other than an ``nn.Module``.
    """
    options = dict(options)
    if not isinstance(spec, str):
        raise ValueError(f"--model must be a string, got {spec!r}")
    prefix, sep, name = spec.partition(":")
    if not sep:
        return _builtin_model(spec, options, input_shape, num_classes)
    if prefix in PACKAGES:
        return _packaged_model(spec, options, input_shape, num_classes)
    fn = import_callable(spec, flag="--model")
    _check_options(fn, options, flag="--model-set", what=f"--model {spec}")
    kwargs = _convert(fn, options)
    sig = _signature(fn)
    if sig is not None:
        for key, value in (("input_shape", input_shape), ("num_classes", num_classes)):
            if key in sig.parameters and key not in kwargs and value is not None:
                # value is input_shape (a tuple) or num_classes (an int), as the key says
                kwargs[key] = tuple(value) if key == "input_shape" else int(value)  # type: ignore[arg-type]

    def user() -> nn.Module:
        return _checked_module(spec, fn(**kwargs))

    return user


def _builtin_model(
    spec: str,
    options: dict[str, Any],
    input_shape: tuple[int, ...] | None,
    num_classes: int | None,
) -> Callable[[], nn.Module]:
    """:func:`resolve_model` of a built-in name: checked by building it on ``meta``."""
    from peergrad.models import _SPECS, MODELS, build_model

    if spec not in MODELS:
        raise unknown_model(spec)
    if input_shape is None or num_classes is None:
        raise ValueError(
            f"--model {spec} needs the data set's input shape and number of classes; the "
            "data gives none (use a model callable, --model package.module:callable)"
        )
    cls = _SPECS[spec][0]
    _check_options(
        cls,
        options,
        flag="--model-set",
        what=f"model {spec!r}",
        exclude=("input_shape", "num_classes"),
    )
    kwargs = _convert(cls, options)
    shape, classes = tuple(input_shape), int(num_classes)
    try:
        with torch.device("meta"):
            build_model(spec, shape, classes, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--model {spec}: {exc}") from None

    def builtin() -> nn.Module:
        return build_model(spec, shape, classes, **kwargs)

    return builtin


def _packaged_model(
    spec: str,
    options: dict[str, Any],
    input_shape: tuple[int, ...] | None,
    num_classes: int | None,
) -> Callable[[], nn.Module]:
    """:func:`resolve_model` of ``torchvision:NAME`` / ``timm:NAME``."""
    prefix, _, name = spec.partition(":")
    _needs_package("--model", spec, prefix)
    if prefix == "torchvision":
        import torchvision  # type: ignore[import-not-found]

        if name not in torchvision.models.list_models():
            raise ValueError(
                f"--model {spec}: torchvision has no model {name!r} "
                "(see torchvision.models.list_models())"
            )
        make: Callable[..., Any] = torchvision.models.get_model
        defaults: dict[str, Any] = {}
    else:
        import timm  # type: ignore[import-not-found]

        if not timm.is_model(name):
            raise ValueError(f"--model {spec}: timm has no model {name!r} (see timm.list_models())")
        make = timm.create_model
        defaults = (
            {"in_chans": int(input_shape[0])} if input_shape and len(input_shape) == 3 else {}
        )
    kwargs = {**defaults, **_convert(make, options)}
    if num_classes is not None:
        kwargs.setdefault("num_classes", int(num_classes))

    def packaged() -> nn.Module:
        return _checked_module(spec, make(name, **kwargs))

    return packaged


def _checked_module(spec: str, module: Any) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"--model {spec} returned a {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def _is_dataset(obj: Any) -> bool:
    return (
        hasattr(obj, "__getitem__")
        and hasattr(obj, "__len__")
        and not isinstance(obj, (tuple, list, torch.Tensor))
    )


def _check_split(spec: str, split: str, data: Any) -> None:
    if _is_dataset(data):
        return
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        x, y = data
        if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"--dataset {spec}: the {split} split's tensors must share their first "
                f"dimension, got x {tuple(x.shape)} and y {tuple(y.shape)}"
            )
        return
    raise ValueError(
        f"--dataset {spec}: the {split} split must be a torch.utils.data.Dataset or an (x, y) "
        f"pair of tensors, got {type(data).__name__}"
    )


def _info(train: Any, test: Any) -> dict[str, Any]:
    """``input_shape`` and ``num_classes`` (None when they cannot be read off the data)."""
    if _is_dataset(train):
        sample = train[0]
        x = sample[0] if isinstance(sample, (tuple, list)) else sample
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else None
        classes = getattr(train, "classes", None)
        num_classes = len(classes) if classes is not None else None
        return {"input_shape": shape, "num_classes": num_classes}
    x, y = train
    num_classes = None
    if not y.is_floating_point() and y.ndim == 1 and y.numel():
        top = int(y.max())
        if test is not None and not _is_dataset(test) and test[1].numel():
            top = max(top, int(test[1].max()))
        num_classes = top + 1
    return {"input_shape": tuple(x.shape[1:]), "num_classes": num_classes}


@functools.lru_cache(maxsize=1)
def _load_builtin(
    spec: str, root: str | None, seed: int, download: bool, seq_len: int | None = None
) -> Any:
    """:func:`peergrad.data.load_dataset`, kept for the next call with the same arguments: the
    runs of a comparison (labels x grid values x seeds) read the data set once. One data set is
    kept (CIFAR-10 is 600 MB in float32); its tensors are never modified in place by a run.
    ``seq_len``: of a text data set (None for the others)."""
    from peergrad.data import load_dataset

    if seq_len is not None:
        return load_dataset(spec, seq_len=seq_len)
    return load_dataset(spec, root=root, seed=seed, download=download)


def text_seq_len(spec: str, options: Mapping[str, Any]) -> int:
    """The window length of the built-in text data set ``spec`` from its ``--data-set``
    options (``seq_len``, default :data:`peergrad.data.DEFAULT_SEQ_LEN`; a string is parsed).

    Raises:
        ValueError: one line: an option other than ``seq_len``, or ``seq_len`` outside ``[1,
            shortest split - 1]`` (:func:`peergrad.data.text.check_seq_len`), naming
            ``--data-set seq_len`` and the range.
    """
    from peergrad.data.text import DEFAULT_SEQ_LEN, check_seq_len

    unknown = sorted(set(options) - set(TEXT_DATA_OPTIONS))
    if unknown:
        raise ValueError(
            f"--data-set {', '.join(unknown)}: the built-in data set {spec!r} has no such "
            f"option; accepted: {', '.join(TEXT_DATA_OPTIONS)}"
        )
    value = options.get("seq_len", DEFAULT_SEQ_LEN)
    if isinstance(value, str):
        value = parse_option_value(value)
    try:
        return check_seq_len(value, spec)
    except ValueError as exc:
        raise ValueError(f"--data-set seq_len={options.get('seq_len')}: {exc}") from None


def _text_dataset(spec: str, options: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """:func:`resolve_dataset` of a built-in text data set (its ``seq_len`` option)."""
    text = _load_builtin(spec, None, 0, False, text_seq_len(spec, options))
    info = {
        "input_shape": text.input_shape,
        "num_classes": text.num_classes,
        "name": spec,
        "description": text.description,
        "val": (text.x_val, text.y_val),
        "text": True,
    }
    return (text.x_train, text.y_train), (text.x_test, text.y_test), info


def resolve_dataset(
    spec: str,
    options: Mapping[str, Any],
    *,
    root: str | None = None,
    download: bool = True,
    seed: int = 0,
) -> tuple[Any, Any, dict[str, Any]]:
    """The train and test data of ``--dataset SPEC --data-set ...``, and what they say.

    * a built-in name of :data:`peergrad.data.DATASETS`: the in-memory tensors
      ``(x_train, y_train), (x_test, y_test)`` of :func:`peergrad.data.load_dataset`
      (``root``, ``download``, ``seed`` as there; built-ins take no ``options`` but the text
      data sets' ``seq_len``, :func:`text_seq_len`; a text data set also gives its validation
      windows as ``info["val"] = (x_val, y_val)`` and ``info["text"] = True``);
    * ``package.module:callable``: ``callable(**options)``, which must return ``(train, test)``,
      each a map-style ``torch.utils.data.Dataset`` or an ``(x, y)`` pair of tensors (``test``
      may be None).

    Returns:
        ``(train, test, info)``; ``info`` has ``input_shape`` (one sample's shape) and
        ``num_classes`` (for tensors with integer labels: the largest label + 1; for a Dataset:
        ``len(dataset.classes)`` if it has ``classes``; else None), and ``name``.

    Raises:
        ValueError: unknown name, options for a built-in data set, a bad import path, an option
            the callable does not take, or a return value of the wrong shape; the message names
            ``--dataset`` or ``--data-set``. ``FileNotFoundError`` from :func:`load_dataset`.
    """
    from peergrad.data import DATASETS

    options = dict(options)
    if not isinstance(spec, str):
        raise ValueError(f"--dataset must be a string, got {spec!r}")
    if ":" not in spec:
        if spec not in DATASETS:
            raise unknown_dataset(spec)
        if spec in TEXT_DATASET_NAMES:
            return _text_dataset(spec, options)
        if options:
            raise ValueError(
                f"--data-set {', '.join(sorted(options))}: the built-in data set {spec!r} takes "
                "no options"
            )
        # only synthetic-logistic draws its data from the seed; the real data sets' splits are
        # fixed, so the runs of every seed share one load
        ds = _load_builtin(spec, root, seed if spec == "synthetic-logistic" else 0, download)
        info = {
            "input_shape": ds.input_shape,
            "num_classes": ds.num_classes,
            "name": spec,
            "description": ds.description,
        }
        return (ds.x_train, ds.y_train), (ds.x_test, ds.y_test), info
    fn = import_callable(spec, flag="--dataset")
    _check_options(fn, options, flag="--data-set", what=f"--dataset {spec}")
    result = fn(**_convert(fn, options))
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ValueError(
            f"--dataset {spec} must return (train, test), got {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        )
    train, test = result
    if isinstance(train, torch.Tensor) and isinstance(test, torch.Tensor):
        raise ValueError(
            f"--dataset {spec} must return (train, test), each a Dataset or an (x, y) pair of "
            "tensors; got one pair of tensors (one split?)"
        )
    _check_split(spec, "train", train)
    if test is not None:
        _check_split(spec, "test", test)
    return train, test, {**_info(train, test), "name": spec}


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error, ``targets`` reshaped to ``outputs``' shape (``[B]`` targets for
    ``[B, 1]`` outputs) and cast to their dtype; ``ValueError`` when the sizes differ."""
    if targets.numel() != outputs.numel():
        raise ValueError(
            f"--loss mse: outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} "
            "differ in size"
        )
    return F.mse_loss(outputs, targets.reshape(outputs.shape).to(outputs.dtype))


def resolve_loss(
    spec: str,
) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], str | None]:
    """``(loss_fn, metric)`` of ``--loss SPEC``: ``loss_fn(outputs, targets)`` is the batch mean.

    ``cross-entropy`` -> (:func:`torch.nn.functional.cross_entropy`, ``"accuracy"``); ``mse`` ->
    (:func:`mse_loss`, None); ``package.module:callable`` -> (the callable, None), where a
    ``torch.nn.Module`` class (e.g. ``torch.nn:SmoothL1Loss``) is instantiated without arguments.

    Raises:
        ValueError: unknown name or a bad import path, naming ``--loss``.
    """
    if spec == "cross-entropy":
        return F.cross_entropy, "accuracy"
    if spec == "mse":
        return mse_loss, None
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"--loss {spec!r}: unknown loss; allowed: {', '.join(LOSSES)}, package.module:callable"
        )
    fn = import_callable(spec, flag="--loss")
    if isinstance(fn, type) and issubclass(fn, nn.Module):
        try:
            fn = fn()
        except TypeError as exc:
            raise ValueError(f"--loss {spec}: cannot build it without arguments: {exc}") from None
    return cast(Callable[[torch.Tensor, torch.Tensor], torch.Tensor], fn), None


def resolve_text_loss(
    spec: str,
) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], str | None, str]:
    """``(loss_fn, metric, metric_mode)`` of ``--loss SPEC`` on a built-in text data set
    (next-token windows): ``cross-entropy`` -> the mean token cross-entropy
    (:func:`peergrad.models.token_cross_entropy`), ``"perplexity"``, ``"min"``; a
    ``package.module:callable`` -> (the callable, None, ``"max"``), as :func:`resolve_loss`.

    Raises:
        ValueError: ``--loss mse`` (the targets are token ids), or what :func:`resolve_loss`
            raises.
    """
    if spec == "mse":
        raise ValueError(
            "--loss mse: a text data set's targets are token ids (next-token prediction); use "
            "--loss cross-entropy (token cross-entropy, recorded with perplexity) or "
            "package.module:callable"
        )
    if spec == "cross-entropy":
        from peergrad.models import token_cross_entropy

        return token_cross_entropy, "perplexity", "min"
    fn, _ = resolve_loss(spec)
    return fn, None, "max"


def _check_text_preset(config: Any) -> None:
    """A built-in text ``--dataset``: its ``seq_len`` fits, ``--loss`` is not ``mse`` and a
    built-in ``--model`` is the ``transformer`` (the others read float features), whose sizes
    fit (built on ``meta``: ``d_model`` divisible by ``n_heads``, ``seq_len <= context`` ...)."""
    from peergrad.data.text import VOCAB_SIZE

    seq_len = text_seq_len(config.dataset, config.data_options)
    resolve_text_loss(config.loss)
    model = config.model
    if isinstance(model, str) and ":" not in model:
        if model != "transformer":
            raise ValueError(
                f"--model {model}: --dataset {config.dataset} is text (int64 windows of token "
                "ids -> next-token logits); use --model transformer or package.module:callable"
            )
        _builtin_model(model, dict(config.model_options), (seq_len,), VOCAB_SIZE)


def check_resolvable(config: Any, *, custom_task: bool = False) -> None:
    """The checks of what is resolved here, before any work (no data loaded, no model built):
    part of :func:`peergrad.train.validate.validate`, after the torch-free
    :func:`~peergrad.train.checks.check_fields`.

    ``--loss`` resolves; ``--tensorboard`` has its package installed
    (:func:`~peergrad.train.logs.check_tensorboard`); a ``package.module:callable`` ``--model``
    / ``--dataset`` imports and is callable, and takes the ``--model-set`` / ``--data-set``
    keys; a ``torchvision:NAME`` / ``timm:NAME`` model has its package; a built-in ``--model``
    takes its ``--model-set`` keys; a built-in text ``--dataset`` (``pydoc-topics``) has a
    ``seq_len`` that fits its splits, no ``--loss mse`` and, among the built-in models, the
    ``transformer``. With ``custom_task`` (the run trains a
    :class:`~peergrad.train.task.Task`) ``--model``, ``--dataset`` and their options are labels
    only and are not checked.

    Raises:
        ValueError: the first bad field, naming its flag and what it accepts.
    """
    resolve_loss(config.loss)
    if getattr(config, "tensorboard", False):
        from .logs import check_tensorboard

        check_tensorboard()
    if custom_task:
        return
    model = config.model
    if isinstance(model, str) and ":" not in model:
        from peergrad.models import _SPECS

        if model not in _SPECS:
            raise unknown_model(model)
        _check_options(
            _SPECS[model][0],
            config.model_options,
            flag="--model-set",
            what=f"model {model!r}",
            exclude=("input_shape", "num_classes"),
        )
    elif isinstance(model, str) and model.partition(":")[0] in PACKAGES:
        _needs_package("--model", model, model.partition(":")[0])
    else:
        fn = import_callable(model, flag="--model")
        _check_options(fn, config.model_options, flag="--model-set", what=f"--model {model}")
    dataset = config.dataset
    if not (isinstance(dataset, str) and ":" not in dataset):
        fn = import_callable(dataset, flag="--dataset")
        _check_options(fn, config.data_options, flag="--data-set", what=f"--dataset {dataset}")
    elif dataset in TEXT_DATASET_NAMES:
        _check_text_preset(config)


def check_config(config: Any, *, custom_task: bool = False) -> None:
    """Deprecated: :func:`peergrad.train.validate.validate` runs these checks and every other.

    Runs :func:`~peergrad.train.checks.check_fields` and :func:`check_resolvable` (the old
    scope of this function and more); ``ValueError`` naming the flag."""
    warnings.warn(
        "peergrad.train.resolve.check_config is deprecated: use "
        "peergrad.train.validate.validate, which runs every check of a configuration",
        DeprecationWarning,
        stacklevel=2,
    )
    check_fields(config, custom_task=custom_task)
    check_resolvable(config, custom_task=custom_task)
