"""Classical baselines every restoration must beat: a Gaussian low-pass and an FSC-weighted Wiener filter.

Both act on the *raw map*: the full tomogram when one is given, else the mean of the two half maps
``(even + odd) / 2`` (never one half alone: a half has twice the noise variance of the full map).
Arrays are (z, y, x); ``sigma`` is in voxels; frequencies are in cycles/voxel (Nyquist 0.5); shells
are those of :mod:`cryorestore.fourier` (shell ``k`` at ``k / min(shape)`` cycles/voxel).

Gaussian low-pass
-----------------
``scipy.ndimage.gaussian_filter(raw, sigma, mode="reflect")``, whose transfer function is
``G(f) = exp(−2π²σ²f²)``. ``sigma`` is chosen

* with a truth: as the value of :data:`SIGMA_GRID` that maximises the PSNR against the truth after the
  affine grey-level fit (:func:`cryorestore.evaluate.quality.psnr`, the benchmark's own metric), so the
  baseline is as strong as a Gaussian can be;
* without one: so that ``G`` falls to 1/2 at the frequency ``f₀`` where the half-map FSC first drops below
  0.143, i.e. ``σ = sqrt(ln 2 / 2) / (π f₀)``: frequencies the halves do not agree on are damped.

FSC-weighted half-map Wiener filter
-----------------------------------
Let ``F(k)`` be the FSC of the two half maps in shell ``k``. With independent noise in the halves, the
signal-to-noise ratio of one half is ``SNR_half = F / (1 − F)``; the full map (two halves' worth of
data) has twice that, so its FSC against the truth would be ``FSC_full = 2F / (1 + F)`` (Rosenthal &
Henderson 2003, J. Mol. Biol. 333:721; the same step turns the half-map 0.143 criterion into the
full-map 0.5 one) and ``SNR_full = FSC_full / (1 − FSC_full)``. The Wiener filter, which minimises the
expected squared error of ``w · raw`` against the signal in each shell, is

    w(k) = SNR_full / (SNR_full + 1) = FSC_full / (FSC_full + (1 − FSC_full)) = FSC_full = 2F / (1 + F),

clipped to [0, 1] (negative half-map FSC, i.e. no detectable signal, gives 0). Every Fourier coefficient
of the raw map is multiplied by its shell's weight; coefficients beyond the last shell (the corners of
the cube beyond Nyquist radius) get the last shell's weight. Peers weight by ``sqrt(FSC_full)``
(Rosenthal & Henderson's ``C_ref``, which maximises the correlation with the truth rather than minimising
the squared error) — that keeps more high-frequency noise; we use the MSE-optimal weight because PSNR is
the benchmark's figure.

Large maps
----------
Above :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels (smaller maps keep the whole-volume
float64 path above, so their figures do not move) no full-size float64 copy is made: the raw map is
a lazy view (:class:`cryorestore.blockwise.MeanOf` of the halves, or the full map); the half-map FSC
is estimated over the stated crops of :func:`cryorestore.blockwise.crop_slices` (up to 8 boxes of at
most 256³ voxels, the crop's shells); the Gaussian map is a lazy :class:`cryorestore.blockwise.GaussianOf`
view (exact, computed per slab when written or scored; with a truth each candidate sigma is scored
from z-slab moments); the Wiener filter is applied by overlap-save in blocks of 128³ with a 16-voxel
halo (:func:`cryorestore.blockwise.fourier_filter_blockwise`: weights interpolated at each
coefficient's |f|, the map reflected at its faces where the whole-volume FFT wraps; an approximation)
into one float32 output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from cryorestore import fourier
from cryorestore.errors import InputError

#: Gaussian widths (voxels) tried by :func:`search_sigma`.
SIGMA_GRID = tuple(float(s) for s in np.round(np.arange(0.5, 4.001, 0.25), 4))


@dataclass
class BaselineResult:
    """A baseline map (float32, (z, y, x)) and the parameters that made it (JSON-ready)."""

    volume: np.ndarray
    params: dict = field(default_factory=dict)


def raw_map(even: np.ndarray, odd: np.ndarray, full: np.ndarray | None = None) -> np.ndarray:
    """The raw map the baselines filter: ``full`` when given, else ``(even + odd) / 2`` (float64)."""
    if np.shape(even) != np.shape(odd):
        raise InputError(f"the half maps differ in shape: {np.shape(even)} vs {np.shape(odd)}")
    if full is not None:
        if np.shape(full) != np.shape(even):
            raise InputError(f"the full map {np.shape(full)} differs in shape from the halves {np.shape(even)}")
        return np.asarray(full, dtype=np.float64)
    return 0.5 * (np.asarray(even, dtype=np.float64) + np.asarray(odd, dtype=np.float64))


def gaussian_lowpass(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of width ``sigma`` voxels (float64; ``sigma`` 0 returns a copy)."""
    v = np.asarray(volume, dtype=np.float64)
    if sigma < 0 or not math.isfinite(sigma):
        raise InputError(f"the Gaussian sigma must be a finite number ≥ 0 voxels, got {sigma}")
    return ndimage.gaussian_filter(v, float(sigma), mode="reflect") if sigma > 0 else v.copy()


