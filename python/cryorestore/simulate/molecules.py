"""Molecular species of the realistic preset: potential maps made from atomic models, and templates.

The maps live in ``assets/molecules/`` of the repository (made once by
``assets/make_molecule_maps.py`` from PDB entry 4V6X; see the README there). Each species has

* a **truth** map (5 Å sampling, B = 60 Å²): what the simulator places in the specimen;
* a **template** map (6.5 Å sampling, B = 200 Å²): computed independently from the same atomic model;
  :func:`template` resamples it to the tomogram's voxel size for matching and averaging, so no
  template is ever the array that was placed in the truth.

Maps are potential in volts (relative to vacuum), arrays (z, y, x), the molecule's centre of mass on
voxel ``(N − 1) / 2`` of every axis. ``CRYORESTORE_ASSETS`` overrides the asset folder.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from scipy import ndimage

from cryorestore.errors import InputError

#: (name, PDB id, what) of the species the realistic preset places, in class-number order.
SPECIES = (
    ("ribosome", "4V6X", "human 80S ribosome"),
    ("ribosome_40s", "4V6X", "human 40S ribosomal subunit (18S rRNA, 40S proteins, RACK1)"),
)


def asset_dir() -> Path:
    """The folder with the molecule maps (``$CRYORESTORE_ASSETS`` or the repository's ``assets/molecules``)."""
    env = os.environ.get("CRYORESTORE_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "assets" / "molecules"


@dataclass(frozen=True)
class MoleculeMap:
    """A potential map (volts, float32 (z, y, x)) sampled at ``pixel`` Å, centre at (N − 1) / 2."""

    name: str
    data: np.ndarray
    pixel: float

    @property
    def radius_a(self) -> float:
        """Radius (Å) of the sphere about the centre that holds 98 % of the (positive) potential: the
        molecule's exclusion radius when particles are packed (thin protrusions may reach past it)."""
        v = np.clip(self.data.astype(np.float64), 0.0, None)
        grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2.0 for n in v.shape], indexing="ij")
        d = np.sqrt(sum(g**2 for g in grids)).ravel()
        order = np.argsort(d)
        cum = np.cumsum(v.ravel()[order])
        return float(d[order][np.searchsorted(cum, 0.98 * cum[-1])] + 0.5) * self.pixel


@functools.lru_cache(maxsize=8)
def load(name: str, kind: str) -> MoleculeMap:
    """Load ``<name>_<kind>.mrc.gz`` (kind ``truth`` or ``template``) from :func:`asset_dir`."""
    path = asset_dir() / f"{name}_{kind}.mrc.gz"
    if not path.is_file():
        raise InputError(f"molecule map {path} is missing; run assets/make_molecule_maps.py or set CRYORESTORE_ASSETS")
    with mrcfile.open(path, permissive=True) as m:
        data = np.asarray(m.data, dtype=np.float32).copy()
        pixel = float(m.voxel_size.x)
    return MoleculeMap(name, data, pixel)


def _sample(m: MoleculeMap, pixel: float, out_shape: tuple[int, int, int], centre_out: np.ndarray) -> np.ndarray:
    """The map at ``pixel`` Å on an ``out_shape`` grid whose voxel ``centre_out`` is the molecule's centre.

    Downsampling first low-passes with a Gaussian of σ = 0.5 (ratio² − 1)^½ input voxels
    (anti-aliasing); values are interpolated with cubic splines, zero outside the map.
    """
    ratio = float(pixel) / m.pixel
    src = m.data.astype(np.float64)
    if ratio > 1.0:
        src = ndimage.gaussian_filter(src, 0.5 * math.sqrt(ratio**2 - 1.0))
    c_in = (np.array(src.shape) - 1) / 2.0
    offset = c_in - ratio * np.asarray(centre_out, dtype=np.float64)
    out = ndimage.affine_transform(src, np.full(3, ratio), offset=offset, output_shape=tuple(out_shape), order=3,
                                   mode="grid-constant", cval=0.0)
    return out.astype(np.float32)


def resample(m: MoleculeMap, pixel: float) -> np.ndarray:
    """The map resampled to ``pixel`` Å covering the same extent, its centre on voxel (N − 1) / 2."""
    ratio = float(pixel) / m.pixel
    if abs(ratio - 1.0) < 1e-9:
        return m.data.astype(np.float32)
    shape = tuple(max(3, int(round((n - 1) / ratio)) + 1) for n in m.data.shape)
    return _sample(m, pixel, shape, (np.array(shape) - 1) / 2.0)


def template(name: str, voxel_size: float, box: int | None = None) -> np.ndarray:
    """The matching template of species ``name`` at ``voxel_size`` Å in a cubic box centred on voxel box // 2.

    Made from the template map (independent of the truth map; see the module docstring). ``box``
    defaults to the smallest even size holding the molecule's diameter plus 4 voxels.
    """
    m = load(name, "template")
    b = int(box) if box is not None else 2 * int(math.ceil(m.radius_a / voxel_size + 2.0))
    return _sample(m, voxel_size, (b, b, b), np.full(3, b // 2, dtype=np.float64))
