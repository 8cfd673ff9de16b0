"""Membrane segmentation: Hessian eigenvalues, hysteresis, Dice, and the simulator's membranes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cryorestore import simulate
from cryorestore.evaluate import segmentation


def test_hessian_eigenvalues_of_a_quadratic():
    # f = -3 z² + 0.5 y² + x·y: Hessian [[-6,0,0],[0,1,1],[0,1,0]] everywhere (away from the borders)
    g = np.arange(-12, 13, dtype=np.float64)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    f = -3 * z**2 + 0.5 * y**2 + x * y
    ev = segmentation.hessian_eigenvalues(f, 1.0)[12, 12, 12]
    ref = np.linalg.eigvalsh(np.array([[-6.0, 0, 0], [0, 1, 1], [0, 1, 0]]))
    np.testing.assert_allclose(ev, ref, atol=1e-2)  # truncated discrete Gaussian derivatives: ~0.1 % error


def test_surfaceness_prefers_sheets_over_lines_and_blobs():
    g = np.arange(40, dtype=np.float64)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    sheet = np.exp(-((z - 8) ** 2) / 2)
    line = np.exp(-((z - 26) ** 2 + (y - 26) ** 2) / 2)
    blob = np.exp(-((z - 30) ** 2 + (y - 9) ** 2 + (x - 9) ** 2) / 2)
    s = segmentation.surfaceness((sheet + line + blob).astype(np.float32), 10.0, thickness=20.0)
    assert s[8, 20, 20] > 5 * max(s[26, 26, 20], s[30, 9, 9])


def test_hysteresis_and_dice_by_hand():
    s = np.zeros((1, 1, 12), dtype=np.float32)
    s[0, 0, 1:4] = [0.4, 0.9, 0.4]  # weak-strong-weak: kept
    s[0, 0, 6:9] = [0.4, 0.4, 0.4]  # weak only: dropped
    s[0, 0, 10] = 0.95  # strong single voxel
    m = segmentation.hysteresis(s, 0.3, 0.6)
    assert m[0, 0].tolist() == [False, True, True, True, False, False, False, False, False, False, True, False]
    assert segmentation.hysteresis(s, 0.3, 0.6, min_size=2)[0, 0, 10] == False  # noqa: E712
    a = np.array([1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 0, 1, 1], bool)
    assert segmentation.dice(a, b) == pytest.approx(2 * 2 / 6)


def test_segmentation_of_noiseless_truth_reaches_dice_08():
    ph = simulate.make_phantom((40, 96, 96), 10.0, np.random.default_rng(3))
    assert ph.membranes.sum() > 1000
    s, mask = segmentation.segment_membranes(ph.volume, ph.voxel_size)
    assert segmentation.dice(mask, ph.membranes) >= 0.8


def test_dice_matches_scipy_on_random_masks():
    from scipy.spatial import distance

    rng = np.random.default_rng(7)
    for p in (0.05, 0.3, 0.7):
        a = rng.random((9, 11, 13)) < p
        b = rng.random((9, 11, 13)) < p
        ref = 1.0 - distance.dice(a.ravel(), b.ravel())  # scipy gives the dissimilarity
        assert segmentation.dice(a, b) == pytest.approx(ref, rel=1e-12)
    with pytest.raises(segmentation.InputError):
        segmentation.dice(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool))


def test_sheet_saliency_matches_float64_eigh():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(12, 10, 14, 3, 3))
    t = (a + np.swapaxes(a, -1, -2)).astype(np.float32)
    s, c, e = segmentation.sheet_saliency(t, 1.3)
    sm = np.empty(t.shape)
    for i in range(3):
        for j in range(3):
            sm[..., i, j] = ndimage.gaussian_filter(t[..., i, j].astype(np.float64), 1.3, mode="reflect")
    mu, vec = np.linalg.eigh(sm)
    ref_s = np.maximum(mu[..., 2] - mu[..., 1], 0)
    np.testing.assert_allclose(s, ref_s, atol=1e-5)
    pos = mu[..., 2] > 1e-3
    np.testing.assert_allclose(c[pos], (ref_s / mu[..., 2])[pos], rtol=1e-3, atol=1e-4)
    # normals agree up to sign where the top eigenvalue is well separated
    sep = (mu[..., 2] - mu[..., 1]) > 0.05
    dots = np.abs(np.einsum("kzyx,zyxk->zyx", e, vec[..., :, 2]))
    assert np.all(dots[sep] > 0.999)


def test_mid_surface_is_the_crest_of_a_tilted_ridge():
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in (20, 20, 20)), indexing="ij")
    nrm = np.array([2.0, 1.0, 0.5]) / np.linalg.norm([2.0, 1.0, 0.5])
    d = nrm[0] * (z - 10) + nrm[1] * (y - 10) + nrm[2] * (x - 10)
    s = np.exp(-d**2 / 8.0).astype(np.float32)
    normal = np.broadcast_to(nrm[:, None, None, None], (3,) + s.shape).astype(np.float32)
    ridge = segmentation.mid_surface(s, normal)
    assert np.all(np.abs(d[ridge]) <= 0.5 + 1e-6)  # only the crest's voxels (neighbours at ±1 along the normal)
    assert ridge[np.abs(d) < 0.3].all()


def _vesicle_and_blob(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map, truth mask |d| ≤ 22.5 Å, blob region) at 10 Å: a two-leaflet vesicle and a solid blob of similar density."""
    vs = 10.0
    shape = (48, 80, 80)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    r = np.sqrt((z - 24) ** 2 + (y - 44) ** 2 + (x - 44) ** 2)
    d_a = (r - 16.0) * vs  # signed distance from the mid-surface, Å
    g = lambda u, s: np.exp(-(u**2) / (2 * s**2))  # noqa: E731
    vol = 1.0 * (g(d_a - 19.0, 5.0) + g(d_a + 19.0, 5.0)) - 0.3 * g(d_a, 7.0)  # two leaflets, lighter core
    rb = np.sqrt((z - 24) ** 2 + (y - 12) ** 2 + (x - 12) ** 2)
    vol += 1.0 / (1.0 + np.exp((rb - 6.0) / 0.7))  # blob of radius 60 Å, density 1 like a leaflet
    rng = np.random.default_rng(seed)
    vol += ndimage.gaussian_filter(rng.normal(size=shape), 0.7) * 0.1  # weak ice texture
    return vol.astype(np.float32), np.abs(d_a) <= 22.5, rb <= 9.0


