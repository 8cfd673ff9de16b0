"""Membrane segmentation: Hessian plate responses, orientation coherence (a tensor vote), mid-surface, mask.

A lipid bilayer is two thin dense leaflets (head groups, ≈ 38 Å apart) around a lighter core; at
10 Å voxels each leaflet is a bright sheet one or two voxels thick, and a protein (ribosome), a gold
bead or the ice texture can be as dense or denser. A plate filter alone (``surfaceness``) finds both
leaflets as two sheets and fires on every protein's texture. The segmentation therefore asks for what
only a membrane has: *many parallel plate responses that agree in orientation over tens of Å*.

1. **Plate responses** (``plate_tensor``). At each leaflet scale σ (Å, default
   :data:`LEAFLET_SCALES_A` = 15 Å, i.e. σ/vs voxels: between a head group's width and half the bilayer) the eigenvalues ``λ1 ≤ λ2 ≤ λ3`` and the
   eigenvector ``n`` of ``λ1`` of the Gaussian-derivative Hessian (``scipy.ndimage``) give the
   scale-normalised plate strength ``P_σ = σ² · max(0, −λ1 − sqrt(λ2² + λ3²))`` (large for a bright
   sheet across ``n``; ≈ 0 for lines, blobs and flat regions). The plate tensor is
   ``T = Σ_σ P_σ · n nᵀ`` (a stick of length ``P`` along the sheet normal).
2. **Orientation coherence** (``sheet_saliency``). ``T`` is averaged with a Gaussian of σ =
   ``coherence`` Å (default :data:`COHERENCE_SCALE_A` = 30 Å, about one bilayer thickness), the
   second-order tensor vote of a plate field. With its eigenvalues ``μ1 ≥ μ2 ≥ μ3`` the *sheet
   saliency* is ``S = μ1 − μ2`` and the *coherence* ``C = S / μ1 ∈ [0, 1]``. Both leaflets of a
   bilayer have the same normal and add up into one sheet centred on the mid-plane; the plates of a
   protein's or the ice's texture point every way and cancel (low ``C``). The normal of the merged
   sheet is the eigenvector ``e`` of ``μ1``.
3. **Mid-surface** (``mid_surface``): voxels where ``S`` is a maximum along ``e`` (``S(x) ≥ S(x ± e)``,
   linear interpolation), i.e. non-maximum suppression to a one-voxel-thick surface.
4. **Selection** (``select_sheets``): ``S`` is divided by its median over the whole map (the typical
   response of the background), so the thresholds are relative. Mid-surface voxels with
   ``S > low`` and ``C > coherence_low`` form candidates; a 26-connected component of candidates is kept
   when it holds a voxel with ``S > high`` and ``C > coherence_high`` and at least ``min_area`` Å² of
   surface (voxel count × vs²): a membrane is a large coherent sheet, a protein's stray plate is not.
5. **Mask**: every voxel within ``thickness / 2`` Å (Euclidean distance) of a kept mid-surface voxel.
   ``thickness`` is the membrane's total width the mask should have (default 45 Å, a bilayer's 4-5 nm;
   the simulator's ``membranes.mrc`` is 50 Å wide in the realistic preset and 40 Å in the toy preset).

Defaults (scale 15 Å, coherence 30 Å, ``low`` 3, ``high`` 10, ``coherence_low`` 0.75,
``coherence_high`` 0.9, ``min_area`` 20,000 Å², thickness 45 Å) were chosen on simulator seeds 0 and 1
only (both presets; truth, raw and Gaussian maps) (see
``benchmarks/RESULTS.md, "Membrane segmentation on realistic maps"``). ``polarity = "dark"`` inverts the map first (membranes darker than
the background). All scales are in Å, so the same defaults work at any voxel size.

:func:`surfaceness` (the single-scale-family plate measure ``max_σ P_σ``) is kept as a diagnostic.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from cryorestore.errors import InputError
from cryorestore.progress import progress_bar

DEFAULT_THICKNESS_A = 45.0
LEAFLET_SCALES_A = (15.0,)
COHERENCE_SCALE_A = 30.0
DEFAULT_LOW, DEFAULT_HIGH = 3.0, 10.0
DEFAULT_COHERENCE_LOW, DEFAULT_COHERENCE_HIGH = 0.75, 0.9
DEFAULT_MIN_AREA_A2 = 20000.0
SCALE_FACTORS = (0.6, 0.8, 1.0)  # of thickness / 2, for :func:`surfaceness`


def _check(volume: np.ndarray, voxel_size: float, polarity: str) -> np.ndarray:
    if polarity not in ("bright", "dark"):
        raise InputError(f"polarity must be 'bright' or 'dark', got {polarity!r}")
    if not voxel_size > 0:
        raise InputError(f"voxel size must be positive (Å), got {voxel_size}")
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim != 3:
        raise InputError(f"membrane segmentation needs a 3D map (z, y, x), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise InputError("the map holds NaN or infinite values; fix or mask them before segmenting")
    return -v if polarity == "dark" else v


def hessian(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-derivative Hessian (z, y, x, 3, 3) float32 at scale ``sigma`` voxels, axes (z, y, x)."""
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
    return h


