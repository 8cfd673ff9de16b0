"""Restoration benchmark: method × network × loss on a simulated dataset, scored against the truth.

Runs ``cryorestore denoise`` once per row (in a subprocess, so rows do not share memory) on a dataset
written by ``cryorestore simulate`` and prints a Markdown table: PSNR (dB, after the affine grey-level
fit), FSC=0.5 and FSC=0.143 crossings against the truth (cycles/voxel), the correlation with the
truth inside the missing wedge, and the training time. The first line is the raw ``full.mrc``.
Rows whose ``metrics.json`` already exists are reused (``--force`` reruns them).

    python benchmarks/bench_restoration.py --data bench/data --out-dir bench/runs \\
        --rows n2n:unet:l2 deepdewedge:unet:l2 --epochs 10 --subtomo-size 32

Ends by checking the must-show claims for the rows it ran: n2n raises FSC=0.5 and PSNR by ≥ 3 dB,
deepdewedge raises the missing-wedge correlation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DEFAULT_ROWS = ("n2n:unet:l2", "deepdewedge:unet:l2")


def run_row(row: str, args: argparse.Namespace) -> dict:
    method, model, loss = row.split(":")
    out = Path(args.out_dir) / row.replace(":", "_").replace("+", "-")
    metrics = out / "metrics.json"
    if metrics.is_file() and not args.force:
        return json.loads(metrics.read_text())
    d = Path(args.data)
    cmd = [sys.executable, "-m", "cryorestore", "denoise", "--even", str(d / "even.mrc"), "--odd", str(d / "odd.mrc"),
           "--raw", str(d / "full.mrc"), "--truth", str(d / "ground_truth.mrc"), "--out-dir", str(out),
           "--method", method, "--model", model, "--loss", loss, "--epochs", str(args.epochs),
           "--subtomo-size", str(args.subtomo_size), "--n-subtomos", str(args.n_subtomos),
           "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--device", args.device,
           "--tilt-range", *map(str, args.tilt_range), "--no-progress"]
    if args.lr:
        cmd += ["--lr", str(args.lr)]
    for opt in args.model_option:
        cmd += ["--model-option", opt]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(metrics.read_text())


def fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder written by 'cryorestore simulate'")
    p.add_argument("--out-dir", required=True, help="one sub-folder per row")
    p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), metavar="METHOD:MODEL:LOSS")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--subtomo-size", type=int, default=32)
    p.add_argument("--n-subtomos", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--model-option", action="append", default=[])
    p.add_argument("--tilt-range", nargs=2, type=float, default=[-60.0, 60.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="rerun rows that already have results")
    args = p.parse_args(argv)

    results = {row: run_row(row, args) for row in args.rows}
    print()
    print("| method | network | loss | PSNR (dB) | FSC=0.5 (1/vox) | FSC=0.143 (1/vox) | wedge corr | params | train time (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    first = next(iter(results.values()))["metrics"]
    print(f"| raw full.mrc | – | – | {fmt(first.get('psnr_raw'), '.2f')} | {fmt(first.get('fsc05_raw'), '.4f')} | "
          f"{fmt(first.get('fsc0143_raw'), '.4f')} | {fmt(first.get('wedge_corr_raw'), '.3f')} | – | – |")
    for row, r in results.items():
        m = r["metrics"]
        t = r["training"]
        method, model, loss = row.split(":")
        print(f"| {method} | {model} | {loss} | {fmt(m.get('psnr_restored'), '.2f')} | {fmt(m.get('fsc05_restored'), '.4f')} | "
              f"{fmt(m.get('fsc0143_restored'), '.4f')} | {fmt(m.get('wedge_corr_restored'), '.3f')} | "
              f"{t['n_parameters']:,} | {t['seconds']:.0f} |")
    print()
    ok = True
    for row, r in results.items():
        m = r["metrics"]
        if row.startswith("n2n:"):
            a = m["fsc05_restored"] > m["fsc05_raw"]
            b = m["psnr_restored"] - m["psnr_raw"] >= 3.0
            print(f"{row}: FSC=0.5 {m['fsc05_raw']:.4f} → {m['fsc05_restored']:.4f} ({'higher' if a else 'NOT higher'}); "
                  f"PSNR +{m['psnr_restored'] - m['psnr_raw']:.2f} dB ({'≥ 3 dB' if b else '< 3 dB'})")
            ok &= a and b
        if row.startswith("deepdewedge:"):
            c = m["wedge_corr_restored"] > m["wedge_corr_raw"]
            print(f"{row}: missing-wedge correlation {m['wedge_corr_raw']:.3f} → {m['wedge_corr_restored']:.3f} "
                  f"({'raised' if c else 'NOT raised'})")
            ok &= c
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
