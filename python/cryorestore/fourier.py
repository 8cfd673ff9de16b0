"""Fourier-space tools: frequency grids, shells, missing-wedge masks and the Fourier shell correlation.

Plain PyTorch on whatever device the inputs live on. This is the module to import: it re-exports
the grid (:mod:`cryorestore.fourier_grid`) and the torch twins of the native kernels
(:func:`missing_wedge_mask`, :func:`fsc_shell_sums`, from :mod:`cryorestore.native`), and adds the
FSC of volumes (through the native shell sums) and resolution estimates.

Conventions (also in docs/architecture.md)
------------------------------------------
* Volumes are (z, y, x); batches are (B, z, y, x). Frequencies are in cycles/voxel (Nyquist 0.5).
* The *rfft grid* of a (Z, Y, X) volume is ``torch.fft.rfftn``'s (Z, Y, X//2 + 1) half-space; the
  *full grid* is ``torch.fft.fftn``'s (Z, Y, X). Neither is fftshifted.
* Shells: shell ``k`` holds the coefficients whose radius ``r = min(shape) · |(kz/Z, ky/Y, kx/X)|``
  (integer frequency indices ``kz, ky, kx``) rounds (half up) to ``k``, for ``k = 0 … min(shape)//2``;
  for a cube this is ``round(|k|)``. Coefficients beyond the last shell get index ``n_shells`` and
  are ignored. Shell ``k`` has frequency ``k / min(shape)`` cycles/voxel.
* Missing wedge for tilts in [a, b] (degrees) about y: coefficient (kz, ky, kx) is measured when the
  angle of the line through (kx, kz), ``atan2(kz, kx)`` folded into (−90°, 90°], lies in [−b, −a];
  the ky axis (kx = kz = 0) is always measured. Positive tilt turns the specimen's +x toward +z, so
  tilt θ samples the plane whose in-plane x direction is (kx, kz) = (cos θ, −sin θ) (the geometry of
  :mod:`cryorestore.projection`).
* A rotated wedge is the mask of a volume rotated actively by R (matrix on (z, y, x) vectors):
  ``M_R(k) = M(Rᵀ k)``.
* FSC(q) = Re Σ F1·conj(F2) / sqrt(Σ|F1|² Σ|F2|²) over shell q; on the rfft grid the x = 0 plane
  and (for even X) the Nyquist plane count once and every other plane twice, so sums equal those
  over the full grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from cryorestore.fourier_grid import (  # noqa: F401  (re-exported: the grid is part of this module's API)
    DeviceLike,
    Shape3,
    check_tilt_range,
    frequency_grid,
    n_shells,
    rfft_shape,
    rfft_weights,
    shell_frequencies,
    shell_index,
)
from cryorestore.native.fsc import fsc_shell_sums, fsc_shells  # noqa: F401  (the shell-sum twin and kernel)
from cryorestore.native.wedge import missing_wedge_mask, wedge_mask_from_frequencies  # noqa: F401  (the wedge twin)

FSC_THRESHOLDS = (0.5, 0.143)


# --------------------------------------------------------------------------------------------
# Fourier filtering
# --------------------------------------------------------------------------------------------
def apply_fourier_mask(volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Filter real volume(s) (…, Z, Y, X) with an rfft-grid mask (…, Z, Y, X//2+1): F⁻¹(M · F(v))."""
    spec = torch.fft.rfftn(volume, dim=(-3, -2, -1))
    return torch.fft.irfftn(spec * mask.to(spec.real.dtype), s=volume.shape[-3:], dim=(-3, -2, -1))


# --------------------------------------------------------------------------------------------
# Fourier shell correlation
# --------------------------------------------------------------------------------------------
def fsc_from_sums(sums: torch.Tensor, eps: float = 1e-30) -> torch.Tensor:
    """FSC curve(s) (…, n) from shell sums (…, 3, n); shells with zero power give FSC 0."""
    num, p1, p2 = sums[..., 0, :], sums[..., 1, :], sums[..., 2, :]
    den = torch.sqrt(p1 * p2)
    return torch.where(den > eps, num / den.clamp(min=eps), torch.zeros_like(num))


