"""Large-map figures (cryorestore.evaluate.bounded) against the whole-volume ones of evaluate.quality: with
the crop as large as the map every key agrees; with smaller crops and SSIM blocks the exact keys still do."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cryorestore import blockwise
from cryorestore.evaluate import bounded, quality


def _maps(shape=(40, 52, 48), seed=5):
    rng = np.random.default_rng(seed)
    truth = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) * 10
    raw = (truth + rng.standard_normal(shape)).astype(np.float32)
    restored = (-0.7 * ndimage.gaussian_filter(raw, 1.0) + 3).astype(np.float32)  # inverted contrast: sign −1
    gauss = ndimage.gaussian_filter(raw, 1.5).astype(np.float32)
    return raw, restored, truth.astype(np.float32), gauss


EXACT = ("std_raw", "std_restored", "std_ratio", "corr_raw_restored", "psnr_raw", "psnr_restored", "ssim_raw",
         "ssim_restored", "ssim_gaussian", "sign_restored", "fsc05_apod_restored", "psnr_gaussian")


@pytest.mark.parametrize("tilt_range", [None, (-60.0, 50.0)])
def test_whole_map_crop_gives_the_whole_volume_figures(monkeypatch, tilt_range):
    raw, restored, truth, gauss = _maps()
    ref = quality.map_metrics(raw, restored, 4.0, truth=truth, tilt_range=tilt_range, extra={"gaussian": gauss})
    monkeypatch.setattr(blockwise, "FSC_CROP", 64)
    monkeypatch.setattr(bounded, "SSIM_BLOCK", 13)
    monkeypatch.setattr(blockwise, "SLAB_VOXELS", 5000)
    got = bounded.map_metrics(raw, restored, 4.0, truth=truth, tilt_range=tilt_range, extra={"gaussian": gauss})
    assert got.pop("crop_edge") == 40
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=2e-5, abs=2e-6), k
    assert ref["sign_restored"] == -1.0


def test_crops_keep_the_exact_figures_and_estimate_the_fsc(monkeypatch):
    raw, restored, truth, _ = _maps(shape=(36, 64, 64), seed=6)
    ref = quality.map_metrics(raw, restored, 4.0, truth=truth, tilt_range=(-60.0, 60.0))
    monkeypatch.setattr(blockwise, "FSC_CROP", 32)
    got = bounded.map_metrics(raw, restored, 4.0, truth=truth, tilt_range=(-60.0, 60.0))
    for k in EXACT:
        if k in ref:
            assert got[k] == pytest.approx(ref[k], rel=2e-5, abs=2e-6), k
    # 8 crops of 32³: the FSC crossings are estimates on a coarser shell grid
    assert got["fsc05_restored"] == pytest.approx(ref["fsc05_restored"], abs=2 / 32)
    assert got["fsc_mean_raw"] == pytest.approx(ref["fsc_mean_raw"], abs=0.1)
    curves = bounded.map_curves(raw, restored, truth, (-60.0, 60.0))
    assert len(curves["frequency"]) == len(curves["raw_vs_restored"]) == 17
    assert curves["restored_vs_truth"][1] > 0.5  # sign-corrected


def test_band_apodised_fsc_reads_the_centre_crop():
    raw, restored, truth, _ = _maps()
    assert bounded.band_apodised_fsc(restored, truth, bounded.sign_of(restored, truth)) == pytest.approx(
        quality.band_apodised_fsc(restored, truth), abs=1e-6)


def test_centre_crop_of_a_memory_map_is_the_numpy_crop_and_releases_the_maps_pages(tmp_path, monkeypatch):
    """The crop equals numpy's slicing (float64, odd and even edges), and a memory map's pages are released
    once it is read (large page-cache folios left hundreds of MiB resident per crop in evaluate)."""
    raw = _maps()[0]
    m = np.memmap(tmp_path / "raw.raw", np.float32, "w+", shape=raw.shape)
    m[:] = raw
    m = np.memmap(tmp_path / "raw.raw", np.float32, "r", shape=raw.shape)
    released = []
    real = blockwise.release_pages
    monkeypatch.setattr(blockwise, "release_pages", lambda v: released.append(v is m) or real(v))
    got = bounded.centre_crop(m, 33)
    assert got.dtype == np.float64 and released == [True]
    np.testing.assert_array_equal(got, raw[3:36, 9:42, 7:40].astype(np.float64))
    assert bounded.centre_crop(raw, 64).shape == raw.shape  # a crop larger than the map is the map
