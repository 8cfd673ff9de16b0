"""Subtomogram averaging at given positions and orientations, in two random halves.

Extraction brings each particle into the reference frame: ``sub(s) = tomogram(p + A s)`` for box
coordinates ``s`` around voxel N//2 (A = ``geometry.euler_to_matrix`` of the RELION angles, on (z, y, x)
after :func:`geometry.xyz_to_zyx`). The integer part of ``p`` selects the box; the sub-voxel rest ``δ``
is removed by a Fourier shift (``scipy.ndimage.fourier_shift``), then the box is rotated by ``Aᵀ`` with
cubic splines. Boxes reaching outside the tomogram are padded with the tomogram's mean.

With a tilt range the average is wedge-compensated: ``F⁻¹( Σ F(sub_i) / max(Σ W_i, w_min) )`` with
``W_i`` the tomogram's wedge rotated into particle ``i``'s frame (:func:`native.wedge_mask`, the fast
equal of :func:`fourier.missing_wedge_mask`, with rotation ``Aᵢᵀ``), ``w_min`` = 10 % of the particle count; without it the plain mean.

Optional refinement (:func:`refine`): for each particle, a local grid of rotations around the current
one (±``n_steps`` × ``step`` about each axis) and integer shifts up to ``max_shift`` voxels, scored by
the cross-correlation, under a spherical mask, of the subtomogram with the reference rotated into the
particle's pose and multiplied by the particle's missing wedge (constrained cross-correlation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from cryorestore import fourier, geometry, native
from cryorestore.errors import InputError
from cryorestore.evaluate import angles as angle_sampling
from cryorestore.progress import progress_bar


def extract_box(tomogram: np.ndarray, centre_zyx: np.ndarray, box: int) -> np.ndarray:
    """The ``box``³ cube whose voxel box//2 is ``round(centre)``; outside voxels = the tomogram mean."""
    c = np.rint(np.asarray(centre_zyx, dtype=float)).astype(int)
    lo = c - box // 2
    out = np.full((box,) * 3, float(tomogram.mean()), dtype=np.float32)
    src = tuple(slice(max(0, a), min(n, a + box)) for a, n in zip(lo, tomogram.shape))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, lo))
    if all(s.stop > s.start for s in src):
        out[dst] = tomogram[src]
    return out


def extract_subtomogram(tomogram: np.ndarray, centre_zyx: np.ndarray, euler: np.ndarray, box: int) -> np.ndarray:
    """``sub(s) = tomogram(p + A s)`` on a ``box``³ grid (see module docstring), float32."""
    p = np.asarray(centre_zyx, dtype=float)
    sub = extract_box(tomogram, p, box).astype(np.float64)
    delta = p - np.rint(p)
    if np.any(np.abs(delta) > 1e-6):
        sub = np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(sub), -delta)).real
    a_zyx = geometry.xyz_to_zyx(geometry.euler_to_matrix(np.asarray(euler, dtype=float)))
    return geometry.rotate_volume(sub, a_zyx.T, order=3, cval=float(sub.mean())).astype(np.float32)


def particle_wedges(box: int, eulers: np.ndarray, tilt_range: tuple[float, float]) -> torch.Tensor:
    """(P, box, box, box//2+1) rfft masks of each extracted particle's missing wedge."""
    a_zyx = geometry.xyz_to_zyx(geometry.euler_to_matrix(np.asarray(eulers, dtype=float).reshape(-1, 3)))
    return native.wedge_mask((box,) * 3, float(tilt_range[0]), float(tilt_range[1]),
                             rotations=np.transpose(a_zyx, (0, 2, 1)))


def average(subtomos: np.ndarray, wedges: torch.Tensor | None = None) -> np.ndarray:
    """Mean of (P, N, N, N) subtomograms, wedge-compensated when ``wedges`` (P, N, N, N//2+1) is given."""
    if len(subtomos) == 0:
        raise InputError("no particles to average")
    if wedges is None:
        return np.asarray(subtomos, dtype=np.float64).mean(axis=0).astype(np.float32)
    t = torch.from_numpy(np.asarray(subtomos, dtype=np.float64))
    spec = torch.fft.rfftn(t, dim=(-3, -2, -1)).sum(0)
    wsum = wedges.double().sum(0)
    floor = max(0.1 * len(subtomos), 1e-3)
    avg = torch.fft.irfftn(spec / wsum.clamp(min=floor), s=t.shape[-3:], dim=(-3, -2, -1))
    return avg.float().numpy()


