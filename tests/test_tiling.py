"""Tiled inference: tile placement, the blending window, the blending twin and tiled_apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryorestore import native, tiling
from cryorestore.errors import InputError


@pytest.mark.parametrize("shape,tile,overlap", [((37, 41, 29), 16, 4), ((16, 16, 16), 16, 8), ((50, 20, 33), 20, 19)])
def test_tile_origins_cover_the_volume_and_end_at_the_border(shape, tile, overlap):
    origins = tiling.tile_origins(shape, tile, overlap)
    assert origins.dtype == torch.int64 and origins.shape[1] == 3
    cover = np.zeros(shape, dtype=np.int32)
    for z, y, x in origins.tolist():
        cover[z:z + tile, y:y + tile, x:x + tile] += 1
    assert cover.min() >= 1
    for axis in range(3):
        starts = sorted(set(origins[:, axis].tolist()))
        assert starts[0] == 0 and starts[-1] == shape[axis] - tile
        steps = np.diff(starts)
        assert np.all(steps[:-1] == tile - overlap) if len(steps) > 1 else True
        assert np.all((steps > 0) & (steps <= tile - overlap))
    # z slowest, x fastest
    assert origins.tolist() == sorted(origins.tolist())


def test_tile_origins_reject_bad_input():
    with pytest.raises(InputError):
        tiling.tile_origins((10, 40, 40), 16, 4)  # smaller than a tile
    with pytest.raises(InputError):
        tiling.tile_origins((40, 40, 40), 16, 16)  # overlap ≥ tile
    with pytest.raises(InputError):
        tiling.tile_origins((40, 40), 16, 4)


@pytest.mark.parametrize("tile,overlap", [(16, 4), (9, 3), (8, 0), (10, 7)])
def test_blending_window_is_positive_symmetric_and_separable(tile, overlap):
    w = tiling.blending_window(tile, overlap)
    assert w.shape == (tile,) * 3 and w.dtype == torch.float32
    assert float(w.min()) > 0 and float(w.max()) <= 1.0
    for dims in ((0,), (1,), (2,)):
        assert torch.equal(w, w.flip(dims))
    c = tile // 2
    r = w[:, c, c].double() / w[c, c, c].double() ** (2.0 / 3.0)  # w = r⊗r⊗r  ⇒  w[:, c, c] = r·r[c]²
    outer = r.view(-1, 1, 1) * r.view(1, -1, 1) * r.view(1, 1, -1)
    torch.testing.assert_close(w, outer.to(w.dtype), rtol=1e-6, atol=1e-7)
    if overlap == 0:
        assert torch.all(w == 1)


@pytest.mark.parametrize("tile,overlap", [(16, 4), (12, 5), (9, 4)])
def test_neighbouring_ramps_cross_fade_to_one(tile, overlap):
    """Raised-cosine ramps of tiles one stride apart sum to 1 over their overlap (partition of unity)."""
    if 2 * overlap > tile:
        pytest.skip("ramps of one tile overlap each other")
    r = tiling.blending_window(tile, overlap)[:, tile // 2, tile // 2].double()
    stride = tile - overlap
    np.testing.assert_allclose((r[stride:] + r[:overlap]).numpy(), 1.0, atol=1e-6)


def test_blend_tiles_torch_matches_numpy_float64():
    rng = np.random.default_rng(0)
    shape, tile = (19, 22, 17), 7
    origins = torch.as_tensor(np.stack([rng.integers(0, s - tile + 1, 12) for s in shape], 1), dtype=torch.int64)
    tiles = torch.as_tensor(rng.standard_normal((12, tile, tile, tile)), dtype=torch.float32)
    window = tiling.blending_window(tile, 3)
    got = tiling.blend_tiles_torch(tiles, origins, window, shape)
    num, den = np.zeros(shape), np.zeros(shape)
    for t, (z, y, x) in enumerate(origins.tolist()):
        num[z:z + tile, y:y + tile, x:x + tile] += window.double().numpy() * tiles[t].double().numpy()
        den[z:z + tile, y:y + tile, x:x + tile] += window.double().numpy()
    ref = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)
    assert np.all(got.numpy()[den == 0] == 0)


@pytest.mark.parametrize("shape", [(37, 41, 29), (23, 17, 31), (5, 40, 9)])
@pytest.mark.parametrize("tile,overlap", [(16, 2), (16, 12)])
def test_tiled_apply_identity_and_constant_show_no_seams(shape, tile, overlap):
    rng = np.random.default_rng(sum(shape) + overlap)
    vol = torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32)
    same = tiling.tiled_apply(vol, lambda b: b, tile, overlap, batch_size=5, progress=False)
    assert same.shape == vol.shape and same.dtype == torch.float32
    torch.testing.assert_close(same, vol, rtol=1e-5, atol=1e-5)
    shifted = tiling.tiled_apply(vol, lambda b: b + 3.25, tile, overlap, batch_size=3, progress=False)
    torch.testing.assert_close(shifted, vol + 3.25, rtol=1e-5, atol=1e-5)


def test_tiled_apply_blends_tile_dependent_outputs_smoothly():
    """A fn that returns a different constant per tile: the blend is a convex combination of them."""
    vol = torch.zeros(30, 30, 30)
    counter = iter(range(10_000))

    def per_tile(batch):
        return torch.stack([torch.full_like(t, float(next(counter))) for t in batch])

    out = tiling.tiled_apply(vol, per_tile, 12, 4, batch_size=2, progress=False)
    n_tiles = tiling.tile_origins((30, 30, 30), 12, 4).shape[0]
    assert float(out.min()) >= 0 and float(out.max()) <= (n_tiles - 1) * (1 + 1e-6)
    assert float(out[0, 0, 0]) == 0.0  # only the first tile covers the corner


def test_tiled_apply_matches_with_native_disabled(monkeypatch):
    rng = np.random.default_rng(3)
    vol = torch.as_tensor(rng.standard_normal((21, 26, 19)), dtype=torch.float32)

    def fn(b):
        return torch.tanh(2 * b) + 0.1 * b.mean(dim=(2, 3, 4), keepdim=True)

    fast = tiling.tiled_apply(vol, fn, 10, 4, progress=False)
    monkeypatch.setenv("CRYORESTORE_NATIVE", "0")
    native._reset_state()
    try:
        with pytest.warns(RuntimeWarning, match="cryorestore.native"):
            slow = tiling.tiled_apply(vol, fn, 10, 4, progress=False)
    finally:
        monkeypatch.delenv("CRYORESTORE_NATIVE")
        native._reset_state()
    assert torch.equal(fast, slow)


def test_tiled_apply_rejects_bad_input():
    vol = torch.zeros(20, 20, 20)
    with pytest.raises(InputError):
        tiling.tiled_apply(vol[0], lambda b: b, 8, 2, progress=False)
    with pytest.raises(InputError):
        tiling.tiled_apply(vol, lambda b: b, 8, 8, progress=False)
    with pytest.raises(ValueError, match="returned shape"):
        tiling.tiled_apply(vol, lambda b: b[:, :, :4], 8, 2, progress=False)
