"""Held-out-seed benchmark: the default restoration against raw, the best Gaussian and the Wiener filter.

For every simulator preset (``--presets``; ``realistic``, and ``teamtomo`` where this cryorestore has it)
and every seed (``--seeds``, default 100-104: seeds never used to tune anything; tuning uses seeds 0-1):

1. ``cryorestore simulate`` (``--shape``, default 64×256×256) into ``OUT/<preset>/s<seed>/data``;
2. ``cryorestore denoise --preset quick`` with the default method (:func:`bench_restoration.denoise_command`:
   halves, ``full.mrc`` as the raw map, ``--truth``; plus ``--clean clean.mrc`` when the simulator wrote
   it, and the tilt range of ``tilts.tlt``) into ``OUT/<preset>/s<seed>/quick``;
3. the classical floor of :func:`bench_restoration.baseline_maps`: the Gaussian whose sigma maximises
   the PSNR against the truth (``gaussian``) and the FSC-weighted half-map Wiener filter; and a sweep of
   Gaussians over ``baseline.SIGMA_GRID`` scored in the bars' figures, whose best value *per figure*
   (``gaussian*``: a different sigma may win each column; the sigmas are in ``table.json``) is what the
   bars compare against: a light Gaussian wins against the clean reconstruction, whose power lies at
   mid frequencies, and a heavy one against the truth;
4. every map (raw, gaussian, wiener, quick, and each ``--peer NAME=PATTERN`` whose file exists) scored by
   :func:`bench_restoration.score_map` (affine PSNR, equalised PSNR, FSC=0.5 of the apodised centre
   crops, missing-wedge correlation, per-species template-matching PR-AUC at ``--match-step`` and STA
   resolution at the true poses, all up to one global sign) plus the mean apodised FSC over
   ``quality.FSC_BAND`` (the band FSC) and the PSNR against ``clean.mrc`` on the sampled Fourier region
   (:func:`cryorestore.evaluate.quality.psnr_vs_clean`).

It prints one markdown table per preset (mean ± standard deviation over the seeds) and one pass/fail
line per bar: the default restoration ahead of the best Gaussian (``gaussian*``, best of the sweep in
that figure, per seed) by at least +0.02 band FSC, +0.3 dB equalised PSNR and +0.5 dB PSNR against the
clean reconstruction (the mean of the per-seed differences; the line also counts the seeds that pass on
their own). The equalised PSNR of any linear isotropic filter of raw equals raw's (up to the Gaussian's
variation within a shell and its border), so that bar measures what the restoration adds beyond
filtering. Everything is resumable: a dataset with
``simulated.json``, a run with ``restored.mrc`` and ``metrics.json`` and a map with a score cache
(``scores/<map>.json``, keyed by the map file's size and time and the scoring settings) are reused;
``OUT/<preset>/table.json`` holds every figure per seed.

    python benchmarks/bench_heldout.py --out-dir bench/heldout                     # the real thing
    python benchmarks/bench_heldout.py --out-dir /tmp/smoke --seeds 100 --presets toy --shape 32 64 64 \\
        --max-steps 2 --match-step 0 -- --subtomo-size 16 --n-subtomos 8           # a smoke test
    python benchmarks/bench_heldout.py --out-dir bench/heldout \\
        --peer topaz=peers/{preset}/s{seed}/topaz/restored.mrc --peer cryoCARE=peers/{preset}/s{seed}/cryocare/restored.mrc

``{preset}``, ``{seed}`` and ``{data}`` (the dataset folder) in a peer's pattern are filled in per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_restoration  # noqa: E402

DEFAULT_SEEDS = (100, 101, 102, 103, 104)
DEFAULT_PRESETS = ("realistic", "teamtomo")
DEFAULT_SHAPE = (64, 256, 256)
RESTORED = "quick"  # the row of the default restoration
FLOOR = ("raw", "gaussian", "wiener")
SWEEP = "gaussian*"  # the best Gaussian of the sweep, per figure
#: (label, score key, format) of the table's figure columns; PR-AUC and STA per species follow
COLUMNS = (("affine PSNR (dB)", "psnr", ".2f"), ("equalised PSNR (dB)", "psnr_eq", ".2f"),
           ("PSNR vs clean, sampled (dB)", "psnr_clean", ".2f"), ("band FSC 0.03-0.25", "fsc_band_apod", ".3f"),
           ("FSC=0.5 apod. (1/vox)", "fsc05_apod", ".3f"), ("wedge corr", "wedge_corr", ".3f"))
#: (score key, margin over the best Gaussian, label, unit) of the bars the default restoration must clear
BARS = (("fsc_band_apod", 0.02, "band FSC", ""), ("psnr_eq", 0.3, "equalised PSNR", " dB"),
        ("psnr_clean", 0.5, "PSNR vs clean (sampled region)", " dB"))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cryorestore", *args]


def run(cmd: list[str], log: Path) -> None:
    """Run one step, its output into ``log`` (the tail is printed when it fails)."""
    print("$", " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"failed (exit {rc}): {' '.join(cmd)}\n" + "\n".join(tail))


def available_presets() -> tuple[str, ...]:
    from cryorestore import simulate

    return tuple(simulate.PRESETS)


def simulated(preset: str, seed: int, args: argparse.Namespace) -> Path:
    """The dataset of one (preset, seed), simulated unless ``simulated.json`` marks it done."""
    top = Path(args.out_dir) / preset / f"s{seed}"
    data, mark = top / "data", top / "simulated.json"
    if not mark.is_file():
        cmd = cli("simulate", str(data), "--preset", preset, "--seed", str(seed), "--shape", *map(str, args.shape),
                  "--device", args.device)
        run(cmd, top / "simulate.log")
        mark.write_text(json.dumps({"command": cmd}, indent=1) + "\n")
    return data


def tilt_range_of(data: Path) -> tuple[float, float]:
    """(min, max) of the dataset's ``tilts.tlt``, degrees."""
    from cryorestore import io

    a = io.read_tlt(data / "tilts.tlt")
    return float(a.min()), float(a.max())


