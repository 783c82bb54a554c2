"""The Reddi et al. counterexample: linear losses on [-1, 1] where Adam ends at the worst point.

Paper: S. J. Reddi, S. Kale, S. Kumar, "On the Convergence of Adam and Beyond", ICLR 2018,
arXiv:1904.09237 (§3, Theorems 1 and 3; §5 synthetic experiments), as reused by Zou et al.,
CVPR 2019, arXiv:1811.09358. Specification: ``compression-momentum-adam.md`` §5.6 and the exact
recipes of §6 (the theorems are [R]; the synthetic constants [V] via public reproductions).

Every problem is a sequence of linear losses ``f_t(x) = g_t x`` on the feasible set
``F = [-1, 1]`` whose average gradient is positive, so the optimum is ``x* = -1``:

- :class:`OnlineProblem` (Theorem 1): ``g_t = big`` when ``t mod period == 1``, ``small``
  otherwise (``t = 1, 2, ...``); :func:`reddi_online` is C = 3, period 3; the synthetic
  experiment is 1010 / -10 with period 101.
- :class:`StochasticProblem` (Theorem 3): ``g_t = big`` with probability ``p``, ``small``
  otherwise; the synthetic experiment is 1010 / -10 with p = 0.01 (E g = 0.2). Randomness: one
  stream ``numpy.random.default_rng(seed)`` whose uniforms are the rows of
  ``rng.random((T, seeds))`` (row t - 1 = step t, column s = "seed" s), drawn in row chunks
  (identical numbers), shared by every optimizer (common random numbers), as in spec §6.

:func:`run_counterexample` runs several :class:`~peergrad.transforms.generic_adam.GenericAdam`
configurations side by side (one row per configuration and seed, every schedule a per-row
coefficient) with a projection (clip) onto [-1, 1] after every update, and returns x_t and the
regret ``sum_t g_t (x_t + 1)`` (``x_t`` the point where ``g_t`` is evaluated). The paper runs
the update on scalars in numpy; here it is the library's own torch update, float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from peergrad.transforms.generic_adam import GenericAdam, Schedule, generic_adam_step

__all__ = [
    "CounterexampleResult",
    "OnlineProblem",
    "StochasticProblem",
    "plot_counterexample",
    "reddi_online",
    "run_counterexample",
    "standard_runs",
    "synthetic_online",
    "synthetic_stochastic",
]

X_STAR = -1.0


@dataclasses.dataclass(frozen=True)
class OnlineProblem:
    """``g_t = big`` if ``t mod period == 1`` else ``small``; one deterministic sequence.

    Raises:
        ValueError: ``period < 2``, or a mean gradient ``(big + (period - 1) small)/period <= 0``
            (the optimum would not be -1).
    """

    big: float = 3.0
    small: float = -1.0
    period: int = 3
    seeds: int = dataclasses.field(default=1, init=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.period, int) and self.period >= 2):
            raise ValueError(f"period must be an integer >= 2, got {self.period!r}")
        if self.mean_gradient <= 0:
            raise ValueError(
                f"mean gradient (big + (period - 1) small)/period = {self.mean_gradient:.4g} "
                "must be > 0 so that x* = -1"
            )

    @property
    def mean_gradient(self) -> float:
        return (self.big + (self.period - 1) * self.small) / self.period

    def stream(self, T: int, chunk: int):  # noqa: ANN201  (a generator of [rows, 1] arrays)
        """The gradients ``g_1..g_T`` in chunks of at most ``chunk`` steps, shape ``[k, 1]``."""
        for t0 in range(1, T + 1, chunk):
            t = np.arange(t0, min(t0 + chunk, T + 1))
            yield np.where(t % self.period == 1, self.big, self.small)[:, None]


@dataclasses.dataclass(frozen=True)
class StochasticProblem:
    """``g_t = big`` with probability ``p``, else ``small``, for ``seeds`` independent columns.

    Raises:
        ValueError: ``p`` outside (0, 1), ``seeds < 1``, or ``E g = p big + (1 - p) small <= 0``.
    """

    big: float = 1010.0
    small: float = -10.0
    p: float = 0.01
    seeds: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.p < 1:
            raise ValueError(f"p must be in (0, 1), got {self.p!r}")
        if not (isinstance(self.seeds, int) and self.seeds >= 1):
            raise ValueError(f"seeds must be an integer >= 1, got {self.seeds!r}")
        if self.mean_gradient <= 0:
            raise ValueError(f"E g = {self.mean_gradient:.4g} must be > 0 so that x* = -1")

    @property
    def mean_gradient(self) -> float:
        return self.p * self.big + (1 - self.p) * self.small

    def stream(self, T: int, chunk: int):  # noqa: ANN201
        """The gradients in chunks, shape ``[k, seeds]``, from the §6 uniform stream."""
        rng = np.random.default_rng(self.seed)
        for t0 in range(1, T + 1, chunk):
            u = rng.random((min(chunk, T + 1 - t0), self.seeds))
            yield np.where(u < self.p, self.big, self.small)


def reddi_online(C: float = 3.0) -> OnlineProblem:
    """Theorem 1: ``C x`` every third step, ``-x`` otherwise (``C > 2``)."""
    if not C > 2:
        raise ValueError(f"C must be > 2, got {C!r}")
    return OnlineProblem(float(C), -1.0, 3)


def synthetic_online() -> OnlineProblem:
    """Reddi et al.'s synthetic online experiment: 1010 x when t mod 101 = 1, else -10 x."""
    return OnlineProblem(1010.0, -10.0, 101)


