"""Bounded-memory primitives (cryorestore.blockwise) and the large-map paths of the default combination:
each against an independent whole-volume float64 reference (scipy/numpy) on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cryorestore import baseline, blockwise, ensemble, fourier


def _halves(shape, noise=1.0, seed=4, smooth=1.5):
    rng = np.random.default_rng(seed)
    s = ndimage.gaussian_filter(rng.standard_normal(shape), smooth) * 4
    return s, s + noise * rng.standard_normal(shape), s + noise * rng.standard_normal(shape)


@pytest.mark.parametrize("sigma, block", [(1.3, 700), (2.6, 5000), (0.6, 1)])
def test_chunked_gaussian_equals_the_whole_volume_float64_filter(rng, sigma, block):
    v = rng.standard_normal((48, 64, 80)) * 3 + 1
    ref = ndimage.gaussian_filter(v, sigma, mode="reflect")  # float64, whole volume
    got = blockwise.gaussian_inplace(v.astype(np.float32), sigma, block_voxels=block)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * np.abs(ref).max())


def test_chunked_gaussian_of_a_memory_map_in_place_through_page_release(tmp_path, rng, monkeypatch):
    """A writable memory map (the half spread's scratch file) filtered in place, its z-columns read and
    written a few planes at a time with pages released on the way (every 4 KiB here): the float64 filter."""
    v = rng.standard_normal((21, 30, 26)) * 2 - 1
    ref = ndimage.gaussian_filter(v, 1.4, mode="reflect")
    mm = np.memmap(tmp_path / "s.f32", dtype=np.float32, mode="w+", shape=v.shape)
    mm[:] = v
    monkeypatch.setattr(blockwise, "RELEASE_BYTES", 4096)
    monkeypatch.setattr(blockwise, "COLUMN_PLANES", 4)
    released = []
    real = blockwise.release_pages
    monkeypatch.setattr(blockwise, "release_pages", lambda vol: (released.append(1), real(vol)))
    blockwise.gaussian_inplace(mm, 1.4, block_voxels=21 * 26 * 5)
    np.testing.assert_allclose(np.asarray(mm), ref, rtol=0, atol=2e-6 * np.abs(ref).max())
    reread = np.fromfile(tmp_path / "s.f32", dtype=np.float32).reshape(v.shape)  # flushed to the file
    np.testing.assert_allclose(reread, ref, rtol=0, atol=2e-6 * np.abs(ref).max())
    # 6 y-blocks, each read and written in 6 chunks of at most 4 planes (each over 4 KiB of pages); a whole
    # column at once would release once per y-block and once per z-slab (13 in all)
    assert len(released) >= 6 * (6 + 6)


def test_gaussian_of_a_region_equals_the_region_of_the_whole_filter(rng):
    v = rng.standard_normal((30, 41, 37))
    ref = ndimage.gaussian_filter(v, 1.7, mode="reflect")
    view = blockwise.GaussianOf(v.astype(np.float32), 1.7)
    for key in [(slice(0, 5),), (slice(12, 20), slice(3, 40), slice(30, None)), (slice(None),), (7, slice(2, 9))]:
        np.testing.assert_allclose(view[key], ref[key], atol=2e-6 * np.abs(ref).max())


def test_mean_of_two_maps(rng):
    a, b = rng.standard_normal((2, 9, 10, 11)).astype(np.float32)
    np.testing.assert_allclose(blockwise.MeanOf(a, b)[2:5, :, 3:], ((a + b) / 2)[2:5, :, 3:], atol=1e-7)


def test_slab_moments_match_numpy(rng):
    x = rng.standard_normal((20, 30, 40)) * 2 + 5
    t = 0.7 * x + rng.standard_normal(x.shape) + 100
    m = blockwise.moments([x.astype(np.float32), t.astype(np.float32)], planes=3)
    xf, tf = x.astype(np.float32).astype(np.float64), t.astype(np.float32).astype(np.float64)
    assert m.n == x.size
    assert m.std(0) == pytest.approx(xf.std(), rel=1e-10)
    assert m.corr(0, 1) == pytest.approx(np.corrcoef(xf.ravel(), tf.ravel())[0, 1], rel=1e-10)
    a, b, mse = m.affine(0, 1)
    ra, rb = np.polyfit(xf.ravel(), tf.ravel(), 1)
    assert (a, b) == pytest.approx((ra, rb), rel=1e-9)
    assert mse == pytest.approx(np.mean((ra * xf + rb - tf) ** 2), rel=1e-8)
    assert m.minimum[1] == tf.min() and m.maximum[0] == xf.max()


def test_crop_layout():
    crops = blockwise.crop_slices((64, 600, 250), edge=128)
    assert len(crops) == 2  # z: one 64-box (the whole axis); y: two boxes (600 >= 256); x: one centred box
    assert {(c[1].start, c[1].stop) for c in crops} == {(86, 214), (386, 514)}
    assert all((c[0].start, c[0].stop, c[2].start, c[2].stop) == (0, 64, 61, 189) for c in crops)
    assert len(blockwise.crop_slices((600, 600, 600), edge=128)) == 8


def test_crop_fsc_of_the_whole_map_is_the_whole_volume_fsc():
    _, e, o = _halves((24, 36, 30))
    curve, cshape = blockwise.crop_fsc(e.astype(np.float32), o.astype(np.float32), edge=64)
    assert cshape == e.shape
    np.testing.assert_allclose(curve, baseline.half_map_fsc(e.astype(np.float32), o.astype(np.float32)), atol=1e-10)


def test_crop_fsc_adds_the_shell_sums_of_every_crop():
    _, e, o = _halves((20, 40, 44), seed=6)
    curve, cshape = blockwise.crop_fsc(e, o, edge=20)
    assert cshape == (20, 20, 20)
    num = p1 = p2 = 0.0
    shell = None
    for c in blockwise.crop_slices(e.shape, 20):
        fa, fb = np.fft.fftn(e[c]), np.fft.fftn(o[c])
        if shell is None:
            k = np.meshgrid(*[np.fft.fftfreq(20) * 20] * 3, indexing="ij")
            shell = np.floor(np.sqrt(sum(q * q for q in k)) + 0.5).astype(int)
        num = num + np.bincount(shell.ravel(), np.real(fa * np.conj(fb)).ravel(), minlength=20)
        p1 = p1 + np.bincount(shell.ravel(), (np.abs(fa) ** 2).ravel(), minlength=20)
        p2 = p2 + np.bincount(shell.ravel(), (np.abs(fb) ** 2).ravel(), minlength=20)
    ref = num[:11] / np.sqrt(p1[:11] * p2[:11])
    np.testing.assert_allclose(curve, ref, atol=1e-10)


def test_large_lowpass_path_equals_the_whole_volume_one(monkeypatch):
    """With the threshold lowered and crops as large as the map, the chunked float32 path of the default
    combination gives the whole-volume float64 result."""
    _, e, o = _halves((40, 48, 44))
    m = ndimage.gaussian_filter(e + o, 0.8).astype(np.float32) / 2
    ref = ensemble.half_fsc_lowpass(m, e, o)
    monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
    monkeypatch.setattr(blockwise, "FSC_CROP", 64)
    monkeypatch.setattr(blockwise, "SLAB_VOXELS", 3000)
    work = m.copy()
    got = ensemble.half_fsc_lowpass(work, e, o, inplace=True)
    assert got is work
    np.testing.assert_allclose(got, ref, atol=2e-6 * np.abs(ref).max())
    assert not np.shares_memory(ensemble.half_fsc_lowpass(m, e, o), m)


def _continuous_filter(v, freqs, w, pad):
    """Whole-volume float64 FFT filter with the weight interpolated at every coefficient's |f|, of the map
    reflect-padded by ``pad`` voxels (cropped back): the overlap-save filter's target."""
    p = np.pad(v, pad, mode="symmetric")
    k = np.meshgrid(*[np.fft.fftfreq(n) for n in p.shape], indexing="ij")
    r = np.sqrt(sum(q * q for q in k))
    return np.real(np.fft.ifftn(np.fft.fftn(p) * np.interp(r, freqs, w)))[(slice(pad, -pad),) * 3]


def test_overlap_save_filter_approximates_the_whole_volume_filter():
    """A smooth per-shell low-pass applied in 32-voxel blocks with an 8-voxel halo: within 1 % of the map's
    RMS of the same filter applied to the whole (reflect-padded) map in float64."""
    _, e, _ = _halves((48, 64, 80), seed=2, smooth=1.0)
    shape = e.shape
    freqs = fourier.shell_frequencies(shape)
    w = 1.0 / (1.0 + (freqs / 0.15) ** 4)
    ref = _continuous_filter(e, freqs, w, 24)
    out = np.empty(shape, np.float32)
    blockwise.fourier_filter_blockwise([e.astype(np.float32)], freqs, [w], out, block=32, halo=8)
    err = np.sqrt(np.mean((out - ref) ** 2)) / np.sqrt(np.mean(ref ** 2))
    assert err < 0.01
    # a second source adds linearly
    out2 = np.empty(shape, np.float32)
    blockwise.fourier_filter_blockwise([e.astype(np.float32), e.astype(np.float32)], freqs, [w, 0.5 * w], out2,
                                       block=32, halo=8)
    np.testing.assert_allclose(out2, 1.5 * out, atol=1e-5 * np.abs(out).max())


def test_large_calibrated_path_is_close_to_the_whole_volume_one(monkeypatch):
    s, e, o = _halves((40, 40, 40), noise=1.5)
    fa, fb = ndimage.gaussian_filter(e, 2.5), ndimage.gaussian_filter(o, 2.5)
    ref = ensemble.calibrated_combination(fa, fb, e, o)
    a, b, cshape = ensemble.crop_combination_weights(fa, fb, e, o, edge=64)
    assert cshape == e.shape
    # the crops are read in float32: equal to float32 rounding
    np.testing.assert_allclose(a, ref.weight_restored, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b, ref.weight_raw, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
    monkeypatch.setattr(blockwise, "FSC_CROP", 64)
    got = ensemble.calibrated_combination(fa, fb, e, o)
    # overlap-save interpolates the (jagged) per-shell weights at each coefficient's |f| and reflects at the
    # faces where the whole-volume FFT wraps: the maps differ by ~10 % of the RMS inside, more at the faces,
    # but the blockwise map is as close to the signal as the exact one (here closer) and beats the mean
    inner = (slice(8, -8),) * 3
    rms = np.sqrt(np.mean(ref.volume[inner] ** 2))
    assert np.sqrt(np.mean((got.volume[inner] - ref.volume[inner]) ** 2)) < 0.15 * rms
    mse = lambda v: float(np.mean((v - s) ** 2))  # noqa: E731
    assert mse(got.volume) < 1.1 * mse(ref.volume)
    assert mse(got.volume) < 0.6 * mse(ensemble.mean_of([fa, fb]))


def test_page_release_keeps_the_data(tmp_path, rng):
    v = rng.standard_normal((16, 32, 32)).astype(np.float32)
    path = tmp_path / "v.raw"
    v.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=v.shape)
    view = blockwise.PageReleasing(mm, every=4096)
    parts = [view[z:z + 3] for z in range(0, 16, 3)]
    assert all(type(p) is np.ndarray for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), v)
    blockwise.release_pages(mm[4:8])
    np.testing.assert_array_equal(np.asarray(mm), v)


