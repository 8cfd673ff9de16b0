"""Map quality: PSNR and SSIM after an affine grey-level fit, FSC resolutions, missing-wedge correlation.

All functions take (z, y, x) arrays. Frequencies are in cycles/voxel (Nyquist 0.5), resolutions in
Å use the voxel size in Å. FSC curves come from :func:`cryorestore.fourier.fsc` (shell ``k`` at
``k / min(shape)`` cycles/voxel).

Grey-level fit
--------------
A restored map lives on an arbitrary grey scale (networks rescale, WBP has an arbitrary gain and
offset, contrast may even be inverted). Before PSNR/SSIM each map ``x`` is replaced by ``a·x + b``
with ``(a, b)`` the least-squares solution of ``min Σ (a·x + b − t)²`` against the truth ``t``, so
the metrics measure structure, not calibration.

Equalised PSNR
--------------
Scoring that does not depend on how a simulator (or a microscope) shapes the low frequencies.
``equalised_psnr`` fits, per Fourier shell ``q`` (the shells of :mod:`cryorestore.fourier`; the
coefficients beyond the Nyquist shell, the corners of the box, form one more group), the real gain
``g_q`` that minimises ``Σ_{k∈q} |g_q·X(k) − T(k)|²`` — the best any linear isotropic filter (a real
radial transfer function, one value per shell; a negative value flips the contrast of that shell, as
a CTF does) can do with the map — and matches the DC coefficient exactly (the free offset of the
affine fit). The filtered map's MSE against the truth then is, by Parseval,
``Σ_q Σ_{k∈q} |T|² · (1 − FSC_q²) / N²`` (``N`` voxels; ``FSC_q`` the map's FSC with the truth in
shell ``q``), and the PSNR uses the affine PSNR's peak, ``range(truth) = max − min``. It is never below
the affine PSNR (one gain for every shell is one of the filters it searches), and two maps that differ
only by an invertible linear isotropic filter get the same figure.

PSNR against the noise-free reconstruction
------------------------------------------
Simulators write ``clean.mrc``: the reconstruction of the tilt series without shot noise, through the
same pipeline as ``full.mrc``. It is the signal both half maps share (CTF, exposure filter and
reconstruction filter included). ``psnr_vs_clean`` compares a map with it *only on the Fourier
coefficients the tilts sampled*: with ``M`` the measured-region mask of the tilt range
(:func:`sampled_region`: :func:`cryorestore.fourier.missing_wedge_mask`, 1 = sampled, made
Hermitian-symmetric; the ky axis and DC always count),
both maps are reduced to ``F⁻¹(M·F(·))`` and the map is affinely fitted (``a·x + b``, least squares) to
the clean one; the MSE is the mean over all ``N`` voxels of the squared difference of those band-limited
volumes, computed in Fourier space by Parseval (``Σ_{k: M(k)=1, k≠0} |a·X(k) − C(k)|² / N²``; the
offset ``b`` makes DC exact), and the peak is ``range(clean) = max − min`` of the clean map as given
(unmasked). Filling the missing wedge is thus neither rewarded nor punished.

Missing-wedge correlation
-------------------------
For a tilt range [a, b] about y the *missing* coefficients are ``1 − fourier.missing_wedge_mask``.
``wedge_corr`` is the FSC against the truth restricted to those coefficients, averaged over shells
1 … min(shape)//2 (every shell from the first non-DC one up to Nyquist; shells without missing
coefficients — none for tilt ranges narrower than ±90° — would count as 0). A raw WBP map has
almost nothing there (≈ 0); a method that fills in the wedge correctly raises it.
"""

from __future__ import annotations

from collections.abc import Callable

import math

import numpy as np
import torch
from scipy import ndimage

from cryorestore import fourier, native

MID_BAND = (0.125, 0.25)  # cycles/voxel: a quarter to half of Nyquist, where denoisers trade detail for noise
LOW_BAND = (0.02, 0.125)  # cycles/voxel: the low frequencies below it, DC excluded (reference for contrast)
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # Gaussian window radius int(3.5·1.5 + 0.5) = 5 voxels: an 11-voxel window
SSIM_K1 = 0.01
SSIM_K2 = 0.03
APOD_BOX = 64  # voxels: edge of the centre crop whose apodised FSC against the truth is the headline figure
TUKEY_ALPHA = 0.5  # tapered fraction of the crop along each axis (a quarter of the edge on each side)


