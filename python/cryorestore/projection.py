"""Parallel-beam forward projection and weighted back-projection (WBP) about the y axis.

Geometry and handedness (the convention of the whole package; see ``docs/architecture.md``)
-------------------------------------------------------------------------------------------
* Volumes are (z, y, x); z is the beam direction at zero tilt; the tilt axis is y; tilt angles θ
  are in degrees.
* Coordinates are centred on the geometric centre ``(N − 1) / 2`` of every axis (x and z of the
  volume, u of the detector), so the tilt axis passes through the middle of the volume and of the
  image whether N is odd or even.
* Positive tilt turns the specimen's +x toward +z: a point (x, z) of the volume appears in the image
  at tilt θ at ``u = x cos θ − z sin θ`` and lies at depth ``w = x sin θ + z cos θ`` along the beam.
  The projection integrates along the ray direction (x, z) = (sin θ, cos θ)::

      p_θ(u, y) = ∫ f(x = u cos θ + t sin θ, y, z = −u sin θ + t cos θ) dt

* Defocus handedness (IMOD, Dynamo and novaCTF): at positive tilt angles the right side (+u, i.e.
  +x) of the tilt image is more underfocused than the left. In this geometry that holds when the
  defocus of a point grows with its depth w, ``Δf(point) = Δf_tilt + w`` (Å, positive = underfocus):
  a point on the mid-plane (z = 0) at image position u has depth ``u tan θ``. So the +z side of the
  tomogram is the more underfocused one; :mod:`cryorestore.ctf` and :mod:`cryorestore.simulate` use
  exactly this rule, and the tests pin it with an analytic point source and the sign of the
  simulated defocus gradient.
* By the central-slice theorem the 1D Fourier transform along u of ``p_θ`` samples the line
  (kx, kz) = (cos θ, −sin θ)·ν of the volume's spectrum, i.e. the line at angle −θ; this is the
  rule of :func:`cryorestore.fourier.missing_wedge_mask` (tilts [a, b] measure the lines whose angle
  ``atan2(kz, kx)`` lies in [−b, −a]).
* A tilt series (stack) is a (n_tilts, Y, U) float32 array: the detector is U wide (U = X of the
  volume by default) and Y long along the tilt axis.

Discretisation
--------------
Forward projection uses Joseph's method: every ray is sampled once per voxel plane across its
dominant direction (z planes when |θ| ≤ 45°, x columns otherwise), linearly interpolated between the
two nearest voxels of that plane, and the sum is scaled by the ray length per plane (1/|cos θ| or
1/|sin θ|). Only the planes the ray crosses inside the slab are visited. All y rows are handled at
once: each sample gathers a contiguous row of Y voxels, so the work per tilt is a few vectorised
gathers (any torch device).

Back-projection filters each projection along u with the Ram-Lak ramp |ν| (ν in cycles/pixel; the
spatial kernel h[0] = 1/4, h[odd n] = −1/(π² n²), which keeps a small positive DC term so the mean
is not lost), zero-padded to at least twice the width so that the circular convolution does not wrap,
multiplies by the angular weight Δθ_i in radians (the tilt's share of the covered angle, see
:func:`angular_weights`) and smears the result back along the rays, interpolating linearly at
u = x cos θ − z sin θ for the whole (z, x) plane and all y at once. With tilts covering −90°…90° this
is the filtered back-projection ``f = ∫_0^π (p_θ * h)(u) dθ``, so a reconstruction is on the scale of
the projected volume (density per voxel).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cryorestore.errors import InputError

DeviceLike = torch.device | str | None

#: Largest temporary (elements) a gather step may create; larger volumes are processed in chunks.
CHUNK_ELEMENTS = 1 << 24


def centre(n: int) -> float:
    """The geometric centre ``(n − 1) / 2`` of an axis of ``n`` samples (voxel index units)."""
    return (int(n) - 1) / 2.0


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def check_angles(angles_deg: Sequence[float] | np.ndarray, n_expected: int | None = None, what: str = "tilt angles") -> np.ndarray:
    """Return the tilt angles (degrees) as float64, raising :class:`InputError` if they make no sense.

    They must be finite, lie within −90…90° and, if ``n_expected`` is given, number ``n_expected``.
    """
    a = np.asarray(angles_deg, dtype=np.float64).ravel()
    if a.size == 0:
        raise InputError(f"no {what} given")
    if not np.isfinite(a).all():
        raise InputError(f"{what} contain NaN or infinite values")
    if np.abs(a).max() > 90.0 + 1e-9:
        raise InputError(f"{what} must lie within -90..90 degrees (got {a.min():g}..{a.max():g})")
    if n_expected is not None and a.size != n_expected:
        raise InputError(f"{a.size} {what} given for {n_expected} projection images; the counts must match")
    return a


def _as_tensor(arr: np.ndarray | torch.Tensor, device: DeviceLike) -> torch.Tensor:
    t = torch.as_tensor(arr)
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t.to(device=device if device is not None else t.device)


# --------------------------------------------------------------------------------------------
# forward projection
# --------------------------------------------------------------------------------------------
def _gather_rows(rows: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``rows[idx] * weight``: rows (R, Y), idx and weight (S, U) → (S, U, Y)."""
    return rows.index_select(0, idx.reshape(-1)).view(*idx.shape, rows.shape[1]) * weight.unsqueeze(-1)


