"""Tomograms in and out, whatever the format: MRC (memory-mapped) and OME-Zarr (NGFF), with Fourier binning.

Reading: :func:`read_volume` takes an MRC file or an OME-Zarr store (a local ``.zarr`` folder, an
``s3://`` URL read anonymously, or an ``http(s)://`` URL) and returns an :class:`io.Volume` whose
``data`` is (z, y, x) and whose ``voxel_size`` is in Å:

* ``lazy=False`` (default): a float32 numpy array in memory;
* ``lazy=True``: an array read from the source only where it is indexed: the MRC file's memory map
  (``np.memmap``, the file's dtype) or, for OME-Zarr, a :class:`LazyLevel` over the ``zarr.Array``
  of the chosen level that returns float32 numpy blocks. Both support ``shape``, ``dtype`` and
  slicing, so that code can read boxes or slabs without loading the volume.

OME-Zarr as the CryoET Data Portal writes it (NGFF 0.4, zarr format 2; NGFF 0.5 in zarr format 3 is
read too): the root group's attributes hold ``multiscales`` with ``axes`` (z, y, x; ``type: space``,
``unit: angstrom``) and ``datasets``, one per level, each with a ``path`` and a ``scale``
coordinate transformation in Å per voxel; level 0 is the full resolution, each next level binned by 2.
``level`` chooses the dataset (``--zarr-level``); its scale is the voxel size. Non-space axes (t, c)
must have size 1.

Integer data (the portal holds some int8 maps) is converted to float32 with a one-line notice on
stderr. Bad input is an :class:`~cryorestore.errors.InputError` with one line: no such file or store,
a store without ``multiscales`` metadata, a level that does not exist, anisotropic voxels, non-finite
values, a URL that cannot be reached, a missing ``zarr`` package.

Binning (``bin`` = b > 1, ``--bin 2|4``) is :func:`fourier_bin`: a crop of the centred spectrum, read
slab by slab from the (lazy) source, with the voxel size multiplied by b.

Writing: :func:`write_volume` writes MRC unless the path ends in ``.zarr``; then :func:`write_ome_zarr`
writes an NGFF 0.4 multiscale pyramid (zarr format 2, float32, 2×2×2-mean levels, chunks of at most
128³, the voxel size in every level's scale) into a temporary folder beside the destination that is
renamed onto it only once complete.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from cryorestore import io
from cryorestore.errors import InputError

PathLike = str | os.PathLike

ZARR_SUFFIX = ".zarr"
REMOTE_SCHEMES = ("s3://", "https://", "http://", "gs://", "file://")
MRC_SUFFIXES = (".mrc", ".rec", ".st", ".map", ".mrcs", ".ali")
NGFF_VERSION = "0.4"
#: Å per unit of the NGFF axis units we accept.
UNIT_TO_ANGSTROM = {"angstrom": 1.0, "nanometer": 10.0, "picometer": 0.01, "micrometer": 1e4,
                    "millimeter": 1e7, "meter": 1e10}
BIN_FACTORS = (1, 2, 4)
CHUNK_EDGE = 128
PYRAMID_MIN_EDGE = 64
SLAB_VOXELS = 1 << 24  # ~16 M voxels per slab read (64 MB as float32)
INSTALL_HINT = "pip install 'cryorestore[zarr]'"


# --------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------
def is_remote(path: PathLike) -> bool:
    """True for a URL (``s3://``, ``http(s)://``, ``gs://``, ``file://``)."""
    return str(path).lower().startswith(REMOTE_SCHEMES)


def is_zarr(path: PathLike) -> bool:
    """True when ``path`` names an OME-Zarr store: it ends in ``.zarr`` (a trailing ``/`` allowed), is a
    URL that does not end in an MRC suffix (:data:`MRC_SUFFIXES`), or is a local folder holding zarr
    metadata (``.zgroup``, ``.zattrs`` or ``zarr.json``)."""
    text = str(path).rstrip("/")
    if text.lower().endswith(ZARR_SUFFIX) or (is_remote(text) and not text.lower().endswith(MRC_SUFFIXES)):
        return True
    p = Path(text)
    return p.is_dir() and any((p / n).exists() for n in (".zgroup", ".zattrs", "zarr.json"))


def _zarr():
    try:
        import zarr
    except ImportError:
        raise InputError(f"reading or writing OME-Zarr needs the zarr package: {INSTALL_HINT}") from None
    return zarr


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).splitlines() or [""])[0].strip()
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


