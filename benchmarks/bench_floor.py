"""Score restored maps against the classical floor (raw, best Gaussian, Wiener) on one simulated dataset.

Every map gets :func:`bench_restoration.score_map`'s figures (PSNR after the affine grey-level fit,
apodised centre-crop FSC=0.5 against the truth, template-matching PR-AUC and STA per species, all up to
one global sign) plus ``fsc_band_apod``: the mean of the apodised FSC against the truth over the shells
in ``quality.FSC_BAND`` (0.03-0.25) cycles/voxel. Scores are cached per map in ``OUT/<name>.json`` (``--force`` recomputes).

    python benchmarks/bench_floor.py --data bench/s0 --out-dir bench/floor \\
        --map quick=bench/quick/restored.mrc --map quick_tta=bench/quick_tta/restored.mrc
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_restoration  # noqa: E402

from cryorestore.evaluate.quality import FSC_BAND, band_apodised_fsc  # noqa: E402

COLUMNS = (("PSNR (dB)", "psnr", ".2f"), ("FSC=0.5 apod.", "fsc05_apod", ".3f"),
           (f"mean apod. FSC {FSC_BAND[0]}-{FSC_BAND[1]}", "fsc_band_apod", ".3f"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder written by 'cryorestore simulate'")
    p.add_argument("--out-dir", required=True, help="score cache and the baseline maps")
    p.add_argument("--map", action="append", default=[], metavar="NAME=PATH", help="a restored map to score")
    p.add_argument("--match-step", type=float, default=40.0, help="template-matching angular step, degrees")
    p.add_argument("--tilt-range", nargs=2, type=float, default=[-60.0, 60.0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    from cryorestore import io
    from cryorestore.evaluate import species

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref = bench_restoration.load_reference(Path(args.data), args)
    maps: dict[str, Path | None] = {"raw": None, **bench_restoration.baseline_maps(ref, out)}
    for spec in args.map:
        name, _, path = spec.partition("=")
        if not path:
            p.error(f"--map {spec}: use NAME=PATH")
        maps[name] = Path(path)
    names = species.species_names(ref["particles"])
    rows = {}
    for name, path in maps.items():
        cache = out / f"{name}.json"
        if cache.is_file() and not args.force:
            rows[name] = json.loads(cache.read_text())
            continue
        vol = ref["raw"] if path is None else io.read_mrc(path).data
        s = bench_restoration.score_map(vol, ref, args)
        s["fsc_band_apod"] = band_apodised_fsc(vol, ref["truth"])
        rows[name] = {"map": str(path) if path else "full.mrc", "scores": s}
        io.write_text(cache, json.dumps(rows[name], indent=2) + "\n")
    cols = list(COLUMNS) + [(f"PR-AUC {sp}", f"pr_auc_{sp}", ".3f") for sp in names]
    print("| map | " + " | ".join(c[0] for c in cols) + " |")
    print("| --- | " + " | ".join("---:" for _ in cols) + " |")
    for name, r in rows.items():
        s = r["scores"]
        print(f"| {name} | " + " | ".join(bench_restoration.fmt(s.get(k), f) for _, k, f in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
