"""``cryorestore denoise --even E.mrc --odd O.mrc --out-dir DIR``: train, predict and evaluate in one go.

Inputs are MRC files or OME-Zarr stores (``--zarr-level``), binned at load with ``--bin`` (every map alike;
voxel sizes in the outputs are the binned ones). Writes ``DIR/model/`` (model directory),
``DIR/restored.mrc`` (``DIR/restored.zarr`` with ``--output-format zarr``) and ``DIR/metrics.json`` (figures of the
raw map, a Gaussian low-pass of it and the restored map against the truth when ``--truth`` is given,
and against the noise-free reconstruction in the sampled region when ``--clean`` is given, plus training
details), and prints a raw / Gaussian / restored table: a restoration is only worth its
cost where it beats the classical filter.

With half maps it also scores the run without any truth (:mod:`cryorestore.evaluate.truthfree`, as
``cryorestore score`` does) on the slab training held out: estimated PSNR gain over raw with an interval
for raw, a Gaussian chosen by that score, the half-map Wiener filter and the restored map, with the
leak and hallucination checks; the true gain on the same region appears beside it with ``--clean``
(noise-free reconstruction) and the gain against the potential with ``--truth``. It writes
``DIR/score.json``, ``DIR/score_curves.json``, ``DIR/score.png``, the uncertainty map
``DIR/restored_uncertainty.mrc`` (local standard deviation of the restored map from the halves' noise)
and its figure ``DIR/restored_uncertainty.png``, and adds ``tf_*`` keys and a ``truthfree`` block to
metrics.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cryorestore import io, outputs
from cryorestore.cli.cmd_train import add_train_arguments, run_training
from cryorestore.cli.common import add_inference_options, positive, resolve_device
from cryorestore.errors import InputError

NAME = "denoise"
OUTPUT_ARGS = ("out_dir",)  # locked; see cryorestore.outputs
HELP = "train a model on the half tomograms, restore them, and report before/after figures"

ROWS = (
    ("PSNR vs truth (dB, affine fit)", "psnr", "{:.2f}"),
    ("PSNR vs truth (dB, equalised per shell)", "psnr_eq", "{:.2f}"),
    ("PSNR vs clean, sampled region (dB)", "psnr_clean", "{:.2f}"),
    ("SSIM vs truth", "ssim", "{:.3f}"),
    ("FSC=0.5 vs truth (cycles/voxel)", "fsc05", "{:.4f}"),
    ("FSC=0.5 apod. vs truth (cycles/voxel)", "fsc05_apod", "{:.4f}"),
    ("FSC=0.143 vs truth (cycles/voxel)", "fsc0143", "{:.4f}"),
    ("mean FSC vs truth", "fsc_mean", "{:.3f}"),
    ("mean apod. FSC 0.03-0.25 vs truth", "fsc_band_apod", "{:.3f}"),
    ("missing-wedge correlation vs truth", "wedge_corr", "{:.3f}"),
    ("missing-wedge power fraction", "wedge_power_fraction", "{:.3f}"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p, with_out=False)
    p.add_argument("--out-dir", required=True, metavar="DIR", help="writes DIR/model/, DIR/restored.mrc, DIR/metrics.json")
    p.add_argument("--output-format", choices=("mrc", "zarr"), default="mrc",
                   help="the restored map as DIR/restored.mrc or as an OME-Zarr pyramid DIR/restored.zarr (default: mrc)")
    p.add_argument("--truth", metavar="GT.mrc", help="ground truth on the same grid (simulated data) for PSNR/FSC figures")
    p.add_argument("--clean", metavar="CLEAN.mrc",
                   help="noise-free reconstruction on the same grid (the simulator's clean.mrc): PSNR against it on the "
                        "Fourier coefficients the tilts sampled, and the true gain beside the truth-free estimate")
    p.add_argument("--raw", metavar="FULL.mrc",
                   help="the raw map to compare against (default: the mean of --even and --odd, or --even alone)")
    p.add_argument("--tile", type=positive(int), default=None, help="prediction tile edge in voxels")
    p.add_argument("--overlap", type=int, default=None, help="prediction tile overlap in voxels")
    add_inference_options(p)


def format_table(metrics: dict) -> str:
    """Plain-text table of the figures present in ``metrics``: raw, Gaussian (when ``*_gaussian`` keys
    are present) and restored columns."""
    cols = ["raw"] + (["gaussian"] if any(k.endswith("_gaussian") for k in metrics) else []) + ["restored"]
    lines = [f"{'figure':<38} " + " ".join(f"{c:>10}" for c in cols)]
    for label, key, fmt in ROWS:
        vals = [metrics.get(f"{key}_{c}") for c in cols]
        if vals[0] is None or vals[-1] is None:
            continue
        lines.append(f"{label:<38} " + " ".join(f"{'' if v is None else fmt.format(v):>10}" for v in vals))
    pad = " " * (11 * (len(cols) - 1))
    for key in ("fsc05_raw_vs_restored", "std_ratio"):
        if key in metrics:
            lines.append(f"{key:<38} {pad}{metrics[key]:>10.4f}")
    return "\n".join(lines)


def gaussian_baseline_map(raw: np.ndarray, even: np.ndarray, odd: np.ndarray | None,
                          truth: np.ndarray | None) -> tuple[np.ndarray | None, dict]:
    """Gaussian low-pass of the raw map (sigma in voxels) and how sigma was chosen, or (None, {}).

    :func:`cryorestore.baseline.gaussian_baseline` for half maps; for a single map the sigma of
    :data:`cryorestore.baseline.SIGMA_GRID` with the best PSNR against the truth (none without a truth).
    """
    from cryorestore import baseline

    if odd is not None:
        res = baseline.gaussian_baseline(even, odd, full=raw, truth=truth)
        return res.volume, dict(res.params)
    if truth is None:
        return None, {}
    if large(raw):  # the large-map search (z-slab moments per sigma) on the one map
        res = baseline.gaussian_baseline(raw, raw, full=raw, truth=truth)
        return res.volume, {k: res.params[k] for k in ("sigma_voxels", "chosen_by")}
    sigma, _ = baseline.search_sigma(raw, truth)
    return baseline.gaussian_lowpass(raw, sigma).astype(np.float32), {
        "sigma_voxels": sigma, "chosen_by": "PSNR against the truth (affine grey-level fit)"}


def large(volume) -> bool:
    """True for maps above :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels: they stay memory-mapped
    and are scored by :mod:`cryorestore.evaluate.bounded` (slabs, blocks and stated crops)."""
    from cryorestore import blockwise

    return blockwise.is_large(np.shape(volume))


def metrics_of(raw, restored, voxel_size: float, **kwargs) -> dict:
    """:func:`cryorestore.evaluate.quality.map_metrics`, or its bounded-memory twin for large maps."""
    from cryorestore.evaluate import bounded, quality

    fn = bounded.map_metrics if large(raw) else quality.map_metrics
    return fn(raw, restored, voxel_size, **kwargs)


def baseline_metrics(raw: np.ndarray, gauss: np.ndarray, voxel_size: float, truth: np.ndarray | None,
                     tilt_range: tuple[float, float], clean: np.ndarray | None = None) -> dict:
    """The Gaussian map's figures, keyed ``<figure>_gaussian`` like map_metrics' ``<figure>_restored``."""
    m = metrics_of(raw, gauss, voxel_size, truth=truth, tilt_range=tilt_range, clean=clean)
    return {k[:-len("_restored")] + "_gaussian": float(v) for k, v in m.items()
            if k.endswith("_restored") and isinstance(v, (int, float, np.floating)) and "_vs_" not in k}


def run(args: argparse.Namespace) -> int:
    from cryorestore.blockwise import MeanOf, open_map, write_map
    from cryorestore.evaluate import bounded, quality
    from cryorestore.modeldir import load_model_dir
    from cryorestore.predict import EXIT_TILE_OOM, restore
    from cryorestore.presets import inference_values
    from cryorestore.tiling import TileOutOfMemoryError

    out_dir = Path(args.out_dir)
    def read(path: str) -> io.Volume:  # maps above blockwise.BLOCKWISE_VOXELS stay lazy (memory map / zarr level)
        return open_map(path, args.zarr_level, args.bin)

    even = read(args.even[0])
    odd = None
    if args.odd:
        odd = read(args.odd[0])
        io.check_same_grid(even, odd, args.even[0], args.odd[0])
    truth = None
    if args.truth:
        truth = read(args.truth)
        io.check_same_grid(even, truth, args.even[0], args.truth)
    clean = None
    if args.clean:
        clean = open_map(args.clean)
        io.check_same_grid(even, clean, args.even[0], args.clean)
    if args.raw:
        raw_v = read(args.raw)
        io.check_same_grid(even, raw_v, args.even[0], args.raw)
        raw = raw_v.data
    elif odd is None:
        raw = even.data
    else:
        raw = MeanOf(even.data, odd.data) if large(even.data) else 0.5 * (even.data + odd.data)

    inference = inference_values(args.preset) | {k: v for k in ("tta", "combine") if (v := getattr(args, k))}
    cfg, res = run_training(args, str(out_dir / "model"))
    device = resolve_device(args.device)
    loaded = load_model_dir(out_dir / "model", device)
    halves = scratch = None
    try:
        if odd is None:
            restored = restore(loaded, even.data, None, device=device, tile=args.tile, overlap=args.overlap,
                               progress=not args.no_progress, **inference)
        else:  # a map of each half too: the truth-free score and the uncertainty map need them
            # large maps: g(even), g(odd) lazy over the restored map and a half-spread file in out_dir
            restored, *halves = restore(loaded, even.data, odd.data, device=device, tile=args.tile,
                                        overlap=args.overlap, progress=not args.no_progress, halves=True,
                                        scratch_dir=out_dir, **inference)
            if len(halves) == 3:
                *halves, scratch = halves
    except TileOutOfMemoryError as exc:  # the model is trained and kept: 'predict' with a smaller --tile
        print(f"cryorestore denoise: error: {exc}; the model is in {out_dir / 'model'}", file=sys.stderr)
        return EXIT_TILE_OOM
    stage = outputs.Staged(out_dir)  # the restored map, its provenance, the scores and metrics.json appear together (model/ kept)
    restored_path = write_map(stage.path / f"restored.{args.output_format}", restored, even.voxel_size)
    if scratch is not None:  # large maps: from here on the restored map is read back from its file, by slabs
        from cryorestore.blockwise import SignedSumOf

        restored = open_map(str(restored_path), check_finite=False).data
        halves = [SignedSumOf(restored, scratch.array, 1.0), SignedSumOf(restored, scratch.array, -1.0)]
    from cryorestore import provenance

    provenance.write(restored_path, out_dir / "model", {"even": args.even[0], "odd": args.odd[0] if args.odd else None},
                     reading={"zarr_level": args.zarr_level, "bin": args.bin})
    truth_data = None if truth is None else truth.data
    clean_data = None if clean is None else clean.data
    metrics = metrics_of(raw, restored, even.voxel_size, truth=truth_data, tilt_range=tuple(cfg.tilt_range),
                         clean=clean_data)
    metrics = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in metrics.items()}
    gauss, gauss_params = gaussian_baseline_map(raw, even.data, None if odd is None else odd.data, truth_data)
    if gauss is not None:
        metrics |= baseline_metrics(raw, gauss, even.voxel_size, truth_data, tuple(cfg.tilt_range), clean_data)
    if truth_data is not None:
        for name, m in (("raw", raw), ("gaussian", gauss), ("restored", restored)):
            if m is not None:
                metrics[f"fsc_band_apod_{name}"] = (
                    bounded.band_apodised_fsc(m, truth_data, bounded.sign_of(m, truth_data)) if large(m)
                    else quality.band_apodised_fsc(m, truth_data))
    report = {
        "metrics": metrics,
        "gaussian_baseline": gauss_params,
        "method": cfg.method, "model": cfg.model, "loss": cfg.loss, "inference": inference,
        "training": {"seconds": res.seconds, "epochs": len(res.history), "best_epoch": res.best_epoch + 1,
                     "best_val_loss": res.best_val_loss, "n_parameters": res.n_parameters,
                     "stop_reason": res.stop_reason, "preset": cfg.preset, "history": res.history},
        "voxel_size": even.voxel_size, "bin": args.bin, "zarr_level": args.zarr_level,
        "inputs": {"even": args.even[0], "odd": args.odd[0] if args.odd else None, "truth": args.truth,
                   "clean": args.clean, "raw": args.raw or ("mean of even and odd" if odd is not None else args.even[0])},
    }
    tf_text = "no half maps: no truth-free score (it needs --odd)"
    if halves is not None:
        try:
            tf_text = truthfree_block(args, loaded, even, odd, restored, halves, clean, truth_data,
                                      tuple(cfg.tilt_range), out_dir, metrics, report, write_dir=stage.path)
        finally:
            if scratch is not None:
                scratch.close()
    io.write_text(stage.path / "metrics.json", json.dumps(report, indent=2) + "\n")
    stage.commit()
    restored_path = out_dir / restored_path.name
    print(format_table(metrics))
    print(tf_text)
    print(f"wrote {restored_path} and {out_dir / 'metrics.json'}")
    return 0


def truthfree_block(args: argparse.Namespace, loaded, even: io.Volume, odd: io.Volume, restored: np.ndarray,
                    halves: list[np.ndarray], clean: io.Volume | None, truth: np.ndarray | None,
                    tilt_range: tuple[float, float], out_dir: Path, metrics: dict, report: dict,
                    write_dir: Path | None = None) -> str:
    """The truth-free score of the run on its held-out slab (written into ``write_dir``, default ``out_dir``:
    the staging folder that becomes ``out_dir``; added to ``metrics`` and ``report``) and the uncertainty map
    with its figure; returns the printed table.

    What is computed where: the score reads only the held-out region (plus a 16-voxel margin for the
    classical rows) of the half maps and of ``g(even)``, ``g(odd)`` (``halves``: arrays, or on large maps
    the lazy views of :func:`cryorestore.predict.restore`'s bounded path, read for the region only). The
    uncertainty map is :class:`cryorestore.ensemble.UncertaintyOf` of the halves, written slab by slab
    (:func:`cryorestore.blockwise.write_map`, atomically) on large maps, whole on small ones."""
    from cryorestore import plots
    from cryorestore.evaluate import truthfree as tf

    from cryorestore import blockwise

    ge, go = halves
    blockwise.release_all(even.data, odd.data, restored, ge, go)  # large maps: earlier stages' pages leave
    region = tf.holdout_from_config(loaded.config, even.shape, str(out_dir / "model"), args.even[0], even.data)

    if blockwise.is_large(even.shape):  # large maps: the central part of the slab (tf.capped_region)
        region = tf.capped_region(region)
    row = tf.HalfMaps(ge[region.slices], go[region.slices],
                      f"{loaded.config['method']} network on each half alone, combination "
                      f"'{report['inference']['combine']}' applied to each half's output (restored = their mean)")
    result, params = tf.run_score(even.data, odd.data, region, model_halves_region=row,
                                  clean=None if clean is None else clean.data, truth=truth, tilt_range=tilt_range,
                                  seed=args.seed)
    write_dir = out_dir if write_dir is None else write_dir
    tf.write_score(result, params, write_dir, {"inputs": {"even": args.even[0], "odd": args.odd[0],
                                                         "clean": args.clean, "truth": args.truth}})
    from cryorestore import ensemble

    lazy = not isinstance(ge, np.ndarray)
    unc = ensemble.UncertaintyOf(ge, go) if lazy else tf.uncertainty_map(ge, go)
    blockwise.write_map(write_dir / "restored_uncertainty.mrc", unc, even.voxel_size)
    plots.orthoslices({"restored": restored, "uncertainty (local s.d.)": unc}, write_dir / "restored_uncertainty.png")
    metrics |= result.flat_metrics()
    report["truthfree"] = result.to_dict() | {"parameters": params}
    return tf.format_table(result)
