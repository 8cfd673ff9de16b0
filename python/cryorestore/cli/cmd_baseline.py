"""``cryorestore baseline --even E --odd O [--full F] [--truth GT] --out-dir DIR``.

Writes the two classical baselines of :mod:`cryorestore.baseline` for a tomogram's half maps:
``gaussian.mrc`` (Gaussian low-pass; sigma by PSNR against ``--truth`` when given, else at the half-map
FSC=0.143 frequency) and ``wiener.mrc`` (FSC-weighted half-map Wiener filter), both of the raw map
(``--full`` when given, else the mean of the halves), and ``baseline.json`` with the chosen parameters.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cryorestore import baseline, io
from cryorestore.blockwise import open_map, write_map
from cryorestore.cli.common import add_volume_options

NAME = "baseline"
HELP = "classical baselines of a raw map: Gaussian low-pass and FSC-weighted half-map Wiener filter"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--even", required=True, metavar="E.mrc", help="even half tomogram")
    p.add_argument("--odd", required=True, metavar="O.mrc", help="odd half tomogram, same grid")
    p.add_argument("--full", metavar="F.mrc", help="full tomogram (default: the mean of the halves is filtered)")
    p.add_argument("--truth", metavar="GT.mrc", help="noiseless truth: the Gaussian's sigma maximises the PSNR against it")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="writes gaussian.mrc, wiener.mrc, baseline.json")
    add_volume_options(p)


def _read(args: argparse.Namespace, path: str) -> io.Volume:
    """MRC or OME-Zarr level ``--zarr-level``, binned by ``--bin``; maps above
    :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels stay lazy and are filtered by slabs/blocks."""
    return open_map(path, args.zarr_level, args.bin)


def _write(path: Path, volume, voxel_size: float) -> None:
    """In-memory maps as before (:func:`io.write_mrc`); lazy views of large maps slab by slab."""
    write_map(path, volume, voxel_size)


def run(args: argparse.Namespace) -> int:
    even = _read(args, args.even)
    odd = _read(args, args.odd)
    io.check_same_grid(even, odd, args.even, args.odd)
    full = truth = None
    if args.full:
        f = _read(args, args.full)
        io.check_same_grid(even, f, args.even, args.full)
        full = f.data
    if args.truth:
        t = _read(args, args.truth)
        io.check_same_grid(even, t, args.even, args.truth)
        truth = t.data
    out = Path(args.out_dir)
    vs = even.voxel_size
    gauss = baseline.gaussian_baseline(even.data, odd.data, full, truth)
    _write(out / "gaussian.mrc", gauss.volume, vs)  # a lazy view on large maps: written slab by slab
    gauss.volume = None
    wien = baseline.wiener_baseline(even.data, odd.data, full)
    _write(out / "wiener.mrc", wien.volume, vs)
    doc = {"gaussian": gauss.params, "wiener": wien.params, "voxel_size": vs,
           "inputs": {"even": str(args.even), "odd": str(args.odd), "full": args.full, "truth": args.truth,
                      "zarr_level": args.zarr_level, "bin": args.bin}}
    io.write_text(out / "baseline.json", json.dumps(doc, indent=2) + "\n")
    print(f"gaussian: sigma {gauss.params['sigma_voxels']:.3f} voxels ({gauss.params['chosen_by']})")
    print(f"wiener: weights {wien.params['formula']}")
    print(f"wrote {out}/gaussian.mrc, wiener.mrc, baseline.json")
    return 0