def project(
    volume: np.ndarray | torch.Tensor,
    angles_deg: Sequence[float] | np.ndarray,
    detector_width: int | None = None,
    device: DeviceLike = None,
    progress: bool = False,
) -> np.ndarray | torch.Tensor:
    """Parallel projections of a (Z, Y, X) volume at tilts ``angles_deg`` (degrees) about y.

    Returns a (n_tilts, Y, U) stack (``U = detector_width``, default X) of line integrals in
    density·voxel units; a NumPy input gives a float32 NumPy output, a tensor input a tensor on
    ``device`` (default: the input's device). See the module docstring for the geometry.
    """
    as_numpy = isinstance(volume, np.ndarray)
    vol = _as_tensor(volume, device)
    if vol.ndim != 3:
        raise InputError(f"project needs a 3D (z, y, x) volume, got shape {tuple(vol.shape)}")
    angles = check_angles(angles_deg)
    nz, ny, nx = vol.shape
    nu = int(detector_width) if detector_width is not None else nx
    dev, dt = vol.device, vol.dtype
    # rows[(z * X + x)] = vol[z, :, x]; one extra zero row stands for "outside the volume"
    rows = torch.cat([vol.permute(0, 2, 1).reshape(nz * nx, ny), vol.new_zeros(1, ny)], dim=0)
    outside = nz * nx
    cz, cx, cu = centre(nz), centre(nx), centre(nu)
    uc = torch.arange(nu, device=dev, dtype=torch.float64) - cu  # detector coordinate, centred
    out = vol.new_zeros(len(angles), ny, nu)
    for i, theta in enumerate(tqdm(angles, desc="projecting", unit="tilt", disable=not progress, leave=False)):
        t = math.radians(float(theta))
        c, s = math.cos(t), math.sin(t)
        if abs(c) >= abs(s):
            # one sample per z plane: x = (u + z sin θ) / cos θ
            zc = torch.arange(nz, device=dev, dtype=torch.float64) - cz
            xf = (uc.view(1, -1) + zc.view(-1, 1) * s) / c + cx  # (Z, U) in voxel index units
            i0 = torch.floor(xf)
            f = (xf - i0).to(dt)
            i0 = i0.long()
            plane = torch.arange(nz, device=dev).view(-1, 1) * nx
            idx_a = torch.where((i0 >= 0) & (i0 < nx), plane + i0, outside)
            idx_b = torch.where((i0 + 1 >= 0) & (i0 + 1 < nx), plane + i0 + 1, outside)
            scale = 1.0 / abs(c)
        else:
            # one sample per x column: z = (x cos θ − u) / sin θ; visit only the columns the ray
            # crosses inside the slab (|z − cz| ≤ Z/2 + 1)
            half = (nz / 2.0 + 1.0) * abs(s / c) if abs(c) > 1e-12 else float("inf")
            if 2 * half + 1 >= nx:
                xi = torch.arange(nx, device=dev, dtype=torch.float64).view(-1, 1).expand(nx, nu)
            else:
                k = math.ceil(half)
                mid = torch.round(uc / c + cx) if abs(c) > 0 else torch.full_like(uc, round(cx))
                xi = mid.view(1, -1) + torch.arange(-k, k + 1, device=dev, dtype=torch.float64).view(-1, 1)
            xc = xi - cx  # column positions relative to the centre (voxels)
            zf = (xc * c - uc.view(1, -1)) / s + cz  # (S, U)
            i0 = torch.floor(zf)
            f = (zf - i0).to(dt)
            i0 = i0.long()
            xi = xi.long()
            xin = (xi >= 0) & (xi < nx)
            idx_a = torch.where(xin & (i0 >= 0) & (i0 < nz), i0 * nx + xi, outside)
            idx_b = torch.where(xin & (i0 + 1 >= 0) & (i0 + 1 < nz), (i0 + 1) * nx + xi, outside)
            scale = 1.0 / abs(s)
        acc = vol.new_zeros(nu, ny)
        step = max(1, CHUNK_ELEMENTS // max(1, nu * ny))  # bound the temporaries for large volumes
        for s0 in range(0, idx_a.shape[0], step):
            sl = slice(s0, s0 + step)
            acc += _gather_rows(rows, idx_a[sl], 1.0 - f[sl]).sum(dim=0)
            acc += _gather_rows(rows, idx_b[sl], f[sl]).sum(dim=0)
        out[i] = acc.T * scale
    return out.cpu().numpy().astype(np.float32) if as_numpy else out


# --------------------------------------------------------------------------------------------
# weighted back-projection
# --------------------------------------------------------------------------------------------
def angular_weights(angles_deg: Sequence[float] | np.ndarray) -> np.ndarray:
    """Angular weight Δθ_i (radians) of each tilt: the width of the angular interval it stands for.

    Tilts are sorted; each owns the interval between the midpoints to its neighbours, and the first
    and last tilts extend by half the gap to their one neighbour (as if the spacing went on). When
    the intervals together span more than 180° (e.g. tilts at both −90° and +90°, which measure the
    same line) the two end intervals are shortened equally so that the weights sum to π. Weights are
    returned in the input order. At least 2 distinct tilts are needed.
    """
    a = check_angles(angles_deg)
    if a.size < 2:
        raise InputError("weighted back-projection needs at least 2 tilts")
    order = np.argsort(a, kind="stable")
    s = a[order]
    gaps = np.diff(s)
    if not (gaps > 0).any():
        raise InputError("all tilt angles are equal; back-projection needs at least 2 distinct tilts")
    lo_edge = s[0] - gaps[0] / 2.0
    hi_edge = s[-1] + gaps[-1] / 2.0
    edges = np.concatenate([[lo_edge], (s[1:] + s[:-1]) / 2.0, [hi_edge]])
    excess = (edges[-1] - edges[0]) - 180.0
    if excess > 0:
        edges[0] += excess / 2.0
        edges[-1] -= excess / 2.0
    w_sorted = np.clip(np.diff(edges), 0.0, None)
    w = np.empty_like(w_sorted)
    w[order] = w_sorted
    return np.deg2rad(w)


def ramp_kernel(n_padded: int, device: DeviceLike = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """rfft (length ``n_padded//2 + 1``) of the Ram-Lak ramp filter of a padded length ``n_padded``.

    Built from the band-limited spatial kernel h[0] = 1/4, h[±n odd] = −1/(π² n²), h[±n even] = 0
    (unit pixel spacing), wrapped circularly; its response is ≈ |ν| (ν in cycles/pixel) with a small
    positive DC value instead of 0.
    """
    n = np.arange(n_padded)
    d = np.minimum(n, n_padded - n).astype(np.float64)
    h = np.zeros(n_padded)
    h[0] = 0.25
    odd = (d % 2) == 1
    h[odd] = -1.0 / (np.pi**2 * d[odd] ** 2)
    resp = np.fft.rfft(h).real
    return torch.as_tensor(resp, dtype=dtype, device=device)


def filter_projections(projections: torch.Tensor, angles_deg: np.ndarray) -> torch.Tensor:
    """Ramp-filter a (n, Y, U) stack along u (zero-padded to ≥ 2U) and scale tilt i by Δθ_i (rad)."""
    n, ny, nu = projections.shape
    n_pad = 1 << max(1, math.ceil(math.log2(2 * nu)))
    spec = torch.fft.rfft(projections, n=n_pad, dim=-1)
    resp = ramp_kernel(n_pad, device=projections.device, dtype=projections.dtype)
    w = torch.as_tensor(angular_weights(angles_deg), dtype=projections.dtype, device=projections.device)
    filtered = torch.fft.irfft(spec * resp, n=n_pad, dim=-1)[..., :nu]
    return filtered * w.view(-1, 1, 1)


def backproject_filtered(
    filtered: torch.Tensor,
    angles_deg: np.ndarray,
    thickness: int,
    width: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Smear already filtered and weighted projections (n, Y, U) back into a (thickness, Y, X) volume.

    For every tilt the value at u = x cos θ − z sin θ (linear interpolation, 0 outside the detector)
    is added to the whole (z, x) plane, all y rows at once.
    """
    n, ny, nu = filtered.shape
    nx = int(width) if width is not None else nu
    nz = int(thickness)
    dev, dt = filtered.device, filtered.dtype
    zc = torch.arange(nz, device=dev, dtype=torch.float64).view(-1, 1) - centre(nz)
    xc = torch.arange(nx, device=dev, dtype=torch.float64).view(1, -1) - centre(nx)
    acc = filtered.new_zeros(nz * nx, ny)  # rows (z * X + x), y contiguous
    zero_row = filtered.new_zeros(1, ny)
    step = max(1, CHUNK_ELEMENTS // max(1, nx * ny))  # z planes per chunk: bounds the temporaries
    for i, theta in enumerate(tqdm(angles_deg, desc="back-projecting", unit="tilt", disable=not progress, leave=False)):
        t = math.radians(float(theta))
        rows = torch.cat([filtered[i].T, zero_row], dim=0)  # (U + 1, Y); row U is "off the detector"
        for z0 in range(0, nz, step):
            z1 = min(nz, z0 + step)
            uf = (xc * math.cos(t) - zc[z0:z1] * math.sin(t) + centre(nu)).reshape(-1)
            i0 = torch.floor(uf)
            f = (uf - i0).to(dt).unsqueeze(-1)
            i0 = i0.long()
            a = torch.where((i0 >= 0) & (i0 < nu), i0, nu)
            b = torch.where((i0 + 1 >= 0) & (i0 + 1 < nu), i0 + 1, nu)
            part = acc[z0 * nx : z1 * nx]
            part.add_(rows.index_select(0, a) * (1.0 - f))
            part.add_(rows.index_select(0, b) * f)
    return acc.view(nz, nx, ny).permute(0, 2, 1).contiguous()


def backproject(
    projections: np.ndarray | torch.Tensor,
    angles_deg: Sequence[float] | np.ndarray,
    thickness: int,
    width: int | None = None,
    device: DeviceLike = None,
    progress: bool = False,
) -> np.ndarray | torch.Tensor:
    """Weighted (ramp-filtered) back-projection of a (n_tilts, Y, U) stack into (thickness, Y, X).

    ``X = width`` (default U). A NumPy input gives a float32 NumPy output, a tensor input a tensor.
    Raises :class:`InputError` if the angles do not match the stack or make no sense.
    """
    as_numpy = isinstance(projections, np.ndarray)
    p = _as_tensor(projections, device)
    if p.ndim != 3:
        raise InputError(f"a tilt series must be a (n_tilts, Y, X) stack, got shape {tuple(p.shape)}")
    angles = check_angles(angles_deg, n_expected=p.shape[0])
    if int(thickness) < 1:
        raise InputError(f"thickness must be at least 1 voxel, got {thickness}")
    vol = backproject_filtered(filter_projections(p, angles), angles, int(thickness), width, progress=progress)
    return vol.cpu().numpy().astype(np.float32) if as_numpy else vol
