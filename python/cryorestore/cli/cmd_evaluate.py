"""``cryorestore evaluate --raw R.mrc --restored D.mrc [--truth GT.mrc] --out metrics.json``.

Everything that applies to the inputs given: map metrics (:func:`evaluate.quality.map_metrics`), SNR
from boxes chosen in the truth, subtomogram averages at the given poses (``--particles`` +
``--template``), membrane Dice (``--membranes``) and, with ``--match-step``, template matching with
precision-recall on both maps. Figures (orthoslices, Fourier slices, FSC, PR) go next to the JSON
file in ``figures/`` and curves in ``curves.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cryorestore import io, plots
from cryorestore.cli.common import add_device_option, add_seed_option, positive, resolve_device, seed_everything, tilt_range
from cryorestore.errors import InputError
from cryorestore.evaluate import angles, averaging, matching, pr, quality, segmentation, snr

# STA: the raw map's average is wedge-compensated when --tilt-range is given; the restored map's is a plain mean.

NAME = "evaluate"
HELP = "compare a raw and a restored map (PSNR, SSIM, FSC, wedge correlation, SNR, STA, membranes, matching) into metrics.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raw", required=True, metavar="R.mrc", help="the raw (e.g. full WBP) map")
    p.add_argument("--restored", required=True, metavar="D.mrc", help="the restored map, same grid")
    p.add_argument("--truth", metavar="GT.mrc", help="noiseless truth on the same grid (simulator's ground_truth.mrc)")
    p.add_argument("--tilt-range", type=float, nargs=2, metavar=("MIN", "MAX"), help="tilt range in degrees: wedge metrics")
    p.add_argument("--particles", metavar="P.star", help="true particle poses: STA at these poses; SNR signal boxes")
    p.add_argument("--template", metavar="T.mrc", help="particle template (box^3): STA reference and matching template")
    p.add_argument("--membranes", metavar="M.mrc", help="binary membrane mask: Dice of the segmentation of both maps")
    p.add_argument("--match-step", type=positive(float), default=None, metavar="DEG",
                   help="also template-match both maps with this angular step (slow on big maps) and report PR")
    p.add_argument("--snr-box", type=positive(int), default=16, help="box edge for the SNR with --truth (default 16)")
    p.add_argument("--out", required=True, metavar="metrics.json", help="output JSON file")
    add_seed_option(p)
    add_device_option(p)


def run(args: argparse.Namespace) -> int:
    raw = io.read_mrc(args.raw)
    rest = io.read_mrc(args.restored)
    io.check_same_grid(raw, rest, args.raw, args.restored)
    truth = None
    if args.truth:
        t = io.read_mrc(args.truth)
        io.check_same_grid(raw, t, args.raw, args.truth)
        truth = t.data
    tr = tilt_range(args.tilt_range) if args.tilt_range else None
    parts = io.particle_arrays(io.read_particles(args.particles)) if args.particles else None
    tmpl = io.read_mrc(args.template).data if args.template else None
    if tmpl is not None:
        matching.check_template(tmpl, raw.shape)
    memb = None
    if args.membranes:
        m = io.read_mrc(args.membranes)
        io.check_same_grid(raw, m, args.raw, args.membranes)
        memb = m.data > 0.5
    if args.match_step and (tmpl is None or parts is None):
        raise InputError("--match-step needs --template and --particles (the true positions)")
    device = resolve_device(args.device)
    rng = seed_everything(args.seed)
    vs = raw.voxel_size
    out = Path(args.out)
    fig_dir = out.parent / "figures"
    maps = {"raw": raw.data, "restored": rest.data}

    metrics: dict = quality.map_metrics(raw.data, rest.data, vs, truth=truth, tilt_range=tr)
    curves = quality.map_curves(raw.data, rest.data, truth, tr)
    if truth is not None:
        try:
            sig, bg = snr.auto_boxes(truth, args.snr_box, 30, rng, None if parts is None else parts[0])
            for name, m_ in maps.items():
                metrics[f"snr_db_{name}"] = snr.snr_db(m_, sig, bg, args.snr_box)
        except InputError as exc:
            print(f"SNR skipped: {exc}")
    if parts is not None and tmpl is not None and len(parts[0]) >= 2:
        box = tmpl.shape[0]
        for name, m_ in maps.items():
            # only the raw map is known to miss the wedge; a restored map may have filled it
            res = averaging.subtomogram_average(m_, parts[0], parts[1], box, vs, np.random.default_rng(args.seed),
                                                reference=tmpl, tilt_range=tr if name == "raw" else None,
                                                progress=False)
            for k in ("half_fsc05", "half_fsc0143", "ref_fsc05", "ref_fsc0143"):
                metrics[f"sta_{k}_{name}"] = res.metrics[k]
            curves[f"sta_half_{name}"] = res.fsc_half.tolist()
            curves["sta_frequency"] = res.frequencies.tolist()
    if memb is not None:
        for name, m_ in maps.items():
            _, seg = segmentation.segment_membranes(m_, vs)
            metrics[f"membrane_dice_{name}"] = segmentation.dice(seg, memb)
    pr_curves = {}
    if args.match_step:
        eul = angles.uniform_eulers(args.match_step)
        for name, m_ in maps.items():
            res = matching.match_template(m_, tmpl, eul, tilt_range=tr, device=device)
            pk, sc = matching.find_peaks(res.scores, 3 * len(parts[0]), res.mask_radius)
            pres = pr.precision_recall(pk, sc, parts[0], res.mask_radius / 2)
            metrics[f"pr_auc_{name}"] = pres.pr_auc
            metrics[f"peak_f1_{name}"] = pres.peak_f1
            metrics[f"match_seconds_{name}"] = res.seconds
            pr_curves[name] = (pres.recall, pres.precision)

    plots.orthoslices(dict(maps, **({"truth": truth} if truth is not None else {})), fig_dir / "orthoslices.png")
    plots.fourier_slices(maps, fig_dir / "fourier_slices.png")
    fc = {"raw vs restored": curves["raw_vs_restored"]}
    if truth is not None:
        fc.update({"raw vs truth": curves["raw_vs_truth"], "restored vs truth": curves["restored_vs_truth"]})
    plots.fsc_plot(curves["frequency"], fc, fig_dir / "fsc.png", vs)
    if pr_curves:
        plots.pr_plot(pr_curves, fig_dir / "pr.png")
    io.write_text(out.parent / "curves.json", json.dumps(curves) + "\n")
    doc = {"metrics": metrics, "inputs": {"raw": str(args.raw), "restored": str(args.restored), "truth": args.truth,
                                          "particles": args.particles, "template": args.template,
                                          "membranes": args.membranes, "tilt_range": list(tr) if tr else None}}
    io.write_text(out, json.dumps(doc, indent=2) + "\n")
    for key in ("psnr", "ssim", "fsc05", "fsc0143", "wedge_corr", "snr_db", "sta_half_fsc05", "membrane_dice", "pr_auc", "peak_f1"):
        if f"{key}_raw" in metrics:
            print(f"{key:<16} raw {metrics[f'{key}_raw']:>9.4f}   restored {metrics[f'{key}_restored']:>9.4f}")
    print(f"wrote {out} and {fig_dir}/")
    return 0
