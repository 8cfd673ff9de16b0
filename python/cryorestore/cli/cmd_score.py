"""``cryorestore score --even E --odd O (--model MODEL_DIR | --restored-even A --restored-odd B) --out-dir DIR``.

The truth-free score (:mod:`cryorestore.evaluate.truthfree`) of a restoration on a held-out region of
real data: for raw, a Gaussian low-pass whose sigma the score itself chooses, the half-map Wiener
filter and each restoration, the estimated PSNR gain over raw with a block-bootstrap interval, the
cross-FSC of each half's map against the other half, and the leak and hallucination checks.

How each row is made (its map of each half alone; the restored map is the mean of the two):

* ``raw``: the half maps; the raw map is ``(even + odd) / 2``;
* ``gaussian``: each half low-passed with the sigma of the lowest estimated error;
* ``wiener``: each half through the FSC-weighted Wiener filter (weights from the region's half-map FSC);
* ``--model``: the network on each half alone (the model's test-time augmentation), then the model's
  combination (``--combine``) split per half (:func:`cryorestore.ensemble.combine_halves`); only the
  region plus one tile around it is predicted;
* ``--restored-even/--restored-odd``: another program's restorations of each half, run on that half
  alone (a program that took both halves at once would leak the other half's noise; the leak check
  flags it). With ``--name`` for the row.

The region: the slab a model directory records (``holdout`` in its ``config.json``; training writes
it), or ``--holdout AXIS:START:STOP`` (voxels, STOP exclusive), or ``--holdout-mask M.mrc`` (non-zero
voxels). ``--clean C.mrc`` (a noise-free reconstruction, e.g. the simulator's ``clean.mrc``) adds the
true gain, ``--truth GT.mrc`` the gain in PSNR against the specimen's potential.

Writes ``DIR/score.json``, ``DIR/score_curves.json``, ``DIR/score.png`` and, for
``--restored-even/--restored-odd``, ``DIR/<name>_uncertainty.mrc``; exit status 0, or 2 on bad input
with nothing written. A flagged map's estimate is printed but is not to be trusted.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from cryorestore import io
from cryorestore.cli.common import add_device_option, add_inference_options, add_seed_option, positive, resolve_device
from cryorestore.errors import InputError

NAME = "score"
HELP = ("truth-free score of restorations on a held-out region: estimated PSNR gain over raw with an interval, "
        "cross-FSC, leak and hallucination checks (needs half maps)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--even", required=True, metavar="E.mrc", help="even half map")
    p.add_argument("--odd", required=True, metavar="O.mrc", help="odd half map, same grid")
    p.add_argument("--model", metavar="MODEL_DIR", help="model directory: its network is run on each half alone "
                   "over the held-out region it records")
    p.add_argument("--restored-even", metavar="A.mrc", help="a restoration of the even half alone (another program)")
    p.add_argument("--restored-odd", metavar="B.mrc", help="the same restoration of the odd half alone")
    p.add_argument("--name", default="restored", help="row name of --restored-even/--restored-odd (default: restored)")
    p.add_argument("--holdout", metavar="AXIS:START:STOP",
                   help="held-out slab in voxels, e.g. y:224:256 (default: the slab the model directory records)")
    p.add_argument("--holdout-mask", metavar="M.mrc", help="held-out region as a mask (non-zero voxels), same grid")
    p.add_argument("--clean", metavar="C.mrc", help="noise-free reconstruction on the same grid: adds the true gain")
    p.add_argument("--truth", metavar="GT.mrc", help="specimen's potential on the same grid: adds the PSNR gain "
                   "against it (affine grey-level fit)")
    p.add_argument("--tilt-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="tilt range in degrees: Fourier checks use the measured coefficients only "
                        "(default: the model's; none without a model)")
    p.add_argument("--block", type=positive(int), default=16, help="bootstrap block edge in voxels (default 16)")
    p.add_argument("--n-bootstrap", type=positive(int), default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--tile", type=positive(int), default=None, help="prediction tile edge in voxels")
    p.add_argument("--overlap", type=int, default=None, help="prediction tile overlap in voxels")
    p.add_argument("--batch-size", type=positive(int), default=4, help="tiles per prediction batch (default 4)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="writes DIR/score.json, score_curves.json, score.png")
    add_inference_options(p)
    add_seed_option(p)
    add_device_option(p)


def run(args: argparse.Namespace) -> int:
    from cryorestore.cli.common import tilt_range
    from cryorestore.evaluate import truthfree as tf

    if args.holdout and args.holdout_mask:
        raise InputError("give the held-out region once: --holdout or --holdout-mask, not both")
    if bool(args.restored_even) != bool(args.restored_odd):
        raise InputError("--restored-even and --restored-odd go together: a restoration of each half alone")
    if not args.model and not args.restored_even:
        raise InputError("nothing to score: give --model MODEL_DIR or --restored-even A.mrc --restored-odd B.mrc")
    if args.restored_even and args.name in ("raw", "gaussian", "wiener"):
        raise InputError(f"--name {args.name} is taken by a baseline row; choose another")
    with contextlib.ExitStack() as stack:
        ve = stack.enter_context(io.open_mrc_mmap(args.even))
        vo = stack.enter_context(io.open_mrc_mmap(args.odd))
        io.check_same_grid(ve, vo, args.even, args.odd)
        extra = {}
        for flag in ("restored_even", "restored_odd", "clean", "truth", "holdout_mask"):
            path = getattr(args, flag)
            if path:
                extra[flag] = stack.enter_context(io.open_mrc_mmap(path))
                io.check_same_grid(ve, extra[flag], args.even, path)
        loaded = None
        device = resolve_device(args.device)
        if args.model:
            from cryorestore.modeldir import load_model_dir

            loaded = load_model_dir(args.model, device)
        if args.holdout:
            region = tf.parse_holdout(args.holdout, ve.shape)
        elif args.holdout_mask:
            region = tf.mask_region(extra["holdout_mask"].data, ve.shape, args.holdout_mask)
        elif loaded is not None:
            region = tf.holdout_from_config(loaded.config, ve.shape, args.model, args.even, ve.data)
        else:
            raise InputError("no held-out region: give --holdout AXIS:START:STOP or --holdout-mask M.mrc "
                             "(a model directory records its own)")
        tr = tilt_range(args.tilt_range) if args.tilt_range else (
            tuple(loaded.config["tilt_range"]) if loaded is not None else None)
        notes = []
        if loaded is not None and (note := tf.training_overlap(loaded.config, region)):
            notes.append(note)
        restored = None
        if args.restored_even:
            restored = {args.name: (extra["restored_even"].data, extra["restored_odd"].data)}
        result, params = tf.run_score(
            ve.data, vo.data, region, loaded=loaded, combine=args.combine, tta=args.tta, restored=restored,
            clean=extra["clean"].data if "clean" in extra else None,
            truth=extra["truth"].data if "truth" in extra else None, tilt_range=tr, block=args.block,
            n_boot=args.n_bootstrap, seed=args.seed, tile=args.tile, overlap=args.overlap,
            batch_size=args.batch_size, device=device)
        unc = None
        if restored is not None:
            unc = tf.uncertainty_map(extra["restored_even"].data, extra["restored_odd"].data)
        voxel = ve.voxel_size
    out = Path(args.out_dir)
    inputs = {k: getattr(args, k) for k in ("even", "odd", "model", "restored_even", "restored_odd", "holdout",
                                            "holdout_mask", "clean", "truth")}
    paths = tf.write_score(result, params, out, {"inputs": inputs, "notes": notes})
    if unc is not None:
        paths.append(io.write_mrc(out / f"{args.name}_uncertainty.mrc", unc, voxel))
    print(tf.format_table(result))
    for n in notes:
        print("note: " + n)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