def _as_batch(volumes: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(volumes)
    if not torch.is_floating_point(t):
        t = t.float()
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ValueError(f"expected (Z, Y, X) or (B, Z, Y, X) volumes, got shape {tuple(t.shape)}")
    return t


def fsc_batch(
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    fourier_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """FSC curves (B, n_shells) of B pairs of real volumes (B, Z, Y, X) in one call (float64).

    ``fourier_mask`` (rfft grid, broadcastable) restricts the sums to selected coefficients, e.g.
    ``1 − wedge`` for the correlation inside the missing wedge. Uses the native kernel when built.
    """
    ta, tb = _as_batch(a), _as_batch(b)
    if ta.shape != tb.shape:
        raise ValueError(f"volumes differ in shape: {tuple(ta.shape[1:])} vs {tuple(tb.shape[1:])}")
    shape = tuple(ta.shape[1:])
    fa = torch.fft.rfftn(ta, dim=(-3, -2, -1))
    fb = torch.fft.rfftn(tb, dim=(-3, -2, -1))
    n = n_shells(shape)
    idx = shell_index(shape, rfft=True, device=fa.device)
    sums = fsc_shells(fa, fb, idx, n, nx=shape[2], coefficient_weights=fourier_mask)
    return fsc_from_sums(sums)


def fsc(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, fourier_mask: torch.Tensor | None = None) -> torch.Tensor:
    """FSC curve (n_shells,) between two real (Z, Y, X) volumes; see :func:`fsc_batch`."""
    return fsc_batch(a, b, fourier_mask)[0]


# --------------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolution:
    """Where an FSC curve first drops below ``threshold``: ``frequency`` in cycles/voxel and
    ``angstrom`` = voxel size / frequency. ``crossed`` is False when the curve never drops below
    the threshold up to Nyquist (then ``frequency`` is the last shell's)."""

    threshold: float
    frequency: float
    angstrom: float
    crossed: bool


def resolution_at(curve: Sequence[float] | np.ndarray | torch.Tensor, frequencies: Sequence[float] | np.ndarray,
                  threshold: float, voxel_size: float = 1.0) -> Resolution:
    """First drop of ``curve`` below ``threshold`` (from shell 1 on), linearly interpolated.

    ``frequencies`` are the shells' frequencies in cycles/voxel; ``voxel_size`` in Å.
    """
    c = np.asarray(torch.as_tensor(curve).detach().cpu().double().numpy() if isinstance(curve, torch.Tensor) else curve, dtype=np.float64)
    f = np.asarray(frequencies, dtype=np.float64)
    if c.shape != f.shape or c.ndim != 1 or c.size < 2:
        raise ValueError("curve and frequencies must be 1D arrays of the same length (≥ 2)")
    below = np.nonzero(c[1:] < threshold)[0]
    if below.size == 0:
        freq, crossed = float(f[-1]), False
    else:
        k = int(below[0]) + 1
        c0, c1 = c[k - 1], c[k]
        t = 0.0 if c0 == c1 else (c0 - threshold) / (c0 - c1)
        t = min(max(t, 0.0), 1.0)
        freq, crossed = float(f[k - 1] + t * (f[k] - f[k - 1])), True
    ang = float(voxel_size / freq) if freq > 0 else float("inf")
    return Resolution(float(threshold), freq, ang, crossed)


def resolutions(curve: Sequence[float] | np.ndarray | torch.Tensor, shape: Sequence[int], voxel_size: float = 1.0,
                thresholds: Sequence[float] = FSC_THRESHOLDS) -> dict[float, Resolution]:
    """Resolutions of an FSC curve of a volume of ``shape`` at each threshold (default 0.5, 0.143)."""
    freqs = shell_frequencies(shape)
    return {t: resolution_at(curve, freqs, t, voxel_size) for t in thresholds}
