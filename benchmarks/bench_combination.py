"""Which final combination of f(even) and f(odd)? Each candidate scored against the clean reconstruction.

For one simulated dataset (``even.mrc``, ``odd.mrc``, ``full.mrc``, ``clean.mrc``, ``ground_truth.mrc``)
and one trained model directory, the network runs once on each half (the model's test-time turns,
``--tta``) and every candidate combination of the two outputs is scored, beside raw and a Gaussian sweep
of raw:

* ``mean``: cryoCARE's mean of f(even) and f(odd);
* ``lowpass T``: that mean low-passed by :func:`cryorestore.ensemble.half_fsc_lowpass` at the half maps'
  FSC=T frequency (``--thresholds``);
* ``calibrated``: :func:`cryorestore.ensemble.calibrated_combination`;
* ``gaussian σ``: :func:`cryorestore.baseline.gaussian_lowpass` of ``full.mrc`` (``--sigmas``, voxels).

Columns: PSNR against ``clean.mrc`` on the sampled Fourier region (:func:`quality.psnr_vs_clean`, the
figure the final low-pass changes most), equalised PSNR against the truth (:func:`quality.equalised_psnr`,
nearly blind to a radial filter) and affine PSNR against the truth. This is the tuning tool of the
default threshold: run it on seeds 0-1 only (``benchmarks/RESULTS.md``, "Choosing the final low-pass").

    python benchmarks/bench_combination.py --data bench/s0 --model bench/s0-isonet/model --json s0.json

``--outputs FILE.npz`` keeps the two network outputs (``fe``, ``fo``) and reuses them when the file exists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def network_halves(data: Path, model: Path, tta: str, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """f(even), f(odd) (float32 (z, y, x)) of the model's prediction inputs, from ``cache`` when it exists."""
    if cache is not None and cache.is_file():
        z = np.load(cache)
        return z["fe"], z["fo"]
    from cryorestore import io, predict
    from cryorestore.modeldir import load_model_dir

    even, odd = io.read_mrc(data / "even.mrc").data, io.read_mrc(data / "odd.mrc").data
    _, fe, fo = predict.restore(load_model_dir(model), even, odd, combine="mean", halves=True, tta=tta,
                                progress=False)
    if cache is not None:
        np.savez(cache, fe=fe, fo=fo)
    return fe, fo


def candidates(fe: np.ndarray, fo: np.ndarray, even: np.ndarray, odd: np.ndarray, full: np.ndarray,
               tilt_range: tuple[float, float], thresholds: list[float], sigmas: list[float]) -> dict[str, np.ndarray]:
    """Every map to score, by name."""
    from cryorestore import baseline, ensemble

    mean = ensemble.mean_of([fe, fo])
    maps = {"raw": full, "mean": mean}
    for t in thresholds:
        maps[f"lowpass {t:g}"] = ensemble.half_fsc_lowpass(mean, even, odd, t)
    maps["calibrated"] = ensemble.calibrated_combination(fe, fo, even, odd, tilt_range).volume
    for s in sigmas:
        maps[f"gaussian {s:g}"] = baseline.gaussian_lowpass(full, s).astype(np.float32)
    return maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="simulation folder")
    ap.add_argument("--model", type=Path, required=True, help="trained model directory")
    ap.add_argument("--tta", default="rot", help="test-time augmentation (default: rot, the presets')")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.3, 0.143])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0])
    ap.add_argument("--outputs", type=Path, default=None, help="npz cache of the two network outputs")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from bench_heldout import tilt_range_of
    from cryorestore import io
    from cryorestore.evaluate import quality

    tilt_range = tilt_range_of(args.data)
    even, odd, full, clean, truth = (io.read_mrc(args.data / f"{n}.mrc").data
                                     for n in ("even", "odd", "full", "clean", "ground_truth"))
    fe, fo = network_halves(args.data, args.model, args.tta, args.outputs)
    rows = {}
    print(f"{'map':14s} {'vs clean':>9s} {'equalised':>10s} {'affine':>8s}   (dB; tilt range {tilt_range})")
    for name, m in candidates(fe, fo, even, odd, full, tilt_range, args.thresholds, args.sigmas).items():
        r = {"psnr_vs_clean": quality.psnr_vs_clean(m, clean, tilt_range),
             "psnr_eq": quality.equalised_psnr(m, truth),
             "psnr": quality.truth_metrics(m, truth, 1.0)["psnr"]}
        rows[name] = r
        print(f"{name:14s} {r['psnr_vs_clean']:9.2f} {r['psnr_eq']:10.2f} {r['psnr']:8.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
