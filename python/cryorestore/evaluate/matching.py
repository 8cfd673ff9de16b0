"""Template matching: masked, locally normalised cross-correlation over a uniform angular search.

Score (Roseman 2003 fast local correlation) for the template centred on voxel ``p`` in rotation ``A``:

    NCC(p, A) = Σ_s T'_A(s) · f(p + s) / (n · σ_f(p))

* ``M`` is a spherical mask of ``n`` voxels around the template's centre (voxel N//2 of its box). It is
  rotation-invariant, so the tomogram's local mean ``μ_f(p)`` and standard deviation ``σ_f(p)`` under
  ``M`` are computed once by FFT.
* ``T_A`` is the template rotated actively by ``A`` (``geometry.euler_to_matrix`` of the stored RELION
  angles; a particle is ``template(Aᵀ (r − p))``), then — with a tilt range — multiplied in Fourier
  space by the tomogram's missing-wedge mask (lab frame) on the template box, then masked and
  normalised inside ``M`` to zero mean and unit variance (``T'_A``). Because ``T'_A`` has zero mean
  under ``M``, the numerator equals ``Σ T'_A (f − μ_f(p))`` and NCC ∈ [−1, 1] (Cauchy–Schwarz).
* The numerator for all ``p`` is one cross-correlation: ``F⁻¹(F(f) · conj(F(T'_A padded)))``. The
  padded template's spectrum is computed by a pruned FFT (rfft along x of the box's N² rows with
  ``n = X``, then FFTs along y and z with ``n = Y``, ``n = Z``), so each rotation costs about one
  full-size inverse FFT.
* Per voxel the maximum over rotations and the index of the best rotation are kept in place; the
  division by ``n·σ_f`` happens once at the end (it does not depend on the rotation). Voxels whose
  ``σ_f`` is below 10⁻⁴ of the tomogram's standard deviation (empty regions of a noiseless map) score 0.
Correlation is circular: the tomogram wraps around at its faces, so peaks closer than the mask
radius to a face see the opposite face; :func:`find_peaks` can exclude an edge band.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from cryorestore import fourier, geometry, native
from cryorestore.errors import InputError
from cryorestore.progress import progress_bar


@dataclass
class MatchResult:
    """``scores``: max NCC per voxel (z, y, x) float32; ``best_index``: index into ``eulers`` of the best
    rotation per voxel (int32); ``eulers``: (R, 3) RELION angles (degrees) searched; ``seconds``: search time."""

    scores: np.ndarray
    best_index: np.ndarray
    eulers: np.ndarray
    mask_radius: float
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def spherical_mask(box: int, radius: float) -> np.ndarray:
    """Binary float32 ball of ``radius`` voxels around voxel ``box // 2`` of a ``box``³ cube."""
    c = box // 2
    g = np.arange(box, dtype=np.float64) - c
    r2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    return (r2 <= radius * radius).astype(np.float32)


