"""``cryorestore reconstruct TILT_SERIES.mrc --angles TLT --out-dir DIR [--ctf CTF.txt]``: WBP full and half tomograms."""

from __future__ import annotations

import argparse
import sys

from cryorestore import ctf, io, outputs, reconstruct
from cryorestore.cli.common import add_device_option, positive, resolve_device

NAME = "reconstruct"
OUTPUT_ARGS = ("out_dir",)  # locked; written all at once (cryorestore.outputs)
HELP = "weighted back-projection of a tilt series into full.mrc, even.mrc and odd.mrc (T2T or F2F half sets)"
DESCRIPTION = (
    "Reconstruct a tilt series (MRC stack of images (n, Y, X), tilt axis along Y, angles in degrees from an IMOD "
    ".tlt file) by weighted back-projection into DIR/full.mrc and the half tomograms DIR/even.mrc and DIR/odd.mrc. "
    "--split t2t: one image per angle, halves = even/odd images. --split f2f: the stack holds F >= 2 frames per "
    "angle, tilt by tilt; halves = mean of even/odd frames of every tilt. The voxel size is the stack's pixel size. "
    "Images must be density-like (particles bright). Handedness: IMOD/Dynamo/novaCTF, at positive tilt angles the "
    "right side (+x) of an image is more underfocused. --ctf CTF.txt (CTFFIND4 or AreTomo3 output, one row per "
    "tilt in stack order) phase-flips every image first, in strips along the tilt axis that follow its defocus gradient."
)


def add_optics_arguments(p: argparse.ArgumentParser) -> None:
    """``--voltage``, ``--cs``, ``--amplitude-contrast`` (shared by the commands that model the CTF)."""
    p.add_argument("--voltage", type=positive(float), default=ctf.DEFAULT_VOLTAGE, metavar="KV",
                   help="acceleration voltage in kV (default: %(default)s)")
    p.add_argument("--cs", type=float, default=ctf.DEFAULT_CS, metavar="MM",
                   help="spherical aberration in mm (default: %(default)s)")
    p.add_argument("--amplitude-contrast", type=float, default=ctf.DEFAULT_AMPLITUDE_CONTRAST, metavar="A",
                   help="amplitude contrast fraction (default: %(default)s)")


def optics_from(args: argparse.Namespace) -> ctf.Optics:
    return ctf.Optics(args.voltage, args.cs, args.amplitude_contrast)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tilt_series", metavar="TILT_SERIES.mrc", help="aligned tilt series (or frame stack for f2f)")
    p.add_argument("--angles", required=True, metavar="TLT", help="tilt angles in degrees, one per line (IMOD .tlt)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="folder for full.mrc, even.mrc, odd.mrc")
    p.add_argument("--split", choices=("t2t", "f2f"), default="t2t", help="half sets (default: %(default)s)")
    p.add_argument("--thickness", type=positive(int), metavar="N",
                   help="tomogram thickness (Z) in voxels (default: a quarter of the image width X, at least 16)")
    p.add_argument("--ctf", metavar="CTF.txt",
                   help="per-tilt CTF estimates in the CTFFIND4 text format; phase-flip the images before back-projection")
    add_optics_arguments(p)
    p.add_argument("--strip", type=positive(int), default=ctf.DEFAULT_STRIP, metavar="PX",
                   help="strip width in pixels along the tilt axis for the defocus gradient (default: %(default)s)")
    add_device_option(p)


def run(args: argparse.Namespace) -> int:
    stack = io.read_mrc(args.tilt_series)
    angles = io.read_tlt(args.angles)
    optics = optics_from(args)
    ctfs = ctf.read_ctffind(args.ctf, n_expected=len(angles)) if args.ctf else None
    device = resolve_device(args.device)
    tomos = reconstruct.reconstruct_halves(stack.data, angles, split=args.split, thickness=args.thickness,
                                           device=device, progress=sys.stderr.isatty(), ctfs=ctfs,
                                           pixel_size=stack.voxel_size, optics=optics, strip=args.strip)
    with outputs.folder(args.out_dir) as stage:  # the three maps appear together, or none
        for name in ("full", "even", "odd"):
            io.write_mrc(stage / f"{name}.mrc", tomos[name], stack.voxel_size)
    for name in ("full", "even", "odd"):
        print(f"{name:<5s} {args.out_dir}/{name}.mrc  shape {tomos[name].shape}")
    return 0
