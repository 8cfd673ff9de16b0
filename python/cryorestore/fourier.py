"""Fourier-space tools: frequency grids, shells, missing-wedge masks and the Fourier shell correlation.

Everything here is plain PyTorch on whatever device the inputs live on; it is also the reference
twin of the native kernels in :mod:`cryorestore.native`.

Conventions (see DESIGN.md)
---------------------------
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

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

Shape3 = tuple[int, int, int]
DeviceLike = torch.device | str | None

FSC_THRESHOLDS = (0.5, 0.143)


def _shape3(shape: Sequence[int]) -> Shape3:
    s = tuple(int(n) for n in shape)
    if len(s) != 3 or min(s) < 1:
        raise ValueError(f"expected a 3D (z, y, x) shape, got {shape}")
    return s  # type: ignore[return-value]


def rfft_shape(shape: Sequence[int]) -> Shape3:
    """Shape (Z, Y, X//2 + 1) of the rfft grid of a (Z, Y, X) volume."""
    z, y, x = _shape3(shape)
    return (z, y, x // 2 + 1)


def frequency_grid(
    shape: Sequence[int], rfft: bool = True, device: DeviceLike = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frequencies (kz, ky, kx) in cycles/voxel as broadcastable (Z,1,1), (1,Y,1), (1,1,Xf) tensors.

    ``Xf`` is ``X//2 + 1`` on the rfft grid and ``X`` on the full grid (FFT order, not shifted).
    On the rfft grid of an even X the Nyquist plane has kx = −0.5, as on the full grid.
    """
    z, y, x = _shape3(shape)
    kz = torch.fft.fftfreq(z, device=device, dtype=dtype).view(z, 1, 1)
    ky = torch.fft.fftfreq(y, device=device, dtype=dtype).view(1, y, 1)
    kx = torch.fft.fftfreq(x, device=device, dtype=dtype)
    if rfft:
        # the rfft grid holds the full grid's first X//2 + 1 planes; for an even X its last plane is
        # the full grid's Nyquist plane, whose frequency fftfreq gives as -0.5: keep that value so
        # that every rfft-grid quantity equals the matching part of the full-grid one.
        kx = kx[: x // 2 + 1]
    return kz, ky, kx.view(1, 1, -1)


def n_shells(shape: Sequence[int]) -> int:
    """Number of shells up to Nyquist: ``min(shape) // 2 + 1``."""
    return min(_shape3(shape)) // 2 + 1


def shell_frequencies(shape: Sequence[int]) -> np.ndarray:
    """Frequency of each shell in cycles/voxel: ``k / min(shape)`` for ``k = 0 … min(shape)//2``."""
    s = _shape3(shape)
    return np.arange(n_shells(s), dtype=np.float64) / min(s)


@functools.lru_cache(maxsize=32)
def _shell_index_cached(shape: Shape3, rfft: bool, device: str) -> torch.Tensor:
    kz, ky, kx = frequency_grid(shape, rfft=rfft, device=device, dtype=torch.float64)
    radius = torch.sqrt(kz**2 + ky**2 + kx**2) * min(shape)
    idx = torch.floor(radius + 0.5).to(torch.int64)
    n = n_shells(shape)
    return torch.where(idx < n, idx, torch.full_like(idx, n))


def shell_index(shape: Sequence[int], rfft: bool = True, device: DeviceLike = None) -> torch.Tensor:
    """Shell index (int64) of every coefficient of the rfft (or full) grid; ``n_shells`` = excluded."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _shell_index_cached(_shape3(shape), bool(rfft), str(dev))


@functools.lru_cache(maxsize=32)
def _rfft_weights_cached(shape: Shape3, device: str) -> torch.Tensor:
    x = shape[2]
    xr = x // 2 + 1
    w = torch.full((xr,), 2.0, dtype=torch.float64, device=device)
    w[0] = 1.0
    if x % 2 == 0:
        w[-1] = 1.0
    return w.view(1, 1, xr)


def rfft_weights(shape: Sequence[int], device: DeviceLike = None) -> torch.Tensor:
    """Multiplicity of each rfft-grid plane along x (1, 1, X//2+1): 1 for x = 0 and the Nyquist plane
    of an even X, 2 for the others, so that a weighted rfft sum equals the full-grid sum."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _rfft_weights_cached(_shape3(shape), str(dev))


# --------------------------------------------------------------------------------------------
# missing wedge
# --------------------------------------------------------------------------------------------
def check_tilt_range(tilt_min: float, tilt_max: float) -> None:
    """Raise :class:`~cryorestore.errors.InputError` (a ``ValueError``) unless
    −90 ≤ tilt_min < tilt_max ≤ 90 (degrees, finite); the one check every caller shares."""
    from cryorestore.errors import InputError

    if not (np.isfinite(tilt_min) and np.isfinite(tilt_max)) or not (-90.0 <= tilt_min < tilt_max <= 90.0):
        raise InputError(
            f"tilt range {tilt_min:g} {tilt_max:g} makes no sense: need -90 <= MIN < MAX <= 90 degrees"
        )


def wedge_mask_from_frequencies(
    kz: torch.Tensor, kx: torch.Tensor, tilt_min: float, tilt_max: float, eps_deg: float = 1e-6
) -> torch.Tensor:
    """Float mask (1 measured) of the lines whose angle ``atan2(kz, kx)`` (folded into (−90°, 90°]) lies
    in [line_min, line_max] degrees, on given (broadcastable) kz, kx tensors; tilts [a, b] measure the
    line angles [−b, −a] (see the module docstring)."""
    phi = torch.rad2deg(torch.atan2(kz, kx))
    phi = torch.where(phi > 90.0, phi - 180.0, phi)
    phi = torch.where(phi <= -90.0, phi + 180.0, phi)
    measured = (phi >= tilt_min - eps_deg) & (phi <= tilt_max + eps_deg)
    on_axis = (kz == 0) & (kx == 0)
    return (measured | on_axis).to(torch.float32)


def missing_wedge_mask(
    shape: Sequence[int],
    tilt_min: float,
    tilt_max: float,
    rfft: bool = True,
    rotations: torch.Tensor | np.ndarray | None = None,
    device: DeviceLike = None,
) -> torch.Tensor:
    """Float32 mask (1 = measured) of the coefficients sampled by tilts in [tilt_min, tilt_max]°.

    Without ``rotations`` the result has the grid's shape (Z, Y, Xf). With ``rotations`` (B, 3, 3)
    (matrices on (z, y, x) vectors) it is (B, Z, Y, Xf): mask b is the wedge of a volume rotated
    actively by ``rotations[b]``, i.e. ``M(R_bᵀ k)``, evaluated analytically (no interpolation).
    """
    check_tilt_range(tilt_min, tilt_max)
    lo, hi = -float(tilt_max), -float(tilt_min)  # tilt θ measures the line at angle −θ
    kz, ky, kx = frequency_grid(shape, rfft=rfft, device=device, dtype=torch.float64)
    if rotations is None:
        return wedge_mask_from_frequencies(kz, kx, lo, hi).expand(kz.shape[0], ky.shape[1], kx.shape[2]).contiguous()
    rot = torch.as_tensor(rotations, dtype=torch.float64, device=kz.device)
    if rot.ndim == 2:
        rot = rot.unsqueeze(0)
    # k' = Rᵀ k  →  k'_i = Σ_j R[j, i] k_j   (k = (kz, ky, kx))
    comps = (kz.unsqueeze(0), ky.unsqueeze(0), kx.unsqueeze(0))
    r = rot.view(-1, 3, 3, 1, 1, 1)
    kz_r = r[:, 0, 0] * comps[0] + r[:, 1, 0] * comps[1] + r[:, 2, 0] * comps[2]
    kx_r = r[:, 0, 2] * comps[0] + r[:, 1, 2] * comps[1] + r[:, 2, 2] * comps[2]
    # exact zero for the rotated ky axis would be lost to rounding; treat |k'_xz| tiny as on-axis
    tiny = 1e-12
    kz_r = torch.where(kz_r.abs() < tiny, torch.zeros_like(kz_r), kz_r)
    kx_r = torch.where(kx_r.abs() < tiny, torch.zeros_like(kx_r), kx_r)
    return wedge_mask_from_frequencies(kz_r, kx_r, lo, hi)


def apply_fourier_mask(volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Filter real volume(s) (…, Z, Y, X) with an rfft-grid mask (…, Z, Y, X//2+1): F⁻¹(M · F(v))."""
    spec = torch.fft.rfftn(volume, dim=(-3, -2, -1))
    return torch.fft.irfftn(spec * mask.to(spec.real.dtype), s=volume.shape[-3:], dim=(-3, -2, -1))


# --------------------------------------------------------------------------------------------
# Fourier shell correlation
# --------------------------------------------------------------------------------------------
def fsc_shell_sums(
    f1: torch.Tensor,
    f2: torch.Tensor,
    shells: torch.Tensor,
    n: int,
    nx: int | None = None,
    coefficient_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shell sums of rfft spectra: (B, 3, n) with Re Σ F1·conj F2, Σ|F1|², Σ|F2|² per shell.

    ``f1``, ``f2``: complex (B, Z, Y, Xr) rfft spectra; ``shells``: int64 (Z, Y, Xr) shell index,
    values ≥ ``n`` ignored; ``nx``: the real-space x size (default ``2·(Xr−1)``, i.e. even), which
    decides whether the last plane is a Nyquist plane counted once. ``coefficient_weights``
    (broadcastable to (Z, Y, Xr)) restricts or weights coefficients (e.g. a wedge selection).
    Sums are accumulated in float64 (the pure-torch twin of ``native.fsc_shells``).
    """
    if f1.shape != f2.shape:
        raise ValueError(f"spectra differ in shape: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    if f1.ndim == 3:
        f1, f2 = f1.unsqueeze(0), f2.unsqueeze(0)
    b, z, y, xr = f1.shape
    nx = 2 * (xr - 1) if nx is None else int(nx)
    if nx // 2 + 1 != xr:
        raise ValueError(f"nx={nx} does not match an rfft grid with {xr} x-planes")
    w = rfft_weights((z, y, nx), device=f1.device)
    if coefficient_weights is not None:
        w = w * coefficient_weights.to(device=f1.device, dtype=torch.float64)
    w = w.expand(z, y, xr).reshape(-1)
    idx = shells.to(f1.device).reshape(-1)
    f1d = f1.reshape(b, -1).to(torch.complex128)
    f2d = f2.reshape(b, -1).to(torch.complex128)
    terms = torch.stack(
        [
            (f1d * f2d.conj()).real * w,
            (f1d.real**2 + f1d.imag**2) * w,
            (f2d.real**2 + f2d.imag**2) * w,
        ],
        dim=1,
    )  # (B, 3, N)
    out = torch.zeros(b, 3, n + 1, dtype=torch.float64, device=f1.device)
    out.scatter_add_(2, idx.clamp(max=n).view(1, 1, -1).expand(b, 3, -1), terms)
    return out[..., :n]


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
    from cryorestore import native

    ta, tb = _as_batch(a), _as_batch(b)
    if ta.shape != tb.shape:
        raise ValueError(f"volumes differ in shape: {tuple(ta.shape[1:])} vs {tuple(tb.shape[1:])}")
    shape = tuple(ta.shape[1:])
    fa = torch.fft.rfftn(ta, dim=(-3, -2, -1))
    fb = torch.fft.rfftn(tb, dim=(-3, -2, -1))
    n = n_shells(shape)
    idx = shell_index(shape, rfft=True, device=fa.device)
    if fourier_mask is None:
        sums = native.fsc_shells(fa, fb, idx, n, nx=shape[2])
    else:
        sums = fsc_shell_sums(fa, fb, idx, n, nx=shape[2], coefficient_weights=fourier_mask)
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
