"""Read a tomogram slab by slab: MRC memory map against an OME-Zarr level 0 (cryorestore.volume_io).

    python benchmarks/bench_volume_io.py [--shape 256 1024 1024] [--slab 16] [--dir DIR] [--tile 64]

Writes one random float32 volume (z, y, x) as MRC (``io.write_mrc``) and as an OME-Zarr pyramid
(``volume_io.write_ome_zarr``: zarr format 2, 128³ chunks, Blosc-LZ4), then, each in a fresh
subprocess, reads it in z-slabs of ``--slab`` planes (and the OME-Zarr also in slabs one chunk deep, 128
planes, so that no chunk is decoded twice) through ``volume_io.read_volume(..., lazy=True)``
and sums every slab: wall time and the subprocess's peak resident memory (``VmHWM``; for the memory
map this counts the file pages it touched, which the kernel may drop). A second pass reads the same
slabs with the page cache warm. Also reports the write times and the sizes on disk. The data are
deleted at the end.

Two access patterns of the commands, each in a fresh subprocess too:

* prediction's tiles (``--tile`` voxels, overlap tile/4, z slowest, as ``predict.predict_mean`` reads
  them): from the MRC memory map, and from the OME-Zarr level with one chunk decoded at a time
  (``volume_io.LOCAL_READ_CONCURRENCY``, the reader's setting for local stores) and with zarr's default
  concurrency (10); the peak RSS above the opened map (``VmHWM`` − ``VmRSS`` before the reads), and the
  file pages one tile read straight from the map makes resident (``RssFile``) against
  ``blockwise.touched_bytes`` (a kernel that caches files in large folios maps a whole folio per fault);
* training's sampled normalisation (``data.estimate_normalization``, 4096 x-rows): by chunk band (the
  reader's way for chunked stores) and row by row (each row decodes every chunk it crosses).
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
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_predict_memory import proc_status_mib  # noqa: E402


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


def _pattern_child(path: str, mode: str, arg: str) -> None:
    """In a subprocess: ``tiles`` (arg: the zarr concurrency, or 'reader') or ``norm`` (arg: 'bands' or
    'rows'); print JSON with the time, the peak RSS above the opened map and a checksum."""
    from cryorestore import blockwise, data, volume_io
    from cryorestore.tiling import TileGrid

    vol = volume_io.read_volume(path, lazy=True, check_finite=False).data
    if isinstance(vol, volume_io.LazyLevel) and arg not in ("reader", "bands", "rows"):
        vol.concurrency = int(arg)
    before = proc_status_mib("VmRSS")
    t0 = time.perf_counter()
    if mode == "tiles":
        tile = int(os.environ.get("BENCH_TILE", "64"))
        grid = TileGrid(vol.shape, tile, tile // 4)
        # one tile read straight from the map: the file pages it makes resident against those counted
        file0 = proc_status_mib("RssFile")
        np.array(vol[0:tile, 0:tile, 0:tile], dtype=np.float32)  # a copy: touches the pages
        first = {"first_tile_file_MiB": proc_status_mib("RssFile") - file0,
                 "first_tile_counted_MiB": blockwise.touched_bytes((tile,) * 3, vol.shape, 4) / 2**20}
        if isinstance(vol, np.ndarray):
            blockwise.release_pages(vol)
        before = proc_status_mib("VmRSS")
        t0 = time.perf_counter()
        src = blockwise.page_releasing(vol) if blockwise.is_large(vol.shape) else vol
        check = sum(float(np.asarray(grid.read(src, o), dtype=np.float32)[0, 0, 0]) for o in grid.origins.tolist())
        extra = {"tiles": len(grid), **first}
    else:
        class RowByRow:  # the same map without chunk_shape: estimate_normalization reads it row by row
            shape = vol.shape

            def __getitem__(self, key):
                return vol[key]

        norm = data.estimate_normalization([RowByRow() if arg == "rows" else vol])
        check, extra = norm.mean + norm.std, {"mean": norm.mean, "std": norm.std}
    out = {"s": time.perf_counter() - t0, "over_MiB": proc_status_mib("VmHWM") - before, "check": check, **extra}
    print(json.dumps(out))


def _run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "python")})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _du(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[256, 1024, 1024], metavar=("Z", "Y", "X"))
    ap.add_argument("--slab", type=int, default=16, help="z-planes per slab read (default 16)")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temporary folder)")
    ap.add_argument("--tile", type=int, default=64, help="prediction tile edge in voxels (default 64)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if len(args.child) == 3:
            _pattern_child(*args.child)
        else:
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
            r = _run_child(str(path), str(slab))
            sums[name] = r["sum"]
            print(f"read   {name:<17} in slabs of {slab:>3} planes: first pass {r['cold_s']:.2f} s, second pass {r['warm_s']:.2f} s, "
                  f"peak RSS {r['peak_rss_MiB']:.0f} MiB")
        a, b = sums.values()
        assert abs(a - b) <= 1e-6 * max(1.0, abs(a)) + 1e-3 * np.sqrt(np.prod(shape)), sums
        os.environ["BENCH_TILE"] = str(args.tile)
        tiles = [("MRC memory map", mrc_path, "reader"),
                 (f"OME-Zarr, {volume_io.LOCAL_READ_CONCURRENCY} chunk at a time (reader)", zarr_path, "reader"),
                 ("OME-Zarr, zarr's default 10", zarr_path, "10")]
        checks = set()
        for name, path, arg in tiles:
            r = _run_child(str(path), "tiles", arg)
            checks.add(round(r["check"], 3))
            print(f"tiles  {name:<40} {r['tiles']} tiles of {args.tile}^3: {r['s']:.1f} s, peak RSS +{r['over_MiB']:.0f} MiB "
                  f"over the opened map; the first tile alone: +{r['first_tile_file_MiB']:.0f} MiB of file pages "
                  f"(touched_bytes counts {r['first_tile_counted_MiB']:.0f} MiB)")
        norms = {}
        for name, path, arg in [("MRC memory map, row by row", mrc_path, "rows"),
                                ("OME-Zarr, by chunk band (reader)", zarr_path, "bands"),
                                ("OME-Zarr, row by row", zarr_path, "rows")]:
            r = _run_child(str(path), "norm", arg)
            norms[name] = (r["mean"], r["std"])
            print(f"norm   {name:<40} 4096 rows: {r['s']:.2f} s, mean {r['mean']:.6f}, std {r['std']:.6f}")
        assert len(checks) == 1 and len(set(norms.values())) == 1, (checks, norms)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