def restored(data: Path, preset: str, seed: int, tilts: tuple[float, float], args: argparse.Namespace) -> Path:
    """``denoise --preset quick`` (the default method) on one dataset unless its outputs exist."""
    out = Path(args.out_dir) / preset / f"s{seed}" / RESTORED
    if not ((out / "restored.mrc").is_file() and (out / "metrics.json").is_file()):
        cmd = [*bench_restoration.denoise_command(data, out), "--preset", "quick", "--tilt-range", *map(str, tilts),
               "--device", args.device, "--no-progress"]
        if (data / "clean.mrc").is_file():
            cmd += ["--clean", str(data / "clean.mrc")]
        if args.max_steps:
            cmd += ["--max-steps", str(args.max_steps)]
        run(cmd + list(args.extra), out.parent / "denoise.log")
    return out / "restored.mrc"


def score(name: str, path: Path | None, ref: dict, cache_dir: Path, args: argparse.Namespace) -> dict:
    """Every figure of one map (module doc), cached in ``cache_dir/<name>.json``."""
    from cryorestore import io
    from cryorestore.evaluate import quality

    src = path if path is not None else ref["data"] / "full.mrc"
    st = os.stat(src)
    key = {"map": str(src), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "match_step": args.match_step,
           "tilt_range": list(ref["tilt_range"]), "clean": ref["clean"] is not None}
    f = cache_dir / f"{name}.json"
    if f.is_file() and not args.force_score:
        doc = json.loads(f.read_text())
        if doc.get("key") == key:
            return doc["scores"]
    vol = ref["raw"] if path is None else io.read_mrc(path).data
    s = bench_restoration.score_map(vol, ref, args)
    s["fsc_band_apod"] = quality.band_apodised_fsc(vol, ref["truth"])
    if ref["clean"] is not None:
        s["psnr_clean"] = quality.psnr_vs_clean(vol, ref["clean"], ref["tilt_range"])
    io.write_text(f, json.dumps({"key": key, "scores": s}, indent=2) + "\n")
    return s


