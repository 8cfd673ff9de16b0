"""The truth-free score (cryorestore.evaluate.truthfree): estimates against known signals, float64 references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cryorestore import ensemble
from cryorestore.errors import InputError
from cryorestore.evaluate import truthfree as tf

SHAPE = (32, 40, 48)


def signal(rng: np.random.Generator, shape=SHAPE, smooth: float = 1.5, amp: float = 3.0) -> np.ndarray:
    s = ndimage.gaussian_filter(rng.standard_normal(shape), smooth, mode="wrap")
    return amp * s / s.std()


def halves(rng, s, sd_e: float = 1.0, sd_o: float = 1.0):
    return s + sd_e * rng.standard_normal(s.shape), s + sd_o * rng.standard_normal(s.shape)


def whole_region(shape=SHAPE) -> tf.Region:
    return tf.slab_region(shape, 1, 0, shape[1])


def gauss(v, sigma):
    return ndimage.gaussian_filter(v, sigma, mode="reflect")


def true_gain(e, o, ge, go, s):
    raw = np.mean(((e + o) / 2 - s) ** 2)
    return 10 * np.log10(raw / np.mean(((ge + go) / 2 - s) ** 2))


def test_estimated_error_is_unbiased_with_unequal_noise():
    """MSE_est(P) averages to the true MSE of P = (g(e)+g(o))/2 against s, also when σ_e ≠ σ_o."""
    est, true, est_raw, true_raw = [], [], [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        s = signal(rng)
        e, o = halves(rng, s, 1.0, 1.6)
        ge, go = gauss(e, 1.2), gauss(o, 1.2)
        mr, m = tf.mse_from_sums(tf.block_sums(ge, go, e, o).sum(axis=0))
        est.append(m)
        true.append(np.mean(((ge + go) / 2 - s) ** 2))
        est_raw.append(mr)
        true_raw.append(np.mean(((e + o) / 2 - s) ** 2))
    # the per-realisation error of the estimate is a few % of the MSE; the mean over 12 is far tighter
    assert np.mean(est) == pytest.approx(np.mean(true), rel=0.03)
    assert np.mean(est_raw) == pytest.approx(np.mean(true_raw), rel=0.02)
    # an estimate that forgot the C/4 term (the two halves' outputs disagree) would be far off
    assert abs(np.mean(est) - np.mean(true)) < 0.2 * np.mean(true)


def test_block_sums_match_direct_formula_with_mask():
    rng = np.random.default_rng(3)
    s = signal(rng)
    e, o = halves(rng, s)
    ge, go = gauss(e, 1.0), gauss(o, 1.0)
    mask = rng.random(SHAPE) < 0.6
    sums = tf.block_sums(ge, go, e, o, mask, block=16)
    assert sums.shape[1] == 5 and sums[:, 4].sum() == mask.sum()
    mr, m = tf.mse_from_sums(sums.sum(axis=0))
    a, b, c, d = ((ge - o) ** 2)[mask], ((go - e) ** 2)[mask], ((ge - go) ** 2)[mask], ((e - o) ** 2)[mask]
    assert m == pytest.approx((a.mean() + b.mean()) / 2 - d.mean() / 2 - c.mean() / 4, rel=1e-12)
    assert mr == pytest.approx(d.mean() / 4, rel=1e-12)


def test_gaussian_gain_matches_true_gain_and_interval_covers():
    """Estimated gain of a Gaussian ≈ the true gain; the block-bootstrap interval covers it most of the time."""
    diffs, covered = [], 0
    n = 24
    for seed in range(n):
        rng = np.random.default_rng(100 + seed)
        s = signal(rng)
        e, o = halves(rng, s)
        ge, go = gauss(e, 1.0), gauss(o, 1.0)
        res = tf.score_maps(e, o, {"gaussian": tf.HalfMaps(ge, go, "test")}, whole_region(), block=8,
                            n_boot=400, seed=seed, clean=s)
        row = res.rows["gaussian"]
        assert row.true["true_gain_db"] == pytest.approx(true_gain(e, o, ge, go, s), abs=1e-9)
        diffs.append(row.gain_db - row.true["true_gain_db"])
        covered += row.gain_ci[0] <= row.true["true_gain_db"] <= row.gain_ci[1]
        assert not row.flags
    assert abs(np.mean(diffs)) < 0.1  # dB
    assert np.max(np.abs(diffs)) < 0.5
    assert covered >= 0.75 * n


def test_gaussian_sigma_chosen_by_score_is_near_the_true_optimum():
    rng = np.random.default_rng(7)
    s = signal(rng)
    e, o = halves(rng, s, 1.5, 1.5)
    region = tf.slab_region(SHAPE, 1, 16, 40)
    outer, inner = tf.expanded_box(region, SHAPE, 12)
    hm, params = tf.gaussian_halves(e[outer], o[outer], inner)
    sig = region.slices
    true_by_sigma = {}
    for sg in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0):
        g = (gauss(e[outer], sg) + gauss(o[outer], sg))[inner] / 2
        true_by_sigma[sg] = np.mean((g - s[sig]) ** 2)
    best_true = min(true_by_sigma, key=true_by_sigma.get)
    assert abs(params["sigma_voxels"] - best_true) <= 0.5
    np.testing.assert_allclose(hm.g_even, gauss(e[outer], params["sigma_voxels"])[inner])


def numpy_fsc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Float64 FSC over the full FFT grid, shells of the project's convention (rounded half up)."""
    shape = a.shape
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    k = np.meshgrid(*[np.fft.fftfreq(n) * n for n in shape], indexing="ij")
    r = min(shape) * np.sqrt(sum((kk / n) ** 2 for kk, n in zip(k, shape)))
    shell = np.floor(r + 0.5).astype(int)
    n = min(shape) // 2 + 1
    out = np.zeros(n)
    for q in range(n):
        sel = shell == q
        num = np.real(np.sum(fa[sel] * np.conj(fb[sel])))
        den = np.sqrt(np.sum(np.abs(fa[sel]) ** 2) * np.sum(np.abs(fb[sel]) ** 2))
        out[q] = num / den if den > 0 else 0.0
    return out


