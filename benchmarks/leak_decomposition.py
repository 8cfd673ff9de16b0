"""Where a run's truth-free estimate goes wrong on a simulated region: the noise it learnt, or the halves' signal difference?

With the simulator's noise-free half reconstructions ``clean_even``/``clean_odd`` (``c_e``, ``c_o``) the
half maps' noises are known, ``n_e = even − c_e`` and ``n_o = odd − c_o``. For the run's network on each
half alone (:func:`cryorestore.evaluate.truthfree.model_halves`) and for a Gaussian (sigma 1.5 voxels)
as the reference that learnt nothing, on the region (mean over voxels):

* ``est``: the estimated error ``(A + B)/2 − D/2 − C/4`` and ``true``: the error of ``(g(e) + g(o))/2``
  against ``clean.mrc``;
* ``leak``: ``−(⟨g(e), n_o⟩ + ⟨g(o), n_e⟩)``, the part of ``est − true`` that comes from a map of one half
  knowing the other half's noise (memorisation): about 0 for a map that never saw it;
* ``delta2``: ``⟨δ²⟩``, ``δ = (c_e − c_o)/2``: with T2T halves every map's estimate is low by up to this.

    python benchmarks/leak_decomposition.py SIM_DIR RUN_DIR --holdout y:160:192
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage


def decompose(e, o, ce, co, clean, ge, go) -> dict[str, float]:
    """The figures of the module doc for one map (``ge``, ``go``) on region arrays (float64)."""
    a, b = np.mean((ge - o) ** 2), np.mean((go - e) ** 2)
    c, d = np.mean((ge - go) ** 2), np.mean((e - o) ** 2)
    est = (a + b) / 2 - d / 2 - c / 4
    true = np.mean(((ge + go) / 2 - clean) ** 2)
    leak = -(np.mean(ge * (o - co)) + np.mean(go * (e - ce)))
    return {"est": float(est), "true": float(true), "est_minus_true": float(est - true), "leak": float(leak)}


def main(argv: list[str] | None = None) -> int:
    from cryorestore import io
    from cryorestore.evaluate import truthfree as tf
    from cryorestore.modeldir import load_model_dir
    from cryorestore.presets import inference_values

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sim", type=Path, help="simulation folder (even, odd, clean, clean_even, clean_odd)")
    p.add_argument("run", type=Path, help="denoise run folder with model/")
    p.add_argument("--holdout", required=True, metavar="AXIS:START:STOP")
    p.add_argument("--json", metavar="OUT.json")
    args = p.parse_args(argv)
    vol = {n: io.read_mrc(args.sim / f"{n}.mrc") for n in ("even", "odd", "clean", "clean_even", "clean_odd")}
    for n, v in vol.items():
        io.check_same_grid(vol["even"], v, "even", n)
    region = tf.parse_holdout(args.holdout, vol["even"].shape)
    m = load_model_dir(args.run / "model", "cpu")
    chosen = inference_values(m.config["preset"]) if m.config.get("preset") else {"tta": "none", "combine": "mean"}
    net, _ = tf.model_halves(m, vol["even"].data, vol["odd"].data, region, chosen["combine"], chosen["tta"])
    sl = region.slices
    e, o, clean, ce, co = (np.asarray(vol[n].data[sl], dtype=np.float64)
                           for n in ("even", "odd", "clean", "clean_even", "clean_odd"))
    gauss = [ndimage.gaussian_filter(np.asarray(vol[n].data, dtype=np.float64), 1.5)[sl] for n in ("even", "odd")]
    doc = {"sim": str(args.sim), "run": str(args.run), "region": region.to_dict(),
           "delta2": float(np.mean(((ce - co) / 2) ** 2)), "raw_true": float(np.mean(((e + o) / 2 - clean) ** 2)),
           "maps": {str(m.config["method"]): decompose(e, o, ce, co, clean, np.asarray(net.g_even, np.float64),
                                                       np.asarray(net.g_odd, np.float64)),
                    "gaussian_1.5": decompose(e, o, ce, co, clean, *gauss)}}
    print(f"{args.run.name} on {region.description}: <delta^2> {doc['delta2']:.4g}, raw true MSE {doc['raw_true']:.4g}")
    for k, r in doc["maps"].items():
        print(f"  {k:14s} est {r['est']:.4g}  true {r['true']:.4g}  est-true {r['est_minus_true']:+.4g}  "
              f"leak {r['leak']:+.4g}")
    if args.json:
        io.write_text(args.json, json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
