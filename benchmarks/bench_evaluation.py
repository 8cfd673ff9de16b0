"""Evaluation figures on the simulated default dataset: template matching (PR-AUC, peak F1, search time),
STA half-map resolution at the true poses and membrane Dice, for the truth, full.mrc and a restored map.

    python benchmarks/bench_evaluation.py --data bench_data [--restored RUN/restored.mrc] [--step 15]

Simulates ``--shape`` (default 64 256 256, seed 1, default dose) into ``--data`` if it is not there yet.
Prints one Markdown table and writes the numbers as JSON (``--out``). Timings are wall-clock and CPU
seconds of this process (the CPU may be shared: compare ratios within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from cryorestore import io
from cryorestore.evaluate import angles, averaging, matching, pr, segmentation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="bench_data")
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 256, 256])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--restored", default=None, help="restored map on the same grid")
    ap.add_argument("--step", type=float, default=15.0, help="template-matching angular step (degrees)")
    ap.add_argument("--maps", nargs="+", default=["truth", "full", "restored"], help="which maps to evaluate")
    ap.add_argument("--skip-match", action="store_true")
    ap.add_argument("--pr-step", type=float, default=None,
                    help="angular step for the PR figures (default: --step); a coarser one when the CPU is crowded")
    ap.add_argument("--timing-rotations", type=int, default=0,
                    help="time the --step search on its first N rotations of full.mrc and extrapolate (0: no separate timing)")
    ap.add_argument("--out", default="bench_evaluation.json")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "full.mrc").is_file():
        from cryorestore.simulate import simulate_dataset

        t0 = time.perf_counter()
        simulate_dataset(data, shape=tuple(args.shape), seed=args.seed)
        print(f"simulated {args.shape} in {time.perf_counter() - t0:.1f} s")
    truth_v = io.read_mrc(data / "ground_truth.mrc")
    vs = truth_v.voxel_size
    maps = {"truth": truth_v.data, "full": io.read_mrc(data / "full.mrc").data}
    if args.restored:
        maps["restored"] = io.read_mrc(args.restored).data
    maps = {k: v for k, v in maps.items() if k in args.maps}
    template = io.read_mrc(data / "template.mrc").data
    coords, eul = io.particle_arrays(io.read_particles(data / "particles.star"))
    membranes = io.read_mrc(data / "membranes.mrc").data > 0.5
    rots = angles.uniform_eulers(args.step)
    pr_step = args.pr_step or args.step
    pr_rots = angles.uniform_eulers(pr_step)
    print(f"{len(coords)} particles, {len(rots)} rotations at {args.step:g} deg, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    timing: dict[str, float] = {}
    if args.timing_rotations > 0:
        full = io.read_mrc(data / "full.mrc").data
        sub = rots[: args.timing_rotations]
        load0 = os.getloadavg()[0]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        res = matching.match_template(full, template, sub, tilt_range=(-60.0, 60.0), progress=False)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        per = res.timings["search_s"] / len(sub)
        timing = {"rotations_timed": len(sub), "wall_s": wall, "cpu_s": cpu, "search_ms_per_rotation": 1000 * per,
                  "setup_s": res.timings["setup_s"], "extrapolated_search_s": res.timings["setup_s"] + per * len(rots),
                  "cpu_ms_per_rotation": 1000 * cpu / len(sub), "load_average_start": load0,
                  "load_average_end": os.getloadavg()[0]}
        print(f"timing: {len(sub)} rotations in {wall:.1f} s wall ({cpu:.1f} s CPU): {1000 * per:.1f} ms/rotation wall, "
              f"{1000 * cpu / len(sub):.1f} ms CPU; {len(rots)} rotations extrapolate to {timing['extrapolated_search_s']:.0f} s; "
              f"load {load0:.1f}->{timing['load_average_end']:.1f}", flush=True)
    results: dict[str, dict[str, float]] = {}
    for name, vol in maps.items():
        r: dict[str, float] = {}
        if not args.skip_match:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            res = matching.match_template(vol, template, pr_rots, tilt_range=None if name == "truth" else (-60.0, 60.0))
            r["match_wall_s"] = time.perf_counter() - wall0
            r["match_cpu_s"] = time.process_time() - cpu0
            pk, sc = matching.find_peaks(res.scores, 3 * len(coords), res.mask_radius)
            p = pr.precision_recall(pk, sc, coords, res.mask_radius / 2)
            r.update({"pr_auc": p.pr_auc, "peak_f1": p.peak_f1, "mean_tp_distance": p.mean_tp_distance_at_peak_f1,
                      "tolerance": res.mask_radius / 2})
            print(f"{name}: match {r['match_wall_s']:.0f} s wall / {r['match_cpu_s']:.0f} s CPU, PR-AUC {p.pr_auc:.3f}, "
                  f"peak F1 {p.peak_f1:.3f}, load {os.getloadavg()[0]:.1f}", flush=True)
        sta = averaging.subtomogram_average(vol, coords, eul, template.shape[0], vs, np.random.default_rng(0),
                                            reference=template, tilt_range=(-60.0, 60.0) if name == "full" else None,
                                            progress=False)  # only full.mrc is known to miss the wedge
        r.update({k: sta.metrics[k] for k in ("half_fsc05", "half_fsc0143", "half_fsc05_angstrom", "half_fsc0143_angstrom",
                                              "ref_fsc05", "ref_fsc0143")})
        _, seg = segmentation.segment_membranes(vol, vs)
        r["membrane_dice"] = segmentation.dice(seg, membranes)
        print(f"{name}: STA half-map FSC0.143 {r['half_fsc0143']:.3f} c/vox ({r['half_fsc0143_angstrom']:.1f} Å), "
              f"Dice {r['membrane_dice']:.3f}", flush=True)
        results[name] = r
    Path(args.out).write_text(json.dumps({"step": args.step, "n_rotations": len(rots), "pr_step": pr_step,
                                          "pr_rotations": len(pr_rots), "timing": timing, "shape": list(maps["full" if "full" in maps else next(iter(maps))].shape),
                                          "results": results}, indent=2) + "\n")
    keys = ["pr_auc", "peak_f1", "mean_tp_distance", "match_wall_s", "match_cpu_s", "half_fsc05", "half_fsc0143",
            "half_fsc0143_angstrom", "membrane_dice"]
    print("| map | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in keys) + " |")


if __name__ == "__main__":
    main()