def test_cross_fsc_equals_numpy_float64_fsc():
    rng = np.random.default_rng(11)
    s = signal(rng)
    e, o = halves(rng, s, 1.0, 1.3)
    ge, go = gauss(e, 0.8), gauss(o, 0.8)
    res = tf.score_maps(e, o, {"g": tf.HalfMaps(ge, go, "test")}, whole_region(), n_boot=50)
    want = 0.5 * (numpy_fsc(ge, o) + numpy_fsc(go, e))
    np.testing.assert_allclose(res.rows["g"].cross_fsc, want, atol=1e-10)
    np.testing.assert_allclose(res.half_fsc, numpy_fsc(e, o), atol=1e-10)
    np.testing.assert_allclose(res.rows["raw"].cross_fsc, numpy_fsc(e, o), atol=1e-10)


def _nosignal_case(seed: int = 5):
    """A smooth signal (nothing shared at high frequency) and white noise halves."""
    rng = np.random.default_rng(seed)
    s = signal(rng, smooth=3.0, amp=2.0)
    e, o = halves(rng, s)
    return rng, s, e, o


def test_lowpass_passes_the_hallucination_checks():
    _, s, e, o = _nosignal_case()
    res = tf.score_maps(e, o, {"gaussian": tf.HalfMaps(gauss(e, 1.5), gauss(o, 1.5), "test")}, whole_region(),
                        n_boot=100)
    assert res.nosignal_shells, "the case needs shells without shared signal"
    row = res.rows["gaussian"]
    assert row.flags == []
    assert row.hallucinated_power is not None and row.hallucinated_power <= tf.HALLUCINATION_POWER
    assert row.leak_excess < 0