def synthetic_stochastic(seeds: int = 16, seed: int = 0) -> StochasticProblem:
    """Reddi et al.'s synthetic stochastic experiment: 1010 x w.p. 0.01, else -10 x."""
    return StochasticProblem(1010.0, -10.0, 0.01, seeds, seed)


@dataclasses.dataclass(frozen=True, eq=False)
class CounterexampleResult:
    """Trajectories of :func:`run_counterexample` (float64 numpy arrays).

    ``names`` ``[c]``; ``steps`` ``[k]``: the recorded t (x after t updates, i.e. x_{t+1});
    ``x`` ``[k, c, s]``; ``regret`` ``[k, c, s]``: ``sum_{u<=t} g_u (x_u + 1)``;
    ``final_x`` ``[c, s]``: x_{T+1}; ``average_regret`` ``[c, s]``: regret at T over T;
    ``mean_gradient``: E g (online: over a period), so that the objective is
    ``F(x) = mean_gradient * x`` and ``F(x) - F(-1) = mean_gradient * (x + 1)``.
    """

    names: tuple[str, ...]
    horizon: int
    mean_gradient: float
    steps: np.ndarray
    x: np.ndarray
    regret: np.ndarray
    final_x: np.ndarray
    average_regret: np.ndarray

    def final(self, name: str) -> np.ndarray:
        """x_{T+1} of configuration ``name`` over the seeds, ``[s]``."""
        return self.final_x[self.names.index(name)]

    def objective_gap(self) -> np.ndarray:
        """``F(x_t) - F(x*) = mean_gradient (x_t + 1)`` at the recorded steps, ``[k, c, s]``."""
        return self.mean_gradient * (self.x + 1.0)


def _coefficients(opt: GenericAdam, t: np.ndarray) -> np.ndarray:
    """``[4, k]``: α_t, β_t, θ_t, ε_t (0 under ``eps_mode="init"``) for the steps ``t``."""
    eps = opt.eps.values(t) if opt.eps_mode == "denominator" else np.zeros_like(t)
    return np.stack([opt.alpha.values(t), opt.beta.values(t), opt.theta.values(t), eps])


def run_counterexample(
    problem: OnlineProblem | StochasticProblem,
    optimizers: Mapping[str, GenericAdam],
    T: int,
    x1: float = 0.5,
    *,
    records: int = 200,
    chunk: int = 20_000,
) -> CounterexampleResult:
    """Run every optimizer on ``problem`` for ``T`` updates from ``x_1 = x1``, projected on [-1, 1].

    All configurations and seeds advance together (rows of one float64 tensor, coefficients per
    row). ``records`` points, spaced geometrically in t, are kept for plots (T always is).

    Raises:
        ValueError: ``T < 1``, ``x1`` outside [-1, 1], no optimizer, or ``chunk < 1``.
    """
    if not (isinstance(T, int) and T >= 1):
        raise ValueError(f"T must be an integer >= 1, got {T!r}")
    if not -1 <= x1 <= 1:
        raise ValueError(f"x1 must be in [-1, 1], got {x1!r}")
    if not optimizers or chunk < 1:
        raise ValueError("run_counterexample needs at least one optimizer and chunk >= 1")
    names = tuple(optimizers)
    opts = [optimizers[n] for n in names]
    c, s = len(opts), problem.seeds
    keep = np.unique(np.geomspace(1, T, num=min(records, T)).round().astype(np.int64))
    keep_set = {int(k): i for i, k in enumerate(keep)}
    xs = np.empty((keep.size, c, s))
    rs = np.empty((keep.size, c, s))

    f64 = torch.float64
    x = torch.full((c, s), float(x1), dtype=f64)
    m = torch.zeros((c, s), dtype=f64)
    v = torch.tensor([[o.eps(1) if o.eps_mode == "init" else 0.0] for o in opts], dtype=f64)
    v = v.expand(c, s).clone()
    denom = torch.empty_like(x)
    regret = torch.zeros_like(x)
    g_sum = torch.zeros(s, dtype=f64)  # sum of the gradients of the finished chunks
    t0 = 1
    for grads in problem.stream(T, chunk):
        k = grads.shape[0]
        t = np.arange(t0, t0 + k, dtype=np.float64)
        coef = torch.from_numpy(np.stack([_coefficients(o, t) for o in opts], axis=2))  # [4,k,c]
        alphas, betas, thetas, epss = (row.unsqueeze(-1).unbind(0) for row in coef)  # k x [c,1]
        G = torch.from_numpy(np.ascontiguousarray(grads, dtype=np.float64))
        rows = G.unsqueeze(1).expand(k, c, s).unbind(0)
        for j, g in enumerate(rows):
            regret.addcmul_(g, x)  # sum g_u x_u; the sum of g_u is added at the records
            generic_adam_step(x, g, m, v, alphas[j], betas[j], thetas[j], epss[j], denom)
            x.clamp_(-1.0, 1.0)
            i = keep_set.get(t0 + j)
            if i is not None:
                xs[i] = x.numpy()
                rs[i] = regret.numpy() + (g_sum + G[: j + 1].sum(0)).numpy()
        g_sum += G.sum(0)
        t0 += k
    return CounterexampleResult(
        names,
        T,
        problem.mean_gradient,
        keep.astype(np.float64),
        xs,
        rs,
        x.numpy().copy(),
        rs[-1] / T,
    )


