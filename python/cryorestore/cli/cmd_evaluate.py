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

With the half maps (``--even``, ``--odd``) and the model directory (``--model``) it adds the truth-free
score of :mod:`cryorestore.evaluate.truthfree` on the held-out slab the model records (or ``--holdout``/
``--holdout-mask``): ``tf_*`` keys in the metrics, ``score.json``, ``score_curves.json`` and ``score.png``
beside the JSON file, and the table printed after the truth-based one (``--clean`` adds the true gain).

Maps may be MRC files or OME-Zarr stores (``--zarr-level``); ``--bin`` Fourier-bins every map (and the
templates) at load and divides the particle positions by the factor; the voxel size in ``metrics.json``
is then the binned one.

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

from cryorestore import blockwise, io, outputs, plots, report, volume_io
from cryorestore.blockwise import open_map
from cryorestore.cli.common import (add_device_option, add_seed_option, add_volume_options, positive, resolve_device,
                                    seed_everything, tilt_range)
from cryorestore.errors import InputError
from cryorestore.evaluate import bounded, quality, segmentation, snr, species

BASELINES = ("gaussian", "wiener")
FOURIER_SLICE_CROP = 128  # voxels: the centre crop whose Fourier slices a large map's figure shows

NAME = "evaluate"
OUTPUT_ARGS = ("out",)  # locked; metrics.json, curves.json and figures/ appear together
HELP = ("compare raw, classical baselines and a restored map (PSNR, SSIM, FSC vs truth, wedge correlation, SNR, "
        "per-species STA and matching, membranes) into metrics.json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raw", required=True, metavar="R.mrc", help="the raw map: the full tomogram or the mean of the half maps (never one half alone)")
    p.add_argument("--restored", required=True, metavar="D.mrc", help="the restored map, same grid")
    p.add_argument("--truth", metavar="GT.mrc", help="noiseless truth on the same grid (simulator's ground_truth.mrc)")
    p.add_argument("--clean", metavar="CLEAN.mrc", help="noise-free reconstruction on the same grid (simulator's "
                   "clean.mrc): PSNR against it on the Fourier coefficients the tilts sampled (needs --tilt-range); with --even/--odd/--model also the "
                   "true gain beside the truth-free estimate")
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
    p.add_argument("--even", metavar="E.mrc", help="even half map (with --odd and --model: the truth-free score)")
    p.add_argument("--odd", metavar="O.mrc", help="odd half map, same grid")
    p.add_argument("--model", metavar="MODEL_DIR", help="the model directory that restored the map: the truth-free "
                   "score runs its network on each half alone over the held-out slab it records")
    p.add_argument("--holdout", metavar="AXIS:START:STOP", help="held-out slab for the truth-free score (voxels)")
    p.add_argument("--holdout-mask", metavar="M.mrc", help="held-out region as a mask for the truth-free score")
    p.add_argument("--out", required=True, metavar="metrics.json", help="output JSON file")
    add_volume_options(p)
    add_seed_option(p)
    add_device_option(p)


def _read(args: argparse.Namespace, path: str) -> io.Volume:
    """A map of the evaluation (MRC or OME-Zarr level ``--zarr-level``), Fourier-binned by ``--bin``; maps
    above :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels stay lazy (:func:`blockwise.open_map`)."""
    return open_map(path, args.zarr_level, args.bin)


def _read_maps(args: argparse.Namespace) -> tuple[io.Volume, dict[str, np.ndarray]]:
    """The raw volume and ``{name: map}`` for raw, the baselines of ``--baselines`` and restored, all
    checked to lie on the raw map's grid."""
    raw = _read(args, args.raw)
    maps = {"raw": raw.data}
    paths = [(n, Path(args.baselines) / f"{n}.mrc") for n in BASELINES] if args.baselines else []
    for name, path in paths + [("restored", Path(args.restored))]:
        v = _read(args, str(path))
        io.check_same_grid(raw, v, args.raw, str(path))
        maps[name] = v.data
    return raw, maps


def _truthfree_inputs(args: argparse.Namespace, raw: io.Volume, device):
    """(even, odd, loaded model, region, clean) for the truth-free score, or None when not asked for; every
    input checked before anything is computed."""
    from cryorestore.evaluate import truthfree as tf

    wanted = [k for k in ("even", "odd", "model") if getattr(args, k)]
    if not wanted:
        if args.holdout or args.holdout_mask:
            raise InputError("--holdout and --holdout-mask belong to the truth-free score: give --even, "
                             "--odd and --model too")
        return None
    if len(wanted) != 3:
        raise InputError("the truth-free score needs --even, --odd and --model together")
    if args.holdout and args.holdout_mask:
        raise InputError("give the held-out region once: --holdout or --holdout-mask, not both")
    from cryorestore.modeldir import load_model_dir

    even, odd = _read(args, args.even), _read(args, args.odd)  # large maps lazy: the score reads the region
    io.check_same_grid(raw, even, args.raw, args.even)
    io.check_same_grid(even, odd, args.even, args.odd)
    clean = None
    if args.clean:
        clean = open_map(args.clean)
        io.check_same_grid(even, clean, args.even, args.clean)
    loaded = load_model_dir(args.model, device)
    if args.holdout:
        region = tf.parse_holdout(args.holdout, even.shape)
    elif args.holdout_mask:
        m = io.read_mrc(args.holdout_mask)
        io.check_same_grid(even, m, args.even, args.holdout_mask)
        region = tf.mask_region(m.data, even.shape, args.holdout_mask)
    else:
        region = tf.holdout_from_config(loaded.config, even.shape, args.model, args.even, even.data)
    if blockwise.is_large(even.shape):  # large maps: the central part of the region (tf.capped_region)
        region = tf.capped_region(region)
    return even, odd, loaded, region, clean


