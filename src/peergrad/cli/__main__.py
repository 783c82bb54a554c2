"""``python -m peergrad.cli``: the same as ``peergrad`` (and ``python -m peergrad``)."""

from __future__ import annotations

from peergrad.cli import main

raise SystemExit(main())