def standard_runs(
    variant: str, r_values: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), alpha: float = 0.5
) -> tuple[OnlineProblem | StochasticProblem, dict[str, GenericAdam]]:
    """The problems and optimizers of spec §5.6 runs A and B.

    - ``"online"`` (run A): C = 3, period 3; Adam with β₁ = 0, β₂ = 1/(1 + C²) = 0.1, no bias
      correction; generic Adam with θ_t = 1 - 1/t and β ∈ {0, 0.9}; all with α_t = alpha/√t.
    - ``"stochastic"`` (run B): 1010 / -10 with p = 0.01, 16 seeds; β = 0.9, α_t = alpha/√t and
      θ_t = ``zou:r`` for each r, plus bias-corrected Adam (β₂ = 0.999).

    Raises:
        ValueError: an unknown ``variant``.
    """
    lr = Schedule("inv-sqrt", (), alpha)
    if variant == "online":
        problem = reddi_online(3.0)
        b2 = 1.0 / (1.0 + problem.big**2)
        return problem, {
            f"Adam (beta2={b2:g})": GenericAdam(lr, beta=0.0, theta=b2),
            "Generic Adam (theta=1-1/t, beta=0)": GenericAdam(lr, beta=0.0, theta="adagrad"),
            "Generic Adam (theta=1-1/t, beta=0.9)": GenericAdam(lr, beta=0.9, theta="adagrad"),
        }
    if variant == "stochastic":
        runs = {
            f"Generic Adam (r={r:g})": GenericAdam(lr, beta=0.9, theta=Schedule("zou", (r,)))
            for r in r_values
        }
        runs["Adam (bias-corrected, beta2=0.999)"] = GenericAdam(
            Schedule("adam-bias", (0.9, 0.999, 0.5), alpha),  # alpha/sqrt(t) with correction
            beta=0.9,
            theta=0.999,
            eps=Schedule("sqrt-bias", (0.999,), 1e-8),
        )
        return synthetic_stochastic(), runs
    raise ValueError(f"variant must be 'online' or 'stochastic', got {variant!r}")


def plot_counterexample(result: CounterexampleResult, path: str | Path, title: str = "") -> Path:
    """Two panels against t (log scale), means over the seeds: x_t, and the average regret
    ``R_t / t`` (one seed: online) or the objective gap ``F(x_t) - F(-1)`` (several seeds:
    stochastic, where the realised regret is too noisy to read). Writes a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # headless, as peergrad.train.plots (problems/ sits below train/)
    import matplotlib.pyplot as plt

    fig, (ax_x, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    t = result.steps
    online = result.x.shape[2] == 1
    right = result.regret / t[:, None, None] if online else result.objective_gap()
    for i, name in enumerate(result.names):
        ax_x.plot(t, result.x[:, i].mean(axis=1), label=name)
        ax_r.plot(t, right[:, i].mean(axis=1), label=name)
    ax_x.axhline(X_STAR, color="k", ls="--", lw=0.8, label="optimum x* = -1")
    ax_x.set(xscale="log", xlabel="t", ylabel="x_t (after t updates)", ylim=(-1.05, 1.05))
    label = "average regret R_t / t" if online else "F(x_t) - F(x*) = E[g] (x_t + 1)"
    ax_r.set(xscale="log", yscale="log", xlabel="t", ylabel=label)
    ax_x.legend(fontsize=7)
    ax_r.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
