"""Geometric helpers shared by the toy and realistic specimens (arrays (z, y, x), voxels)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def sphere_distance(shape: Sequence[int], centre: np.ndarray, reach: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """Distances (voxels) to ``centre`` over the bounding box of a sphere of radius ``reach``, clipped
    to the volume: returns (slices into the volume, distances on that box)."""
    lo = [max(0, int(math.floor(c - reach))) for c in centre]
    hi = [min(int(n), int(math.ceil(c + reach)) + 1) for c, n in zip(centre, shape)]
    grids = np.meshgrid(*[np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)], indexing="ij")
    return tuple(slice(a, b) for a, b in zip(lo, hi)), np.sqrt(sum(g**2 for g in grids))
