"""Time training steps of a network in float32 and under bfloat16 autocast (CUDA events on a GPU).

One step = forward of a (B, 1, S, S, S) batch, L2 loss against a second batch, backward, AdamW
update: the work of ``cryorestore train`` per batch without data loading. Each precision gets
warm-up steps (excluded) and then timed steps (median ms and voxels per second), with the peak
device memory of its timed steps.

    python benchmarks/bench_train_step.py --device cuda --json step.json     # default U-Net, 8x64³
    python benchmarks/bench_train_step.py --device cpu --batch 2 --size 16 --steps 2 --net small   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

NETS = {"small": {"depth": 2, "base_channels": 4, "convs_per_block": 1}, "default": {}}


def time_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, warmup: int,
               steps: int) -> dict:
    """Median step time (ms) and peak memory (MiB, CUDA only) of ``steps`` optimiser steps after ``warmup``."""
    dev = x.device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        opt.zero_grad(set_to_none=True)
        with ctx:
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, loss = [], float("nan")
    for _ in range(steps):
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            loss = step()
            times.append(1e3 * (time.perf_counter() - t0))
    ms = statistics.median(times)
    return {"precision": precision, "ms_per_step": ms, "voxels_per_s": x.numel() / (ms / 1e3), "last_loss": loss,
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--net", choices=tuple(NETS), default="default", help="default U-Net or a small one")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="sub-tomogram edge (voxels)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_train_step: --device cuda asked for but no GPU is present", file=sys.stderr)
        return 2
    from cryorestore.models import build_model

    dev = torch.device(args.device)
    shape = (args.batch, 1, args.size, args.size, args.size)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(dev)
    y = (x + 0.5 * torch.randn(shape, generator=gen)).to(dev)
    rows = []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model("unet", **NETS[args.net]).to(dev).train()
        rows.append(time_steps(model, x, y, precision, args.warmup, args.steps))
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    info = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__,
            "net": args.net, "batch": list(shape), "steps": args.steps, "warmup": args.warmup,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "rows": rows}
    print(f"{info['device']} | torch {info['torch']} | U-Net ({args.net}) batch {tuple(shape)} | "
          f"median of {args.steps} steps after {args.warmup} warm-up | cudnn TF32 {info['cudnn_allow_tf32']}")
    for r in rows:
        peak = f"{r['peak_mib']:.0f} MiB" if r["peak_mib"] is not None else "-"
        print(f"{r['precision']:>5}: {r['ms_per_step']:9.2f} ms/step  {r['voxels_per_s'] / 1e6:9.2f} Mvox/s  peak {peak}")
    print(f"bf16 speed-up over fp32: {rows[0]['ms_per_step'] / rows[1]['ms_per_step']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