def notice(message: str) -> None:
    """One line on stderr (conversions the user should know about)."""
    print(f"cryorestore: note: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# lazy float32 view of a zarr level
# --------------------------------------------------------------------------------------------
LOCAL_READ_CONCURRENCY = 1
"""Chunks a read of a local store decodes at once (zarr's ``async.concurrency``, default 10). Decoded
chunks (8 MiB each at 128³ float32) made concurrently by zarr's worker threads stay in those threads'
malloc arenas after they are freed: reading the 605 tiles of 64³ of a 256×512×512 store (128³ chunks),
as prediction does, raised the peak RSS by 241 MiB at 10 and by 89 MiB at 1 (a memory-mapped MRC:
98 MiB), at the same speed; a whole-map read took 1.9 s against 1.4 s (``benchmarks/RESULTS.md``).
Remote stores keep zarr's concurrency (latency, not decoding, bounds them)."""


class LazyLevel:
    """A (z, y, x) array read from ``array`` (a ``zarr.Array``, possibly with leading size-1 axes) only
    where indexed; every block comes back as float32 numpy and is checked for NaN/Inf (one-line
    :class:`InputError` naming ``source``) when ``check_finite``. ``concurrency``: the chunks one read
    decodes at once (None: zarr's setting; :data:`LOCAL_READ_CONCURRENCY` for local stores)."""

    def __init__(self, array: Any, source: str, lead: int = 0, check_finite: bool = True,
                 concurrency: int | None = None) -> None:
        self.array = array
        self.source = source
        self.lead = int(lead)  # leading non-space axes of size 1, indexed at 0
        self.check_finite = check_finite
        self.concurrency = concurrency
        self.shape: tuple[int, int, int] = tuple(int(s) for s in array.shape[self.lead:])  # type: ignore[assignment]
        self.dtype = np.dtype(np.float32)
        self.stored_dtype = np.dtype(array.dtype)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def chunk_shape(self) -> tuple[int, int, int]:
        """The stored (z, y, x) chunk (shard, where sharded) size in voxels: the unit one read decodes."""
        return tuple(int(c) for c in self.array.chunks[self.lead:])  # type: ignore[return-value]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        try:
            if self.concurrency is None:
                block = np.asarray(self.array[(0,) * self.lead + key])
            else:
                import zarr

                with zarr.config.set({"async.concurrency": int(self.concurrency)}):
                    block = np.asarray(self.array[(0,) * self.lead + key])
        except InputError:
            raise
        except Exception as exc:  # network, codec or storage failures while reading chunks
            raise InputError(f"cannot read {self.source} ({_first_line(exc)}); check the store and the network") from None
        block = block.astype(np.float32, copy=False)
        if self.check_finite and block.dtype.kind == "f" and not np.isfinite(block).all():
            bad = int((~np.isfinite(block)).sum())
            raise InputError(f"{self.source} contains NaN or infinite voxels ({bad} in one block read); fix or mask them first")
        return block

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = read_all(self)
        return out if dtype is None else out.astype(dtype, copy=False)


def read_all(source: Any, slab_voxels: int = SLAB_VOXELS) -> np.ndarray:
    """The whole (z, y, x) ``source`` (array-like with ``shape`` and slicing) as float32, read in z-slabs."""
    shape = tuple(int(s) for s in source.shape)
    out = np.empty(shape, dtype=np.float32)
    step = max(1, slab_voxels // max(1, shape[1] * shape[2]))
    for z0 in range(0, shape[0], step):
        out[z0:z0 + step] = source[z0:z0 + step]
    return out


# --------------------------------------------------------------------------------------------
# OME-Zarr metadata
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Multiscales:
    """The NGFF ``multiscales`` entry of a store: dataset paths (level 0 first) and their (z, y, x)
    voxel sizes in Å; ``lead``: leading non-space axes (size 1 each)."""

    paths: tuple[str, ...]
    scales: tuple[tuple[float, float, float], ...]
    lead: int
    version: str


def _axis_name_type(axis: Any) -> tuple[str, str | None, str | None]:
    if isinstance(axis, str):  # NGFF 0.3: axes are names
        return axis, ("space" if axis in ("z", "y", "x") else None), None
    if isinstance(axis, dict):
        return str(axis.get("name", "")), axis.get("type"), axis.get("unit")
    raise InputError(f"an NGFF axis must be a name or an object, got {axis!r}")


def _scale_of(transforms: Any, ndim: int, where: str) -> np.ndarray:
    scale = np.ones(ndim)
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale":
            values = t.get("scale")
            if not isinstance(values, list) or len(values) != ndim:
                raise InputError(f"{where}: a 'scale' transformation needs {ndim} numbers, got {values!r}")
            scale = scale * np.asarray(values, dtype=float)
    return scale


def parse_multiscales(attrs: dict, source: str) -> Multiscales:
    """Read the first NGFF ``multiscales`` entry of a root group's attributes (``attrs['multiscales']``,
    or ``attrs['ome']['multiscales']`` in NGFF 0.5); one-line :class:`InputError` when it is absent or
    malformed, its space axes are not (z, y, x), or a unit is not a length."""
    ms = attrs.get("multiscales")
    if ms is None and isinstance(attrs.get("ome"), dict):
        ms = attrs["ome"].get("multiscales")
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict):
        raise InputError(f"{source} has no NGFF 'multiscales' metadata in its root attributes: it is not an "
                         "OME-Zarr image; write it with cryorestore or ome-zarr, or give the MRC file")
    entry = ms[0]
    version = str(entry.get("version", (attrs.get("ome") or {}).get("version", "")))
    datasets = entry.get("datasets")
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, dict) and "path" in d for d in datasets):
        raise InputError(f"{source}: its multiscales metadata lists no datasets with a 'path'")
    axes = entry.get("axes")
    ndim = len(axes) if isinstance(axes, list) else 3
    named = [_axis_name_type(a) for a in axes] if isinstance(axes, list) else [(n, "space", None) for n in "zyx"]
    space = [(n, u) for n, t, u in named if t == "space" or (t is None and n in ("z", "y", "x"))]
    if [n for n, _ in space] != ["z", "y", "x"] or [n for n, _, _ in named[-3:]] != ["z", "y", "x"]:
        raise InputError(f"{source}: its axes are {[n for n, _, _ in named]}; cryorestore reads (z, y, x) volumes "
                         "(with size-1 t or c axes before them)")
    units = {u for _, u in space}
    if units == {None}:
        notice(f"{source}: no unit on the space axes; assuming Å")
        factor = 1.0
    elif len(units) == 1 and next(iter(units)) in UNIT_TO_ANGSTROM:
        factor = UNIT_TO_ANGSTROM[next(iter(units))]
    else:
        raise InputError(f"{source}: space-axis units {sorted(map(str, units))} are not one length unit "
                         f"({', '.join(UNIT_TO_ANGSTROM)})")
    global_scale = _scale_of(entry.get("coordinateTransformations"), ndim, source)
    scales = []
    for i, d in enumerate(datasets):
        s = _scale_of(d.get("coordinateTransformations"), ndim, f"{source} level {i}") * global_scale * factor
        scales.append(tuple(float(v) for v in s[-3:]))
    return Multiscales(tuple(str(d["path"]) for d in datasets), tuple(scales), ndim - 3, version)