def test_page_release_follows_measured_resident_pages(rng, monkeypatch):
    """Pages are released when the measured resident file pages grow by ``every``, even when the counted
    pages stay far below it (a kernel that maps whole large folios per fault); without /proc the count rules."""
    v = rng.standard_normal((8, 16, 1024)).astype(np.float32)
    base = 1000 << 20
    state = {"resident": base}

    class Folios:  # a map whose every read makes 30 MiB resident, all dropped by one release
        shape, dtype = v.shape, v.dtype

        def __getitem__(self, key):
            state["resident"] += 30 << 20
            return v[key]

    released = []
    monkeypatch.setattr(blockwise, "resident_file_bytes", lambda: state["resident"])
    monkeypatch.setattr(blockwise, "release_pages", lambda vol: (released.append(vol), state.update(resident=base)))
    view = blockwise.PageReleasing(Folios(), every=64 << 20)
    peak = 0
    for i in range(6):  # each read of one row counts 4 KiB of pages
        np.testing.assert_array_equal(view[i, 3, :], v[i, 3, :])
        peak = max(peak, state["resident"] - base)
    assert blockwise.touched_bytes((1, 1, 1024), v.shape, 4) == 4096
    assert len(released) == 2 and peak <= 60 << 20  # released at 90 MiB grown, after reads 3 and 6
    monkeypatch.setattr(blockwise, "resident_file_bytes", lambda: None)  # no /proc: the count alone
    released.clear()
    counted = blockwise.PageReleasing(Folios(), every=3 * 4096)
    for i in range(6):
        counted[i, 0, :]
    assert len(released) == 2


