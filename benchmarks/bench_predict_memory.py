"""Peak memory of ``cryorestore predict`` on one large map: host (peak RSS) and, on CUDA, device.

Builds a small model directory and a random float32 map (written slab by slab, never held whole),
runs ``cryorestore predict`` in a child process and reads the child's peak resident set size (its own
``VmHWM``, which counts memory-mapped input pages that were read; ``ru_maxrss`` from ``os.wait4`` would
also count this process's resident set at the fork). On CUDA
the child also reports ``torch.cuda.max_memory_allocated``. The figure to meet: peak host memory at
most 2.5× the input plus 1 GiB.

    python benchmarks/bench_predict_memory.py                                  # 160x1024x1024 (640 MiB), CPU
    python benchmarks/bench_predict_memory.py --compare-pythonpath OLD/python  # also the other checkout's peak + max diff
    python benchmarks/bench_predict_memory.py --shape 512 1024 1024 --device cuda --net default --tile 96 --json out.json
    python benchmarks/bench_predict_memory.py --shape 24 48 40 --tile 16       # a smoke test
    python benchmarks/bench_predict_memory.py --pair --shape 64 512 512        # even/odd, default combination + TTA

``--pair`` writes two different maps (even, odd) and predicts them with the default combination
(``--combine mean+lowpass``: the half maps' FSC over stated crops, the Gaussian low-pass in float32
chunks) and test-time augmentation (``--tta rot``); the bound then counts both inputs.

``--compare-pythonpath`` runs the same command with another checkout's package first on
``PYTHONPATH`` (e.g. a ``git worktree`` of an older commit) and reports its peak and the largest
difference between the two outputs. Sizes in voxels; memory in MiB. Wall times depend on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_PYTHON = Path(__file__).resolve().parents[1] / "python"
MIB = 1 << 20


NETS = {"tiny": ("msdnet", {"depth": 1, "max_dilation": 1, "checkpointing": False}),
        "small": ("unet", {"depth": 2, "base_channels": 4, "convs_per_block": 1}),
        "quick": ("unet", {"base_channels": 8, "convs_per_block": 1}),  # the quick preset's network
        "default": ("unet", {})}


def build_model_dir(path: Path, net: str, crop: int) -> Path:
    """A model directory with a randomly initialised network from :data:`NETS` (memory does not depend on it)."""
    import torch

    from cryorestore.data import Normalization
    from cryorestore.modeldir import save_model_dir
    from cryorestore.models import build_model

    torch.manual_seed(0)
    name, options = NETS[net]
    model = build_model(name, **options)
    cfg = {"method": "n2n", "model": name, "model_options": dict(model.options), "loss": "l2",
           "tilt_range": [-60.0, 60.0], "subtomo_size": int(crop)}
    return save_model_dir(path, model, cfg, Normalization(0.1, 1.3))


def write_random_map(path: Path, shape: tuple[int, int, int], voxel_size: float = 5.0, seed: int = 0,
                     noise_seed: int | None = None) -> Path:
    """A float32 (z, y, x) map of Gaussian noise, written slab by slab through a memory map; with
    ``noise_seed`` plus half as much independent noise (the second half map of a pair: FSC about 0.8)."""
    import mrcfile

    rng = np.random.default_rng(seed)
    extra = None if noise_seed is None else np.random.default_rng(noise_seed)
    with mrcfile.new_mmap(path, shape=shape, mrc_mode=2, overwrite=True) as mrc:
        for z in range(shape[0]):
            plane = rng.standard_normal(shape[1:], dtype=np.float32)
            if extra is not None:
                plane += 0.5 * extra.standard_normal(shape[1:], dtype=np.float32)
            mrc.data[z] = plane
        mrc.voxel_size = voxel_size
    return path


def proc_status_mib(field: str) -> float | None:
    """``VmHWM`` (the peak since this process's exec) or another memory field of /proc/self/status, MiB."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024.0


def run_child(pythonpath: Path, predict_args: list[str], report: Path) -> dict:
    """Run this script's ``--child`` mode under ``pythonpath``; return its peak RSS, exit status and report."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(report), "--", *predict_args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    info = json.loads(report.read_text()) if report.is_file() else {}
    # the child's own VmHWM: wait4's ru_maxrss also carries the resident set of this process (pytest's,
    # say) at the fork, which put a 12x20x18 map at 1029 MiB in CI
    info.update(returncode=proc.returncode, peak_rss_mib=info.get("vm_hwm_mib") or usage.ru_maxrss / 1024.0,
                process_wall_s=time.perf_counter() - t0)
    return info


def child_main(report: Path, predict_args: list[str]) -> int:
    """Run ``cryorestore predict`` in this process; write its wall time, CUDA peak memory and OOM retries.

    With ``$BENCH_LEAVE_FREE_MIB`` on CUDA, a buffer first takes all but that much free device
    memory, so that the out-of-memory fallback meets a real CUDA allocator failure.
    """
    import warnings

    import torch

    from cryorestore.cli import main as cli_main

    cuda = torch.cuda.is_available() and "cpu" not in predict_args
    blocker = None
    if cuda:
        leave = os.environ.get("BENCH_LEAVE_FREE_MIB")
        if leave:
            free, _ = torch.cuda.mem_get_info()
            blocker = torch.empty(max(0, free - int(leave) * MIB), dtype=torch.uint8, device="cuda")
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli_main(["predict", *predict_args])
    if cuda:
        torch.cuda.synchronize()
    retries = [str(w.message) for w in caught if "out of memory" in str(w.message)]
    for line in retries:
        print(f"warning: {line}", file=sys.stderr)
    info = {"predict_wall_s": time.perf_counter() - t0, "exit": code, "oom_retries": retries,
            "blocked_mib": blocker.numel() / MIB if blocker is not None else 0.0,
            "cuda_peak_allocated_mib": torch.cuda.max_memory_allocated() / MIB if cuda else None,
            "cuda_peak_reserved_mib": torch.cuda.max_memory_reserved() / MIB if cuda else None,
            "device_name": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "vm_hwm_mib": proc_status_mib("VmHWM")}
    report.write_text(json.dumps(info))
    return code


def max_difference(a: Path, b: Path, slab: int = 16) -> tuple[float, float]:
    """(max |a − b|, max |b|) over two maps of one shape, read slab by slab."""
    import mrcfile

    with mrcfile.mmap(a, mode="r") as ma, mrcfile.mmap(b, mode="r") as mb:
        if ma.data.shape != mb.data.shape:
            raise SystemExit(f"outputs differ in shape: {ma.data.shape} vs {mb.data.shape}")
        diff = scale = 0.0
        for z in range(0, ma.data.shape[0], slab):
            x, y = np.asarray(ma.data[z:z + slab], np.float64), np.asarray(mb.data[z:z + slab], np.float64)
            diff = max(diff, float(np.abs(x - y).max()))
            scale = max(scale, float(np.abs(y).max()))
    return diff, scale


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return child_main(Path(argv[1]), argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 1024, 1024), metavar=("Z", "Y", "X"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--net", choices=tuple(NETS), default="tiny",
                        help="tiny: a one-layer MS-D net (CPU memory runs); small: U-Net depth 2, 4 channels, "
                             "1 conv per block; default: the default U-Net (GPU timing)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=None, help="default: tile/4")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--two-inputs", action="store_true", help="predict even and odd (the same map twice)")
    parser.add_argument("--pair", action="store_true",
                        help="an even/odd pair of different maps, with --combine mean+lowpass and --tta rot")
    parser.add_argument("--inputs", type=str, nargs=2, default=None, metavar=("EVEN", "ODD"),
                        help="predict this existing even/odd pair (MRC files or OME-Zarr stores) instead of writing "
                             "one; implies --pair")
    parser.add_argument("--compare-pythonpath", type=Path, default=None,
                        help="also run another checkout's package (its python/ folder) on the same input")
    parser.add_argument("--workdir", type=Path, default=None, help="where the map, model and outputs go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the children")
    parser.add_argument("--leave-free-mib", type=int, default=None,
                        help="CUDA: first take all free device memory but this much (tests the out-of-memory fallback)")
    parser.add_argument("--fixed-mib", type=float, default=1024.0,
                        help="the bound's fixed part, for the interpreter, torch and the model (default: 1024 MiB, "
                             "the issue's 1 GiB); a CUDA build of torch alone can take about 1 GiB on the CPU side")
    parser.add_argument("--expect-exit", type=int, default=0,
                        help="exit status the streaming run must give (75: one tile does not fit)")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.leave_free_mib is not None:
        os.environ["BENCH_LEAVE_FREE_MIB"] = str(args.leave_free_mib)
    shape = tuple(int(s) for s in args.shape)
    with tempfile.TemporaryDirectory(prefix="bench_predict_memory_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = build_model_dir(work / "model", args.net, crop=max(8, args.tile // 2))
        t0 = time.perf_counter()
        if args.inputs:
            sys.path.insert(0, str(REPO_PYTHON))
            from cryorestore import volume_io

            args.pair, vol, args.odd_map = True, args.inputs[0], args.inputs[1]
            shape = tuple(int(s) for s in volume_io.volume_header(vol)[0])
        else:
            vol = write_random_map(work / "input.mrc", shape)
        if args.pair and not args.inputs:
            args.odd_map = write_random_map(work / "odd.mrc", shape, seed=0, noise_seed=1)
        print(f"input {shape} float32 written in {time.perf_counter() - t0:.1f} s", flush=True)
        input_mib = 4.0 * float(np.prod(shape)) / MIB * (2 if args.two_inputs or args.pair else 1)  # both inputs count
        bound_mib = 2.5 * input_mib + float(args.fixed_mib)
        result: dict = {"shape": list(shape), "input_mib": input_mib, "fixed_mib": float(args.fixed_mib),
                        "bound_mib": bound_mib, "device": args.device,
                        "net": args.net, "tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size,
                        "two_inputs": args.two_inputs, "pair": args.pair, "leave_free_mib": args.leave_free_mib, "runs": {}}
        ok = run_all(args, work, model, vol, input_mib, bound_mib, result)
        result["ok"] = ok
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


def run_all(args: argparse.Namespace, work: Path, model: Path, vol: Path, input_mib: float, bound_mib: float,
            result: dict) -> bool:
    """Run the streaming (and compared) predictions, fill ``result``; True when every expectation holds."""
    runs = result["runs"]
    for name, pypath in (("streaming", REPO_PYTHON), ("compared", args.compare_pythonpath)):
        if pypath is None:
            continue
        out = work / f"out_{name}.mrc"
        pargs = [str(model), "--even", str(vol), "--out", str(out), "--tile", str(args.tile),
                 "--batch-size", str(args.batch_size), "--device", args.device, "--no-progress"]
        if args.two_inputs:
            pargs += ["--odd", str(vol)]
        if args.pair:
            pargs += ["--odd", str(args.odd_map), "--tta", "rot", "--combine", "mean+lowpass"]
        if args.overlap is not None:
            pargs += ["--overlap", str(args.overlap)]
        info = run_child(Path(pypath), pargs, work / f"report_{name}.json")
        info["peak_rss_over_input"] = info["peak_rss_mib"] / input_mib
        info["output_written"] = out.is_file()
        runs[name] = info
        print(f"{name:>9} ({pypath}): exit {info['returncode']}, peak RSS {info['peak_rss_mib']:.0f} MiB "
              f"({info['peak_rss_over_input']:.2f}x the input), wall {info['process_wall_s']:.1f} s"
              + (f", CUDA peak allocated {info['cuda_peak_allocated_mib']:.0f} MiB"
                 if info.get("cuda_peak_allocated_mib") is not None else "")
              + (f", {len(info['oom_retries'])} out-of-memory retries" if info.get("oom_retries") else ""), flush=True)
        want = args.expect_exit if name == "streaming" else 0
        if info["returncode"] != want:
            print(f"{name}: cryorestore predict exited {info['returncode']}, expected {want}", file=sys.stderr)
            return False
    if args.expect_exit != 0:
        written = runs["streaming"]["output_written"]
        print(f"exit {args.expect_exit} as expected; output {'WRITTEN (wrong)' if written else 'not written'}")
        return not written
    if "compared" in runs:
        diff, scale = max_difference(work / "out_streaming.mrc", work / "out_compared.mrc")
        result.update(max_abs_diff=diff, max_abs_value=scale)
        print(f"max |streaming - compared| = {diff:.3g} (max |value| {scale:.3g})")
    ok = bool(runs["streaming"]["peak_rss_mib"] <= bound_mib)
    result["within_bound"] = ok
    print(f"input {input_mib:.0f} MiB; bound 2.5x input + {args.fixed_mib:.0f} MiB = {bound_mib:.0f} MiB: "
          f"{'met' if ok else 'NOT met'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
