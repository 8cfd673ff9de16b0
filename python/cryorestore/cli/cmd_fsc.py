"""``cryorestore fsc A.mrc B.mrc``: Fourier shell correlation and resolution at 0.5 and 0.143."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cryorestore import fourier, io, volume_io
from cryorestore.cli.common import add_device_option, add_volume_options, resolve_device
from cryorestore.errors import InputError

NAME = "fsc"
HELP = "Fourier shell correlation of two maps; prints the resolution at FSC 0.5 and 0.143"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("map_a", metavar="A.mrc", help="first map (e.g. even half tomogram)")
    p.add_argument("map_b", metavar="B.mrc", help="second map, same shape and voxel size")
    p.add_argument("--mask", metavar="M.mrc", help="real-space mask (same grid) multiplied into both maps")
    p.add_argument("--out", metavar="F.csv", help="write the curve as CSV with header 'frequency,fsc'")
    add_device_option(p)
    add_volume_options(p, bin=False)


def run(args: argparse.Namespace) -> int:
    a = volume_io.read_volume(args.map_a, args.zarr_level)
    b = volume_io.read_volume(args.map_b, args.zarr_level)
    io.check_same_grid(a, b, args.map_a, args.map_b)
    da, db = a.data, b.data
    if args.mask:
        m = volume_io.read_volume(args.mask, args.zarr_level)
        io.check_same_grid(a, m, args.map_a, args.mask)
        da, db = da * m.data, db * m.data
    device = resolve_device(args.device)
    curve = fourier.fsc(torch.from_numpy(da).to(device), torch.from_numpy(db).to(device)).cpu().numpy()
    freqs = fourier.shell_frequencies(a.shape)
    if args.out:
        rows = "".join(f"{f:.6f},{c:.6f}\n" for f, c in zip(freqs, curve))
        io.write_text(args.out, "frequency,fsc\n" + rows)
    res = fourier.resolutions(curve, a.shape, a.voxel_size)
    for t, r in res.items():
        note = "" if r.crossed else " (never drops below; Nyquist)"
        print(f"FSC={t:<5g} resolution: {r.frequency:.4f} cycles/voxel = {r.angstrom:.1f} Å{note}")
    return 0
