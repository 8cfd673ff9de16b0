"""Bounded-memory operations on large maps: z-slabs, stated crops, halo-exact local filters, page release.

Portal tomograms are 300-600 × 1000-2000 × 1000-2000 voxels; a whole-volume float64 copy of one is
4-19 GB and its FFT as much again. The functions here read maps (any array-like that supports numpy
basic slicing, ``vol[z0:z1, y0:y1, x0:x1]`` → ndarray: numpy arrays, ``np.memmap``, zarr arrays) a
z-slab or a crop at a time. Arrays are (z, y, x); sizes are in voxels; frequencies in cycles/voxel.

When the blockwise paths are taken
----------------------------------
A map with more than :data:`BLOCKWISE_VOXELS` (2²³ = 8,388,608) voxels — 32 MiB in float32, e.g.
larger than 128×256×256 — is *large* (:func:`is_large`). Callers keep their exact whole-volume path
for smaller maps, so the figures of the simulated 64×256×256 benchmarks do not move.

What is exact and what is estimated
-----------------------------------
* Local filters are exact (to float32 rounding): a Gaussian (``scipy.ndimage`` ``mode="reflect"``,
  ``truncate`` 4) is computed on a region grown by its radius ``int(4σ + 0.5)`` on every side,
  clipped at the map's faces (where the whole-volume filter reflects, so does the region's); the
  separable in-place version (:func:`gaussian_inplace`) filters whole columns along z, then z-slabs
  along y and x.
* Moments (mean, standard deviation, correlation, the affine grey-level fit) are accumulated over
  z-slabs in float64 (Chan et al.'s pairwise update), exact to rounding.
* FSC curves of large maps are estimated over stated crops (:func:`crop_slices`): up to
  ``2 × 2 × 2`` boxes of at most :data:`FSC_CROP`³ voxels (an axis of at least twice the edge gets
  two boxes centred at its quarter and three-quarter points, a shorter axis one centred box of
  ``min(edge, n)`` voxels), unapodised like the whole-volume FSC. Their shell sums are added and the
  curve has the crops' shells (shell ``k`` at ``k / min(crop)`` cycles/voxel). When the crop is the
  whole map the curve is the whole-volume one.
* Global Fourier filters (the Wiener weights, the half-map-calibrated combination) are applied by
  overlap-save (:func:`fourier_filter_blockwise`): blocks of at most :data:`FILTER_BLOCK` voxels per
  axis, read with a halo of :data:`FILTER_HALO` voxels (reflected at the map's faces), filtered with
  the per-shell weights interpolated at each block coefficient's frequency, and only the block's core
  kept. This is an approximation: the filter's kernel is cut at the halo, and at the map's faces the
  data is reflected where the whole-volume FFT wraps around periodically.

Memory maps count in a process's resident memory once their pages are read; :func:`release_pages`
drops a read-only map's pages from the process (the kernel's page cache keeps them) and
:class:`PageReleasing` does so every :data:`RELEASE_BYTES` bytes read, so streaming a map through
once costs a slab, not the map.
"""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage

from cryorestore import fourier

#: maps with more voxels than this take the blockwise paths (module doc)
BLOCKWISE_VOXELS = 1 << 23
#: voxels per z-slab read at once (16 MiB in float32)
SLAB_VOXELS = 1 << 22
#: edge (voxels) of the crops over which large maps' FSC curves are estimated
FSC_CROP = 256
#: overlap-save block edge and halo (voxels) of :func:`fourier_filter_blockwise`
FILTER_BLOCK = 128
FILTER_HALO = 16
#: bytes read through a :class:`PageReleasing` view between two releases of the map's pages
RELEASE_BYTES = 64 << 20
#: planes of a memory map's z-column that :func:`gaussian_inplace` reads or writes at once
COLUMN_PLANES = 8
#: Gaussian kernel radius in standard deviations (scipy's default ``truncate``)
TRUNCATE = 4.0

ArrayLike = Any  # numpy array, np.memmap, zarr array, or a view of this module: anything with .shape and basic slicing


