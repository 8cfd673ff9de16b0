"""Membrane Dice of ``cryorestore segment``'s default segmentation on simulated seeds, per map.

    python benchmarks/bench_segmentation.py --data bench_seg --seeds 5 100 101 102 \
        [--preset realistic] [--shape 48 128 128] [--restored 5=RUN/restored.mrc ...] [--out seg.json]

For each seed, simulates ``--shape`` with ``--preset`` into ``DATA/<preset>_<seed>`` if it is not
there yet, then segments (all defaults of :func:`cryorestore.evaluate.segmentation.segment_membranes`)

* ``truth``: the noiseless ``ground_truth.mrc``;
* ``raw``: ``full.mrc``;
* ``gaussian``: the Gaussian low-pass of the raw map with the sigma of ``cryorestore baseline``'s
  truth-free rule (transfer 1/2 at the half-map FSC = 0.143 frequency,
  :func:`cryorestore.baseline.gaussian_baseline` without a truth);
* ``restored``: any map given as ``--restored SEED=PATH`` (same grid);

and prints a Markdown table of the Dice coefficient against ``membranes.mrc`` with the segmentation's
CPU seconds. The defaults were tuned on seeds 0 and 1 (see ``benchmarks/RESULTS.md, "Membrane segmentation on realistic maps"``); report
on other seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


from cryorestore import baseline, io
from cryorestore.evaluate import segmentation


def simulate(out: Path, shape: list[int], seed: int, preset: str) -> None:
    if (out / "membranes.mrc").exists():
        return
    cmd = [sys.executable, "-m", "cryorestore", "simulate", str(out), "--shape", *map(str, shape),
           "--seed", str(seed), "--preset", preset]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="bench_seg")
    ap.add_argument("--seeds", type=int, nargs="+", default=[5, 100, 101, 102])
    ap.add_argument("--preset", choices=("realistic", "toy"), default="realistic")
    ap.add_argument("--shape", type=int, nargs=3, default=[48, 128, 128])
    ap.add_argument("--restored", nargs="*", default=[], metavar="SEED=PATH", help="restored maps to score too")
    ap.add_argument("--out", default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    restored: dict[int, str] = {}
    for item in args.restored:
        seed, _, path = item.partition("=")
        restored[int(seed)] = path
    rows = []
    for seed in args.seeds:
        d = Path(args.data) / f"{args.preset}_{seed}"
        simulate(d, args.shape, seed, args.preset)
        truth = io.read_mrc(d / "membranes.mrc")
        memb = truth.data > 0.5
        vs = truth.voxel_size
        maps = {"truth": io.read_mrc(d / "ground_truth.mrc").data, "raw": io.read_mrc(d / "full.mrc").data}
        maps["gaussian"] = baseline.gaussian_baseline(io.read_mrc(d / "even.mrc").data, io.read_mrc(d / "odd.mrc").data,
                                                      maps["raw"]).volume
        if seed in restored:
            r = io.read_mrc(restored[seed])
            io.check_same_grid(truth, r, str(d / "membranes.mrc"), restored[seed])
            maps["restored"] = r.data
        row = {"seed": seed, "preset": args.preset, "truth_voxels": int(memb.sum())}
        for name, vol in maps.items():
            t0 = time.process_time()
            _, mask = segmentation.segment_membranes(vol, vs)
            row[f"cpu_s_{name}"] = time.process_time() - t0
            row[f"dice_{name}"] = segmentation.dice(mask, memb)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    names = ["truth", "raw", "gaussian"] + (["restored"] if restored else [])
    print("| preset | seed | " + " | ".join(f"Dice {n}" for n in names) + " | CPU s (truth) |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " | --- |")
    for r in rows:
        cells = [f"{r[f'dice_{n}']:.3f}" if f"dice_{n}" in r else "-" for n in names]
        print(f"| {r['preset']} | {r['seed']} | " + " | ".join(cells) + f" | {r['cpu_s_truth']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