def test_fixed_pattern_is_flagged_as_hallucinated_power():
    rng, s, e, o = _nosignal_case()
    pattern = 0.6 * rng.standard_normal(SHAPE)  # the same invented texture added to both halves' maps
    res = tf.score_maps(e, o, {"gaussian": tf.HalfMaps(gauss(e, 1.5), gauss(o, 1.5), "test"),
                               "pattern": tf.HalfMaps(gauss(e, 1.5) + pattern, gauss(o, 1.5) + pattern, "test")},
                        whole_region(), n_boot=100, clean=s)
    row = res.rows["pattern"]
    assert "hallucinated power" in row.flags and not res.rows["gaussian"].flags
    assert row.p_beats_gaussian == 0.0  # the same Gaussian plus invented texture: worse in every resample
    assert row.hallucinated_power == pytest.approx(0.36, rel=0.25)  # |pattern|² / noise power


def test_map_that_saw_the_other_half_is_flagged_as_leak():
    """An 'overfitted' map: g(e) carries part of the odd half's noise (and g(o) of the even's). Its estimated
    gain is far too optimistic, which the leak check and the removed-part correlation expose."""
    _, s, e, o = _nosignal_case()
    ge = gauss(e, 1.5) + 0.6 * (o - gauss(o, 1.5))
    go = gauss(o, 1.5) + 0.6 * (e - gauss(e, 1.5))
    res = tf.score_maps(e, o, {"leaky": tf.HalfMaps(ge, go, "test")}, whole_region(), n_boot=100, clean=s)
    row = res.rows["leaky"]
    assert "leak" in row.flags
    assert "removed part correlates with the other half" in row.flags
    assert row.gain_db is None or row.gain_db > row.true["true_gain_db"] + 1.0


def test_raw_row_is_the_identity():
    _, s, e, o = _nosignal_case()
    res = tf.score_maps(e, o, {}, whole_region(), n_boot=50, clean=s)
    raw = res.rows["raw"]
    assert raw.gain_db == pytest.approx(0.0, abs=1e-12)
    assert raw.true["true_gain_db"] == pytest.approx(0.0, abs=1e-12)
    assert res.mse_raw_est == pytest.approx(np.mean((e - o) ** 2) / 4, rel=1e-12)


@pytest.mark.parametrize("mode", ensemble.COMBINE_MODES)
def test_combine_halves_mean_is_the_combined_map(mode):
    rng = np.random.default_rng(21)
    s = signal(rng, shape=(24, 32, 32))
    e, o = halves(rng, s)
    fe, fo = gauss(e, 1.0), gauss(o, 1.0) + 0.01 * rng.standard_normal(s.shape)
    ge, go, _ = ensemble.combine_halves(fe, fo, e, o, mode, (-60.0, 60.0))
    want = ensemble.combine_outputs([fe.astype(np.float32), fo.astype(np.float32)], e, o, mode, (-60.0, 60.0))
    np.testing.assert_allclose((ge.astype(np.float64) + go) / 2, want, atol=2e-5 * np.abs(want).max())


def test_uncertainty_map_matches_reference():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((40, 20, 24)), rng.standard_normal((40, 20, 24))
    u = tf.uncertainty_map(a, b, window=5, slab=7)  # slabs smaller than the volume: the halo must be right
    ref = np.sqrt(ndimage.uniform_filter(((a - b) / 2) ** 2, size=5, mode="reflect"))
    np.testing.assert_allclose(u, ref, rtol=1e-5, atol=1e-6)
    assert u.dtype == np.float32


