"""Subtomogram sampling for training: paired boxes from half tomograms, validation split, normalisation.

Conventions: volumes are float32 (z, y, x); sizes and positions are in voxels.

* A *pair* is two boxes cut at the same position from the even and the odd half tomogram of one
  dataset (single-map mode: one box from one volume). Several datasets can be sampled at once.
* Box centres are drawn uniformly at random (seeded) among voxels of the *sampling mask*: a centre is
  allowed where the whole box fits in the (padded) volume and where the local standard deviation
  of the half-set mean over a (box/2)-wide neighbourhood is at or above the
  ``min_std_percentile``-th percentile of that volume's local standard deviations and not flat
  (above 1e-6 × their median). This skips flat empty margins (e.g. the zero padding outside a
  reconstructed slab) but keeps every region with structure or noise.
* A volume thinner than the box along an axis is reflect-padded to the box size along that axis.
* Validation is spatially disjoint from training (as in cryoCARE): in each tomogram a slab at the far
  end of its longer in-plane axis (y, or x when x is longer) is held out, at least one box edge thick
  (``val_fraction`` of the axis when that is more). Validation boxes are drawn only inside the slab;
  training boxes end at least ``gap`` voxels (default: one box edge; the trainer passes the
  training-crop edge, which for rotating methods is smaller than the box cut around it) before it,
  so no validation voxel lies in, or next to, a training box (:class:`SlabSplit`). An axis shorter than
  ``2 · box + gap`` cannot be split and is an input error.
* Normalisation: one mean and standard deviation over all input volumes (all halves of all
  datasets); boxes are stored as ``(v − mean) / std`` and the statistics go into the model
  directory so that predictions come back in the input's grey scale.

Large maps (bounded memory)
---------------------------
When any map has more than :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels, no whole-volume
array is made: the maps stay memory-mapped (or chunked) array-likes and

* the normalisation is estimated (:func:`estimate_normalization`) from :data:`NORM_SAMPLE_ROWS`
  x-rows per map drawn at seeded random (z, y) without replacement (``4096 × nx`` voxels, e.g. 4 Mi
  voxels for nx = 1024), each map weighted by its voxel count;
* the sampling mask is *coarse* (:class:`CoarseCentres`): the volume (reflect-padded where thinner
  than the box, through index maps) is cut into cells of ``max(3, box // 2)`` voxels per axis (the
  exact mask's neighbourhood width), read in z-slabs; a cell's standard deviation of the half-set
  mean stands for the local standard deviation of every centre in it, and the percentile and
  flatness criteria apply to the cells that hold geometrically allowed centres. Centres are drawn
  uniformly among the allowed centres of the allowed cells (with replacement), inside the training
  or validation region exactly as for small maps;
* boxes are read one at a time from the maps and normalised as they are read.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from cryorestore import blockwise
from cryorestore.errors import InputError

#: x-rows per map read by :func:`estimate_normalization` (large maps)
NORM_SAMPLE_ROWS = 4096


@dataclass(frozen=True)
class Normalization:
    """Grey-level statistics: the network sees ``(v − mean) / std``; outputs map back by the inverse."""

    mean: float
    std: float

    def apply(self, v: np.ndarray) -> np.ndarray:
        return ((v - self.mean) / self.std).astype(np.float32)

    def invert(self, v: np.ndarray) -> np.ndarray:
        return (v * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(float(d["mean"]), float(d["std"]))


def compute_normalization(volumes: Sequence[np.ndarray]) -> Normalization:
    """Mean and standard deviation over all voxels of all ``volumes`` (accumulated in float64)."""
    if not volumes:
        raise InputError("no volumes given to compute normalisation statistics")
    n = 0
    s = 0.0
    s2 = 0.0
    for v in volumes:
        a = np.asarray(v, dtype=np.float64)
        n += a.size
        s += float(a.sum())
        s2 += float(np.square(a).sum())
    mean = s / n
    var = max(s2 / n - mean * mean, 0.0)
    std = float(np.sqrt(var))
    if not np.isfinite(std) or std <= 1e-12 * max(1.0, abs(mean)):
        raise InputError("the input volumes are constant (standard deviation 0); nothing to restore")
    return Normalization(float(mean), std)


def estimate_normalization(volumes: Sequence, seed: int = 0, rows: int = NORM_SAMPLE_ROWS) -> Normalization:
    """Mean and standard deviation estimated from ``rows`` whole x-rows per map (all rows when a map has
    fewer) drawn at seeded random (z, y) positions without replacement; each map's sample is weighted by
    the map's voxel count. Reads only those rows (pages of a memory map are released as it goes)."""
    if not volumes:
        raise InputError("no volumes given to compute normalisation statistics")
    rng = np.random.default_rng([int(seed), 0x40e])
    n = s = s2 = 0.0
    for v in volumes:
        nz, ny, nx = (int(k) for k in v.shape)
        k = min(int(rows), nz * ny)
        picks = np.sort(rng.choice(nz * ny, size=k, replace=False))
        sample = _sample_rows(v, picks // ny, picks % ny)
        weight = float(nz * ny * nx) / sample.size
        n += weight * sample.size
        s += weight * float(sample.sum())
        s2 += weight * float(np.square(sample).sum())
        blockwise.release_pages(v)
    mean = s / n
    std = float(np.sqrt(max(s2 / n - mean * mean, 0.0)))
    if not np.isfinite(std) or std <= 1e-12 * max(1.0, abs(mean)):
        raise InputError("the input volumes are constant (standard deviation 0); nothing to restore")
    return Normalization(float(mean), std)


def _sample_rows(volume, zs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The whole x-rows ``volume[zs[i], ys[i], :]`` as a (len(zs), nx) float64 array, in the order given.

    A chunked store (``volume.chunk_shape``, e.g. an OME-Zarr level) is read by chunk bands: the rows
    that share a (z, y) chunk come from one read of the picked rows' bounding box in that band, so each
    chunk is decoded once, not once per row (4096 rows of a 1024-wide map in 128³ chunks decoded 8
    chunks per row). A memory map is read row by row, its pages released as it goes."""
    nx = int(volume.shape[2])
    chunk = getattr(volume, "chunk_shape", None)
    if chunk is None:
        view = blockwise.page_releasing(volume)
        return np.stack([np.asarray(view[int(z), int(y), :], dtype=np.float64) for z, y in zip(zs, ys)])
    out = np.empty((len(zs), nx), dtype=np.float64)
    band = (np.asarray(zs) // int(chunk[0])) * (int(volume.shape[1]) // int(chunk[1]) + 1) + np.asarray(ys) // int(chunk[1])
    for key in np.unique(band):
        rows = np.flatnonzero(band == key)
        z0, z1 = int(zs[rows].min()), int(zs[rows].max()) + 1
        y0, y1 = int(ys[rows].min()), int(ys[rows].max()) + 1
        block = np.asarray(volume[z0:z1, y0:y1, :])
        out[rows] = block[zs[rows] - z0, ys[rows] - y0]
    return out


def pad_to_box(volume: np.ndarray, box: int) -> np.ndarray:
    """Reflect-pad a (z, y, x) volume symmetrically along every axis shorter than ``box`` voxels."""
    out = volume
    while any(n < box for n in out.shape):
        pads = []
        for n in out.shape:
            extra = min(max(box - n, 0), 2 * (n - 1))  # reflect padding must stay below n per side
            pads.append((extra // 2, extra - extra // 2))
        out = np.pad(out, pads, mode="reflect")
    return out


def local_std(volume: np.ndarray, size: int, slab: int = 32) -> np.ndarray:
    """Standard deviation over the ``size``³-voxel neighbourhood of every voxel (reflect at the borders).

    Computed in float64 on z-slabs of ``slab`` planes plus the halo their neighbourhoods reach
    (``size // 2`` planes before, ``(size − 1) // 2`` after) and returned as float32: beyond the
    result, the memory is about four float64 arrays of ``slab + size`` planes, whatever the depth.
    """
    out = np.empty(volume.shape, dtype=np.float32)
    nz = volume.shape[0]
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        h0, h1 = max(z0 - size // 2, 0), min(z1 + (size - 1) // 2, nz)
        v = volume[h0:h1].astype(np.float64)
        m1 = ndimage.uniform_filter(v, size=size, mode="reflect")
        v *= v
        m2 = ndimage.uniform_filter(v, size=size, mode="reflect")
        del v
        m1 *= m1
        m2 -= m1
        del m1
        np.clip(m2, 0.0, None, out=m2)
        out[z0:z1] = np.sqrt(m2[z0 - h0:z1 - h0])
    return out


def sampling_mask(volume: np.ndarray, box: int, min_std_percentile: float = 5.0) -> np.ndarray:
    """Boolean (z, y, x) mask of allowed box centres (centre = corner + box // 2); see module docstring."""
    if not 0.0 <= min_std_percentile < 100.0:
        raise InputError(f"min_std_percentile must lie in [0, 100), got {min_std_percentile}")
    shape = volume.shape
    if any(n < box for n in shape):
        raise ValueError(f"volume {shape} is smaller than the box {box}; pad it first")
    allowed = np.zeros(shape, dtype=bool)
    lo = box // 2
    sl = tuple(slice(lo, n - (box - lo) + 1) for n in shape)
    allowed[sl] = True
    if min_std_percentile > 0:
        sd = local_std(volume, max(3, box // 2))
        inside = sd[sl].flatten()  # the centres where the whole box fits (a copy: reordered in place below)
        thr = np.percentile(inside, min_std_percentile, overwrite_input=True)
        floor = 1e-6 * float(np.median(inside, overwrite_input=True))
        del inside
        keep = allowed & (sd >= thr) & (sd > floor)
        if keep.any():
            allowed = keep
    return allowed


def volume_fingerprint(volume: np.ndarray, n: int = 16) -> list[float]:
    """``n`` voxel values of a (z, y, x) volume at fixed positions spread over it (read cheaply from a
    memory map): which of a model's training tomograms a map is, without trusting its file name."""
    shape = tuple(volume.shape)
    out = []
    for i in range(n):  # one-voxel slices, so that lazy OME-Zarr levels (which read blocks) serve too
        z, y, x = (i * 7 + 3) % shape[0], (i * 11 + 5) % shape[1], (i * 13 + 1) % shape[2]
        out.append(float(np.asarray(volume[z:z + 1, y:y + 1, x:x + 1]).reshape(-1)[0]))
    return out


@dataclass(frozen=True)
class SlabSplit:
    """Where one tomogram's training and validation boxes may lie (voxels of the padded volume).

    Along ``axis`` (1 = y, 2 = x): training boxes lie entirely in ``[0, train_stop)``, validation
    boxes entirely in ``[val_start, n)``; ``val_start − train_stop`` is the gap (≥ one box edge).
    """

    axis: int
    train_stop: int
    val_start: int

    def holdout(self, shape: Sequence[int]) -> dict:
        """The held-out slab in the *input* tomogram's voxels, for the model directory's ``config.json``:
        ``axis`` (1 y, 2 x), ``start``, ``stop`` (exclusive; the slab no training box touches),
        ``train_stop`` (training boxes lie below it) and the tomogram's ``shape`` (z, y, x).

        The split axis is never padded (:func:`slab_split` needs at least two boxes along it and
        :func:`pad_to_box` pads only axes shorter than one), so padded and input coordinates agree on it."""
        n = int(shape[self.axis])
        if not 0 < self.val_start < n:
            raise ValueError(f"the split {self} does not lie in a tomogram of shape {tuple(shape)}")
        return {"axis": self.axis, "start": self.val_start, "stop": n, "train_stop": self.train_stop,
                "shape": [int(v) for v in shape]}

    def describe(self) -> str:
        a = "zyx"[self.axis]
        return f"training boxes in {a} < {self.train_stop}, validation boxes in {a} >= {self.val_start}"


def slab_split(shape: Sequence[int], box: int, val_fraction: float, gap: int | None = None) -> SlabSplit:
    """Hold out the far end of the longer in-plane axis of a (z, y, x) ``shape`` (see module docstring)."""
    gap = int(box) if gap is None else int(gap)
    if gap < 0:
        raise InputError(f"the gap between training and validation boxes must be >= 0, got {gap}")
    axis = 1 if shape[1] >= shape[2] else 2
    n = int(shape[axis])
    width = max(int(box), math.ceil(val_fraction * n))
    val_start = n - width
    train_stop = val_start - gap
    if train_stop < box:
        raise InputError(f"a tomogram of {tuple(int(s) for s in shape)} voxels is too small for a disjoint "
                         f"validation slab: boxes of {box} voxels need {2 * box + gap} voxels along "
                         f"{'zyx'[axis]} (training box, gap of {gap}, validation box); use a smaller "
                         f"--subtomo-size or a bigger tomogram")
    return SlabSplit(axis, train_stop, val_start)


def _region_mask(mask: np.ndarray, box: int, axis: int, lo: int, hi: int) -> np.ndarray:
    """Allowed centres of ``mask`` whose box (corner = centre − box // 2) lies inside [lo, hi) along ``axis``.

    When the local-contrast criterion leaves no centre in the region, every geometrically allowed
    centre of the region is kept (the region must not go empty because it is flat).
    """
    region = np.zeros(mask.shape, dtype=bool)
    sl: list[slice] = [slice(None)] * 3
    sl[axis] = slice(lo + box // 2, hi - box + box // 2 + 1)
    region[tuple(sl)] = True
    keep = mask & region
    if keep.any():
        return keep
    geometric = np.zeros(mask.shape, dtype=bool)
    lo_c = box // 2
    geometric[tuple(slice(lo_c, n - (box - lo_c) + 1) for n in mask.shape)] = True
    return geometric & region


def _share(total: int, counts: np.ndarray) -> np.ndarray:
    """Split ``total`` boxes among datasets in proportion to ``counts`` (the remainder to the largest)."""
    share = np.floor(total * counts / counts.sum()).astype(int)
    share[np.argmax(counts)] += total - share.sum()
    return share


def _draw_corners(mask: np.ndarray, k: int, box: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` box corners (k, 3) whose centres are drawn uniformly among the ``mask`` voxels."""
    idx = np.flatnonzero(mask)
    pick = rng.choice(idx, size=int(k), replace=idx.size < k)
    return np.stack(np.unravel_index(pick, mask.shape), axis=1) - box // 2


def pad_index(n: int, box: int) -> np.ndarray:
    """Source index of every position along an axis of ``n`` voxels after :func:`pad_to_box` (same
    reflections, same rounds)."""
    idx = np.arange(int(n))
    while len(idx) < box:  # pad_to_box's rounds, along one axis
        extra = min(box - len(idx), 2 * (len(idx) - 1))
        if extra <= 0:
            raise InputError(f"an axis of {n} voxel cannot be padded to a box of {box}")
        idx = np.pad(idx, (extra // 2, extra - extra // 2), mode="reflect")
    return idx


class PaddedView:
    """A (z, y, x) array-like read as :func:`pad_to_box` would pad it, without copying it: basic slicing
    of the padded coordinates returns a float32 ndarray."""

    def __init__(self, volume, box: int) -> None:
        self.volume = volume
        self.index = [pad_index(int(n), int(box)) for n in volume.shape]
        self.shape = tuple(len(i) for i in self.index)
        self.ndim, self.dtype = 3, np.dtype(np.float32)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        src, take = [], []
        for k, idx in zip(key, self.index):
            sel = idx[k]
            lo, hi = int(sel.min()), int(sel.max()) + 1
            src.append(slice(lo, hi))
            take.append(None if (hi - lo == len(sel) and np.array_equal(sel, np.arange(lo, hi))) else sel - lo)
        out = blockwise.read(self.volume, tuple(src))
        for axis, t in enumerate(take):
            if t is not None:
                out = np.take(out, t, axis=axis)
        return out


class CoarseCentres:
    """The allowed box centres of one (padded) volume for large maps (module doc): cells of ``cell``
    voxels per axis whose standard deviation passes the criteria, each intersected with the centres
    where the box fits. :meth:`region` restricts them to boxes inside ``[lo, hi)`` along an axis."""

    def __init__(self, volume, box: int, min_std_percentile: float = 5.0) -> None:
        if not 0.0 <= min_std_percentile < 100.0:
            raise InputError(f"min_std_percentile must lie in [0, 100), got {min_std_percentile}")
        self.shape = tuple(int(n) for n in volume.shape)
        self.box = int(box)
        self.cell = max(3, self.box // 2)
        c = self.cell
        grid = tuple(-(-n // c) for n in self.shape)
        lo = self.box // 2
        self.geometric = [(lo, n - (self.box - lo)) for n in self.shape]  # inclusive centre bounds per axis
        sd = self._cell_std(volume, grid)
        fits = np.ones(grid, dtype=bool)
        for axis, (a, b) in enumerate(self.geometric):  # cells holding at least one geometric centre
            starts = np.arange(grid[axis]) * c
            ok = (starts <= b) & (np.minimum(starts + c - 1, self.shape[axis] - 1) >= a)
            view = [1, 1, 1]
            view[axis] = grid[axis]
            fits &= ok.reshape(view)
        allowed = fits.copy()
        if min_std_percentile > 0 and fits.any():
            inside = sd[fits]
            thr = np.percentile(inside, min_std_percentile)
            floor = 1e-6 * float(np.median(inside))
            keep = fits & (sd >= thr) & (sd > floor)
            if keep.any():
                allowed = keep
        self.fits, self.allowed = fits, allowed

    def _cell_std(self, volume, grid) -> np.ndarray:
        c = self.cell
        s1, s2, cnt = (np.zeros(grid) for _ in range(3))
        ys, xs = np.arange(0, self.shape[1], c), np.arange(0, self.shape[2], c)
        for gz, z0 in enumerate(range(0, self.shape[0], c)):
            slab = np.asarray(volume[z0:z0 + c], dtype=np.float32)
            for acc, v in ((s1, slab), (s2, np.square(slab))):
                part = np.add.reduceat(np.add.reduceat(v.sum(axis=0, dtype=np.float64), ys, axis=0), xs, axis=1)
                acc[gz] += part
            hz = slab.shape[0]
            cnt[gz] = hz * np.outer(np.diff(np.append(ys, self.shape[1])), np.diff(np.append(xs, self.shape[2])))
        mean = s1 / cnt
        return np.sqrt(np.clip(s2 / cnt - mean * mean, 0.0, None))

    def _boxes(self, cells: np.ndarray, bounds: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) inclusive centre bounds (k, 3) of ``cells`` (k, 3) within ``bounds``."""
        c = self.cell
        lo = np.maximum(cells * c, np.array([b[0] for b in bounds]))
        hi = np.minimum(cells * c + c - 1, np.array([b[1] for b in bounds]))
        hi = np.minimum(hi, np.array(self.shape) - 1)
        return lo, hi

    def region(self, axis: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) inclusive centre bounds (k, 3) of the non-empty cell pieces whose boxes lie in
        ``[lo, hi)`` along ``axis``; every geometric cell when no allowed centre is left there."""
        bounds = list(self.geometric)
        a, b = bounds[axis]
        bounds[axis] = (max(a, lo + self.box // 2), min(b, hi - self.box + self.box // 2))
        for mask in (self.allowed, self.fits):
            blo, bhi = self._boxes(np.argwhere(mask), bounds)
            ok = np.all(bhi >= blo, axis=1)
            if ok.any():
                return blo[ok], bhi[ok]
        return np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64)


def _draw_groups(groups, count: Callable, draw: Callable, box: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Box positions for each ``(regions, total)`` of ``groups`` (training, then validation): ``total``
    boxes shared among the tomograms' regions in proportion to ``count(region)`` (:func:`_share`), drawn
    by ``draw(region, k, box, rng)``; each group an (n, 4) int64 array of (tomogram, z, y, x) corners in
    random order."""
    out = []
    for regions, total in groups:
        rows = []
        counts = np.array([count(r) for r in regions], dtype=np.float64)
        for i, (r, k) in enumerate(zip(regions, _share(total, counts))):
            if k > 0:
                rows.extend((i, *c) for c in draw(r, int(k), box, rng))
        rows_arr = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        out.append(rows_arr[rng.permutation(len(rows_arr))])
    return out


def _count(pieces: tuple[np.ndarray, np.ndarray]) -> int:
    lo, hi = pieces
    return int(np.prod(hi - lo + 1, axis=1).sum()) if len(lo) else 0


def _draw_from_pieces(pieces: tuple[np.ndarray, np.ndarray], k: int, box: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` box corners (k, 3) whose centres are uniform over the union of the centre boxes ``pieces``."""
    lo, hi = pieces
    sizes = np.prod(hi - lo + 1, axis=1).astype(np.float64)
    pick = rng.choice(len(lo), size=int(k), p=sizes / sizes.sum())
    centres = lo[pick] + np.floor(rng.random((int(k), 3)) * (hi[pick] - lo[pick] + 1)).astype(np.int64)
    return centres - box // 2


@dataclass
class SubtomoSet:
    """Sampled boxes: ``train`` (N, C, E, E, E) and ``val`` (M, C, E, E, E) float32, normalised.

    ``C`` is 2 (even, odd) for paired data and 1 for single-map data. ``positions`` holds one row
    (dataset index, z, y, x corner in the padded volume) per box, training boxes first; ``splits``
    one :class:`SlabSplit` per dataset.
    """

    train: np.ndarray
    val: np.ndarray
    positions: np.ndarray
    normalization: Normalization
    splits: list[SlabSplit]


class SubtomoSampler:
    """Draw paired subtomograms of size ``box`` at the same positions in the half tomograms.

    ``evens`` and ``odds`` are lists of (z, y, x) arrays (one per dataset; ``odds`` may be ``None``
    for single-map training). ``n_subtomos`` boxes are drawn in total; ``val_fraction`` of them (at
    least 1) are validation boxes drawn inside each tomogram's held-out slab, the rest training boxes
    drawn outside it (``gap`` voxels away, default one box edge; see :func:`slab_split`). Both are
    shared among datasets in proportion to their number of allowed centres. Deterministic for a given
    ``seed``.
    """

    def __init__(self, evens: Sequence[np.ndarray], odds: Sequence[np.ndarray] | None, box: int,
                 n_subtomos: int = 200, val_fraction: float = 0.1, seed: int = 0,
                 min_std_percentile: float = 5.0, normalization: Normalization | None = None,
                 gap: int | None = None) -> None:
        if len(evens) == 0:
            raise InputError("at least one tomogram is needed for training")
        if odds is not None and len(odds) != len(evens):
            raise InputError(f"got {len(evens)} even and {len(odds)} odd tomograms; give them in pairs")
        if odds is not None:
            for i, (e, o) in enumerate(zip(evens, odds)):
                if e.shape != o.shape:
                    raise InputError(f"dataset {i}: even {e.shape} and odd {o.shape} differ in shape")
        if box < 4:
            raise InputError(f"subtomogram box {box} is too small; use at least 4 voxels")
        if n_subtomos < 2:
            raise InputError(f"need at least 2 subtomograms (one for validation), got {n_subtomos}")
        if not 0.0 < val_fraction < 1.0:
            raise InputError(f"validation fraction must lie in (0, 1), got {val_fraction}")
        self.large = any(blockwise.is_large(e.shape) for e in evens)
        keep = (lambda v: v) if self.large else (lambda v: np.asarray(v, dtype=np.float32))  # large: read per box
        self.evens = [keep(e) for e in evens]
        self.odds = None if odds is None else [keep(o) for o in odds]
        self.box = int(box)
        self.n_subtomos = int(n_subtomos)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.min_std_percentile = float(min_std_percentile)
        self.gap = gap
        vols = self.evens + ([] if self.odds is None else self.odds)
        if normalization is None:
            normalization = estimate_normalization(vols, self.seed) if self.large else compute_normalization(vols)
        self.normalization = normalization

    def sample(self) -> SubtomoSet:
        if self.large:
            return self._sample_large()
        rng = np.random.default_rng([self.seed, 0x5ab])
        norm, b = self.normalization, self.box
        padded: list[list[np.ndarray]] = []
        train_masks, val_masks, splits = [], [], []
        for i, e in enumerate(self.evens):
            halves = [e] if self.odds is None else [e, self.odds[i]]
            halves = [norm.apply(pad_to_box(h, b)) for h in halves]
            padded.append(halves)
            mask = sampling_mask(np.mean(halves, axis=0), b, self.min_std_percentile)
            split = slab_split(mask.shape, b, self.val_fraction, self.gap)
            splits.append(split)
            train_masks.append(_region_mask(mask, b, split.axis, 0, split.train_stop))
            val_masks.append(_region_mask(mask, b, split.axis, split.val_start, mask.shape[split.axis]))
        n_val = min(max(1, int(round(self.val_fraction * self.n_subtomos))), self.n_subtomos - 1)
        groups = _draw_groups(((train_masks, self.n_subtomos - n_val), (val_masks, n_val)),
                              lambda m: m.sum(), _draw_corners, b, rng)
        positions = np.concatenate(groups)
        boxes = np.empty((len(positions), len(padded[0]), b, b, b), dtype=np.float32)
        for j, (i, z, y, x) in enumerate(positions):
            for c, h in enumerate(padded[i]):
                boxes[j, c] = h[z:z + b, y:y + b, x:x + b]
        n_train = len(groups[0])
        return SubtomoSet(train=boxes[:n_train], val=boxes[n_train:], positions=positions, normalization=norm,
                          splits=splits)

    def _sample_large(self) -> SubtomoSet:
        """:meth:`sample` for large maps (module doc): coarse mask, boxes read one by one."""
        rng = np.random.default_rng([self.seed, 0x5ab])
        norm, b = self.normalization, self.box
        views: list[list[PaddedView]] = []
        train_p, val_p, splits = [], [], []
        for i, e in enumerate(self.evens):
            halves = [e] if self.odds is None else [e, self.odds[i]]
            padded = [PaddedView(blockwise.page_releasing(h), b) for h in halves]
            views.append(padded)
            mixed = padded[0] if len(padded) == 1 else blockwise.MeanOf(padded[0], padded[1])
            centres = CoarseCentres(mixed, b, self.min_std_percentile)
            split = slab_split(padded[0].shape, b, self.val_fraction, self.gap)
            splits.append(split)
            train_p.append(centres.region(split.axis, 0, split.train_stop))
            val_p.append(centres.region(split.axis, split.val_start, padded[0].shape[split.axis]))
        n_val = min(max(1, int(round(self.val_fraction * self.n_subtomos))), self.n_subtomos - 1)
        groups = _draw_groups(((train_p, self.n_subtomos - n_val), (val_p, n_val)), _count, _draw_from_pieces, b, rng)
        positions = np.concatenate(groups)
        boxes = np.empty((len(positions), len(views[0]), b, b, b), dtype=np.float32)
        for j, (i, z, y, x) in enumerate(positions):
            for c, h in enumerate(views[i]):
                boxes[j, c] = norm.apply(h[z:z + b, y:y + b, x:x + b])
        n_train = len(groups[0])
        return SubtomoSet(train=boxes[:n_train], val=boxes[n_train:], positions=positions, normalization=norm,
                          splits=splits)
