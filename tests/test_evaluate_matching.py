"""Template matching, rotation sampling and precision-recall against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from cryorestore import geometry, io, simulate
from cryorestore.evaluate import angles, matching, pr


# ------------------------------------------------------------------ rotation sampling
def test_uniform_eulers_count_and_coverage():
    e = angles.uniform_eulers(15.0)
    assert 4000 <= len(e) <= 4500
    rng = np.random.default_rng(0)
    q = geometry.matrix_to_euler(geometry.random_rotations(200, rng))
    a = geometry.euler_to_matrix(e)
    b = geometry.euler_to_matrix(q)
    tr = np.einsum("rij,nij->nr", a, b)
    nearest = np.degrees(np.arccos(np.clip((tr - 1) / 2, -1, 1))).min(axis=1)
    assert nearest.max() < 15.0  # every orientation lies within one step of a sample
    # uniform: the mean nearest distance is far below the step and the samples are not clustered
    assert nearest.mean() < 9.0


def test_angular_distance_known_rotation():
    assert angles.angular_distance([10.0, 20.0, 30.0], [10.0, 20.0, 30.0]) == pytest.approx(0.0, abs=1e-6)
    assert angles.angular_distance([0.0, 0.0, 0.0], [0.0, 0.0, 37.0]) == pytest.approx(37.0)
    assert angles.angular_distance([0.0, 0.0, 0.0], [0.0, 90.0, 0.0]) == pytest.approx(90.0)


# ------------------------------------------------------------------ building blocks
def test_pruned_rfftn_equals_padded_rfftn():
    rng = np.random.default_rng(1)
    boxes = torch.from_numpy(rng.normal(size=(2, 6, 6, 6)))
    shape = (10, 14, 12)
    pad = torch.zeros((2,) + shape, dtype=torch.float64)
    pad[:, :6, :6, :6] = boxes
    ref = np.fft.rfftn(pad.numpy(), axes=(1, 2, 3))
    np.testing.assert_allclose(matching.pruned_rfftn(boxes, shape).numpy(), ref, rtol=1e-10, atol=1e-10)


def test_local_statistics_brute_force():
    rng = np.random.default_rng(2)
    tomo = rng.normal(size=(12, 14, 16))
    mask = matching.spherical_mask(7, 2.5)
    mu, sd, n = matching.local_statistics(torch.from_numpy(tomo), torch.from_numpy(mask))
    c = 3
    offs = np.argwhere(mask > 0) - c
    for p in [(0, 0, 0), (5, 7, 3), (11, 13, 15), (6, 2, 9)]:
        vals = np.array([tomo[tuple((np.array(p) + o) % tomo.shape)] for o in offs])
        assert n == len(offs)
        assert float(mu[p]) == pytest.approx(vals.mean(), abs=1e-9)
        assert float(sd[p]) == pytest.approx(vals.std(), abs=1e-9)


def _brute_ncc(tomo, template, euler, tilt_range, radius, p):
    """NCC at voxel p, computed directly in numpy/scipy (rotation by trilinear affine_transform)."""
    n = template.shape[0]
    c = n // 2
    a = geometry.xyz_to_zyx(geometry.euler_to_matrix(np.asarray(euler)))
    t = geometry.rotate_volume(template.astype(np.float64), a, order=1)
    if tilt_range is not None:
        fz, fy, fx = (np.fft.fftfreq(k) for k in (n, n, n))
        kz, kx = np.meshgrid(fz, fx, indexing="ij")
        ang = np.degrees(np.arctan2(kz, kx))
        ang = np.where(ang > 90, ang - 180, np.where(ang <= -90, ang + 180, ang))
        # positive tilt turns +x toward +z: tilts [a, b] measure the line angles [-b, -a]
        w = ((ang >= -tilt_range[1] - 1e-6) & (ang <= -tilt_range[0] + 1e-6)) | ((kz == 0) & (kx == 0))
        t = np.fft.ifftn(np.fft.fftn(t) * w[:, None, :]).real
    m = matching.spherical_mask(n, radius) > 0
    offs = np.argwhere(m) - c
    tv = t[m]
    tv = (tv - tv.mean()) / tv.std()
    f = np.array([tomo[tuple((np.array(p) + o) % tomo.shape)] for o in offs], dtype=np.float64)
    return float(np.sum(tv * (f - f.mean())) / (len(f) * f.std()))


def test_ncc_matches_brute_force_with_wedge():
    rng = np.random.default_rng(3)
    tomo = rng.normal(size=(16, 20, 18)).astype(np.float32)
    template = rng.normal(size=(9, 9, 9)).astype(np.float32)
    eulers = np.array([[20.0, 40.0, 70.0], [200.0, 110.0, 15.0]])
    res = matching.match_template(tomo, template, eulers[:1], tilt_range=(-50.0, 55.0), mask_radius=3.6, progress=False)
    for p in [(8, 10, 9), (3, 17, 2), (15, 0, 11)]:
        assert float(res.scores[p]) == pytest.approx(_brute_ncc(tomo, template, eulers[0], (-50.0, 55.0), 3.6, p), abs=2e-4)
    res2 = matching.match_template(tomo, template, eulers, mask_radius=3.6, progress=False)
    for p in [(8, 10, 9), (1, 2, 3)]:
        ref = [_brute_ncc(tomo, template, e, None, 3.6, p) for e in eulers]
        assert float(res2.scores[p]) == pytest.approx(max(ref), abs=2e-4)
        assert int(res2.best_index[p]) == int(np.argmax(ref))


def test_ncc_of_template_with_itself_is_one():
    rng = np.random.default_rng(4)
    tomo = rng.normal(size=(24, 28, 26)).astype(np.float32)
    p = np.array([9, 15, 12])
    template = tomo[p[0] - 5: p[0] + 6, p[1] - 5: p[1] + 6, p[2] - 5: p[2] + 6].copy()  # centre voxel 5 = p
    res = matching.match_template(tomo, template, np.zeros((1, 3)), mask_radius=5.0, progress=False)
    assert float(res.scores[tuple(p)]) == pytest.approx(1.0, abs=1e-5)
    assert float(res.scores.max()) <= 1.0 + 1e-5
    pk, sc = matching.find_peaks(res.scores, 1, 4)
    assert tuple(pk[0]) == tuple(p)


# ------------------------------------------------------------------ precision-recall
def test_precision_recall_hand_computed():
    truth = np.array([[10, 10, 10], [30, 30, 30], [50, 50, 50]], dtype=float)
    peaks = np.array([[10, 10, 11], [20, 20, 20], [30, 32, 30], [10, 11, 10], [70, 70, 70]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    r = pr.precision_recall(peaks, scores, truth, tolerance=3.0)
    # in score order: TP (d=1), FP, TP (d=2), FP (truth 0 already taken), FP
    np.testing.assert_array_equal(r.matched, [True, False, True, False, False])
    np.testing.assert_allclose(r.precision, [1, 1 / 2, 2 / 3, 2 / 4, 2 / 5])
    np.testing.assert_allclose(r.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    f1 = [2 * p * q / (p + q) for p, q in zip(r.precision, r.recall)]
    np.testing.assert_allclose(r.f1, f1)
    assert r.peak_f1 == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert r.peak_f1_threshold == pytest.approx(0.7)
    assert r.pr_auc == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert r.mean_tp_distance_at_peak_f1 == pytest.approx(1.5)
    assert pr.precision_recall(peaks[:0], scores[:0], truth, 3.0).pr_auc == 0.0


def test_find_peaks_min_distance():
    s = np.zeros((20, 20, 20), dtype=np.float32)
    s[5, 5, 5], s[5, 5, 8], s[15, 15, 15] = 1.0, 0.9, 0.8
    pk, sc = matching.find_peaks(s, 10, min_distance=4)
    assert [tuple(p) for p in pk] == [(5, 5, 5), (15, 15, 15)]
    pk, _ = matching.find_peaks(s, 10, min_distance=2)
    assert len(pk) == 3


# ------------------------------------------------------------------ on a noiseless map of placed particles
@pytest.fixture(scope="module")
def placed_match():
    """Three copies of the simulator's template, rotated as the simulator does, in an otherwise empty map."""
    tmpl = simulate.make_template(32)
    vol = np.zeros((32, 72, 96), dtype=np.float32)
    coords = np.array([[16, 18, 20], [16, 50, 48], [16, 24, 76]], dtype=float)
    true_eul = geometry.matrix_to_euler(geometry.random_rotations(3, np.random.default_rng(7)))
    for p, e in zip(coords.astype(int), true_eul):
        rot = geometry.rotate_volume(tmpl, geometry.xyz_to_zyx(geometry.euler_to_matrix(e)), order=1)
        lo = p - 16
        vol[lo[0]:lo[0] + 32, lo[1]:lo[1] + 32, lo[2]:lo[2] + 32] += rot
    step = 30.0
    res = matching.match_template(vol, tmpl, angles.uniform_eulers(step), progress=False)
    return coords, true_eul, res, step


def test_matching_noiseless_truth_finds_every_particle(placed_match):
    coords, true_eul, res, step = placed_match
    pk, sc = matching.find_peaks(res.scores, 3 * len(coords), res.mask_radius)
    r = pr.precision_recall(pk, sc, coords, tolerance=3.0)
    assert r.recall[-1] == 1.0 and r.peak_f1 == 1.0
    d, idx = cKDTree(pk).query(coords)
    assert d.max() <= 1.0
    found = res.eulers[res.best_index[tuple(pk[idx].T)]]
    assert angles.angular_distance(found, true_eul).max() < step
