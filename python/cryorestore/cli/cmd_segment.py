"""``cryorestore segment TOMO.mrc --out SEG.mrc``: membrane mask (see :mod:`cryorestore.evaluate.segmentation`)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from cryorestore import io, volume_io
from cryorestore.cli.common import add_device_option, add_volume_options, positive
from cryorestore.errors import InputError
from cryorestore.evaluate import segmentation

NAME = "segment"
HELP = ("segment membranes: Hessian plate responses whose orientations agree over tens of Å (bilayers), "
        "mid-surface, hysteresis, a mask of the membrane's thickness; Dice against a truth mask")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tomogram", metavar="TOMO.mrc", help="map to segment")
    p.add_argument("--out", required=True, metavar="SEG.mrc", help="binary membrane mask (0/1)")
    p.add_argument("--surfaceness", metavar="S.mrc", help="also write the sheet saliency map (multiples of its median)")
    p.add_argument("--truth", metavar="MEMBRANES.mrc", help="binary truth mask; prints and records the Dice coefficient")
    p.add_argument("--thickness", type=positive(float), default=segmentation.DEFAULT_THICKNESS_A,
                   help="total membrane width the mask gets, in Å (default %(default)g)")
    p.add_argument("--scale", type=positive(float), default=segmentation.LEAFLET_SCALES_A[0],
                   help="Hessian scale (Gaussian sigma) in Å of the plate filter (default %(default)g)")
    p.add_argument("--coherence", type=positive(float), default=segmentation.COHERENCE_SCALE_A,
                   help="sigma in Å over which plate orientations must agree (default %(default)g)")
    p.add_argument("--low", type=float, default=segmentation.DEFAULT_LOW,
                   help="hysteresis low threshold on the sheet saliency, in multiples of its median (default %(default)g)")
    p.add_argument("--high", type=float, default=segmentation.DEFAULT_HIGH,
                   help="hysteresis high threshold, multiples of the median (default %(default)g)")
    p.add_argument("--coherence-low", type=float, default=segmentation.DEFAULT_COHERENCE_LOW,
                   help="orientation coherence (0-1) a mid-surface voxel needs (default %(default)g)")
    p.add_argument("--coherence-high", type=float, default=segmentation.DEFAULT_COHERENCE_HIGH,
                   help="coherence (0-1) of the strong voxel each kept sheet holds (default %(default)g)")
    p.add_argument("--min-area", type=float, default=segmentation.DEFAULT_MIN_AREA_A2,
                   help="drop sheets whose mid-surface is smaller than this many Å² (default %(default)g)")
    p.add_argument("--polarity", choices=("bright", "dark"), default="bright", help="membranes brighter (default) or darker than the background")
    p.add_argument("--metrics", metavar="M.json", help="write Dice and voxel counts as JSON")
    add_device_option(p)  # computation is CPU (scipy); accepted for a uniform interface
    add_volume_options(p, bin=False)


def run(args: argparse.Namespace) -> int:
    vol = volume_io.read_volume(args.tomogram, args.zarr_level)
    if not (0 <= args.low <= args.high and 0 <= args.coherence_low <= args.coherence_high <= 1 and args.min_area >= 0):
        raise InputError(f"need 0 <= --low <= --high, 0 <= --coherence-low <= --coherence-high <= 1 and --min-area >= 0, "
                         f"got {args.low}, {args.high}, {args.coherence_low}, {args.coherence_high}, {args.min_area}")
    truth = None
    if args.truth:
        t = volume_io.read_volume(args.truth, args.zarr_level)
        io.check_same_grid(vol, t, args.tomogram, args.truth)
        truth = t.data > 0.5
    s, mask = segmentation.segment_membranes(
        vol.data, vol.voxel_size, args.thickness, args.low, args.high, args.polarity, args.min_area,
        args.coherence_low, args.coherence_high, (args.scale,), args.coherence, progress=True)
    result = {"membrane_voxels": int(mask.sum()), "thickness_A": args.thickness, "scale_A": args.scale,
              "coherence_A": args.coherence, "low": args.low, "high": args.high,
              "coherence_low": args.coherence_low, "coherence_high": args.coherence_high, "min_area_A2": args.min_area}
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