def sigma_for_frequency(frequency: float) -> float:
    """Width (voxels) of the Gaussian whose transfer ``exp(−2π²σ²f²)`` is 1/2 at ``frequency`` (cycles/voxel)."""
    if not 0 < frequency <= 0.5:
        raise InputError(f"the cut-off frequency must lie in (0, 0.5] cycles/voxel, got {frequency}")
    return math.sqrt(math.log(2.0) / 2.0) / (math.pi * frequency)


def search_sigma(volume: np.ndarray, truth: np.ndarray, sigmas=SIGMA_GRID) -> tuple[float, dict[float, float]]:
    """The ``sigma`` of ``sigmas`` whose low-pass has the highest PSNR (dB, after the affine fit) against
    ``truth``, and the PSNR of every candidate."""
    from cryorestore.evaluate.quality import psnr

    if np.shape(volume) != np.shape(truth):
        raise InputError(f"the truth {np.shape(truth)} differs in shape from the map {np.shape(volume)}")
    scores = {float(s): psnr(gaussian_lowpass(volume, s), truth) for s in sigmas}
    return max(scores, key=scores.get), scores


def half_map_fsc(even: np.ndarray, odd: np.ndarray) -> np.ndarray:
    """FSC (n_shells,) float64 of the two half maps (:func:`fourier.fsc` computed in float64)."""
    te = torch.from_numpy(np.ascontiguousarray(even, dtype=np.float64))
    to = torch.from_numpy(np.ascontiguousarray(odd, dtype=np.float64))
    return fourier.fsc(te, to).double().numpy()


def wiener_weights(half_fsc: np.ndarray) -> np.ndarray:
    """Per-shell Wiener weight ``clip(2F / (1 + F), 0, 1)`` from the half-map FSC ``F`` (module doc)."""
    f = np.clip(np.asarray(half_fsc, dtype=np.float64), 0.0, 1.0)
    return np.clip(2.0 * f / (1.0 + f), 0.0, 1.0)


