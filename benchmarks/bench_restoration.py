"""Restoration benchmark: raw, the classical baselines and each method, scored alike against the truth.

On a dataset written by ``cryorestore simulate`` it scores, side by side:

* ``raw``: ``full.mrc`` (the reconstruction from all tilts, on the grid and scale of the halves' mean);
* ``gaussian``, ``wiener``: the classical baselines of :mod:`cryorestore.baseline` of that raw map
  (Gaussian sigma chosen by PSNR against the truth; FSC-weighted half-map Wiener filter);
* one row per ``METHOD:MODEL:LOSS`` (``cryorestore denoise`` in a subprocess, so rows share no memory;
  a loss spec such as ``l2+fsc`` is passed as is).

Every map gets the same figures (:func:`score_map`): PSNR (dB, after the affine grey-level fit), the
apodised centre-crop FSC=0.5 against the truth (cycles/voxel; up to one global sign), the mid-band
FSC, the missing-wedge correlation with the truth, the box SNR estimate, and per species (the
``cryorestoreSpecies`` column; one species when it is missing) the template-matching PR-AUC (angular
step ``--match-step``; the template wedge-filtered for every map alike) and the subtomogram-averaging
resolution at the true poses (half-map FSC=0.143, wedge-compensated for every map alike). Contrast: every
map is multiplied by its :func:`quality.truth_sign` before matching and averaging (templates are positive
density; phase contrast makes dense matter dark in the raw map).

Each map's figures are cached in ``OUT/<row>/scores.json`` (``--force`` recomputes, ``--force-train``
retrains), so a partial run still yields a table, and ``OUT/table.json`` collects them.

    python benchmarks/bench_restoration.py --data bench/s1 --out-dir bench/runs_s1 \\
        --rows n2n:unet:l2 n2n:unet:l2+fsc --epochs 10 --subtomo-size 32 --model-option unet.base_channels=8
    python benchmarks/bench_restoration.py --combine bench/runs_s1 bench/runs_s2   # one table, seeds side by side
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_ROWS = ("n2n:unet:l2", "deepdewedge:unet:l2")
BASELINE_ROWS = ("raw", "gaussian", "wiener")
SNR_BOX = 16  # voxels, as `cryorestore evaluate --snr-box`'s default
SNR_PAIRS = 30


def row_dir(row: str, out_dir: str | Path) -> Path:
    """Output folder of one row (METHOD:MODEL:LOSS, or a baseline name)."""
    return Path(out_dir) / row.replace(":", "_").replace("+", "-")


def denoise_command(data: str | Path, out: str | Path) -> list[str]:
    """``cryorestore denoise`` on a simulated dataset's halves, scored against its truth, into ``out``
    (the options every benchmark run shares; callers append method and schedule)."""
    d = Path(data)
    return [sys.executable, "-m", "cryorestore", "denoise", "--even", str(d / "even.mrc"), "--odd", str(d / "odd.mrc"),
            "--raw", str(d / "full.mrc"), "--truth", str(d / "ground_truth.mrc"), "--out-dir", str(out)]


def train_row(row: str, args: argparse.Namespace) -> Path:
    """Run ``cryorestore denoise`` for one METHOD:MODEL:LOSS row unless its restored.mrc exists; returns it."""
    method, model, loss = row.split(":")
    out = row_dir(row, args.out_dir)
    restored = out / "restored.mrc"
    if restored.is_file() and (out / "metrics.json").is_file() and not args.force_train:
        return restored
    cmd = [*denoise_command(args.data, out),
           "--method", method, "--model", model, "--loss", loss, "--epochs", str(args.epochs),
           "--subtomo-size", str(args.subtomo_size), "--n-subtomos", str(args.n_subtomos),
           "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--device", args.device,
           "--tilt-range", *map(str, args.tilt_range), "--no-progress"]
    if args.lr:
        cmd += ["--lr", str(args.lr)]
    wedge = method in ("deepdewedge", "isonet")
    if wedge and args.wedge_epochs:
        cmd[cmd.index("--epochs") + 1] = str(args.wedge_epochs)
    if wedge and args.refill_every:
        cmd += ["--refill-every", str(args.refill_every)]
    for opt in args.model_option:
        key = opt.split("=", 1)[0]
        if "." in key:  # MODEL.key=value applies to that network only
            if key.split(".", 1)[0] != model:
                continue
            opt = opt.split(".", 1)[1]
        cmd += ["--model-option", opt]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return restored


def load_reference(data: Path, args: argparse.Namespace) -> dict:
    """What every map is scored against, read once: raw (full.mrc), halves, truth, tilt range, the SNR
    boxes (30 pairs of 16³ from the truth and particles.star, seed 0, the same for every map), the
    particle list and one template per species."""
    from cryorestore import io
    from cryorestore.errors import InputError
    from cryorestore.evaluate import snr, species

    full = io.read_mrc(data / "full.mrc")
    truth = io.read_mrc(data / "ground_truth.mrc").data
    particles = io.read_particles(data / "particles.star")
    centres = io.particle_arrays(particles)[0]
    try:
        signal, background = snr.auto_boxes(truth, SNR_BOX, SNR_PAIRS, np.random.default_rng(0), centres)
    except InputError:  # no empty-ice box: the teamtomo preset's ice texture fills every box
        signal = background = None
    return {"raw": full.data, "voxel_size": full.voxel_size, "truth": truth, "signal": signal,
            "background": background, "particles": particles,
            "templates": species.load_templates(particles, data), "tilt_range": tuple(args.tilt_range),
            "even": io.read_mrc(data / "even.mrc").data, "odd": io.read_mrc(data / "odd.mrc").data}


def score_map(vol: np.ndarray, ref: dict, args: argparse.Namespace) -> dict:
    """Every figure of one map (see the module doc); plain floats, species figures as ``<figure>_<species>``."""
    from cryorestore.evaluate import quality, snr, species

    t0 = time.perf_counter()
    out = quality.truth_metrics(vol, ref["truth"], ref["voxel_size"], ref["tilt_range"])
    if ref["signal"] is not None:  # the box SNR needs boxes of empty ice (None: the truth has none)
        out["snr_db"] = snr.snr_db(vol, ref["signal"], ref["background"], SNR_BOX)
    per = species.species_metrics(vol, ref["particles"], ref["templates"], ref["voxel_size"], ref["tilt_range"],
                                  sign=out["sign"], match_step=args.match_step or None, seed=0, device=args.device)
    for sp, figs in per.items():
        out.update({f"{k}_{sp}": v for k, v in figs.items()})
    out["score_seconds"] = time.perf_counter() - t0
    return {k: float(v) for k, v in out.items()}


def baseline_maps(ref: dict, out_dir: Path) -> dict[str, Path]:
    """Write (once) the Gaussian and Wiener baselines of the raw map; returns their paths."""
    from cryorestore import baseline, io

    d = out_dir / "baselines"
    paths = {"gaussian": d / "gaussian.mrc", "wiener": d / "wiener.mrc"}
    if not all(p.is_file() for p in paths.values()):
        g = baseline.gaussian_baseline(ref["even"], ref["odd"], ref["raw"], ref["truth"])
        w = baseline.wiener_baseline(ref["even"], ref["odd"], ref["raw"])
        io.write_mrc(paths["gaussian"], g.volume, ref["voxel_size"])
        io.write_mrc(paths["wiener"], w.volume, ref["voxel_size"])
        io.write_text(d / "baseline.json", json.dumps({"gaussian": g.params, "wiener": w.params}, indent=2) + "\n")
    return paths


def scored(row: str, vol_path: Path | None, ref: dict, args: argparse.Namespace) -> dict:
    """Cached :func:`score_map` of one row's map (``OUT/<row>/scores.json``), plus its training record."""
    from cryorestore import io

    d = row_dir(row, args.out_dir)
    f = d / "scores.json"
    settings = {"match_step": args.match_step, "tilt_range": list(args.tilt_range)}
    if f.is_file() and not args.force:
        doc = json.loads(f.read_text())
        if doc.get("settings") == settings:
            return doc
    vol = ref["raw"] if vol_path is None else io.read_mrc(vol_path).data
    doc = {"row": row, "settings": settings, "scores": score_map(vol, ref, args)}
    mj = d / "metrics.json"
    if mj.is_file():
        doc["training"] = json.loads(mj.read_text()).get("training", {})
    if row == "gaussian":
        doc["params"] = json.loads((Path(args.out_dir) / "baselines" / "baseline.json").read_text())["gaussian"]
        doc["params"].pop("psnr_by_sigma", None)
    d.mkdir(parents=True, exist_ok=True)
    io.write_text(f, json.dumps(doc, indent=2) + "\n")
    return doc


def fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def table_columns(species_names: list[str]) -> list[tuple[str, str, str]]:
    """(header, score key, format) of the table's figure columns."""
    cols = [("PSNR (dB)", "psnr", ".2f"), ("FSC=0.5 apod. (1/vox)", "fsc05_apod", ".3f"),
            ("mid-band FSC", "fsc_mid", ".3f"), ("wedge corr", "wedge_corr", ".3f"), ("SNR (dB)", "snr_db", ".2f")]
    for sp in species_names:
        cols.append((f"PR-AUC {sp}", f"pr_auc_{sp}", ".3f"))
    for sp in species_names:
        cols.append((f"STA {sp} (Å, half FSC=0.143)", f"sta_half_fsc0143_angstrom_{sp}", ".1f"))
    return cols


def print_table(docs: list[dict[str, dict]], species_names: list[str], seeds: list[str]) -> None:
    """Markdown table; with several runs (seeds) each cell shows the values of every run, ' / '-separated."""
    cols = table_columns(species_names)
    print("| map | " + " | ".join(h for h, _, _ in cols) + " | epochs | train time (s) |")
    print("| --- | " + " | ".join("---:" for _ in cols) + " | ---: | ---: |")
    rows = list(dict.fromkeys(r for d in docs for r in d))
    for row in rows:
        cells = []
        for _, key, spec in cols:
            cells.append(" / ".join(fmt(d[row]["scores"].get(key), spec) if row in d else "–" for d in docs))
        tr = [d[row].get("training") for d in docs if row in d and d[row].get("training")]
        ep = " / ".join(str(t.get("epochs", "–")) for t in tr) or "–"
        sec = " / ".join(f"{t['seconds']:.0f}" for t in tr if "seconds" in t) or "–"
        label = row if row in BASELINE_ROWS else row.replace(":", " ")
        print(f"| {label} | " + " | ".join(cells) + f" | {ep} | {sec} |")
    if len(docs) > 1:
        print(f"(cells: {' / '.join(seeds)})")


