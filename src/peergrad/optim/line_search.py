"""The closure of :class:`~peergrad.optim.DistributedOptimizer`'s ``step``, and the RNG replay
that lets a line search (Armijo) re-evaluate it at trial points.

``step(closure)`` calls the user's closure once with gradients enabled (the loss and
``backward``). A line-search algorithm (``algorithm.needs_closure``) then evaluates the same
closure at trial points: under ``torch.no_grad()``, from the RNG state of that first call
(:class:`_RngState`: dropout masks and data augmentation are drawn again identically), with
the parameters, the gradient and the RNG restored after every trial
(:meth:`_LineSearch._trial_closure`). Split out of :mod:`peergrad.optim.optimizer` and
:mod:`peergrad.optim.state` (issue 25).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from peergrad.algorithms.base import LossClosure
from peergrad.optim.groups import _Segment


@dataclasses.dataclass(frozen=True)
class _RngState:
    """The global RNG state at one moment: the CPU generator's and, for parameters on an
    accelerator (CUDA, ...), that device's."""

    cpu: Tensor
    device: torch.device
    accelerator: Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> _RngState:
        on_device = device.type != "cpu"
        module = torch.get_device_module(device.type) if on_device else None
        return cls(torch.get_rng_state(), device, module.get_rng_state(device) if module else None)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this RNG state; afterwards the RNG is as it was before the block."""
        on_device = self.accelerator is not None
        devices = [self.device] if on_device else []
        with torch.random.fork_rng(devices, device_type=self.device.type if on_device else None):
            torch.set_rng_state(self.cpu)
            if on_device:
                torch.get_device_module(self.device.type).set_rng_state(
                    self.accelerator, self.device
                )
            yield


class _LineSearch:
    """Mixin of :class:`~peergrad.optim.DistributedOptimizer`: the first call of the closure
    (:meth:`_first_call`, from ``step``) and the trial closure a line search gets. It uses the
    optimizer's ``_x``, ``_g`` (``[1, D]``), ``_segments``, ``algorithm_name`` and ``_sync``."""

    _x: Tensor
    _g: Tensor
    _segments: list[_Segment]

    if TYPE_CHECKING:  # the optimizer's (see the class docstring); no runtime effect

        @property
        def algorithm_name(self) -> str: ...
        def _sync(self, first: int = 0, last: int | None = None) -> None: ...

    def _first_call(
        self, closure: Callable[[], Any] | None, line_search: bool
    ) -> tuple[Any, LossClosure | None]:
        """Call the closure (grad enabled); with one segment, the line search's trial closure."""
        loss, trial = None, None
        if closure is not None:
            rng = _RngState.capture(self._x.device)  # before the first call: trials replay it
            with torch.enable_grad():
                loss = closure()
            whole = len(self._segments) == 1
            if loss is not None and whole:  # the closure sees all of x: one segment only
                trial = self._trial_closure(closure, loss, rng)
            elif line_search:
                raise ValueError(f"{self.algorithm_name}: the closure returned None, not the loss")
        return loss, trial

    def _trial_closure(self, closure: Callable[[], Any], loss: Any, rng: _RngState) -> LossClosure:
        """The algorithm's closure: ``loss`` (the first call's value) at x, and ``x_trial [1, D]
        -> [1]`` evaluated by the user's closure under ``no_grad`` from the RNG state ``rng``;
        the parameters, the gradient and the RNG are restored after every trial."""
        x, g = self._x, self._g
        saved: list[Tensor] = []  # x and g, copied at the first trial (most steps make none)

        def as_row(value: Any) -> Tensor:
            return torch.as_tensor(value).detach().to(x.device, x.dtype).reshape(1)

        def trial(x_trial: Tensor) -> Tensor:
            if not saved:
                saved.extend((x.clone(), g.clone()))
            saved_x, saved_g = saved
            try:
                with torch.no_grad(), rng.replay():
                    x.copy_(x_trial)
                    value = closure()
            except RuntimeError as exc:
                if "does not require grad" not in str(exc):
                    raise
                raise RuntimeError(
                    f"{self.algorithm_name}: the closure called backward() while the line "
                    "search evaluated a trial point under torch.no_grad(); call loss.backward() "
                    "only when torch.is_grad_enabled()"
                ) from exc
            finally:
                self._sync()
                with torch.no_grad():
                    x.copy_(saved_x)
                    g.copy_(saved_g)
            return as_row(value)

        return LossClosure(trial, as_row(loss))
