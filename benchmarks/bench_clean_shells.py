"""Where does a map depart from the noise-free reconstruction? Error against ``clean.mrc`` band by band.

For one simulated dataset (``full.mrc``, ``clean.mrc``, ``tilts.tlt``) it scores raw, Gaussian low-passes
of it (``--sigmas``, voxels) and any ``--map NAME=PATH`` against ``clean.mrc`` on the Fourier coefficients
the tilts sampled (:func:`cryorestore.evaluate.quality.sampled_region`), as
:func:`cryorestore.evaluate.quality.psnr_vs_clean` does, and splits the squared error by frequency band:

* ``PSNR vs clean``: the affine fit (one gain for the whole map), dB, peak = range of ``clean.mrc``;
* ``equalised vs clean``: the same with one real gain per shell (the best linear isotropic filter of
  the map against the clean one): what is left is noise and non-linear distortion, not spectral shape;
* per band (cycles/voxel): the share of the affine fit's total squared error that lies in the band
  (``err %``) and the band's relative error ``Σ|a·X − C|² / Σ|C|²`` (``rel``; 0 for a band without
  sampled coefficients); the clean map's share of
  power per band is printed once.

With ``ground_truth.mrc`` in the folder a second table gives every map's figures against the truth
beside it: affine PSNR, equalised PSNR, band FSC (``quality.FSC_BAND``) and FSC=0.5 of the apodised
crops, i.e. the figures that do and do not depend on a final low-pass.

    python benchmarks/bench_clean_shells.py --data DIR --map restored=RUN/restored.mrc --sigmas 0.5 0.75 1.0
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

BANDS = ((0.0, 0.05), (0.05, 0.1), (0.1, 0.15), (0.15, 0.2), (0.2, 0.25), (0.25, 0.35), (0.35, 0.5))


def shell_sums(x: np.ndarray, clean: np.ndarray, tilts: tuple[float, float]) -> dict[str, np.ndarray]:
    """Per shell (plus the corner group last) over the sampled non-DC coefficients: Σ|X|², Re Σ X·conj(C),
    Σ|C|² (full-grid sums, float64)."""
    from cryorestore import fourier
    from cryorestore.evaluate import quality

    shape = tuple(x.shape)
    fx = torch.fft.rfftn(torch.from_numpy(np.asarray(x, np.float64)))
    fc = torch.fft.rfftn(torch.from_numpy(np.asarray(clean, np.float64)))
    w = fourier.rfft_weights(shape) * quality.sampled_region(shape, tilts)
    w[0, 0, 0] = 0.0
    g, n = fourier.shell_index(shape).reshape(-1), fourier.n_shells(shape) + 1

    def s(v: torch.Tensor) -> np.ndarray:
        return torch.bincount(g, weights=(w * v).reshape(-1), minlength=n).numpy()

    return {"xx": s(fx.abs() ** 2), "xc": s((fx * fc.conj()).real), "cc": s(fc.abs() ** 2)}


def analyse(x: np.ndarray, clean: np.ndarray, tilts: tuple[float, float]) -> dict:
    """Affine and equalised PSNR against the clean map (sampled region) and the per-band error split."""
    from cryorestore import fourier

    sums = shell_sums(x, clean, tilts)
    a = sums["xc"].sum() / sums["xx"].sum()
    err_aff = sums["cc"] - 2 * a * sums["xc"] + a * a * sums["xx"]  # Σ|aX − C|² per shell
    with np.errstate(divide="ignore", invalid="ignore"):
        err_eq = np.where(sums["xx"] > 0, sums["cc"] - sums["xc"] ** 2 / sums["xx"], sums["cc"])
    n_vox = float(np.prod(x.shape)) ** 2
    peak = float(clean.max() - clean.min())
    freqs = np.append(fourier.shell_frequencies(x.shape), np.inf)  # corners: beyond Nyquist
    out = {"psnr_clean": 10 * math.log10(peak**2 / (err_aff.sum() / n_vox)),
           "psnr_clean_eq": 10 * math.log10(peak**2 / (max(err_eq.sum(), 1e-300) / n_vox)), "gain": float(a),
           "bands": {}}
    for lo, hi in BANDS:
        sel = (freqs >= lo) & (freqs < hi) if hi < 0.5 else (freqs >= lo)
        power = sums["cc"][sel].sum()  # 0 when the band holds no sampled non-DC coefficient (small maps)
        out["bands"][f"{lo}-{hi}"] = {"err_share": float(err_aff[sel].sum() / err_aff.sum()),
                                      "rel": float(err_aff[sel].sum() / power) if power > 0 else 0.0,
                                      "clean_share": float(sums["cc"][sel].sum() / sums["cc"].sum())}
    return out


def main(argv: list[str] | None = None) -> int:
    from cryorestore import io
    from cryorestore.baseline import gaussian_lowpass

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="folder with full.mrc, clean.mrc and tilts.tlt")
    p.add_argument("--map", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--sigmas", nargs="*", type=float, default=[0.5, 0.75, 1.0], help="Gaussian widths, voxels")
    p.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = p.parse_args(argv)
    full, clean = io.read_mrc(args.data / "full.mrc"), io.read_mrc(args.data / "clean.mrc")
    a = io.read_tlt(args.data / "tilts.tlt")
    tilts = (float(a.min()), float(a.max()))
    maps = {"raw": full.data, **{f"gaussian {s:g}": gaussian_lowpass(full.data, s) for s in args.sigmas}}
    for spec in args.map:
        name, _, path = spec.partition("=")
        maps[name] = io.read_mrc(path).data
    res = {name: analyse(m, clean.data, tilts) for name, m in maps.items()}
    bands = [f"{lo}-{hi}" for lo, hi in BANDS]
    first = next(iter(res.values()))
    print(f"data {args.data}; tilts {tilts[0]:g}..{tilts[1]:g}; clean power share per band: "
          + ", ".join(f"{b} {first['bands'][b]['clean_share']:.3f}" for b in bands))
    print("| map | PSNR vs clean (dB) | equalised vs clean (dB) | " + " | ".join(f"{b} err % / rel" for b in bands) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(bands))
    for name, r in res.items():
        cells = [f"{100 * r['bands'][b]['err_share']:.0f} / {r['bands'][b]['rel']:.3f}" for b in bands]
        print(f"| {name} | {r['psnr_clean']:.2f} | {r['psnr_clean_eq']:.2f} | " + " | ".join(cells) + " |")
    if (args.data / "ground_truth.mrc").is_file():
        from cryorestore.evaluate import quality

        truth = io.read_mrc(args.data / "ground_truth.mrc").data
        print("\n| map | PSNR vs truth (dB, affine) | equalised PSNR vs truth (dB) | band FSC | FSC=0.5 apod. | PSNR vs clean (dB) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, m in maps.items():
            t = quality.truth_metrics(m, truth, full.voxel_size)
            res[name]["truth"] = {"psnr": t["psnr"], "psnr_eq": t["psnr_eq"], "fsc05_apod": t["fsc05_apod"],
                                  "fsc_band_apod": quality.band_apodised_fsc(m, truth)}
            r = res[name]
            print(f"| {name} | {t['psnr']:.2f} | {t['psnr_eq']:.2f} | {r['truth']['fsc_band_apod']:.3f} | "
                  f"{t['fsc05_apod']:.3f} | {r['psnr_clean']:.2f} |")
    if args.out:
        io.write_text(args.out, json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
