"""``cryorestore simulate OUT_DIR``: the synthetic benchmark (phantom, noisy tilt series, WBP tomograms)."""

from __future__ import annotations

import argparse
import sys

from cryorestore import outputs, simulate
from cryorestore.cli.cmd_reconstruct import add_optics_arguments, optics_from
from cryorestore.cli.common import add_device_option, add_seed_option, positive, resolve_device, seed_everything, tilt_range

NAME = "simulate"
OUTPUT_ARGS = ("out_dir",)  # locked; written all at once (cryorestore.outputs)
HELP = "simulate a tomogram with known truth: ground truth, tilt series, CTF, full/even/odd tomograms, particles"
DESCRIPTION = (
    "Simulate the benchmark. --preset realistic (default): 80S ribosomes and 40S subunits from the atomic model "
    "4V6X at random non-overlapping positions and orientations, lipid bilayers with two leaflets, gold beads and "
    "ice, projected on a 2x finer grid as a weak-phase object with a CTF (300 kV, Cs 2.7 mm, 3-5 um underfocus per "
    "tilt, astigmatism, the defocus gradient of tilted images), the cumulative exposure filter of a dose-symmetric "
    "scheme, the ice path 1/cos(theta) and Poisson noise, binned 2x2; tomograms are WBP of phase-flipped images. "
    "--preset teamtomo: a second, independent simulator built on teamtomo's packages (ttsim3d potentials of every "
    "atom of every placed copy of 4V6X, torch-fourier-slice projection, torch-ctf CTF with a per-column defocus "
    "gradient, torch-fourier-filter's critical exposure, ice with excluded volume, Poisson counts; needs the "
    "teamtomo extra). --preset toy: blob particles, amplitude contrast, no CTF (fast). Writes ground_truth.mrc, full.mrc, even.mrc, "
    "odd.mrc (T2T: even/odd tilts; F2F: even/odd frames), tilts.tlt, tilt_series.mrc, ctf.txt (CTFFIND4 format), "
    "particles.star (with cryorestoreSpecies, rlnClassNumber), template.mrc, template_<species>.mrc, membranes.mrc "
    "and simulation.json, every MRC with the voxel size in its header."
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
    p.add_argument("--preset", choices=simulate.PRESETS, default="realistic",
                   help="realistic (CTF, real molecules), teamtomo (the same physics through teamtomo's packages) or toy "
                        "(blobs, no CTF) (default: %(default)s)")
    p.add_argument("--dose", type=positive(float), default=None, metavar="E_PER_A2",
                   help="total electron dose over the tilt series in e/Å² (default: 120 realistic and teamtomo, 110 toy)")
    p.add_argument("--astigmatism", type=float, default=None, metavar="A",
                   help="realistic, teamtomo: defocus 1 - defocus 2 in Å (default: 300)")
    add_optics_arguments(p)
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
    optics_from(args)  # bad optics fail before any work
    device = resolve_device(args.device)
    seed_everything(args.seed)
    with outputs.folder(args.out_dir) as stage:  # every file appears at once, or none
        paths = simulate.simulate_dataset(
            stage, shape=args.shape, voxel_size=args.voxel_size, tilt_range=(lo, hi), tilt_step=args.tilt_step,
            dose=args.dose, split=args.split, seed=args.seed, frames=args.frames, noise=args.noise, device=device,
            progress=sys.stderr.isatty(), preset=args.preset, astigmatism=args.astigmatism, optics=optics_from(args),
        )
    for name, path in paths.items():
        print(f"{name:<22s}{outputs.relocate(path, stage, args.out_dir)}")
    return 0
