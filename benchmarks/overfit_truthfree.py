"""An overfitted restoration, fitted on the very region it is scored on: do the truth-free checks flag it?

The restoration is a linear filter whose Fourier gain is *fitted on the region itself*, from both halves,
the way an N2N network trained on the region fits ``g(even) ≈ odd`` and ``g(odd) ≈ even``:

    K = smooth_b(2 Re(E·conj O)) / smooth_b(|E|² + |O|²)

(``E``, ``O`` the region box's Fourier transforms, ``smooth_b`` a mean over cubes of ``b``³ neighbouring
Fourier coefficients), and ``g(e) = F⁻¹(K·E)``, ``g(o) = F⁻¹(K·O)``. ``K`` minimises
``Σ_cube |K E − O|² + |K O − E|²``: the N2N loss of a filter with one free gain per cube, about
``N / b³`` parameters for ``N`` voxels. ``b = 1`` memorises (a gain per coefficient, fitted to the other
half's noise); large ``b`` is a smooth Wiener-like filter whose fit to the noise is negligible. In between
is the optimism a network trained on the region would have, by degrees of freedom.

For each ``b`` (``--cubes``), on the region: the estimated gain with its interval, the true gain against
``clean.mrc``, and the flags of :func:`cryorestore.evaluate.truthfree.score_maps` — so the table says how
much optimism the checks let through (``benchmarks/RESULTS.md``, "Truth-free score: F2F validation").

    python benchmarks/overfit_truthfree.py SIM_DIR --holdout y:224:256 --cubes 1 2 3 4 6 8 --json out.json

``--unet STEPS…`` instead trains a large U-Net (``--base-channels``, default 16: 0.6 M parameters) by
Noise2Noise on a tiny box of the halves (``--crop``, default 16³) with nothing held out, and scores it on
that box after each step count: a network that memorises the other half's noise.

    python benchmarks/overfit_truthfree.py TOY_SIM --unet 5 10 20 40 80 160 --json unet.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage


def fitted_filter_halves(even: np.ndarray, odd: np.ndarray, cube: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(g(even), g(odd), K)``: the filter with gain ``K`` fitted on these (z, y, x) half maps themselves,
    one gain per ``cube``³ Fourier coefficients (module doc); float64."""
    e, o = np.asarray(even, dtype=np.float64), np.asarray(odd, dtype=np.float64)
    fe, fo = np.fft.fftn(e), np.fft.fftn(o)
    num = 2.0 * np.real(fe * np.conj(fo))
    den = np.abs(fe) ** 2 + np.abs(fo) ** 2
    if cube > 1:  # wrap: the Fourier grid is periodic
        num = ndimage.uniform_filter(num, size=cube, mode="wrap")
        den = ndimage.uniform_filter(den, size=cube, mode="wrap")
    k = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.real(np.fft.ifftn(k * fe)), np.real(np.fft.ifftn(k * fo)), k


def run(sim: Path, holdout: str, cubes: list[int], n_boot: int = 2000, seed: int = 0) -> dict:
    from cryorestore import io
    from cryorestore.evaluate import truthfree as tf

    even, odd, clean = (io.read_mrc(sim / f"{n}.mrc") for n in ("even", "odd", "clean"))
    io.check_same_grid(even, odd, "even", "odd")
    io.check_same_grid(even, clean, "even", "clean")
    region = tf.parse_holdout(holdout, even.shape)
    sl = region.slices
    e, o, c = (np.asarray(v.data[sl], dtype=np.float64) for v in (even, odd, clean))
    outer, inner = tf.expanded_box(region, even.shape, tf.FILTER_MARGIN)
    eo, oo = (np.asarray(v.data[outer], dtype=np.float64) for v in (even, odd))
    maps = {"gaussian": tf.gaussian_halves(eo, oo, inner)[0], "wiener": tf.wiener_halves(eo, oo, inner)[0]}
    for b in cubes:
        ge, go, _ = fitted_filter_halves(e, o, b)
        maps[f"fit_b{b}"] = tf.HalfMaps(ge, go, f"linear filter, one Fourier gain per {b}^3 coefficients, fitted on "
                                                f"the region from both halves")
    res = tf.score_maps(e, o, maps, region, clean=c, n_boot=n_boot, seed=seed)
    rows = []
    n = region.n_voxels
    for name, r in res.rows.items():
        b = None if name in ("raw", "gaussian", "wiener") else int(name.split("_b")[1])
        rows.append({"map": name, "cube": b, "n_params": None if b is None else round(n / b ** 3),
                     "est": r.gain_db, "ci": list(r.gain_ci), "true": r.true.get("true_gain_db"),
                     "mse_est": r.mse_est, "true_mse": r.true.get("true_mse"), "leak_excess": r.leak_excess,
                     "hallucinated_power": r.hallucinated_power, "removed_corr_max": r.removed_corr_max,
                     "flags": r.flags})
    return {"sim": str(sim), "region": region.to_dict(), "rows": rows}