# --------------------------------------------------------------------------------------------
# grey-level fit, PSNR, SSIM
# --------------------------------------------------------------------------------------------
def affine_fit(x: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Least-squares ``a·x + b ≈ target``; returns (fitted map float64, a, b).

    A constant ``x`` gets ``a = 0`` and ``b = mean(target)``.
    """
    xd = np.asarray(x, dtype=np.float64)
    td = np.asarray(target, dtype=np.float64)
    if xd.shape != td.shape:
        raise ValueError(f"shapes differ: {xd.shape} vs {td.shape}")
    xm, tm = xd.mean(), td.mean()
    xc = xd - xm
    var = float(np.sum(xc * xc))
    a = float(np.sum(xc * (td - tm)) / var) if var > 0 else 0.0
    b = float(tm - a * xm)
    return a * xd + b, a, b


def data_range(truth: np.ndarray) -> float:
    """Dynamic range ``max − min`` of the truth (the PSNR/SSIM peak value)."""
    t = np.asarray(truth, dtype=np.float64)
    return float(t.max() - t.min())


def psnr(x: np.ndarray, truth: np.ndarray, fit: bool = True) -> float:
    """PSNR in dB: ``10·log10(range(truth)² / MSE)``, after the affine grey-level fit when ``fit``."""
    xd = affine_fit(x, truth)[0] if fit else np.asarray(x, dtype=np.float64)
    mse = float(np.mean((xd - np.asarray(truth, dtype=np.float64)) ** 2))
    rng = data_range(truth)
    if mse <= 0:
        return float("inf")
    if rng <= 0:
        return float("-inf")
    return 10.0 * math.log10(rng * rng / mse)


def ssim(x: np.ndarray, truth: np.ndarray, fit: bool = True, sigma: float = SSIM_SIGMA) -> float:
    """Mean structural similarity (Wang et al. 2004) in 3D with a Gaussian window.

    Local means, variances and covariance use a Gaussian of ``sigma`` voxels truncated at
    ``3.5·sigma`` (an 11-voxel window for σ = 1.5, as skimage/MONAI); ``L = range(truth)``,
    ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²``; the SSIM map is averaged over the voxels whose window
    lies inside the volume (a border of the window radius is dropped, like a valid convolution).
    ``x`` is first affinely fitted to the truth when ``fit``.
    """
    xd = affine_fit(x, truth)[0] if fit else np.asarray(x, dtype=np.float64)
    td = np.asarray(truth, dtype=np.float64)
    rng = data_range(td)
    c1, c2 = (SSIM_K1 * rng) ** 2, (SSIM_K2 * rng) ** 2

    def g(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(v, sigma, truncate=SSIM_TRUNCATE, mode="reflect")

    mx, mt = g(xd), g(td)
    sxx = g(xd * xd) - mx * mx
    stt = g(td * td) - mt * mt
    sxt = g(xd * td) - mx * mt
    smap = ((2 * mx * mt + c1) * (2 * sxt + c2)) / ((mx * mx + mt * mt + c1) * (sxx + stt + c2))
    r = int(SSIM_TRUNCATE * sigma + 0.5)
    inner = tuple(slice(r, n - r) if n > 2 * r else slice(None) for n in smap.shape)
    return float(smap[inner].mean())


# --------------------------------------------------------------------------------------------
# Fourier metrics
# --------------------------------------------------------------------------------------------
def fsc_curve(a: np.ndarray, b: np.ndarray, fourier_mask: torch.Tensor | None = None) -> np.ndarray:
    """FSC curve (n_shells,) float64 between two (z, y, x) maps (via :func:`fourier.fsc`)."""
    ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))
    return fourier.fsc(ta, tb, fourier_mask=fourier_mask).double().cpu().numpy()


def missing_wedge_selection(shape: tuple[int, int, int], tilt_range: tuple[float, float]) -> torch.Tensor:
    """rfft-grid float mask (1 = coefficient inside the missing wedge) for tilts in ``tilt_range`` (°)."""
    return 1.0 - native.wedge_mask(shape, float(tilt_range[0]), float(tilt_range[1]))


def wedge_correlation(x: np.ndarray, truth: np.ndarray, tilt_range: tuple[float, float]) -> tuple[float, np.ndarray]:
    """Mean over shells 1…Nyquist of the FSC restricted to missing-wedge coefficients, and the curve."""
    curve = fsc_curve(x, truth, fourier_mask=missing_wedge_selection(tuple(x.shape), tilt_range))
    return float(curve[1:].mean()), curve


def wedge_power_fraction(x: np.ndarray, tilt_range: tuple[float, float]) -> float:
    """Fraction of the map's non-DC spectral power that lies inside the missing wedge (0…1)."""
    shape = tuple(x.shape)
    spec = torch.fft.rfftn(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)))
    power = (spec.real**2 + spec.imag**2) * fourier.rfft_weights(shape)
    power[0, 0, 0] = 0.0
    total = float(power.sum())
    if total <= 0:
        return 0.0
    inside = float((power * missing_wedge_selection(shape, tilt_range).double()).sum())
    return inside / total


