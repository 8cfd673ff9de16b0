"""Native (C++/CUDA) kernels with pure-torch fallbacks.

Until the extension is built, every entry point dispatches to its torch twin.
"""

from __future__ import annotations

from typing import Sequence

import torch


def fsc_shells(f1: torch.Tensor, f2: torch.Tensor, shells: torch.Tensor, n: int, nx: int | None = None) -> torch.Tensor:
    """Shell sums (B, 3, n) of rfft spectra; see :func:`cryorestore.fourier.fsc_shell_sums`."""
    from cryorestore.fourier import fsc_shell_sums

    return fsc_shell_sums(f1, f2, shells, n, nx=nx)


def blend_tiles(tiles: torch.Tensor, origins: torch.Tensor, window: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    """Overlap-add blending; see :func:`cryorestore.tiling.blend_tiles_torch`."""
    from cryorestore.tiling import blend_tiles_torch

    return blend_tiles_torch(tiles, origins, window, out_shape)