def gaussian_sweep(ref: dict, cache_dir: Path, args: argparse.Namespace) -> dict:
    """Gaussian low-passes of raw over ``baseline.SIGMA_GRID`` scored in the bars' figures (and the
    affine PSNR); returns ``{"scores": {key: best value}, "sigma": {key: its sigma}, "by_sigma": ...}``,
    cached in ``cache_dir/gaussian_sweep.json``."""
    from cryorestore import baseline, io
    from cryorestore.evaluate import quality

    st = os.stat(ref["data"] / "full.mrc")
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sigmas": list(baseline.SIGMA_GRID),
           "tilt_range": list(ref["tilt_range"]), "clean": ref["clean"] is not None}
    f = cache_dir / "gaussian_sweep.json"
    if f.is_file() and not args.force_score:
        doc = json.loads(f.read_text())
        if doc.get("key") == key:
            return doc["sweep"]
    by_sigma = {}
    for sigma in baseline.SIGMA_GRID:
        g = baseline.gaussian_lowpass(ref["raw"], sigma)
        s = {"psnr": quality.psnr(g, ref["truth"]), "psnr_eq": quality.equalised_psnr(g, ref["truth"]),
             "fsc_band_apod": quality.band_apodised_fsc(g, ref["truth"])}
        if ref["clean"] is not None:
            s["psnr_clean"] = quality.psnr_vs_clean(g, ref["clean"], ref["tilt_range"])
        by_sigma[f"{sigma:g}"] = s
    keys = list(next(iter(by_sigma.values())))
    best = {k: max(by_sigma, key=lambda sg: by_sigma[sg][k]) for k in keys}
    sweep = {"scores": {k: by_sigma[sg][k] for k, sg in best.items()}, "sigma": {k: float(sg) for k, sg in best.items()},
             "by_sigma": by_sigma}
    io.write_text(f, json.dumps({"key": key, "sweep": sweep}, indent=2) + "\n")
    return sweep


def peer_paths(preset: str, seed: int, data: Path, args: argparse.Namespace) -> dict[str, Path]:
    out = {}
    for spec in args.peer:
        name, _, pattern = spec.partition("=")
        p = Path(pattern.format(preset=preset, seed=seed, data=data))
        if p.is_file():
            out[name] = p
        else:
            print(f"{preset} seed {seed}: no {name} map at {p}; its row is left out for this seed")
    return out


def one_seed(preset: str, seed: int, args: argparse.Namespace) -> dict:
    """Simulate, restore and score one (preset, seed); returns ``{"species": [...], "maps": {name: scores}}``."""
    from cryorestore import io
    from cryorestore.evaluate import species

    data = simulated(preset, seed, args)
    tilts = tilt_range_of(data)
    rest = restored(data, preset, seed, tilts, args)
    ns = argparse.Namespace(tilt_range=list(tilts), match_step=args.match_step, device=args.device,
                            force_score=args.force_score)
    ref = bench_restoration.load_reference(data, ns)
    ref["data"] = data
    ref["clean"] = io.read_mrc(data / "clean.mrc").data if (data / "clean.mrc").is_file() else None
    if ref["clean"] is None:
        print(f"{preset} seed {seed}: no clean.mrc in {data}; PSNR against the clean reconstruction left out")
    top = Path(args.out_dir) / preset / f"s{seed}"
    maps: dict[str, Path | None] = {"raw": None, **bench_restoration.baseline_maps(ref, top), RESTORED: rest,
                                    **peer_paths(preset, seed, data, args)}
    scores = {name: score(name, path, ref, top / "scores", ns) for name, path in maps.items()}
    sweep = gaussian_sweep(ref, top / "scores", ns)
    scores[SWEEP] = sweep["scores"]
    sigma = json.loads((top / "baselines" / "baseline.json").read_text())["gaussian"].get("sigma_voxels")
    return {"species": species.species_names(ref["particles"]), "maps": scores, "gaussian_sigma": sigma,
            "sweep_sigma": sweep["sigma"]}


def _cell(vals: list[float], spec: str) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return format(vals[0], spec)
    return f"{format(float(np.mean(vals)), spec)} ± {format(float(np.std(vals, ddof=1)), spec)}"


