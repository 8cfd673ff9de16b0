"""Subtomogram averaging: extraction geometry, averaging the truth at true poses, refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryorestore import fourier, geometry, io, simulate
from cryorestore.evaluate import angles, averaging


@pytest.fixture(scope="module")
def phantom():
    return simulate.make_phantom((48, 128, 128), 10.0, np.random.default_rng(2))


def test_extraction_undoes_rotation_and_subvoxel_shift():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    tmpl = ndimage.gaussian_filter(rng.normal(size=(16, 16, 16)), 1.5)
    tmpl *= averaging.soft_sphere(16, 5.0)
    euler = np.array([30.0, 60.0, -45.0])
    a = geometry.xyz_to_zyx(geometry.euler_to_matrix(euler))
    vol = np.zeros((40, 40, 40))
    rot = geometry.rotate_volume(tmpl, a, order=3)
    vol[12:28, 12:28, 12:28] = rot  # box centre 8 → voxel 20
    shift = np.array([0.3, -0.4, 0.25])
    vol = np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(vol), shift)).real  # particle centre at 20 + shift
    sub = averaging.extract_subtomogram(vol.astype(np.float32), np.array([20.0, 20.0, 20.0]) + shift, euler, 16)
    inner = averaging.soft_sphere(16, 5.0) > 0.5
    corr = np.corrcoef(sub[inner], tmpl[inner])[0, 1]
    assert corr > 0.99
    # the same without the sub-voxel correction is visibly worse
    worse = averaging.extract_subtomogram(vol.astype(np.float32), np.array([20.0, 20.0, 20.0]), euler, 16)
    assert np.corrcoef(worse[inner], tmpl[inner])[0, 1] < corr


def test_average_of_truth_at_true_poses_reproduces_template(phantom):
    coords, eul = io.particle_arrays(phantom.particles)
    assert len(coords) >= 4
    res = averaging.subtomogram_average(phantom.volume, coords, eul, 32, 10.0, np.random.default_rng(0),
                                        reference=phantom.template, progress=False)
    freqs = res.frequencies
    assert np.all(res.fsc_reference[(freqs > 0) & (freqs <= 0.25 + 1e-9)] > 0.9)
    # the half maps are averages of the right particles: FSC of the halves is high to 0.25 as well
    assert np.all(res.fsc_half[(freqs > 0) & (freqs <= 0.25 + 1e-9)] > 0.9)
    assert res.metrics["n_particles"] == len(coords)
    # independent check of the reported curve: fourier.fsc on the soft-masked maps
    soft = averaging.soft_sphere(32, 0.4 * 32)
    ref_curve = fourier.fsc(torch.from_numpy(res.full * soft), torch.from_numpy(phantom.template * soft)).numpy()
    np.testing.assert_allclose(res.fsc_reference, ref_curve, atol=1e-6)


def test_wedge_compensated_average_fills_the_wedge():
    rng = np.random.default_rng(3)
    subs = rng.normal(size=(6, 12, 12, 12))
    eul = geometry.matrix_to_euler(geometry.random_rotations(6, rng))
    w = averaging.particle_wedges(12, eul, (-60.0, 60.0))
    avg = averaging.average(subs, w)
    spec = np.fft.rfftn(subs, axes=(1, 2, 3)).sum(0)
    wsum = w.double().numpy().sum(0)
    expect = np.fft.irfftn(spec / np.maximum(wsum, 0.6), s=(12, 12, 12), axes=(0, 1, 2))
    np.testing.assert_allclose(avg, expect, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(averaging.average(subs), subs.mean(0), rtol=1e-5, atol=1e-6)


def test_half_split_balanced_and_seeded():
    a = averaging.half_split(11, np.random.default_rng(5))
    b = averaging.half_split(11, np.random.default_rng(5))
    assert np.array_equal(a, b) and abs(int(a.sum()) - 11 / 2) <= 0.5


def test_refinement_recovers_perturbed_poses(phantom):
    coords, eul = io.particle_arrays(phantom.particles)
    coords, eul = coords[:3], eul[:3]
    rng = np.random.default_rng(4)
    # perturb by one refinement step about a random axis and one voxel
    from scipy.spatial.transform import Rotation

    small = Rotation.from_rotvec(np.radians(4.0) * np.eye(3)[rng.integers(0, 3, 3)]).as_matrix()
    bad = geometry.matrix_to_euler(small @ geometry.euler_to_matrix(eul))
    bad_c = coords + np.array([1.0, 0.0, -1.0])
    c2, e2, s = averaging.refine(phantom.volume, bad_c, bad, phantom.template, step_deg=4.0, n_steps=1, max_shift=2,
                                 progress=False)
    assert np.abs(c2 - coords).max() <= 0.0 + 1e-9
    assert angles.angular_distance(e2, eul).max() < angles.angular_distance(bad, eul).min()
    assert np.all(s > 0.8)
