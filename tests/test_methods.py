"""Methods: input/target construction, rotations, wedge masking, loss wiring and wedge refilling,
checked against independent numpy/scipy float64 computations."""

import math

import numpy as np
import pytest
import torch

from cryorestore import fourier, geometry
from cryorestore.errors import InputError
from cryorestore.methods import METHOD_NAMES, get_method
from cryorestore.methods.deepdewedge import (center_crop, extract_size_for_rotation, refill_wedge, rotate_and_crop,
                                             run_model_padded)
from cryorestore.methods.n2n import rotate90_about_y

TILT = (-50.0, 55.0)


def _wedge_full(shape, rot=None):
    """Full-grid numpy wedge mask, straight from the DESIGN.md rule (float64 reference)."""
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    kx = np.fft.fftfreq(shape[2])[None, None, :]
    ky = np.fft.fftfreq(shape[1])[None, :, None]
    kz, ky, kx = np.broadcast_arrays(kz, ky, kx)
    if rot is not None:  # M_R(k) = M(R^T k)
        k = np.stack([kz, ky, kx], -1) @ np.asarray(rot, np.float64)  # row-vector form of R^T k
        kz, kx = k[..., 0], k[..., 2]
    phi = np.degrees(np.arctan2(kz, kx))
    phi = np.where(phi > 90, phi - 180, phi)
    phi = np.where(phi <= -90, phi + 180, phi)
    axis = (np.abs(kz) < 1e-12) & (np.abs(kx) < 1e-12)
    # positive tilt turns +x toward +z: tilts [a, b] measure the line angles [-b, -a]
    return ((phi >= -TILT[1] - 1e-6) & (phi <= -TILT[0] + 1e-6) | axis).astype(np.float64)


def test_registry():
    assert set(METHOD_NAMES) == {"n2n", "deepdewedge", "isonet"}
    with pytest.raises(InputError):
        get_method("noise2void")


def test_rotate90_about_y_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 1, 6, 6, 6)).astype(np.float32)
    k = np.array([0, 1, 2, 3, 1])
    out = rotate90_about_y(torch.from_numpy(x), torch.from_numpy(k)).numpy()
    for b in range(5):
        np.testing.assert_array_equal(out[b, 0], np.rot90(x[b, 0], k[b], axes=(0, 2)))


def test_n2n_batch_pairs_halves_with_same_rotation():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(6, 8, 8, 8)).astype(np.float32)
    raw = torch.from_numpy(np.stack([e, e + 1.0], axis=1))  # odd = even + 1
    m = get_method("n2n", loss="l2")
    inp, tgt, _ = m.make_batch(raw, np.random.default_rng(3))
    diff = (tgt - inp).numpy()[:, 0]
    signs = diff.reshape(6, -1)
    assert np.allclose(np.abs(signs), 1.0, atol=1e-6)  # same voxels, opposite half: ±1 everywhere
    assert np.allclose(signs, signs[:, :1], atol=1e-6)  # a sample's input and target share one rotation
    for b in range(6):
        src = e[b] if diff[b, 0, 0, 0] > 0 else e[b] + 1
        assert any(np.allclose(inp[b, 0].numpy(), np.rot90(src, q, axes=(0, 2))) for q in range(4))
    with pytest.raises(InputError):
        m.make_batch(raw[:, :1], np.random.default_rng(0))


def test_extract_size_and_rotated_crops_have_no_empty_corners():
    for crop in (8, 16, 32, 48, 64):
        e = extract_size_for_rotation(crop)
        assert e >= math.sqrt(3) * crop and (e - crop) % 2 == 0
    crop = 16
    e = extract_size_for_rotation(crop)
    ones = torch.ones(8, 1, e, e, e)
    rot = torch.as_tensor(geometry.random_rotations(8, np.random.default_rng(2)), dtype=torch.float32)
    out = rotate_and_crop(ones, rot, crop)
    assert out.shape == (8, 1, crop, crop, crop)
    assert float(out.min()) > 0.999


def test_rotate_and_crop_matches_scipy():
    rng = np.random.default_rng(4)
    e, crop = 22, 14
    x = rng.normal(size=(2, 1, e, e, e))
    rot = geometry.random_rotations(2, rng)
    out = rotate_and_crop(torch.from_numpy(x).float(), torch.from_numpy(rot).float(), crop).numpy()
    for b in range(2):
        ref = geometry.rotate_volume(x[b, 0], rot[b], order=1)
        s = e // 2 - crop // 2
        np.testing.assert_allclose(out[b, 0], ref[s:s + crop, s:s + crop, s:s + crop], atol=2e-4)


def _replay_rotations(seed, b):
    rng = np.random.default_rng(seed)
    swap = rng.integers(0, 2, size=b).astype(bool)
    return swap, geometry.random_rotations(b, rng)


