"""Losses against independent float64 numpy references on random volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryorestore import fourier, losses
from cryorestore.errors import InputError
from test_fourier import np_fsc_loop as _np_fsc
from test_fourier import np_shell_index_full as _np_shells


@pytest.fixture
def pair(rng):
    shape = (2, 1, 12, 16, 14)
    a = rng.standard_normal(shape)
    b = 0.6 * a + rng.standard_normal(shape)
    return a, b


def test_l1_l2_match_numpy(pair):
    a, b = pair
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert float(losses.build_loss("l1")(ta, tb)) == pytest.approx(np.mean(np.abs(a - b)), rel=1e-12)
    assert float(losses.build_loss("l2")(ta, tb)) == pytest.approx(np.mean((a - b) ** 2), rel=1e-12)


@pytest.mark.parametrize("shape", [(12, 16, 14), (11, 10, 9)])
def test_fsc_loss_matches_numpy_full_grid_reference(rng, shape):
    a = rng.standard_normal((3, 1, *shape))
    b = 0.5 * a + rng.standard_normal(a.shape)
    got = float(losses.FSCLoss()(torch.from_numpy(a), torch.from_numpy(b)))
    curves = np.stack([_np_fsc(a[i, 0], b[i, 0]) for i in range(3)])
    assert got == pytest.approx(1.0 - curves[:, 1:].mean(), abs=1e-10)


def test_fsc_loss_equals_one_minus_mean_of_fourier_fsc_batch(pair):
    a, b = (torch.from_numpy(v).float() for v in pair)
    curves = fourier.fsc_batch(a[:, 0], b[:, 0])
    want = 1.0 - curves[:, 1:].mean()
    got = losses.build_loss("fsc")(a, b)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert float(got) == pytest.approx(float(want), abs=1e-6)


def test_fsc_loss_shell_weighting_counts_coefficients(rng):
    shape = (10, 12, 14)
    a = rng.standard_normal((2, 1, *shape))
    b = 0.4 * a + rng.standard_normal(a.shape)
    idx = _np_shells(shape)
    n = min(shape) // 2 + 1
    counts = np.array([(idx == k).sum() for k in range(1, n)], dtype=float)
    curves = np.stack([_np_fsc(a[i, 0], b[i, 0]) for i in range(2)])[:, 1:]
    want_shell = 1.0 - np.mean(curves @ (counts / counts.sum()))
    freqs = np.arange(1, n, dtype=float)
    want_freq = 1.0 - np.mean(curves @ (freqs / freqs.sum()))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert float(losses.FSCLoss("shell")(ta, tb)) == pytest.approx(want_shell, abs=1e-10)
    assert float(losses.FSCLoss("frequency")(ta, tb)) == pytest.approx(want_freq, abs=1e-10)
    assert float(losses.build_loss("fsc", weighting="none")(ta, tb)) == pytest.approx(1.0 - curves.mean(), abs=1e-10)


def test_fsc_loss_limits(rng):
    a = torch.from_numpy(rng.standard_normal((2, 1, 8, 8, 8)))
    assert float(losses.FSCLoss()(a, a)) == pytest.approx(0.0, abs=1e-12)
    assert float(losses.FSCLoss()(a, -a)) == pytest.approx(2.0, abs=1e-12)
    assert float(losses.FSCLoss()(a, 3.0 * a + 1.0)) == pytest.approx(0.0, abs=1e-12)  # scale/offset invariant


def test_fsc_loss_gradcheck_float64(rng):
    a = torch.from_numpy(rng.standard_normal((1, 1, 4, 5, 6))).requires_grad_(True)
    b = torch.from_numpy(rng.standard_normal((1, 1, 4, 5, 6)))
    assert torch.autograd.gradcheck(lambda x: losses.FSCLoss()(x, b), (a,), eps=1e-6, atol=1e-7)
    a2 = torch.from_numpy(rng.standard_normal((2, 1, 6, 6, 8))).requires_grad_(True)
    b2 = torch.from_numpy(rng.standard_normal((2, 1, 6, 6, 8)))
    assert torch.autograd.gradcheck(lambda x: losses.FSCLoss("shell")(x, b2), (a2,), eps=1e-6, atol=1e-7, fast_mode=True)


def test_fsc_loss_gradient_finite_on_zero_prediction(rng):
    a = torch.zeros((1, 1, 8, 8, 8), dtype=torch.float64, requires_grad=True)
    b = torch.from_numpy(rng.standard_normal((1, 1, 8, 8, 8)))
    v = losses.FSCLoss()(a, b)
    v.backward()
    assert float(v.detach()) == pytest.approx(1.0) and torch.isfinite(a.grad).all()


def test_combinations_and_spec_parsing(pair):
    a, b = (torch.from_numpy(v) for v in pair)
    l2, fsc, l1 = (float(losses.build_loss(n)(a, b)) for n in ("l2", "fsc", "l1"))
    assert float(losses.build_loss("l2+fsc")(a, b)) == pytest.approx(l2 + fsc, rel=1e-6)
    assert float(losses.build_loss("l2 + 0.5*fsc")(a, b)) == pytest.approx(l2 + 0.5 * fsc, rel=1e-6)
    assert float(losses.build_loss("0.1*l1+2e-1*l2")(a, b)) == pytest.approx(0.1 * l1 + 0.2 * l2, rel=1e-9)
    assert losses.parse_loss_spec("L2+0.5*fsc") == [(1.0, "l2"), (0.5, "fsc")]
    assert set(losses.LOSS_NAMES) == {"l1", "l2", "fsc"}
    for bad in ("", "l3", "l2+", "x*l2", "0*l2", "l2++fsc"):
        with pytest.raises(InputError):
            losses.build_loss(bad)
    with pytest.raises(InputError):
        losses.build_loss("fsc", weighting="radial")
    with pytest.raises(InputError):
        losses.build_loss("l2", colour="red")
    with pytest.raises(ValueError):
        losses.build_loss("l2")(a, b[..., :-1])


# --------------------------------------------------------------------------------------------
# masked Fourier loss
# --------------------------------------------------------------------------------------------
def _rotations(rng, n):
    from cryorestore.geometry import random_rotations

    return torch.as_tensor(np.asarray(random_rotations(n, rng)), dtype=torch.float64)


def _np_masked_loss(pred, target, rot_wedge, wedge, w_in, w_miss):
    """Definition with full complex FFTs in numpy: masks expanded from the rfft to the full grid."""
    shape = pred.shape[-3:]
    r = np.fft.fftn(pred - target, axes=(-3, -2, -1))

    def full(mask_r):  # rfft-grid mask (…, Z, Y, Xr) → full grid by Hermitian symmetry
        m = np.broadcast_to(mask_r, mask_r.shape[:-3] + (shape[0], shape[1], shape[2] // 2 + 1))
        out = np.zeros(m.shape[:-1] + (shape[2],))
        xr = shape[2] // 2 + 1
        out[..., :xr] = m
        neg = np.take(np.take(m, (-np.arange(shape[0])) % shape[0], axis=-3), (-np.arange(shape[1])) % shape[1], axis=-2)
        out[..., xr:] = np.take(neg, shape[2] - np.arange(xr, shape[2]), axis=-1)  # M(-k) = M(k) for real data
        return out

    rw, m = full(rot_wedge), full(wedge)
    inside = np.fft.ifftn(rw * m * r, axes=(-3, -2, -1))
    missing = np.fft.ifftn(rw * (1 - m) * r, axes=(-3, -2, -1))
    return w_in * np.mean(np.abs(inside) ** 2) + w_miss * np.mean(np.abs(missing) ** 2)


@pytest.mark.parametrize("shape", [(12, 12, 12), (10, 12, 9)])
def test_masked_loss_equals_inverse_fft_definition(rng, shape):
    b = 3
    pred = rng.standard_normal((b, 1, *shape))
    target = rng.standard_normal((b, 1, *shape))
    rot = _rotations(rng, b)
    rot_wedge = fourier.missing_wedge_mask(shape, -45, 50, rotations=rot).unsqueeze(1).double()
    wedge = fourier.missing_wedge_mask(shape, -45, 50).double().view(1, 1, *fourier.rfft_shape(shape))
    got = losses.masked_fourier_loss(torch.from_numpy(pred), torch.from_numpy(target), rot_wedge, wedge,
                                     weight_inside=1.0, weight_missing=2.0)
    want = _np_masked_loss(pred, target, rot_wedge.numpy(), wedge.numpy(), 1.0, 2.0)
    assert float(got) == pytest.approx(want, rel=1e-10)
    # with both masks all ones it is the plain mean squared error (Parseval)
    ones = torch.ones(1, 1, *fourier.rfft_shape(shape), dtype=torch.float64)
    mse = losses.masked_fourier_loss(torch.from_numpy(pred), torch.from_numpy(target), ones, ones)
    assert float(mse) == pytest.approx(np.mean((pred - target) ** 2), rel=1e-10)


def test_masked_loss_ignores_coefficients_outside_rotated_wedge(rng):
    shape = (12, 12, 12)
    pred = torch.from_numpy(rng.standard_normal((2, 1, *shape)))
    target = torch.from_numpy(rng.standard_normal((2, 1, *shape)))
    rot = _rotations(rng, 2)
    rot_wedge = fourier.missing_wedge_mask(shape, -40, 40, rotations=rot).unsqueeze(1).double()
    wedge = fourier.missing_wedge_mask(shape, -40, 40).double()[None, None]
    base = float(losses.masked_fourier_loss(pred, target, rot_wedge, wedge))

    def bump(index):
        spec = torch.fft.rfftn(pred, dim=(-3, -2, -1))
        spec[index] += 3000.0 + 2000.0j
        return torch.fft.irfftn(spec, s=shape, dim=(-3, -2, -1))

    outside = torch.nonzero(rot_wedge[0, 0, :, :, 1:-1] == 0)[0]  # an interior x-plane: no Hermitian twin
    z, y, x = (int(v) for v in outside)
    moved = float(losses.masked_fourier_loss(bump((0, 0, z, y, x + 1)), target, rot_wedge, wedge))
    assert moved == pytest.approx(base, rel=1e-12)
    inside = torch.nonzero(rot_wedge[0, 0, :, :, 1:-1] == 1)[0]
    z, y, x = (int(v) for v in inside)
    assert float(losses.masked_fourier_loss(bump((0, 0, z, y, x + 1)), target, rot_wedge, wedge)) > base + 0.5


def test_masked_loss_weights_and_gradient(rng):
    shape = (8, 8, 8)
    pred = torch.from_numpy(rng.standard_normal((1, 1, *shape))).requires_grad_(True)
    target = torch.from_numpy(rng.standard_normal((1, 1, *shape)))
    rw = fourier.missing_wedge_mask(shape, -60, 60, rotations=_rotations(rng, 1)).unsqueeze(1).double()
    m = fourier.missing_wedge_mask(shape, -30, 30).double()
    a = losses.masked_fourier_loss(pred, target, rw, m, 1.0, 0.0)
    c = losses.masked_fourier_loss(pred, target, rw, m, 0.0, 1.0)
    both = losses.masked_fourier_loss(pred, target, rw, m, 0.5, 3.0)
    assert both.item() == pytest.approx(0.5 * a.item() + 3.0 * c.item(), rel=1e-12)
    assert torch.autograd.gradcheck(lambda p: losses.masked_fourier_loss(p, target, rw, m), (pred,), eps=1e-6,
                                    atol=1e-7, fast_mode=True)


def test_half_precision_predictions_are_upcast(pair):
    a, b = (torch.from_numpy(v).float() for v in pair)
    for spec in ("l1", "l2", "fsc"):
        half = float(losses.build_loss(spec)(a.bfloat16(), b))
        full = float(losses.build_loss(spec)(a.bfloat16().float(), b))
        assert half == pytest.approx(full, rel=1e-6)


def test_training_refuses_fsc_alone_and_points_to_l2_plus_fsc():
    from cryorestore.losses import build_training_loss, check_training_loss
    from cryorestore.methods import get_method

    for spec in ("fsc", "2*fsc", "fsc+0.5*fsc"):
        with pytest.raises(InputError, match="use l2\\+fsc"):
            check_training_loss(spec)
    for name in ("n2n", "isonet", "deepdewedge"):
        with pytest.raises(InputError, match="l2\\+fsc"):
            get_method(name, loss="fsc")
    for spec in ("l2+fsc", "l1", "l2", "0.1*l1+fsc"):
        check_training_loss(spec)
    assert isinstance(build_training_loss("l2+fsc"), torch.nn.Module)
    # why: the FSC loss does not change when one shell of the prediction is scaled
    rng = np.random.default_rng(0)
    t = torch.from_numpy(rng.normal(size=(1, 1, 12, 12, 12)))
    p = t + 0.5 * torch.from_numpy(rng.normal(size=t.shape))
    spec = torch.fft.rfftn(p, dim=(-3, -2, -1))
    shell = fourier.shell_index((12, 12, 12), rfft=True) == 3
    p2 = torch.fft.irfftn(torch.where(shell, 5.0 * spec, spec), s=(12, 12, 12), dim=(-3, -2, -1))
    fsc_loss, l2 = losses.build_loss("fsc"), losses.build_loss("l2")
    assert float(fsc_loss(p2, t)) == pytest.approx(float(fsc_loss(p, t)), abs=1e-9)
    assert float(l2(p2, t)) > float(l2(p, t))
