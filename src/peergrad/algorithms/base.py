"""The Algorithm interface, its state convention and parameter checks.

An algorithm is a frozen dataclass of hyper-parameters with two methods:

- ``init(x, comm) -> state``: allocate the state for parameters ``x`` (``[w, D]``);
- ``step(x, g, state, comm, closure=None) -> state``: one iteration, i.e. one stochastic gradient
  ``g`` (``[w, D]``, evaluated at the current ``x``) per worker plus the communication the paper
  does in one iteration. ``x`` is updated **in place** (the model's parameters are views into it);
  the returned state replaces the old one (its tensors may also be updated in place). ``g`` is
  only valid during the call: the engine reuses its buffer for the next gradient, so an
  algorithm copies what it keeps (``state.g_prev.copy_(g)``), never a reference to ``g``.

``closure(x_trial)`` (optional) returns each worker's loss ``[w]`` on its current minibatch at a
trial point, without a backward pass, with the same minibatch and the same randomness (dropout
masks) as the gradient; line-search methods use it. The engines pass a :class:`LossClosure`,
which also carries the loss at the current ``x`` that the gradient pass already computed, so a
line search needs no extra forward pass for f(x_t). Algorithms with ``needs_closure = True``
raise ``ValueError`` when stepped without a closure.

Overlap: ``pre_gradient(x, state, comm)`` may start communication that does not depend on the
gradient (the gossip of x in combine-then-adapt forms, via ``comm.mix_start``); the training loop
calls it before computing ``g`` and must pass its return value to ``step`` as ``pending`` (on the
distributed engine an unused handle leaves messages in flight that the next gossip would
mismatch). Calling ``step`` without having called ``pre_gradient`` is always valid and gives the
same result.

State is a dataclass of tensors and ints (``step`` counts iterations from 0) so that it can be
saved and restored exactly with :func:`state_to_dict` / :func:`state_from_dict`.

Failures (a system profile with dropped links or absent workers, issue 26; model in
:mod:`peergrad.comm.simulated`): each algorithm declares ``failures`` ("supported" or
"refused") and ``failures_note`` (what failures do to its invariants, or why it is refused).
The engine, not the algorithm, implements them: gossip rounds use the Metropolis–Hastings
weights of the round's surviving graph, ``mean`` and ``all_gather`` the present workers, and an
absent worker's rows of x and of its state are put back after the step.
:func:`check_failures` is the one check to run before any work.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from peergrad.comm.base import Communicator
from peergrad.transforms import add_weight_decay, heavy_ball

Closure = Callable[[Tensor], Tensor]


@dataclasses.dataclass(frozen=True)
class LossClosure:
    """A closure that also knows the loss at the current iterate.

    ``fn(x_trial [w, D]) -> [w]``: each worker's loss on its current minibatch at a trial point
    (no backward pass; same minibatch and randomness as the gradient). ``loss``: ``[w]``, the
    loss at the current ``x`` that the gradient pass returned (``fn(x)`` without evaluating it
    again). Called like ``fn``.
    """

    fn: Closure
    loss: Tensor

    def __call__(self, x_trial: Tensor) -> Tensor:
        return self.fn(x_trial)


def loss_at_current(closure: Closure, x: Tensor) -> Tensor:
    """The loss ``[w]`` at the current ``x``: ``closure.loss`` of a :class:`LossClosure` (no
    evaluation), else ``closure(x)``."""
    return closure.loss if isinstance(closure, LossClosure) else closure(x)


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """Base class; subclasses are frozen dataclasses setting ``name``, ``paper``, ``summary``."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: True for line-search methods: ``step`` needs ``closure`` (``ValueError`` without one).
    needs_closure: ClassVar[bool] = False
    #: Behaviour under a system profile's failures: "supported" (runs on each round's surviving
    #: graph and the present workers) or "refused" (:func:`check_failures` raises).
    failures: ClassVar[str] = "supported"
    #: One line: what failures do to the method's invariants, or why it refuses them.
    failures_note: ClassVar[str] = ""
    #: Behaviour on the elastic engine (``--elastic``, torchft), where a worker that leaves is
    #: gone and one that rejoins receives a live peer's state: "supported", "refused", or None
    #: (default) for the same as ``failures``. :func:`check_elastic` checks it.
    elastic: ClassVar[str | None] = None
    #: One line for the elastic engine when it differs from ``failures_note``.
    elastic_note: ClassVar[str] = ""
    #: Whether one step is the same computation when the buffer is cut into column ranges: every
    #: coordinate's update depends only on that coordinate of ``x``, ``g`` and the state, every
    #: message is combined coordinate by coordinate (gossip, all-reduce), and the state tensors
    #: are ``[w, k*D]``. Then :class:`~peergrad.optim.DistributedOptimizer` may step each bucket
    #: on its own as soon as its gradients are ready (overlap with the backward pass) and give
    #: each param group its own ``lr``/``momentum``/``weight_decay``. Default False (one step
    #: over the whole buffer); a subclass whose answer depends on its options overrides it with
    #: a property (``allreduce``: False with ``clip_grad_norm``). ``tests/test_optim_overlap.py``
    #: checks every algorithm for which it is True.
    coordinatewise: ClassVar[bool] = False
    #: True when communication preserves the workers' average of x (doubly stochastic gossip):
    #: the average after a step equals the average of the same step taken without any
    #: communication (W = I). The conformance kit (:mod:`peergrad.testing`) checks it when True.
    preserves_mean: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Adapt a subclass that still defines ``coordinatewise`` as a method (before it was an
        attribute): it becomes a property, with a ``DeprecationWarning``; a bound method read as
        an attribute would otherwise always be true."""
        super().__init_subclass__(**kwargs)
        legacy = cls.__dict__.get("coordinatewise")
        if inspect.isfunction(legacy):
            warnings.warn(
                f"{cls.__qualname__}.coordinatewise is a method; declare it as a class attribute "
                "(coordinatewise: ClassVar[bool] = True) or a property",
                DeprecationWarning,
                stacklevel=2,
            )
            cls.coordinatewise = property(legacy)  # type: ignore[assignment]

    def init(self, x: Tensor, comm: Communicator) -> Any:
        raise NotImplementedError

    def step(
        self,
        x: Tensor,
        g: Tensor,
        state: Any,
        comm: Communicator,
        closure: Closure | None = None,
        pending: Any = None,
    ) -> Any:
        raise NotImplementedError

    def pre_gradient(self, x: Tensor, state: Any, comm: Communicator) -> Any:
        """Start communication that may overlap the gradient computation (default: none)."""
        return None

    def membership_changed(self, x: Tensor, state: Any, comm: Communicator) -> Any:
        """The elastic engine calls this on every worker present right after a quorum whose
        workers differ from the last one's (a worker left or joined; on a rejoining worker
        after it received a live peer's state), before the step. Return the state to go on
        with (default: unchanged). Local: no communication."""
        return state

    def check_topology(self, comm: Communicator) -> None:
        """Raise ``ValueError`` when the communicator's topology does not suit the method."""

    def uses_topology(self) -> bool:
        """Whether the method gossips over ``comm.topology`` (default True). Methods that only
        average exactly (all-reduce, all-gather) return False: ``--topology`` does not change
        them, ``peergrad train`` warns when one is given and leaves it out of the run folder's
        name."""
        return True

    @classmethod
    def hyperparameters(cls) -> dict[str, dataclasses.Field[Any]]:
        return {f.name: f for f in dataclasses.fields(cls)}

    def options(self) -> dict[str, Any]:
        """The hyper-parameters as a JSON-serialisable dict."""
        return {k: getattr(self, k) for k in self.hyperparameters()}


