"""Signal-to-noise ratio from paired signal and background boxes (Bepler et al. 2020, Topaz-Denoise).

For N pairs of cubic boxes (signal box i, background box i) with means ``μ_s,i``, ``μ_b,i`` and the
background variance ``σ²_b,i`` (population variance of the background box's voxels),

    SNR_dB = 10 · log10( (1/N) · Σ_i (μ_s,i − μ_b,i)² / σ²_b,i )

i.e. the per-pair power ratio averaged over pairs, then expressed in decibels. Boxes are cubes of
``box`` voxels whose centre voxel is ``c`` (voxels ``c − box//2 … c − box//2 + box − 1`` per axis,
(z, y, x) order); every box must lie inside the volume.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from cryorestore.errors import InputError


def box_slices(centre_zyx: np.ndarray, box: int, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    """Slices of the cubic ``box`` around the (rounded) centre; :class:`InputError` if it leaves the volume."""
    c = np.rint(np.asarray(centre_zyx, dtype=float)).astype(int)
    lo = c - box // 2
    hi = lo + box
    if (lo < 0).any() or (hi > np.asarray(shape)).any():
        raise InputError(f"a {box}-voxel box at (z, y, x) = {tuple(c)} leaves the {tuple(shape)} volume; use a smaller --box or move the box")
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def box_stats(volume: np.ndarray, centres_zyx: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance (float64) of each box; ``centres_zyx`` is (N, 3) in voxels."""
    cs = np.asarray(centres_zyx, dtype=float).reshape(-1, 3)
    means, variances = np.empty(len(cs)), np.empty(len(cs))
    for i, c in enumerate(cs):
        v = np.asarray(volume[box_slices(c, box, volume.shape)], dtype=np.float64)
        means[i], variances[i] = v.mean(), v.var()
    return means, variances


def snr_db_from_stats(signal_means: np.ndarray, background_means: np.ndarray, background_vars: np.ndarray) -> float:
    """``10·log10(mean_i (μ_s,i − μ_b,i)² / σ²_b,i)`` (see module docstring)."""
    s, b, v = (np.asarray(a, dtype=np.float64).ravel() for a in (signal_means, background_means, background_vars))
    if not (len(s) == len(b) == len(v)) or len(s) == 0:
        raise InputError(f"need the same positive number of signal and background boxes, got {len(s)} and {len(b)}")
    if (v <= 0).any():
        raise InputError("a background box has zero variance; SNR is undefined there (choose boxes with noise)")
    ratio = float(np.mean((s - b) ** 2 / v))
    return 10.0 * math.log10(ratio) if ratio > 0 else float("-inf")


def snr_db(volume: np.ndarray, signal_zyx: np.ndarray, background_zyx: np.ndarray, box: int) -> float:
    """SNR in dB of ``volume`` from paired box centres (signal i paired with background i)."""
    if box < 2:
        raise InputError(f"--box must be at least 2 voxels, got {box}")
    if len(np.reshape(signal_zyx, (-1, 3))) != len(np.reshape(background_zyx, (-1, 3))):
        raise InputError(f"{len(np.reshape(signal_zyx, (-1, 3)))} signal boxes but {len(np.reshape(background_zyx, (-1, 3)))} background boxes; they are used in pairs")
    ms, _ = box_stats(volume, signal_zyx, box)
    mb, vb = box_stats(volume, background_zyx, box)
    return snr_db_from_stats(ms, mb, vb)


def auto_boxes(truth: np.ndarray, box: int, n: int, rng: np.random.Generator,
               signal_centres: np.ndarray | None = None, empty_fraction: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``n`` paired box centres from the simulator's noiseless truth.

    Signal: the given ``signal_centres`` (e.g. particle positions) that fit, else voxels whose box mean of
    the truth is in the top 1 %. Background: centres whose box holds no truth density above
    ``empty_fraction`` of the truth's maximum (empty ice). Drawn at random with ``rng``; fewer than ``n``
    pairs if fewer fit. Returns two (m, 3) arrays in (z, y, x) voxels.
    """
    t = np.asarray(truth, dtype=np.float32)
    half = box // 2
    valid = np.zeros(t.shape, dtype=bool)
    valid[tuple(slice(half, s - (box - half) + 1) for s in t.shape)] = True
    peak = float(np.abs(t).max())
    empty = ndimage.maximum_filter(np.abs(t), size=box, mode="constant") <= empty_fraction * peak
    bg_cand = np.argwhere(empty & valid)
    if signal_centres is not None and len(signal_centres):
        sc = np.rint(np.asarray(signal_centres, dtype=float).reshape(-1, 3)).astype(int)
        inside = np.all((sc >= half) & (sc <= np.asarray(t.shape) - (box - half)), axis=1)
        sig_cand = sc[inside]
    else:
        bm = ndimage.uniform_filter(t, size=box, mode="constant")
        thr = np.quantile(bm[valid], 0.99)
        sig_cand = np.argwhere((bm >= thr) & valid)
    m = min(n, len(sig_cand), len(bg_cand))
    if m == 0:
        raise InputError("no signal or no empty background box of that size fits; use a smaller --box")
    s = sig_cand[rng.choice(len(sig_cand), m, replace=False)]
    b = bg_cand[rng.choice(len(bg_cand), m, replace=False)]
    return s.astype(float), b.astype(float)
