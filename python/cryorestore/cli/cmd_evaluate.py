"""``cryorestore evaluate --raw R.mrc --restored D.mrc [--truth GT.mrc] --out metrics.json``.

Everything that applies to the inputs given, for the raw map, the restored map and the classical
baselines of ``--baselines DIR`` (``gaussian.mrc`` and ``wiener.mrc`` written by ``cryorestore
baseline``) side by side: map metrics (:func:`evaluate.quality.map_metrics`; against the truth the
resolution is the apodised FSC=0.5, up to one global sign), SNR from boxes chosen in the truth,
per-species subtomogram averages at the true poses and, with ``--match-step``, per-species template
matching with precision-recall (``--particles`` + ``--template``; see :mod:`evaluate.species`; keys
``<figure>_<species>_<map>``), and membrane Dice (``--membranes``). Every map gets the same wedge
compensation (``--tilt-range``) in averaging and matching, and with ``--truth`` the contrast sign of
:func:`evaluate.quality.truth_sign`. Figures (orthoslices, Fourier slices, FSC, PR) go next to the
JSON file in ``figures/`` and curves in ``curves.json``.

Maps above :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels stay memory-mapped and get the
bounded-memory figures of :mod:`cryorestore.evaluate.bounded` (moments and SSIM by slabs and blocks,
every whole-map FSC over the stated crops, ``crop_edge`` in the JSON); their orthoslices are read by
slabs and their Fourier slices are those of the centre crop of at most 128³ voxels. SNR, STA, matching and membranes are
computed as for small maps (whole-volume work: give them crops of large maps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cryorestore import blockwise, io, plots, report
from cryorestore.blockwise import open_map
from cryorestore.cli.common import add_device_option, add_seed_option, positive, resolve_device, seed_everything, tilt_range
from cryorestore.errors import InputError
from cryorestore.evaluate import bounded, quality, segmentation, snr, species

BASELINES = ("gaussian", "wiener")
FOURIER_SLICE_CROP = 128  # voxels: the centre crop whose Fourier slices a large map's figure shows

NAME = "evaluate"
HELP = ("compare raw, classical baselines and a restored map (PSNR, SSIM, FSC vs truth, wedge correlation, SNR, "
        "per-species STA and matching, membranes) into metrics.json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raw", required=True, metavar="R.mrc", help="the raw map: the full tomogram or the mean of the half maps (never one half alone)")
    p.add_argument("--restored", required=True, metavar="D.mrc", help="the restored map, same grid")
    p.add_argument("--truth", metavar="GT.mrc", help="noiseless truth on the same grid (simulator's ground_truth.mrc)")
    p.add_argument("--tilt-range", type=float, nargs=2, metavar=("MIN", "MAX"), help="tilt range in degrees: wedge metrics")
    p.add_argument("--particles", metavar="P.star", help="true particle poses: STA at these poses; SNR signal boxes")
    p.add_argument("--baselines", metavar="DIR", help="folder written by 'cryorestore baseline': its gaussian.mrc and "
                   "wiener.mrc are scored alongside raw and restored")
    p.add_argument("--template", metavar="T.mrc", help="particle template (box^3): STA reference and matching template; "
                   "with a cryorestoreSpecies column, template_<species>.mrc beside it serves each species")
    p.add_argument("--membranes", metavar="M.mrc", help="binary membrane mask: Dice of the segmentation of both maps")
    p.add_argument("--match-step", type=positive(float), default=None, metavar="DEG",
                   help="also template-match both maps with this angular step (slow on big maps) and report PR")
    p.add_argument("--snr-box", type=positive(int), default=16, help="box edge for the SNR with --truth (default 16)")
    p.add_argument("--out", required=True, metavar="metrics.json", help="output JSON file")
    add_seed_option(p)
    add_device_option(p)


def _read_maps(args: argparse.Namespace) -> tuple[io.Volume, dict[str, np.ndarray]]:
    """The raw volume and ``{name: map}`` for raw, the baselines of ``--baselines`` and restored, all
    checked to lie on the raw map's grid."""
    raw = open_map(args.raw)  # maps above blockwise.BLOCKWISE_VOXELS stay memory-mapped
    maps = {"raw": raw.data}
    paths = [(n, Path(args.baselines) / f"{n}.mrc") for n in BASELINES] if args.baselines else []
    for name, path in paths + [("restored", Path(args.restored))]:
        v = open_map(path)
        io.check_same_grid(raw, v, args.raw, str(path))
        maps[name] = v.data
    return raw, maps


