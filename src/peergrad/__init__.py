"""peergrad: communication-efficient distributed and decentralized training for PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"
