"""Does the truth-free score rank maps as the truth does? Estimated against true gain on held-out regions.

For each case (a simulation folder and the ``cryorestore denoise`` run folders made on it, each with
``model/``), on the held-out region all its models share (the intersection of their recorded slabs),
one row per map:

* ``raw`` (the identity), ``gaussian`` (sigma chosen by the truth-free score), ``wiener`` (half-map Wiener
  filter), and one row per run (the run's network on each half alone with the run's ``inference``
  options from its metrics.json, as :func:`cryorestore.evaluate.truthfree.model_halves`);
* the estimated gain over raw (dB) with its 95 % block-bootstrap interval;
* the true gain: MSE against ``clean.mrc`` (the noise-free reconstruction from all tilts, the signal the
  halves share) of the mean of the two half maps' outputs against that of ``(even + odd) / 2``;
* the gain against the potential: PSNR gain against ``ground_truth.mrc`` after the affine grey-level fit;
* when ``clean_even.mrc`` and ``clean_odd.mrc`` exist and are equal (F2F halves), ``"halves": "f2f"``
  (no signal difference, no T2T bias); when they differ (T2T), the T2T signal difference ``⟨δ²⟩ = ⟨((ce − co)/2)²⟩``
  as a fraction of the raw map's true MSE, and per row the bias it predicts for a map that removes it
  entirely, ``10 log10((1 + ⟨δ²⟩/MSE(raw)) · MSE/(MSE − ⟨δ²⟩))`` dB (MSE: the row's true error).

Over all rows of all cases: Spearman's rank correlation of estimated and true gain, the largest
|estimated − true|, and how often the interval covers the true gain. Prints a markdown table and writes
``--json``.

    python benchmarks/bench_truthfree.py --case bench/s0 bench/runs_s0/n2n bench/runs_s0/ddw bench/runs_s0/iso \\
        --case bench/s1 bench/runs_s1/n2n ... --json bench/truthfree.json
    python benchmarks/bench_truthfree.py --merge bench/tf_s0.json bench/tf_s1.json   # pool cases scored apart
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _read(path: Path):
    from cryorestore import io

    return io.read_mrc(path) if path.is_file() else None


def shared_region(configs: list[dict], shape: tuple[int, int, int], names: list[str]):
    """The intersection of the held-out slabs the model directories record (same axis required)."""
    from cryorestore.errors import InputError
    from cryorestore.evaluate import truthfree as tf

    regions = [tf.holdout_from_config(c, shape, n) for c, n in zip(configs, names)]
    axes = {[i for i in range(3) if r.box[i] != (0, shape[i])][0] for r in regions}
    if len(axes) != 1:
        raise InputError(f"the runs hold out slabs along different axes ({sorted(axes)}); score them apart")
    a = axes.pop()
    start = max(r.box[a][0] for r in regions)
    stop = min(r.box[a][1] for r in regions)
    return tf.slab_region(shape, a, start, stop, f"slab {'zyx'[a]} in [{start}, {stop}) held out by every run")


def score_case(sim: Path, runs: list[Path], n_boot: int = 2000, seed: int = 0, device: str = "cpu",
               tile: int | None = None, holdout: str | None = None) -> dict:
    """Every row of one case (module doc) as a JSON-ready dict. ``holdout`` (``AXIS:START:STOP``) scores
    another region than the runs' shared held-out slab, e.g. one inside their training boxes (``overlap``
    then lists the runs whose training region it reaches: their estimates there may be optimistic)."""
    from cryorestore import io
    from cryorestore.evaluate import truthfree as tf
    from cryorestore.modeldir import load_model_dir

    even, odd = io.read_mrc(sim / "even.mrc"), io.read_mrc(sim / "odd.mrc")
    io.check_same_grid(even, odd, "even", "odd")
    clean, truth = _read(sim / "clean.mrc"), _read(sim / "ground_truth.mrc")
    ce, co = _read(sim / "clean_even.mrc"), _read(sim / "clean_odd.mrc")
    loaded = [load_model_dir(r / "model", device) for r in runs]
    if holdout:
        region = tf.parse_holdout(holdout, even.shape)
    else:
        region = shared_region([m.config for m in loaded], even.shape, [str(r / "model") for r in runs])
    overlap = [r.name for r, m in zip(runs, loaded) if tf.training_overlap(m.config, region)]
    outer, inner = tf.expanded_box(region, even.shape, tf.FILTER_MARGIN)
    e64, o64 = (np.asarray(v.data[outer], dtype=np.float64) for v in (even, odd))
    maps = {}
    maps["gaussian"], _ = tf.gaussian_halves(e64, o64, inner)
    maps["wiener"], _ = tf.wiener_halves(e64, o64, inner)
    tilt = tuple(loaded[0].config["tilt_range"]) if loaded else None
    for run, m in zip(runs, loaded):
        inf = json.loads((run / "metrics.json").read_text()).get("inference", {}) if (run / "metrics.json").is_file() else {}
        from cryorestore.presets import inference_values

        chosen = inference_values(m.config["preset"]) if m.config.get("preset") else {"tta": "none", "combine": "mean"}
        chosen |= {k: v for k, v in inf.items() if k in ("tta", "combine") and v}
        name = run.name if run.name not in maps else f"{run.name}_{len(maps)}"
        maps[name], _ = tf.model_halves(m, even.data, odd.data, region, chosen["combine"], chosen["tta"], tile=tile,
                                        device=device)
    sl = region.slices
    res = tf.score_maps(even.data[sl], odd.data[sl], maps, region, tilt_range=tilt,
                        clean=None if clean is None else clean.data[sl], truth=None if truth is None else truth.data[sl],
                        n_boot=n_boot, seed=seed)
    rows = []
    for name, r in res.rows.items():
        rows.append({"case": sim.name, "map": name, "est": r.gain_db, "ci": list(r.gain_ci),
                     "p_beats_gaussian": r.p_beats_gaussian,
                     "true": r.true.get("true_gain_db"), "potential": r.true.get("gain_potential_db"),
                     "flags": r.flags, "hallucinated_power": r.hallucinated_power})
    out = {"case": str(sim), "runs": [str(r) for r in runs], "region": region.to_dict(), "rows": rows,
           "overlap": overlap}
    if ce is not None and co is not None and np.array_equal(ce.data, co.data):
        out["halves"] = "f2f"  # the simulator writes clean_even = clean_odd = clean for frame-split halves
    elif ce is not None and co is not None and clean is not None:
        out["halves"] = "t2t"
        c = clean.data[sl].astype(np.float64)
        d2 = float(np.mean(((ce.data[sl].astype(np.float64) - co.data[sl]) / 2) ** 2))
        raw_true = float(np.mean((0.5 * (even.data[sl].astype(np.float64) + odd.data[sl]) - c) ** 2))
        mid = float(np.mean((0.5 * (ce.data[sl].astype(np.float64) + co.data[sl]) - c) ** 2))
        out["t2t"] = {"delta2": d2, "raw_true_mse": raw_true, "delta2_over_raw_mse": d2 / raw_true,
                      "predicted_bias_db": float(10 * np.log10(1 + d2 / raw_true)),
                      "clean_vs_mean_of_clean_halves_mse": mid}
        for row in rows:
            mse = res.rows[row["map"]].true.get("true_mse")
            if row["map"] != "raw" and mse is not None and mse > d2:
                row["t2t_bias_db"] = float(10 * np.log10((1 + d2 / raw_true) * mse / (mse - d2)))
    return out


def summarise(cases: list[dict]) -> dict:
    """Spearman over all rows with a true gain, max |est − true|, interval coverage."""
    from scipy.stats import spearmanr

    rows = [r for c in cases for r in c["rows"] if r["true"] is not None]
    est = np.array([np.inf if r["est"] is None else r["est"] for r in rows], dtype=float)
    true = np.array([r["true"] for r in rows], dtype=float)
    out: dict = {"n_rows": len(rows)}
    if len(rows) >= 3:
        out["spearman"] = float(spearmanr(np.where(np.isfinite(est), est, 1e9), true).statistic)
    scored = [r for r in rows if r["map"] != "raw"]
    if scored:
        errs = [abs((np.inf if r["est"] is None else r["est"]) - r["true"]) for r in scored]
        out["max_abs_error_db"] = float(max(errs))
        cov = [((r["ci"][0] is None or r["ci"][0] <= r["true"]) and (r["ci"][1] is None or r["true"] <= r["ci"][1]))
               for r in scored]
        out["covered"], out["n_intervals"] = int(sum(cov)), len(cov)
    return out


def markdown(cases: list[dict], summary: dict) -> str:
    def f(v):
        return "—" if v is None else ("inf" if not np.isfinite(v) else f"{v:+.2f}")

    lines = ["| case | map | est. gain dB | 95% interval | true gain dB (clean) | gain vs potential dB | "
             "P(beats Gaussian) | T2T bias bound dB | flags |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for c in cases:
        for r in c["rows"]:
            lines.append(f"| {r['case']} | {r['map']} | {f(r['est'])} | [{f(r['ci'][0])}, {f(r['ci'][1])}] | "
                         f"{f(r['true'])} | {f(r['potential'])} | "
                         f"{'' if r.get('p_beats_gaussian') is None else format(r['p_beats_gaussian'], '.2f')} | "
                         f"{f(r.get('t2t_bias_db'))} | {', '.join(r['flags']) or 'ok'} |")
    lines.append("")
    for c in cases:
        if c.get("overlap"):
            lines.append(f"- {Path(c['case']).name}: the region ({c['region']['description']}) reaches the training "
                         f"boxes of {', '.join(c['overlap'])}")
        if c.get("halves") == "f2f":
            lines.append(f"- {Path(c['case']).name}: the halves share their noise-free signal (clean_even = clean_odd, "
                         f"F2F): the estimate has no T2T bias")
        if "t2t" in c:
            t = c["t2t"]
            lines.append(f"- {Path(c['case']).name}: T2T signal difference ⟨δ²⟩ = {t['delta2_over_raw_mse']:.3%} of the "
                         f"raw map's MSE (raw's estimated error too high by {t['predicted_bias_db']:.2f} dB)")
    s = summary
    if "spearman" in s:
        lines.append(f"- Spearman (estimated vs true gain, {s['n_rows']} rows): {s['spearman']:.3f}")
    if "max_abs_error_db" in s:
        lines.append(f"- max |estimated − true|: {s['max_abs_error_db']:.2f} dB; interval covers the true gain in "
                     f"{s['covered']}/{s['n_intervals']} rows")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", nargs="+", action="append", default=[], metavar=("SIM_DIR", "RUN_DIR"),
                   help="a simulation folder and the denoise run folders made on it (repeat per seed)")
    p.add_argument("--merge", nargs="+", default=[], metavar="IN.json",
                   help="add the cases of earlier --json outputs (e.g. one per seed) to the table and the summary")
    p.add_argument("--n-bootstrap", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tile", type=int, default=None)
    p.add_argument("--holdout", metavar="AXIS:START:STOP",
                   help="score this slab instead of the runs' shared held-out one (e.g. inside their training boxes)")
    p.add_argument("--json", metavar="OUT.json", help="write the cases and the summary here")
    args = p.parse_args(argv)
    if not args.case and not args.merge:
        p.error("give at least one --case or --merge")
    cases = [c for path in args.merge for c in json.loads(Path(path).read_text())["cases"]]
    for sim, *runs in args.case:
        cases.append(score_case(Path(sim), [Path(r) for r in runs], args.n_bootstrap, args.seed, args.device, args.tile,
                                args.holdout))
    summary = summarise(cases)
    print(markdown(cases, summary))
    if args.json:
        from cryorestore import io

        io.write_text(args.json, json.dumps({"cases": cases, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
