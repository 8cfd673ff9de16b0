"""Map figures of large maps in bounded memory: the keys of :func:`cryorestore.evaluate.quality.map_metrics`
and :func:`~cryorestore.evaluate.quality.map_curves` computed a slab, a block or a crop at a time.

Maps are (z, y, x) array-likes with basic slicing (numpy arrays, memory maps, zarr arrays, the lazy
views of :mod:`cryorestore.blockwise`). Used for maps above :data:`cryorestore.blockwise.BLOCKWISE_VOXELS`
voxels (``evaluate`` and ``denoise`` choose); smaller maps keep :mod:`quality`'s whole-volume figures.

Exact (to rounding): ``std_*``, ``corr_raw_restored``, the affine grey-level fit, ``sign``, ``psnr``
(z-slab moments in float64, :func:`cryorestore.blockwise.moments`), ``ssim`` (3D blocks read with the
Gaussian window's radius as a halo, so every voxel's window sees the same data as in the whole map),
``fsc05_apod`` and ``fsc_band_apod`` (they use the centre crop of at most 64³ voxels anyway).

Over the stated crops of :func:`cryorestore.blockwise.crop_slices` (up to 2×2×2 boxes of at most
256³ voxels; shells of the crop, ``k / min(crop)`` cycles/voxel): every whole-map FSC
(``fsc05_raw_vs_restored``, ``fsc0143_raw_vs_restored``, ``fsc05``, ``fsc_mean``, ``fsc_mid``,
``wedge_corr``), the shell powers of ``mid_amplitude`` and ``wedge_power_fraction``. The curves of
:func:`map_curves` then list the crop's shells under ``frequency``. ``crop_edge`` in the JSON records it.

Over the centre crop of at most :data:`cryorestore.blockwise.FSC_CROP` voxels per axis: ``psnr_eq_*`` and the
``*_eq_gain`` curves (shells of that crop); with ``clean`` (the noise-free reconstruction): ``psnr_clean_*`` and the ``*_vs_clean_error`` curves over
the centre crop of at most :data:`cryorestore.blockwise.FSC_CROP` voxels per axis (shells of that crop).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from cryorestore import blockwise, fourier
from cryorestore.evaluate import quality

#: core edge (voxels) of the blocks in which SSIM is computed (plus the window radius on every side)
SSIM_BLOCK = 64


def crop_power(x, edge: int | None = None) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(2, n_shells) summed |F|² per shell and number of coefficients per shell, over the crops of ``x``
    (:func:`quality.shell_power` added over the crops), and the crop shape."""
    sums, cshape = blockwise.crop_shell_sums([(x, x)], edge)
    ones = torch.ones(fourier.rfft_shape(cshape), dtype=torch.complex128)
    count = fourier.fsc_shell_sums(ones, ones, fourier.shell_index(cshape), fourier.n_shells(cshape),
                                   nx=cshape[2])[0, 1].numpy()
    return np.stack([sums[0, 1], count * len(blockwise.crop_slices(x.shape, edge))]), cshape


def band_contrast(x, band: tuple[float, float] | None = None, reference: tuple[float, float] | None = None) -> float:
    """:func:`quality.band_contrast` with the shell powers added over the crops."""
    (p, c), cshape = crop_power(x)
    hi = quality.band_shells(cshape, quality.MID_BAND if band is None else band)
    lo = quality.band_shells(cshape, quality.LOW_BAND if reference is None else reference)
    return math.sqrt((p[hi].sum() / c[hi].sum()) / (p[lo].sum() / c[lo].sum()))


