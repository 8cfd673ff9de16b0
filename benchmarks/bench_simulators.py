"""Compare simulated datasets (e.g. ``--preset realistic`` and ``--preset teamtomo`` at one seed) on the figures
that decide how hard a restoration benchmark is: half-map FSC, raw PSNR against the truth, the noise spectrum of
the tilt series and of the tomogram, the effective transfer of the signal at low frequency, the ice texture and
the crowding. Every figure is measured from the files that ``cryorestore simulate`` writes.

    python benchmarks/bench_simulators.py DATA_DIR [DATA_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cryorestore import fourier, io
from cryorestore.evaluate import quality


def band_mean(values: np.ndarray, freqs: np.ndarray, lo: float, hi: float) -> float:
    sel = (freqs >= lo) & (freqs < hi)
    return float(values[sel].mean())


def radial_power_2d(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean |F|² of a (Y, X) image per radial bin of width 0.025 cycles/pixel (centres, power)."""
    f = np.abs(np.fft.rfft2(img - img.mean())) ** 2
    q = np.sqrt(np.fft.fftfreq(img.shape[0])[:, None] ** 2 + np.fft.rfftfreq(img.shape[1])[None, :] ** 2)
    edges = np.arange(0.0, 0.5 + 1e-9, 0.025)
    idx = np.digitize(q, edges) - 1
    power = np.array([f[idx == i].mean() for i in range(len(edges) - 1)])
    return (edges[:-1] + edges[1:]) / 2, power


def measure(d: Path) -> dict:
    sim = json.loads((d / "simulation.json").read_text())
    vol = {n: io.read_mrc(d / f"{n}.mrc").data.astype(np.float64) for n in ("ground_truth", "full", "even", "odd", "clean")}
    vs = float(sim["voxel_size_A"])
    shape = vol["full"].shape
    freqs = fourier.shell_frequencies(shape)
    out: dict = {"preset": sim["preset"], "seed": sim["seed"]}
    curve = np.asarray(fourier.fsc(vol["even"], vol["odd"]))
    for t in (0.5, 0.143):
        out[f"half_map_fsc_{t}"] = round(fourier.resolution_at(curve, freqs, t, vs).frequency, 4)
    out["psnr_full_vs_truth_dB"] = round(quality.psnr(vol["full"], vol["ground_truth"]), 2)
    out["psnr_clean_vs_truth_dB"] = round(quality.psnr(vol["clean"], vol["ground_truth"]), 2)
    noise = vol["full"] - vol["clean"]
    out["tomogram_snr"] = round(float(vol["clean"].var() / noise.var()), 4)
    # noise spectrum of the tomogram (full − clean), power per shell normalised to the 0.10–0.20 band
    p = quality.shell_power(noise)
    per = p[0] / np.maximum(p[1], 1)
    mid = band_mean(per, freqs, 0.10, 0.20)
    out["tomo_noise_power_0.40-0.50_over_0.10-0.20"] = round(band_mean(per, freqs, 0.40, 0.5) / mid, 3)
    out["tomo_noise_power_0.02-0.05_over_0.10-0.20"] = round(band_mean(per, freqs, 0.02, 0.05) / mid, 3)
    # tilt-series noise at the tilt nearest 0°, radial spectrum (white = flat)
    import mrcfile

    with mrcfile.open(d / "tilt_series.mrc", permissive=True) as m:
        stack = np.asarray(m.data, dtype=np.float64)
    with mrcfile.open(d / "tilt_series_clean.mrc", permissive=True) as m:
        clean_stack = np.asarray(m.data, dtype=np.float64)
    i0 = int(np.argmin(np.abs(np.array(sim["tilt_angles_deg"]))))
    q2, pw = radial_power_2d(stack[i0] - clean_stack[i0])
    out["tilt_noise_power_0.45-0.50_over_0.05-0.10"] = round(float(pw[-1] / pw[(q2 > 0.05) & (q2 < 0.1)].mean()), 3)
    out["tilt_noise_std_0deg_V_voxel"] = round(float((stack[i0] - clean_stack[i0]).std()), 2)
    out["tilt_signal_std_0deg_V_voxel"] = round(float(clean_stack[i0].std()), 3)
    # effective transfer truth → clean tomogram: Re Σ C T* / Σ |T|² per shell (phase-flipped CTF, wedge, WBP)
    ct = np.fft.rfftn(vol["clean"])
    tt = np.fft.rfftn(vol["ground_truth"])
    shells = fourier.shell_index(shape).cpu().numpy()
    for lo, hi in ((0.01, 0.03), (0.03, 0.06), (0.06, 0.12), (0.12, 0.25)):
        ks = [k for k in range(len(freqs)) if lo <= freqs[k] < hi]
        sel = np.isin(shells, ks)
        out[f"transfer_{lo:.2f}-{hi:.2f}"] = round(float(np.real((ct * np.conj(tt))[sel]).sum() / (np.abs(tt[sel]) ** 2).sum()), 4)
    # ice texture and crowding, from the truth
    t = vol["ground_truth"]
    pt = quality.shell_power(t)
    pert = pt[0] / np.maximum(pt[1], 1)
    out["truth_power_0.40-0.50_over_0.05-0.10"] = round(band_mean(pert, freqs, 0.40, 0.5) / band_mean(pert, freqs, 0.05, 0.10), 4)
    out["truth_range_V"] = round(float(t.max() - t.min()), 2)
    out["truth_fraction_above_1V"] = round(float((t > 1.0).mean()), 4)
    quiet = np.abs(t) < np.percentile(np.abs(t), 30)
    out["truth_std_quietest_30pct_V"] = round(float(t[quiet].std()), 3)
    out["particles"] = {s["name"]: s["count"] for s in sim["species"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    args = ap.parse_args()
    for d in args.dirs:
        print(json.dumps({"dir": str(d), **measure(d)}))


if __name__ == "__main__":
    main()
