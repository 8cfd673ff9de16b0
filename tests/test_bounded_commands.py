"""baseline and evaluate on 'large' maps (the threshold lowered so that small maps take the bounded paths):
memory-mapped inputs, lazy views written by slabs, figures from evaluate.bounded, against the exact path."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
from scipy import ndimage

from cryorestore import baseline, blockwise, io
from cryorestore.cli import main


def _halves(shape=(24, 40, 36), seed=3):
    rng = np.random.default_rng(seed)
    s = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 6
    return [(s + rng.standard_normal(shape)).astype(np.float32) for _ in range(2)] + [s.astype(np.float32)]


def test_large_gaussian_baseline_is_the_exact_gaussian(monkeypatch):
    e, o, s = _halves()
    ref = baseline.gaussian_baseline(e, o)
    ref_t = baseline.gaussian_baseline(e, o, truth=s)
    monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
    monkeypatch.setattr(blockwise, "FSC_CROP", 64)  # the crop is the whole map: the same FSC
    got = baseline.gaussian_baseline(e, o)
    assert got.params["sigma_voxels"] == pytest.approx(ref.params["sigma_voxels"], rel=1e-6)
    np.testing.assert_allclose(got.volume[:, :, :], ref.volume, atol=2e-6 * np.abs(ref.volume).max())
    got_t = baseline.gaussian_baseline(e, o, truth=s)
    assert got_t.params["sigma_voxels"] == ref_t.params["sigma_voxels"]
    for k, v in ref_t.params["psnr_by_sigma"].items():
        assert got_t.params["psnr_by_sigma"][k] == pytest.approx(v, abs=1e-4)


def test_large_wiener_baseline_is_close_to_the_exact_one(monkeypatch):
    e, o, s = _halves((32, 48, 40))
    ref = baseline.wiener_baseline(e, o)
    monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
    monkeypatch.setattr(blockwise, "FSC_CROP", 64)
    got = baseline.wiener_baseline(e, o)
    np.testing.assert_allclose(got.params["weights"], ref.params["weights"], atol=1e-5)
    inner = (slice(6, -6),) * 3
    rms = np.sqrt(np.mean(ref.volume[inner] ** 2))
    assert np.sqrt(np.mean((got.volume[inner] - ref.volume[inner]) ** 2)) < 0.1 * rms
    mse = lambda v: float(np.mean((v - s) ** 2))  # noqa: E731
    assert mse(got.volume) < 1.1 * mse(ref.volume) and mse(got.volume) < 0.5 * mse((e + o) / 2)


def test_baseline_and_evaluate_commands_on_large_maps(tmp_path, write_map, monkeypatch):
    e, o, s = _halves((24, 40, 36))
    pe, po, ps = write_map("e.mrc", e), write_map("o.mrc", o), write_map("s.mrc", s)
    assert main(["baseline", "--even", str(pe), "--odd", str(po), "--out-dir", str(tmp_path / "small")]) == 0
    monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
    monkeypatch.setattr(blockwise, "FSC_CROP", 16)
    out = tmp_path / "big"
    assert main(["baseline", "--even", str(pe), "--odd", str(po), "--out-dir", str(out)]) == 0
    doc = json.loads((out / "baseline.json").read_text())
    assert doc["wiener"]["fsc_crop"] == [16, 16, 16]
    with mrcfile.open(out / "gaussian.mrc") as g:
        sigma = doc["gaussian"]["sigma_voxels"]
        ref = ndimage.gaussian_filter((e.astype(np.float64) + o) / 2, sigma, mode="reflect")
        np.testing.assert_allclose(g.data, ref, atol=2e-5 * np.abs(ref).max())
        assert float(g.voxel_size.x) == pytest.approx(10.0)
    restored = write_map("r.mrc", ndimage.gaussian_filter((e + o) / 2, 1.0).astype(np.float32))
    raw = write_map("raw.mrc", (e + o) / 2)
    assert main(["evaluate", "--raw", str(raw), "--restored", str(restored), "--truth", str(ps),
                 "--baselines", str(out), "--tilt-range", "-60", "60", "--out", str(tmp_path / "ev" / "m.json")]) == 0
    m = json.loads((tmp_path / "ev" / "m.json").read_text())["metrics"]
    assert m["crop_edge"] == 16 and m["psnr_restored"] > m["psnr_raw"]
    assert {"psnr_wiener", "ssim_gaussian", "wedge_corr_restored"} <= set(m)
    assert (tmp_path / "ev" / "figures" / "orthoslices.png").is_file()


def test_predict_on_large_maps_matches_the_exact_path(tmp_path, monkeypatch, capsys):
    """predict with the default combination (mean+lowpass) and TTA: the large-map path (crop FSC with the
    crop as large as the map, chunked float32 low-pass, pages released) gives the small-map result; a NaN is
    found by the slab check."""
    from test_predict import _model_dir

    e, o, _ = _halves((20, 24, 20))
    pe, po = io.write_mrc(tmp_path / "e.mrc", e, 2.0), io.write_mrc(tmp_path / "o.mrc", o, 2.0)
    model = _model_dir(tmp_path / "m")
    args = ["predict", str(model), "--even", str(pe), "--odd", str(po), "--tile", "16", "--device", "cpu",
            "--no-progress", "--tta", "rot", "--combine", "mean+lowpass"]
    assert main([*args, "--out", str(tmp_path / "small.mrc")]) == 0
    monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
    monkeypatch.setattr(blockwise, "FSC_CROP", 64)
    monkeypatch.setattr(blockwise, "SLAB_VOXELS", 900)
    assert main([*args, "--out", str(tmp_path / "large.mrc")]) == 0
    small, large = io.read_mrc(tmp_path / "small.mrc").data, io.read_mrc(tmp_path / "large.mrc").data
    np.testing.assert_allclose(large, small, atol=2e-5 * np.abs(small).max())
    bad = e.copy()
    bad[7, 3, 2] = np.inf
    with pytest.warns(RuntimeWarning):
        pb = io.write_mrc(tmp_path / "bad.mrc", bad, 2.0)
    assert main(["predict", str(model), "--even", str(pb), "--out", str(tmp_path / "x.mrc"), "--device", "cpu"]) == 2
    assert "NaN or infinite" in capsys.readouterr().err and not (tmp_path / "x.mrc").exists()
