"""Read a tomogram slab by slab: MRC memory map against an OME-Zarr level 0 (cryorestore.volume_io).

    python benchmarks/bench_volume_io.py [--shape 256 1024 1024] [--slab 16] [--dir DIR]

Writes one random float32 volume (z, y, x) as MRC (``io.write_mrc``) and as an OME-Zarr pyramid
(``volume_io.write_ome_zarr``: zarr format 2, 128³ chunks, Blosc-LZ4), then, each in a fresh
subprocess, reads it in z-slabs of ``--slab`` planes (and the OME-Zarr also in slabs one chunk deep, 128
planes, so that no chunk is decoded twice) through ``volume_io.read_volume(..., lazy=True)``
and sums every slab: wall time and the subprocess's peak resident memory (``VmHWM``; for the memory
map this counts the file pages it touched, which the kernel may drop). A second pass reads the same
slabs with the page cache warm. Also reports the write times and the sizes on disk. The data are
deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))


def _read_child(path: str, slab: int) -> None:
    """In a subprocess: read ``path`` slab by slab twice; print JSON with the times and peak RSS."""
    from cryorestore import volume_io

    if volume_io.is_zarr(path):
        volume_io._zarr()  # the import of zarr is not part of the read
    out = {}
    for tag in ("cold", "warm"):
        t0 = time.perf_counter()
        vol = volume_io.read_volume(path, lazy=True, check_finite=False)
        total = 0.0
        for z0 in range(0, vol.shape[0], slab):
            total += float(np.asarray(vol.data[z0:z0 + slab], dtype=np.float32).sum(dtype=np.float64))
        out[f"{tag}_s"] = time.perf_counter() - t0
        out["sum"] = total
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak over fork and exec)
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    out["peak_rss_MiB"] = int(hwm.split()[1]) / 1024
    print(json.dumps(out))


def _du(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[256, 1024, 1024], metavar=("Z", "Y", "X"))
    ap.add_argument("--slab", type=int, default=16, help="z-planes per slab read (default 16)")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temporary folder)")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "SLAB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _read_child(args.child[0], int(args.child[1]))
        return 0

    import mrcfile

    from cryorestore import volume_io

    shape = tuple(args.shape)
    work = Path(tempfile.mkdtemp(prefix="bench_volume_io.", dir=args.dir))
    try:
        rng = np.random.default_rng(0)
        mrc_path, zarr_path = work / "tomo.mrc", work / "tomo.zarr"
        t0 = time.perf_counter()
        with mrcfile.new_mmap(mrc_path, shape=shape, mrc_mode=2, overwrite=True) as m:
            for z0 in range(0, shape[0], args.slab):
                z1 = min(shape[0], z0 + args.slab)
                m.data[z0:z1] = rng.standard_normal((z1 - z0, *shape[1:]), dtype=np.float32)
            m.voxel_size = 10.0
        t_mrc = time.perf_counter() - t0
        mm = volume_io.read_volume(mrc_path, lazy=True, check_finite=False)
        t0 = time.perf_counter()
        volume_io.write_ome_zarr(zarr_path, mm.data, 10.0)
        t_zarr = time.perf_counter() - t0
        del mm
        print(f"volume {shape} float32 = {np.prod(shape) * 4 / 2**20:.0f} MiB; slabs of {args.slab} planes")
        print(f"write  MRC (generate + write): {t_mrc:.1f} s, {_du(mrc_path) / 2**20:.0f} MiB on disk")
        print(f"write  OME-Zarr pyramid from the MRC memory map: {t_zarr:.1f} s, {_du(zarr_path) / 2**20:.0f} MiB on "
              f"disk, levels {volume_io.zarr_levels(zarr_path).paths}")
        sums = {}
        chunk = volume_io.CHUNK_EDGE
        runs = [("MRC memory map", mrc_path, args.slab), ("OME-Zarr level 0", zarr_path, args.slab),
                ("OME-Zarr level 0", zarr_path, chunk)]
        for name, path, slab in runs:
            proc = subprocess.run([sys.executable, __file__, "--child", str(path), str(slab)],
                                  capture_output=True, text=True, check=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "python")})
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            sums[name] = r["sum"]
            print(f"read   {name:<17} in slabs of {slab:>3} planes: first pass {r['cold_s']:.2f} s, second pass {r['warm_s']:.2f} s, "
                  f"peak RSS {r['peak_rss_MiB']:.0f} MiB")
        a, b = sums.values()
        assert abs(a - b) <= 1e-6 * max(1.0, abs(a)) + 1e-3 * np.sqrt(np.prod(shape)), sums
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
