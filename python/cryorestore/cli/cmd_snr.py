"""``cryorestore snr TOMO.mrc``: SNR in dB from paired signal/background boxes (Bepler et al. 2020)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from cryorestore import io, volume_io
from cryorestore.cli.common import add_seed_option, add_volume_options, positive, seed_everything
from cryorestore.errors import InputError
from cryorestore.evaluate import snr

NAME = "snr"
HELP = "signal-to-noise ratio (dB) from paired signal and background boxes (STAR files or chosen from the truth)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tomogram", metavar="TOMO.mrc", help="map to measure")
    p.add_argument("--signal", metavar="S.star", help="signal box centres (rlnCoordinateX/Y/Z, voxels)")
    p.add_argument("--background", metavar="B.star", help="background box centres, paired row by row with --signal")
    p.add_argument("--box", type=positive(int), required=True, help="cubic box edge in voxels")
    p.add_argument("--truth", metavar="GT.mrc", help="instead of STAR files: choose boxes from the simulator's noiseless map")
    p.add_argument("--particles", metavar="P.star", help="with --truth: signal boxes at these particle positions")
    p.add_argument("--n-boxes", type=positive(int), default=30, help="with --truth: number of box pairs (default 30)")
    p.add_argument("--out", metavar="SNR.json", help="also write the result and the box centres as JSON")
    add_seed_option(p)
    add_volume_options(p, bin=False)


def run(args: argparse.Namespace) -> int:
    vol = volume_io.read_volume(args.tomogram, args.zarr_level)
    if args.truth:
        truth = volume_io.read_volume(args.truth, args.zarr_level)
        io.check_same_grid(vol, truth, args.tomogram, args.truth)
        centres = io.particle_arrays(io.read_particles(args.particles))[0] if args.particles else None
        sig, bg = snr.auto_boxes(truth.data, args.box, args.n_boxes, seed_everything(args.seed), centres)
    elif args.signal and args.background:
        sig = io.particle_arrays(io.read_particles(args.signal))[0]
        bg = io.particle_arrays(io.read_particles(args.background))[0]
    else:
        raise InputError("give --signal S.star and --background B.star, or --truth GT.mrc to choose boxes automatically")
    value = snr.snr_db(vol.data, sig, bg, args.box)
    print(f"SNR = {value:.3f} dB over {len(sig)} box pairs of {args.box}^3 voxels")
    if args.out:
        io.write_text(args.out, json.dumps({"snr_db": value, "box": args.box, "n_pairs": len(sig),
                                            "signal_zyx": np.asarray(sig).tolist(),
                                            "background_zyx": np.asarray(bg).tolist()}, indent=2) + "\n")
    return 0
