"""``cryorestore mean A.mrc B.mrc --out MEAN.mrc``: the voxel-wise mean of maps on one grid.

The pipeline's raw map of a half-tomogram row is the mean of its even and odd halves (the full
tomogram up to reconstruction details), never one half alone: EVALUATE compares the restored map
with it.
"""

from __future__ import annotations

import argparse

import numpy as np

from cryorestore import io, volume_io
from cryorestore.cli.common import add_volume_options

NAME = "mean"
HELP = "voxel-wise mean of maps on one grid (e.g. the raw map of an even/odd pair); keeps the voxel size"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("maps", nargs="+", metavar="MAP.mrc", help="two or more maps with one shape and voxel size")
    p.add_argument("--out", required=True, metavar="MEAN.mrc", help="the mean map (written atomically; an OME-Zarr pyramid when it ends in .zarr)")
    add_volume_options(p, bin=False)


def mean_of_maps(paths: list[str], level: int = 0) -> io.Volume:
    """Mean (float32, accumulated in float64) of the maps at ``paths`` (MRC, or OME-Zarr level ``level``); they
    must share one grid."""
    first = volume_io.read_volume(paths[0], level)
    total = first.data.astype(np.float64)
    for p in paths[1:]:
        v = volume_io.read_volume(p, level)
        io.check_same_grid(first, v, paths[0], p)
        total += v.data
    return io.Volume((total / len(paths)).astype(np.float32), first.voxel_size)


def run(args: argparse.Namespace) -> int:
    from cryorestore.errors import InputError

    if len(args.maps) < 2:
        raise InputError("give at least two maps to average")
    mean = mean_of_maps(args.maps, args.zarr_level)
    volume_io.write_volume(args.out, mean.data, mean.voxel_size)
    print(f"wrote {args.out}: mean of {len(args.maps)} maps, {mean.voxel_size:g} Å voxels")
    return 0