def _resolution_keys(prefix_05: str, prefix_0143: str, suffix: str, curve: np.ndarray,
                     shape: tuple[int, ...], voxel_size: float) -> dict[str, float]:
    res = fourier.resolutions(curve, shape, voxel_size)
    return {
        f"{prefix_05}_{suffix}": res[0.5].frequency,
        f"{prefix_0143}_{suffix}": res[0.143].frequency,
        f"{prefix_05}_{suffix}_angstrom": res[0.5].angstrom,
        f"{prefix_0143}_{suffix}_angstrom": res[0.143].angstrom,
    }


def band_shells(shape: tuple[int, ...], band: tuple[float, float]) -> np.ndarray:
    """Indices of the shells whose frequency (cycles/voxel, ``k / min(shape)``) lies in ``[lo, hi]``."""
    freqs = fourier.shell_frequencies(shape)
    shells = np.nonzero((freqs >= band[0] - 1e-12) & (freqs <= band[1] + 1e-12))[0]
    if shells.size == 0:
        raise ValueError(f"no FSC shell of a {shape} map lies in {band} cycles/voxel")
    return shells


def shell_power(x: np.ndarray) -> np.ndarray:
    """Summed spectral power |F|² per shell over the full FFT grid, and the number of coefficients per
    shell, as a (2, n_shells) float64 array (row 0 power, row 1 counts); shells as in :mod:`fourier`."""
    shape = tuple(x.shape)
    spec = torch.fft.rfftn(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)))
    shells, n = fourier.shell_index(shape), fourier.n_shells(shape)
    power = fourier.fsc_shell_sums(spec, spec, shells, n, nx=shape[2])[0, 1]
    ones = torch.ones_like(spec)
    count = fourier.fsc_shell_sums(ones, ones, shells, n, nx=shape[2])[0, 1]
    return torch.stack([power, count]).numpy()


def band_contrast(x: np.ndarray, band: tuple[float, float] | None = None,
                  reference: tuple[float, float] | None = None) -> float:
    """``A(x, band) / A(x, reference)`` with ``A(m, B)`` the RMS Fourier amplitude over the coefficients
    of the shells in ``B`` (cycles/voxel; defaults :data:`MID_BAND` and :data:`LOW_BAND`)."""
    shape = tuple(np.shape(x))
    hi = band_shells(shape, MID_BAND if band is None else band)
    lo = band_shells(shape, LOW_BAND if reference is None else reference)
    p, c = shell_power(x)
    return math.sqrt((p[hi].sum() / c[hi].sum()) / (p[lo].sum() / c[lo].sum()))


