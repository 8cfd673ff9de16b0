"""Membrane segmentation: multi-scale Hessian surfaceness with hysteresis thresholding.

For a bright sheet (membrane density positive, as in the simulator and in our WBP maps) the Hessian
across the sheet has one large negative eigenvalue ``λ1`` and two small ones ``λ2, λ3`` along it.
At each scale σ (voxels) the eigenvalues of the Gaussian-derivative Hessian (``scipy.ndimage``) are
sorted ``λ1 ≤ λ2 ≤ λ3`` and the scale-normalised *surfaceness* is

    S_σ = σ² · max(0, −λ1 − sqrt(λ2² + λ3²))

which is large for plates and ≈ 0 for lines (two large eigenvalues), blobs (three) and flat regions.
Scales are tied to the membrane thickness ``t`` (Å, default 40) as ``σ ∈ {0.6, 0.8, 1.0} · t/(2·vs)``
(voxel size ``vs`` in Å); ``S = max_σ S_σ``. ``S`` is divided by its 99.9th percentile, and the mask is a
hysteresis threshold: connected components (26-connectivity) of ``S > low`` that contain a voxel with
``S > high`` and hold at least ``min_size`` voxels (membranes are large sheets; noise specks are not). ``polarity = "dark"`` inverts the map first (membranes darker than the background).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cryorestore.errors import InputError
from cryorestore.progress import progress_bar

DEFAULT_THICKNESS_A = 40.0
SCALE_FACTORS = (0.6, 0.8, 1.0)


def hessian_eigenvalues(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Eigenvalues (z, y, x, 3), ascending, of the Gaussian-derivative Hessian at scale ``sigma`` voxels."""
    v = np.asarray(volume, dtype=np.float32)
    h = np.empty(v.shape + (3, 3), dtype=np.float32)
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            d = ndimage.gaussian_filter(v, sigma, order=order, mode="reflect")
            h[..., i, j] = d
            h[..., j, i] = d
    return np.linalg.eigvalsh(h)


def surfaceness(volume: np.ndarray, voxel_size: float, thickness: float = DEFAULT_THICKNESS_A,
                polarity: str = "bright", progress: bool = False) -> np.ndarray:
    """Max over scales of ``σ²·max(0, −λ1 − sqrt(λ2² + λ3²))`` (see module docstring), float32 (z, y, x)."""
    if polarity not in ("bright", "dark"):
        raise InputError(f"polarity must be 'bright' or 'dark', got {polarity!r}")
    if not (thickness > 0 and voxel_size > 0):
        raise InputError("membrane thickness and voxel size must be positive (Å)")
    v = np.asarray(volume, dtype=np.float32)
    if polarity == "dark":
        v = -v
    half = thickness / (2.0 * voxel_size)
    out = np.zeros(v.shape, dtype=np.float32)
    for f in progress_bar(SCALE_FACTORS, desc="surfaceness scales", enabled=progress, leave=False):
        sigma = max(0.5, f * half)
        ev = hessian_eigenvalues(v, sigma)
        s = -ev[..., 0] - np.sqrt(ev[..., 1] ** 2 + ev[..., 2] ** 2)
        np.maximum(out, (sigma * sigma) * np.maximum(s, 0.0), out=out)
    return out


def normalise(s: np.ndarray, percentile: float = 99.9) -> np.ndarray:
    """``s`` divided by its ``percentile`` (so thresholds are relative); all-zero input stays zero."""
    ref = float(np.percentile(s, percentile))
    return (s / ref).astype(np.float32) if ref > 0 else np.zeros_like(s, dtype=np.float32)


def hysteresis(s: np.ndarray, low: float, high: float, min_size: int = 0) -> np.ndarray:
    """Components (26-connected) of ``s > low`` that hold a voxel with ``s > high`` and ≥ ``min_size`` voxels."""
    if not low <= high:
        raise InputError(f"hysteresis needs low <= high, got {low} and {high}")
    weak = s > low
    labels, n = ndimage.label(weak, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return np.zeros(s.shape, dtype=bool)
    strong = np.zeros(n + 1, dtype=bool)
    strong[np.unique(labels[s > high])] = True
    if min_size > 0:
        strong &= np.bincount(labels.ravel(), minlength=n + 1) >= min_size
    strong[0] = False
    return strong[labels]


def segment_membranes(volume: np.ndarray, voxel_size: float, thickness: float = DEFAULT_THICKNESS_A,
                      low: float = 0.3, high: float = 0.6, polarity: str = "bright", min_size: int = 1000,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(normalised surfaceness float32, membrane mask bool) of a (z, y, x) map."""
    s = normalise(surfaceness(volume, voxel_size, thickness, polarity, progress))
    return s, hysteresis(s, low, high, min_size)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A| + |B|)`` of two binary masks (1.0 when both are empty)."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.shape != y.shape:
        raise InputError(f"masks differ in shape: {x.shape} vs {y.shape}")
    tot = int(x.sum()) + int(y.sum())
    return 1.0 if tot == 0 else 2.0 * int(np.logical_and(x, y).sum()) / tot
