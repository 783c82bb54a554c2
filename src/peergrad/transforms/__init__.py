"""Local update math shared by the algorithms: small element-wise pieces on ``[w, D]`` tensors.

Every function here is per worker and needs no communication, so it runs unchanged on both
engines.
"""

from __future__ import annotations

from peergrad.transforms.basic import add_weight_decay, heavy_ball

__all__ = ["add_weight_decay", "heavy_ball"]