def band_amplitude_ratio(x: np.ndarray, truth: np.ndarray, band: tuple[float, float] | None = None,
                         reference: tuple[float, float] | None = None) -> float:
    """How much of the truth's spectral fall-off a map keeps in ``band`` (cycles/voxel).

    The value is :func:`band_contrast` of ``x`` over that of ``truth``, i.e.
    ``[A(x, band) / A(x, reference)] / [A(truth, band) / A(truth, reference)]``. It ignores the grey
    scale of ``x``: 1 means the same mid-to-low contrast as the truth, below 1 means the mid frequencies
    were damped (blur), above 1 that they carry extra power (noise, or sharpening).
    """
    return band_contrast(x, band, reference) / band_contrast(truth, band, reference)


def truth_sign(x: np.ndarray, truth: np.ndarray) -> float:
    """+1, or −1 when ``x`` correlates negatively with the truth (dense matter dark, as phase contrast
    makes it): the sign of the affine grey-level fit's slope. FSCs against the truth are reported for
    ``sign · x``, i.e. up to this one global sign (a per-frequency CTF sign flip is *not* undone)."""
    return -1.0 if affine_fit(x, truth)[1] < 0 else 1.0


def tukey_window(shape: tuple[int, ...], alpha: float = TUKEY_ALPHA) -> np.ndarray:
    """Separable 3D Tukey (tapered cosine) window, float64; ``alpha`` = tapered fraction per axis."""
    from scipy.signal.windows import tukey

    w = np.ones(shape, dtype=np.float64)
    for ax, n in enumerate(shape):
        view = [1] * len(shape)
        view[ax] = n
        w = w * tukey(n, alpha, sym=True).reshape(view)
    return w


def apodised_crop(x: np.ndarray, box: int = APOD_BOX, alpha: float = TUKEY_ALPHA) -> np.ndarray:
    """The centre ``min(box, n)`` voxels along each axis of ``x`` (start ``(n − b) // 2``), mean
    removed and multiplied by :func:`tukey_window`, float64. Cropping a box out of a larger map cuts
    density at its faces; without the taper those cuts add power at every frequency and the FSC of two
    crops rises at high frequencies."""
    xd = np.asarray(x, dtype=np.float64)
    sl = tuple(slice((n - min(box, n)) // 2, (n - min(box, n)) // 2 + min(box, n)) for n in xd.shape)
    c = xd[sl]
    return (c - c.mean()) * tukey_window(c.shape, alpha)


def apodised_fsc(x: np.ndarray, truth: np.ndarray, box: int = APOD_BOX, alpha: float = TUKEY_ALPHA) -> np.ndarray:
    """FSC (float64, shells of the crop) of the :func:`apodised_crop` of ``truth_sign(x) · x`` and of the truth."""
    return fsc_curve(truth_sign(x, truth) * apodised_crop(x, box, alpha), apodised_crop(truth, box, alpha))



FSC_BAND = (0.03, 0.25)  # cycles/voxel: the band of the mean apodised FSC against the truth


def band_apodised_fsc(x: np.ndarray, truth: np.ndarray, band: tuple[float, float] = FSC_BAND) -> float:
    """Mean over the shells in ``band`` (cycles/voxel) of :func:`apodised_fsc` of ``x`` against ``truth``
    (Tukey-apodised centre crops of up to :data:`APOD_BOX`³, up to one global sign)."""
    crop = tuple(min(APOD_BOX, n) for n in np.shape(x))
    return float(apodised_fsc(x, truth)[band_shells(crop, band)].mean())


# --------------------------------------------------------------------------------------------
# scoring that does not depend on the low-frequency shaping: equalised PSNR, PSNR vs the clean map
# --------------------------------------------------------------------------------------------
def _spectrum64(x: np.ndarray) -> torch.Tensor:
    """rfft of a (z, y, x) map in float64 (complex128)."""
    return torch.fft.rfftn(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)))


def _psnr_db(mse: float, peak: float) -> float:
    """``10·log10(peak² / mse)`` with the conventions of :func:`psnr` (inf for a perfect map)."""
    if mse <= 0:
        return float("inf")
    if peak <= 0:
        return float("-inf")
    return 10.0 * math.log10(peak * peak / mse)


