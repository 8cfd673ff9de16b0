"""Tiled inference: tile placement, the blending window, overlap-add blending and ``tiled_apply``.

A network sees a tomogram as cubic tiles of ``tile`` voxels that overlap by ``overlap`` voxels; its
predictions are put back with a smooth window and normalised by the summed window, so that no seam
shows where tiles meet. Arrays are (z, y, x); all sizes are in voxels.

:func:`tiled_apply` and :func:`accumulate_tiles` stream: tiles are read from the volume (an array,
a memory map or a tensor) one batch at a time, and each batch's weighted output is added into the
result at once; the summed window is separable (:class:`TileGrid`), so no full-size denominator
is kept. Device memory is bounded by the network plus one batch (halved on out-of-memory), host
memory by the volume plus the result. :func:`blend_tiles_torch` is the pure-torch twin of
:func:`cryorestore.native.blend_tiles`, which blends a whole set of tiles held at once.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cryorestore.errors import InputError
from cryorestore.progress import is_live

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


# --------------------------------------------------------------------------------------------
# streaming tiled inference: bounded memory
# --------------------------------------------------------------------------------------------
class TileOutOfMemoryError(RuntimeError):
    """Even a batch of one tile does not fit in the device's memory: retry with a smaller tile."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device out-of-memory error: ``torch.cuda.OutOfMemoryError``, or a RuntimeError saying
    "out of memory" (other backends) or ``..._STATUS_ALLOC_FAILED`` (cuDNN/cuBLAS workspaces)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "status_alloc_failed" in text)


