"""``cryorestore match TOMO.mrc TEMPLATE.mrc --angular-step DEG --out-dir DIR``: template matching.

Writes DIR/scores.mrc (max NCC per voxel), DIR/best_rotation.mrc (index of the best rotation, as float),
DIR/angles.csv (the searched RELION angles), DIR/peaks.star (positions in voxels of the input, angles,
scores in ``rlnAutopickFigureOfMerit``), DIR/metrics.json and DIR/scores.png; with ``--truth`` also the
precision-recall curve (DIR/pr.csv, DIR/pr.png, DIR/f1.png) and ``pr_auc``, ``peak_f1`` … in metrics.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cryorestore import io, plots, volume_io
from cryorestore.cli.common import add_device_option, add_volume_options, positive, resolve_device, tilt_range
from cryorestore.errors import InputError
from cryorestore.evaluate import angles, matching, pr

NAME = "match"
HELP = "template matching (masked NCC over a uniform angular search, wedge-weighted); peaks as STAR; PR against a truth list"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tomogram", metavar="TOMO.mrc", help="map to search")
    p.add_argument("template", metavar="TEMPLATE.mrc", help="cubic template, particle centred on voxel N//2, same voxel size")
    p.add_argument("--angular-step", type=positive(float), required=True, metavar="DEG",
                   help="angular sampling in degrees (15 gives 4392 rotations)")
    p.add_argument("--tilt-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="weight the template by this missing wedge (degrees about y)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="output folder")
    p.add_argument("--truth", metavar="particles.star", help="true positions: precision, recall, PR-AUC, peak F1")
    p.add_argument("--n-peaks", type=positive(int), default=None,
                   help="peaks to keep (default: 3x the number of true particles, else 200)")
    p.add_argument("--min-distance", type=positive(float), default=None,
                   help="minimum distance between peaks in voxels (default: the mask radius)")
    p.add_argument("--tolerance", type=positive(float), default=None,
                   help="a peak within this many voxels of a true particle is a true positive (default: half the mask radius)")
    p.add_argument("--mask-radius", type=positive(float), default=None,
                   help="spherical mask radius in voxels (default: radius holding 99%% of the template's density, + 1)")
    p.add_argument("--edge", type=int, default=0, help="ignore peaks closer than this to a face (voxels, default 0)")
    p.add_argument("--bin", type=positive(int), default=1,
                   help="bin tomogram and template by this factor first (block mean); positions are reported unbinned")
    p.add_argument("--batch", type=positive(int), default=8, help="rotations prepared per batch (default 8)")
    p.add_argument("--threads", type=positive(int), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_option(p)
    add_volume_options(p, bin=False)


def bin_volume(vol: np.ndarray, b: int) -> np.ndarray:
    """Block mean over b³ blocks (the volume is cropped to a multiple of b)."""
    if b == 1:
        return vol
    z, y, x = (n // b for n in vol.shape)
    if min(z, y, x) < 2:
        raise InputError(f"--bin {b} leaves too few voxels of a {vol.shape} map")
    v = vol[: z * b, : y * b, : x * b].reshape(z, b, y, b, x, b)
    return v.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def unbin_positions(p: np.ndarray, b: int, box: int) -> np.ndarray:
    """Binned peak positions → original voxels, correcting for the template's centre under binning."""
    if b == 1:
        return p.astype(float)
    nb = box // b
    offset = (box // 2 - (b - 1) / 2.0) / b - nb // 2
    return b * (p + offset) + (b - 1) / 2.0


def run(args: argparse.Namespace) -> int:
    import torch

    tomo = volume_io.read_volume(args.tomogram, args.zarr_level)
    tmpl = volume_io.read_volume(args.template)
    if not np.isclose(tomo.voxel_size, tmpl.voxel_size, rtol=1e-3):
        raise InputError(f"{args.tomogram} has voxel size {tomo.voxel_size:g} Å but the template {tmpl.voxel_size:g} Å; resample the template")
    matching.check_template(tmpl.data, tomo.shape)
    tr = tilt_range(args.tilt_range) if args.tilt_range else None
    truth = io.particle_arrays(io.read_particles(args.truth))[0] if args.truth else None
    if args.bin > 1 and tmpl.shape[0] % args.bin:
        raise InputError(f"the template box {tmpl.shape[0]} is not a multiple of --bin {args.bin}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    out = Path(args.out_dir)
    b = args.bin
    t_data, t_tmpl = bin_volume(tomo.data, b), bin_volume(tmpl.data, b)
    eul = angles.uniform_eulers(args.angular_step)
    mask_radius = None if args.mask_radius is None else args.mask_radius / b
    print(f"searching {len(eul)} rotations ({args.angular_step:g} deg) over {t_data.shape} voxels on {device}")
    res = matching.match_template(t_data, t_tmpl, eul, tilt_range=tr, mask_radius=mask_radius, device=device,
                                  batch=args.batch, progress=not args.no_progress)
    radius_vox = res.mask_radius * b
    min_dist = args.min_distance if args.min_distance else radius_vox
    n_peaks = args.n_peaks or (3 * len(truth) if truth is not None and len(truth) else 200)
    pk, sc = matching.find_peaks(res.scores, n_peaks, min_dist / b, edge=int(np.ceil(args.edge / b)))
    best = res.best_index[tuple(pk.T)] if len(pk) else np.zeros(0, dtype=int)
    pos = unbin_positions(pk, b, tmpl.shape[0])
    peaks = io.particles_frame(pos, eul[best], sc)
    metrics: dict = {"n_peaks": int(len(pk)), "n_rotations": int(len(eul)), "angular_step_deg": args.angular_step,
                     "search_seconds": res.seconds, "mask_radius_vox": radius_vox, "min_distance_vox": min_dist,
                     "bin": b, "device": str(device), "tomogram": str(args.tomogram), "template": str(args.template),
                     "score_mean": float(res.scores.mean()), "score_std": float(res.scores.std()),
                     "torch_threads": torch.get_num_threads()}
    tol = args.tolerance if args.tolerance else radius_vox / 2.0
    pr_res = None
    if truth is not None:
        pr_res = pr.precision_recall(pos, sc, truth, tol)
        metrics.update(pr_res.summary())
        metrics["tolerance_vox"] = tol
    # outputs
    io.write_mrc(out / "scores.mrc", res.scores, tomo.voxel_size * b)
    io.write_mrc(out / "best_rotation.mrc", res.best_index.astype(np.float32), tomo.voxel_size * b)
    io.write_text(out / "angles.csv", "index,rot,tilt,psi\n" + "".join(
        f"{i},{r:.4f},{t:.4f},{s:.4f}\n" for i, (r, t, s) in enumerate(eul)))
    io.write_particles(out / "peaks.star", peaks)
    if pr_res is not None:
        rows = "".join(f"{t:.6f},{p:.6f},{r:.6f},{f:.6f},{int(m)}\n" for t, p, r, f, m in
                       zip(pr_res.thresholds, pr_res.precision, pr_res.recall, pr_res.f1, pr_res.matched))
        io.write_text(out / "pr.csv", "threshold,precision,recall,f1,true_positive\n" + rows)
        plots.pr_plot({Path(args.tomogram).name: (pr_res.recall, pr_res.precision)}, out / "pr.png")
        plots.f1_plot({Path(args.tomogram).name: (pr_res.thresholds, pr_res.f1)}, out / "f1.png")
        plots.score_histogram({"true positives": pr_res.thresholds[pr_res.matched],
                               "false positives": pr_res.thresholds[~pr_res.matched]}, out / "scores.png")
    else:
        plots.score_histogram({"peaks": sc}, out / "scores.png")
    io.write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    line = f"{len(pk)} peaks in {res.seconds:.1f} s"
    if pr_res is not None:
        line += f"; PR-AUC {pr_res.pr_auc:.3f}, peak F1 {pr_res.peak_f1:.3f} (tolerance {tol:g} voxels)"
    print(line)
    print(f"wrote {out}/peaks.star, scores.mrc, metrics.json")
    return 0
