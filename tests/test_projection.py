"""Forward projection and weighted back-projection against analytic and scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryorestore import fourier, projection
from cryorestore.errors import InputError


def centred_grid(shape):
    """Coordinates relative to the geometric centre (n − 1) / 2 of every axis."""
    return np.meshgrid(*[np.arange(n, dtype=np.float64) - (n - 1) / 2 for n in shape], indexing="ij")


def smooth_phantom(rng, shape, radius):
    """Low-pass random density inside a cylinder about y (so every tilt sees all of it)."""
    v = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    z, _, x = centred_grid(shape)
    return (v * (z**2 + x**2 < radius**2)).astype(np.float32)


ANGLES = np.array([-80.0, -60.0, -45.0, -30.0, 0.0, 17.0, 44.0, 46.0, 60.0, 75.0, 90.0])


@pytest.mark.parametrize("centre_zx", [(0.0, 0.0), (5.0, -8.0)])
def test_gaussian_blob_matches_analytic_projection(centre_zx):
    shape = (40, 24, 64)
    z, y, x = centred_grid(shape)
    cz, cx = centre_zx
    sigma = 3.0
    vol = np.exp(-((z - cz) ** 2 + y**2 + (x - cx) ** 2) / (2 * sigma**2)).astype(np.float32)
    proj = projection.project(vol, ANGLES)
    assert proj.shape == (len(ANGLES), 24, 64) and proj.dtype == np.float32
    u = np.arange(64) - 31.5
    yy = np.arange(24) - 11.5
    for i, theta in enumerate(np.deg2rad(ANGLES)):
        # positive tilt turns +x toward +z: the blob centre (x, z) projects to u = x cos θ − z sin θ;
        # the line integral of a 3D Gaussian is a 2D Gaussian of peak sqrt(2π) σ
        uc = cx * np.cos(theta) - cz * np.sin(theta)
        analytic = np.sqrt(2 * np.pi) * sigma * np.exp(-((u[None] - uc) ** 2 + yy[:, None] ** 2) / (2 * sigma**2))
        err = np.abs(proj[i] - analytic).max() / analytic.max()
        assert err < 0.015, (ANGLES[i], err)


def test_projection_matches_fine_ray_sum(rng):
    """Independent discretisation of the defining integral: cubic interpolation, ray step 0.25 voxel."""
    shape = (24, 6, 32)
    z, _, x = centred_grid(shape)
    # smooth inside, tapering to ~0 before the box edges so that edge handling plays no part
    vol = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) * np.exp(-(z**2 + x**2) / (2 * 3.5**2))
    angles = np.array([-70.0, -35.0, 10.0, 52.0, 89.0])
    got = projection.project(torch.from_numpy(vol), angles)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    nz, ny, nx = shape
    u = np.arange(nx) - (nx - 1) / 2
    t = np.arange(-40.0, 40.0, 0.25)
    for i, theta in enumerate(np.deg2rad(angles)):
        # the ray through detector position u runs along (x, z) = (sin θ, cos θ)
        xs = u[:, None] * np.cos(theta) + t[None, :] * np.sin(theta) + (nx - 1) / 2
        zs = -u[:, None] * np.sin(theta) + t[None, :] * np.cos(theta) + (nz - 1) / 2
        ref = np.empty((ny, nx))
        for j in range(ny):
            coords = np.stack([zs.ravel(), np.full(zs.size, j, float), xs.ravel()])
            vals = ndimage.map_coordinates(vol, coords, order=3, mode="constant", cval=0.0)
            ref[j] = vals.reshape(zs.shape).sum(axis=1) * 0.25
        err = np.abs(got[i].numpy() - ref).max() / np.abs(ref).max()
        assert err < 0.03, (angles[i], err)


def test_detector_width_and_errors(rng):
    vol = rng.standard_normal((16, 8, 20)).astype(np.float32)
    assert projection.project(vol, [0.0, 30.0], detector_width=28).shape == (2, 8, 28)
    # at 0° the projection is the plain sum over z
    assert np.allclose(projection.project(vol, [0.0])[0], vol.sum(axis=0), atol=1e-4)
    with pytest.raises(InputError, match="-90..90"):
        projection.project(vol, [0.0, 95.0])
    with pytest.raises(InputError, match="NaN"):
        projection.project(vol, [np.nan])
    stack = projection.project(vol, [-10.0, 0.0, 10.0])
    with pytest.raises(InputError, match="counts must match"):
        projection.backproject(stack, [-10.0, 10.0], thickness=16)


def test_angular_weights():
    a = np.arange(-60.0, 60.1, 3.0)
    w = projection.angular_weights(a)
    assert np.allclose(w, np.deg2rad(3.0))
    # unsorted input keeps its order; uneven spacing gives midpoint widths
    w2 = projection.angular_weights([10.0, -20.0, 0.0])
    assert np.allclose(np.rad2deg(w2), [10.0, 20.0, 15.0])
    # −90 and +90 measure the same line: the weights sum to π exactly
    full = np.arange(-90.0, 90.1, 2.0)
    assert np.isclose(projection.angular_weights(full).sum(), np.pi)
    with pytest.raises(InputError):
        projection.angular_weights([5.0])


def test_ramp_kernel_is_ramp_with_small_dc():
    n = 256
    resp = projection.ramp_kernel(n).numpy()
    nu = np.fft.rfftfreq(n)
    assert 0 < resp[0] < 0.01
    sel = nu > 0.03
    assert np.abs(resp[sel] - nu[sel]).max() < 0.01


def test_wbp_full_range_recovers_truth(rng):
    shape = (40, 24, 40)
    vol = smooth_phantom(rng, shape, 17)
    angles = np.arange(-90.0, 90.0, 1.5)
    rec = projection.backproject(projection.project(vol, angles), angles, thickness=shape[0])
    assert rec.shape == shape and rec.dtype == np.float32
    curve = fourier.fsc(torch.from_numpy(rec), torch.from_numpy(vol)).numpy()
    freqs = fourier.shell_frequencies(shape)
    assert curve[freqs <= 0.25].min() > 0.8
    # on the truth's scale (linear interpolation in projection and back-projection damps a little)
    slope = float((rec * vol).sum() / (vol * vol).sum())
    assert 0.85 < slope < 1.1


def test_wbp_limited_range_leaves_missing_wedge_empty(rng):
    """Asymmetric range −30..60°: the empty region must be fourier.missing_wedge_mask's, not its mirror."""
    shape = (32, 24, 48)
    vol = smooth_phantom(rng, shape, 14)
    angles = np.arange(-30.0, 60.1, 2.0)
    rec = projection.backproject(projection.project(vol, angles), angles, thickness=shape[0])
    f_rec, f_true = np.abs(np.fft.rfftn(rec)), np.abs(np.fft.rfftn(vol))

    def ratios(lo, hi):
        measured = fourier.missing_wedge_mask(shape, lo, hi).numpy() > 0
        return f_rec[~measured].mean() / f_true[~measured].mean(), f_rec[measured].mean() / f_true[measured].mean()

    inside, outside = ratios(-30.0, 60.0)
    assert inside < 0.2 and inside < 0.25 * outside, (inside, outside)
    mirrored_inside, _ = ratios(-60.0, 30.0)
    assert mirrored_inside > 2 * inside


def test_backproject_thickness_and_width(rng):
    stack = rng.standard_normal((5, 6, 20)).astype(np.float32)
    angles = np.linspace(-40, 40, 5)
    assert projection.backproject(stack, angles, thickness=12, width=24).shape == (12, 6, 24)
    with pytest.raises(InputError):
        projection.backproject(stack, angles, thickness=0)


def test_chunked_processing_gives_same_result(rng, monkeypatch):
    """Large volumes are processed in chunks of planes; the chunking must not change the result."""
    vol = rng.random((20, 12, 30)).astype(np.float32)
    angles = np.linspace(-70, 70, 9)
    whole_p = projection.project(vol, angles)
    whole_r = projection.backproject(whole_p, angles, thickness=20)
    monkeypatch.setattr(projection, "CHUNK_ELEMENTS", 50)
    assert np.allclose(projection.project(vol, angles), whole_p, atol=1e-4)
    assert np.allclose(projection.backproject(whole_p, angles, thickness=20), whole_r, atol=1e-5)