@dataclasses.dataclass
class MomentumState:
    """``step``: iterations done; ``momentum_buffer``: ``[w, D]`` (zeros when momentum = 0)."""

    step: int
    momentum_buffer: Tensor


class MomentumLike(Protocol):
    """Typing only: the fields :meth:`SGDAlgorithm.direction` uses, which every state of an
    :class:`SGDAlgorithm` subclass has (:class:`MomentumState` or the method's own dataclass)."""

    step: int
    momentum_buffer: Tensor


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_unit_interval(name: str, value: float, *, closed_right: bool = False) -> None:
    ok = isinstance(value, int | float) and (0 <= value <= 1 if closed_right else 0 <= value < 1)
    if not ok:
        bound = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_b1_alias(momentum: float, b1: float | None, default_momentum: float) -> None:
    """Adaptive methods: ``momentum`` is an alias of β₁ (``b1``); reject two different values.

    ``momentum`` in [0, 1), ``b1`` (when given) in [0, 1); they may differ only while
    ``momentum`` keeps its default, so ``--set b1=...`` works beside the CLI's ``--momentum``.
    """
    check_unit_interval("momentum", momentum)
    if b1 is not None:
        check_unit_interval("b1", b1)
        if momentum not in (default_momentum, b1):
            raise ValueError(
                f"b1={b1!r} and momentum={momentum!r} disagree: momentum is an alias of b1 (β₁); "
                "give only one of them"
            )


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def require_doubly_stochastic(comm: Communicator, method: str, atol: float = 1e-10) -> None:
    """Raise ``ValueError`` unless every W(k) of the schedule has rows and columns summing to 1."""
    for k, W in enumerate(comm.topology.matrices):
        d = W.dense
        rows, cols = abs(d.sum(axis=1) - 1).max(), abs(d.sum(axis=0) - 1).max()
        if rows > atol or cols > atol:
            raise ValueError(
                f"{method} needs a doubly stochastic mixing matrix, but W({k}) of topology "
                f"{comm.topology.name!r} has row sums off by {rows:.3g} and column sums off by "
                f"{cols:.3g} (tolerance {atol})"
            )


