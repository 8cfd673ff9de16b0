"""Test-time augmentation and the half-map-calibrated combination (cryorestore.ensemble)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryorestore import ensemble, fourier
from cryorestore.errors import InputError


def _rng_volume(shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("mode", ensemble.TTA_MODES)
def test_tta_of_identity_returns_the_input(mode):
    x = _rng_volume((3, 1, 12, 10, 12))
    out = ensemble.with_tta(lambda b: b.clone(), mode)(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_transform_count_and_inverse():
    assert len(ensemble.tta_transforms("none")) == 1
    assert len(ensemble.tta_transforms("rot")) == 4
    ts = ensemble.tta_transforms("rot+flip")
    assert len(ts) == 8 and len(set(ts)) == 8
    x = _rng_volume((2, 1, 8, 6, 8), seed=1)
    for t in ts:
        torch.testing.assert_close(t.invert(t.apply(x)), x, rtol=0, atol=0)
    with pytest.raises(InputError):
        ensemble.tta_transforms("flip-everything")


def test_tta_matches_an_explicit_numpy_average():
    """A model that is not equivariant (it adds a ramp along z and x): the TTA is the mean over the
    8 transforms of T⁻¹(f(T(x))), computed here independently with numpy's rot90/flip."""
    x = np.random.default_rng(2).standard_normal((2, 1, 8, 6, 8))
    ramp = np.arange(8.0)[:, None, None] + 0.5 * np.arange(8.0)[None, None, :]

    def f_np(v):
        return v ** 2 + ramp

    expected = np.zeros_like(x)
    for flip in (False, True):
        for k in range(4):
            v = np.flip(x, axis=-2) if flip else x
            y = np.rot90(f_np(np.rot90(v, k, axes=(-3, -1))), -k, axes=(-3, -1))
            expected += np.flip(y, axis=-2) if flip else y
    expected /= 8
    ramp_t = torch.from_numpy(ramp)
    out = ensemble.with_tta(lambda b: b ** 2 + ramp_t, "rot+flip")(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_tta_refuses_non_cubic_tiles_in_the_rotation_plane():
    with pytest.raises(InputError):
        ensemble.with_tta(lambda b: b, "rot")(torch.zeros(1, 1, 8, 8, 6))


def _missing_power_fraction(v: torch.Tensor, tilt_range) -> float:
    spec = torch.fft.rfftn(v.double()).abs() ** 2
    measured = fourier.missing_wedge_mask(tuple(v.shape), *tilt_range).double()
    return float((spec * (1 - measured)).sum() / spec.sum())


@pytest.mark.parametrize("tilt_range", [(-60.0, 60.0), (-40.0, 55.0)])
def test_half_turn_and_y_mirror_keep_the_wedge_quarter_turns_swap_it(tilt_range):
    """A volume with nothing in its missing wedge keeps nothing there after k = 2 or the y mirror (any
    tilt range); a quarter turn moves the wedge, as the training augmentation does. Odd Z and X: no
    Nyquist plane, whose coefficients stand for two lines at once when the range is asymmetric."""
    shape = (15, 12, 15)
    v = _rng_volume(shape, seed=3).double()
    measured = fourier.missing_wedge_mask(shape, *tilt_range).double()
    v = torch.fft.irfftn(torch.fft.rfftn(v) * measured, s=shape)
    assert _missing_power_fraction(v, tilt_range) < 1e-20
    for t in ensemble.tta_transforms("rot+flip"):
        frac = _missing_power_fraction(t.apply(v), tilt_range)
        if t.k % 2 == 0:
            assert frac < 1e-20, t
        else:
            assert frac > 0.2, t


# --------------------------------------------------------------------------------------------
# combination
# --------------------------------------------------------------------------------------------
def _numpy_weights(fa, fb, e, o, tilt_range):
    """Independent float64 reference: full-grid numpy FFTs, shells by rounded radius, measured lines by
    the documented rule (tilts [a, b] measure line angles [-b, -a] of (kx, kz))."""
    shape = e.shape
    kz, ky, kx = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    shell = np.floor(np.sqrt(kz**2 + ky**2 + kx**2) * min(shape) + 0.5).astype(int)
    phi = np.degrees(np.arctan2(kz, kx))
    phi = np.where(phi > 90, phi - 180, phi)
    phi = np.where(phi <= -90, phi + 180, phi)
    meas = ((phi >= -tilt_range[1] - 1e-6) & (phi <= -tilt_range[0] + 1e-6)) | ((kz == 0) & (kx == 0))
    FA, FB, FE, FO = (np.fft.fftn(v.astype(np.float64)) for v in (fa, fb, e, o))
    FM, FR = (FA + FB) / 2, (FE + FO) / 2
    n = min(shape) // 2 + 1
    alpha, beta = np.ones(n), np.zeros(n)

    def d(p, q, sel):
        return float(np.real(p[sel] * np.conj(q[sel])).sum())

    for k in range(1, n):
        sel = (shell == k) & meas
        g = np.array([[d(FM, FM, sel), d(FM, FR, sel)], [d(FM, FR, sel), d(FR, FR, sel)]])
        c = np.array([(d(FA, FO, sel) + d(FB, FE, sel)) / 2, d(FE, FO, sel)])
        alpha[k], beta[k] = np.linalg.solve(g + 1e-9 * np.trace(g) * np.eye(2), c)
    return alpha, beta


def _halves(shape=(24, 32, 28), noise=1.0, seed=4):
    rng = np.random.default_rng(seed)
    s = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 4
    e = s + noise * rng.standard_normal(shape)
    o = s + noise * rng.standard_normal(shape)
    return s, e, o


def test_combination_weights_match_a_numpy_reference():
    s, e, o = _halves()
    fa, fb = ndimage.gaussian_filter(e, 1.0), ndimage.gaussian_filter(o, 1.0)
    for tr in [None, (-50.0, 60.0)]:
        a, b = ensemble.combination_weights(fa, fb, e, o, tr)
        ra, rb = _numpy_weights(fa, fb, e, o, (-90.0, 90.0) if tr is None else tr)
        np.testing.assert_allclose(a, ra, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(b, rb, rtol=1e-8, atol=1e-8)


def test_combination_beats_both_inputs_against_the_signal():
    """An over-smoothing 'denoiser' (a wide Gaussian): the calibrated combination is closer to the signal
    than the plain mean of its outputs and than the raw map."""
    s, e, o = _halves(shape=(40, 40, 40), noise=1.5)
    fa, fb = ndimage.gaussian_filter(e, 2.5), ndimage.gaussian_filter(o, 2.5)
    comb = ensemble.calibrated_combination(fa, fb, e, o)
    mse = lambda v: float(np.mean((v - s) ** 2))  # noqa: E731
    assert comb.volume.dtype == np.float32 and comb.volume.shape == s.shape
    assert mse(comb.volume) < 0.9 * mse(ensemble.mean_of([fa, fb]))
    assert mse(comb.volume) < 0.9 * mse((e + o) / 2)
    assert comb.weight_restored[0] == 1.0 and comb.weight_raw[0] == 0.0
    assert len(comb.weight_raw) == len(comb.shell_frequency) == fourier.n_shells(s.shape)


def test_combination_of_the_signal_itself_keeps_it():
    """A perfect denoiser (f returns the signal): the signal back. Where the signal dominates (below 0.15
    cycles/voxel) the raw map and f are nearly collinear, so only the sum of the weights is pinned (to 1);
    above, the raw map's weight falls to about 0."""
    s, e, o = _halves(shape=(32, 32, 32), noise=1.0)
    comb = ensemble.calibrated_combination(s, s, e, o)
    f = np.asarray(comb.shell_frequency)[1:]
    a, b = np.asarray(comb.weight_restored[1:]), np.asarray(comb.weight_raw[1:])
    assert np.all(np.abs(a + b - 1)[f < 0.15] < 0.25)  # shell 1 holds only ~30 coefficients
    assert np.all(np.abs(b[f >= 0.15]) < 0.15)
    assert float(np.mean((comb.volume - s) ** 2)) < 0.05 * float(np.mean(s ** 2))


def test_combination_refuses_mismatched_shapes():
    s, e, o = _halves(shape=(16, 16, 16))
    with pytest.raises(InputError):
        ensemble.calibrated_combination(s, s[:-1], e, o)


# --------------------------------------------------------------------------------------------
# the hooks in prediction and the presets
# --------------------------------------------------------------------------------------------
class _Identity(torch.nn.Module):
    def forward(self, x):
        return x.clone()


class _ZRamp(torch.nn.Module):
    """Not equivariant: adds a ramp along the tile's z axis, so every transform gives another output."""

    def forward(self, x):
        return x + torch.linspace(0.0, 1.0, x.shape[-3]).view(-1, 1, 1)


def _loaded(net, method="n2n"):
    from cryorestore.data import Normalization
    from cryorestore.modeldir import LoadedModel

    cfg = {"method": method, "loss": "l2", "tilt_range": [-60, 60], "subtomo_size": 16}
    return LoadedModel(net, cfg, Normalization(1.0, 2.0), "test")


def test_predict_volume_with_tta():
    """Identity network: every TTA mode returns the input. A ramp along the tile's z: the 4 rotations
    spread it over z and x, so TTA changes the output; 'none' is the network alone."""
    from cryorestore.predict import predict_volume

    v = np.random.default_rng(5).normal(1.0, 2.0, size=(20, 24, 22)).astype(np.float32)
    for mode in ensemble.TTA_MODES:
        out = predict_volume(_loaded(_Identity()), v, tile=16, overlap=4, progress=False, tta=mode)
        np.testing.assert_allclose(out, v, atol=1e-4)
    plain = predict_volume(_loaded(_ZRamp()), v, tile=16, overlap=4, progress=False, tta="none")
    rot = predict_volume(_loaded(_ZRamp()), v, tile=16, overlap=4, progress=False, tta="rot")
    assert np.abs(plain - rot).max() > 0.1
    with pytest.raises(InputError):
        predict_volume(_loaded(_Identity()), v, tile=16, overlap=4, progress=False, tta="spin")


def test_wedge_methods_use_only_wedge_preserving_turns():
    """DeepDeWedge and IsoNet learn to fill the wedge in the tomogram's orientation: their 'rot' TTA is
    the half turn only (k = 0, 2), n2n's all four quarter turns; checked on a network that adds a squared z ramp against the
    mean over the expected transforms, written out with numpy."""
    from cryorestore.methods import method_class
    from cryorestore.predict import predict_volume

    assert method_class("n2n").tta_quarter_turns == (0, 1, 2, 3)
    for name in ("deepdewedge", "isonet"):
        assert method_class(name).tta_quarter_turns == (0, 2)
    assert [t.k for t in ensemble.tta_transforms("rot", (0, 2))] == [0, 2]
    assert [(t.k, t.flip_y) for t in ensemble.tta_transforms("rot+flip", (2,))] == [(0, False), (2, False), (0, True), (2, True)]
    class ZSquare(torch.nn.Module):  # the squared z ramp: the half turn alone does not average it out
        def forward(self, x):
            return x + torch.linspace(0.0, 1.0, x.shape[-3]).view(-1, 1, 1) ** 2

    v = np.random.default_rng(6).normal(0.0, 1.0, size=(16, 16, 16)).astype(np.float32)
    ramp = np.linspace(0.0, 1.0, 16)[:, None, None] ** 2
    # one tile covering the volume: the output is the mean over k of rot(-k)(rot(k)(v') + ramp), in grey scale
    expected = {}
    for turns, name in (((0, 2), "isonet"), ((0, 1, 2, 3), "n2n")):
        acc = np.zeros_like(v, dtype=np.float64)
        for k in turns:
            acc += np.rot90(np.rot90((v - 1.0) / 2.0, k, axes=(0, 2)) + ramp, -k, axes=(0, 2))
        expected[name] = acc / len(turns) * 2.0 + 1.0
    for name, ref in expected.items():
        out = predict_volume(_loaded(ZSquare(), name), v, tile=16, overlap=0, progress=False, tta="rot")
        np.testing.assert_allclose(out, ref, atol=1e-5)
    assert np.abs(expected["isonet"] - expected["n2n"]).max() > 0.1


def test_restore_calibrated_equals_the_combination_of_the_network_outputs():
    from cryorestore.predict import predict_volume, restore

    s, e, o = _halves(shape=(16, 20, 18), noise=1.0)
    e, o = e.astype(np.float32), o.astype(np.float32)
    lm = _loaded(_ZRamp())
    kw = dict(tile=16, overlap=4, progress=False)
    out = restore(lm, e, o, combine="calibrated", **kw)
    fe, fo = predict_volume(lm, e, **kw), predict_volume(lm, o, **kw)
    np.testing.assert_allclose(out, ensemble.calibrated_combination(fe, fo, e, o, (-60.0, 60.0)).volume, atol=1e-5)
    with pytest.raises(InputError):
        restore(lm, e, o, combine="median", **kw)


def test_every_preset_names_valid_prediction_options():
    from cryorestore import presets

    for name in presets.PRESET_NAMES:
        v = presets.inference_values(name)
        assert v["tta"] in ensemble.TTA_MODES and v["combine"] in ensemble.COMBINE_MODES
    with pytest.raises(InputError):
        presets.inference_values("turbo")


def test_denoise_band_fsc_matches_a_numpy_reference_up_to_sign():
    """denoise's 'mean apod. FSC 0.03-0.25' row: the Tukey-apodised 64³ centre crops, FSC per shell
    (numpy, full grid, float64), averaged over shells 2…16 (0.031…0.25 cycles/voxel); a sign flip of
    the map does not change it."""
    from scipy.signal.windows import tukey

    from cryorestore.evaluate.quality import band_apodised_fsc as band_fsc

    rng = np.random.default_rng(6)
    t = ndimage.gaussian_filter(rng.standard_normal((64, 70, 66)), 2.0)
    x = t + 0.05 * rng.standard_normal(t.shape)

    def crop(v):
        sl = tuple(slice((n - 64) // 2, (n - 64) // 2 + 64) for n in v.shape)
        c = v[sl] - v[sl].mean()
        w = tukey(64, 0.5, sym=True)
        return c * w[:, None, None] * w[None, :, None] * w[None, None, :]

    fa, fb = np.fft.fftn(crop(x)), np.fft.fftn(crop(t))
    k = np.fft.fftfreq(64)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    shell = np.floor(np.sqrt(kz**2 + ky**2 + kx**2) * 64 + 0.5).astype(int)
    fsc = [np.real(np.sum(fa[shell == s] * np.conj(fb[shell == s])))
           / np.sqrt(np.sum(np.abs(fa[shell == s]) ** 2) * np.sum(np.abs(fb[shell == s]) ** 2)) for s in range(2, 17)]
    assert band_fsc(x, t) == pytest.approx(float(np.mean(fsc)), abs=1e-6)
    assert band_fsc(-x, t) == pytest.approx(band_fsc(x, t), abs=1e-9)


def test_combine_outputs_modes():
    """mean: the plain mean; mean+lowpass: scipy's Gaussian of the mean with the width whose transfer
    exp(-2π²σ²f²) is 1/2 at the half maps' FSC=LOWPASS_FSC frequency; one map: the mean whatever the mode."""
    from cryorestore import baseline

    s, e, o = _halves(shape=(24, 28, 26), noise=1.0)
    fa, fb = ndimage.gaussian_filter(e, 0.7), ndimage.gaussian_filter(o, 0.7)
    tr = (-60.0, 60.0)
    np.testing.assert_allclose(ensemble.combine_outputs([fa, fb], e, o, "mean", tr), (fa + fb) / 2, atol=1e-6)
    th = ensemble.LOWPASS_FSC
    f0 = fourier.resolutions(baseline.half_map_fsc(e, o), e.shape, thresholds=(th,))[th].frequency
    sigma = np.sqrt(np.log(2) / 2) / (np.pi * f0)
    expected = ndimage.gaussian_filter((fa + fb) / 2, sigma, mode="reflect")
    np.testing.assert_allclose(ensemble.combine_outputs([fa, fb], e, o, "mean+lowpass", tr), expected, atol=1e-5)
    for mode in ensemble.COMBINE_MODES:
        np.testing.assert_allclose(ensemble.combine_outputs([fa], e, None, mode, tr), fa, atol=1e-6)
    with pytest.raises(InputError):
        ensemble.combine_outputs([fa, fb], e, o, "median", tr)