def wedge_power_fraction(x, tilt_range: tuple[float, float]) -> float:
    """:func:`quality.wedge_power_fraction` with the powers added over the crops."""
    crops = blockwise.crop_slices(x.shape)
    cshape = tuple(s.stop - s.start for s in crops[0])
    sel = quality.missing_wedge_selection(cshape, tilt_range).double()
    w = fourier.rfft_weights(cshape)
    view = blockwise.page_releasing(x)
    total = inside = 0.0
    for crop in crops:
        spec = blockwise.crop_spectra(view, crop)
        power = (spec.real ** 2 + spec.imag ** 2) * w
        power[0, 0, 0] = 0.0
        total += float(power.sum())
        inside += float((power * sel).sum())
    return inside / total if total > 0 else 0.0


def _wedge_mask_fn(tilt_range: tuple[float, float]):
    return lambda cshape: quality.missing_wedge_selection(cshape, tilt_range)


def centre_crop(x, box: int = quality.APOD_BOX) -> np.ndarray:
    """The centre ``min(box, n)`` voxels per axis of ``x`` (float64), as :func:`quality.apodised_crop` cuts them.

    A memory-mapped ``x`` has its pages released once the crop is read: on a kernel that maps large
    page-cache folios a 128³ crop of a 1024-wide map leaves hundreds of MiB resident, and holding them for
    four maps at once set ``evaluate``'s peak (+1.2 GiB at 256×1024×1024)."""
    sl = tuple(slice((n - min(box, n)) // 2, (n - min(box, n)) // 2 + min(box, n)) for n in x.shape)
    crop = blockwise.read(x, sl).astype(np.float64)
    blockwise.release_all(x)
    return crop


def apodised_fsc(x, truth, sign: float) -> np.ndarray:
    """:func:`quality.apodised_fsc` with the sign given (from the whole map's affine fit)."""
    return quality.fsc_curve(sign * quality.apodised_crop(centre_crop(x)), quality.apodised_crop(centre_crop(truth)))


def band_apodised_fsc(x, truth, sign: float, band: tuple[float, float] = quality.FSC_BAND) -> float:
    """:func:`quality.band_apodised_fsc` reading only the centre crop (``sign`` from the whole map)."""
    crop = tuple(min(quality.APOD_BOX, n) for n in x.shape)
    return float(apodised_fsc(x, truth, sign)[quality.band_shells(crop, band)].mean())


def ssim(x, truth, a: float, b: float, data_range: float, sigma: float = quality.SSIM_SIGMA,
         block: int | None = None) -> float:
    """:func:`quality.ssim` of ``a·x + b`` against the truth, computed in 3D blocks (module doc)."""
    block = SSIM_BLOCK if block is None else int(block)
    c1, c2 = (quality.SSIM_K1 * data_range) ** 2, (quality.SSIM_K2 * data_range) ** 2
    r = int(quality.SSIM_TRUNCATE * sigma + 0.5)
    shape = tuple(int(n) for n in x.shape)
    inner = [(r, n - r) if n > 2 * r else (0, n) for n in shape]
    xv, tv = blockwise.page_releasing(x), blockwise.page_releasing(truth)
    total, count = 0.0, 0

    def g(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(v, sigma, truncate=quality.SSIM_TRUNCATE, mode="reflect")

    for z0 in range(inner[0][0], inner[0][1], block):
        for y0 in range(inner[1][0], inner[1][1], block):
            for x0 in range(inner[2][0], inner[2][1], block):
                core = [(c, min(c + block, hi)) for c, (_, hi) in zip((z0, y0, x0), inner)]
                grown = tuple(slice(max(0, lo - r), min(n, hi + r)) for (lo, hi), n in zip(core, shape))
                xd = blockwise.read(xv, grown).astype(np.float64) * a + b
                td = blockwise.read(tv, grown).astype(np.float64)
                mx, mt = g(xd), g(td)
                sxx = g(xd * xd) - mx * mx
                stt = g(td * td) - mt * mt
                sxt = g(xd * td) - mx * mt
                smap = ((2 * mx * mt + c1) * (2 * sxt + c2)) / ((mx * mx + mt * mt + c1) * (sxx + stt + c2))
                keep = tuple(slice(lo - s.start, hi - s.start) for (lo, hi), s in zip(core, grown))
                total += float(smap[keep].sum())
                count += int(smap[keep].size)
    return total / count


def truth_metrics(m, truth, voxel_size: float, tilt_range: tuple[float, float] | None = None,
                  truth_contrast: float | None = None) -> dict[str, float]:
    """:func:`quality.truth_metrics` of a large map (module doc for what is estimated over crops)."""
    mom = blockwise.moments([m, truth])
    a, b, mse = mom.affine(0, 1)
    rng = float(mom.maximum[1] - mom.minimum[1])
    sign = -1.0 if a < 0 else 1.0
    out: dict[str, float] = {"psnr": (float("inf") if mse <= 0 else (float("-inf") if rng <= 0 else
                                      10.0 * math.log10(rng * rng / mse))),
                             "ssim": ssim(m, truth, a, b, rng), "sign": sign,
                             "psnr_eq": quality.equalised_psnr(centre_crop(m, blockwise.FSC_CROP),
                                                               centre_crop(truth, blockwise.FSC_CROP))}
    curve, cshape = blockwise.crop_fsc(m, truth)
    curve = sign * curve
    r05 = fourier.resolutions(curve, cshape, voxel_size, thresholds=(0.5,))[0.5]
    out["fsc05"], out["fsc05_angstrom"] = r05.frequency, r05.angstrom
    apod = apodised_fsc(m, truth, sign)
    crop = tuple(min(quality.APOD_BOX, n) for n in m.shape)
    a05 = fourier.resolutions(apod, crop, voxel_size, thresholds=(0.5,))[0.5]
    out["fsc05_apod"], out["fsc05_apod_angstrom"] = a05.frequency, a05.angstrom
    out["fsc_mean"] = float(curve[1:].mean())
    out["fsc_mid"] = float(curve[quality.band_shells(cshape, quality.MID_BAND)].mean())
    tc = band_contrast(truth) if truth_contrast is None else truth_contrast
    out["mid_amplitude"] = band_contrast(m) / tc
    if tilt_range is not None:
        out["wedge_power_fraction"] = wedge_power_fraction(m, tilt_range)
        wc, _ = blockwise.crop_fsc(m, truth, fourier_mask=_wedge_mask_fn(tilt_range))
        out["wedge_corr"] = sign * float(wc[1:].mean())
    return {k: float(v) for k, v in out.items()}


def _check(raw, restored, truth, extra) -> dict:
    shape = tuple(raw.shape)
    if len(shape) != 3:
        raise ValueError(f"maps must be 3D (z, y, x), got shape {shape}")
    maps = {"raw": raw, "restored": restored, **(extra or {})}
    for name, v in list(maps.items()) + ([("truth", truth)] if truth is not None else []):
        if tuple(v.shape) != shape:
            raise ValueError(f"{name} {tuple(v.shape)} differs in shape from the maps {shape}")
    return maps


def map_metrics(raw, restored, voxel_size: float, truth=None, tilt_range: tuple[float, float] | None = None,
                extra: dict | None = None, clean=None) -> dict:
    """:func:`quality.map_metrics`'s keys for large maps (module doc), plus ``crop_edge`` (voxels)."""
    maps = _check(raw, restored, truth, extra)
    _check_clean(raw, clean, tilt_range)
    out: dict[str, float] = {"voxel_size": float(voxel_size)}
    curve, cshape = blockwise.crop_fsc(raw, restored)
    agree = fourier.resolutions(curve, cshape, voxel_size)
    out["fsc05_raw_vs_restored"], out["fsc0143_raw_vs_restored"] = agree[0.5].frequency, agree[0.143].frequency
    mom = blockwise.moments([raw, restored])
    sr, sd = mom.std(0), mom.std(1)
    out["std_raw"], out["std_restored"] = sr, sd
    out["std_ratio"] = sd / sr if sr > 0 else float("nan")
    out["corr_raw_restored"] = mom.corr(0, 1)
    out["crop_edge"] = float(min(blockwise.FSC_CROP, *raw.shape))
    if tilt_range is not None:
        fourier.check_tilt_range(float(tilt_range[0]), float(tilt_range[1]))
    if truth is not None:
        tc = band_contrast(truth)
        out.update(quality.truth_metric_rows(maps, lambda m: truth_metrics(m, truth, voxel_size, tilt_range, tc)))
        if tilt_range is not None:
            freqs = fourier.shell_frequencies(cshape)
            out["wedge_freq_min"], out["wedge_freq_max"] = float(freqs[1]), float(freqs[-1])
    elif tilt_range is not None:
        for name, m in maps.items():
            out[f"wedge_power_fraction_{name}"] = wedge_power_fraction(m, tilt_range)
    if clean is not None:
        c = centre_crop(clean, blockwise.FSC_CROP)
        for name, m in maps.items():
            out[f"psnr_clean_{name}"] = quality.psnr_vs_clean(centre_crop(m, blockwise.FSC_CROP), c, tilt_range)
    return {k: float(v) for k, v in out.items()}


def _check_clean(raw, clean, tilt_range) -> None:
    if clean is not None and tuple(clean.shape) != tuple(raw.shape):
        raise ValueError(f"clean map {tuple(clean.shape)} differs in shape from the maps {tuple(raw.shape)}")
    if clean is not None and tilt_range is None:
        raise ValueError("the PSNR against the clean reconstruction needs the tilt range (its sampled region)")


def map_curves(raw, restored, truth=None, tilt_range: tuple[float, float] | None = None,
               extra: dict | None = None, clean=None) -> dict[str, list[float]]:
    """:func:`quality.map_curves`'s curves for large maps, over the crops (``frequency`` lists the crop's
    shells; the ``*_vs_clean_error`` curves have the shells of the centre crop, ``clean_frequency``)."""
    maps = _check(raw, restored, truth, extra)
    curve, cshape = blockwise.crop_fsc(raw, restored)
    curves: dict[str, list[float]] = {"frequency": fourier.shell_frequencies(cshape).tolist(),
                                      "raw_vs_restored": curve.tolist()}
    if clean is not None and tilt_range is not None:
        c = centre_crop(clean, blockwise.FSC_CROP)
        curves["clean_frequency"] = fourier.shell_frequencies(c.shape).tolist()
        for name, m in maps.items():
            curves[f"{name}_vs_clean_error"] = quality.clean_comparison(
                centre_crop(m, blockwise.FSC_CROP), c, tilt_range)["shell_error"].tolist()
    if truth is not None:
        curves["apod_frequency"] = fourier.shell_frequencies(
            tuple(min(quality.APOD_BOX, n) for n in raw.shape)).tolist()
        for name, m in maps.items():
            a, _, _ = blockwise.moments([m, truth]).affine(0, 1)
            sign = -1.0 if a < 0 else 1.0
            curves[f"{name}_vs_truth"] = (sign * blockwise.crop_fsc(m, truth)[0]).tolist()
            curves[f"{name}_vs_truth_apod"] = apodised_fsc(m, truth, sign).tolist()
            curves[f"{name}_eq_gain"] = quality.equalisation(centre_crop(m, blockwise.FSC_CROP),
                                                             centre_crop(truth, blockwise.FSC_CROP))[1][:-1].tolist()
            if tilt_range is not None:
                wc = blockwise.crop_fsc(m, truth, fourier_mask=_wedge_mask_fn(tilt_range))[0]
                curves[f"wedge_{name}"] = (sign * wc).tolist()
    return curves


def sign_of(x, truth) -> float:
    """:func:`quality.truth_sign` from z-slab moments."""
    return -1.0 if blockwise.moments([x, truth]).affine(0, 1)[0] < 0 else 1.0