FAILURE_BEHAVIOURS: tuple[str, ...] = ("supported", "refused")


def check_failures(algorithm: Algorithm, topology: Any, profile: Any) -> None:
    """Raise ``ValueError`` (one line) when ``algorithm`` cannot run on ``topology`` under the
    failures of the system profile ``profile``; call it before any work.

    Nothing is checked when the profile has no failures. Otherwise: an algorithm whose
    ``failures`` is "refused" is refused (the message names the profile option, the algorithm
    and its reason); an algorithm that gossips (:meth:`Algorithm.uses_topology`) on a directed
    topology (the exponential graphs, one-peer exponential included) is refused, since a
    directed W cannot stay doubly stochastic when an edge or a worker drops.
    """
    options = profile.failures.options
    if not options:
        return
    option = " and ".join(options)
    if algorithm.failures not in FAILURE_BEHAVIOURS:
        raise ValueError(
            f"{algorithm.name}: failures must be one of {', '.join(FAILURE_BEHAVIOURS)}, got "
            f"{algorithm.failures!r}"
        )
    if algorithm.failures == "refused":
        raise ValueError(
            f"{option} is set in the system profile, but {algorithm.name} cannot run under "
            f"failures: {algorithm.failures_note}"
        )
    if algorithm.uses_topology() and topology.directed:
        raise ValueError(
            f"{option} is set in the system profile, but topology {topology.name!r} is directed "
            f"(a directed W cannot stay doubly stochastic when a link or worker drops); use an "
            f"undirected topology such as ring, torus or erdos-renyi with {algorithm.name}"
        )


def check_elastic(algorithm: Algorithm, topology: Any) -> None:
    """Raise ``ValueError`` (one line) when ``algorithm`` cannot run on the elastic engine
    (``--elastic``): its ``elastic`` behaviour (``failures`` when None) is "refused", or it
    gossips on a directed topology (a directed W cannot stay doubly stochastic when a worker
    leaves). Call it before any work."""
    behaviour = algorithm.elastic if algorithm.elastic is not None else algorithm.failures
    note = algorithm.elastic_note or algorithm.failures_note
    if behaviour not in FAILURE_BEHAVIOURS:
        raise ValueError(
            f"{algorithm.name}: elastic must be one of {', '.join(FAILURE_BEHAVIOURS)} or None, "
            f"got {behaviour!r}"
        )
    if behaviour == "refused":
        raise ValueError(
            f"--elastic: {algorithm.name} cannot survive a change of the workers present: {note}"
        )
    if algorithm.uses_topology() and topology.directed:
        raise ValueError(
            f"--elastic: topology {topology.name!r} is directed (a directed W cannot stay doubly "
            f"stochastic when a worker leaves); use an undirected topology such as ring, torus "
            f"or erdos-renyi with {algorithm.name}"
        )


