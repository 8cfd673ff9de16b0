"""Tiled inference: tile placement, the blending window, overlap-add blending and ``tiled_apply``.

A network sees a tomogram as cubic tiles of ``tile`` voxels that overlap by ``overlap`` voxels; its
predictions are put back with a smooth window and normalised by the summed window, so that no seam
shows where tiles meet. Arrays are (z, y, x); all sizes are in voxels.

:func:`blend_tiles_torch` is the pure-torch twin of :func:`cryorestore.native.blend_tiles` (the
native kernel is the default path; :func:`tiled_apply` calls it).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from cryorestore.errors import InputError

TileFn = Callable[[torch.Tensor], torch.Tensor]


def _check_tile_overlap(tile: int, overlap: int) -> None:
    if int(tile) < 1:
        raise InputError(f"tile size must be >= 1 voxel, got {tile}")
    if not 0 <= int(overlap) < int(tile):
        raise InputError(f"tile overlap must satisfy 0 <= overlap < tile ({tile}), got {overlap}")


def _axis_origins(size: int, tile: int, stride: int) -> list[int]:
    """Start positions along one axis: 0, stride, 2·stride, … with the last moved back to ``size − tile``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def tile_origins(shape: Sequence[int], tile: int, overlap: int) -> torch.Tensor:
    """Origins (T, 3) int64 (z, y, x) of ``tile``³ tiles covering a volume of ``shape`` (voxels).

    Tiles start every ``tile − overlap`` voxels along each axis; the last tile of an axis is moved
    back so that it ends exactly at the border. ``shape`` must be ≥ ``tile`` on every axis (pad
    first, as :func:`tiled_apply` does). Order: z slowest, x fastest.
    """
    _check_tile_overlap(tile, overlap)
    dims = [int(s) for s in shape]
    if len(dims) != 3:
        raise InputError(f"expected a 3D (z, y, x) shape, got {tuple(shape)}")
    if min(dims) < tile:
        raise InputError(f"volume {tuple(dims)} is smaller than the tile size {tile} on some axis; pad it first")
    stride = tile - overlap
    axes = [torch.tensor(_axis_origins(n, tile, stride), dtype=torch.int64) for n in dims]
    grid = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grid], dim=1)


def _ramp(tile: int, overlap: int) -> torch.Tensor:
    """1D float64 window: raised-cosine ramps over ``overlap`` voxels at both ends, 1 in between, > 0."""
    i = torch.arange(tile, dtype=torch.float64)
    if overlap == 0:
        return torch.ones(tile, dtype=torch.float64)
    # sample the ramp at voxel centres so that the first voxel is small but strictly positive
    up = 0.5 * (1.0 - torch.cos(math.pi * (i + 0.5) / overlap))
    up = torch.where(i < overlap, up, torch.ones_like(up))
    return torch.minimum(up, up.flip(0))