def _storage_options(url: str) -> dict | None:
    if url.lower().startswith("s3://"):
        return {"anon": True}  # the portal's bucket is public
    return None


def _open_group(path: PathLike) -> tuple[Any, str]:
    """The store's root group (read-only) and a description of it; one-line InputError when it cannot be opened."""
    zarr = _zarr()
    text = str(path)
    if is_remote(text):
        if text.lower().startswith("s3://"):
            try:
                import s3fs  # noqa: F401
            except ImportError:
                raise InputError(f"reading s3:// URLs needs s3fs: {INSTALL_HINT}") from None
        try:
            group = zarr.open_group(text.rstrip("/"), mode="r", storage_options=_storage_options(text))
        except InputError:
            raise
        except Exception as exc:  # connection refused, DNS, HTTP errors, no group at that URL
            raise InputError(f"cannot open the OME-Zarr store {text} ({_first_line(exc)}); check the URL and the "
                             "network (s3:// URLs are read anonymously)") from None
        return group, text
    p = Path(text)
    if not p.exists():
        raise InputError(f"OME-Zarr store {p} does not exist: check the path")
    if not p.is_dir():
        raise InputError(f"{p} is not an OME-Zarr store (a .zarr folder); give a .zarr folder or an MRC file")
    try:
        group = zarr.open_group(str(p), mode="r")
    except Exception as exc:
        raise InputError(f"{p} is not a readable zarr group ({_first_line(exc)}); an OME-Zarr image is a zarr "
                         "group with multiscales metadata") from None
    return group, str(p)