@dataclass
class AverageResult:
    """Half maps and full map (N³, float32), FSC curves (shells of the box) and resolutions."""

    half1: np.ndarray
    half2: np.ndarray
    full: np.ndarray
    fsc_half: np.ndarray
    fsc_reference: np.ndarray | None
    frequencies: np.ndarray
    metrics: dict[str, float]


def soft_sphere(box: int, radius: float, edge: float = 1.5) -> np.ndarray:
    """Spherical mask of ``radius`` voxels around voxel box//2, edges smoothed by a Gaussian of ``edge`` voxels."""
    from cryorestore.evaluate.matching import spherical_mask

    return ndimage.gaussian_filter(spherical_mask(box, radius), edge).astype(np.float32)


def half_split(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random half assignment (0/1 per particle, sizes differ by at most one)."""
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    return labels


def subtomogram_average(
    tomogram: np.ndarray, coords_zyx: np.ndarray, eulers: np.ndarray, box: int, voxel_size: float,
    rng: np.random.Generator, reference: np.ndarray | None = None, tilt_range: tuple[float, float] | None = None,
    progress: bool = True, mask_radius: float | None = None,
) -> AverageResult:
    """Extract, split into two random halves, average each, and measure half-map FSC (and FSC against
    ``reference``, a box³ map centred on voxel box//2). Frequencies in cycles/voxel, resolution in Å.

    FSCs are computed on maps multiplied by a soft spherical mask of ``mask_radius`` voxels (default
    0.4·box, Gaussian edge 1.5 voxels) so that neighbouring density does not dominate; the unmasked
    half-map resolutions are reported as ``half_unmasked_fsc05``/``…0143``."""
    coords = np.asarray(coords_zyx, dtype=float).reshape(-1, 3)
    eul = np.asarray(eulers, dtype=float).reshape(-1, 3)
    if len(coords) < 2:
        raise InputError(f"need at least 2 particles for two half maps, got {len(coords)}")
    if box < 8:
        raise InputError(f"--box must be at least 8 voxels, got {box}")
    if reference is not None and reference.shape != (box,) * 3:
        raise InputError(f"the reference has shape {reference.shape}, expected ({box}, {box}, {box}) for --box {box}")
    subs = np.stack([extract_subtomogram(tomogram, c, e, box)
                     for c, e in progress_bar(list(zip(coords, eul)), desc="extracting", enabled=progress, leave=False)])
    wedges = particle_wedges(box, eul, tilt_range) if tilt_range is not None else None
    halves = half_split(len(subs), rng)
    maps = []
    for h in (0, 1):
        sel = halves == h
        maps.append(average(subs[sel], None if wedges is None else wedges[torch.from_numpy(sel)]))
    full = average(subs, wedges)
    shape = (box,) * 3
    radius = 0.4 * box if mask_radius is None else float(mask_radius)
    soft = soft_sphere(box, radius)
    fsc_half = fourier.fsc(torch.from_numpy(maps[0] * soft), torch.from_numpy(maps[1] * soft)).numpy()
    unmasked = fourier.resolutions(fourier.fsc(torch.from_numpy(maps[0]), torch.from_numpy(maps[1])).numpy(), shape, voxel_size)
    metrics: dict[str, float] = {"n_particles": float(len(subs)), "box": float(box), "fsc_mask_radius": radius,
                                 "half_unmasked_fsc05": unmasked[0.5].frequency,
                                 "half_unmasked_fsc0143": unmasked[0.143].frequency}
    res = fourier.resolutions(fsc_half, shape, voxel_size)
    metrics.update({"half_fsc05": res[0.5].frequency, "half_fsc0143": res[0.143].frequency,
                    "half_fsc05_angstrom": res[0.5].angstrom, "half_fsc0143_angstrom": res[0.143].angstrom})
    fsc_ref = None
    if reference is not None:
        fsc_ref = fourier.fsc(torch.from_numpy(full * soft), torch.from_numpy(np.asarray(reference, dtype=np.float32) * soft)).numpy()
        rr = fourier.resolutions(fsc_ref, shape, voxel_size)
        metrics.update({"ref_fsc05": rr[0.5].frequency, "ref_fsc0143": rr[0.143].frequency,
                        "ref_fsc05_angstrom": rr[0.5].angstrom, "ref_fsc0143_angstrom": rr[0.143].angstrom})
    return AverageResult(maps[0], maps[1], full, fsc_half, fsc_ref, fourier.shell_frequencies(shape), metrics)


def refine(
    tomogram: np.ndarray, coords_zyx: np.ndarray, eulers: np.ndarray, reference: np.ndarray,
    step_deg: float = 5.0, n_steps: int = 1, max_shift: int = 2, tilt_range: tuple[float, float] | None = None,
    mask_radius: float | None = None, device: torch.device | str = "cpu", progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local refinement of poses by wedge-aware constrained cross-correlation.

    For every particle the reference is rotated actively into each candidate pose of
    :func:`angles.local_eulers` (the current pose first), filtered by the particle's missing wedge in the
    tomogram frame, masked by a sphere, and cross-correlated (FFT) with the box at the current integer
    position; the best (pose, integer shift within ``max_shift`` voxels) wins. Returns refined (P, 3)
    coordinates (z, y, x voxels), Euler angles (degrees) and the best normalised scores.
    """
    ref = np.asarray(reference, dtype=np.float32)
    box = ref.shape[0]
    dev = torch.device(device)
    radius = box / 2 - 1 if mask_radius is None else float(mask_radius)
    from cryorestore.evaluate.matching import spherical_mask

    mask = torch.from_numpy(spherical_mask(box, radius)).to(dev)
    wedge = None
    if tilt_range is not None:
        wedge = native.wedge_mask((box,) * 3, float(tilt_range[0]), float(tilt_range[1]), device=dev)
    ref_t = torch.from_numpy(ref).to(dev)
    out_c = np.asarray(coords_zyx, dtype=float).reshape(-1, 3).copy()
    out_e = np.asarray(eulers, dtype=float).reshape(-1, 3).copy()
    scores = np.zeros(len(out_c))
    c = box // 2
    sl = [(dz, dy, dx) for dz in range(-max_shift, max_shift + 1) for dy in range(-max_shift, max_shift + 1)
          for dx in range(-max_shift, max_shift + 1) if dz * dz + dy * dy + dx * dx <= max_shift * max_shift]
    shifts = torch.tensor(sl, device=dev)
    for i in progress_bar(range(len(out_c)), desc="refining", enabled=progress, leave=False):
        cand = angle_sampling.local_eulers(out_e[i], step_deg, n_steps)
        rz = torch.from_numpy(geometry.xyz_to_zyx(geometry.euler_to_matrix(cand))).to(dev, torch.float32)
        from cryorestore.evaluate.matching import prepare_templates

        temps = prepare_templates(ref_t, rz, mask, wedge)  # (K, N, N, N) zero-mean, unit-var in mask
        sub = torch.from_numpy(extract_box(tomogram, out_c[i], box)).to(dev)
        sub = sub - sub.mean()
        # cc[k](d) = Σ_s T_k(s) sub(s + d)
        cc = torch.fft.irfftn(torch.fft.rfftn(temps, dim=(-3, -2, -1)).conj() * torch.fft.rfftn(sub),
                              s=(box,) * 3, dim=(-3, -2, -1))
        vals = cc[:, shifts[:, 0] % box, shifts[:, 1] % box, shifts[:, 2] % box]  # (K, S)
        k, s = np.unravel_index(int(torch.argmax(vals)), tuple(vals.shape))
        norm = float(torch.sqrt((sub * sub * mask).sum() * mask.sum()))
        scores[i] = float(vals[k, s]) / norm if norm > 0 else 0.0
        out_c[i] = np.rint(out_c[i]) + np.array(sl[s], dtype=float)
        out_e[i] = cand[k]
    del c
    return out_c, out_e, scores
