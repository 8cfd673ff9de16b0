"""Training on large maps without whole-volume arrays (cryorestore.data, module doc "Large maps"):
sampled normalisation, padded views, the coarse sampling mask and boxes read from memory maps."""

from __future__ import annotations

import numpy as np
import pytest

from cryorestore import blockwise, data
from cryorestore.data import CoarseCentres, PaddedView, SubtomoSampler, estimate_normalization, pad_to_box


def _structured(rng, shape):
    """Noise whose level and offset vary along z and y, with a flat (zero) margin in x."""
    z = np.linspace(0.3, 3.0, shape[0])[:, None, None]
    y = np.linspace(-2.0, 2.0, shape[1])[None, :, None]
    v = rng.standard_normal(shape) * z + y + 1.5
    v[:, :, :6] = 0.0
    return v.astype(np.float32)


@pytest.mark.parametrize("rows, tol", [(data.NORM_SAMPLE_ROWS, 0.02), (400, 0.05)])
def test_sampled_normalisation_is_close_to_the_exact_one(rng, rows, tol):
    """4096 rows (the default) of a 96×200×64 map, or 400: mean within ``tol``·std, std within ``tol``."""
    vols = [_structured(rng, (96, 200, 64)), _structured(rng, (96, 200, 64)) * 0.5 - 1]
    exact = data.compute_normalization(vols)
    for seed in range(3):
        est = estimate_normalization(vols, seed=seed, rows=rows)
        assert abs(est.mean - exact.mean) <= tol * exact.std
        assert abs(est.std / exact.std - 1) <= tol
    assert estimate_normalization(vols, seed=1, rows=rows) == estimate_normalization(vols, seed=1, rows=rows)
    full = estimate_normalization(vols, rows=10**9)  # every row: the exact statistics
    assert full.mean == pytest.approx(exact.mean, rel=1e-9) and full.std == pytest.approx(exact.std, rel=1e-9)


def test_sampled_normalisation_reads_a_chunked_store_by_chunk_bands(tmp_path, rng):
    """From an OME-Zarr level the same rows give the same statistics as from the array itself, and each
    (z, y) chunk band is read once (row by row, 300 rows of a 40×48×36 map in 16³ chunks took 300 reads)."""
    pytest.importorskip("zarr")
    from cryorestore import volume_io

    v = _structured(rng, (40, 48, 36))
    volume_io.write_ome_zarr(tmp_path / "v.zarr", v, 5.0, chunk_edge=16, min_edge=16)
    lazy = volume_io.read_volume(tmp_path / "v.zarr", lazy=True).data
    assert isinstance(lazy, volume_io.LazyLevel) and lazy.chunk_shape == (16, 16, 16)
    reads = []
    get = lazy.__getitem__
    lazy.__class__ = type("Counting", (volume_io.LazyLevel,), {"__getitem__": lambda self, k: reads.append(k) or get(k)})
    for seed in (0, 3):
        reads.clear()
        got = estimate_normalization([lazy], seed=seed, rows=300)
        want = estimate_normalization([v], seed=seed, rows=300)  # numpy: row by row
        assert got == want
        assert 1 <= len(reads) <= 3 * 3  # ceil(40/16) × ceil(48/16) chunk bands
    exact = data.compute_normalization([v])
    full = estimate_normalization([lazy], rows=10**9)
    assert full.mean == pytest.approx(exact.mean, rel=1e-9) and full.std == pytest.approx(exact.std, rel=1e-9)


def test_padded_view_reads_like_pad_to_box(rng):
    v = rng.standard_normal((6, 20, 9)).astype(np.float32)
    ref = pad_to_box(v, 14)
    view = PaddedView(v, 14)
    assert view.shape == ref.shape
    for key in [(slice(None),), (slice(2, 11), slice(3, 17), slice(0, 14)), (slice(13, 14), slice(0, 20))]:
        np.testing.assert_array_equal(view[key], ref[key])


def test_coarse_centres_skip_flat_cells_and_respect_the_geometry(rng):
    v = _structured(rng, (30, 40, 44))
    v[:, :, :22] = 0.0
    cc = CoarseCentres(v, 8, min_std_percentile=5.0)
    lo, hi = cc.region(1, 0, 40)
    assert len(lo) and np.all(lo[:, 2] >= 18)  # the flat half is skipped (cells of 4 voxels, flat up to x = 22)
    corners = data._draw_from_pieces((lo, hi), 500, 8, np.random.default_rng(0))
    centres = corners + 4
    assert np.all(centres >= 4) and np.all(centres <= np.array(v.shape) - 4)
    lo2, hi2 = cc.region(1, 20, 40)  # boxes inside y in [20, 40): centres in [24, 36]
    c2 = data._draw_from_pieces((lo2, hi2), 300, 8, np.random.default_rng(1)) + 4
    assert c2[:, 1].min() >= 24 and c2[:, 1].max() <= 36
    assert data._count((lo2, hi2)) < data._count((lo, hi))


def test_large_sampler_reads_boxes_from_memory_maps(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
    shape = (20, 48, 40)
    e = _structured(rng, shape)
    o = (e + 0.5 * rng.standard_normal(shape)).astype(np.float32)
    maps = []
    for name, v in (("e", e), ("o", o)):
        v.tofile(tmp_path / name)
        maps.append(np.memmap(tmp_path / name, dtype=np.float32, mode="r", shape=shape))
    s = SubtomoSampler([maps[0]], [maps[1]], box=10, n_subtomos=40, val_fraction=0.1, seed=3)
    assert s.large and s.evens[0] is maps[0]  # no whole-volume copy
    sub = s.sample()
    assert sub.train.shape == (36, 2, 10, 10, 10) and sub.val.shape == (4, 2, 10, 10, 10)
    norm = sub.normalization
    for box, (_, z, y, x) in zip(np.concatenate([sub.train, sub.val]), sub.positions):
        np.testing.assert_allclose(box[0], norm.apply(e[z:z + 10, y:y + 10, x:x + 10]), atol=1e-6)
        np.testing.assert_allclose(box[1], norm.apply(o[z:z + 10, y:y + 10, x:x + 10]), atol=1e-6)
    split = sub.splits[0]
    n_train = len(sub.train)
    tr_hi = sub.positions[:n_train, 1 + split.axis].max() + 10
    va_lo = sub.positions[n_train:, 1 + split.axis].min()
    assert tr_hi <= split.train_stop and va_lo >= split.val_start and va_lo - tr_hi >= 10
    again = SubtomoSampler([maps[0]], [maps[1]], box=10, n_subtomos=40, seed=3).sample()
    np.testing.assert_array_equal(again.positions, sub.positions)


def test_large_sampler_pads_thin_volumes(rng, monkeypatch):
    monkeypatch.setattr(blockwise, "BLOCKWISE_VOXELS", 1000)
    e = rng.standard_normal((8, 60, 60)).astype(np.float32)
    sub = SubtomoSampler([e], None, box=14, n_subtomos=30, val_fraction=0.1, seed=0).sample()
    ref = pad_to_box(e, 14)
    norm = sub.normalization
    for box, (_, z, y, x) in zip(np.concatenate([sub.train, sub.val]), sub.positions):
        np.testing.assert_allclose(box[0], norm.apply(ref[z:z + 14, y:y + 14, x:x + 14]), atol=1e-6)