def test_holdout_parsing_and_errors():
    r = tf.parse_holdout("y:8:40", SHAPE)
    assert r.box == ((0, 32), (8, 40), (0, 48)) and r.n_voxels == 32 * 32 * 48
    with pytest.raises(InputError, match="outside the map"):
        tf.parse_holdout("x:40:60", SHAPE)
    with pytest.raises(InputError, match="AXIS:START:STOP"):
        tf.parse_holdout("y=3", SHAPE)
    with pytest.raises(InputError, match="records no held-out slab"):
        tf.holdout_from_config({}, SHAPE)
    h = tf.holdout_from_config({"holdout": [{"axis": 2, "start": 30, "stop": 48, "shape": list(SHAPE)}]}, SHAPE)
    assert h.box[2] == (30, 48)
    with pytest.raises(InputError, match="trained on tomograms of shape"):
        tf.holdout_from_config({"holdout": [{"axis": 2, "start": 30, "stop": 48, "shape": [1, 2, 3]}]}, SHAPE)
    m = np.zeros(SHAPE)
    m[4:10, 5:7, 1:3] = 1
    m[5, 5, 1] = 0
    mr = tf.mask_region(m, SHAPE)
    assert mr.box == ((4, 10), (5, 7), (1, 3)) and mr.n_voxels == m.sum()
    with pytest.raises(InputError, match="selects no voxel"):
        tf.mask_region(np.zeros(SHAPE), SHAPE)


def test_holdout_of_several_tomograms_is_found_by_fingerprint():
    from cryorestore.data import volume_fingerprint

    rng = np.random.default_rng(9)
    a, b = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    cfg = {"even": ["x/even.mrc", "y/even.mrc"],  # same names, same shapes: only the content tells them apart
           "holdout": [{"axis": 1, "start": 30, "stop": 40, "shape": list(SHAPE), "fingerprint": volume_fingerprint(a)},
                       {"axis": 1, "start": 20, "stop": 40, "shape": list(SHAPE), "fingerprint": volume_fingerprint(b)}]}
    assert tf.holdout_from_config(cfg, SHAPE, even_data=b).box[1] == (20, 40)
    assert tf.holdout_from_config(cfg, SHAPE, even_data=a).box[1] == (30, 40)
    with pytest.raises(InputError, match="unambiguously"):
        tf.holdout_from_config(cfg, SHAPE, even_data=rng.standard_normal(SHAPE))