def test_segmentation_finds_a_two_leaflet_vesicle_and_ignores_a_blob():
    vol, truth, blob = _vesicle_and_blob(0)
    s, mask = segmentation.segment_membranes(vol, 10.0)
    assert segmentation.dice(mask, truth) >= 0.85
    assert not mask[blob].any()
    # dark polarity on the inverted map gives the same mask
    _, mask_dark = segmentation.segment_membranes(-vol, 10.0, polarity="dark")
    assert np.array_equal(mask, mask_dark)


@pytest.mark.slow
def test_segmentation_uses_angstrom_scales():
    # the same specimen sampled at 5 Å (twice the voxels per axis) is found as well
    vol, truth, _ = _vesicle_and_blob(1)
    fine = ndimage.zoom(vol, 2, order=1)
    tf = ndimage.zoom(truth.astype(np.float32), 2, order=0) > 0.5
    _, mask = segmentation.segment_membranes(fine, 5.0)
    assert segmentation.dice(mask, tf) >= 0.75


def test_segmentation_rejects_nans_and_bad_options():
    vol, _, _ = _vesicle_and_blob(2)
    vol[3, 3, 3] = np.nan
    with pytest.raises(segmentation.InputError, match="NaN"):
        segmentation.segment_membranes(vol, 10.0)
    with pytest.raises(segmentation.InputError):
        segmentation.segment_membranes(np.zeros((8, 8, 8), np.float32), 10.0, low=5.0, high=1.0)
    with pytest.raises(segmentation.InputError):
        segmentation.segment_membranes(np.zeros((8, 8, 8), np.float32), 10.0, polarity="up")


def test_segment_cli_bad_input_exits_2(tmp_path, cli):
    from cryorestore import io

    txt = tmp_path / "not.mrc"
    txt.write_text("this is not an MRC file\n")
    r = cli("segment", txt, "--out", tmp_path / "seg.mrc")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    vol = np.ones((16, 16, 16), np.float32)
    vol[2, 2, 2] = np.nan
    p = io.write_mrc(tmp_path / "nan.mrc", vol, 10.0)
    r = cli("segment", p, "--out", tmp_path / "seg.mrc")
    assert r.returncode == 2 and "NaN" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "seg.mrc").exists()