def run(args: argparse.Namespace) -> int:
    raw, maps = _read_maps(args)
    truth = None
    if args.truth:
        t = open_map(args.truth)
        io.check_same_grid(raw, t, args.raw, args.truth)
        truth = t.data
    tr = tilt_range(args.tilt_range) if args.tilt_range else None
    particles = io.read_particles(args.particles) if args.particles else None
    templates = None
    if args.template:
        if particles is None:
            raise InputError("--template needs --particles (the true poses)")
        templates = species.load_templates(particles, Path(args.template).parent, fallback=args.template)
        missing = [s for s in species.species_names(particles) if s not in templates]
        if missing:
            print(f"no template_<species>.mrc beside {args.template} for {', '.join(missing)}: not scored")
    memb = None
    if args.membranes:
        m = io.read_mrc(args.membranes)
        io.check_same_grid(raw, m, args.raw, args.membranes)
        memb = m.data > 0.5
    if args.match_step and templates is None:
        raise InputError("--match-step needs --template and --particles (the true positions)")
    device = resolve_device(args.device)
    rng = seed_everything(args.seed)
    vs = raw.voxel_size
    out = Path(args.out)
    fig_dir = out.parent / "figures"
    extra = {k: v for k, v in maps.items() if k not in ("raw", "restored")}

    large = blockwise.is_large(raw.shape)  # bounded memory: slabs, blocks and stated crops (evaluate.bounded)
    scores = bounded if large else quality
    metrics: dict = scores.map_metrics(maps["raw"], maps["restored"], vs, truth=truth, tilt_range=tr, extra=extra)
    curves = scores.map_curves(maps["raw"], maps["restored"], truth, tr, extra=extra)
    if truth is not None:
        try:
            centres = None if particles is None else io.particle_arrays(particles)[0]
            sig, bg = snr.auto_boxes(truth, args.snr_box, 30, rng, centres)
            for name, m_ in maps.items():
                metrics[f"snr_db_{name}"] = snr.snr_db(m_, sig, bg, args.snr_box)
        except InputError as exc:
            print(f"SNR skipped: {exc}")
    pr_curves: dict[str, dict] = {}
    if templates is not None:
        for name, m_ in maps.items():
            sign = metrics.get(f"sign_{name}", 1.0)
            pr_curves[name] = {}
            per = species.species_metrics(m_, particles, templates, vs, tilt_range=tr, sign=sign,
                                          match_step=args.match_step, seed=args.seed, device=device,
                                          pr_curves=pr_curves[name])
            for sp, figs in per.items():
                metrics.update({f"{k}_{sp}_{name}": v for k, v in figs.items() if k != "n_particles"})
                metrics[f"n_particles_{sp}"] = figs["n_particles"]
    if memb is not None:
        for name, m_ in maps.items():
            _, seg = segmentation.segment_membranes(m_, vs)
            metrics[f"membrane_dice_{name}"] = segmentation.dice(seg, memb)

    plots.orthoslices(dict(maps, **({"truth": truth} if truth is not None else {})), fig_dir / "orthoslices.png")
    # large maps: the Fourier slices of the centre crop (at most FOURIER_SLICE_CROP voxels per axis)
    plots.fourier_slices({n: bounded.centre_crop(m, FOURIER_SLICE_CROP) for n, m in maps.items()} if large else maps,
                         fig_dir / "fourier_slices.png")
    if truth is not None:
        plots.fsc_plot(curves["apod_frequency"], {f"{n} vs truth": curves[f"{n}_vs_truth_apod"] for n in maps},
                       fig_dir / "fsc.png", vs, title="FSC against the truth (apodised centre crop, up to sign)")
    plots.fsc_plot(curves["frequency"], {"raw vs restored (shared noise: agreement, not resolution)":
                                         curves["raw_vs_restored"]}, fig_dir / "fsc_raw_vs_restored.png", vs)
    for sp in templates or {}:
        per_map = {n: c[sp] for n, c in pr_curves.items() if sp in c}
        if per_map:
            plots.pr_plot(per_map, fig_dir / f"pr_{sp}.png", title=f"Template matching, {sp}: precision-recall")
    io.write_text(out.parent / "curves.json", json.dumps(curves) + "\n")
    doc = {"metrics": metrics, "inputs": {"raw": str(args.raw), "restored": str(args.restored), "truth": args.truth,
                                          "baselines": args.baselines, "particles": args.particles,
                                          "template": args.template, "membranes": args.membranes,
                                          "tilt_range": list(tr) if tr else None, "match_step": args.match_step}}
    io.write_text(out, json.dumps(doc, indent=2) + "\n")
    cols, rows = report.side_by_side(metrics, list(maps))
    print(f"{'figure':<28}" + "".join(f"{c:>12}" for c in cols))
    for stem, vals in rows:
        print(f"{stem:<28}" + "".join(f"{v:>12.4f}" if v is not None else f"{'–':>12}" for v in vals))
    print(f"wrote {out} and {fig_dir}/")
    return 0