def test_slabwise_mrc_writer(tmp_path, rng, monkeypatch):
    import mrcfile

    monkeypatch.setattr(blockwise, "SLAB_VOXELS", 200)
    v = rng.standard_normal((7, 9, 11)).astype(np.float32)
    blockwise.write_mrc_slabs(tmp_path / "o.mrc", blockwise.GaussianOf(v, 0.0), 3.5)
    with mrcfile.open(tmp_path / "o.mrc") as mrc:
        np.testing.assert_array_equal(mrc.data, v)
        assert float(mrc.voxel_size.x) == pytest.approx(3.5)
        assert float(mrc.header.dmean) == pytest.approx(float(v.mean()), abs=1e-6)
        assert float(mrc.header.rms) == pytest.approx(float(v.std()), rel=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["o.mrc"]


def test_read_returns_float32_copies_of_memory_maps(tmp_path):
    a = np.arange(8, dtype=np.int16).reshape(2, 2, 2)
    assert blockwise.read(a, (slice(None),)).dtype == np.float32
    a.astype(np.float32).tofile(tmp_path / "a.raw")
    mm = np.memmap(tmp_path / "a.raw", dtype=np.float32, mode="r", shape=(2, 2, 2))
    got = blockwise.read(mm, (slice(0, 1),))
    assert type(got) is np.ndarray and not np.shares_memory(got, mm)