def _overfit_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "overfit_truthfree.py"
    spec = importlib.util.spec_from_file_location("overfit_truthfree", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fitted_filter_matches_its_least_squares_definition():
    """benchmarks/overfit_truthfree.py: the gain of each cube of Fourier coefficients is the real K minimising
    Σ |K E − O|² + |K O − E|² over the cube (float64 reference: an explicit least-squares solve per cube)."""
    fit = _overfit_module().fitted_filter_halves
    rng = np.random.default_rng(31)
    shape = (8, 10, 12)
    s = signal(rng, shape=shape, smooth=1.0)
    e, o = halves(rng, s)
    fe, fo = np.fft.fftn(e), np.fft.fftn(o)
    ge, go, k = fit(e, o, 1)
    for idx in [(0, 0, 0), (1, 2, 3), (7, 9, 11), (4, 5, 6)]:
        a = np.array([[fe[idx].real], [fe[idx].imag], [fo[idx].real], [fo[idx].imag]])
        y = np.array([fo[idx].real, fo[idx].imag, fe[idx].real, fe[idx].imag])
        assert k[idx] == pytest.approx(np.linalg.lstsq(a, y, rcond=None)[0][0], rel=1e-10)
    np.testing.assert_allclose(ge, np.real(np.fft.ifftn(k * fe)), atol=1e-12)
    np.testing.assert_allclose(go, np.real(np.fft.ifftn(k * fo)), atol=1e-12)
    # one gain for a 3³ cube (wrapping): the least-squares solve over its 27 coefficients
    _, _, k3 = fit(e, o, 3)
    idx = (0, 4, 11)
    cube = [((idx[0] + a) % shape[0], (idx[1] + b) % shape[1], (idx[2] + c) % shape[2])
            for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]
    a = np.concatenate([[[fe[j].real], [fe[j].imag], [fo[j].real], [fo[j].imag]] for j in cube])
    y = np.concatenate([[fo[j].real, fo[j].imag, fe[j].real, fe[j].imag] for j in cube])
    assert k3[idx] == pytest.approx(np.linalg.lstsq(a, y, rcond=None)[0][0], rel=1e-10)


def test_filter_fitted_on_the_region_is_flagged():
    """A filter with a gain per Fourier coefficient (or per 2³ of them) fitted on the scored region from both
    halves — an N2N fit that memorised the region — is flagged as a leak, and its estimate is far too
    optimistic; the same maps with the gain fitted elsewhere (on an independent pair of halves) are not
    flagged. (A fit with one gain per 8³ coefficients passes unflagged with 2.3 dB of optimism on this
    61,440-voxel case: the checks' limit, reported in benchmarks/RESULTS.md, "Truth-free score: F2F validation".)"""
    fit = _overfit_module().fitted_filter_halves
    rng, s, e, o = _nosignal_case()
    e2, o2 = halves(rng, s)  # an independent pair: a gain fitted there does not know e's and o's noise
    _, _, k_elsewhere = fit(e2, o2, 1)
    maps = {f"b{b}": tf.HalfMaps(*fit(e, o, b)[:2], "test") for b in (1, 2)}
    maps["elsewhere"] = tf.HalfMaps(np.real(np.fft.ifftn(k_elsewhere * np.fft.fftn(e))),
                                    np.real(np.fft.ifftn(k_elsewhere * np.fft.fftn(o))), "test")
    res = tf.score_maps(e, o, maps, whole_region(), n_boot=100, clean=s)
    for b in ("b1", "b2"):
        row = res.rows[b]
        assert "leak" in row.flags, b
        assert row.gain_db is None or row.gain_db > row.true["true_gain_db"] + 3.0, b
    assert "removed part correlates with the other half" in res.rows["b1"].flags
    assert "leak" not in res.rows["elsewhere"].flags


def test_score_states_the_halves_assumption():
    """score.json and the printout say that the estimate assumes halves sharing their signal (F2F) and how
    far off it is with T2T halves."""
    _, s, e, o = _nosignal_case()
    res = tf.score_maps(e, o, {}, whole_region(), n_boot=20)
    assert res.to_dict()["assumption"] == tf.HALVES_ASSUMPTION
    assert "F2F" in tf.HALVES_ASSUMPTION and "T2T" in tf.HALVES_ASSUMPTION and "dB" in tf.HALVES_ASSUMPTION
    assert "note: " + tf.HALVES_ASSUMPTION in tf.format_table(res)


def test_leak_decomposition_separates_what_the_map_knows_of_the_other_noise():
    """benchmarks/leak_decomposition.py: with shared signal c (F2F), est − true − leak is
    ⟨c, n_e + n_o⟩ + ⟨n_e·n_o⟩ for every map (it does not depend on the map), and the leak term of a map that
    carries part of the other half's noise is that part's power (float64 references)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "leak_decomposition.py"
    spec = importlib.util.spec_from_file_location("leak_decomposition", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(41)
    shape = (16, 20, 24)
    c = signal(rng, shape=shape)
    ne, no = rng.standard_normal(shape), 0.7 * rng.standard_normal(shape)
    e, o = c + ne, c + no
    rest = np.mean(c * (ne + no)) + np.mean(ne * no)
    honest = mod.decompose(e, o, c, c, c, gauss(e, 1.0), gauss(o, 1.0))
    leaky = mod.decompose(e, o, c, c, c, gauss(e, 1.0) + 0.5 * no, gauss(o, 1.0) + 0.5 * ne)
    for r in (honest, leaky):
        assert r["est_minus_true"] - r["leak"] == pytest.approx(rest, abs=1e-12)
    ge, go = gauss(e, 1.0), gauss(o, 1.0)
    res = tf.score_maps(e, o, {"g": tf.HalfMaps(ge, go, "test")}, whole_region(shape), n_boot=10, clean=c)
    assert honest["est"] == pytest.approx(res.rows["g"].mse_est, rel=1e-9)
    assert honest["true"] == pytest.approx(res.rows["g"].true["true_mse"], rel=1e-9)
    want = -0.5 * (np.mean(no * no) + np.mean(ne * ne)) - np.mean(gauss(e, 1.0) * no) - np.mean(gauss(o, 1.0) * ne)
    assert leaky["leak"] == pytest.approx(want, rel=1e-12)
    assert abs(honest["leak"]) < 0.05 * abs(leaky["leak"])


@pytest.mark.slow
def test_unet_that_memorised_its_crop_is_flagged(tmp_path):
    """benchmarks/overfit_truthfree.py --unet: a 0.6 M-parameter U-Net trained by N2N on a 16³ crop with
    nothing held out learns the other half's noise (training loss well below the noise level) and the score
    on that crop flags it as a leak."""
    from cryorestore import io

    rng = np.random.default_rng(51)
    s = signal(rng, shape=(24, 32, 32), smooth=2.0, amp=1.0)
    e, o = halves(rng, s)
    for name, v in (("even", e), ("odd", o), ("clean", s)):
        io.write_mrc(tmp_path / f"{name}.mrc", v.astype(np.float32), 10.0)
    doc = _overfit_module().unet_memorise(tmp_path, (slice(4, 20), slice(8, 24), slice(8, 24)), 16, [60], n_boot=50)
    (row,) = doc["rows"]
    assert row["loss_over_noise"] < 0.5
    assert "leak" in row["flags"]
    assert row["est"] is None or row["est"] > row["true"] + 3.0


def test_model_halves_copies_the_box_of_memory_mapped_halves_and_releases_their_pages(tmp_path, monkeypatch):
    """The network must get its own copy of the grown box, never a view of the memory map (np.asarray of a
    float32 memmap is a view: tile reads then leave the halves' pages resident, +1 GiB in evaluate at
    256×1024×1024), and the halves' pages are released before it runs. Same maps as from in-memory halves."""
    from test_predict import _model_dir

    from cryorestore import blockwise, predict
    from cryorestore.modeldir import load_model_dir

    rng = np.random.default_rng(11)
    e_arr, o_arr = (rng.standard_normal(SHAPE).astype(np.float32) for _ in range(2))
    e_map, o_map = (np.memmap(tmp_path / f"{n}.raw", np.float32, "w+", shape=SHAPE) for n in "eo")
    e_map[:], o_map[:] = e_arr, o_arr
    e_map, o_map = (np.memmap(tmp_path / f"{n}.raw", np.float32, "r", shape=SHAPE) for n in "eo")
    assert blockwise._mapping(e_map[:4]) is not None  # a view of the map is backed by it too
    loaded = load_model_dir(_model_dir(tmp_path / "m"))
    region = tf.slab_region(SHAPE, 1, 28, 40)
    want, _ = tf.model_halves(loaded, e_arr, o_arr, region, "mean", "none", tile=16)

    events = []
    real_predict, real_release = predict.predict_volume, blockwise.release_pages
    monkeypatch.setattr(predict, "predict_volume",
                        lambda lo, v, **k: events.append(("predict", not any(np.may_share_memory(v, m) for m in (e_map, o_map))))
                        or real_predict(lo, v, **k))
    monkeypatch.setattr(blockwise, "release_pages",
                        lambda v: events.append(("release", blockwise._mapping(v) is not None)) or real_release(v))
    got, _ = tf.model_halves(loaded, e_map, o_map, region, "mean", "none", tile=16)
    np.testing.assert_allclose(got.g_even, want.g_even, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.g_odd, want.g_odd, rtol=1e-6, atol=1e-6)
    assert [ev for ev in events if ev[0] == "predict"] == [("predict", True)] * 2  # own copies, no map views
    first = events.index(("predict", True))
    assert events[:first].count(("release", True)) >= 2  # both halves' pages released before the network
