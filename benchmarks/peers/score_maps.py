"""Score restored maps (ours or the peers') against a simulated dataset's truth, with a Gaussian floor.

Every map is scored by the project's own code (:func:`cryorestore.evaluate.quality.truth_metrics`), so the
peers' figures are comparable with ours: PSNR (dB) after the affine grey-level fit against
``ground_truth.mrc``, FSC=0.5 against the truth on the Tukey-apodised 64³ centre crops (cycles/voxel, up to
one global sign), and the mean of that apodised FSC over the shells in 0.03–0.25 cycles/voxel. The raw
``full.mrc`` and a Gaussian low-pass sweep of it (``--sigmas``, voxels; the classical floor) are scored
the same way; the table shows the sweep's best sigma by PSNR and, when another, by the mid-band FSC.

    python benchmarks/peers/score_maps.py --data DIR --map cryoCARE=runs/cryocare/restored.mrc \\
        --map Topaz=runs/topaz/restored.mrc --out runs/scores.json

Needs the evaluation of the ``evalb`` branch (``truth_metrics``, ``apodised_fsc``) and its
``cryorestore.baseline.gaussian_lowpass``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DEFAULT_SIGMAS = tuple(float(s) for s in np.round(np.arange(0.5, 3.001, 0.25), 4))


def score(m: np.ndarray, truth: np.ndarray, voxel_size: float) -> dict[str, float]:
    """The figures of one map: :func:`truth_metrics`'s keys and ``fsc_band_apod`` (``quality.FSC_BAND``)."""
    from cryorestore.evaluate.quality import band_apodised_fsc, truth_metrics

    out = truth_metrics(m, truth, voxel_size)
    out["fsc_band_apod"] = band_apodised_fsc(m, truth)
    return out


def main(argv: list[str] | None = None) -> int:
    from cryorestore import io
    from cryorestore.baseline import gaussian_lowpass
    from cryorestore.evaluate.quality import FSC_BAND

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="folder with ground_truth.mrc and full.mrc")
    p.add_argument("--map", action="append", default=[], metavar="NAME=PATH", help="a restored map to score")
    p.add_argument("--sigmas", nargs="*", type=float, default=list(DEFAULT_SIGMAS),
                   help="Gaussian low-pass widths (voxels) applied to full.mrc (none: no sweep)")
    p.add_argument("--out", type=Path, help="write every figure (and the whole sweep) to this JSON file")
    args = p.parse_args(argv)

    truth_vol = io.read_mrc(args.data / "ground_truth.mrc")
    raw_vol = io.read_mrc(args.data / "full.mrc")
    io.check_same_grid(truth_vol, raw_vol, "ground_truth.mrc", "full.mrc")
    truth, raw, vs = truth_vol.data, raw_vol.data, truth_vol.voxel_size
    results: dict[str, dict] = {"raw full.mrc": score(raw, truth, vs)}
    sweep = {s: score(gaussian_lowpass(raw, s), truth, vs) for s in args.sigmas}
    if sweep:
        best_psnr = max(sweep, key=lambda s: sweep[s]["psnr"])
        best_band = max(sweep, key=lambda s: sweep[s]["fsc_band_apod"])
        results[f"Gaussian σ={best_psnr:g} (best PSNR)"] = sweep[best_psnr]
        if best_band != best_psnr:
            results[f"Gaussian σ={best_band:g} (best mid-band FSC)"] = sweep[best_band]
    for item in args.map:
        name, _, path = item.partition("=")
        vol = io.read_mrc(path)
        io.check_same_grid(truth_vol, vol, "ground_truth.mrc", path)
        results[name] = score(vol.data, truth, vs)

    print(f"data {args.data} ({'×'.join(map(str, truth.shape))} voxels of {vs:g} Å)\n")
    print(f"| map | PSNR (dB) | apodised FSC=0.5 (1/vox) | mean apodised FSC {FSC_BAND[0]}–{FSC_BAND[1]} | SSIM | sign |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['psnr']:.2f} | {r['fsc05_apod']:.3f} | {r['fsc_band_apod']:.3f} | {r['ssim']:.3f} | "
              f"{r['sign']:+.0f} |")
    if sweep:
        print("\nGaussian sweep (σ voxels: PSNR dB / apodised FSC=0.5 / mean apodised FSC in the band):")
        print("; ".join(f"{s:g}: {r['psnr']:.2f} / {r['fsc05_apod']:.3f} / {r['fsc_band_apod']:.3f}"
                        for s, r in sweep.items()))
    if args.out:
        doc = {"data": str(args.data), "shape": list(truth.shape), "voxel_size": vs, "band": list(FSC_BAND),
               "maps": results, "gaussian_sweep": {f"{s:g}": r for s, r in sweep.items()}}
        io.write_text(args.out, json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
