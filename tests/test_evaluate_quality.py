"""evaluate.quality against independent float64 references (numpy loops, np.linalg.lstsq, MONAI SSIM)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryorestore.evaluate import quality
from test_fourier import np_shell_index_full


def _maps(seed=0, shape=(20, 24, 22)):
    rng = np.random.default_rng(seed)
    truth = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    raw = 3.0 * truth - 0.7 + rng.normal(scale=0.05, size=shape)
    restored = ndimage.gaussian_filter(raw, 0.8)
    return truth.astype(np.float32), raw.astype(np.float32), restored.astype(np.float32)


def np_fsc_full(a, b, select=None):
    """FSC on the full FFT grid with an explicit shell loop (integer-index radius, rounded half up)."""
    f1, f2 = np.fft.fftn(a.astype(np.float64)), np.fft.fftn(b.astype(np.float64))
    m = min(a.shape)
    shells = np_shell_index_full(a.shape)
    w = np.ones(a.shape) if select is None else select
    out = np.zeros(m // 2 + 1)
    for q in range(m // 2 + 1):
        s = (shells == q) & (w > 0)
        num = np.sum(f1[s] * np.conj(f2[s])).real
        den = math.sqrt(np.sum(np.abs(f1[s]) ** 2) * np.sum(np.abs(f2[s]) ** 2))
        out[q] = num / den if den > 1e-30 else 0.0
    return out


def np_missing_full(shape, tmin, tmax):
    """1 where the (kx, kz) line angle lies outside [−tmax, −tmin] (tilt θ measures the line at −θ; the ky
    axis is always measured)."""
    fz, fy, fx = (np.fft.fftfreq(n) for n in shape)
    kz, kx = np.meshgrid(fz, fx, indexing="ij")
    ang = np.degrees(np.arctan2(kz, kx))
    ang = np.where(ang > 90, ang - 180, ang)
    ang = np.where(ang <= -90, ang + 180, ang)
    measured = ((ang >= -tmax - 1e-6) & (ang <= -tmin + 1e-6)) | ((kz == 0) & (kx == 0))
    return np.broadcast_to((~measured)[:, None, :], shape).astype(float)


def test_affine_fit_matches_lstsq():
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(9, 10, 11)), rng.normal(size=(9, 10, 11))
    t = t + 2.5 * x
    fitted, a, b = quality.affine_fit(x, t)
    design = np.stack([x.ravel(), np.ones(x.size)], axis=1)
    (a_ref, b_ref), *_ = np.linalg.lstsq(design, t.ravel(), rcond=None)
    assert a == pytest.approx(a_ref, rel=1e-10) and b == pytest.approx(b_ref, abs=1e-10)
    np.testing.assert_allclose(fitted, a_ref * x + b_ref, rtol=1e-10, atol=1e-12)


def test_psnr_formula_and_invariance_to_grey_level():
    truth, raw, _ = _maps(1)
    design = np.stack([raw.ravel().astype(np.float64), np.ones(raw.size)], axis=1)
    coef, *_ = np.linalg.lstsq(design, truth.ravel().astype(np.float64), rcond=None)
    mse = np.mean((design @ coef - truth.ravel()) ** 2)
    ref = 10 * np.log10((truth.max() - truth.min()) ** 2 / mse)
    assert quality.psnr(raw, truth) == pytest.approx(ref, rel=1e-6)
    # inverted contrast and offset change nothing after the fit
    assert quality.psnr(-4.0 * raw + 9.0, truth) == pytest.approx(ref, rel=1e-5)


def test_ssim_matches_monai():
    from monai.metrics import SSIMMetric

    truth, raw, _ = _maps(2, shape=(22, 24, 26))
    fitted = quality.affine_fit(raw, truth)[0]
    rng_ = float(truth.max() - truth.min())
    metric = SSIMMetric(spatial_dims=3, data_range=rng_, kernel_type="gaussian", win_size=11, kernel_sigma=1.5)
    ref = float(metric(torch.from_numpy(fitted[None, None]).double(), torch.from_numpy(truth[None, None].astype(np.float64))).mean())
    assert quality.ssim(raw, truth) == pytest.approx(ref, abs=2e-4)
    assert quality.ssim(truth, truth) == pytest.approx(1.0, abs=1e-9)


def test_fsc_resolutions_and_wedge_against_numpy():
    truth, raw, restored = _maps(4)
    m = quality.map_metrics(raw, restored, 2.5, truth=truth, tilt_range=(-50.0, 45.0))
    from cryorestore import fourier

    for name, arr in (("raw", raw), ("restored", restored)):
        curve = np_fsc_full(arr, truth)
        res = fourier.resolutions(curve, truth.shape, 2.5)
        assert m[f"fsc05_{name}"] == pytest.approx(res[0.5].frequency, abs=1e-6)
        assert m[f"fsc05_{name}_angstrom"] == pytest.approx(2.5 / res[0.5].frequency, rel=1e-6)
        wedge = np_fsc_full(arr, truth, select=np_missing_full(truth.shape, -50.0, 45.0))
        assert m[f"wedge_corr_{name}"] == pytest.approx(wedge[1:].mean(), abs=1e-5)
    assert m["wedge_freq_min"] == pytest.approx(1 / 20) and m["wedge_freq_max"] == pytest.approx(0.5)
    for key in ("psnr_raw", "psnr_restored", "ssim_raw", "ssim_restored", "fsc05_apod_raw", "fsc05_apod_restored"):
        assert key in m and np.isfinite(m[key])
    # against a truth only FSC=0.5 is a resolution; the raw-restored FSC shares noise: no Å for it
    assert "fsc0143_raw" not in m and "fsc05_raw_vs_restored_angstrom" not in m


def test_wedge_power_fraction_against_numpy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, 18, 20))
    miss = np_missing_full(x.shape, -60, 60)
    p = np.abs(np.fft.fftn(x)) ** 2
    p[0, 0, 0] = 0
    ref = float((p * miss).sum() / p.sum())
    assert quality.wedge_power_fraction(x, (-60, 60)) == pytest.approx(ref, rel=1e-6)


def test_metrics_without_truth():
    truth, raw, restored = _maps(6)
    m = quality.map_metrics(raw, restored, 3.0)
    assert "psnr_raw" not in m and "wedge_corr_raw" not in m
    assert m["std_ratio"] == pytest.approx(restored.std(dtype=np.float64) / raw.std(dtype=np.float64), rel=1e-6)
    assert m["corr_raw_restored"] == pytest.approx(np.corrcoef(raw.ravel(), restored.ravel())[0, 1], rel=1e-6)
    assert all(isinstance(v, float) for v in m.values())
    with pytest.raises(ValueError):
        quality.map_metrics(raw, restored[:-1], 3.0)


def test_mid_band_fsc_and_amplitude_ratio_against_numpy():
    truth, raw, restored = _maps(8, shape=(24, 26, 28))
    m = quality.map_metrics(raw, restored, 2.0, truth=truth)
    shells = np_shell_index_full(truth.shape)
    freqs = np.arange(min(truth.shape) // 2 + 1) / min(truth.shape)
    mid = [q for q, f in enumerate(freqs) if 0.125 - 1e-12 <= f <= 0.25 + 1e-12]
    low = [q for q, f in enumerate(freqs) if 0.02 - 1e-12 <= f <= 0.125 + 1e-12]

    def rms(x, qs):
        p = np.abs(np.fft.fftn(x.astype(np.float64))) ** 2
        sel = np.isin(shells, qs)
        return math.sqrt(p[sel].mean())

    for name, arr in (("raw", raw), ("restored", restored)):
        assert m[f"fsc_mid_{name}"] == pytest.approx(np_fsc_full(arr, truth)[mid].mean(), abs=1e-5)
        ref = (rms(arr, mid) / rms(arr, low)) / (rms(truth, mid) / rms(truth, low))
        assert m[f"mid_amplitude_{name}"] == pytest.approx(ref, rel=1e-6)
    # a blur damps mid frequencies (< 1); the grey scale does not matter; the truth scores exactly 1
    assert m["mid_amplitude_restored"] < m["mid_amplitude_raw"]
    assert quality.band_amplitude_ratio(-4.0 * truth + 2.0, truth) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="no FSC shell"):
        quality.band_shells((8, 8, 8), (0.3, 0.32))


def np_tukey(n, alpha):
    """Tukey window by its textbook formula (Harris 1978), symmetric, length n."""
    x = np.arange(n) / (n - 1)
    w = np.ones(n)
    lo, hi = x < alpha / 2, x > 1 - alpha / 2
    w[lo] = 0.5 * (1 + np.cos(2 * np.pi / alpha * (x[lo] - alpha / 2)))
    w[hi] = 0.5 * (1 + np.cos(2 * np.pi / alpha * (x[hi] - 1 + alpha / 2)))
    return w


def test_apodised_fsc_against_numpy_and_sign():
    rng = np.random.default_rng(11)
    shape = (20, 30, 28)
    truth = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    x = -2.0 * truth + 0.3 * rng.normal(size=shape)  # dense matter dark: negative correlation
    box = 16
    sl = tuple(slice((n - box) // 2, (n - box) // 2 + box) for n in shape)
    win = np_tukey(box, 0.5)[:, None, None] * np_tukey(box, 0.5)[None, :, None] * np_tukey(box, 0.5)[None, None, :]

    def crop(v):
        c = v[sl]
        return (c - c.mean()) * win

    np.testing.assert_allclose(quality.apodised_crop(x, box), crop(x), rtol=1e-10, atol=1e-12)
    assert quality.truth_sign(x, truth) == -1.0 and quality.truth_sign(-x, truth) == 1.0
    ref = np_fsc_full(-crop(x), crop(truth))
    np.testing.assert_allclose(quality.apodised_fsc(x, truth, box), ref, atol=1e-5)
    assert ref[1] > 0.5  # the sign-corrected curve starts high


def test_truth_metrics_are_sign_invariant_and_cover_extra_maps():
    truth, raw, restored = _maps(12, shape=(20, 22, 24))
    m = quality.map_metrics(raw, restored, 2.0, truth=truth, tilt_range=(-60.0, 60.0),
                            extra={"inverted": -raw, "blurred": ndimage.gaussian_filter(raw, 1.0)})
    for key in ("psnr", "psnr_eq", "ssim", "fsc05", "fsc05_apod", "fsc_mid", "wedge_corr", "mid_amplitude"):
        assert m[f"{key}_inverted"] == pytest.approx(m[f"{key}_raw"], abs=1e-5), key
        assert f"{key}_blurred" in m
    assert m["sign_inverted"] == -1.0 and m["sign_raw"] == 1.0
    c = quality.map_curves(raw, restored, truth, (-60.0, 60.0), extra={"inverted": -raw})
    np.testing.assert_allclose(c["inverted_vs_truth"], c["raw_vs_truth"], atol=1e-6)
    assert len(c["raw_vs_truth_apod"]) == len(c["apod_frequency"]) == 11


# --------------------------------------------------------------------------------------------
# equalised PSNR and PSNR against the clean reconstruction (sampled region)
# --------------------------------------------------------------------------------------------
def np_equalisation(x, truth):
    """Reference: full-grid numpy FFT, one real gain per shell (corners beyond Nyquist one more group)
    by an explicit loop, DC set to the truth's, PSNR of the filtered map computed in real space."""
    x, truth = np.asarray(x, np.float64), np.asarray(truth, np.float64)
    fx, ft = np.fft.fftn(x), np.fft.fftn(truth)
    m = min(x.shape)
    shells = np.minimum(np_shell_index_full(x.shape), m // 2 + 1)  # m//2+1: the corner group
    not_dc = np.ones(x.shape, bool)
    not_dc[0, 0, 0] = False
    gains = np.zeros(m // 2 + 2)
    filt = np.zeros(x.shape, complex)
    for q in range(m // 2 + 2):
        s = (shells == q) & not_dc
        den = np.sum(np.abs(fx[s]) ** 2)
        gains[q] = np.sum(fx[s] * np.conj(ft[s])).real / den if den > 0 else 0.0
        filt[s] = gains[q] * fx[s]
    filt[0, 0, 0] = ft[0, 0, 0]
    y = np.fft.ifftn(filt)
    assert np.abs(y.imag).max() < 1e-8 * np.abs(y.real).max()
    mse = np.mean((y.real - truth) ** 2)
    return 10 * np.log10((truth.max() - truth.min()) ** 2 / mse), gains


def np_psnr_vs_clean(x, clean, tmin, tmax):
    """Reference: both maps band-limited to the sampled coefficients with a full-grid numpy mask, affine
    lstsq fit in real space, MSE over all voxels, peak = range of the clean map as given. A coefficient
    counts when it and its mirror −k are both sampled (they differ on even dimensions' Nyquist planes)."""
    measured = 1.0 - np_missing_full(x.shape, tmin, tmax)
    measured = measured * measured[np.ix_(*[(-np.arange(n)) % n for n in x.shape])]
    xm = np.fft.ifftn(measured * np.fft.fftn(np.asarray(x, np.float64))).real
    cm = np.fft.ifftn(measured * np.fft.fftn(np.asarray(clean, np.float64))).real
    design = np.stack([xm.ravel(), np.ones(xm.size)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, cm.ravel(), rcond=None)
    mse = np.mean((a * xm + b - cm) ** 2)
    return 10 * np.log10((clean.max() - clean.min()) ** 2 / mse)


def _radial_filter(x, h):
    """Apply a per-shell (real) transfer function ``h`` (corners: h[-1]) on the full grid."""
    m = min(x.shape)
    shells = np.minimum(np_shell_index_full(x.shape), m // 2 + 1)
    return np.fft.ifftn(h[shells] * np.fft.fftn(x)).real


@pytest.mark.parametrize("shape", [(14, 18, 16), (15, 18, 17)])
def test_equalised_psnr_matches_numpy_reference(shape):
    rng = np.random.default_rng(21)
    truth = ndimage.gaussian_filter(rng.normal(size=shape), 1.0)
    h = rng.uniform(-2.0, 3.0, size=min(shape) // 2 + 2)  # includes sign flips, as a CTF
    x = _radial_filter(truth, h) + 0.4 + rng.normal(scale=0.05, size=shape)
    got, gains = quality.equalisation(x.astype(np.float32), truth.astype(np.float32))
    ref, ref_gains = np_equalisation(x.astype(np.float32), truth.astype(np.float32))
    assert got == pytest.approx(ref, abs=1e-6)
    np.testing.assert_allclose(gains, ref_gains, rtol=1e-6, atol=1e-9)
    assert quality.equalised_psnr(x, truth) == pytest.approx(got, abs=1e-6)
    # it undoes the filter: far above the affine PSNR, and never below it on any map
    assert got > quality.psnr(x, truth) + 10.0
    other = truth + rng.normal(scale=0.3, size=shape)
    assert quality.equalised_psnr(other, truth) >= quality.psnr(other, truth) - 1e-9


def test_equalised_psnr_of_a_noiseless_filtered_map_is_perfect_and_gains_invert_the_filter():
    rng = np.random.default_rng(22)
    shape = (16, 16, 16)
    truth = rng.normal(size=shape)
    h = rng.uniform(0.5, 2.0, size=min(shape) // 2 + 2) * rng.choice([-1.0, 1.0], size=min(shape) // 2 + 2)
    x = _radial_filter(truth, h)
    got, gains = quality.equalisation(x, truth)
    assert got > 200.0
    np.testing.assert_allclose(gains[1:], 1.0 / h[1:], rtol=1e-9)  # shell 0 of a cube holds DC only: gain 0
    assert gains[0] == 0.0


@pytest.mark.parametrize("tilts", [(-50.0, 45.0), (-60.0, 60.0)])
def test_psnr_vs_clean_matches_numpy_reference(tilts):
    rng = np.random.default_rng(23)
    shape = (14, 20, 18)
    clean = ndimage.gaussian_filter(rng.normal(size=shape), 1.2)
    x = -1.7 * clean + 0.3 + rng.normal(scale=0.1, size=shape)
    got = quality.psnr_vs_clean(x.astype(np.float32), clean.astype(np.float32), tilts)
    ref = np_psnr_vs_clean(x.astype(np.float32), clean.astype(np.float32), *tilts)
    assert got == pytest.approx(ref, abs=1e-6)
    # the per-shell relative error sums back to the MSE: Σ_q err_q·P_q / N² = range² / 10^(psnr/10)
    comp = quality.clean_comparison(x, clean, tilts)
    mse = float(np.sum(comp["shell_error"] * comp["shell_clean_power"])) / float(np.prod(shape)) ** 2
    measured = 1.0 - np_missing_full(shape, *tilts)
    measured = measured * measured[np.ix_(*[(-np.arange(n)) % n for n in shape])]
    sh = np_shell_index_full(shape)
    corner = np.sum((measured * np.abs(comp["gain"] * np.fft.fftn(x) - np.fft.fftn(clean)) ** 2)[sh > min(shape) // 2])
    total = mse + corner / float(np.prod(shape)) ** 2
    assert total == pytest.approx(np.ptp(clean) ** 2 / 10 ** (comp["psnr"] / 10), rel=1e-9)


def test_psnr_vs_clean_ignores_the_missing_wedge_and_only_it():
    """Structure added inside the missing wedge does not count; the same amount in the sampled region
    does. Fails if the wedge mask is ignored, or mirrored (asymmetric tilt range)."""
    rng = np.random.default_rng(24)
    shape = (16, 18, 20)
    tilts = (-40.0, 55.0)
    clean = ndimage.gaussian_filter(rng.normal(size=shape), 1.0)
    noise = rng.normal(size=shape)
    missing = np_missing_full(shape, *tilts)
    in_wedge = np.fft.ifftn(missing * np.fft.fftn(noise)).real
    in_sampled = np.fft.ifftn((1 - missing) * np.fft.fftn(noise)).real
    scale = np.std(clean) / np.std(in_wedge)
    x = 2.0 * clean + 1.0 + scale * in_wedge
    whole = quality.psnr(x, clean)  # the whole grid sees the wedge noise
    assert quality.psnr_vs_clean(x, clean, tilts) > whole + 60.0
    assert quality.psnr_vs_clean(x, clean, (-55.0, 40.0)) < whole + 10.0  # mirrored wedge: much of it counts
    y = 2.0 * clean + 1.0 + scale * in_sampled * np.std(in_wedge) / np.std(in_sampled)
    assert quality.psnr_vs_clean(y, clean, tilts) < whole + 3.0


def test_map_metrics_and_curves_carry_equalised_and_clean_psnr():
    truth, raw, restored = _maps(25, shape=(16, 20, 18))
    clean = ndimage.gaussian_filter(truth, 0.7)
    tilts = (-60.0, 50.0)
    gauss = ndimage.gaussian_filter(raw, 1.0)
    m = quality.map_metrics(raw, restored, 2.0, truth=truth, tilt_range=tilts, clean=clean, extra={"gaussian": gauss})
    for name, arr in (("raw", raw), ("restored", restored), ("gaussian", gauss)):
        assert m[f"psnr_eq_{name}"] == pytest.approx(np_equalisation(arr, truth)[0], abs=1e-5)
        assert m[f"psnr_clean_{name}"] == pytest.approx(np_psnr_vs_clean(arr, clean, *tilts), abs=1e-5)
    # without a truth the clean rows still come
    m2 = quality.map_metrics(raw, restored, 2.0, tilt_range=tilts, clean=clean)
    assert m2["psnr_clean_restored"] == pytest.approx(m["psnr_clean_restored"]) and "psnr_eq_raw" not in m2
    with pytest.raises(ValueError, match="tilt range"):
        quality.map_metrics(raw, restored, 2.0, clean=clean)
    with pytest.raises(ValueError, match="clean"):
        quality.map_metrics(raw, restored, 2.0, tilt_range=tilts, clean=clean[:-1])
    c = quality.map_curves(raw, restored, truth, tilts, clean=clean)
    n = len(c["frequency"])
    assert len(c["restored_eq_gain"]) == n and len(c["raw_vs_clean_error"]) == n
    np.testing.assert_allclose(c["raw_eq_gain"], np_equalisation(raw, truth)[1][:-1], rtol=1e-6, atol=1e-9)
