"""``Topology``: a (possibly time-varying) schedule of mixing matrices W(k).

Source: specification ``decentralized.md`` §2.1 (time-varying one-peer exponential graph:
individual rounds may be disconnected, products over a period mix) and §2.2 (spectral
quantities reported by name).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from peergrad.topology.mixing import MixingMatrix, SpectralInfo, _connectivity_error

__all__ = ["Topology"]


class Topology:
    """A schedule of mixing matrices: round ``k`` uses ``matrices[k % period]``.

    Args:
        matrices: one or more :class:`MixingMatrix` of the same size ``n``; one matrix means
            a static topology.
        name: label used in reports.
        require_connected: require the union of the supports over one period to be strongly
            connected (the individual rounds need not be). ``identity`` passes ``False``.

    Raises:
        ValueError: if ``matrices`` is empty, sizes differ, or the union over a period is not
            strongly connected while ``require_connected``.
    """

    def __init__(
        self,
        matrices: Sequence[MixingMatrix],
        *,
        name: str,
        require_connected: bool = True,
    ) -> None:
        mats = tuple(matrices)
        if not mats:
            raise ValueError("matrices must contain at least one MixingMatrix, got none")
        for k, m in enumerate(mats):
            if not isinstance(m, MixingMatrix):
                raise ValueError(f"matrices[{k}] must be a MixingMatrix, got {type(m).__name__}")
        n = mats[0].n
        for k, m in enumerate(mats):
            if m.n != n:
                raise ValueError(
                    f"all mixing matrices must have the same size; matrices[0] has n = {n} "
                    f"but matrices[{k}] has n = {m.n}"
                )
        if require_connected:
            union = np.zeros((n, n))
            for m in mats:
                union += m.dense
            what = "W" if len(mats) == 1 else f"the union of W(0..{len(mats) - 1})"
            msg = _connectivity_error(union, what)
            if msg is not None:
                raise ValueError(f"topology {name!r}: {msg}")
        self._matrices = mats
        self._name = str(name)
        self._n = n
        self._product_rho: float | None = None

    @property
    def name(self) -> str:
        """Label of the topology (e.g. ``"torus-4x8"``)."""
        return self._name

    @property
    def n(self) -> int:
        """Number of workers."""
        return self._n

    @property
    def period(self) -> int:
        """Length of the schedule (1 for static topologies)."""
        return len(self._matrices)

    @property
    def matrices(self) -> tuple[MixingMatrix, ...]:
        """The ``period`` mixing matrices W(0), …, W(period − 1)."""
        return self._matrices

    @property
    def directed(self) -> bool:
        """Whether any W(k) is non-symmetric."""
        return any(not m.symmetric for m in self._matrices)

    @property
    def time_varying(self) -> bool:
        """Whether ``period > 1``."""
        return self.period > 1

    def at(self, k: int) -> MixingMatrix:
        """Mixing matrix of round ``k`` (``k >= 0``): ``matrices[k % period]``.

        Raises:
            ValueError: if ``k`` is not a non-negative integer.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise ValueError(f"round index k must be an integer >= 0, got {k!r}")
        return self._matrices[int(k) % self.period]

    def spectral(self) -> SpectralInfo:
        """Spectral quantities of W(0) (spec §2.2). For time-varying schedules see also
        :meth:`period_product_rho`."""
        return self._matrices[0].spectral()

    def period_product_rho(self) -> float:
        """``‖W(period−1) ⋯ W(0) − J‖₂``: contraction of consensus error over one period.

        For a static topology this is ``‖W − J‖₂``. For the one-peer exponential graph it is
        0 (up to rounding) exactly when ``n`` is a power of two (spec §2.3).
        """
        if self._product_rho is None:
            P = np.eye(self._n)
            for m in self._matrices:
                P = m.dense @ P
            self._product_rho = float(np.linalg.norm(P - 1.0 / self._n, 2))
        return self._product_rho

    @property
    def max_out_degree(self) -> int:
        """Most messages any worker sends in one round, over the period."""
        return max(m.max_out_degree for m in self._matrices)

    @property
    def min_out_degree(self) -> int:
        """Fewest messages any worker sends in one round, over the period."""
        return min(int(m.out_degrees.min()) for m in self._matrices)

    @property
    def num_edges(self) -> int:
        """Directed edges ``i <- j`` (``j != i``) in the union of W(k) over one period.

        An undirected edge counts twice (once per direction).
        """
        union = np.zeros((self._n, self._n), dtype=bool)
        for m in self._matrices:
            union |= m.dense > 0
        np.fill_diagonal(union, False)
        return int(union.sum())

    def lazy(self) -> Topology:
        """The schedule of lazy matrices ``(I + W(k))/2``, named ``name + "-lazy"``."""
        return Topology(
            [m.lazy() for m in self._matrices],
            name=f"{self._name}-lazy",
            require_connected=False,
        )

    def bytes_per_round(self, num_params: int, bytes_per_element: int = 4) -> int:
        """Most bytes any worker sends in one gossip round, in bytes.

        ``max_out_degree × num_params × bytes_per_element`` (one full model per out-neighbour).

        Raises:
            ValueError: if ``num_params < 0`` or ``bytes_per_element < 1``.
        """
        if isinstance(num_params, bool) or not isinstance(num_params, int) or num_params < 0:
            raise ValueError(f"num_params must be an integer >= 0, got {num_params!r}")
        if (
            isinstance(bytes_per_element, bool)
            or not isinstance(bytes_per_element, int)
            or bytes_per_element < 1
        ):
            raise ValueError(
                f"bytes_per_element must be an integer >= 1, got {bytes_per_element!r}"
            )
        return self.max_out_degree * num_params * bytes_per_element

    def report(self, num_params: int = 1_000_000, bytes_per_element: int = 4) -> dict[str, Any]:
        """JSON-serializable summary (plain ints, floats, bools, None).

        Keys: ``name``, ``workers``, ``directed``, ``time_varying``, ``period``, ``lambda_2``,
        ``lambda_n`` (of W(0); None when W(0) is non-symmetric), ``rho`` (``‖W(0) − J‖₂``),
        ``spectral_gap`` (``1 − rho``), ``max_out_degree``, ``min_out_degree``, ``edges``
        (directed edges in the union over a period, see :attr:`num_edges`),
        ``bytes_per_round_per_worker`` (for a model of ``num_params`` elements of
        ``bytes_per_element`` bytes), and for time-varying schedules ``period_product_rho``.
        """
        info = self.spectral()
        out: dict[str, Any] = {
            "name": self._name,
            "workers": self._n,
            "directed": self.directed,
            "time_varying": self.time_varying,
            "period": self.period,
            "lambda_2": info.lambda_2,
            "lambda_n": info.lambda_n,
            "rho": info.rho,
            "spectral_gap": info.spectral_gap,
            "max_out_degree": self.max_out_degree,
            "min_out_degree": self.min_out_degree,
            "edges": self.num_edges,
            "bytes_per_round_per_worker": self.bytes_per_round(num_params, bytes_per_element),
        }
        if self.time_varying:
            out["period_product_rho"] = self.period_product_rho()
        return out

    def __repr__(self) -> str:
        kind = "time-varying" if self.time_varying else "static"
        return f"Topology(name={self._name!r}, n={self._n}, {kind}, period={self.period})"