def is_large(shape: Sequence[int]) -> bool:
    """True when a map of ``shape`` has more than :data:`BLOCKWISE_VOXELS` voxels."""
    return int(np.prod([int(s) for s in shape], dtype=np.int64)) > BLOCKWISE_VOXELS


def slab_planes(shape: Sequence[int], voxels: int | None = None) -> int:
    """z-planes per slab so that a slab holds about ``voxels`` (default :data:`SLAB_VOXELS`) voxels (at least one)."""
    voxels = SLAB_VOXELS if voxels is None else voxels
    return max(1, int(voxels) // max(1, int(shape[1]) * int(shape[2])))


def z_slabs(shape: Sequence[int], planes: int | None = None) -> Iterator[tuple[int, int]]:
    """``(z0, z1)`` of consecutive z-slabs covering a map of ``shape``."""
    step = slab_planes(shape) if planes is None else max(1, int(planes))
    for z0 in range(0, int(shape[0]), step):
        yield z0, min(z0 + step, int(shape[0]))


def _mapping(volume: ArrayLike) -> mmap.mmap | None:
    m = getattr(volume, "_mmap", None)
    return m if isinstance(m, mmap.mmap) else None


def release_pages(volume: ArrayLike) -> None:
    """Drop the resident pages of the memory map behind ``volume`` (``np.memmap`` or a view of one) from
    this process (``madvise(MADV_DONTNEED)``); the data stays in the page cache and on disk. A
    writable map is flushed first. Anything else is left alone."""
    m = _mapping(volume)
    if m is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        if getattr(volume, "flags", None) is not None and volume.flags.writeable:
            m.flush()
        m.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # a closed map, or a platform without madvise: nothing to release
        pass


def release_all(*volumes: ArrayLike) -> None:
    """:func:`release_pages` of every memory map among ``volumes`` (None and other arrays are skipped;
    the two maps of a :class:`MeanOf` or :class:`SignedSumOf` view too). Commands call it between stages,
    so that pages one stage read leave the process before the next one allocates."""
    for v in volumes:
        if v is None:
            continue
        inner = [getattr(v, n) for n in ("a", "b", "volume", "source") if hasattr(v, n)]
        if inner:
            release_all(*inner)
        release_pages(v)


def read(volume: ArrayLike, key: tuple) -> np.ndarray:
    """``volume[key]`` as a float32 ndarray of its own (never a view of ``volume``: callers may write to it)."""
    part = volume[key]
    if isinstance(part, np.ndarray) and part.dtype == np.float32 and part.base is None and _mapping(part) is None:
        return part  # already a fresh array (a zarr read, a view's computed region)
    return np.array(part, dtype=np.float32, copy=True)


#: bytes per memory page (what a read of part of a row makes resident)
PAGE_BYTES = mmap.PAGESIZE


def touched_bytes(part: Sequence[int], shape: Sequence[int], itemsize: int) -> int:
    """Bytes of memory-map pages a read of a box of ``part`` voxels from a C-ordered map of ``shape``
    makes resident: whole rows when the box spans the map's last axis, else a page or two per row
    (a 128³ box of a 1024-wide float32 map holds 8 MiB but touches 64 MiB of pages)."""
    part = [int(n) for n in part] or [1]
    if len(part) < len(shape):
        part = [1] * (len(shape) - len(part)) + part
    rows = int(np.prod(part[:-1], dtype=np.int64))
    row_bytes = part[-1] * int(itemsize)
    if part[-1] >= int(shape[-1]):
        return rows * row_bytes
    return rows * (-(-row_bytes // PAGE_BYTES) + 1) * PAGE_BYTES


def resident_file_bytes() -> int | None:
    """Bytes of file-backed (and shared) pages resident in this process now (Linux ``/proc/self/statm``,
    third field); None where that is not available."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[2]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return None


class PageReleasing:
    """A read view of ``volume`` that releases its memory map's pages once ``every`` bytes of pages have
    become resident since the last release.

    Resident pages are measured (:func:`resident_file_bytes`, the process's file-backed pages), not only
    counted: a kernel that caches files in large folios maps a whole folio on a fault, so one 64³ tile of a
    1024-wide float32 map made 56-112 MiB resident where :func:`touched_bytes` counts 32 MiB (Linux 6.18;
    prediction then held 223 MiB of a 256 MiB input at its end). :func:`touched_bytes` still counts where
    ``/proc`` is missing, and releases whichever reaches ``every`` first.

    Supports what tiled prediction and the slab loops use: ``shape``, ``dtype``, ``ndim`` and basic
    slicing (returning a copied ndarray in the map's dtype)."""

    def __init__(self, volume: ArrayLike, every: int | None = None) -> None:
        self.volume, self._read = volume, 0
        self.every = RELEASE_BYTES if every is None else int(every)
        self.shape, self.dtype, self.ndim = tuple(volume.shape), volume.dtype, len(volume.shape)
        self._base = resident_file_bytes()

    def __getitem__(self, key) -> np.ndarray:
        out = np.array(self.volume[key], copy=True)
        self._account(out.shape, out.itemsize)
        return out

    def __setitem__(self, key, value) -> None:
        """Write into a writable map; its pages are flushed and released on the same rule as reads."""
        self.volume[key] = value
        self._account(np.shape(self.volume[key]), self.volume.dtype.itemsize)

    def _account(self, part: Sequence[int], itemsize: int) -> None:
        self._read += touched_bytes(part, self.shape, itemsize)
        now = resident_file_bytes()
        grown = 0 if now is None or self._base is None else now - self._base
        if self._read >= self.every or grown >= self.every:
            release_pages(self.volume)
            self._read = 0
            self._base = resident_file_bytes()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self.volume, dtype=dtype)


def page_releasing(volume: ArrayLike) -> ArrayLike:
    """``volume`` wrapped in :class:`PageReleasing` when it is a memory map, else itself."""
    return PageReleasing(volume) if _mapping(volume) is not None else volume


def _norm_key(key, shape: Sequence[int]) -> tuple[slice, ...]:
    """Basic-slicing ``key`` as three unit-step slices with explicit bounds."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    key = key + (slice(None),) * (len(shape) - len(key))
    out = []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)):
            k = int(k) + (n if k < 0 else 0)
            out.append(slice(k, k + 1))
            continue
        if not isinstance(k, slice):
            raise TypeError(f"only basic slicing is supported, got {k!r}")
        lo, hi, step = k.indices(n)
        if step != 1:
            raise TypeError("only unit-step slices are supported")
        out.append(slice(lo, max(lo, hi)))
    return tuple(out)


def _squeeze_ints(key, arr: np.ndarray) -> np.ndarray:
    key = key if isinstance(key, tuple) else (key,)
    axes = tuple(i for i, k in enumerate(key) if isinstance(k, (int, np.integer)))
    return arr.squeeze(axis=axes) if axes else arr


class MeanOf:
    """``(a + b) / 2`` of two same-shape maps, computed in float32 for the region asked for (basic slicing)."""

    def __init__(self, a: ArrayLike, b: ArrayLike) -> None:
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        self.a, self.b = page_releasing(a), page_releasing(b)
        self.shape, self.dtype, self.ndim = tuple(a.shape), np.dtype(np.float32), len(a.shape)

    def __getitem__(self, key) -> np.ndarray:
        out = read(self.a, key)
        out += read(self.b, key)
        out *= np.float32(0.5)
        return out


def gaussian_radius(sigma: float, truncate: float = TRUNCATE) -> int:
    """Radius (voxels) of scipy's Gaussian kernel of width ``sigma``: ``int(truncate·σ + 0.5)``."""
    return int(truncate * float(sigma) + 0.5)


class GaussianOf:
    """``scipy.ndimage.gaussian_filter(source, sigma, mode="reflect")`` (float32) computed for the region
    asked for only: the region grown by the kernel radius, clipped at the map's faces, is filtered and
    cropped back, which is exact (module doc). ``sigma`` in voxels; 0 returns the source."""

    def __init__(self, source: ArrayLike, sigma: float, truncate: float = TRUNCATE) -> None:
        self.source, self.sigma, self.truncate = page_releasing(source), float(sigma), float(truncate)
        self.shape, self.dtype, self.ndim = tuple(source.shape), np.dtype(np.float32), len(source.shape)
        self.radius = gaussian_radius(self.sigma, self.truncate) if self.sigma > 0 else 0

    def __getitem__(self, key) -> np.ndarray:
        sl = _norm_key(key, self.shape)
        grown = tuple(slice(max(0, s.start - self.radius), min(n, s.stop + self.radius)) for s, n in zip(sl, self.shape))
        region = read(self.source, grown)
        if self.sigma > 0:
            ndimage.gaussian_filter(region, self.sigma, mode="reflect", truncate=self.truncate, output=region)
        inner = tuple(slice(s.start - g.start, s.stop - g.start) for s, g in zip(sl, grown))
        return _squeeze_ints(key, region[inner])


def gaussian_inplace(volume: np.ndarray, sigma: float, block_voxels: int | None = None,
                     truncate: float = TRUNCATE) -> np.ndarray:
    """Gaussian low-pass (``mode="reflect"``, width ``sigma`` voxels) of a writable float32 (z, y, x)
    array or memory map, in place, by chunks: whole z-columns of y-blocks along z, then z-slabs along y
    and x (the filter is separable, so this is ``scipy.ndimage.gaussian_filter``'s own order).
    Memory beyond ``volume``: about ``block_voxels`` (default :data:`SLAB_VOXELS`) float32 voxels.
    Returns ``volume``."""
    block_voxels = SLAB_VOXELS if block_voxels is None else int(block_voxels)
    if volume.dtype != np.float32 or volume.ndim != 3:
        raise ValueError(f"gaussian_inplace needs a float32 (z, y, x) array, got {volume.dtype} {volume.shape}")
    if sigma <= 0:
        return volume
    nz, ny, nx = volume.shape
    rows = max(1, int(block_voxels) // max(1, nz * nx))
    # a memory map's z-columns are read and written a few planes at a time through PageReleasing: a column
    # of 16 rows of every plane maps a whole page-cache folio per plane (256 planes of a 256×1024×1024 map:
    # ~700 MiB resident at once, measured), so its pages are released as they grow
    view = page_releasing(volume)
    step = COLUMN_PLANES if view is not volume else nz
    for y0 in range(0, ny, rows):
        ys = slice(y0, min(y0 + rows, ny))
        col = np.empty((nz, ys.stop - y0, nx), dtype=np.float32)
        for z0 in range(0, nz, step):
            col[z0:z0 + step] = view[z0:z0 + step, ys, :]
        ndimage.gaussian_filter1d(col, sigma, axis=0, mode="reflect", truncate=truncate, output=col)
        for z0 in range(0, nz, step):
            view[z0:z0 + step, ys, :] = col[z0:z0 + step]
        release_pages(volume)
    for z0, z1 in z_slabs(volume.shape, max(1, int(block_voxels) // max(1, ny * nx))):
        slab = np.array(volume[z0:z1], dtype=np.float32)
        ndimage.gaussian_filter1d(slab, sigma, axis=1, mode="reflect", truncate=truncate, output=slab)
        ndimage.gaussian_filter1d(slab, sigma, axis=2, mode="reflect", truncate=truncate, output=slab)
        volume[z0:z1] = slab
        release_pages(volume)
    return volume


# --------------------------------------------------------------------------------------------
# moments
# --------------------------------------------------------------------------------------------
@dataclass
class Moments:
    """Count, means (k,) and co-moment matrix (k, k) (float64) of k maps over the same voxels, and each
    map's min and max."""

    n: int
    mean: np.ndarray
    comoment: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray

    def std(self, i: int) -> float:
        """Population standard deviation of map ``i``."""
        return math.sqrt(max(float(self.comoment[i, i]) / self.n, 0.0))

    def corr(self, i: int, j: int) -> float:
        """Pearson correlation of maps ``i`` and ``j`` (0 when either is constant)."""
        den = math.sqrt(float(self.comoment[i, i]) * float(self.comoment[j, j]))
        return float(self.comoment[i, j]) / den if den > 0 else 0.0

    def affine(self, x: int, t: int) -> tuple[float, float, float]:
        """Least-squares ``a·x + b ≈ t`` between maps ``x`` and ``t``: ``(a, b, mean squared residual)``."""
        cxx, cxt, ctt = (float(self.comoment[i, j]) for i, j in ((x, x), (x, t), (t, t)))
        a = cxt / cxx if cxx > 0 else 0.0
        b = float(self.mean[t]) - a * float(self.mean[x])
        resid = ctt - (cxt * cxt / cxx if cxx > 0 else 0.0)
        return a, b, max(resid, 0.0) / self.n


def moments(maps: Sequence[ArrayLike], planes: int | None = None) -> Moments:
    """:class:`Moments` of same-shape ``maps`` accumulated over z-slabs (float64, pairwise update)."""
    shape = tuple(maps[0].shape)
    k = len(maps)
    maps = [page_releasing(m) for m in maps]
    n, mean, com = 0, np.zeros(k), np.zeros((k, k))
    lo, hi = np.full(k, np.inf), np.full(k, -np.inf)
    planes = slab_planes(shape, SLAB_VOXELS // max(1, 2 * k)) if planes is None else planes
    for z0, z1 in z_slabs(shape, planes):
        x = np.stack([read(m, (slice(z0, z1),)).reshape(-1) for m in maps]).astype(np.float64)
        m_b = x.shape[1]
        mu_b = x.mean(axis=1)
        lo, hi = np.minimum(lo, x.min(axis=1)), np.maximum(hi, x.max(axis=1))
        x -= mu_b[:, None]
        c_b = x @ x.T
        del x
        delta = mu_b - mean
        tot = n + m_b
        com += c_b + np.outer(delta, delta) * (n * m_b / tot)
        mean += delta * (m_b / tot)
        n = tot
    return Moments(n, mean, com, lo, hi)


# --------------------------------------------------------------------------------------------
# FSC over stated crops
# --------------------------------------------------------------------------------------------
def crop_slices(shape: Sequence[int], edge: int | None = None) -> list[tuple[slice, slice, slice]]:
    """The crops of a (z, y, x) map over which its FSC is estimated (module doc): per axis one centred
    box of ``min(edge, n)`` voxels, or two centred at n/4 and 3n/4 when ``n ≥ 2·edge``; all combinations.
    ``edge`` defaults to :data:`FSC_CROP`."""
    edge = FSC_CROP if edge is None else int(edge)
    per_axis = []
    for n in (int(s) for s in shape):
        e = min(int(edge), n)
        if n >= 2 * e:
            starts = [min(max(c - e // 2, 0), n - e) for c in (n // 4, (3 * n) // 4)]
        else:
            starts = [(n - e) // 2]
        per_axis.append([slice(s, s + e) for s in starts])
    return [(a, b, c) for a in per_axis[0] for b in per_axis[1] for c in per_axis[2]]


def crop_spectra(volume: ArrayLike, crop: tuple[slice, ...]) -> torch.Tensor:
    """rfft (complex128) of ``volume``'s crop."""
    return torch.fft.rfftn(torch.from_numpy(read(volume, crop).astype(np.float64)))


def crop_shell_sums(pairs: Sequence[tuple[ArrayLike, ArrayLike]], edge: int | None = None,
                    fourier_mask: Callable[[tuple[int, int, int]], torch.Tensor] | None = None
                    ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Shell sums (P, 3, n_shells) float64 (``Re Σ A·conj(B)``, ``Σ|A|²``, ``Σ|B|²``) of P map pairs over
    the crops of :func:`crop_slices`, added over the crops, and the crop shape (whose shells they are).
    ``fourier_mask(crop_shape)``: an optional rfft-grid weight of the coefficients (e.g. the missing wedge)."""
    shape = tuple(pairs[0][0].shape)
    views = {id(v): page_releasing(v) for pair in pairs for v in pair}
    crops = crop_slices(shape, edge)
    cshape = tuple(s.stop - s.start for s in crops[0])
    n = fourier.n_shells(cshape)
    idx = fourier.shell_index(cshape)
    weights = None if fourier_mask is None else fourier_mask(cshape)
    total = np.zeros((len(pairs), 3, n))
    for crop in crops:
        cache: dict[int, torch.Tensor] = {}

        def spec(v: ArrayLike) -> torch.Tensor:
            if id(v) not in cache:
                cache[id(v)] = crop_spectra(views[id(v)], crop)
            return cache[id(v)]

        for p, (a, b) in enumerate(pairs):
            total[p] += fourier.fsc_shell_sums(spec(a), spec(b), idx, n, nx=cshape[2],
                                               coefficient_weights=weights)[0].double().numpy()
    return total, cshape


def crop_fsc(a: ArrayLike, b: ArrayLike, edge: int | None = None,
             fourier_mask: Callable[[tuple[int, int, int]], torch.Tensor] | None = None
             ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """FSC curve (float64) of two maps estimated over the crops of :func:`crop_slices`, and the crop
    shape whose shells it has (``fourier.shell_frequencies(crop_shape)``)."""
    sums, cshape = crop_shell_sums([(a, b)], edge, fourier_mask)
    return fourier.fsc_from_sums(torch.from_numpy(sums[0])).numpy(), cshape


# --------------------------------------------------------------------------------------------
# overlap-save Fourier filtering
# --------------------------------------------------------------------------------------------
def _frequency_radius(shape: Sequence[int]) -> torch.Tensor:
    """|f| (cycles/voxel) of every coefficient of the rfft grid of ``shape`` (float64)."""
    fz = torch.fft.fftfreq(shape[0], dtype=torch.float64)[:, None, None]
    fy = torch.fft.fftfreq(shape[1], dtype=torch.float64)[None, :, None]
    fx = torch.fft.rfftfreq(shape[2], dtype=torch.float64)[None, None, :]
    return torch.sqrt(fz * fz + fy * fy + fx * fx)


def _reflect_read(volume: ArrayLike, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
    """``volume[lo:hi]`` per axis (float32), reflected (scipy ``reflect``, edge voxel repeated) where the
    range leaves the map."""
    shape = tuple(volume.shape)
    inside = tuple(slice(max(0, a), min(n, b)) for a, b, n in zip(lo, hi, shape))
    block = read(volume, inside)
    pads = [(s.start - a, b - s.stop) for a, b, s in zip(lo, hi, inside)]
    if any(p for pr in pads for p in pr):
        block = np.pad(block, pads, mode="symmetric")
    return block


def fourier_filter_blockwise(sources: Sequence[ArrayLike], frequencies: np.ndarray, weights: Sequence[np.ndarray],
                             out: np.ndarray, block: int = FILTER_BLOCK, halo: int = FILTER_HALO) -> np.ndarray:
    """``out = F⁻¹(Σ_i w_i(|f|) · F(sources[i]))`` by overlap-save (module doc), into the writable
    float32 (z, y, x) ``out``. ``weights[i]`` are given at ``frequencies`` (cycles/voxel, ascending) and
    interpolated linearly at each block coefficient's |f| (beyond the last frequency: the last weight)."""
    shape = tuple(out.shape)
    if any(tuple(s.shape) != shape for s in sources) or len(weights) != len(sources):
        raise ValueError("fourier_filter_blockwise needs one weight curve per source, all of the output's shape")
    freqs = np.asarray(frequencies, dtype=np.float64)
    sources = [page_releasing(s) for s in sources]
    core = [max(1, min(int(block) - 2 * int(halo), n)) for n in shape]
    cache: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for z0 in range(0, shape[0], core[0]):
        for y0 in range(0, shape[1], core[1]):
            for x0 in range(0, shape[2], core[2]):
                c0 = (z0, y0, x0)
                c1 = tuple(min(c + k, n) for c, k, n in zip(c0, core, shape))
                lo = tuple(c - halo for c in c0)
                hi = tuple(c + halo for c in c1)
                bshape = tuple(b - a for a, b in zip(lo, hi))
                if bshape not in cache:
                    r = _frequency_radius(bshape).numpy()
                    cache[bshape] = [torch.from_numpy(np.interp(r, freqs, np.asarray(w, np.float64))) for w in weights]
                spec = None
                for src, w in zip(sources, cache[bshape]):
                    term = torch.fft.rfftn(torch.from_numpy(_reflect_read(src, lo, hi).astype(np.float64))) * w
                    spec = term if spec is None else spec + term
                res = torch.fft.irfftn(spec, s=bshape).numpy()
                out[c0[0]:c1[0], c0[1]:c1[1], c0[2]:c1[2]] = res[halo:halo + c1[0] - c0[0], halo:halo + c1[1] - c0[1],
                                                                 halo:halo + c1[2] - c0[2]]
        release_pages(out)
    return out


def central_slices(volume: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The central XY, XZ and YZ slices (float32) of a (z, y, x) map, read by z-slabs (a memory map's
    pages released between them), as ``vol[z // 2], vol[:, y // 2, :], vol[:, :, x // 2]``."""
    nz, ny, nx = (int(n) for n in volume.shape)
    view = page_releasing(volume)
    xz = np.empty((nz, nx), np.float32)
    yz = np.empty((nz, ny), np.float32)
    for z0, z1 in z_slabs(volume.shape):
        slab = read(view, (slice(z0, z1),))
        xz[z0:z1], yz[z0:z1] = slab[:, ny // 2, :], slab[:, :, nx // 2]
    return read(view, (slice(nz // 2, nz // 2 + 1),))[0], xz, yz


def open_map(path, level: int = 0, bin: int = 1, *, check_finite: bool = True):
    """A map (MRC file or OME-Zarr store / URL, through :func:`cryorestore.volume_io.read_volume`, level
    ``level``, Fourier-binned by ``bin``) as a :class:`cryorestore.io.Volume` (voxel size in Å).

    Read into memory as float32 (today's exact path) when binned or not large (:func:`is_large`); a
    large map is returned lazily instead: an MRC file memory-mapped (the file's dtype) with the NaN/Inf
    check made slab by slab while the map's pages are released, an OME-Zarr level as a
    :class:`cryorestore.volume_io.LazyLevel` (float32 blocks, each checked as it is read), so opening a
    map costs no resident copy of it."""
    from cryorestore import volume_io

    if int(bin) > 1 or not is_large(volume_io.volume_header(path, int(level))[0]):
        return volume_io.read_volume(path, level, bin, check_finite=check_finite)
    if volume_io.is_zarr(path):
        return volume_io.read_volume(path, level, bin, lazy=True, check_finite=check_finite)
    vol = volume_io.read_volume(path, level, bin, lazy=True, check_finite=False)
    if check_finite:
        check_finite_slabs(vol.data, path)
    return vol


def write_map(path, volume: ArrayLike, voxel_size: float):
    """Write ``volume`` (z, y, x) as :func:`cryorestore.volume_io.write_volume` does (an OME-Zarr pyramid
    when ``path`` ends in ``.zarr``, else MRC; atomically), but an MRC of a lazy view, a memory map or a
    large array (:func:`is_large`) slab by slab (:func:`write_mrc_slabs`, header statistics accumulated per
    slab) instead of through whole-volume temporaries (mrcfile's statistics allocate a full-size copy).
    Returns the path."""
    from pathlib import Path

    from cryorestore import volume_io

    in_memory = isinstance(volume, np.ndarray) and not isinstance(volume, np.memmap)
    if (in_memory and not is_large(volume.shape)) or volume_io.is_zarr(path) \
            or str(path).rstrip("/").lower().endswith(volume_io.ZARR_SUFFIX):
        return volume_io.write_volume(path, volume, voxel_size)
    write_mrc_slabs(path, volume, voxel_size)
    return Path(path)


def check_finite_slabs(volume: ArrayLike, name) -> None:
    """:class:`cryorestore.errors.InputError` (naming ``name``) when ``volume`` holds NaN or Inf; read by
    z-slabs, releasing a memory map's pages between them."""
    from cryorestore.errors import InputError

    bad = 0
    for z0, z1 in z_slabs(volume.shape):
        bad += int((~np.isfinite(volume[z0:z1])).sum())
        release_pages(volume)
    if bad:
        raise InputError(f"{name} contains {bad} NaN or infinite voxels; fix or mask them first")


def write_mrc_slabs(path, source: ArrayLike, voxel_size: float) -> None:
    """Write ``source`` (z, y, x) as a float32 MRC file slab by slab (atomically, through
    :func:`cryorestore.io.atomic_path`), with the header statistics accumulated on the way; memory: one slab."""
    import mrcfile

    from cryorestore import io
    from cryorestore.errors import InputError

    if voxel_size is None or not np.isfinite(voxel_size) or voxel_size <= 0:
        raise InputError(f"voxel size must be a positive number of Å, got {voxel_size}")
    shape = tuple(int(s) for s in source.shape)
    source = page_releasing(source)
    with io.atomic_path(path) as tmp:
        with mrcfile.new_mmap(tmp, shape=shape, mrc_mode=2, overwrite=True) as mrc:
            lo, hi, s, s2 = np.inf, -np.inf, 0.0, 0.0
            for z0, z1 in z_slabs(shape):
                slab = read(source, (slice(z0, z1),))
                mrc.data[z0:z1] = slab
                lo, hi = min(lo, float(slab.min())), max(hi, float(slab.max()))
                s += float(slab.sum(dtype=np.float64))
                s2 += float(np.square(slab, dtype=np.float64).sum())
                release_pages(mrc.data)
            n = float(np.prod(shape))
            mrc.voxel_size = float(voxel_size)
            mean = s / n
            mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = lo, hi, mean
            mrc.header.rms = math.sqrt(max(s2 / n - mean * mean, 0.0))


class SignedSumOf:
    """``a + sign·b`` of two same-shape maps, computed in float32 for the region asked for (basic slicing);
    e.g. a map of one half, ``g(e) = P + D`` and ``g(o) = P − D``, from the restored mean ``P`` and the
    half spread ``D = (g(e) − g(o)) / 2``."""

    def __init__(self, a: ArrayLike, b: ArrayLike, sign: float = 1.0) -> None:
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        self.a, self.b, self.sign = page_releasing(a), page_releasing(b), np.float32(sign)
        self.shape, self.dtype, self.ndim = tuple(a.shape), np.dtype(np.float32), len(a.shape)

    def __getitem__(self, key) -> np.ndarray:
        out = read(self.a, key)
        part = read(self.b, key)
        part *= self.sign
        out += part
        return out


class ScratchMap:
    """A float32 (z, y, x) array of ``shape`` backed by a temporary file in ``folder`` (a writable
    ``np.memmap``; its pages are released by :func:`release_pages` as callers go), removed by
    :meth:`close` (also on garbage collection). For a second full-size map that must not stay in RAM."""

    def __init__(self, shape: Sequence[int], folder=None) -> None:
        import os
        import tempfile

        fd, name = tempfile.mkstemp(prefix=".cryorestore-scratch.", suffix=".f32", dir=folder)
        os.close(fd)
        self.path = name
        self.array: np.memmap | None = np.memmap(name, dtype=np.float32, mode="w+",
                                                 shape=tuple(int(s) for s in shape))

    def close(self) -> None:
        import contextlib
        import os

        self.array = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __del__(self) -> None:
        self.close()


def copy_slabs(source: ArrayLike, dest: ArrayLike) -> None:
    """``dest[...] = source`` z-slab by z-slab, releasing both maps' pages as it goes."""
    src = page_releasing(source)
    for z0, z1 in z_slabs(dest.shape):
        dest[z0:z1] = read(src, (slice(z0, z1),))
        release_pages(dest)
