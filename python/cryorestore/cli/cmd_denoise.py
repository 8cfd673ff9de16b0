"""``cryorestore denoise --even E.mrc --odd O.mrc --out-dir DIR``: train, predict and evaluate in one go.

Writes ``DIR/model/`` (model directory), ``DIR/restored.mrc`` and ``DIR/metrics.json`` (figures of the
raw map, a Gaussian low-pass of it and the restored map against the truth when ``--truth`` is given,
plus training details), and prints a raw / Gaussian / restored table: a restoration is only worth its
cost where it beats the classical filter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cryorestore import io
from cryorestore.cli.cmd_train import add_train_arguments, run_training
from cryorestore.cli.common import add_inference_options, positive, resolve_device

NAME = "denoise"
HELP = "train a model on the half tomograms, restore them, and report before/after figures"

ROWS = (
    ("PSNR vs truth (dB, affine fit)", "psnr", "{:.2f}"),
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
    p.add_argument("--truth", metavar="GT.mrc", help="ground truth on the same grid (simulated data) for PSNR/FSC figures")
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
                     tilt_range: tuple[float, float]) -> dict:
    """The Gaussian map's figures, keyed ``<figure>_gaussian`` like map_metrics' ``<figure>_restored``."""
    m = metrics_of(raw, gauss, voxel_size, truth=truth, tilt_range=tilt_range)
    return {k[:-len("_restored")] + "_gaussian": float(v) for k, v in m.items()
            if k.endswith("_restored") and isinstance(v, (int, float, np.floating)) and "_vs_" not in k}


def run(args: argparse.Namespace) -> int:
    from cryorestore.blockwise import MeanOf, open_map
    from cryorestore.evaluate import bounded, quality
    from cryorestore.modeldir import load_model_dir
    from cryorestore.predict import EXIT_TILE_OOM, restore
    from cryorestore.presets import inference_values
    from cryorestore.tiling import TileOutOfMemoryError

    out_dir = Path(args.out_dir)
    # maps above blockwise.BLOCKWISE_VOXELS stay memory-mapped; the raw mean of the halves is then a lazy view
    even = open_map(args.even[0])
    odd = None
    if args.odd:
        odd = open_map(args.odd[0])
        io.check_same_grid(even, odd, args.even[0], args.odd[0])
    truth = None
    if args.truth:
        truth = open_map(args.truth)
        io.check_same_grid(even, truth, args.even[0], args.truth)
    if args.raw:
        raw_v = open_map(args.raw)
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
    try:
        restored = restore(loaded, even.data, None if odd is None else odd.data, device=device, tile=args.tile,
                           overlap=args.overlap, progress=not args.no_progress, **inference)
    except TileOutOfMemoryError as exc:  # the model is trained and kept: 'predict' with a smaller --tile
        print(f"cryorestore denoise: error: {exc}; the model is in {out_dir / 'model'}", file=sys.stderr)
        return EXIT_TILE_OOM
    io.write_mrc(out_dir / "restored.mrc", restored, even.voxel_size)
    from cryorestore import provenance

    provenance.write(out_dir / "restored.mrc", out_dir / "model", {"even": args.even[0], "odd": args.odd[0] if args.odd else None})
    truth_data = None if truth is None else truth.data
    metrics = metrics_of(raw, restored, even.voxel_size, truth=truth_data, tilt_range=tuple(cfg.tilt_range))
    metrics = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in metrics.items()}
    gauss, gauss_params = gaussian_baseline_map(raw, even.data, None if odd is None else odd.data, truth_data)
    if gauss is not None:
        metrics |= baseline_metrics(raw, gauss, even.voxel_size, truth_data, tuple(cfg.tilt_range))
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
        "inputs": {"even": args.even[0], "odd": args.odd[0] if args.odd else None, "truth": args.truth,
                   "raw": args.raw or ("mean of even and odd" if odd is not None else args.even[0])},
    }
    io.write_text(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    print(format_table(metrics))
    print(f"wrote {out_dir / 'restored.mrc'} and {out_dir / 'metrics.json'}")
    return 0
