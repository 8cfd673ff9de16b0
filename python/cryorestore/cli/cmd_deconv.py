"""``cryorestore deconv TOMO.mrc --ctf CTF.txt --out OUT.mrc``: Wiener-style CTF deconvolution of a tomogram."""

from __future__ import annotations

import argparse

import numpy as np

from cryorestore import ctf, io, volume_io
from cryorestore.cli.cmd_reconstruct import add_optics_arguments, optics_from
from cryorestore.cli.common import add_volume_options, positive

NAME = "deconv"
HELP = "Wiener-style CTF deconvolution of a tomogram (as IsoNet's deconv and Warp), for comparison with phase flipping"
DESCRIPTION = (
    "Filter a tomogram with T/(T^2 + 1/SNR(q)) of its 3D spatial frequency q, T = sin(chi) the CTF of a "
    "density-like image at the tilt series' mean defocus (from --ctf, the CTFFIND4 file of the series, or "
    "--defocus), SNR(q) = 10^(3 strength) exp(-100 falloff q) times a raised-cosine high-pass. Use "
    "--phase-flipped when the tomogram was reconstructed from phase-flipped images (its transfer is |T|)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tomogram", metavar="TOMO.mrc", help="tomogram (z, y, x) with its voxel size in the header")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ctf", metavar="CTF.txt", help="per-tilt CTFFIND4 estimates of the series (the mean defocus is used)")
    src.add_argument("--defocus", type=positive(float), metavar="A", help="mean defocus in Å (underfocus > 0)")
    p.add_argument("--out", required=True, metavar="OUT.mrc", help="the deconvolved tomogram")
    p.add_argument("--snr-falloff", type=positive(float), default=1.0, metavar="F",
                   help="how fast the assumed SNR falls with frequency (default: %(default)s)")
    p.add_argument("--strength", type=positive(float), default=1.0, metavar="S",
                   help="assumed SNR at low frequency is 10^(3 S) (default: %(default)s)")
    p.add_argument("--highpass", type=positive(float), default=0.02, metavar="Q",
                   help="high-pass edge in cycles/Å below which the filter rolls off to 0 (default: %(default)s)")
    p.add_argument("--phase-flipped", action="store_true", help="the tomogram was reconstructed from phase-flipped images")
    add_optics_arguments(p)
    add_volume_options(p, bin=False)


def run(args: argparse.Namespace) -> int:
    optics = optics_from(args)
    defocus = args.defocus if args.defocus else float(np.mean([c.mean_defocus for c in ctf.read_ctffind(args.ctf)]))
    vol = volume_io.read_volume(args.tomogram, args.zarr_level)
    out = ctf.wiener_deconvolve(vol.data, vol.voxel_size, defocus, optics, args.snr_falloff, args.strength,
                                args.highpass, args.phase_flipped)
    path = volume_io.write_volume(args.out, out, vol.voxel_size)
    print(f"deconvolved {path}  (defocus {defocus:.0f} Å, voxel {vol.voxel_size:g} Å)")
    return 0