def _group_sums(values: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Sum of rfft-grid ``values`` (float64) per group index (0 … n_groups − 1)."""
    return torch.bincount(groups.reshape(-1), weights=values.reshape(-1), minlength=n_groups)


def equalisation(x: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """Equalised PSNR (dB) of ``x`` against ``truth`` and the fitted per-shell gains.

    See the module docstring: per shell ``q`` the real gain ``g_q = Re Σ X·conj(T) / Σ |X|²`` over the
    shell's non-DC coefficients (full-grid sums, float64), DC matched exactly, PSNR of the filtered map
    with peak ``range(truth)``. Returns ``(psnr_db, gains)`` with ``gains`` float64 of length
    ``n_shells + 1``: shells 0 … min(shape)//2 (at ``k / min(shape)`` cycles/voxel), then the group of
    the corner coefficients beyond the Nyquist shell; a group without coefficients (or without power in
    ``x``) gets gain 0.
    """
    xd, td = np.asarray(x, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if xd.shape != td.shape or xd.ndim != 3:
        raise ValueError(f"equalised PSNR needs two 3D maps of one shape, got {xd.shape} and {td.shape}")
    shape = tuple(xd.shape)
    fx, ft = _spectrum64(xd), _spectrum64(td)
    w = fourier.rfft_weights(shape).expand(fx.shape).clone()
    w[0, 0, 0] = 0.0  # DC: the free offset
    groups, n = fourier.shell_index(shape), fourier.n_shells(shape) + 1
    sxt = _group_sums(w * (fx * ft.conj()).real, groups, n)
    sxx = _group_sums(w * fx.abs() ** 2, groups, n)
    gains = torch.where(sxx > 0, sxt / torch.where(sxx > 0, sxx, torch.ones_like(sxx)), torch.zeros_like(sxx))
    err = float((w * (gains[groups] * fx - ft).abs() ** 2).sum()) / float(np.prod(shape)) ** 2
    return _psnr_db(err, data_range(td)), gains.numpy()


def equalised_psnr(x: np.ndarray, truth: np.ndarray) -> float:
    """PSNR (dB) of ``x`` after the best per-shell real gain against ``truth`` (see :func:`equalisation`)."""
    return equalisation(x, truth)[0]


def sampled_region(shape: tuple[int, int, int], tilt_range: tuple[float, float]) -> torch.Tensor:
    """rfft-grid float64 mask (1 = sampled) of the coefficients the tilts in ``tilt_range`` (°) measured,
    Hermitian-symmetric: :func:`cryorestore.fourier.missing_wedge_mask` of the coefficient times that of
    its mirror ``−k`` (they differ only on the Nyquist planes of even dimensions, where ``−k`` aliases to
    another line), so that the masked map is real and Parseval holds for it on the rfft grid."""
    lo, hi = float(tilt_range[0]), float(tilt_range[1])
    fourier.check_tilt_range(lo, hi)
    z, y, x = (int(n) for n in shape)
    m = fourier.missing_wedge_mask(shape, lo, hi).double()
    fz = torch.fft.fftfreq(z, dtype=torch.float64)
    fx = torch.fft.fftfreq(x, dtype=torch.float64)
    kz_mirror = fz[(-torch.arange(z)) % z].view(z, 1, 1)
    kx_mirror = fx[(-torch.arange(x // 2 + 1)) % x].view(1, 1, -1)
    mirror = fourier.wedge_mask_from_frequencies(kz_mirror, kx_mirror, -hi, -lo).double()
    return m * mirror  # (z, y, xr) by broadcasting over y


def clean_comparison(x: np.ndarray, clean: np.ndarray, tilt_range: tuple[float, float]) -> dict:
    """``x`` against the noise-free reconstruction ``clean`` on the sampled Fourier coefficients only.

    See the module docstring. Returns a dict: ``psnr`` (dB; peak ``range(clean)``), ``gain`` (the
    affine fit's slope ``a``), ``shell_error`` (float64, per shell 0 … min(shape)//2: the fitted map's
    squared error ``Σ |a·X − C|²`` over the shell's sampled non-DC coefficients divided by the clean
    map's power ``Σ |C|²`` there; 0 where the clean map has none) and ``shell_clean_power`` (``Σ |C|²``
    per shell, full-grid sums). ``tilt_range`` in degrees about y.
    """
    xd, cd = np.asarray(x, dtype=np.float64), np.asarray(clean, dtype=np.float64)
    if xd.shape != cd.shape or xd.ndim != 3:
        raise ValueError(f"PSNR against the clean map needs two 3D maps of one shape, got {xd.shape} and {cd.shape}")
    shape = tuple(xd.shape)
    fx, fc = _spectrum64(xd), _spectrum64(cd)
    w = fourier.rfft_weights(shape) * sampled_region(shape, tilt_range)
    w[0, 0, 0] = 0.0  # DC: the free offset
    sxx = float((w * fx.abs() ** 2).sum())
    a = float((w * (fx * fc.conj()).real).sum()) / sxx if sxx > 0 else 0.0
    err = w * (a * fx - fc).abs() ** 2
    mse = float(err.sum()) / float(np.prod(shape)) ** 2
    groups, n = fourier.shell_index(shape), fourier.n_shells(shape) + 1
    e_q = _group_sums(err, groups, n)[:-1]
    p_q = _group_sums(w * fc.abs() ** 2, groups, n)[:-1]
    rel = torch.where(p_q > 0, e_q / torch.where(p_q > 0, p_q, torch.ones_like(p_q)), torch.zeros_like(p_q))
    return {"psnr": _psnr_db(mse, data_range(cd)), "gain": a, "shell_error": rel.numpy(),
            "shell_clean_power": p_q.numpy()}


def psnr_vs_clean(x: np.ndarray, clean: np.ndarray, tilt_range: tuple[float, float]) -> float:
    """PSNR (dB) of ``x`` against the noise-free reconstruction on the Fourier coefficients sampled by
    ``tilt_range`` (degrees), after an affine fit; see :func:`clean_comparison`."""
    return float(clean_comparison(x, clean, tilt_range)["psnr"])


def truth_metrics(
    m: np.ndarray, truth: np.ndarray, voxel_size: float, tilt_range: tuple[float, float] | None = None,
    truth_contrast: float | None = None,
) -> dict[str, float]:
    """Figures of one map against the truth (keys without a map suffix; all plain floats).

    ``psnr``, ``ssim`` (after the affine grey-level fit); ``psnr_eq`` (:func:`equalised_psnr`); ``sign`` (:func:`truth_sign`); ``fsc05``:
    where FSC(sign·m, truth) over the whole map first drops below 0.5 (cycles/voxel, ``fsc05_angstrom``
    in Å) — against a known truth the resolution criterion is 0.5, not the half-map 0.143;
    ``fsc05_apod``: the same on the Tukey-apodised centre crops (:func:`apodised_fsc`, ``box``
    :data:`APOD_BOX`), the headline figure; ``fsc_mean`` (shells 1…Nyquist), ``fsc_mid``
    (:data:`MID_BAND`), ``mid_amplitude`` (:func:`band_amplitude_ratio`; pass the truth's
    :func:`band_contrast` as ``truth_contrast`` to compute it once); with ``tilt_range`` also
    ``wedge_corr`` (sign-corrected) and ``wedge_power_fraction``.
    """
    shape = tuple(np.shape(m))
    out: dict[str, float] = {}
    sign = truth_sign(m, truth)
    out["psnr"], out["ssim"], out["sign"] = psnr(m, truth), ssim(m, truth), sign
    out["psnr_eq"] = equalised_psnr(m, truth)
    curve = sign * fsc_curve(m, truth)
    r05 = fourier.resolutions(curve, shape, voxel_size, thresholds=(0.5,))[0.5]
    out["fsc05"], out["fsc05_angstrom"] = r05.frequency, r05.angstrom
    apod = apodised_fsc(m, truth)
    crop = tuple(min(APOD_BOX, n) for n in shape)
    a05 = fourier.resolutions(apod, crop, voxel_size, thresholds=(0.5,))[0.5]
    out["fsc05_apod"], out["fsc05_apod_angstrom"] = a05.frequency, a05.angstrom
    out["fsc_mean"] = float(curve[1:].mean())
    out["fsc_mid"] = float(curve[band_shells(shape, MID_BAND)].mean())
    tc = band_contrast(truth) if truth_contrast is None else truth_contrast
    out["mid_amplitude"] = band_contrast(m) / tc
    if tilt_range is not None:
        out["wedge_power_fraction"] = wedge_power_fraction(m, tilt_range)
        out["wedge_corr"] = sign * wedge_correlation(m, truth, tilt_range)[0]
    return {k: float(v) for k, v in out.items()}


def truth_metric_rows(maps: dict[str, np.ndarray],
                      per_map: Callable[[np.ndarray], dict[str, float]]) -> dict[str, float]:
    """``per_map(m)`` (a :func:`truth_metrics`-like dict of one map) for every map in ``maps``, under its
    metrics.json key: ``<figure>_<map>``, the resolutions as ``fsc05_<map>_angstrom`` and
    ``fsc05_apod_<map>_angstrom``."""
    out = {}
    for name, m in maps.items():
        for k, v in per_map(m).items():
            key = f"fsc05_{name}_angstrom" if k == "fsc05_angstrom" else (
                f"fsc05_apod_{name}_angstrom" if k == "fsc05_apod_angstrom" else f"{k}_{name}")
            out[key] = v
    return out


def map_metrics(
    raw: np.ndarray,
    restored: np.ndarray,
    voxel_size: float,
    truth: np.ndarray | None = None,
    tilt_range: tuple[float, float] | None = None,
    extra: dict[str, np.ndarray] | None = None,
    clean: np.ndarray | None = None,
) -> dict:
    """Numbers describing a restoration; every value is a plain ``float`` (JSON-ready).

    Always (raw vs restored, no truth needed):
      ``fsc05_raw_vs_restored``, ``fsc0143_raw_vs_restored`` (cycles/voxel): where the FSC of the raw and
      the restored map drops below 0.5 / 0.143. The two maps share the raw map's noise, so this is an
      *agreement* figure, not a resolution (no Å value is given for it);
      ``std_raw``, ``std_restored``, ``std_ratio`` (restored / raw), ``corr_raw_restored``
      (Pearson correlation of the voxels), ``voxel_size`` (Å).
    With ``truth`` (same grid), for ``m`` in {raw, restored} and every name of ``extra`` (further maps
    on the same grid, e.g. the ``gaussian`` and ``wiener`` baselines): the keys of :func:`truth_metrics`
    suffixed ``_m`` (``psnr_m``, ``fsc05_apod_m``, ``wedge_corr_m``, …; ``fsc05_m_angstrom`` keeps its
    historical order).
    With ``tilt_range`` (degrees about y): ``wedge_power_fraction_m``; with the truth also ``wedge_corr_m``
    (``wedge_freq_min``/``wedge_freq_max`` record its band in cycles/voxel).
    With ``clean`` (the noise-free reconstruction, same grid; needs ``tilt_range``): ``psnr_clean_m``
    (:func:`psnr_vs_clean`, dB, sampled region only).
    """
    r = np.asarray(raw, dtype=np.float32)
    d = np.asarray(restored, dtype=np.float32)
    if r.ndim != 3:
        raise ValueError(f"maps must be 3D (z, y, x), got shape {r.shape}")
    if r.shape != d.shape:
        raise ValueError(f"raw {r.shape} and restored {d.shape} differ in shape")
    if truth is not None and np.shape(truth) != r.shape:
        raise ValueError(f"truth {np.shape(truth)} differs in shape from the maps {r.shape}")
    if clean is not None and np.shape(clean) != r.shape:
        raise ValueError(f"clean map {np.shape(clean)} differs in shape from the maps {r.shape}")
    if clean is not None and tilt_range is None:
        raise ValueError("the PSNR against the clean reconstruction needs the tilt range (its sampled region)")
    maps = {"raw": r, "restored": d}
    for name, v in (extra or {}).items():
        if np.shape(v) != r.shape:
            raise ValueError(f"{name} {np.shape(v)} differs in shape from the maps {r.shape}")
        maps[name] = np.asarray(v, dtype=np.float32)
    shape = tuple(r.shape)
    out: dict[str, float] = {"voxel_size": float(voxel_size)}
    agree = fourier.resolutions(fsc_curve(r, d), shape, voxel_size)
    out["fsc05_raw_vs_restored"], out["fsc0143_raw_vs_restored"] = agree[0.5].frequency, agree[0.143].frequency
    sr, sd = float(r.std(dtype=np.float64)), float(d.std(dtype=np.float64))
    out["std_raw"], out["std_restored"] = sr, sd
    out["std_ratio"] = sd / sr if sr > 0 else float("nan")
    rc, dc = r.astype(np.float64) - r.mean(dtype=np.float64), d.astype(np.float64) - d.mean(dtype=np.float64)
    den = math.sqrt(float(np.sum(rc * rc)) * float(np.sum(dc * dc)))
    out["corr_raw_restored"] = float(np.sum(rc * dc)) / den if den > 0 else 0.0
    del rc, dc

    if tilt_range is not None:
        fourier.check_tilt_range(float(tilt_range[0]), float(tilt_range[1]))
    if truth is not None:
        t = np.asarray(truth, dtype=np.float32)
        truth_contrast = band_contrast(t)
        out.update(truth_metric_rows(maps, lambda m: truth_metrics(m, t, voxel_size, tilt_range, truth_contrast)))
        if tilt_range is not None:
            freqs = fourier.shell_frequencies(shape)
            out["wedge_freq_min"], out["wedge_freq_max"] = float(freqs[1]), float(freqs[-1])
    elif tilt_range is not None:
        for name, m in maps.items():
            out[f"wedge_power_fraction_{name}"] = wedge_power_fraction(m, tilt_range)
    if clean is not None:
        for name, m in maps.items():
            out[f"psnr_clean_{name}"] = psnr_vs_clean(m, clean, tilt_range)
    return {k: float(v) for k, v in out.items()}


def map_curves(
    raw: np.ndarray, restored: np.ndarray, truth: np.ndarray | None = None,
    tilt_range: tuple[float, float] | None = None, extra: dict[str, np.ndarray] | None = None,
    clean: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """FSC curves for plots: ``frequency`` (cycles/voxel), ``raw_vs_restored`` (agreement; shared noise),
    and with the truth, for ``m`` in raw, restored and the names of ``extra``: ``m_vs_truth`` (whole map,
    up to the global sign of :func:`truth_sign`), ``m_vs_truth_apod`` (:func:`apodised_fsc`, at
    ``apod_frequency``), ``m_eq_gain`` (the per-shell gains of :func:`equalisation`, at ``frequency``)
    and with a tilt range ``wedge_m``; with ``clean`` and a tilt range, ``m_vs_clean_error`` (the
    relative per-shell error against the clean map in the sampled region, :func:`clean_comparison`)."""
    shape = tuple(np.shape(raw))
    curves: dict[str, list[float]] = {"frequency": fourier.shell_frequencies(shape).tolist(),
                                      "raw_vs_restored": fsc_curve(raw, restored).tolist()}
    named = dict({"raw": raw, "restored": restored}, **(extra or {}))
    if clean is not None and tilt_range is not None:
        for name, m in named.items():
            curves[f"{name}_vs_clean_error"] = clean_comparison(m, clean, tilt_range)["shell_error"].tolist()
    if truth is not None:
        curves["apod_frequency"] = fourier.shell_frequencies(tuple(min(APOD_BOX, n) for n in shape)).tolist()
        for name, m in named.items():
            sign = truth_sign(m, truth)
            curves[f"{name}_vs_truth"] = (sign * fsc_curve(m, truth)).tolist()
            curves[f"{name}_vs_truth_apod"] = apodised_fsc(m, truth).tolist()
            curves[f"{name}_eq_gain"] = equalisation(m, truth)[1][:-1].tolist()
            if tilt_range is not None:
                curves[f"wedge_{name}"] = (sign * wedge_correlation(m, truth, tilt_range)[1]).tolist()
    return curves