def table(preset: str, runs: dict[int, dict]) -> str:
    """Markdown table (mean ± sd over the seeds) and the pass/fail lines of the bars for one preset."""
    names: list[str] = []
    for r in runs.values():
        names.extend(n for n in r["species"] if n not in names)
    cols = list(COLUMNS) + [(f"PR-AUC {sp}", f"pr_auc_{sp}", ".3f") for sp in names] + \
        [(f"STA {sp} (Å)", f"sta_half_fsc0143_angstrom_{sp}", ".1f") for sp in names]
    rows = list(dict.fromkeys([*FLOOR, SWEEP, RESTORED, *(m for r in runs.values() for m in r["maps"])]))
    seeds = sorted(runs)
    lines = [f"### {preset}: held-out seeds {', '.join(map(str, seeds))} (mean ± sd over seeds)", "",
             "| map | " + " | ".join(c[0] for c in cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for row in rows:
        cells = [_cell([runs[s]["maps"][row][k] for s in seeds if row in runs[s]["maps"] and k in runs[s]["maps"][row]],
                       spec) for _, k, spec in cols]
        label = {RESTORED: "quick (default restoration)", "gaussian": "gaussian (σ best by truth PSNR)",
                 SWEEP: "gaussian* (σ best per column)"}.get(row, row)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    sig = [runs[s].get("gaussian_sigma") for s in seeds]
    lines += ["", "σ (voxels) of the Gaussian best by truth PSNR, per seed: "
              + ", ".join(f"{v:g}" if v is not None else "?" for v in sig)]
    for key in [k for _, k, _ in COLUMNS if any(k in runs[s].get("sweep_sigma", {}) for s in seeds)]:
        lines.append(f"σ (voxels) of gaussian* in {key}, per seed: "
                     + ", ".join(f"{runs[s]['sweep_sigma'][key]:g}" for s in seeds if key in runs[s].get("sweep_sigma", {})))
    lines.append("")
    lines += bar_lines(runs)
    return "\n".join(lines)


def bar_lines(runs: dict[int, dict]) -> list[str]:
    """One PASS/FAIL line per bar: the mean over seeds of (default restoration − best Gaussian of the
    sweep in that figure)."""
    out = []
    for key, margin, label, unit in BARS:
        diffs = [r["maps"][RESTORED][key] - r["maps"][SWEEP][key] for r in runs.values()
                 if key in r["maps"].get(RESTORED, {}) and key in r["maps"].get(SWEEP, {})]
        if not diffs:
            out.append(f"- {label}: +{margin:g}{unit} over the best Gaussian: NOT MEASURED (no data)")
            continue
        mean = float(np.mean(diffs))
        ok = sum(d >= margin for d in diffs)
        verdict = "PASS" if mean >= margin else "FAIL"
        out.append(f"- {label}: default − best Gaussian = {mean:+.3f}{unit} (mean of {len(diffs)} seeds; "
                   f"{ok}/{len(diffs)} seeds ≥ +{margin:g}{unit}; per seed "
                   f"{', '.join(f'{d:+.3f}' for d in diffs)}): bar +{margin:g}{unit} **{verdict}**")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", required=True, help="OUT/<preset>/s<seed>/{data,quick,baselines,scores}")
    p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    p.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS),
                   help="simulator presets (those this cryorestore lacks are skipped with a note)")
    p.add_argument("--shape", nargs=3, type=int, default=list(DEFAULT_SHAPE), metavar=("Z", "Y", "X"))
    p.add_argument("--max-steps", type=int, default=None, help="cap the optimiser steps (smoke tests only)")
    p.add_argument("--match-step", type=float, default=40.0, help="template-matching angular step, degrees (0: skip)")
    p.add_argument("--peer", action="append", default=[], metavar="NAME=PATTERN",
                   help="a peer's restored map per run, e.g. topaz=peers/{preset}/s{seed}/topaz/restored.mrc")
    p.add_argument("--device", default="cpu")
    p.add_argument("--force-score", action="store_true", help="rescore every map (simulations and runs are kept)")
    p.add_argument("extra", nargs="*", help="after --: more denoise options for every run")
    args = p.parse_args(argv)
    for spec in args.peer:
        if "=" not in spec:
            p.error(f"--peer {spec}: use NAME=PATTERN")
    have = available_presets()
    out = Path(args.out_dir)
    texts = []
    for preset in args.presets:
        if preset not in have:
            print(f"simulator preset '{preset}' is not in this cryorestore ({', '.join(have)}): skipped")
            continue
        runs = {seed: one_seed(preset, seed, args) for seed in args.seeds}
        (out / preset).mkdir(parents=True, exist_ok=True)
        (out / preset / "table.json").write_text(json.dumps({str(s): r for s, r in runs.items()}, indent=2) + "\n")
        texts.append(table(preset, runs))
    text = "\n\n".join(texts)
    print()
    print(text)
    if texts:
        (out / "tables.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