def test_deepdewedge_batch_and_loss_against_numpy():
    crop = 11  # odd: no Nyquist plane, whose full-grid wedge is not Hermitian-symmetric
    m = get_method("deepdewedge", loss="l2", tilt_range=TILT, crop=crop, wedge_weight=2.0)
    e = m.extract_size(crop)
    rng = np.random.default_rng(5)
    raw_np = rng.normal(size=(3, 2, e, e, e))
    raw = torch.from_numpy(raw_np).float()
    inp, tgt, ctx = m.make_batch(raw, np.random.default_rng(11))
    swap, rot = _replay_rotations(11, 3)
    s = e // 2 - crop // 2
    wedge = _wedge_full((crop,) * 3)
    for b in range(3):
        a_src, t_src = (raw_np[b, 1], raw_np[b, 0]) if swap[b] else (raw_np[b, 0], raw_np[b, 1])
        ra = geometry.rotate_volume(a_src, rot[b], order=1)[s:s + crop, s:s + crop, s:s + crop]
        rt = geometry.rotate_volume(t_src, rot[b], order=1)[s:s + crop, s:s + crop, s:s + crop]
        np.testing.assert_allclose(tgt[b, 0].numpy(), rt, atol=3e-4)
        ref_in = np.fft.ifftn(wedge * np.fft.fftn(ra)).real
        np.testing.assert_allclose(inp[b, 0].numpy(), ref_in, atol=3e-4)
        np.testing.assert_allclose(ctx["rot_wedge"][b, 0].numpy(), _wedge_full((crop,) * 3, rot[b])[..., :crop // 2 + 1])
    pred = torch.from_numpy(rng.normal(size=tgt.shape)).float()
    loss = float(m.loss(pred, tgt, ctx))
    ref = 0.0
    for b in range(3):
        d = np.fft.fftn(tgt[b, 0].numpy().astype(np.float64) - pred[b, 0].numpy())
        rm = _wedge_full((crop,) * 3, rot[b])
        ref += np.mean(np.abs(np.fft.ifftn(rm * wedge * d)) ** 2) + 2.0 * np.mean(np.abs(np.fft.ifftn(rm * (1 - wedge) * d)) ** 2)
    assert loss == pytest.approx(ref / 3, rel=1e-4)
    # coefficients outside R(M) never count
    bump = np.fft.ifftn((1 - _wedge_full((crop,) * 3, rot[0])) * np.fft.fftn(rng.normal(size=(crop,) * 3))).real
    tgt2 = tgt.clone()
    tgt2[0, 0] += torch.from_numpy(bump).float()
    assert float(m.loss(pred, tgt2, ctx)) == pytest.approx(loss, rel=1e-4)


class _Affine(torch.nn.Module):
    def forward(self, x):
        return 2.0 * x + 1.0


def test_refill_keeps_measured_and_fills_missing_coefficients():
    rng = np.random.default_rng(6)
    n = 9  # odd: the reference's full-grid wedge is Hermitian-symmetric
    orig = rng.normal(size=(2, 2, n, n, n))
    cur = rng.normal(size=(2, 2, n, n, n))
    filled = torch.from_numpy(cur).float()
    refill_wedge(_Affine(), torch.from_numpy(orig).float(), filled, TILT, batch_size=1, multiple=16)
    w = _wedge_full((n,) * 3)
    ref = np.fft.ifftn(w * np.fft.fftn(orig, axes=(-3, -2, -1)) + (1 - w) * np.fft.fftn(2 * cur + 1, axes=(-3, -2, -1)),
                       axes=(-3, -2, -1)).real
    np.testing.assert_allclose(filled.numpy(), ref, atol=1e-4)


def test_run_model_padded_crops_back():
    x = torch.randn(1, 1, 9, 13, 10)
    y = run_model_padded(_Affine(), x, multiple=8)
    np.testing.assert_allclose(y.numpy(), 2 * x.numpy() + 1, atol=1e-6)
    assert center_crop(torch.zeros(1, 1, 10, 10, 10), 4).shape[-1] == 4


def test_isonet_single_map_and_noise_schedule():
    crop = 11
    m = get_method("isonet", loss="l1", tilt_range=TILT, crop=crop, noise_levels=[0.5], noise_epochs=[2])
    e = m.extract_size(crop)
    rng = np.random.default_rng(7)
    v = rng.normal(size=(2, 1, e, e, e))
    raw = torch.from_numpy(v).float()
    m.start_epoch(0)
    inp, tgt, _ = m.make_batch(raw, np.random.default_rng(8))
    rgen = np.random.default_rng(8)
    rot = geometry.random_rotations(2, rgen)
    s = e // 2 - crop // 2
    w = _wedge_full((crop,) * 3)
    for b in range(2):
        rv = geometry.rotate_volume(v[b, 0], rot[b], order=1)[s:s + crop, s:s + crop, s:s + crop]
        np.testing.assert_allclose(tgt[b, 0].numpy(), rv, atol=3e-4)
        np.testing.assert_allclose(inp[b, 0].numpy(), np.fft.ifftn(w * np.fft.fftn(rv)).real, atol=3e-4)
    assert m.noise_level() == 0.0
    m.start_epoch(2)
    assert m.noise_level() == 0.5
    noisy, tgt2, _ = m.make_batch(raw, np.random.default_rng(8))
    np.testing.assert_allclose(tgt2.numpy(), tgt.numpy(), atol=1e-6)
    extra = (noisy - inp).numpy()
    ratio = extra[0].std() / inp[0].numpy().std()
    assert 0.35 < ratio < 0.65
    outside = np.abs(np.fft.fftn(extra[0, 0]) * (1 - w)).max()
    assert outside < 1e-3 * np.abs(np.fft.fftn(extra[0, 0])).max()  # the added noise has the data's wedge


def test_isonet_joint_mode_uses_other_half_as_target():
    crop = 10
    m = get_method("isonet", loss="l2", tilt_range=TILT, crop=crop)
    e = m.extract_size(crop)
    rng = np.random.default_rng(9)
    a = rng.normal(size=(4, e, e, e))
    raw = torch.from_numpy(np.stack([a, a + 3.0], axis=1)).float()
    inp, tgt, _ = m.make_batch(raw, np.random.default_rng(1))
    swap, rot = _replay_rotations(1, 4)
    s = e // 2 - crop // 2
    for b in range(4):
        t_src = a[b] if swap[b] else a[b] + 3.0
        rt = geometry.rotate_volume(t_src, rot[b], order=1, cval=0.0)[s:s + crop, s:s + crop, s:s + crop]
        np.testing.assert_allclose(tgt[b, 0].numpy(), rt, atol=3e-4)