def print_trends(results: dict[str, dict]) -> None:
    """The study's trends, for whichever pairs of rows were run (informational, not pass/fail): the
    FSC-augmented loss keeps more mid frequencies than L2 (same method and network), every method beats
    the classical baselines, and the wedge methods raise the missing-wedge correlation."""
    s = {row: r["scores"] for row, r in results.items()}
    best_base = max((s[b]["psnr"], b) for b in ("gaussian", "wiener") if b in s) if "gaussian" in s else None
    for row, m in s.items():
        if row in BASELINE_ROWS:
            continue
        method, model, loss = row.split(":")
        if best_base:
            print(f"{row}: PSNR {m['psnr']:.2f} vs best baseline {best_base[1]} {best_base[0]:.2f} dB; "
                  f"FSC=0.5 apod. {m['fsc05_apod']:.3f} vs raw {s['raw']['fsc05_apod']:.3f}, "
                  f"gaussian {s['gaussian']['fsc05_apod']:.3f}, wiener {s['wiener']['fsc05_apod']:.3f}")
        if "fsc" in loss.split("+") and loss != "l2" and f"{method}:{model}:l2" in s:
            l2 = s[f"{method}:{model}:l2"]
            print(f"trend FSC loss vs L2 ({method}, {model}, {loss}): mid-band FSC {l2['fsc_mid']:.3f} (l2) vs "
                  f"{m['fsc_mid']:.3f}; FSC=0.5 apod. {l2['fsc05_apod']:.3f} vs {m['fsc05_apod']:.3f}; "
                  f"PSNR {l2['psnr']:.2f} vs {m['psnr']:.2f} dB")
        if method in ("deepdewedge", "isonet"):
            print(f"trend wedge ({row}): missing-wedge correlation raw {s['raw']['wedge_corr']:.3f} → {m['wedge_corr']:.3f}")


