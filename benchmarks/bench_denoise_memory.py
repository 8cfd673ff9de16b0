"""Peak host memory of the whole ``cryorestore denoise`` (then ``baseline`` and ``evaluate``) on a large even/odd pair.

Writes an even/odd pair (a smooth pattern plus independent Gaussian noise, float32, slab by slab,
never held whole) and the raw mean of the two, then runs, each in a child process whose peak resident
set size is its own ``VmHWM`` (which counts the memory-mapped input pages that were read; ``ru_maxrss``
from ``os.wait4`` would also carry this process's resident set at the fork):

* ``denoise --preset quick --max-steps 50`` (training, prediction with the preset's test-time
  augmentation and default combination, the metrics and the Gaussian row);
* ``baseline --even --odd`` (Gaussian and Wiener maps);
* ``evaluate --raw --restored --baselines --tilt-range -60 60``.

Inside each child the stages (training, prediction, writing, metrics, Gaussian row, ...) are timed
by wrapping the command's own functions; each stage line gives its wall time and the process's peak
RSS so far. The figure to meet: peak RSS at most 2.5 GiB for a 256×1024×1024 pair (1 GiB per map),
the default ``--bound-mib`` (2560). At reduced sizes the fixed part dominates (about 350 MiB for
importing torch, scipy and the package, plus working buffers of fixed size: slabs of 2²² voxels, FSC
crops of at most 256³, training boxes), so compare the old and new peaks there rather than ratios.

    python benchmarks/bench_denoise_memory.py --shape 64 512 512                       # the new code only
    python benchmarks/bench_denoise_memory.py --shape 64 512 512 --compare-pythonpath /work/wt/benchfreeze/python
    python benchmarks/bench_denoise_memory.py                                          # 256x1024x1024 (slow)
    python benchmarks/bench_denoise_memory.py --zarr                                   # OME-Zarr inputs too

``--zarr`` writes the pair as OME-Zarr pyramids as well (``volume_io.write_ome_zarr``) and runs the commands
on them too; ``--formats`` picks which inputs run. Sizes in voxels; memory in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict_memory import proc_status_mib  # noqa: E402

REPO_PYTHON = Path(__file__).resolve().parents[1] / "python"
MIB = 1 << 20
COMMANDS = ("denoise", "baseline", "evaluate")

# (module, attribute, stage label): the functions whose calls are timed inside the child when present
STAGES = (
    ("cryorestore.cli.cmd_denoise", "run_training", "train"),
    ("cryorestore.predict", "restore", "predict+combine"),
    ("cryorestore.predict", "predict_volume", "  network over one map"),
    ("cryorestore.blockwise", "copy_slabs", "  copy to scratch"),
    ("cryorestore.blockwise", "gaussian_inplace", "  low-pass in place"),
    ("cryorestore.ensemble", "half_fsc_lowpass", "combine lowpass"),
    ("cryorestore.io", "write_mrc", "write mrc"),
    ("cryorestore.blockwise", "write_mrc_slabs", "write mrc (slabs)"),
    ("cryorestore.evaluate.quality", "map_metrics", "map_metrics"),
    ("cryorestore.evaluate.bounded", "map_metrics", "map_metrics (bounded)"),
    ("cryorestore.evaluate.quality", "map_curves", "map_curves"),
    ("cryorestore.evaluate.bounded", "map_curves", "map_curves (bounded)"),
    ("cryorestore.cli.cmd_denoise", "gaussian_baseline_map", "gaussian row"),
    ("cryorestore.cli.cmd_denoise", "truthfree_block", "truth-free score + uncertainty"),
    ("cryorestore.evaluate.truthfree", "run_score", "truth-free score"),
    ("cryorestore.blockwise", "open_map", "open map"),
    ("cryorestore.volume_io", "write_ome_zarr", "write zarr"),
    ("cryorestore.baseline", "gaussian_baseline", "gaussian baseline"),
    ("cryorestore.baseline", "wiener_baseline", "wiener baseline"),
    ("cryorestore.plots", "orthoslices", "orthoslices"),
    ("cryorestore.plots", "fourier_slices", "fourier slices"),
)


def write_pair(work: Path, shape: tuple[int, int, int], seed: int = 0, voxel_size: float = 10.0) -> dict[str, Path]:
    """even.mrc, odd.mrc (a broadband signal plus independent unit noise) and raw.mrc (their mean), written
    slab by slab. The signal is a coarse random grid (one value per 4³ voxels, amplitude 2) smoothed
    in-plane (Gaussian, 1.5 voxels), so the half maps' FSC falls from near 1 to near 0 across the shells."""
    import mrcfile
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    coarse = rng.standard_normal((-(-nz // 4), -(-ny // 4), -(-nx // 4))).astype(np.float32) * 2.0
    paths = {n: work / f"{n}.mrc" for n in ("even", "odd", "raw")}
    files = {n: mrcfile.new_mmap(p, shape=shape, mrc_mode=2, overwrite=True) for n, p in paths.items()}
    try:
        for z in range(nz):
            plane = np.repeat(np.repeat(coarse[z // 4], 4, axis=0), 4, axis=1)[:ny, :nx]
            signal = ndimage.gaussian_filter(plane, 1.5)
            e = signal + rng.standard_normal((ny, nx), dtype=np.float32)
            o = signal + rng.standard_normal((ny, nx), dtype=np.float32)
            files["even"].data[z], files["odd"].data[z], files["raw"].data[z] = e, o, 0.5 * (e + o)
        for f in files.values():
            f.voxel_size = voxel_size
    finally:
        for f in files.values():
            f.close()
    return paths


def write_zarr_pair(paths: dict[str, Path]) -> dict[str, Path]:
    """The pair (and raw) as OME-Zarr pyramids beside the MRC files (:func:`cryorestore.volume_io.write_ome_zarr`,
    which reads the memory-mapped MRC in blocks); existing stores are reused."""
    import mrcfile

    from cryorestore import volume_io

    out = {}
    for name, p in paths.items():
        dest = p.with_suffix(".zarr")
        if not (dest / ".zattrs").is_file():
            with mrcfile.mmap(p, mode="r") as m:
                volume_io.write_ome_zarr(dest, m.data, float(m.voxel_size.x))
        out[name] = dest
    return out


def command_args(name: str, inputs: dict[str, Path], work: Path, tag: str, max_steps: int,
                 denoise_extra: list[str] | None = None) -> list[str]:
    """The command line of ``name`` on ``inputs`` (outputs under ``work/tag``)."""
    out = work / tag
    if name == "denoise":
        return ["denoise", "--even", str(inputs["even"]), "--odd", str(inputs["odd"]), "--out-dir", str(out / "denoise"),
                "--preset", "quick", "--max-steps", str(max_steps), "--no-progress", "--device", "cpu",
                *(denoise_extra or [])]
    if name == "baseline":
        return ["baseline", "--even", str(inputs["even"]), "--odd", str(inputs["odd"]), "--out-dir", str(out / "baseline")]
    # the restored map and baselines of this run, else of any earlier run in ``work`` (else the raw map alone)
    restored = [p for p in [out / "denoise" / "restored.mrc", *sorted(work.glob("*/denoise/restored.mrc"))] if p.is_file()]
    bases = [p for p in [out / "baseline", *sorted(work.glob("*/baseline"))] if (p / "wiener.mrc").is_file()]
    models = [p for p in [out / "denoise" / "model", *sorted(work.glob("*/denoise/model"))] if (p / "config.json").is_file()]
    return (["evaluate", "--raw", str(inputs["raw"]), "--restored", str(restored[0] if restored else inputs["raw"])]
            + (["--baselines", str(bases[0])] if bases else [])
            + (["--even", str(inputs["even"]), "--odd", str(inputs["odd"]), "--model", str(models[0])] if models else [])
            + ["--tilt-range", "-60", "60", "--out", str(out / "evaluate" / "metrics.json")])


def run_child(pythonpath: Path, cli_args: list[str], report: Path) -> dict:
    """Run this script's ``--child`` mode under ``pythonpath``; its peak RSS (the child's VmHWM), exit status
    and stages."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(report), "--", *cli_args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    info = json.loads(report.read_text()) if report.is_file() else {}
    # the child's own VmHWM: wait4's ru_maxrss also carries this process's resident set at the fork
    info.update(returncode=os.waitstatus_to_exitcode(status),
                peak_rss_mib=info.get("vm_hwm_mib") or usage.ru_maxrss / 1024.0,
                process_wall_s=time.perf_counter() - t0)
    return info


def _rss_now_mib() -> float:
    now = proc_status_mib("VmRSS")
    return float("nan") if now is None else now


def child_main(report: Path, cli_args: list[str]) -> int:
    """Run one cryorestore command in this process with its stages timed; write the stages to ``report``."""
    import functools
    import importlib

    stages: list[dict] = []
    for mod_name, attr, label in STAGES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        fn = getattr(mod, attr, None)
        if fn is None:
            continue

        def wrapped(*a, _fn=fn, _label=label, **k):
            t0 = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                stages.append({"stage": _label, "seconds": time.perf_counter() - t0,
                               "peak_rss_so_far_mib": proc_status_mib("VmHWM")
                               or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                               "rss_now_mib": _rss_now_mib()})

        setattr(mod, attr, functools.wraps(fn)(wrapped))
    from cryorestore.cli import main as cli_main

    t0 = time.perf_counter()
    code = cli_main(cli_args)
    report.write_text(json.dumps({"command_wall_s": time.perf_counter() - t0, "exit": code, "stages": stages,
                                  "vm_hwm_mib": proc_status_mib("VmHWM")}))
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return child_main(Path(argv[1]), argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 1024, 1024), metavar=("Z", "Y", "X"))
    parser.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    parser.add_argument("--max-steps", type=int, default=50)
    parser.add_argument("--denoise-args", default="",
                        help="extra denoise options, e.g. '--n-subtomos 24' for a short training on a loaded machine "
                             "(the training stage's memory then is not the preset's)")
    parser.add_argument("--zarr", action="store_true", help="also run on OME-Zarr copies of the pair")
    parser.add_argument("--formats", nargs="+", choices=("mrc", "zarr"), default=None,
                        help="input formats to run (default: mrc, and zarr with --zarr)")
    parser.add_argument("--compare-pythonpath", type=Path, default=None,
                        help="also run another checkout's package (its python/ folder) on the same inputs")
    parser.add_argument("--skip-new", action="store_true", help="run only the --compare-pythonpath checkout")
    parser.add_argument("--bound-mib", type=float, default=2560.0, help="peak RSS to meet (default: 2560 MiB, the issue's)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the maps and outputs go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the children")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    shape = tuple(int(s) for s in args.shape)
    map_mib = 4.0 * float(np.prod(shape)) / MIB
    bound = float(args.bound_mib)
    result: dict = {"shape": list(shape), "map_mib": map_mib, "pair_mib": 2 * map_mib, "bound_mib": bound, "runs": {}}
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench_denoise_memory_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        have = all((work / f"{n}.mrc").is_file() for n in ("even", "odd", "raw")) and args.workdir is not None
        inputs = {"mrc": {n: work / f"{n}.mrc" for n in ("even", "odd", "raw")} if have else write_pair(work, shape)}
        print(f"pair {shape} float32 ({map_mib:.0f} MiB per map) {'reused' if have else 'written'} in {time.perf_counter() - t0:.1f} s", flush=True)
        if args.zarr:
            sys.path.insert(0, str(REPO_PYTHON))
            t0 = time.perf_counter()
            inputs["zarr"] = write_zarr_pair(inputs["mrc"])
            print(f"OME-Zarr copies ready in {time.perf_counter() - t0:.1f} s", flush=True)
        for fmt, paths in inputs.items():
            if args.formats and fmt not in args.formats:
                continue
            for code_name, pypath in (("new", REPO_PYTHON), ("old", args.compare_pythonpath)):
                if pypath is None or (code_name == "new" and args.skip_new):
                    continue
                for cmd in args.commands:
                    tag = f"{fmt}_{code_name}"
                    info = run_child(Path(pypath), command_args(cmd, paths, work, tag, args.max_steps,
                                                                args.denoise_args.split()),
                                     work / f"report_{tag}_{cmd}.json")
                    info["peak_rss_over_pair"] = info["peak_rss_mib"] / (2 * map_mib)
                    result["runs"][f"{tag}_{cmd}"] = info
                    print(f"{fmt} {code_name:>3} {cmd:<8}: exit {info['returncode']}, peak RSS {info['peak_rss_mib']:.0f} MiB "
                          f"({info['peak_rss_over_pair']:.2f}x the pair), wall {info['process_wall_s']:.1f} s", flush=True)
                    for st in info.get("stages", []):
                        print(f"    {st['stage']:<24} {st['seconds']:8.1f} s   peak so far {st['peak_rss_so_far_mib']:7.0f} MiB"
                              f"   now {st.get('rss_now_mib', float('nan')):7.0f} MiB",
                              flush=True)
                    if info["returncode"] != 0:
                        ok = False
                    elif code_name == "new" and info["peak_rss_mib"] > bound:
                        print(f"    peak above the bound of {bound:.0f} MiB", flush=True)
                        ok = False
    result["ok"] = ok
    checked = any(k.split("_")[1] == "new" for k in result["runs"])
    print(f"bound {bound:.0f} MiB (pair {2 * map_mib:.0f} MiB): "
          + (("met" if ok else "NOT met") if checked else "not checked (no run of this checkout)"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
