"""Training boxes kept in host memory, moved to the training device one batch at a time.

The boxes of a run (N, C, E, E, E) float32 — e.g. 200 DeepDeWedge boxes of 114³ voxels with two
half sets are 4.7 GB, and their refilled copies as much again — stay in host RAM; the device only
holds the current batch. On CUDA each batch is gathered into a freshly allocated page-locked
(pinned) buffer and copied asynchronously; PyTorch's pinned-memory allocator keeps that buffer
alive until the copy has finished, so only one batch (not the whole set) is ever pinned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class HostBoxes:
    """(N, C, E, E, E) float32 boxes in host memory; :meth:`batch` returns rows on ``device``."""

    def __init__(self, boxes: np.ndarray | torch.Tensor, device: torch.device) -> None:
        t = torch.from_numpy(np.ascontiguousarray(boxes)) if isinstance(boxes, np.ndarray) else boxes
        self.data = t.detach().to("cpu", torch.float32).contiguous()
        self.device = torch.device(device)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def clone(self) -> "HostBoxes":
        return HostBoxes(self.data.clone(), self.device)

    def batch(self, sel: torch.Tensor) -> torch.Tensor:
        """Rows ``sel`` (a CPU index tensor) as one (B, C, E, E, E) tensor on the device."""
        sel = sel.to("cpu")
        if self.device.type != "cuda":
            return self.data[sel]
        buf = torch.empty((len(sel), *self.data.shape[1:]), dtype=self.data.dtype, pin_memory=True)
        torch.index_select(self.data, 0, sel, out=buf)
        return buf.to(self.device, non_blocking=True)


REFILLED_PREFIX = "refilled-"


def refilled_name(epoch: int) -> str:
    """File name of the refilled boxes made at the end of 0-based ``epoch`` (inside the model directory)."""
    return f"{REFILLED_PREFIX}e{epoch + 1:04d}.pt"


def remove_stale_refills(directory: Path, keep: str | None | set[str | None]) -> None:
    """Delete the refilled-box files in ``directory`` other than ``keep`` (those the checkpoints name)."""
    keep_set = keep if isinstance(keep, set) else {keep}
    for f in Path(directory).glob(f"{REFILLED_PREFIX}e*.pt"):
        if f.name not in keep_set:
            f.unlink(missing_ok=True)