def collect_rows(out_dir: Path) -> dict[str, dict]:
    """Every scored map of a run folder (``<row>/scores.json``; several invocations may have shared the
    folder), baselines first, then the method rows in name order."""
    docs = {}
    for f in sorted(out_dir.glob("*/scores.json")):
        doc = json.loads(f.read_text())
        docs[doc["row"]] = doc
    return {r: docs[r] for r in [*BASELINE_ROWS, *sorted(set(docs) - set(BASELINE_ROWS))] if r in docs}


def species_of(out_dirs: list[Path]) -> list[str]:
    names: list[str] = []
    for d in out_dirs:
        t = json.loads((d / "table.json").read_text())
        names.extend(n for n in t["species"] if n not in names)
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="folder written by 'cryorestore simulate'")
    p.add_argument("--out-dir", help="one sub-folder per row")
    p.add_argument("--combine", nargs="+", metavar="OUT_DIR", help="print one table of earlier runs (e.g. seeds)")
    p.add_argument("--rows", nargs="*", default=list(DEFAULT_ROWS), metavar="METHOD:MODEL:LOSS")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--wedge-epochs", type=int, default=None, help="epochs for deepdewedge/isonet rows (default --epochs)")
    p.add_argument("--subtomo-size", type=int, default=32)
    p.add_argument("--n-subtomos", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--model-option", action="append", default=[], metavar="[MODEL.]KEY=VALUE",
                   help="network option for every row, or with a MODEL. prefix (e.g. unet.base_channels=8) "
                        "for that network's rows only")
    p.add_argument("--refill-every", type=int, default=None,
                   help="epochs between wedge refills for deepdewedge/isonet rows (default: each method's own)")
    p.add_argument("--match-step", type=float, default=40.0, help="template-matching angular step, degrees (0: skip)")
    p.add_argument("--tilt-range", nargs=2, type=float, default=[-60.0, 60.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true", help="recompute the scores of every map")
    p.add_argument("--force-train", action="store_true", help="retrain rows that already have a restored map")
    args = p.parse_args(argv)

    if args.combine:
        dirs = [Path(d) for d in args.combine]
        docs = [collect_rows(d) for d in dirs]
        print_table(docs, species_of(dirs), [d.name for d in dirs])
        return 0
    if not args.data or not args.out_dir:
        p.error("--data and --out-dir are required (or --combine)")
    from cryorestore import io
    from cryorestore.evaluate import species

    out = Path(args.out_dir)
    ref = load_reference(Path(args.data), args)
    names = species.species_names(ref["particles"])
    results: dict[str, dict] = {}

    def save() -> None:
        io.write_text(out / "table.json", json.dumps({"species": names, "rows": results}, indent=2) + "\n")

    base = baseline_maps(ref, out)
    for row in BASELINE_ROWS:
        results[row] = scored(row, base.get(row), ref, args)
        save()
    for row in args.rows:
        results[row] = scored(row, train_row(row, args), ref, args)
        save()
    print()
    print_table([results], names, [Path(args.data).name])
    print()
    print_trends(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
