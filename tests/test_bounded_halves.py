"""The bounded-memory map of each half (issue 18): the uncertainty map by slabs, ``restore(halves=True)``
on large maps (the half spread in a temporary file), and the whole ``denoise`` command's outputs with the
post-training stages on the blockwise paths against the whole-volume ones, on small random volumes with
the size threshold lowered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cryorestore import blockwise, ensemble, io
from cryorestore.cli import main


def _reference_uncertainty(ge: np.ndarray, go: np.ndarray, window: int) -> np.ndarray:
    """sqrt(uniform_filter(((g_e − g_o)/2)², window)) of the whole volume in float64 (scipy)."""
    d = 0.5 * (ge.astype(np.float64) - go.astype(np.float64))
    return np.sqrt(np.clip(ndimage.uniform_filter(d * d, size=window, mode="reflect"), 0, None))


@pytest.mark.parametrize("window", [5, 4])
def test_uncertainty_of_by_slabs_equals_the_whole_volume_reference(window, tmp_path):
    rng = np.random.default_rng(7)
    shape = (48, 56, 40)
    ge = rng.standard_normal(shape).astype(np.float32)
    go = (ge + rng.standard_normal(shape) * np.linspace(0.1, 2, shape[2])).astype(np.float32)
    ref = _reference_uncertainty(ge, go, window)
    view = ensemble.UncertaintyOf(ge, go, window)
    whole = np.concatenate([view[z0:z0 + 7] for z0 in range(0, shape[0], 7)])
    np.testing.assert_allclose(whole, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(view[3:9, 50:, :5], ref[3:9, 50:, :5], rtol=1e-5, atol=1e-6)  # a box at two faces
    np.testing.assert_allclose(view[10], ref[10], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ensemble.uncertainty_map(ge, go, window), ref, rtol=1e-5, atol=1e-6)
    # written slab by slab, atomically
    path = blockwise.write_map(tmp_path / "u.mrc", view, 2.5)
    got = io.read_mrc(path)
    np.testing.assert_allclose(got.data, ref, rtol=1e-5, atol=1e-6)
    assert got.voxel_size == pytest.approx(2.5)
    assert [p.name for p in tmp_path.iterdir()] == ["u.mrc"]


def _halves(shape, seed=3):
    rng = np.random.default_rng(seed)
    s = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 6
    return [(s + rng.standard_normal(shape)).astype(np.float32) for _ in range(2)]


@pytest.mark.parametrize("combine", ["mean+lowpass", "mean"])
def test_restore_halves_bounded_matches_the_whole_volume_path(combine, tmp_path, monkeypatch):
    """Large path (f(even) to a scratch file, mean and half spread by slabs, the low-pass in float32 chunks)
    against f(even), f(odd) of the network filtered in float64 by scipy on the whole volume."""
    from test_predict import _model_dir

    from cryorestore.modeldir import load_model_dir
    from cryorestore.predict import predict_volume, restore

    e, o = _halves((40, 48, 36))
    loaded = load_model_dir(_model_dir(tmp_path / "m"), "cpu")
    kw = dict(tile=16, device="cpu", progress=False, tta="rot")
    small, ge_s, go_s = restore(loaded, e, o, combine=combine, halves=True, **kw)
    fe, fo = (predict_volume(loaded, v, **kw).astype(np.float64) for v in (e, o))
    sigma = ensemble.half_fsc_lowpass_sigma(e, o) if combine == "mean+lowpass" else 0.0
    ref_e, ref_o = ((ndimage.gaussian_filter(f, sigma, mode="reflect") if sigma else f) for f in (fe, fo))
    monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
    monkeypatch.setattr(blockwise, "FSC_CROP", 64)  # the crop is the whole map: the same FSC, the same sigma
    monkeypatch.setattr(blockwise, "SLAB_VOXELS", 5000)
    mean, ge, go, scratch = restore(loaded, e, o, combine=combine, halves=True, scratch_dir=tmp_path, **kw)
    assert Path(scratch.path).is_file() and not isinstance(ge, np.ndarray)
    tol = 2e-5 * np.abs(ref_e).max()
    np.testing.assert_allclose(mean, 0.5 * (ref_e + ref_o), atol=tol)
    np.testing.assert_allclose(ge[:, :, :], ref_e, atol=tol)
    np.testing.assert_allclose(go[5:30, 2:, 7:9], ref_o[5:30, 2:, 7:9], atol=tol)
    np.testing.assert_allclose(mean, small, atol=tol)
    np.testing.assert_allclose(ge[:, :, :], ge_s, atol=tol)
    np.testing.assert_allclose(ensemble.UncertaintyOf(ge, go)[:, :, :],
                               _reference_uncertainty(ref_e, ref_o, ensemble.UNCERTAINTY_WINDOW), atol=tol)
    scratch.close()
    assert not Path(scratch.path).exists()


def test_predict_uncertainty_on_large_maps_matches_the_small_path(tmp_path, monkeypatch):
    from test_predict import _model_dir

    e, o = _halves((24, 32, 28), seed=5)
    pe, po = io.write_mrc(tmp_path / "e.mrc", e, 2.0), io.write_mrc(tmp_path / "o.mrc", o, 2.0)
    model = _model_dir(tmp_path / "m")
    args = ["predict", str(model), "--even", str(pe), "--odd", str(po), "--tile", "16", "--device", "cpu",
            "--no-progress", "--tta", "rot", "--combine", "mean+lowpass", "--uncertainty"]
    assert main([*args, "--out", str(tmp_path / "s" / "small.mrc")]) == 0
    monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
    monkeypatch.setattr(blockwise, "FSC_CROP", 64)
    monkeypatch.setattr(blockwise, "SLAB_VOXELS", 3000)
    assert main([*args, "--out", str(tmp_path / "l" / "large.mrc")]) == 0
    for a, b in (("small.mrc", "large.mrc"), ("small_uncertainty.mrc", "large_uncertainty.mrc")):
        ref, got = io.read_mrc(tmp_path / "s" / a).data, io.read_mrc(tmp_path / "l" / b).data
        np.testing.assert_allclose(got, ref, atol=2e-5 * np.abs(ref).max())
    assert not list((tmp_path / "l").glob(".cryorestore-scratch*"))  # the scratch file is gone


def _close(a, b, rel=1e-4, abs_=1e-5):
    if isinstance(a, dict):
        assert set(a) <= set(b)
        for k in a:
            _close(a[k], b[k], rel, abs_)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y, rel, abs_)
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=rel, abs=abs_, nan_ok=True)
    else:
        assert a == b


@pytest.mark.slow
def test_denoise_outputs_on_the_blockwise_paths_equal_the_whole_volume_ones(tmp_path, monkeypatch):
    """The whole ``denoise`` with both halves: restored map, uncertainty map, metrics.json and score.json are
    the same (to float32 rounding) when every stage after training takes the large-map paths (threshold
    lowered after training, so that both runs train the same model on the same in-memory maps)."""
    from cryorestore.cli import cmd_denoise

    e, o = _halves((32, 48, 40), seed=11)
    pe, po = io.write_mrc(tmp_path / "e.mrc", e, 8.0), io.write_mrc(tmp_path / "o.mrc", o, 8.0)
    base = ["--even", str(pe), "--odd", str(po), "--method", "n2n", "--epochs", "1", "--subtomo-size", "16",
            "--n-subtomos", "12", "--batch-size", "4", "--device", "cpu", "--model-option", "base_channels=4",
            "--model-option", "depth=2", "--no-progress", "--tile", "16", "--tilt-range", "-60", "60",
            "--tta", "rot", "--combine", "mean+lowpass", "--seed", "2"]
    assert main(["denoise", *base, "--out-dir", str(tmp_path / "whole")]) == 0
    original = cmd_denoise.run_training

    def train_then_go_large(*a, **k):
        out = original(*a, **k)
        monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
        monkeypatch.setattr(blockwise, "FSC_CROP", 64)
        monkeypatch.setattr(blockwise, "SLAB_VOXELS", 4000)
        return out

    monkeypatch.setattr(cmd_denoise, "run_training", train_then_go_large)
    assert main(["denoise", *base, "--out-dir", str(tmp_path / "large")]) == 0
    assert blockwise.BLOCKWISE_VOXELS == 1000  # the second run did take the large paths
    w, lg = tmp_path / "whole", tmp_path / "large"
    for name in ("restored.mrc", "restored_uncertainty.mrc"):
        ref, got = io.read_mrc(w / name).data, io.read_mrc(lg / name).data
        np.testing.assert_allclose(got, ref, atol=3e-5 * np.abs(ref).max())
    mw, ml = (json.loads((d / "metrics.json").read_text()) for d in (w, lg))
    assert ml["metrics"]["crop_edge"] == 32.0  # min(FSC_CROP, *shape): the crop is the whole map
    for k in ("crop_edge",):
        ml["metrics"].pop(k)
    drop = ("seconds", "history")
    for doc in (mw, ml):
        for k in drop:
            doc["training"].pop(k)
    _close({k: v for k, v in mw.items() if k not in ("inputs",)}, ml)
    sw, sl = (json.loads((d / "score.json").read_text()) for d in (w, lg))
    sw.pop("inputs"), sl.pop("inputs")
    _close(sw, sl)
    assert not list(lg.glob(".cryorestore-scratch*"))


@pytest.mark.parametrize("box", [(slice(1, 3), slice(2, 5), slice(100, 700)), (slice(0, 2), slice(0, 8), slice(0, 2048)),
                                 (slice(3, 4), slice(7, 8), slice(5, 6))])
def test_touched_bytes_bounds_the_pages_a_box_read_makes_resident(box):
    """Against the distinct pages of the byte offsets of the box's voxels (numpy): never fewer (the release
    must not come late), at most one page per row more."""
    shape, item = (4, 8, 2048), 4
    idx = np.indices(shape)[(slice(None),) + box].reshape(3, -1)
    offsets = np.ravel_multi_index(idx, shape) * item
    exact = len(np.unique(offsets // blockwise.PAGE_BYTES)) * blockwise.PAGE_BYTES
    part = [s.stop - s.start for s in box]
    got = blockwise.touched_bytes(part, shape, item)
    rows = part[0] * part[1]
    assert exact <= got <= exact + rows * blockwise.PAGE_BYTES


def test_capped_region_keeps_the_slab_axis_and_centres_the_rest():
    from cryorestore.evaluate import truthfree as tf

    region = tf.slab_region((256, 1024, 1024), 1, 921, 1024)
    cut = tf.capped_region(region, max_voxels=1 << 23)
    (z0, z1), (y0, y1), (x0, x1) = cut.box
    assert (y0, y1) == (921, 1024)  # the held-out axis whole
    scale = np.sqrt((1 << 23) / (256 * 103 * 1024))
    assert z1 - z0 == int(256 * scale) and x1 - x0 == int(1024 * scale)
    assert z0 == (256 - (z1 - z0)) // 2 and x0 == (1024 - (x1 - x0)) // 2
    assert cut.n_voxels <= 1 << 23 and "central part" in cut.description
    small = tf.slab_region((32, 64, 64), 1, 50, 64)
    assert tf.capped_region(small, max_voxels=1 << 23) is small
