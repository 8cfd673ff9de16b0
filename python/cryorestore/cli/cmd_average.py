"""``cryorestore average TOMO.mrc PARTICLES.star --box N --out-dir DIR``: subtomogram averaging.

Writes DIR/half1.mrc, DIR/half2.mrc, DIR/average.mrc, DIR/fsc.csv, DIR/fsc.png and DIR/metrics.json
(half-map resolution at FSC 0.5/0.143; against ``--reference`` too); with ``--refine`` also
DIR/refined.star (poses after local refinement, before averaging).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cryorestore import io, plots, volume_io
from cryorestore.cli.common import add_device_option, add_seed_option, add_volume_options, positive, resolve_device, seed_everything, tilt_range
from cryorestore.errors import InputError
from cryorestore.evaluate import averaging

NAME = "average"
HELP = "subtomogram averaging in two random halves: half maps, half-map FSC and resolution, FSC against a reference"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tomogram", metavar="TOMO.mrc", help="map to extract particles from")
    p.add_argument("particles", metavar="PARTICLES.star", help="positions (voxels) and RELION angles")
    p.add_argument("--box", type=positive(int), required=True, help="box edge in voxels")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="output folder")
    p.add_argument("--reference", metavar="REF.mrc", help="reference map (box^3) for FSC against it and for --refine")
    p.add_argument("--tilt-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="wedge-compensate the averages (and the refinement) for this tilt range (degrees)")
    p.add_argument("--mask-radius", type=positive(float), default=None, help="soft FSC mask radius in voxels (default 0.4 x box)")
    p.add_argument("--refine", action="store_true", help="locally refine orientations and shifts against --reference first")
    p.add_argument("--refine-step", type=positive(float), default=4.0, help="refinement angular step in degrees (default 4)")
    p.add_argument("--refine-steps", type=positive(int), default=1, help="steps each way about each axis (default 1: 27 rotations)")
    p.add_argument("--max-shift", type=int, default=2, help="largest refinement shift in voxels (default 2)")
    add_seed_option(p)
    add_device_option(p)
    add_volume_options(p, bin=False)


def run(args: argparse.Namespace) -> int:
    vol = volume_io.read_volume(args.tomogram, args.zarr_level)
    coords, eul = io.particle_arrays(io.read_particles(args.particles))
    ref = None
    if args.reference:
        r = volume_io.read_volume(args.reference)
        if r.shape != (args.box,) * 3:
            raise InputError(f"{args.reference} has shape {r.shape}; --box {args.box} needs a ({args.box}, {args.box}, {args.box}) reference")
        if not np.isclose(r.voxel_size, vol.voxel_size, rtol=1e-3):
            raise InputError(f"{args.reference} has voxel size {r.voxel_size:g} Å, the tomogram {vol.voxel_size:g} Å")
        ref = r.data
    if args.refine and ref is None:
        raise InputError("--refine needs --reference REF.mrc")
    if args.box > min(vol.shape):
        raise InputError(f"--box {args.box} is larger than the tomogram {vol.shape}")
    tr = tilt_range(args.tilt_range) if args.tilt_range else None
    device = resolve_device(args.device)
    rng = seed_everything(args.seed)
    out = Path(args.out_dir)
    refined = None
    if args.refine:
        coords, eul, scores = averaging.refine(vol.data, coords, eul, ref, args.refine_step, args.refine_steps,
                                               args.max_shift, tr, device=device)
        refined = io.particles_frame(coords, eul, scores)
    res = averaging.subtomogram_average(vol.data, coords, eul, args.box, vol.voxel_size, rng, reference=ref,
                                        tilt_range=tr, mask_radius=args.mask_radius)
    io.write_mrc(out / "half1.mrc", res.half1, vol.voxel_size)
    io.write_mrc(out / "half2.mrc", res.half2, vol.voxel_size)
    io.write_mrc(out / "average.mrc", res.full, vol.voxel_size)
    if refined is not None:
        io.write_particles(out / "refined.star", refined)
    curves = {"half maps": res.fsc_half}
    if res.fsc_reference is not None:
        curves["average vs reference"] = res.fsc_reference
    header = "frequency," + ",".join(k.replace(" ", "_") for k in curves)
    rows = "".join(f"{f:.6f}," + ",".join(f"{c[i]:.6f}" for c in curves.values()) + "\n" for i, f in enumerate(res.frequencies))
    io.write_text(out / "fsc.csv", header + "\n" + rows)
    plots.fsc_plot(res.frequencies, curves, out / "fsc.png", vol.voxel_size, title="Subtomogram average FSC")
    metrics = dict(res.metrics, tomogram=str(args.tomogram), particles=str(args.particles), refined=bool(args.refine))
    io.write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    m = res.metrics
    print(f"{int(m['n_particles'])} particles; half-map FSC 0.5 at {m['half_fsc05']:.4f} cycles/voxel ({m['half_fsc05_angstrom']:.1f} Å), "
          f"0.143 at {m['half_fsc0143']:.4f} ({m['half_fsc0143_angstrom']:.1f} Å)")
    if "ref_fsc05" in m:
        print(f"against the reference: FSC 0.5 at {m['ref_fsc05']:.4f} cycles/voxel ({m['ref_fsc05_angstrom']:.1f} Å)")
    return 0