def bind_run(
    algorithm: Algorithm,
    *,
    segments: Sequence[int] | None = None,
    shapes: Sequence[Sequence[int]] | None = None,
    batches_per_epoch: float | None = None,
) -> Algorithm:
    """``algorithm`` with the run-dependent hyper-parameters it left as ``None`` filled in.

    ``segments`` (the model's parameter-tensor sizes) go to methods with ``layerwise=True`` and
    to methods with ``fragments > 1`` (DiLoCo's streaming fragments, groups of whole tensors;
    binding more fragments than tensors raises the method's ``ValueError``);
    ``shapes`` (the parameter tensors' shapes, in buffer order) to methods with a ``shapes``
    field (PowerSGD's matrices; binding them may raise the method's ``ValueError``);
    ``batches_per_epoch`` (each worker's minibatches per epoch, rounded, at least 1) to methods
    with that field (the Armijo reset rule). Values the user set are kept. The engines call this
    once the model and the data are known; other algorithms are returned unchanged.
    """
    fields = algorithm.hyperparameters()
    changes: dict[str, Any] = {}
    fragments = getattr(algorithm, "fragments", 1)
    streaming = isinstance(fragments, int) and fragments > 1
    if segments is not None and (getattr(algorithm, "layerwise", False) or streaming):
        if "segments" in fields and algorithm.segments is None:  # type: ignore[attr-defined]
            changes["segments"] = tuple(int(s) for s in segments)
    if shapes is not None and "shapes" in fields:
        if algorithm.shapes is None:  # type: ignore[attr-defined]
            changes["shapes"] = tuple(tuple(int(d) for d in s) for s in shapes)
    if batches_per_epoch is not None and "batches_per_epoch" in fields:
        if algorithm.batches_per_epoch is None:  # type: ignore[attr-defined]
            changes["batches_per_epoch"] = max(1, round(batches_per_epoch))
    return dataclasses.replace(algorithm, **changes) if changes else algorithm


def state_to_dict(state: Any) -> dict[str, Any]:
    """Shallow dict of a state dataclass (tensors are not copied)."""
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


def state_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a state dataclass of type ``cls`` from :func:`state_to_dict` output."""
    names = {f.name for f in dataclasses.fields(cls)}
    if set(data) != names:
        raise ValueError(
            f"state for {cls.__name__} needs exactly the fields {sorted(names)}, got {sorted(data)}"
        )
    return cls(**data)


ADAPTIVE_MOMENTUM_DEFAULT = 0.9


@dataclasses.dataclass(frozen=True)
class AdaptiveAlgorithm(Algorithm):
    """Base for the Adam-family methods: ``lr`` (α, > 0), ``b1`` (β₁ in [0, 1); ``None`` means
    ``momentum``) and ``momentum`` (the registry-wide alias of β₁, default 0.9; a given ``b1``
    overrides the default value, see :func:`check_b1_alias`). :attr:`beta1` is the β₁ in force.

    Options:

    - ``lr`` > 0: the step size α; default 1e-3, Adam's (Kingma & Ba) and the papers' default.
    - ``b1`` in [0, 1), or None: β₁, the first-moment (momentum) weight; None: ``momentum``.
    - ``momentum`` in [0, 1): the registry-wide name of β₁ (``--momentum``); default 0.9, the β₁
      of Adam and of the papers; ``--set b1=`` may replace it while it keeps its default.
    """

    lr: float = 1e-3
    b1: float | None = None
    momentum: float = ADAPTIVE_MOMENTUM_DEFAULT

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        check_b1_alias(self.momentum, self.b1, ADAPTIVE_MOMENTUM_DEFAULT)

    @property
    def beta1(self) -> float:
        """β₁: ``b1`` when given, else ``momentum``."""
        return self.momentum if self.b1 is None else self.b1


@dataclasses.dataclass(frozen=True)
class SGDAlgorithm(Algorithm):
    """Base for methods whose local update is SGD with heavy-ball momentum and weight decay.

    Hyper-parameters: ``lr`` (> 0), ``momentum`` (in [0, 1)), ``nesterov``, ``weight_decay``
    (>= 0, L2 folded into the gradient). :meth:`direction` gives the local descent direction.

    Defaults follow the papers, which analyse plain SGD: no momentum and no weight decay (both
    are deep-learning additions; pass ``--momentum 0.9`` for the usual heavy-ball setting).

    Options:

    - ``lr`` > 0: the step size γ; default 0.1.
    - ``momentum`` in [0, 1): local heavy-ball momentum on the gradient; default 0, the plain SGD
      the paper analyses.
    - ``nesterov`` true or false: Nesterov's form of that momentum (needs momentum > 0 to matter).
    - ``weight_decay`` >= 0: L2 weight decay, added to the gradient; default 0 (not in the paper).
    """

    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        check_unit_interval("momentum", self.momentum)
        check_non_negative("weight_decay", self.weight_decay)

    def init(self, x: Tensor, comm: Communicator) -> MomentumLike:
        return MomentumState(step=0, momentum_buffer=torch.zeros_like(x))

    def direction(self, x: Tensor, g: Tensor, state: MomentumLike) -> Tensor:
        """``heavy_ball(buf, g + weight_decay * x)``; updates ``state.momentum_buffer``."""
        g = add_weight_decay(g, x, self.weight_decay)
        return heavy_ball(state.momentum_buffer, g, self.momentum, self.nesterov)
