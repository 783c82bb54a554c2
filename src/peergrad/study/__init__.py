"""Studies: several training runs side by side, above the single-run loop (:mod:`peergrad.train`).

:mod:`peergrad.study.compare` holds ``compare()``, which runs several algorithms (seeds, step-size
grids) on the same task and writes ``compare.json``, ``compare.md`` and the comparison plots, and
its ``validate()``; it re-exports the names of its parts: :mod:`peergrad.study.entries` (labels,
options, seeds, grids and the plan of runs), :mod:`peergrad.study.results` (what each run and
label reached, the grid selection), :mod:`peergrad.study.tables` (``compare.md``) and
:mod:`peergrad.study.files` (``compare.json`` and ``--resume``).
:mod:`peergrad.study.plotting_io` redraws plots from run and compare folders on disk
(``peergrad plot``). ``peergrad.train`` still exports ``CompareEntry``, ``CompareResult`` and
``build_entries``.

Importing this package imports nothing else: its modules import torch.
"""

from __future__ import annotations