def run(args: argparse.Namespace) -> int:
    raw, maps = _read_maps(args)
    tf_inputs = _truthfree_inputs(args, raw, resolve_device(args.device))
    truth = None
    if args.truth:
        t = _read(args, args.truth)
        io.check_same_grid(raw, t, args.raw, args.truth)
        truth = t.data
    tr = tilt_range(args.tilt_range) if args.tilt_range else None
    clean = None
    if args.clean:
        if tr is None:
            raise InputError("--clean needs --tilt-range (the PSNR against it counts only the sampled region)")
        c = open_map(args.clean)
        io.check_same_grid(raw, c, args.raw, args.clean)
        clean = c.data
    particles = io.read_particles(args.particles) if args.particles else None
    if particles is not None and args.bin > 1:  # positions on the binned grid: voxel b·j is binned voxel j
        for col in io.STAR_COORDS:
            particles[col] = particles[col] / args.bin
    templates = None
    if args.template:
        if particles is None:
            raise InputError("--template needs --particles (the true poses)")
        templates = species.load_templates(particles, Path(args.template).parent, fallback=args.template)
        if args.bin > 1:
            templates = {s: volume_io.fourier_bin(t, args.bin) for s, t in templates.items()}
        missing = [s for s in species.species_names(particles) if s not in templates]
        if missing:
            print(f"no template_<species>.mrc beside {args.template} for {', '.join(missing)}: not scored")
    memb = None
    if args.membranes:
        m = _read(args, args.membranes)
        io.check_same_grid(raw, m, args.raw, args.membranes)
        memb = m.data > 0.5
    if args.match_step and templates is None:
        raise InputError("--match-step needs --template and --particles (the true positions)")
    device = resolve_device(args.device)
    rng = seed_everything(args.seed)
    vs = raw.voxel_size
    stage = outputs.StagedFiles(Path(args.out).parent)  # metrics.json, curves.json, figures/ appear together
    out = stage.path / Path(args.out).name
    fig_dir = out.parent / "figures"
    extra = {k: v for k, v in maps.items() if k not in ("raw", "restored")}

    large = blockwise.is_large(raw.shape)  # bounded memory: slabs, blocks and stated crops (evaluate.bounded)
    scores = bounded if large else quality
    metrics: dict = scores.map_metrics(maps["raw"], maps["restored"], vs, truth=truth, tilt_range=tr, extra=extra,
                                       clean=clean)
    curves = scores.map_curves(maps["raw"], maps["restored"], truth, tr, extra=extra, clean=clean)
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

    blockwise.release_all(*maps.values(), truth, clean)  # large maps: pages read by the figures leave the process
    plots.orthoslices(dict(maps, **({"truth": truth} if truth is not None else {})), fig_dir / "orthoslices.png")
    # large maps: the Fourier slices of the centre crop (at most FOURIER_SLICE_CROP voxels per axis)
    shown = {n: bounded.centre_crop(m, FOURIER_SLICE_CROP) for n, m in maps.items()} if large else maps
    plots.fourier_slices(shown, fig_dir / "fourier_slices.png")
    del shown
    if truth is not None:
        plots.fsc_plot(curves["apod_frequency"], {f"{n} vs truth": curves[f"{n}_vs_truth_apod"] for n in maps},
                       fig_dir / "fsc.png", vs, title="FSC against the truth (apodised centre crop, up to sign)")
    plots.fsc_plot(curves["frequency"], {"raw vs restored (shared noise: agreement, not resolution)":
                                         curves["raw_vs_restored"]}, fig_dir / "fsc_raw_vs_restored.png", vs)
    for sp in templates or {}:
        per_map = {n: c[sp] for n, c in pr_curves.items() if sp in c}
        if per_map:
            plots.pr_plot(per_map, fig_dir / f"pr_{sp}.png", title=f"Template matching, {sp}: precision-recall")
    tf_text = None
    blockwise.release_all(*maps.values(), truth, clean)
    if tf_inputs is not None:
        from cryorestore.evaluate import truthfree as tf

        even, odd, loaded, region, clean = tf_inputs
        result, params = tf.run_score(even.data, odd.data, region, loaded=loaded,
                                      clean=None if clean is None else clean.data, truth=truth,
                                      tilt_range=tr or tuple(loaded.config["tilt_range"]), seed=args.seed,
                                      device=device, model_row="restored")
        tf.write_score(result, params, out.parent, {"inputs": {"even": args.even, "odd": args.odd,
                                                               "model": args.model, "clean": args.clean}})
        metrics |= result.flat_metrics()
        tf_text = tf.format_table(result)
    io.write_text(out.parent / "curves.json", json.dumps(curves) + "\n")
    doc = {"metrics": metrics, "inputs": {"raw": str(args.raw), "restored": str(args.restored), "truth": args.truth,
                                          "clean": args.clean, "baselines": args.baselines, "particles": args.particles,
                                          "template": args.template, "membranes": args.membranes,
                                          "tilt_range": list(tr) if tr else None, "match_step": args.match_step,
                                          "zarr_level": args.zarr_level, "bin": args.bin},
           "voxel_size": vs}
    io.write_text(out, json.dumps(doc, indent=2) + "\n")
    cols, rows = report.side_by_side(metrics, list(maps))
    print(f"{'figure':<28}" + "".join(f"{c:>12}" for c in cols))
    for stem, vals in rows:
        print(f"{stem:<28}" + "".join(f"{v:>12.4f}" if v is not None else f"{'–':>12}" for v in vals))
    stage.commit()
    if tf_text:
        print(tf_text)
    print(f"wrote {stage.final(out)} and {stage.final(fig_dir)}/")
    return 0
