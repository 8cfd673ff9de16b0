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
* Normalisation: one mean and standard deviation over all input volumes (all halves of all
  datasets); boxes are stored as ``(v − mean) / std`` and the statistics go into the model
  directory so that predictions come back in the input's grey scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from cryorestore.errors import InputError


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


@dataclass
class SubtomoSet:
    """Sampled boxes: ``train`` (N, C, E, E, E) and ``val`` (M, C, E, E, E) float32, normalised.

    ``C`` is 2 (even, odd) for paired data and 1 for single-map data. ``positions`` holds one row
    (dataset index, z, y, x corner in the padded volume) per box, training boxes first.
    """

    train: np.ndarray
    val: np.ndarray
    positions: np.ndarray
    normalization: Normalization


class SubtomoSampler:
    """Draw paired subtomograms of size ``box`` at the same positions in the half tomograms.

    ``evens`` and ``odds`` are lists of (z, y, x) arrays (one per dataset; ``odds`` may be ``None``
    for single-map training). ``n_subtomos`` boxes are drawn in total, shared among datasets in
    proportion to their number of allowed centres; ``val_fraction`` of them (at least 1) are held out
    for validation. Deterministic for a given ``seed``.
    """

    def __init__(self, evens: Sequence[np.ndarray], odds: Sequence[np.ndarray] | None, box: int,
                 n_subtomos: int = 200, val_fraction: float = 0.1, seed: int = 0,
                 min_std_percentile: float = 5.0, normalization: Normalization | None = None) -> None:
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
        self.evens = [np.asarray(e, dtype=np.float32) for e in evens]
        self.odds = None if odds is None else [np.asarray(o, dtype=np.float32) for o in odds]
        self.box = int(box)
        self.n_subtomos = int(n_subtomos)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.min_std_percentile = float(min_std_percentile)
        vols = self.evens + ([] if self.odds is None else self.odds)
        self.normalization = normalization or compute_normalization(vols)

    def sample(self) -> SubtomoSet:
        rng = np.random.default_rng([self.seed, 0x5ab])
        norm = self.normalization
        padded: list[list[np.ndarray]] = []
        masks = []
        for i, e in enumerate(self.evens):
            halves = [e] if self.odds is None else [e, self.odds[i]]
            halves = [norm.apply(pad_to_box(h, self.box)) for h in halves]
            padded.append(halves)
            masks.append(sampling_mask(np.mean(halves, axis=0), self.box, self.min_std_percentile))
        counts = np.array([m.sum() for m in masks], dtype=np.float64)
        share = np.floor(self.n_subtomos * counts / counts.sum()).astype(int)
        share[np.argmax(counts)] += self.n_subtomos - share.sum()
        rows = []
        for i, (m, k) in enumerate(zip(masks, share)):
            if k <= 0:
                continue
            idx = np.flatnonzero(m)
            pick = rng.choice(idx, size=int(k), replace=idx.size < k)
            centres = np.stack(np.unravel_index(pick, m.shape), axis=1)
            corners = centres - self.box // 2
            rows.extend((i, *c) for c in corners)
        positions = np.asarray(rows, dtype=np.int64)
        positions = positions[rng.permutation(len(positions))]
        n_val = max(1, int(round(self.val_fraction * len(positions))))
        n_val = min(n_val, len(positions) - 1)
        b = self.box
        boxes = np.empty((len(positions), len(padded[0]), b, b, b), dtype=np.float32)
        for j, (i, z, y, x) in enumerate(positions):
            for c, h in enumerate(padded[i]):
                boxes[j, c] = h[z:z + b, y:y + b, x:x + b]
        order = np.r_[n_val:len(positions), 0:n_val]
        return SubtomoSet(train=boxes[n_val:], val=boxes[:n_val], positions=positions[order], normalization=norm)
