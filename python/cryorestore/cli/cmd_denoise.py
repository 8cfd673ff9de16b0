"""``cryorestore denoise --even E.mrc --odd O.mrc --out-dir DIR``: train, predict and evaluate in one go.

Writes ``DIR/model/`` (model directory), ``DIR/restored.mrc`` and ``DIR/metrics.json`` (figures of the
raw map and the restored map against the truth when ``--truth`` is given, plus training details),
and prints a before/after table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cryorestore import io
from cryorestore.cli.cmd_train import add_train_arguments, run_training
from cryorestore.cli.common import positive, resolve_device

NAME = "denoise"
HELP = "train a model on the half tomograms, restore them, and report before/after figures"

ROWS = (
    ("PSNR vs truth (dB, affine fit)", "psnr", "{:.2f}"),
    ("SSIM vs truth", "ssim", "{:.3f}"),
    ("FSC=0.5 vs truth (cycles/voxel)", "fsc05", "{:.4f}"),
    ("FSC=0.143 vs truth (cycles/voxel)", "fsc0143", "{:.4f}"),
    ("mean FSC vs truth", "fsc_mean", "{:.3f}"),
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


def format_table(metrics: dict) -> str:
    """Plain-text before/after table of the figures present in ``metrics``."""
    lines = [f"{'figure':<38} {'raw':>10} {'restored':>10}"]
    for label, key, fmt in ROWS:
        a, b = metrics.get(f"{key}_raw"), metrics.get(f"{key}_restored")
        if a is None or b is None:
            continue
        lines.append(f"{label:<38} {fmt.format(a):>10} {fmt.format(b):>10}")
    for key in ("fsc05_raw_vs_restored", "std_ratio"):
        if key in metrics:
            lines.append(f"{key:<38} {'':>10} {metrics[key]:>10.4f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from cryorestore.evaluate.quality import map_metrics
    from cryorestore.modeldir import load_model_dir
    from cryorestore.predict import restore

    out_dir = Path(args.out_dir)
    even = io.read_mrc(args.even[0])
    odd = None
    if args.odd:
        odd = io.read_mrc(args.odd[0])
        io.check_same_grid(even, odd, args.even[0], args.odd[0])
    truth = None
    if args.truth:
        truth = io.read_mrc(args.truth)
        io.check_same_grid(even, truth, args.even[0], args.truth)
    if args.raw:
        raw_v = io.read_mrc(args.raw)
        io.check_same_grid(even, raw_v, args.even[0], args.raw)
        raw = raw_v.data
    else:
        raw = even.data if odd is None else 0.5 * (even.data + odd.data)

    cfg, res = run_training(args, str(out_dir / "model"))
    device = resolve_device(args.device)
    loaded = load_model_dir(out_dir / "model", device)
    restored = restore(loaded, even.data, None if odd is None else odd.data, device=device, tile=args.tile,
                       overlap=args.overlap, progress=not args.no_progress)
    io.write_mrc(out_dir / "restored.mrc", restored, even.voxel_size)
    from cryorestore import provenance

    provenance.write(out_dir / "restored.mrc", out_dir / "model", {"even": args.even[0], "odd": args.odd[0] if args.odd else None})
    metrics = map_metrics(raw, restored, even.voxel_size, truth=None if truth is None else truth.data,
                          tilt_range=tuple(cfg.tilt_range))
    metrics = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in metrics.items()}
    report = {
        "metrics": metrics,
        "method": cfg.method, "model": cfg.model, "loss": cfg.loss,
        "training": {"seconds": res.seconds, "epochs": len(res.history), "best_epoch": res.best_epoch + 1,
                     "best_val_loss": res.best_val_loss, "n_parameters": res.n_parameters, "history": res.history},
        "inputs": {"even": args.even[0], "odd": args.odd[0] if args.odd else None, "truth": args.truth,
                   "raw": args.raw or ("mean of even and odd" if odd is not None else args.even[0])},
    }
    io.write_text(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    print(format_table(metrics))
    print(f"wrote {out_dir / 'restored.mrc'} and {out_dir / 'metrics.json'}")
    return 0
