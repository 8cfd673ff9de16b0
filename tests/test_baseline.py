"""Classical baselines: Gaussian low-pass with sigma search, FSC-weighted half-map Wiener filter, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from cryorestore import baseline, io
from cryorestore.errors import InputError
from test_fourier import np_fsc_loop, np_shell_index_full


def _smooth_field(rng, shape, sigma=2.0):
    t = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return t / t.std()


def test_gaussian_lowpass_is_scipy_gaussian(rng):
    v = rng.normal(size=(12, 14, 16))
    assert np.allclose(baseline.gaussian_lowpass(v, 1.3), ndimage.gaussian_filter(v, 1.3, mode="reflect"), atol=1e-12)
    assert np.array_equal(baseline.gaussian_lowpass(v, 0.0), v)
    with pytest.raises(InputError):
        baseline.gaussian_lowpass(v, -1.0)


def test_sigma_for_frequency_halves_the_transfer():
    for f in (0.05, 0.12, 0.3):
        s = baseline.sigma_for_frequency(f)
        assert math.exp(-2 * math.pi**2 * s * s * f * f) == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(InputError):
        baseline.sigma_for_frequency(0.0)


def test_search_sigma_picks_the_psnr_maximum(rng):
    shape = (16, 20, 18)
    truth = _smooth_field(rng, shape)
    noisy = truth + 0.8 * rng.normal(size=shape)
    sigmas = (0.5, 1.0, 1.5, 2.0, 3.0)
    best, scores = baseline.search_sigma(noisy, truth, sigmas)
    # independent PSNR: affine least-squares fit by numpy's lstsq, then 10 log10(range² / MSE)
    ref = {}
    for s in sigmas:
        g = ndimage.gaussian_filter(noisy, s, mode="reflect").ravel()
        A = np.stack([g, np.ones_like(g)], axis=1)
        coef = np.linalg.lstsq(A, truth.ravel(), rcond=None)[0]
        mse = np.mean((A @ coef - truth.ravel()) ** 2)
        ref[s] = 10 * np.log10((truth.max() - truth.min()) ** 2 / mse)
    assert best == max(ref, key=ref.get)
    for s in sigmas:
        assert scores[s] == pytest.approx(ref[s], abs=1e-9)
    # a noiseless map wants the narrowest filter; more noise wants a wider one
    assert baseline.search_sigma(truth, truth, sigmas)[0] == 0.5
    louder = baseline.search_sigma(truth + 3.0 * rng.normal(size=shape), truth, sigmas)[0]
    assert louder > best


def test_wiener_matches_numpy_reference(rng):
    shape = (16, 18, 20)
    signal = _smooth_field(rng, shape, 1.5)
    even = signal + 0.7 * rng.normal(size=shape)
    odd = signal + 0.7 * rng.normal(size=shape)
    res = baseline.wiener_baseline(even, odd)
    # numpy: half-map FSC per shell on the full grid, w = clip(2F/(1+F)), applied to the mean of the halves
    f = np_fsc_loop(even, odd)
    w = np.clip(2 * np.clip(f, 0, 1) / (1 + np.clip(f, 0, 1)), 0, 1)
    assert np.allclose(res.params["half_fsc"], f, atol=1e-9)
    assert np.allclose(res.params["weights"], w, atol=1e-9)
    shells = np.minimum(np_shell_index_full(shape), len(w) - 1)
    ref = np.fft.ifftn(np.fft.fftn(0.5 * (even + odd)) * w[shells]).real
    assert np.allclose(res.volume, ref, atol=1e-5)
    assert res.params["raw"] == "mean of the half maps"
    # the filter helps: closer to the signal than the raw mean of the halves
    err = lambda x: np.mean((x - signal) ** 2)  # noqa: E731
    assert err(res.volume) < err(0.5 * (even + odd))


def test_wiener_weights_edge_cases():
    w = baseline.wiener_weights(np.array([1.0, 0.5, 0.0, -0.3]))
    assert np.allclose(w, [1.0, 2 * 0.5 / 1.5, 0.0, 0.0])


def test_baselines_use_the_full_map_when_given(rng):
    shape = (12, 12, 12)
    even, odd, full = (rng.normal(size=shape) for _ in range(3))
    g = baseline.gaussian_baseline(even, odd, full, truth=full, sigmas=(0.5, 1.0))
    assert g.params["raw"] == "full map"
    assert np.allclose(g.volume, ndimage.gaussian_filter(full, 0.5, mode="reflect"), atol=1e-5)
    with pytest.raises(InputError, match="shape"):
        baseline.raw_map(even, odd[:-1])


def test_gaussian_without_truth_uses_half_map_fsc(rng):
    shape = (16, 16, 16)
    signal = _smooth_field(rng, shape, 1.5)
    even, odd = signal + rng.normal(size=shape), signal + rng.normal(size=shape)
    g = baseline.gaussian_baseline(even, odd)
    f0 = g.params["half_fsc0143"]
    assert 0 < f0 <= 0.5
    assert g.params["sigma_voxels"] == pytest.approx(baseline.sigma_for_frequency(f0))


def test_baseline_cli(tmp_path, rng, write_map, cli):
    shape = (16, 16, 16)
    signal = _smooth_field(rng, shape, 1.5)
    pe = write_map("e.mrc", (signal + rng.normal(size=shape)).astype(np.float32), 7.0)
    po = write_map("o.mrc", (signal + rng.normal(size=shape)).astype(np.float32), 7.0)
    pt = write_map("t.mrc", signal.astype(np.float32), 7.0)
    out = tmp_path / "bl"
    res = cli("baseline", "--even", pe, "--odd", po, "--truth", pt, "--out-dir", out)
    assert res.returncode == 0, res.stderr
    doc = json.loads((out / "baseline.json").read_text())
    assert doc["gaussian"]["sigma_voxels"] in baseline.SIGMA_GRID
    for name in ("gaussian", "wiener"):
        v = io.read_mrc(out / f"{name}.mrc")
        assert v.voxel_size == pytest.approx(7.0) and v.shape == shape
    bad = write_map("b.mrc", rng.normal(size=(16, 16, 15)).astype(np.float32), 7.0)
    out2 = tmp_path / "bl2"
    res = cli("baseline", "--even", pe, "--odd", bad, "--out-dir", out2)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "shape" in res.stderr
    assert not out2.exists()
