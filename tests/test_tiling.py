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


def np_tiled_reference(vol: np.ndarray, fn, tile: int, overlap: int) -> np.ndarray:
    """Independent float64 reference: reflect-pad short axes, apply fn per tile, blend with full buffers, crop."""
    pads = [((tile - n) // 2, tile - n - (tile - n) // 2) if n < tile else (0, 0) for n in vol.shape]
    padded = np.pad(np.asarray(vol, dtype=np.float64), pads, mode="reflect")
    i = np.arange(tile)  # the raised-cosine ramp from its definition (blending_window's docstring)
    up = np.where(i < overlap, 0.5 * (1 - np.cos(np.pi * (i + 0.5) / max(overlap, 1))), 1.0)
    ramp = np.minimum(up, up[::-1])
    w = ramp[:, None, None] * ramp[None, :, None] * ramp[None, None, :]
    num, den = np.zeros(padded.shape), np.zeros(padded.shape)
    axes = [sorted(set(range(0, n - tile, tile - overlap)) | {n - tile}) if n > tile else [0] for n in padded.shape]
    for z in axes[0]:
        for y in axes[1]:
            for x in axes[2]:
                sl = (slice(z, z + tile), slice(y, y + tile), slice(x, x + tile))
                t = torch.as_tensor(padded[sl], dtype=torch.float32)[None, None]
                num[sl] += w * fn(t)[0, 0].double().numpy()
                den[sl] += w
    crop = tuple(slice(b, b + n) for (b, _), n in zip(pads, vol.shape))
    return (num / den)[crop]


def _tile_dependent(b: torch.Tensor) -> torch.Tensor:
    """Non-pointwise: depends on the whole tile, so the blend weights matter."""
    return torch.tanh(2 * b) + 0.3 * b.mean(dim=(2, 3, 4), keepdim=True) + 0.1 * b.flip(-1)


@pytest.mark.parametrize("shape,tile,overlap", [((21, 26, 19), 10, 4), ((7, 33, 12), 12, 5), ((3, 17, 25), 8, 6),
                                                ((16, 16, 16), 16, 0)])
def test_weight_sums_are_the_full_window_sum(shape, tile, overlap):
    """Separable denominator Dz⊗Dy⊗Dx equals the full-buffer Σ window (float64), cropped like the output."""
    grid = tiling.TileGrid(shape, tile, overlap)
    w = tiling.blending_window(tile, overlap).double().numpy()
    den = np.zeros(grid.padded_shape)
    for z, y, x in grid.origins.tolist():
        den[z:z + tile, y:y + tile, x:x + tile] += w
    crop = tuple(slice(b, b + n) for (b, _), n in zip(grid.pads, shape))
    dz, dy, dx = grid.weight_sums()
    assert dz.shape == (shape[0],) and dy.shape == (shape[1],) and dx.shape == (shape[2],)
    np.testing.assert_allclose(dz[:, None, None] * dy[None, :, None] * dx[None, None, :], den[crop], rtol=1e-6)


@pytest.mark.parametrize("shape,tile,overlap", [((21, 26, 19), 10, 4), ((5, 40, 9), 16, 12), ((23, 17, 31), 16, 2)])
def test_streaming_tiled_apply_matches_numpy_reference_and_full_buffer_blend(shape, tile, overlap):
    rng = np.random.default_rng(sum(shape) + tile)
    vol = rng.standard_normal(shape).astype(np.float32)
    got = tiling.tiled_apply(torch.as_tensor(vol), _tile_dependent, tile, overlap, batch_size=3, progress=False)
    assert got.shape == shape and got.dtype == torch.float32
    ref = np_tiled_reference(vol, _tile_dependent, tile, overlap)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)
    # the old path: every tile's output held at once, blended with full-size buffers
    grid = tiling.TileGrid(shape, tile, overlap)
    padded = torch.as_tensor(np.pad(vol, grid.pads, mode="reflect"))
    tiles = torch.stack([_tile_dependent(padded[z:z + tile, y:y + tile, x:x + tile][None, None])[0, 0]
                         for z, y, x in grid.origins.tolist()])
    full = native.blend_tiles(tiles, grid.origins, grid.window, grid.padded_shape)
    crop = tuple(slice(b, b + n) for (b, _), n in zip(grid.pads, shape))
    torch.testing.assert_close(got, full[crop], rtol=1e-5, atol=1e-5)


def test_tiled_apply_reads_numpy_and_memory_maps_like_tensors(tmp_path):
    rng = np.random.default_rng(5)
    vol = rng.standard_normal((14, 30, 11)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32, shape=vol.shape)
    mm[:] = vol
    mm.flush()
    ro = np.load(tmp_path / "v.npy", mmap_mode="r")
    want = tiling.tiled_apply(torch.as_tensor(vol), _tile_dependent, 12, 3, progress=False)
    for source in (vol, ro):
        got = tiling.tiled_apply(source, _tile_dependent, 12, 3, progress=False)
        assert torch.equal(got, want)
    grid = tiling.TileGrid(vol.shape, 12, 3)
    ahead = torch.zeros(vol.shape)  # reading the next batch in a thread changes nothing
    tiling.accumulate_tiles(grid, ro, _tile_dependent, ahead, batch_size=3, progress=False, prefetch=True)
    assert torch.equal(grid.normalize_(ahead), want)


def _oom_above(limit: int, calls: list[int], error=lambda: torch.cuda.OutOfMemoryError("CUDA out of memory.")):
    def fn(b: torch.Tensor) -> torch.Tensor:
        calls.append(b.shape[0])
        if b.shape[0] > limit:
            raise error()
        return _tile_dependent(b)

    return fn


@pytest.mark.parametrize("error", [lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   lambda: RuntimeError("CUDA error: out of memory")])
@pytest.mark.parametrize("prefetch", [False, True])
def test_out_of_memory_halves_the_batch_and_keeps_the_result(error, prefetch):
    rng = np.random.default_rng(7)
    vol = rng.standard_normal((20, 25, 23)).astype(np.float32)
    grid = tiling.TileGrid(vol.shape, 10, 3)
    want = torch.zeros(vol.shape)
    assert tiling.accumulate_tiles(grid, vol, _tile_dependent, want, batch_size=len(grid), progress=False) == len(grid)
    calls: list[int] = []
    acc = torch.zeros(vol.shape)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        used = tiling.accumulate_tiles(grid, vol, _oom_above(3, calls, error), acc, batch_size=13, progress=False,
                                       prefetch=prefetch)
    assert used == 3  # 13 → 6 → 3
    assert calls[:3] == [13, 6, 3] and max(calls[3:]) == 3 and sum(c for c in calls if c <= 3) == len(grid)
    torch.testing.assert_close(acc, want, rtol=1e-6, atol=1e-6)


def test_out_of_memory_with_one_tile_raises_and_other_errors_pass_through():
    vol = np.zeros((12, 12, 12), np.float32)
    grid = tiling.TileGrid(vol.shape, 8, 2)
    calls: list[int] = []
    with pytest.warns(RuntimeWarning), pytest.raises(tiling.TileOutOfMemoryError, match="smaller --tile"):
        tiling.accumulate_tiles(grid, vol, _oom_above(0, calls), torch.zeros(vol.shape), batch_size=4, progress=False,
                                prefetch=True)
    assert calls == [4, 2, 1]

    def broken(b):
        raise RuntimeError("shape mismatch in conv")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        tiling.accumulate_tiles(grid, vol, broken, torch.zeros(vol.shape), batch_size=4, progress=False)
    assert tiling.is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert tiling.is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not tiling.is_out_of_memory(ValueError("out of memory")) and not tiling.is_out_of_memory(RuntimeError("x"))


def test_tiled_apply_rejects_bad_input():
    vol = torch.zeros(20, 20, 20)
    with pytest.raises(InputError):
        tiling.tiled_apply(vol[0], lambda b: b, 8, 2, progress=False)
    with pytest.raises(InputError):
        tiling.tiled_apply(vol, lambda b: b, 8, 8, progress=False)
    with pytest.raises(ValueError, match="returned shape"):
        tiling.tiled_apply(vol, lambda b: b[:, :, :4], 8, 2, progress=False)