def _reflect_index(n: int, before: int, after: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Indices into an axis of length ``n`` that pad it by reflection (no edge repeat), any pad size."""
    i = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i < n, i, period - i)


Volume3D = np.ndarray | torch.Tensor


class TileGrid:
    """Where the ``tile``³ tiles of a (Z, Y, X) volume lie, and how their blend is normalised.

    Axes shorter than ``tile`` are padded by reflection (split between both ends) to ``tile``;
    :attr:`origins` (T, 3) are :func:`tile_origins` of that padded shape (z slowest). Because the
    tiles form a regular grid and the window is the outer product of one ramp ``r``, the summed
    window is separable, ``Σ_tiles w = Dz ⊗ Dy ⊗ Dx`` with ``D(i) = Σ_o r(i − o)`` over one axis'
    origins, so no full-size denominator is ever stored. All sizes in voxels.
    """

    def __init__(self, shape: Sequence[int], tile: int, overlap: int) -> None:
        _check_tile_overlap(tile, overlap)
        dims = tuple(int(s) for s in shape)
        if len(dims) != 3 or min(dims) < 1:
            raise InputError(f"expected a positive 3D (z, y, x) shape, got {tuple(shape)}")
        self.shape: tuple[int, int, int] = dims  # type: ignore[assignment]
        self.tile, self.overlap = int(tile), int(overlap)
        extras = [max(0, self.tile - n) for n in dims]
        self.pads = tuple((e // 2, e - e // 2) for e in extras)
        self.padded_shape = tuple(n + b + a for n, (b, a) in zip(dims, self.pads))
        self.origins = tile_origins(self.padded_shape, self.tile, self.overlap)
        self.window = blending_window(self.tile, self.overlap)
        # source index of each padded position, only for the (short) padded axes
        self._source = [None if b == a == 0 else _reflect_index(n, b, a).numpy() for n, (b, a) in zip(dims, self.pads)]

    def __len__(self) -> int:
        return int(self.origins.shape[0])

    def read(self, volume: Volume3D, origin: Sequence[int]) -> Volume3D:
        """The tile at ``origin`` (padded coordinates) of ``volume`` (numpy, memory map or tensor), as stored.

        Only the tile's own voxels are read (plus whole short axes that need reflection).
        """
        t = self.tile
        block = volume[tuple(slice(o, o + t) if src is None else slice(None) for o, src in zip(origin, self._source))]
        for axis, (o, src) in enumerate(zip(origin, self._source)):
            if src is not None:
                idx = src[o:o + t]
                if isinstance(block, torch.Tensor):
                    block = block.index_select(axis, torch.as_tensor(idx, device=block.device))
                else:
                    block = np.take(block, idx, axis=axis)
        return block

    def placement(self, origin: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """(slices of the output volume, slices of the tile) where the tile at ``origin`` lands, padding cropped."""
        out, part = [], []
        for o, n, (b, _) in zip(origin, self.shape, self.pads):
            lo, hi = max(o, b), min(o + self.tile, b + n)
            out.append(slice(lo - b, hi - b))
            part.append(slice(lo - o, hi - o))
        return tuple(out), tuple(part)

    def weight_sums(self) -> list[np.ndarray]:
        """Per axis, the summed 1D ramps ``D`` (float64, one value per voxel of the volume, all > 0)."""
        ramp = _ramp(self.tile, self.overlap).numpy()
        sums = []
        for axis, (n, (b, _)) in enumerate(zip(self.shape, self.pads)):
            d = np.zeros(self.padded_shape[axis])
            for o in sorted(set(self.origins[:, axis].tolist())):
                d[o:o + self.tile] += ramp
            sums.append(d[b:b + n])
        return sums

    def normalize_(self, acc: torch.Tensor, scale: float = 1.0, chunk_voxels: int = 1 << 22) -> torch.Tensor:
        """Divide the accumulated ``Σ w·tile`` (Z, Y, X) in place by ``scale · Σ w`` (float64 arithmetic, in z-slabs)."""
        if tuple(acc.shape) != self.shape:
            raise ValueError(f"accumulator shape {tuple(acc.shape)} differs from the grid's {self.shape}")
        dz, dy, dx = (torch.as_tensor(d, device=acc.device) for d in self.weight_sums())
        plane = (dy[:, None] * dx[None, :]) * float(scale)
        step = max(1, chunk_voxels // max(1, plane.numel()))
        for z0 in range(0, self.shape[0], step):
            sl = acc[z0:z0 + step]
            sl.copy_(sl.double() / (dz[z0:z0 + step, None, None] * plane))
        return acc


def _free_device_cache(device: torch.device) -> None:
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _read_batch(grid: TileGrid, volume: Volume3D, chunk: list[list[int]],
                prepare: Callable[[np.ndarray], np.ndarray] | None) -> Volume3D:
    """The tiles at ``chunk`` stacked (B, tile, tile, tile): a float32 array (through ``prepare``), or a tensor."""
    tiles = [grid.read(volume, o) for o in chunk]
    if isinstance(volume, torch.Tensor):
        return torch.stack(tiles).to(torch.float32)
    host = np.stack(tiles).astype(np.float32, copy=False)
    return prepare(host) if prepare is not None else host


def _done(value: object) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


def accumulate_tiles(grid: TileGrid, volume: Volume3D, fn: TileFn, acc: torch.Tensor, batch_size: int = 4,
                     device: torch.device | str | None = None,
                     prepare: Callable[[np.ndarray], np.ndarray] | None = None,
                     progress: bool = True, desc: str = "tiles", prefetch: bool | None = None) -> int:
    """Add ``Σ window·fn(tile)`` over the tiles of ``volume`` into ``acc`` (Z, Y, X) float32, batch by batch.

    ``volume`` (Z, Y, X) may be a numpy array, a memory map or a tensor; tiles are read from it only
    when their batch is due (numpy tiles as float32, passed through ``prepare``), moved to ``device``
    (default: the tensor's device, else the CPU) as (B, 1, tile, tile, tile), and ``fn``'s output
    (same shape) is weighted by the window and added into ``acc`` on its own device at once. With
    ``prefetch`` (default: for numpy input on a non-CPU device) a thread reads the next batch while
    the device computes. Memory beyond ``volume`` and ``acc``: one or two batches of tiles. When
    ``fn`` runs out of device memory the batch is halved and retried (with a warning); with one tile
    per batch that raises :class:`TileOutOfMemoryError`. Returns the batch size that worked (reuse
    it for the next volume).
    """
    if int(batch_size) < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    if tuple(volume.shape) != grid.shape or tuple(acc.shape) != grid.shape:
        raise ValueError(f"volume {tuple(volume.shape)} and accumulator {tuple(acc.shape)} must have the grid's "
                         f"shape {grid.shape}")
    if device is None:
        device = volume.device if isinstance(volume, torch.Tensor) else torch.device("cpu")
    dev = torch.device(device)
    if prefetch is None:
        prefetch = dev.type != "cpu" and not isinstance(volume, torch.Tensor)
    window = grid.window.to(dev)
    origins = grid.origins.tolist()
    size, start, tile, total = int(batch_size), 0, grid.tile, len(origins)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1)) if prefetch else None

        def load(lo: int) -> Future:
            chunk = origins[lo:lo + size]
            if pool is None:
                return _done(_read_batch(grid, volume, chunk, prepare))
            return pool.submit(_read_batch, grid, volume, chunk, prepare)

        # a live bar on a terminal only: in a log its carriage-return updates would pile up as lines
        bar = stack.enter_context(tqdm(total=total, desc=desc, unit="tile", disable=not is_live(progress)))
        pending = load(0)
        while start < total:
            host = pending.result()
            n = len(host)
            pending = load(start + n) if start + n < total else _done(None)  # read ahead while the device works
            batch, oom = None, False
            try:
                batch = (host if isinstance(host, torch.Tensor) else torch.from_numpy(host)).to(dev).unsqueeze(1)
                pred = fn(batch)
                if tuple(pred.shape) != tuple(batch.shape):
                    raise ValueError(f"tile function returned shape {tuple(pred.shape)}, expected {tuple(batch.shape)}")
                weighted = (pred[:, 0].detach().to(torch.float32) * window).to(acc.device)
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                oom = True  # handled below, once the traceback (and the tensors it holds) is released
            if oom:
                batch = None
                pending.result()  # the read-ahead assumed this batch's size: drop it
                _free_device_cache(dev)
                if n == 1:
                    raise TileOutOfMemoryError(
                        f"one {tile}³ tile does not fit in the memory of {dev}; retry with a smaller --tile "
                        f"(e.g. {max(8, tile // 2)})")
                size = n // 2
                warnings.warn(f"out of memory on {dev} with {n} tiles per batch; retrying with {size}",
                              RuntimeWarning, stacklevel=2)
                pending = _done(host[:size])  # the first half of the same tiles, already read
                continue
            for t, o in enumerate(origins[start:start + n]):
                out_sl, tile_sl = grid.placement(o)
                acc[out_sl] += weighted[(t, *tile_sl)]
            batch = pred = weighted = None  # free this batch's device memory before the next one
            start += n
            bar.update(n)
    return size


def tiled_apply(volume: Volume3D, fn: TileFn, tile: int, overlap: int, batch_size: int = 4,
                progress: bool = True) -> torch.Tensor:
    """Apply ``fn`` to overlapping ``tile``³ tiles of ``volume`` (Z, Y, X) and blend the results.

    Axes shorter than ``tile`` are padded by reflection (split between both ends); ``fn`` gets
    batches (B, 1, tile, tile, tile) on the volume's device (the CPU for numpy input) and must return
    the same shape. Each batch is weighted by :func:`blending_window` and added into the output at
    once, which is then divided by the separable summed window (:class:`TileGrid`): memory is the
    volume, the output and one batch. Returns float32 (Z, Y, X) on the volume's device.
    """
    if volume.ndim != 3:
        raise InputError(f"tiled_apply needs a (Z, Y, X) volume, got shape {tuple(volume.shape)}")
    grid = TileGrid(volume.shape, tile, overlap)
    dev = volume.device if isinstance(volume, torch.Tensor) else torch.device("cpu")
    acc = torch.zeros(grid.shape, dtype=torch.float32, device=dev)
    accumulate_tiles(grid, volume, fn, acc, batch_size=batch_size, device=dev, progress=progress)
    return grid.normalize_(acc)
