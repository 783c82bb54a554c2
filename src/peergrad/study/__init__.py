"""Studies: several training runs side by side, above the single-run loop (:mod:`peergrad.train`).

:mod:`peergrad.study.compare` holds ``compare()``, which runs several algorithms (seeds, step-size
grids) on the same task and writes ``compare.json``, ``compare.md`` and the comparison plots;
:mod:`peergrad.study.plotting_io` redraws plots from run and compare folders on disk
(``peergrad plot``). ``peergrad.train`` still exports ``CompareEntry``, ``CompareResult`` and
``build_entries``.

Importing this package imports nothing else: its modules import torch.
"""

from __future__ import annotations
