"""File input/output: MRC volumes with their voxel size, STAR particle lists, IMOD ``.tlt`` files.

Every writer is atomic: data goes to a temporary file in the destination folder, which is renamed
over the destination only once it is complete, so a failure never leaves a half-written file.
Every reader turns a missing or malformed file into an :class:`~cryorestore.errors.InputError`
whose message is one line naming the file and the problem.

Conventions
-----------
* Volumes are ``float32`` arrays in (z, y, x) order, exactly as :mod:`mrcfile` returns them.
* Voxel sizes are in Å (the MRC header's ``voxel_size.x``; we require an isotropic voxel).
* Particle coordinates are in voxels (``rlnCoordinateX/Y/Z``); orientations are RELION ZYZ Euler
  angles in degrees (``rlnAngleRot/Tilt/Psi``), see :mod:`cryorestore.geometry`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from cryorestore.errors import InputError

PathLike = str | os.PathLike

STAR_COORDS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
STAR_ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
STAR_SCORE = "rlnAutopickFigureOfMerit"


# --------------------------------------------------------------------------------------------
# atomic output
# --------------------------------------------------------------------------------------------
def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file keeps the destination's suffix (some writers choose the format from it).
    On any exception the temporary file is removed and the destination is left untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".part{dest.suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


# --------------------------------------------------------------------------------------------
# MRC
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Volume:
    """A 3D map: ``data`` is float32 (z, y, x) (or, from :func:`cryorestore.volume_io.read_volume` with
    ``lazy=True``, a memory map or lazily read OME-Zarr level); ``voxel_size`` in Å; ``source``: where it
    was read from (file, store and level), empty when unknown."""

    data: np.ndarray
    voxel_size: float
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]


def _require_file(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p} does not exist: check the path")
    if not p.is_file():
        raise InputError(f"{what} {p} is not a file")
    return p


def _mrc_error(p: Path, exc: BaseException) -> InputError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(f"{p} is not a readable MRC file ({first})")


def _checked_volume(p: Path, data: np.ndarray, sizes: tuple[float, float, float], check_finite: bool) -> Volume:
    """The checks every MRC read makes (3D, ≥ 2 voxels per axis, isotropic voxel, finite values)."""
    if data.ndim != 3:
        raise InputError(f"{p} holds a {data.ndim}D array; a 3D volume (z, y, x) is needed")
    if min(data.shape) < 2:
        raise InputError(f"{p} has shape {data.shape}; every axis needs at least 2 voxels")
    voxel = sizes[0]
    if voxel <= 0:
        warnings.warn(f"{p}: voxel size is unset in the header; assuming 1.0 Å", stacklevel=3)
        voxel = 1.0
    elif not np.allclose(sizes, voxel, rtol=1e-3):
        raise InputError(f"{p} has anisotropic voxels {sizes} Å; resample to an isotropic voxel first")
    if check_finite:
        step = max(1, (1 << 24) // max(1, data[0].size))  # z-slabs of ~16 M voxels: bounded temporaries
        bad = sum(int((~np.isfinite(data[z:z + step])).sum()) for z in range(0, data.shape[0], step))
        if bad:
            raise InputError(f"{p} contains {bad} NaN or infinite voxels; fix or mask them first")
    return Volume(data, voxel, str(p))


def read_mrc(path: PathLike, *, check_finite: bool = True) -> Volume:
    """Read an MRC map as float32 (z, y, x) with its voxel size in Å.

    Raises :class:`InputError` for a missing file, a file that is not MRC, a map that is not 3D,
    an anisotropic voxel, or (with ``check_finite``) NaN/Inf values. A header voxel size of 0
    (unset) is reported as 1.0 Å with a warning.
    """
    import mrcfile

    p = _require_file(path, "MRC file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(p, mode="r", permissive=False) as mrc:
                data = np.asarray(mrc.data, dtype=np.float32).copy()
                vs = mrc.voxel_size
                sizes = (float(vs.x), float(vs.y), float(vs.z))
    except (ValueError, OSError, EOFError) as exc:
        raise _mrc_error(p, exc) from None
    return _checked_volume(p, data, sizes, check_finite)


@contextlib.contextmanager
def open_mrc_mmap(path: PathLike, *, check_finite: bool = True) -> Iterator[Volume]:
    """Open an MRC map as a read-only memory map (``mrcfile.mmap``), checked like :func:`read_mrc`.

    Yields a :class:`Volume` whose ``data`` (z, y, x) keeps the file's dtype and is read from disk
    only where indexed; valid until the block ends. The finite check reads the map once in slabs.
    """
    import mrcfile

    p = _require_file(path, "MRC file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mrc = mrcfile.mmap(p, mode="r", permissive=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _mrc_error(p, exc) from None
    with mrc:
        vs = mrc.voxel_size
        if mrc.data is None:
            raise InputError(f"{p} is not a readable MRC file (no data block)")
        yield _checked_volume(p, mrc.data, (float(vs.x), float(vs.y), float(vs.z)), check_finite)


def read_mrc_header(path: PathLike) -> tuple[tuple[int, int, int], float]:
    """Return ((z, y, x) shape, voxel size in Å) from an MRC header without reading the data."""
    import mrcfile

    p = _require_file(path, "MRC file")
    try:
        with mrcfile.open(p, mode="r", header_only=True, permissive=False) as mrc:
            h = mrc.header
            shape = (int(h.nz), int(h.ny), int(h.nx))
            voxel = float(mrc.voxel_size.x)
    except (ValueError, OSError, EOFError) as exc:
        raise _mrc_error(p, exc) from None
    return shape, (voxel if voxel > 0 else 1.0)


def write_mrc(path: PathLike, data: np.ndarray, voxel_size: float) -> Path:
    """Write a float32 (z, y, x) map atomically, with ``voxel_size`` (Å) in the header.

    The header's origin stays 0 and the statistics (min/max/mean/rms) are updated.
    """
    import mrcfile

    if voxel_size is None or not np.isfinite(voxel_size) or voxel_size <= 0:
        raise InputError(f"voxel size must be a positive number of Å, got {voxel_size}")
    arr = np.ascontiguousarray(data, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise ValueError(f"write_mrc expects a 2D or 3D array, got shape {arr.shape}")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(arr)
            mrc.voxel_size = float(voxel_size)
            mrc.update_header_stats()
    return Path(path)


def check_same_grid(a: Volume, b: Volume, name_a: str, name_b: str) -> None:
    """Raise :class:`InputError` unless ``a`` and ``b`` share shape and voxel size (to 0.1 %)."""
    if a.shape != b.shape:
        raise InputError(f"{name_a} has shape {a.shape} but {name_b} has {b.shape}; they must match voxel for voxel")
    if not np.isclose(a.voxel_size, b.voxel_size, rtol=1e-3):
        raise InputError(
            f"{name_a} has voxel size {a.voxel_size:g} Å but {name_b} has {b.voxel_size:g} Å; resample one to match"
        )


# --------------------------------------------------------------------------------------------
# .tlt
# --------------------------------------------------------------------------------------------
def read_tlt(path: PathLike) -> np.ndarray:
    """Read an IMOD ``.tlt`` file (one tilt angle in degrees per line) as float64 array."""
    p = _require_file(path, "tilt-angle file")
    angles: list[float] = []
    for lineno, line in enumerate(p.read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        try:
            angles.append(float(text.split()[0]))
        except ValueError:
            raise InputError(f"{p}:{lineno}: '{text}' is not a tilt angle in degrees") from None
    arr = np.asarray(angles, dtype=np.float64)
    if arr.size == 0:
        raise InputError(f"{p} holds no tilt angles")
    if not np.isfinite(arr).all() or np.abs(arr).max() > 90:
        raise InputError(f"{p}: tilt angles must lie within -90..90 degrees")
    return arr


def write_tlt(path: PathLike, angles: np.ndarray) -> Path:
    """Write tilt angles (degrees) one per line, atomically."""
    return write_text(path, "".join(f"{float(a):.2f}\n" for a in np.asarray(angles).ravel()))


# --------------------------------------------------------------------------------------------
# STAR particle lists
# --------------------------------------------------------------------------------------------
def read_particles(path: PathLike) -> pd.DataFrame:
    """Read a RELION STAR particle list; returns a DataFrame with at least the coordinate columns.

    Coordinates (``rlnCoordinateX/Y/Z``) are in voxels; missing angle columns are filled with 0.
    """
    import starfile

    p = _require_file(path, "STAR file")
    try:
        content = starfile.read(p, always_dict=True)
    except Exception as exc:  # starfile raises a variety of parser errors
        raise InputError(f"{p} is not a readable STAR file ({type(exc).__name__})") from None
    tables = [t for t in content.values() if isinstance(t, pd.DataFrame) and set(STAR_COORDS) <= set(t.columns)]
    if not tables:
        raise InputError(f"{p} has no table with rlnCoordinateX/Y/Z columns")
    df = tables[0].copy()
    for col in STAR_ANGLES:
        if col not in df.columns:
            df[col] = 0.0
    for col in (*STAR_COORDS, *STAR_ANGLES):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if df[list(STAR_COORDS + STAR_ANGLES)].isna().to_numpy().any():
        raise InputError(f"{p} has non-numeric coordinates or angles")
    return df


def particles_frame(coords_zyx: np.ndarray, eulers: np.ndarray | None = None, scores: np.ndarray | None = None) -> pd.DataFrame:
    """Build a particle table from (N, 3) coordinates in (z, y, x) voxels and (N, 3) ZYZ Euler angles (°)."""
    c = np.asarray(coords_zyx, dtype=float).reshape(-1, 3)
    e = np.zeros_like(c) if eulers is None else np.asarray(eulers, dtype=float).reshape(-1, 3)
    df = pd.DataFrame(
        {
            "rlnCoordinateX": c[:, 2],
            "rlnCoordinateY": c[:, 1],
            "rlnCoordinateZ": c[:, 0],
            "rlnAngleRot": e[:, 0],
            "rlnAngleTilt": e[:, 1],
            "rlnAnglePsi": e[:, 2],
        }
    )
    if scores is not None:
        df[STAR_SCORE] = np.asarray(scores, dtype=float).ravel()
    return df


def particle_arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Return ((N, 3) coordinates in (z, y, x) voxels, (N, 3) Euler angles rot/tilt/psi in degrees)."""
    coords = df[["rlnCoordinateZ", "rlnCoordinateY", "rlnCoordinateX"]].to_numpy(dtype=float)
    angles = df[list(STAR_ANGLES)].to_numpy(dtype=float)
    return coords, angles


def write_particles(path: PathLike, df: pd.DataFrame) -> Path:
    """Write a particle table as a STAR file (one ``particles`` block), atomically."""
    import starfile

    with atomic_path(path) as tmp:
        starfile.write({"particles": df}, tmp, overwrite=True)
    return Path(path)