def hessian_eigenvalues(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Eigenvalues (z, y, x, 3), ascending, of the Gaussian-derivative Hessian at scale ``sigma`` voxels."""
    return np.linalg.eigvalsh(hessian(volume, sigma))


def plate_strength(eigenvalues: np.ndarray, sigma: float) -> np.ndarray:
    """``σ² · max(0, −λ1 − sqrt(λ2² + λ3²))`` from ascending eigenvalues (…, 3); float32."""
    w = eigenvalues
    s = -w[..., 0] - np.sqrt(w[..., 1] ** 2 + w[..., 2] ** 2)
    return ((sigma * sigma) * np.maximum(s, 0.0)).astype(np.float32)


def surfaceness(volume: np.ndarray, voxel_size: float, thickness: float = 40.0,
                polarity: str = "bright", progress: bool = False) -> np.ndarray:
    """Max over σ ∈ {0.6, 0.8, 1.0}·thickness/(2·vs) voxels of the plate strength, float32 (z, y, x)."""
    if not thickness > 0:
        raise InputError("membrane thickness must be positive (Å)")
    v = _check(volume, voxel_size, polarity)
    half = thickness / (2.0 * voxel_size)
    out = np.zeros(v.shape, dtype=np.float32)
    for f in progress_bar(SCALE_FACTORS, desc="surfaceness scales", enabled=progress, leave=False):
        sigma = max(0.5, f * half)
        np.maximum(out, plate_strength(hessian_eigenvalues(v, sigma), sigma), out=out)
    return out


def plate_tensor(volume: np.ndarray, voxel_size: float, scales: Sequence[float] = LEAFLET_SCALES_A,
                 polarity: str = "bright", progress: bool = False) -> np.ndarray:
    """``Σ_σ P_σ n nᵀ`` (z, y, x, 3, 3) float32 over the Hessian scales ``scales`` (Å); see the module docstring."""
    v = _check(volume, voxel_size, polarity)
    if not scales or min(scales) <= 0:
        raise InputError(f"leaflet scales must be positive (Å), got {list(scales)}")
    t = np.zeros(v.shape + (3, 3), dtype=np.float32)
    for s_a in progress_bar(list(scales), desc="plate scales", enabled=progress, leave=False):
        sigma = max(0.5, s_a / voxel_size)
        w, vec = np.linalg.eigh(hessian(v, sigma))
        p = plate_strength(w, sigma)
        n = vec[..., :, 0]  # unit eigenvector of λ1 (the sheet normal)
        t += (p[..., None, None] * n[..., :, None] * n[..., None, :]).astype(np.float32)
    return t


def sheet_saliency(tensor: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S = μ1 − μ2, C = S / μ1, normal e (3, z, y, x)) of the tensor field smoothed at ``sigma`` voxels."""
    sm = np.empty_like(tensor)
    for i in range(3):
        for j in range(i, 3):
            sm[..., i, j] = ndimage.gaussian_filter(tensor[..., i, j], sigma, mode="reflect")
            sm[..., j, i] = sm[..., i, j]
    mu, vec = np.linalg.eigh(sm)
    del sm
    s = np.maximum(mu[..., 2] - mu[..., 1], 0.0).astype(np.float32)
    c = np.where(mu[..., 2] > 0, s / np.maximum(mu[..., 2], 1e-30), 0.0).astype(np.float32)
    return s, c, np.moveaxis(vec[..., :, 2], -1, 0).astype(np.float32)


def mid_surface(s: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Voxels where ``s`` is a maximum along ``normal`` (3, z, y, x): ``s(x) ≥ s(x ± normal)`` (linear interpolation)."""
    grid = np.indices(s.shape, dtype=np.float32)
    ridge = s > 0
    for sign in (1.0, -1.0):
        nb = ndimage.map_coordinates(s, grid + sign * normal, order=1, mode="nearest")
        ridge &= s >= nb
    return ridge


def hysteresis(s: np.ndarray, low: float, high: float, min_size: int = 0) -> np.ndarray:
    """Components (26-connected) of ``s > low`` that hold a voxel with ``s > high`` and ≥ ``min_size`` voxels."""
    if not low <= high:
        raise InputError(f"hysteresis needs low <= high, got {low} and {high}")
    return _components(s > low, s > high, min_size)


def _components(weak: np.ndarray, strong_vox: np.ndarray, min_size: int) -> np.ndarray:
    labels, n = ndimage.label(weak, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return np.zeros(weak.shape, dtype=bool)
    strong = np.zeros(n + 1, dtype=bool)
    strong[np.unique(labels[strong_vox & weak])] = True
    if min_size > 0:
        strong &= np.bincount(labels.ravel(), minlength=n + 1) >= min_size
    strong[0] = False
    return strong[labels]


def select_sheets(s: np.ndarray, c: np.ndarray, ridge: np.ndarray, low: float, high: float,
                  coherence_low: float, coherence_high: float, min_size: int) -> np.ndarray:
    """Kept mid-surface voxels (bool): components of ``ridge & s > low & c > coherence_low`` with a voxel
    of ``s > high & c > coherence_high`` and at least ``min_size`` voxels (see the module docstring)."""
    if not (0 <= low <= high and 0 <= coherence_low <= coherence_high <= 1):
        raise InputError(f"need 0 <= low <= high and 0 <= coherence_low <= coherence_high <= 1, got "
                         f"{low}, {high}, {coherence_low}, {coherence_high}")
    weak = ridge & (s > low) & (c > coherence_low)
    return _components(weak, (s > high) & (c > coherence_high), min_size)


def segment_membranes(volume: np.ndarray, voxel_size: float, thickness: float = DEFAULT_THICKNESS_A,
                      low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, polarity: str = "bright",
                      min_area: float = DEFAULT_MIN_AREA_A2, coherence_low: float = DEFAULT_COHERENCE_LOW,
                      coherence_high: float = DEFAULT_COHERENCE_HIGH, scales: Sequence[float] = LEAFLET_SCALES_A,
                      coherence: float = COHERENCE_SCALE_A, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(sheet saliency relative to its median, float32; membrane mask, bool) of a (z, y, x) map.

    ``voxel_size``, ``thickness``, ``scales`` and ``coherence`` in Å, ``min_area`` in Å²; thresholds as in
    the module docstring.
    """
    if not thickness > 0 or not coherence > 0 or not min_area >= 0:
        raise InputError("membrane thickness and coherence scale must be positive (Å), min_area >= 0 (Å²)")
    t = plate_tensor(volume, voxel_size, scales, polarity, progress)
    s, c, e = sheet_saliency(t, max(0.5, coherence / voxel_size))
    del t
    med = float(np.median(s))
    s = s / med if med > 0 else np.zeros_like(s)
    ridge = mid_surface(s, e)
    del e
    keep = select_sheets(s, c, ridge, low, high, coherence_low, coherence_high,
                         int(np.ceil(min_area / voxel_size**2)))
    if not keep.any():
        return s, keep
    mask = ndimage.distance_transform_edt(~keep) <= thickness / (2.0 * voxel_size)
    return s, mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A| + |B|)`` of two binary masks (1.0 when both are empty)."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.shape != y.shape:
        raise InputError(f"masks differ in shape: {x.shape} vs {y.shape}")
    tot = int(x.sum()) + int(y.sum())
    return 1.0 if tot == 0 else 2.0 * int(np.logical_and(x, y).sum()) / tot
