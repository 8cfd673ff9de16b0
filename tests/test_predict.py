"""Prediction end to end: grey scale, method averaging, voxel size, CLI errors."""

import numpy as np
import pytest
import torch

from cryorestore import io
from cryorestore.cli import main
from cryorestore.data import Normalization
from cryorestore.errors import InputError
from cryorestore.modeldir import LoadedModel
from cryorestore.predict import default_tile, predict_volume, restore


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x.clone()


class _Square(torch.nn.Module):
    """A pointwise non-linear network: tiling must not matter, normalisation must be undone."""

    def forward(self, x):
        return x * x - 0.5 * x


def _loaded(net, method="n2n", mean=3.0, std=2.0, crop=16):
    cfg = {"method": method, "loss": "l2", "tilt_range": [-60, 60], "subtomo_size": crop}
    return LoadedModel(net, cfg, Normalization(mean, std), "test")


@pytest.mark.parametrize("shape", [(13, 29, 22), (40, 37, 45)])
def test_identity_model_returns_input_in_its_grey_scale(shape):
    rng = np.random.default_rng(0)
    v = (5.0 + 3.0 * rng.normal(size=shape)).astype(np.float32)
    out = predict_volume(_loaded(_Identity()), v, tile=16, overlap=6, batch_size=3, progress=False)
    np.testing.assert_allclose(out, v, atol=1e-4)


def test_n2n_restore_averages_both_halves_with_pointwise_model():
    rng = np.random.default_rng(1)
    e = rng.normal(2.0, 1.5, size=(18, 21, 19)).astype(np.float32)
    o = rng.normal(2.0, 1.5, size=(18, 21, 19)).astype(np.float32)
    lm = _loaded(_Square(), mean=2.0, std=1.5)
    f = lambda v: ((((v.astype(np.float64) - 2.0) / 1.5) ** 2 - 0.5 * (v - 2.0) / 1.5) * 1.5 + 2.0)  # noqa: E731
    out = restore(lm, e, o, tile=16, overlap=4, progress=False)
    np.testing.assert_allclose(out, 0.5 * (f(e) + f(o)), atol=1e-4)
    single = restore(_loaded(_Square(), method="isonet", mean=2.0, std=1.5), e, None, tile=16, overlap=4, progress=False)
    np.testing.assert_allclose(single, f(e), atol=1e-4)


def test_default_tile_and_bad_tiles():
    lm = _loaded(_Identity(), crop=24)
    assert default_tile(lm) == 48 and default_tile(_loaded(_Identity(), crop=64)) == 96
    v = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(InputError):
        predict_volume(lm, v, tile=16, overlap=16, progress=False)
    with pytest.raises(InputError):
        predict_volume(lm, v, tile=4, progress=False)


def test_predict_cli_errors(tmp_path, capsys):
    a = tmp_path / "a.mrc"
    b = tmp_path / "b.mrc"
    io.write_mrc(a, np.random.default_rng(0).normal(size=(8, 8, 8)), 2.0)
    io.write_mrc(b, np.random.default_rng(0).normal(size=(8, 8, 9)), 2.0)
    assert main(["predict", str(tmp_path / "nomodel"), "--even", str(a), "--out", str(tmp_path / "o.mrc"), "--device", "cpu"]) == 2
    assert "model directory" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    assert main(["predict", str(tmp_path / "m"), "--even", str(a), "--out", str(tmp_path / "o.mrc")]) == 2
    assert not (tmp_path / "o.mrc").exists()
