"""``cryorestore segment TOMO.mrc --out SEG.mrc``: membrane surfaceness and hysteresis mask."""

from __future__ import annotations

import argparse
import json

import numpy as np

from cryorestore import io, volume_io
from cryorestore.cli.common import add_device_option, add_volume_options, positive
from cryorestore.errors import InputError
from cryorestore.evaluate import segmentation

NAME = "segment"
HELP = "segment membranes with a multi-scale Hessian surfaceness filter and hysteresis; Dice against a truth mask"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tomogram", metavar="TOMO.mrc", help="map to segment")
    p.add_argument("--out", required=True, metavar="SEG.mrc", help="binary membrane mask (0/1)")
    p.add_argument("--surfaceness", metavar="S.mrc", help="also write the normalised surfaceness map")
    p.add_argument("--truth", metavar="MEMBRANES.mrc", help="binary truth mask; prints and records the Dice coefficient")
    p.add_argument("--thickness", type=positive(float), default=segmentation.DEFAULT_THICKNESS_A,
                   help="membrane thickness in Å (default 40)")
    p.add_argument("--low", type=float, default=0.3, help="hysteresis low threshold, relative to the 99.9th percentile (default 0.3)")
    p.add_argument("--high", type=float, default=0.6, help="hysteresis high threshold (default 0.6)")
    p.add_argument("--min-size", type=int, default=1000, help="drop components smaller than this many voxels (default 1000)")
    p.add_argument("--polarity", choices=("bright", "dark"), default="bright", help="membranes brighter (default) or darker than the background")
    p.add_argument("--metrics", metavar="M.json", help="write Dice and voxel counts as JSON")
    add_device_option(p)  # computation is CPU (scipy); accepted for a uniform interface
    add_volume_options(p, bin=False)


def run(args: argparse.Namespace) -> int:
    vol = volume_io.read_volume(args.tomogram, args.zarr_level)
    if not 0 <= args.low <= args.high:
        raise InputError(f"need 0 <= --low <= --high, got {args.low} and {args.high}")
    truth = None
    if args.truth:
        t = volume_io.read_volume(args.truth, args.zarr_level)
        io.check_same_grid(vol, t, args.tomogram, args.truth)
        truth = t.data > 0.5
    s, mask = segmentation.segment_membranes(vol.data, vol.voxel_size, args.thickness, args.low, args.high,
                                             args.polarity, args.min_size, progress=True)
    result = {"membrane_voxels": int(mask.sum()), "thickness_A": args.thickness, "low": args.low, "high": args.high,
              "min_size": args.min_size}
    if truth is not None:
        result["dice"] = segmentation.dice(mask, truth)
        result["truth_voxels"] = int(truth.sum())
    volume_io.write_volume(args.out, mask.astype(np.float32), vol.voxel_size)
    if args.surfaceness:
        io.write_mrc(args.surfaceness, s, vol.voxel_size)
    if args.metrics:
        io.write_text(args.metrics, json.dumps(result, indent=2) + "\n")
    msg = f"{result['membrane_voxels']} membrane voxels"
    if "dice" in result:
        msg += f"; Dice vs {args.truth} = {result['dice']:.4f}"
    print(msg)
    return 0
