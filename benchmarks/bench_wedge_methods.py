"""Do the wedge methods earn their place? n2n, DeepDeWedge and IsoNet at equal compute on one dataset.

Each method is trained by ``cryorestore denoise --preset quick`` (the same small U-Net, 32³ crops, batch 8)
with the same optimiser-step budget (``--max-steps``; epochs are whole, so the budgets differ by less than
one epoch), in a subprocess, and scored by ``denoise``'s own table against the simulator's truth:

* PSNR (dB, after the affine grey-level fit) and the mean apodised FSC over 0.03-0.25 cycles/voxel;
* the missing-wedge correlation: the correlation of the restored map's Fourier coefficients *inside the
  missing wedge* with the truth's (0 for a map that leaves the wedge empty; raw maps are not exactly 0
  because reconstruction leaks a little power into it);
* the wall time of training and restoring (on a machine doing nothing else, else not a timing).

The held-out loss curves (``metrics.json`` → ``training.history``) are drawn into ``OUT/loss_curves.png``
by :func:`cryorestore.plots.loss_curves` (one panel per method: the methods' losses are on different
scales), with the epochs after which a wedge method refilled its boxes marked. The held-out targets never move (see
:meth:`cryorestore.methods.base.TrainingMethod.validation_batch`), so a falling held-out curve is
convergence, not a moving target.

    python benchmarks/bench_wedge_methods.py --data bench/s0 --out-dir bench/wedge --max-steps 300

Rows already trained (``OUT/<method>/metrics.json``) are reused unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_restoration  # noqa: E402

METHODS = ("n2n", "deepdewedge", "isonet")
COLUMNS = (("PSNR (dB)", "psnr", ".2f"), ("FSC=0.5 apod.", "fsc05_apod", ".3f"),
           ("mean apod. FSC 0.03-0.25", "fsc_band_apod", ".3f"), ("missing-wedge corr.", "wedge_corr", ".3f"))


def run_method(method: str, args: argparse.Namespace) -> dict:
    """Train and restore with one method unless its metrics exist; returns its metrics.json plus wall time."""
    out = Path(args.out_dir) / method
    metrics = out / "metrics.json"
    if not metrics.is_file() or args.force:
        cmd = [*bench_restoration.denoise_command(args.data, out), "--method", method, "--preset", "quick", "--max-steps", str(args.max_steps),
               "--seed", str(args.seed), "--device", args.device, "--no-progress", *args.extra]
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        rep = json.loads(metrics.read_text())
        rep["wall_seconds"] = wall
        metrics.write_text(json.dumps(rep, indent=2) + "\n")
    return json.loads(metrics.read_text())


def table(reports: dict[str, dict]) -> str:
    """Markdown table: raw and Gaussian from the first report, then one row per method."""
    head = "| map | steps | " + " | ".join(c[0] for c in COLUMNS) + " | wall (s) |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 3)]
    first = next(iter(reports.values()))["metrics"]
    for name in ("raw", "gaussian"):
        cells = [format(first[f"{key}_{name}"], fmt) if f"{key}_{name}" in first else "-" for _, key, fmt in COLUMNS]
        lines.append(f"| {name} | - | " + " | ".join(cells) + " | - |")
    for method, rep in reports.items():
        m = rep["metrics"]
        steps = rep["training"]["history"][-1].get("step", "?")
        cells = [format(m[f"{key}_restored"], fmt) for _, key, fmt in COLUMNS]
        lines.append(f"| {method} ({rep['loss']}) | {steps} | " + " | ".join(cells) + f" | {rep.get('wall_seconds', float('nan')):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder written by 'cryorestore simulate'")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--max-steps", type=int, default=300, help="optimiser-step budget of every method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true", help="retrain rows that already have metrics")
    p.add_argument("extra", nargs="*", help="after --: more denoise options for every method")
    args = p.parse_args(argv)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    reports = {m: run_method(m, args) for m in args.methods}
    text = table(reports)
    print(text)
    (Path(args.out_dir) / "table.md").write_text(text + "\n")
    from cryorestore import plots

    histories = {f"{m} ({rep['loss']})": rep["training"]["history"] for m, rep in reports.items()}
    plots.loss_curves(histories, Path(args.out_dir) / "loss_curves.png", panels=True)
    print(f"wrote {Path(args.out_dir) / 'table.md'} and {Path(args.out_dir) / 'loss_curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