def apply_shell_weights(volume: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Multiply each Fourier coefficient of ``volume`` by its shell's weight (float64 result).

    Coefficients beyond the last shell take the last shell's weight."""
    v = np.asarray(volume, dtype=np.float64)
    shape = v.shape
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (fourier.n_shells(shape),):
        raise ValueError(f"expected {fourier.n_shells(shape)} shell weights for shape {shape}, got {w.shape}")
    idx = fourier.shell_index(shape).clamp(max=len(w) - 1)
    spec = torch.fft.rfftn(torch.from_numpy(v))
    out = torch.fft.irfftn(spec * torch.from_numpy(w)[idx], s=shape)
    return out.numpy()


def _large_raw(even, odd, full):
    from cryorestore import blockwise

    if tuple(even.shape) != tuple(odd.shape):
        raise InputError(f"the half maps differ in shape: {tuple(even.shape)} vs {tuple(odd.shape)}")
    if full is not None and tuple(full.shape) != tuple(even.shape):
        raise InputError(f"the full map {tuple(full.shape)} differs in shape from the halves {tuple(even.shape)}")
    return full if full is not None else blockwise.MeanOf(even, odd)


def large_half_map_fsc(even, odd) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Half-map FSC over the stated crops (module doc, "Large maps") and the crop shape of its shells."""
    from cryorestore import blockwise

    return blockwise.crop_fsc(even, odd)


def _large_gaussian_baseline(even, odd, full, truth, sigmas) -> BaselineResult:
    from cryorestore import blockwise

    raw = _large_raw(even, odd, full)
    if truth is not None:
        scores = {}
        for s_ in sigmas:
            mom = blockwise.moments([blockwise.GaussianOf(raw, float(s_)), truth])
            _, _, mse = mom.affine(0, 1)
            rng = float(mom.maximum[1] - mom.minimum[1])
            scores[float(s_)] = float("inf") if mse <= 0 else 10.0 * math.log10(rng * rng / mse)
        sigma = max(scores, key=scores.get)
        params = {"sigma_voxels": sigma, "chosen_by": "PSNR against the truth (affine grey-level fit)",
                  "psnr_by_sigma": {f"{s:g}": v for s, v in scores.items()}}
    else:
        curve, cshape = large_half_map_fsc(even, odd)
        f0 = fourier.resolutions(curve, cshape, thresholds=(0.143,))[0.143].frequency
        sigma = sigma_for_frequency(f0)
        params = {"sigma_voxels": sigma, "chosen_by": "transfer 1/2 at the half-map FSC=0.143 frequency",
                  "half_fsc0143": f0, "fsc_crop": list(cshape)}
    params["raw"] = "full map" if full is not None else "mean of the half maps"
    return BaselineResult(blockwise.GaussianOf(raw, sigma), params)


def gaussian_baseline(even: np.ndarray, odd: np.ndarray, full: np.ndarray | None = None,
                      truth: np.ndarray | None = None, sigmas=SIGMA_GRID) -> BaselineResult:
    """Gaussian low-pass of the raw map with ``sigma`` chosen as in the module doc.

    Large maps (module doc): ``volume`` is a lazy :class:`cryorestore.blockwise.GaussianOf` view (read it
    by slabs, or write it with :func:`cryorestore.blockwise.write_mrc_slabs`)."""
    from cryorestore import blockwise

    if blockwise.is_large(np.shape(even)):
        return _large_gaussian_baseline(even, odd, full, truth, sigmas)
    raw = raw_map(even, odd, full)
    if truth is not None:
        sigma, scores = search_sigma(raw, truth, sigmas)
        params = {"sigma_voxels": sigma, "chosen_by": "PSNR against the truth (affine grey-level fit)",
                  "psnr_by_sigma": {f"{s:g}": v for s, v in scores.items()}}
    else:
        f0 = fourier.resolutions(half_map_fsc(even, odd), np.shape(raw), thresholds=(0.143,))[0.143].frequency
        sigma = sigma_for_frequency(f0)
        params = {"sigma_voxels": sigma, "chosen_by": "transfer 1/2 at the half-map FSC=0.143 frequency",
                  "half_fsc0143": f0}
    params["raw"] = "full map" if full is not None else "mean of the half maps"
    return BaselineResult(gaussian_lowpass(raw, sigma).astype(np.float32), params)


def wiener_baseline(even: np.ndarray, odd: np.ndarray, full: np.ndarray | None = None) -> BaselineResult:
    """FSC-weighted half-map Wiener filter of the raw map (module doc; large maps: overlap-save blocks,
    the FSC and ``shell_frequency`` of the crops)."""
    from cryorestore import blockwise

    if blockwise.is_large(np.shape(even)):
        raw = _large_raw(even, odd, full)
        f, cshape = large_half_map_fsc(even, odd)
        w = wiener_weights(f)
        freqs = fourier.shell_frequencies(cshape)
        out = np.empty(tuple(even.shape), dtype=np.float32)
        blockwise.fourier_filter_blockwise([raw], freqs, [w], out)
        params = {"formula": "w = clip(2F/(1+F), 0, 1) per shell, F = half-map FSC",
                  "raw": "full map" if full is not None else "mean of the half maps",
                  "shell_frequency": freqs.tolist(), "half_fsc": f.tolist(), "weights": w.tolist(),
                  "fsc_crop": list(cshape),
                  "applied": f"overlap-save blocks of {blockwise.FILTER_BLOCK} voxels, halo {blockwise.FILTER_HALO}"}
        return BaselineResult(out, params)
    raw = raw_map(even, odd, full)
    f = half_map_fsc(even, odd)
    w = wiener_weights(f)
    params = {"formula": "w = clip(2F/(1+F), 0, 1) per shell, F = half-map FSC",
              "raw": "full map" if full is not None else "mean of the half maps",
              "shell_frequency": fourier.shell_frequencies(np.shape(raw)).tolist(),
              "half_fsc": f.tolist(), "weights": w.tolist()}
    return BaselineResult(apply_shell_weights(raw, w).astype(np.float32), params)
