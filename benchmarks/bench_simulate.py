"""Time `simulate` of the default dataset end to end and by stage; report FSC crossings and the CTF gain.

Usage: python benchmarks/bench_simulate.py [--preset realistic|toy] [--shape Z Y X] [--split t2t|f2f]
       [--threads N] [--repeats N]

Stages: phantom (specimen), projection (all tilts), ctf (realistic: CTF, exposure filter and binning),
noise, the weighted back-projections (full, even, odd; realistic: of phase-flipped images) and writing
the output files. Targets on 2 idle CPU cores, 64×256×256, 41 tilts: toy under 60 s, realistic under
120 s. The best of ``--repeats`` runs is reported, wall and CPU seconds (other jobs share the machine).
Also prints the even/odd FSC and FSC(full, truth) crossings at 0.5 and 0.143 and, for the realistic
preset, FSC(truth) of the tilt series reconstructed with and without CTF correction (phase flipping
with ctf.txt, as ``cryorestore reconstruct --ctf``) and of the Wiener-deconvolved uncorrected tomogram
(as ``cryorestore deconv``), averaged over frequency bands.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

from cryorestore import ctf, fourier, io, reconstruct, simulate

TARGET_S = {"toy": 60.0, "realistic": 120.0}
BANDS = ((0.0, 0.2), (0.2, 0.35), (0.35, 0.5))  # cycles/voxel


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=simulate.PRESETS, default="realistic")
    p.add_argument("--shape", nargs=3, type=int, default=list(simulate.DEFAULT_SHAPE), metavar=("Z", "Y", "X"))
    p.add_argument("--split", choices=("t2t", "f2f"), default="t2t")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, the CI machine's cores)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    best: dict[str, float] | None = None
    best_total = float("inf")
    best_cpu = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            timings: dict[str, float] = {}
            t0, c0 = time.perf_counter(), time.process_time()
            paths = simulate.simulate_dataset(os.path.join(tmp, f"run{r}"), shape=args.shape, split=args.split,
                                              seed=args.seed, timings=timings, preset=args.preset)
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
            if total < best_total:
                best_total, best, best_cpu = total, timings, cpu
        even, odd, full, truth = (io.read_mrc(paths[k]).data for k in ("even", "odd", "full", "ground_truth"))
        voxel = io.read_mrc(paths["full"]).voxel_size
        ctf_rows = []
        if args.preset == "realistic" and args.split == "t2t":
            stack = io.read_mrc(paths["tilt_series"]).data
            angles = io.read_tlt(paths["tilts"])
            rows = ctf.read_ctffind(paths["ctf"], n_expected=len(angles))
            raw = reconstruct.reconstruct_halves(stack, angles, thickness=args.shape[0])["full"]
            flipped = reconstruct.reconstruct_halves(stack, angles, thickness=args.shape[0], ctfs=rows,
                                                     pixel_size=voxel)["full"]
            mean_df = float(np.mean([c.mean_defocus for c in rows]))
            ctf_rows = [("WBP, no CTF correction", raw), ("WBP of phase-flipped images (--ctf)", flipped),
                        ("no correction + Wiener deconv", ctf.wiener_deconvolve(raw, voxel, mean_df)),
                        ("phase-flipped + Wiener deconv", ctf.wiener_deconvolve(flipped, voxel, mean_df, phase_flipped=True))]

    n_tilts = len(simulate.tilt_angles(simulate.DEFAULT_TILT_RANGE, simulate.DEFAULT_TILT_STEP))
    target = TARGET_S[args.preset]
    print(f"simulate --preset {args.preset} {tuple(args.shape)} (z, y, x), {n_tilts} tilts, split {args.split}, "
          f"{args.threads} torch threads, {os.cpu_count()} CPUs visible, torch {torch.__version__}, {platform.machine()}")
    print(f"{'stage':<24s}{'seconds':>10s}")
    assert best is not None
    for name in ("phantom", "projection", "ctf", "noise", "backprojection_full", "backprojection_even",
                 "backprojection_odd", "write"):
        if name in best:
            print(f"{name:<24s}{best[name]:>10.2f}")
    print(f"{'total (end to end)':<24s}{best_total:>10.2f}   (CPU {best_cpu:.1f} s)   target < {target:g} s: "
          f"{'PASS' if best_total < target else 'FAIL'}")

    for label, a, b in (("FSC(even, odd)", even, odd), ("FSC(full, truth)", full, truth)):
        curve = fourier.fsc(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        res = fourier.resolutions(curve, a.shape, voxel)
        parts = [f"{t:g}: {r.frequency:.3f} cycles/voxel ({r.angstrom:.0f} Å)" for t, r in res.items()]
        print(f"{label:<18s} " + ", ".join(parts))
    if ctf_rows:
        freqs = fourier.shell_frequencies(truth.shape)
        head = "".join(f"{f'{lo:g}-{hi:g}':>11s}" for lo, hi in BANDS)
        print(f"\nmean FSC(·, truth) per band (cycles/voxel){'':8s}{head}   FSC=0.5")
        for label, vol in ctf_rows:
            curve = fourier.fsc(torch.from_numpy(vol), torch.from_numpy(truth)).numpy()
            means = "".join(f"{curve[(freqs > lo) & (freqs <= hi)].mean():>11.3f}" for lo, hi in BANDS)
            r = fourier.resolutions(curve, vol.shape, voxel)[0.5]
            print(f"{label:<48s}{means}   {r.frequency:.3f}")
    return 0 if best_total < target else 1


if __name__ == "__main__":
    sys.exit(main())
