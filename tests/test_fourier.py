"""Fourier tools against independent float64 numpy references on random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryorestore import fourier

SHAPES = [(16, 16, 16), (15, 15, 15), (12, 18, 21), (20, 14, 17), (9, 24, 16)]


# ------------------------------------------------------------------ references (numpy, float64)
def np_shell_index_full(shape):
    """Shell of every full-grid coefficient, by explicit integer frequency indices."""
    m = min(shape)
    idx = np.indices(shape).astype(np.float64)
    r2 = np.zeros(shape)
    for axis, n in enumerate(shape):
        k = np.where(idx[axis] <= n // 2, idx[axis], idx[axis] - n)  # signed integer frequency
        if n % 2 == 0:
            k = np.where(idx[axis] == n // 2, -n // 2, k)
        r2 += (k / n) ** 2
    return np.floor(np.sqrt(r2) * m + 0.5).astype(int)


def np_fsc_loop(a, b):
    """Plain float64 FSC: loop over shells on the full FFT grid."""
    f1, f2 = np.fft.fftn(a), np.fft.fftn(b)
    shells = np_shell_index_full(a.shape)
    n = min(a.shape) // 2 + 1
    out = np.zeros(n)
    for q in range(n):
        sel = shells == q
        num = np.sum(f1[sel] * np.conj(f2[sel])).real
        den = np.sqrt(np.sum(np.abs(f1[sel]) ** 2) * np.sum(np.abs(f2[sel]) ** 2))
        out[q] = num / den
    return out


def np_wedge_full(shape, tmin, tmax, rot=None):
    """Brute force per coefficient: angle of (kx, kz) after un-rotating the frequency vector."""
    out = np.zeros(shape)
    fz, fy, fx = (np.fft.fftfreq(n) for n in shape)
    rt = np.eye(3) if rot is None else np.asarray(rot).T
    for i, kz in enumerate(fz):
        for j, ky in enumerate(fy):
            for l, kx in enumerate(fx):
                k = rt @ np.array([kz, ky, kx])
                kz_, kx_ = k[0], k[2]
                if abs(kz_) < 1e-12 and abs(kx_) < 1e-12:
                    out[i, j, l] = 1
                    continue
                ang = np.degrees(np.arctan2(kz_, kx_))
                while ang > 90:
                    ang -= 180
                while ang <= -90:
                    ang += 180
                # positive tilt turns +x toward +z: tilt θ measures the line at angle −θ
                out[i, j, l] = float(-tmax - 1e-6 <= ang <= -tmin + 1e-6)
    return out


# ------------------------------------------------------------------ shells
@pytest.mark.parametrize("shape", SHAPES)
def test_shell_index_matches_reference(shape):
    ref = np_shell_index_full(shape)
    n = fourier.n_shells(shape)
    ref = np.where(ref < n, ref, n)
    full = fourier.shell_index(shape, rfft=False).numpy()
    assert np.array_equal(full, ref)
    half = fourier.shell_index(shape, rfft=True).numpy()
    assert np.array_equal(half, ref[..., : shape[2] // 2 + 1])


def test_shell_frequencies():
    f = fourier.shell_frequencies((32, 40, 48))
    assert len(f) == 17 and f[0] == 0 and np.isclose(f[-1], 0.5)
    assert np.allclose(np.diff(f), 1 / 32)


def test_rfft_weights_reproduce_full_grid_sums():
    rng = np.random.default_rng(1)
    for shape in [(8, 10, 12), (8, 10, 13)]:
        v = rng.normal(size=shape)
        full = np.sum(np.abs(np.fft.fftn(v)) ** 2)
        half = (torch.fft.rfftn(torch.from_numpy(v)).abs() ** 2 * fourier.rfft_weights(shape)).sum().item()
        assert np.isclose(full, half, rtol=1e-12)


# ------------------------------------------------------------------ FSC
@pytest.mark.parametrize("shape", SHAPES)
def test_fsc_matches_numpy_loop(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.normal(size=shape)
    b = 0.7 * a + rng.normal(size=shape)
    got = fourier.fsc(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert np.allclose(got, np_fsc_loop(a, b), atol=1e-10)
    got32 = fourier.fsc(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()
    assert np.allclose(got32, np_fsc_loop(a, b), atol=1e-5)


def test_fsc_with_itself_is_one():
    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.normal(size=(24, 20, 22)))
    assert torch.allclose(fourier.fsc(a, a), torch.ones(fourier.n_shells(a.shape), dtype=torch.float64))


def test_fsc_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(3)
    shape = (32, 32, 32)
    a, b = rng.normal(size=shape), rng.normal(size=shape)
    curve = fourier.fsc(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    counts = np.bincount(np_shell_index_full(shape).ravel(), minlength=17)[:17]
    assert np.all(np.abs(curve[1:]) <= 3 / np.sqrt(counts[1:]))


def test_fsc_batch_equals_per_pair():
    rng = np.random.default_rng(4)
    a = torch.from_numpy(rng.normal(size=(5, 12, 14, 15)))
    b = a + torch.from_numpy(rng.normal(size=(5, 12, 14, 15)))
    batch = fourier.fsc_batch(a, b)
    looped = torch.stack([fourier.fsc(a[i], b[i]) for i in range(5)])
    assert torch.allclose(batch, looped, atol=1e-12)


def test_fsc_fourier_mask_restricts_coefficients():
    rng = np.random.default_rng(5)
    shape = (16, 16, 16)
    a = rng.normal(size=shape)
    b = a + rng.normal(size=shape)
    mask = fourier.missing_wedge_mask(shape, -60, 60)
    got = fourier.fsc(torch.from_numpy(a), torch.from_numpy(b), fourier_mask=mask).numpy()
    # reference: keep only masked coefficients of the full grid
    m_full = np_wedge_full(shape, -60, 60).astype(bool)
    f1, f2 = np.fft.fftn(a), np.fft.fftn(b)
    shells = np_shell_index_full(shape)
    ref = []
    for q in range(9):
        sel = (shells == q) & m_full
        ref.append(np.sum(f1[sel] * np.conj(f2[sel])).real / np.sqrt(np.sum(abs(f1[sel]) ** 2) * np.sum(abs(f2[sel]) ** 2)))
    assert np.allclose(got, ref, atol=1e-10)


# ------------------------------------------------------------------ resolution
def test_resolution_interpolates_first_crossing():
    freqs = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    curve = np.array([1.0, 0.9, 0.6, 0.4, 0.6, 0.1])  # first drop below 0.5 between 0.2 and 0.3
    r = fourier.resolution_at(curve, freqs, 0.5, voxel_size=10.0)
    assert r.crossed and np.isclose(r.frequency, 0.25) and np.isclose(r.angstrom, 40.0)
    r2 = fourier.resolution_at(curve, freqs, 0.143)
    assert np.isclose(r2.frequency, 0.4 + 0.1 * (0.6 - 0.143) / 0.5)
    never = fourier.resolution_at(np.ones(6), freqs, 0.5)
    assert not never.crossed and never.frequency == 0.5


# ------------------------------------------------------------------ missing wedge
@pytest.mark.parametrize("tilts", [(-60, 60), (-54, 60), (-40, 65)])
@pytest.mark.parametrize("shape", [(10, 8, 12), (9, 7, 11)])
def test_wedge_mask_matches_brute_force(shape, tilts):
    ref = np_wedge_full(shape, *tilts)
    full = fourier.missing_wedge_mask(shape, *tilts, rfft=False).numpy()
    assert np.array_equal(full, ref)
    half = fourier.missing_wedge_mask(shape, *tilts, rfft=True).numpy()
    assert np.array_equal(half, ref[..., : shape[2] // 2 + 1])


def test_rotated_wedge_matches_brute_force():
    shape = (10, 12, 9)
    rots = Rotation.random(3, random_state=7).as_matrix()
    got = fourier.missing_wedge_mask(shape, -54, 60, rfft=False, rotations=torch.from_numpy(rots)).numpy()
    for i in range(3):
        assert np.array_equal(got[i], np_wedge_full(shape, -54, 60, rot=rots[i]))
    half = fourier.missing_wedge_mask(shape, -54, 60, rfft=True, rotations=torch.from_numpy(rots)).numpy()
    assert np.array_equal(half, got[..., : shape[2] // 2 + 1])


def test_wedge_mask_is_hermitian_and_full_range_is_all():
    # odd sizes: no Nyquist planes, where ±k are the same coefficient and an asymmetric range
    # cannot be Hermitian-symmetric
    shape = (13, 11, 15)
    m = fourier.missing_wedge_mask(shape, -54, 60, rfft=False).numpy()
    flipped = np.roll(np.flip(m, axis=(0, 1, 2)), 1, axis=(0, 1, 2))  # m(-k)
    assert np.array_equal(m, flipped)
    assert fourier.missing_wedge_mask(shape, -90, 90).min() == 1


def test_bad_tilt_range_rejected():
    with pytest.raises(ValueError, match="makes no sense"):
        fourier.missing_wedge_mask((8, 8, 8), 60, -60)
    with pytest.raises(ValueError):
        fourier.missing_wedge_mask((8, 8, 8), -100, 60)


def test_apply_fourier_mask_matches_numpy():
    rng = np.random.default_rng(8)
    shape = (10, 12, 14)
    v = rng.normal(size=shape)
    m = fourier.missing_wedge_mask(shape, -60, 60, rfft=False).numpy()
    ref = np.fft.ifftn(np.fft.fftn(v) * m).real
    got = fourier.apply_fourier_mask(torch.from_numpy(v), fourier.missing_wedge_mask(shape, -60, 60)).numpy()
    assert np.allclose(got, ref, atol=1e-12)
