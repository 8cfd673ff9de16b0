"""``cryorestore simulate OUT_DIR``: the synthetic benchmark (phantom, noisy tilt series, WBP tomograms)."""

from __future__ import annotations

import argparse
import sys

from cryorestore import simulate
from cryorestore.cli.common import add_device_option, add_seed_option, positive, resolve_device, seed_everything, tilt_range

NAME = "simulate"
HELP = "simulate a tomogram with known truth: ground truth, full/even/odd WBP tomograms, tilts, particles"
DESCRIPTION = (
    "Simulate the synthetic benchmark: copies of an asymmetric particle at known positions and orientations, "
    "lipid vesicles, gold beads and a weak background; parallel projections about y at the tilt scheme; "
    "shot noise set by the dose; weighted back-projection into full.mrc and the half tomograms even.mrc/odd.mrc "
    "(T2T: even/odd tilts; F2F: even/odd frames). Also writes ground_truth.mrc, tilts.tlt, particles.star, "
    "template.mrc and membranes.mrc, every MRC with the voxel size in its header."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder for the output files (created if missing)")
    p.add_argument("--shape", nargs=3, type=int, metavar=("Z", "Y", "X"), default=list(simulate.DEFAULT_SHAPE),
                   help="volume size in voxels, z (thickness) y x (default: %(default)s)")
    p.add_argument("--voxel-size", type=positive(float), default=simulate.DEFAULT_VOXEL_SIZE, metavar="A",
                   help="voxel size in Å (default: %(default)s)")
    p.add_argument("--tilt-range", nargs=2, type=float, metavar=("MIN", "MAX"), default=list(simulate.DEFAULT_TILT_RANGE),
                   help="tilt range in degrees (default: %(default)s)")
    p.add_argument("--tilt-step", type=positive(float), default=simulate.DEFAULT_TILT_STEP, metavar="DEG",
                   help="tilt increment in degrees (default: %(default)s)")
    p.add_argument("--dose", type=positive(float), default=simulate.DEFAULT_DOSE, metavar="E_PER_A2",
                   help="total electron dose over the tilt series in e/Å² (default: %(default)s)")
    p.add_argument("--split", choices=("t2t", "f2f"), default="t2t",
                   help="half sets: t2t = even/odd tilts, f2f = even/odd frames of every tilt (default: %(default)s)")
    p.add_argument("--frames", type=positive(int), default=simulate.DEFAULT_FRAMES, metavar="N",
                   help="frames per tilt for --split f2f (default: %(default)s)")
    p.add_argument("--noise", choices=("poisson", "gaussian"), default="poisson",
                   help="shot-noise model; gaussian has the Poisson variance (default: %(default)s)")
    add_seed_option(p)
    add_device_option(p)


def run(args: argparse.Namespace) -> int:
    lo, hi = tilt_range(args.tilt_range)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    paths = simulate.simulate_dataset(
        args.out_dir, shape=args.shape, voxel_size=args.voxel_size, tilt_range=(lo, hi), tilt_step=args.tilt_step,
        dose=args.dose, split=args.split, seed=args.seed, frames=args.frames, noise=args.noise, device=device,
        progress=sys.stderr.isatty(),
    )
    for name, path in paths.items():
        print(f"{name:<13s}{path}")
    return 0