def blending_window(tile: int, overlap: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Separable raised-cosine blending window (tile, tile, tile) float32, strictly > 0 everywhere.

    Along each axis the weight rises as ``½(1 − cos(π (i + ½) / overlap))`` over the first
    ``overlap`` voxels, is 1 in the middle and falls symmetrically at the far end; with
    ``overlap = 0`` it is all ones. Overlapping ramps of neighbouring tiles then cross-fade.
    """
    _check_tile_overlap(tile, overlap)
    r = _ramp(int(tile), int(overlap))
    w = r.view(-1, 1, 1) * r.view(1, -1, 1) * r.view(1, 1, -1)
    return w.to(dtype=torch.float32, device=device)


def check_blend_inputs(tiles: torch.Tensor, origins: torch.Tensor, window: torch.Tensor,
                       out_shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate :func:`blend_tiles_torch` arguments; returns ``out_shape`` as a tuple of ints."""
    if tiles.ndim != 4:
        raise InputError(f"tiles must be (T, d, h, w), got shape {tuple(tiles.shape)}")
    if origins.ndim != 2 or origins.shape[1] != 3 or origins.shape[0] != tiles.shape[0]:
        raise InputError(f"origins must be ({tiles.shape[0]}, 3), got shape {tuple(origins.shape)}")
    if tuple(window.shape) != tuple(tiles.shape[1:]):
        raise InputError(f"window shape {tuple(window.shape)} differs from the tile shape {tuple(tiles.shape[1:])}")
    shape = tuple(int(s) for s in out_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"out_shape must be a positive 3D (z, y, x) shape, got {tuple(out_shape)}")
    if origins.numel():
        o = origins.detach().to("cpu", torch.int64)
        lo = o.min(dim=0).values
        hi = (o + torch.tensor(tiles.shape[1:], dtype=torch.int64)).max(dim=0).values
        if (lo < 0).any() or any(int(hi[i]) > shape[i] for i in range(3)):
            raise InputError(f"tiles reach outside the output volume {shape}: origins must lie in [0, shape - tile]")
    return shape  # type: ignore[return-value]


def blend_tiles_torch(tiles: torch.Tensor, origins: torch.Tensor, window: torch.Tensor,
                      out_shape: Sequence[int]) -> torch.Tensor:
    """Overlap-add ``Σ window·tile / Σ window`` of tiles (T, d, h, w) at ``origins`` (T, 3) (z, y, x).

    Returns a float32 (Z, Y, X) volume on the tiles' device; voxels no tile covers are 0. The sums
    are accumulated in float32 (the twin of :func:`cryorestore.native.blend_tiles`).
    """
    shape = check_blend_inputs(tiles, origins, window, out_shape)
    dev = tiles.device
    num = torch.zeros(shape, dtype=torch.float32, device=dev)
    den = torch.zeros(shape, dtype=torch.float32, device=dev)
    w = window.to(device=dev, dtype=torch.float32)
    d, h, wd = tiles.shape[1:]
    for t, (z0, y0, x0) in enumerate(origins.detach().to("cpu", torch.int64).tolist()):
        sl = (slice(z0, z0 + d), slice(y0, y0 + h), slice(x0, x0 + wd))
        num[sl] += w * tiles[t].to(torch.float32)
        den[sl] += w
    return torch.where(den > 0, num / den.clamp(min=torch.finfo(torch.float32).tiny), torch.zeros_like(num))


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices into an axis of length ``n`` that pad it by reflection (no edge repeat), any pad size."""
    i = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i < n, i, period - i)


def tiled_apply(volume: torch.Tensor, fn: TileFn, tile: int, overlap: int, batch_size: int = 4,
                progress: bool = True) -> torch.Tensor:
    """Apply ``fn`` to overlapping ``tile``³ tiles of ``volume`` (Z, Y, X) and blend the results.

    Axes shorter than ``tile`` are padded by reflection (split between both ends); ``fn`` gets
    batches (B, 1, tile, tile, tile) on the volume's device and must return the same shape. The
    predictions are blended with :func:`blending_window` through :func:`cryorestore.native.blend_tiles`
    and cropped back to (Z, Y, X). Returns float32 on the volume's device.
    """
    from cryorestore import native

    if volume.ndim != 3:
        raise InputError(f"tiled_apply needs a (Z, Y, X) volume, got shape {tuple(volume.shape)}")
    _check_tile_overlap(tile, overlap)
    if int(batch_size) < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    dev = volume.device
    vol = volume.to(torch.float32)
    pads = []
    for n in vol.shape:
        extra = max(0, tile - n)
        pads.append((extra // 2, extra - extra // 2))
    for axis, (before, after) in enumerate(pads):
        if before or after:
            vol = vol.index_select(axis, _reflect_index(vol.shape[axis], before, after, dev))
    padded_shape = tuple(vol.shape)
    origins = tile_origins(padded_shape, tile, overlap)
    outputs = torch.empty((origins.shape[0], tile, tile, tile), dtype=torch.float32, device=dev)
    starts = range(0, origins.shape[0], batch_size)
    for s in tqdm(starts, desc="tiles", unit="batch", disable=not progress):
        chunk = origins[s:s + batch_size].tolist()
        batch = torch.stack([vol[z:z + tile, y:y + tile, x:x + tile] for z, y, x in chunk]).unsqueeze(1)
        pred = fn(batch)
        if tuple(pred.shape) != tuple(batch.shape):
            raise ValueError(f"tile function returned shape {tuple(pred.shape)}, expected {tuple(batch.shape)}")
        outputs[s:s + len(chunk)] = pred[:, 0].detach().to(torch.float32)
    window = blending_window(tile, overlap, device=dev)
    out = native.blend_tiles(outputs, origins, window, padded_shape)
    crop = tuple(slice(b, b + n) for (b, _), n in zip(pads, volume.shape))
    return out[crop].contiguous()
