"""T5's relative-position buckets: which learned bias a key at a given distance from its query
reads (`flax_s2s.models.t5`'s `RelativePositionBias` holds the table)."""

from __future__ import annotations

import math

import numpy as np


def relative_position_bucket(
    relative_position: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """T5's bucket of each relative position (key - query), int32 in [0, num_buckets).

    Half the buckets (of each direction, when bidirectional) are single distances 0, 1, ...;
    the rest grow logarithmically up to `max_distance`, and every farther distance shares the
    last one. Causal (not bidirectional): keys after the query all fall into bucket 0.
    Computed in NumPy float32 in the reference's order of operations, so that distances on a
    bucket boundary land where the reference puts them.
    """
    relative_position = np.asarray(relative_position, np.int64)
    buckets = np.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0) * num_buckets
        distance = np.abs(relative_position)
    else:
        distance = -np.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    with np.errstate(divide="ignore"):
        scaled = (
            np.log(distance.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact)
        )
    large = max_exact + np.where(distance < max_exact, 0, scaled).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)