def zarr_levels(path: PathLike) -> Multiscales:
    """The :class:`Multiscales` of the OME-Zarr store at ``path`` (local folder or URL)."""
    group, source = _open_group(path)
    return parse_multiscales(dict(group.attrs), source)


def _check_isotropic(sizes: Sequence[float], where: str) -> float:
    sizes = [float(s) for s in sizes]
    if not all(np.isfinite(sizes)) or min(sizes) <= 0:
        raise InputError(f"{where} has voxel size {tuple(sizes)} Å; a positive size is needed")
    if not np.allclose(sizes, sizes[-1], rtol=1e-3):
        raise InputError(f"{where} has anisotropic voxels (z, y, x) = {tuple(round(s, 4) for s in sizes)} Å; "
                         "resample to an isotropic voxel first")
    return sizes[-1]


def _open_zarr_level(path: PathLike, level: int, check_finite: bool) -> tuple[LazyLevel, float]:
    group, source = _open_group(path)
    ms = parse_multiscales(dict(group.attrs), source)
    if not 0 <= level < len(ms.paths):
        raise InputError(f"{source} has {len(ms.paths)} level(s) (0..{len(ms.paths) - 1}); --zarr-level {level} "
                         "does not exist")
    where = f"{source} level {level}"
    try:
        array = group[ms.paths[level]]
    except Exception:
        raise InputError(f"{where} (path '{ms.paths[level]}') is listed in the multiscales metadata but missing "
                         "from the store") from None
    if not hasattr(array, "dtype") or not hasattr(array, "shape"):
        raise InputError(f"{where} (path '{ms.paths[level]}') is a group, not an array")
    if len(array.shape) != ms.lead + 3:
        raise InputError(f"{where} has {len(array.shape)} axes but its metadata names {ms.lead + 3}")
    if any(int(n) != 1 for n in array.shape[:ms.lead]):
        raise InputError(f"{where} has shape {tuple(array.shape)}: the axes before (z, y, x) must have size 1")
    kind = np.dtype(array.dtype).kind
    if kind not in "fiub":
        raise InputError(f"{where} holds {array.dtype} data; a real-valued volume is needed")
    lazy = LazyLevel(array, where, lead=ms.lead, check_finite=check_finite,
                     concurrency=None if is_remote(path) else LOCAL_READ_CONCURRENCY)
    if min(lazy.shape) < 2:
        raise InputError(f"{where} has shape {lazy.shape}; every axis needs at least 2 voxels")
    if kind in "iub":
        notice(f"{where} holds {array.dtype} data; converted to float32 (values unchanged)")
    return lazy, _check_isotropic(ms.scales[level], where)


