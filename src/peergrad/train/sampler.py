"""Per-worker minibatch sampling from data shards, identical on both engines.

Worker i draws from its own ``torch.Generator`` seeded by ``(seed, i)``, so a distributed rank
reproduces exactly the minibatches the simulated engine gives worker i. Within a local epoch a
worker visits its shard in a fresh random order without replacement; the last partial batch is
dropped.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor


def worker_seed(seed: int, worker: int) -> int:
    """Seed of worker ``worker``'s sampling generator (distinct streams per worker)."""
    return (int(seed) * 1_000_003 + 7919 * (int(worker) + 1)) % (2**63 - 1)


class ShardSampler:
    """Draws ``[w, B]`` global train-set indices per step for the workers in ``worker_ids``.

    Args:
        shards: one index tensor per worker (all n workers, global order).
        batch_size: B, per worker; must not exceed the smallest shard of the local workers.
        seed: run seed.
        worker_ids: the global ids of the workers this process holds (all of them when simulated).

    Raises ``ValueError`` when ``batch_size`` is not in ``[1, smallest shard size]``.
    """

    def __init__(
        self, shards: list[Tensor], batch_size: int, seed: int, worker_ids: list[int]
    ) -> None:
        self.shards = [shards[i] for i in worker_ids]
        smallest = min(len(s) for s in self.shards)
        if not (1 <= batch_size <= smallest):
            raise ValueError(
                f"--batch-size: batch_size must be in [1, {smallest}] (the smallest worker shard "
                f"holds {smallest} samples), got {batch_size}"
            )
        self.batch_size = batch_size
        self.worker_ids = list(worker_ids)
        self.generators = [torch.Generator().manual_seed(worker_seed(seed, i)) for i in worker_ids]
        self.orders: list[Tensor] = [torch.empty(0, dtype=torch.long) for _ in worker_ids]
        self.positions = [0 for _ in worker_ids]
        self._equal = len({len(s) for s in self.shards}) == 1
        self._stacked: Tensor | None = None

    def next(self) -> Tensor:
        """Global indices of the next minibatch of every local worker, int64 ``[w, B]``."""
        B = self.batch_size
        for k, shard in enumerate(self.shards):
            if self.positions[k] + B > len(self.orders[k]):
                perm = torch.randperm(len(shard), generator=self.generators[k])
                self.orders[k] = shard[perm]
                self.positions[k] = 0
                self._stacked = None
        if self._equal:
            # Equal shards: every worker refreshes at the same step, so one slice serves all.
            if self._stacked is None:
                self._stacked = torch.stack(self.orders)
            pos = self.positions[0]
            self.positions = [pos + B] * len(self.positions)
            return self._stacked[:, pos : pos + B]
        rows = [o[p : p + B] for o, p in zip(self.orders, self.positions, strict=True)]
        self.positions = [p + B for p in self.positions]
        return torch.stack(rows)

    def state_dict(self) -> dict[str, object]:
        return {
            "generators": [g.get_state() for g in self.generators],
            "orders": [o.clone() for o in self.orders],
            "positions": list(self.positions),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        for g, s in zip(self.generators, cast(list[Any], state["generators"]), strict=True):
            g.set_state(s)
        self.orders = [o.clone() for o in cast(list[Any], state["orders"])]
        self.positions = list(cast(list[Any], state["positions"]))
        self._stacked = None