def default_mask_radius(template: np.ndarray, fraction: float = 0.99) -> float:
    """Radius (voxels) around the box centre holding ``fraction`` of the template's |density| plus 1,
    at most box//2 − 1."""
    box = template.shape[0]
    c = box // 2
    g = np.arange(box, dtype=np.float64) - c
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2).ravel()
    w = np.abs(np.asarray(template, dtype=np.float64)).ravel()
    if w.sum() <= 0:
        raise InputError("the template is empty (all zeros)")
    order = np.argsort(r)
    cum = np.cumsum(w[order]) / w.sum()
    r_f = float(r[order][int(np.searchsorted(cum, fraction))])
    return float(min(math.ceil(r_f) + 1.0, box // 2 - 1))


def check_template(template: np.ndarray, tomo_shape: tuple[int, int, int]) -> None:
    """The template must be a cube no larger than the tomogram along any axis."""
    if template.ndim != 3 or len(set(template.shape)) != 1:
        raise InputError(f"the template must be a cubic box, got shape {template.shape}")
    if template.shape[0] > min(tomo_shape):
        raise InputError(f"the template box {template.shape[0]} is larger than the tomogram {tomo_shape}; crop the template")


def pruned_rfftn(boxes: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """rfftn over ``shape`` of volumes that are zero except for a (B, N, N, N) box in the corner.

    Equals ``torch.fft.rfftn`` of the zero-padded volumes, but transforms only the non-zero rows:
    x first (N² rows), then z (N·Xr columns), then y (the only full-size stage).
    """
    z, y, x = shape
    spec = torch.fft.rfft(boxes, n=x, dim=-1)
    spec = torch.fft.fft(spec, n=z, dim=-3)
    return torch.fft.fft(spec, n=y, dim=-2)


def local_statistics(tomo: torch.Tensor, mask_box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Local mean and standard deviation of ``tomo`` under the mask centred on each voxel (float64 sums).

    Returns (μ, σ) as (Z, Y, X) tensors and the mask's voxel count ``n``.
    """
    shape = tuple(tomo.shape)
    n = float(mask_box.sum())
    c = mask_box.shape[0] // 2
    t64 = tomo.double()
    fm = pruned_rfftn(mask_box.double().unsqueeze(0), shape)[0]
    s1 = torch.fft.irfftn(torch.fft.rfftn(t64) * fm.conj(), s=shape)
    s2 = torch.fft.irfftn(torch.fft.rfftn(t64 * t64) * fm.conj(), s=shape)
    s1 = torch.roll(s1, shifts=(c, c, c), dims=(0, 1, 2))
    s2 = torch.roll(s2, shifts=(c, c, c), dims=(0, 1, 2))
    mu = s1 / n
    var = (s2 / n - mu * mu).clamp(min=0.0)
    return mu, var.sqrt(), n


def prepare_templates(template: torch.Tensor, rotations_zyx: torch.Tensor, mask_box: torch.Tensor,
                      wedge_box: torch.Tensor | None) -> torch.Tensor:
    """Rotate (trilinear), wedge-filter (box rfft grid), mask and normalise: (B, N, N, N) zero mean, unit
    variance inside the mask, zero outside."""
    b = rotations_zyx.shape[0]
    n_box = template.shape[0]
    vols = template.expand(b, 1, n_box, n_box, n_box)
    rot = geometry.rotate_volumes_torch(vols, rotations_zyx)[:, 0]
    if wedge_box is not None:
        rot = torch.fft.irfftn(torch.fft.rfftn(rot, dim=(-3, -2, -1)) * wedge_box, s=(n_box,) * 3, dim=(-3, -2, -1))
    n = mask_box.sum()
    rot = rot * mask_box
    mean = rot.sum(dim=(-3, -2, -1), keepdim=True) / n
    rot = (rot - mean) * mask_box
    std = torch.sqrt((rot * rot).sum(dim=(-3, -2, -1), keepdim=True) / n)
    return torch.where(std > 0, rot / std.clamp(min=1e-30), torch.zeros_like(rot))


def match_template(
    tomogram: np.ndarray,
    template: np.ndarray,
    eulers: np.ndarray,
    tilt_range: tuple[float, float] | None = None,
    mask_radius: float | None = None,
    device: torch.device | str = "cpu",
    batch: int = 8,
    progress: bool = True,
) -> MatchResult:
    """Search ``eulers`` (R, 3) (RELION degrees) and return the best NCC and rotation index per voxel."""
    tomo_np = np.asarray(tomogram, dtype=np.float32)
    tmpl_np = np.asarray(template, dtype=np.float32)
    check_template(tmpl_np, tuple(tomo_np.shape))
    eul = np.asarray(eulers, dtype=np.float64).reshape(-1, 3)
    if len(eul) == 0:
        raise InputError("no rotations to search")
    dev = torch.device(device)
    t_start = time.perf_counter()
    shape = tuple(tomo_np.shape)
    n_box = tmpl_np.shape[0]
    radius = default_mask_radius(tmpl_np) if mask_radius is None else float(mask_radius)
    if not 0 < radius <= n_box / 2:
        raise InputError(f"mask radius {radius:g} must lie in (0, {n_box / 2:g}] voxels for a {n_box}-voxel template")
    mask_box = torch.from_numpy(spherical_mask(n_box, radius)).to(dev)
    tomo = torch.from_numpy(tomo_np).to(dev)
    tomo = tomo - tomo.mean()
    _, sigma, n_mask = local_statistics(tomo, mask_box)
    ftomo = torch.fft.rfftn(tomo)
    wedge_box = None
    if tilt_range is not None:
        wedge_box = native.wedge_mask((n_box,) * 3, float(tilt_range[0]), float(tilt_range[1]), device=dev)
    tmpl = torch.from_numpy(tmpl_np).to(dev)
    rot_zyx = torch.from_numpy(geometry.xyz_to_zyx(geometry.euler_to_matrix(eul))).to(dev, torch.float32)
    best = torch.full(shape, -torch.inf, device=dev, dtype=torch.float32)
    best_idx = torch.zeros(shape, device=dev, dtype=torch.int32)
    t_setup = time.perf_counter() - t_start
    with torch.inference_mode():
        for start in progress_bar(range(0, len(eul), batch), desc="template matching", unit="batch",
                                  enabled=progress, leave=False):
            stop = min(start + batch, len(eul))
            boxes = prepare_templates(tmpl, rot_zyx[start:stop], mask_box, wedge_box)
            spec = pruned_rfftn(boxes, shape)
            for k in range(stop - start):
                cc = torch.fft.irfftn(spec[k].conj() * ftomo, s=shape)
                better = cc > best
                torch.maximum(best, cc, out=best)
                best_idx.masked_fill_(better, start + k)
            del spec
    c = n_box // 2
    best = torch.roll(best, shifts=(c, c, c), dims=(0, 1, 2))
    best_idx = torch.roll(best_idx, shifts=(c, c, c), dims=(0, 1, 2))
    floor = 1e-4 * float(tomo.std())
    valid = sigma > floor
    scores = torch.where(valid, best.double() / (n_mask * sigma.clamp(min=floor)), torch.zeros_like(sigma)).float()
    seconds = time.perf_counter() - t_start
    return MatchResult(scores.cpu().numpy(), best_idx.cpu().numpy(), eul, radius, seconds,
                       {"setup_s": t_setup, "search_s": seconds - t_setup, "rotations": float(len(eul))})


def find_peaks(scores: np.ndarray, n_peaks: int, min_distance: float, edge: int = 0,
               threshold: float | None = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n_peaks`` local maxima by non-maximum suppression.

    Candidates are voxels equal to the maximum of their (2d+1)³ neighbourhood (``d = ceil(min_distance)``),
    at least ``edge`` voxels from every face and above ``threshold`` (default 0: a non-positive NCC is no
    detection, and flat zero regions are not peaks); they are accepted in
    decreasing score order unless closer than ``min_distance`` voxels (Euclidean) to an accepted peak.
    Returns ((K, 3) integer (z, y, x) positions, (K,) scores).
    """
    s = np.asarray(scores, dtype=np.float32)
    d = max(1, int(math.ceil(min_distance)))
    local = ndimage.maximum_filter(s, size=2 * d + 1, mode="constant", cval=-np.inf) == s
    if edge > 0:
        inner = np.zeros_like(local)
        inner[tuple(slice(edge, n - edge) for n in s.shape)] = True
        local &= inner
    if threshold is not None:
        local &= s > threshold
    cand = np.argwhere(local)
    cs = s[local]
    order = np.argsort(-cs, kind="stable")
    kept: list[np.ndarray] = []
    kept_scores: list[float] = []
    for i in order:
        if len(kept) >= n_peaks:
            break
        p = cand[i]
        if kept and np.min(np.sum((np.asarray(kept) - p) ** 2, axis=1)) < min_distance * min_distance:
            continue
        kept.append(p)
        kept_scores.append(float(cs[i]))
    return np.asarray(kept, dtype=np.int64).reshape(-1, 3), np.asarray(kept_scores, dtype=np.float64)