# --------------------------------------------------------------------------------------------
# Fourier binning
# --------------------------------------------------------------------------------------------
def _crop_axis(a: np.ndarray, axis: int, m: int) -> np.ndarray:
    """Resample ``a`` along ``axis`` from n to ``m`` ≤ n samples by keeping the Fourier coefficients of
    integer frequency |k| < m/2 (float64); the samples land on positions 0, n/m, 2n/m, … of the input."""
    import scipy.fft

    n = a.shape[axis]
    if m == n:
        return np.asarray(a, dtype=np.float64)
    spec = scipy.fft.rfft(np.asarray(a, dtype=np.float64), axis=axis)
    keep = [slice(None)] * a.ndim
    keep[axis] = slice(0, m // 2 + 1)
    spec = spec[tuple(keep)].copy()
    if m % 2 == 0:  # the new Nyquist k = m/2 is not below m/2: dropped, so the result is strictly band-limited
        nyq = [slice(None)] * a.ndim
        nyq[axis] = m // 2
        spec[tuple(nyq)] = 0
    return scipy.fft.irfft(spec, n=m, axis=axis) * (m / n)


def binned_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """The (z, y, x) shape :func:`fourier_bin` returns: each axis ``n // factor``."""
    return tuple(int(n) // int(factor) for n in shape)


def fourier_bin(volume: Any, factor: int, slab_voxels: int = SLAB_VOXELS) -> np.ndarray:
    """Bin a (z, y, x) volume by ``factor`` in Fourier space: float32 of shape ``n // factor`` per axis.

    Every axis of length n is first cut to its first ``factor·(n // factor)`` voxels (sizes that are not
    a multiple of the factor lose their last ``n mod factor`` voxels, so that the voxel size grows by
    exactly ``factor``); then, of the cut volume's discrete Fourier transform, the coefficients of
    integer frequency |k| < m/2 on every axis (m = n // factor, the binned length) are kept: the
    centred box of the spectrum, without the new Nyquist plane k = ±m/2 when m is even. The result is
    that band-limited volume sampled every ``factor`` voxels starting at voxel 0 (a volume already
    band-limited below the new Nyquist is sampled exactly), scaled so that grey values are kept.

    ``volume`` may be a numpy array, a memory map or a :class:`LazyLevel`: it is read in z-slabs of about
    ``slab_voxels`` voxels (x and y are binned slab by slab, then z in y-slabs of the x/y-binned
    intermediate), so memory holds the input slab, the intermediate (n³/factor² voxels) and the result.
    FFTs run in float64.
    """
    factor = int(factor)
    if factor < 1:
        raise InputError(f"--bin must be a positive integer, got {factor}")
    shape = tuple(int(n) for n in volume.shape)
    if len(shape) != 3:
        raise InputError(f"binning needs a 3D (z, y, x) volume, got shape {shape}")
    out_shape = binned_shape(shape, factor)
    if min(out_shape) < 2:
        raise InputError(f"--bin {factor} leaves shape {out_shape} from {shape}; every axis needs at least 2 voxels")
    if factor == 1:
        return read_all(volume, slab_voxels)
    mz, my, mx = out_shape
    cz, cy, cx = (m * factor for m in out_shape)
    inter = np.empty((cz, my, mx), dtype=np.float32)
    step = max(1, slab_voxels // max(1, cy * cx))
    for z0 in range(0, cz, step):
        z1 = min(cz, z0 + step)
        slab = np.asarray(volume[z0:z1, :cy, :cx])
        inter[z0:z1] = _crop_axis(_crop_axis(slab, 2, mx), 1, my)
    out = np.empty(out_shape, dtype=np.float32)
    step = max(1, slab_voxels // max(1, cz * mx))
    for y0 in range(0, my, step):
        y1 = min(my, y0 + step)
        out[:, y0:y1] = _crop_axis(inter[:, y0:y1], 0, mz)
    return out


def check_bin(factor: int) -> int:
    """Validate ``--bin`` (:data:`BIN_FACTORS`)."""
    if int(factor) not in BIN_FACTORS:
        raise InputError(f"--bin {factor} is not one of {', '.join(map(str, BIN_FACTORS))}")
    return int(factor)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def _open_mrc_lazy(path: PathLike, check_finite: bool) -> io.Volume:
    """The MRC map as a read-only ``np.memmap`` that stays valid after the file handle is closed."""
    with io.open_mrc_mmap(path, check_finite=check_finite) as vol:
        data = vol.data
    return io.Volume(data, vol.voxel_size, str(path))


def read_volume(path: PathLike, level: int = 0, bin: int = 1, *, lazy: bool = False,
                check_finite: bool = True) -> io.Volume:
    """Read a tomogram (MRC file or OME-Zarr store / URL) as (z, y, x) with its voxel size in Å.

    ``level``: the OME-Zarr multiscale level (0 = full resolution; ignored for MRC, where only 0 is
    allowed). ``bin``: :func:`fourier_bin` factor applied at load (the voxel size is multiplied by it;
    the result is in memory). ``lazy`` (only with ``bin`` 1): return the memory map / :class:`LazyLevel`
    instead of a float32 array in memory. ``check_finite``: NaN/Inf are an :class:`InputError` (for lazy
    OME-Zarr levels, checked block by block as they are read). The returned ``Volume.source`` names the
    file and level.
    """
    level, bin = int(level), int(bin)
    if level < 0:
        raise InputError(f"--zarr-level must be >= 0, got {level}")
    if bin < 1:
        raise InputError(f"--bin must be a positive integer, got {bin}")
    if is_zarr(path):
        data, voxel = _open_zarr_level(path, level, check_finite)
        source = data.source
    else:
        if is_remote(path):
            raise InputError(f"{path}: only OME-Zarr stores (.zarr) are read from URLs; download the MRC file first")
        if level != 0:
            raise InputError(f"--zarr-level {level} applies to OME-Zarr stores; {path} is an MRC file")
        vol = _open_mrc_lazy(path, check_finite)
        data, voxel, source = vol.data, vol.voxel_size, str(path)
        if np.dtype(data.dtype).kind in "iub":
            notice(f"{path} holds {data.dtype} data; converted to float32 (values unchanged)")
    if bin > 1:
        return io.Volume(fourier_bin(data, bin), voxel * bin, f"{source}, Fourier-binned by {bin}")
    if lazy:
        return io.Volume(data, voxel, source)
    return io.Volume(read_all(data), voxel, source)


def read_volumes(paths: Sequence[PathLike], level: int = 0, bin: int = 1, **kwargs: Any) -> list[io.Volume]:
    """:func:`read_volume` of each path."""
    return [read_volume(p, level, bin, **kwargs) for p in paths]


def volume_header(path: PathLike, level: int = 0) -> tuple[tuple[int, int, int], float]:
    """((z, y, x) shape, voxel size in Å) of an MRC file or an OME-Zarr level, without reading the data."""
    if is_zarr(path):
        data, voxel = _open_zarr_level(path, level, check_finite=False)
        return data.shape, voxel
    return io.read_mrc_header(path)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def pyramid_shapes(shape: Sequence[int], min_edge: int = PYRAMID_MIN_EDGE, max_levels: int = 8) -> list[tuple[int, ...]]:
    """Shapes of the pyramid levels: level 0 = ``shape``; each next level halves every axis (floor) while
    the current level's largest axis exceeds ``min_edge`` and the next one keeps at least 2 voxels per axis."""
    shapes = [tuple(int(n) for n in shape)]
    while len(shapes) < max_levels and max(shapes[-1]) > min_edge and min(shapes[-1]) // 2 >= 2:
        shapes.append(tuple(n // 2 for n in shapes[-1]))
    return shapes


def _mean_bin2(block: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """2×2×2 mean (float32) of the first 2·out_shape voxels of a (z, y, x) block."""
    z, y, x = (int(n) for n in out_shape)
    b = np.asarray(block[:2 * z, :2 * y, :2 * x], dtype=np.float32).reshape(z, 2, y, 2, x, 2)
    return (b.sum(axis=(1, 3, 5), dtype=np.float32) * np.float32(0.125)).astype(np.float32, copy=False)


def ngff_metadata(voxel_size: float, n_levels: int, name: str) -> dict:
    """The root ``multiscales`` attributes (NGFF 0.4) of a pyramid of 2×2×2-mean levels: scale
    ``voxel_size·2^k`` Å per axis and translation ``voxel_size·(2^k − 1)/2`` Å (each coarse voxel sits
    at the centre of the fine voxels it averages)."""
    datasets = []
    for k in range(n_levels):
        f = 2 ** k
        transforms: list[dict] = [{"type": "scale", "scale": [voxel_size * f] * 3}]
        if k:
            transforms.append({"type": "translation", "translation": [voxel_size * (f - 1) / 2] * 3})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    return {"multiscales": [{
        "version": NGFF_VERSION,
        "name": name,
        "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
        "datasets": datasets,
        "type": "mean",
        "metadata": {"description": "2x2x2 mean of the previous level", "method": "cryorestore.volume_io"},
    }]}


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (an existing store is moved
    aside, the new one renamed in, the old one removed); on failure the temporary folder is removed."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)
    old: Path | None = None
    try:
        yield tmp
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / dest.name).exists() and not dest.exists():
            os.replace(old / dest.name, dest)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_ome_zarr(path: PathLike, data: Any, voxel_size: float, *, name: str | None = None,
                   chunk_edge: int = CHUNK_EDGE, min_edge: int = PYRAMID_MIN_EDGE) -> Path:
    """Write a (z, y, x) volume as an OME-Zarr multiscale pyramid (NGFF 0.4, zarr format 2), atomically.

    Levels ``0``, ``1``, … (:func:`pyramid_shapes`; 2×2×2 means) as float32 arrays with chunks of at most
    ``chunk_edge`` voxels per axis, ``/``-separated chunk keys and Blosc-LZ4 compression;
    :func:`ngff_metadata` in the root attributes. ``data`` (array, memory map or :class:`LazyLevel`) is
    written in blocks of whole chunks (one chunk deep, whole chunk rows, about :data:`SLAB_VOXELS` voxels
    read per block; at least one chunk row), each level computed from the one written before. An existing store at ``path``
    is replaced; a file or a folder that is not a zarr store is refused.
    """
    zarr = _zarr()
    import numcodecs

    if is_remote(path):
        raise InputError(f"cannot write to {path}: write a local .zarr folder and upload it")
    dest = Path(path)
    if dest.exists() and not (dest.is_dir() and is_zarr(dest) and any(
            (dest / n).exists() for n in (".zgroup", ".zattrs", "zarr.json"))):
        raise InputError(f"{dest} exists and is not a zarr store; remove it or choose another output")
    if voxel_size is None or not np.isfinite(voxel_size) or voxel_size <= 0:
        raise InputError(f"voxel size must be a positive number of Å, got {voxel_size}")
    shape = tuple(int(n) for n in data.shape)
    if len(shape) != 3:
        raise ValueError(f"write_ome_zarr expects a 3D (z, y, x) volume, got shape {shape}")
    shapes = pyramid_shapes(shape, min_edge)
    compressor = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    with atomic_folder(dest) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        prev: Any = data
        for k, lvl_shape in enumerate(shapes):
            chunks = tuple(min(chunk_edge, n) for n in lvl_shape)
            arr = group.create_array(str(k), shape=lvl_shape, chunks=chunks, dtype="float32", compressors=compressor,
                                     fill_value=0.0, chunk_key_encoding={"name": "v2", "separator": "/"})
            # blocks of whole chunks (one chunk deep in z, whole chunk rows in y), about SLAB_VOXELS voxels read
            row = chunks[0] * chunks[1] * lvl_shape[2] * (8 if k else 1)
            ystep = chunks[1] * max(1, SLAB_VOXELS // max(1, row))
            for z0 in range(0, lvl_shape[0], chunks[0]):
                z1 = min(lvl_shape[0], z0 + chunks[0])
                for y0 in range(0, lvl_shape[1], ystep):
                    y1 = min(lvl_shape[1], y0 + ystep)
                    if k == 0:
                        block = np.asarray(prev[z0:z1, y0:y1], dtype=np.float32)
                    else:
                        block = _mean_bin2(prev[2 * z0:2 * z1, 2 * y0:2 * y1], (z1 - z0, y1 - y0, lvl_shape[2]))
                    arr[z0:z1, y0:y1] = block
            prev = arr
        group.attrs.update(ngff_metadata(float(voxel_size), len(shapes), name or dest.stem))
    return dest


def write_volume(path: PathLike, data: Any, voxel_size: float) -> Path:
    """Write a (z, y, x) volume: an OME-Zarr pyramid (:func:`write_ome_zarr`) when ``path`` ends in
    ``.zarr``, else an MRC file (:func:`io.write_mrc`); atomically, with ``voxel_size`` (Å)."""
    if str(path).rstrip("/").lower().endswith(ZARR_SUFFIX) or is_remote(path):
        return write_ome_zarr(path, data, voxel_size)
    return io.write_mrc(path, np.asarray(data, dtype=np.float32), voxel_size)


def voxel_note(model_voxel: float | None, data_voxel: float, bin: int) -> str | None:
    """A one-line warning when a map's voxel size (Å, after ``bin``) differs from the model's training voxel
    size by more than 5 %, else None."""
    if not model_voxel or not math.isfinite(model_voxel) or abs(data_voxel / model_voxel - 1) <= 0.05:
        return None
    hint = ""
    ratio = model_voxel / data_voxel * bin
    for b in BIN_FACTORS[1:]:
        if abs(ratio / b - 1) <= 0.05:
            hint = f"; --bin {b} would match"
    return (f"the model was trained at {model_voxel:g} Å per voxel but this map is at {data_voxel:g} Å"
            f" (bin {bin}){hint}")
