"""Test problems with known answers, used by the tests, the experiments and ``peergrad
counterexample``: not data sets (``peergrad.data`` knows nothing of optimizers).

- :mod:`peergrad.problems.quadratics`: heterogeneous quadratics ``f_i(x) = ½ a_i ‖x − b_i‖²``
  with a closed-form optimum, on which the specs say which methods are exact and which are
  biased;
- :mod:`peergrad.problems.reddi`: Reddi et al.'s online and stochastic counterexamples, where
  Adam ends at the worst point and generic Adam converges (runner and plots).
"""

from __future__ import annotations

from .quadratics import QuadraticProblem, heterogeneous_quadratics

__all__ = ["QuadraticProblem", "heterogeneous_quadratics"]