def unet_memorise(sim: Path, crop: tuple[slice, slice, slice], base: int, checkpoints: list[int], lr: float = 1e-3,
                  n_boot: int = 500, seed: int = 0) -> dict:
    """A large U-Net (:func:`cryorestore.models.build_model`, ``unet``, depth 2, ``base`` channels) trained by
    Noise2Noise on a tiny crop of the halves with no held-out part (whole-crop steps, even→odd and
    odd→even, Adam at ``lr``), scored on that same crop after each step count in ``checkpoints``."""
    import torch

    from cryorestore import io
    from cryorestore.evaluate import truthfree as tf
    from cryorestore.models import build_model, count_parameters

    torch.manual_seed(seed)
    e, o, c = (np.asarray(io.read_mrc(sim / f"{n}.mrc").data[crop], dtype=np.float64) for n in ("even", "odd", "clean"))
    mean, scale = (e + o).mean() / 2, (e - o).std() / np.sqrt(2)
    t_e, t_o = (torch.from_numpy(((v - mean) / scale).astype(np.float32))[None, None] for v in (e, o))
    net = build_model("unet", base_channels=base, depth=2)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x, y = torch.cat([t_e, t_o]), torch.cat([t_o, t_e])
    floor = float(((t_e - t_o) ** 2).mean()) / 2  # the loss of a map that knows neither half's noise, about
    region = tf.Region(tuple((0, n) for n in e.shape), None, "the whole crop the network was trained on")
    rows, step = [], 0
    for stop in sorted(checkpoints):
        while step < stop:
            opt.zero_grad()
            loss = ((net(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            step += 1
        with torch.no_grad():
            ge, go = (net(v)[0, 0].double().numpy() * scale + mean for v in (t_e, t_o))
        res = tf.score_maps(e, o, {"unet": tf.HalfMaps(ge, go, f"U-Net after {step} steps")}, region, clean=c,
                            n_boot=n_boot, seed=seed)
        r = res.rows["unet"]
        rows.append({"steps": step, "loss_over_noise": float(loss.item()) / floor, "est": r.gain_db,
                     "ci": list(r.gain_ci), "true": r.true.get("true_gain_db"), "leak_excess": r.leak_excess,
                     "removed_corr_max": r.removed_corr_max, "flags": r.flags})
        print(f"steps {step}: loss/noise {rows[-1]['loss_over_noise']:.3f}, est {r.gain_db}, "
              f"true {rows[-1]['true']:+.2f}, flags {r.flags or 'ok'}", flush=True)
    return {"sim": str(sim), "crop": [[s.start, s.stop] for s in crop], "base_channels": base,
            "n_params": count_parameters(net), "lr": lr, "rows": rows}


def markdown(doc: dict) -> str:
    def f(v):
        return "inf (est. error ≤ 0)" if v is None else f"{v:+.2f}"

    lines = ["| map | free gains | est. gain dB | 95% interval | true gain dB (clean) | est − true dB | "
             "cross-FSC excess | removed corr. max | flags |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in doc["rows"]:
        diff = None if r["est"] is None or r["true"] is None else r["est"] - r["true"]
        lines.append(f"| {r['map']} | {r['n_params'] or ''} | {f(r['est'])} | [{f(r['ci'][0])}, {f(r['ci'][1])}] | "
                     f"{f(r['true'])} | {'' if diff is None else format(diff, '+.2f')} | {r['leak_excess']:+.3f} | "
                     f"{'' if r['removed_corr_max'] is None else format(r['removed_corr_max'], '.3f')} | "
                     f"{', '.join(r['flags']) or 'ok'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sim", type=Path, help="simulation folder with even.mrc, odd.mrc, clean.mrc")
    p.add_argument("--holdout", metavar="AXIS:START:STOP", help="the region the filter is fitted and scored on")
    p.add_argument("--cubes", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8],
                   help="edges b of the Fourier cubes that share one gain (default 1 2 3 4 6 8)")
    p.add_argument("--n-bootstrap", type=int, default=2000)
    p.add_argument("--unet", type=int, nargs="+", metavar="STEPS",
                   help="instead: train a large U-Net by N2N on the --crop box itself and score it there after each "
                        "of these step counts")
    p.add_argument("--crop", nargs=3, default=["4:20", "8:24", "8:24"], metavar=("Z0:Z1", "Y0:Y1", "X0:X1"),
                   help="--unet: the tiny box (voxels, stop exclusive; default 4:20 8:24 8:24)")
    p.add_argument("--base-channels", type=int, default=16, help="--unet: the U-Net's width (default 16)")
    p.add_argument("--json", metavar="OUT.json")
    args = p.parse_args(argv)
    if args.unet:
        crop = tuple(slice(*(int(v) for v in s.split(":"))) for s in args.crop)
        doc = unet_memorise(args.sim, crop, args.base_channels, args.unet, n_boot=args.n_bootstrap)
    else:
        if not args.holdout:
            p.error("give --holdout AXIS:START:STOP (or --unet STEPS)")
        doc = run(args.sim, args.holdout, args.cubes, args.n_bootstrap)
        print(markdown(doc))
    if args.json:
        from cryorestore import io

        io.write_text(args.json, json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
