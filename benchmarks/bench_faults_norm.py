"""Does a normalisation layer need synchronising across data-parallel ranks? Measured, per norm.

For each norm of the U-Net (instance, the default; group; batch) the same tiny network and the same
global batch of 8 random 16³ boxes give one gradient computed two ways: one process on the whole
batch, and 2 gloo ranks on CPU under DistributedDataParallel, each on its half (the trainer's
sharding and gradient weights). The table prints the largest gradient difference relative to the
largest gradient. A per-sample norm gives the same gradient up to float rounding (no sync needed);
BatchNorm without SyncBatchNorm (which PyTorch offers only on GPUs) normalises each half by its own
batch statistics and gives another gradient, which is why CPU ranks refuse BatchNorm layers
(:func:`cryorestore.distributed.wrap_model`).

    python benchmarks/bench_faults_norm.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from cryorestore import distributed
from cryorestore.models import build_model

NORMS = ("instance", "group", "batch")
OPTS = {"base_channels": 8, "depth": 2, "convs_per_block": 1}


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 16, 16, 16, generator=g)
    return x, x + 0.3 * torch.randn(8, 1, 16, 16, 16, generator=g)


def _net(norm: str) -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("unet", norm=norm, **OPTS)


def _grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _rank(norm: str, out: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel

    ctx, dev = distributed.setup(torch.device("cpu"))
    model = _net(norm)
    ddp = DistributedDataParallel(model)  # as wrap_model would on a GPU, without SyncBatchNorm
    x, y = _batch()
    part = distributed.share(len(x), ctx)
    loss = torch.nn.functional.mse_loss(ddp(x[part]), y[part])
    (loss * distributed.grad_weight(part.stop - part.start, len(x), ctx)).backward()
    if ctx.is_main:
        torch.save(_grads(model), out / f"{norm}.pt")
    distributed.teardown(ctx)


def main() -> int:
    print(f"{'norm':<10} {'max |g2 - g1| / max |g1|':>26}")
    with tempfile.TemporaryDirectory() as tmp:
        for norm in NORMS:
            model = _net(norm)
            x, y = _batch()
            torch.nn.functional.mse_loss(model(x), y).backward()
            one = _grads(model)
            assert distributed.launch(2, torch.device("cpu"), _rank, norm, Path(tmp)) == 0
            two = torch.load(Path(tmp) / f"{norm}.pt")
            print(f"{norm:<10} {float((two - one).abs().max() / one.abs().max()):>26.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
