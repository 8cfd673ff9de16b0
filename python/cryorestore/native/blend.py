"""Overlap-add blending of predicted tiles: the torch twin and the kernel.

``out = Σ window·tile / Σ window`` over the tiles covering each voxel (0 where none does), tiles
(T, d, h, w) placed at origins (T, 3) (z, y, x) voxels. :mod:`cryorestore.tiling` places the tiles,
makes the window and re-exports the twin.

================================  ==================================================
native                            torch twin
================================  ==================================================
:func:`blend_tiles`               :func:`blend_tiles_torch` (also ``tiling.blend_tiles_torch``)
================================  ==================================================
"""

from __future__ import annotations

from typing import Sequence

import torch

from cryorestore.errors import InputError
from cryorestore.native.build import launch, native_for


# --------------------------------------------------------------------------------------------
# input check and the torch twin
# --------------------------------------------------------------------------------------------
def check_blend_inputs(tiles: torch.Tensor, origins: torch.Tensor, window: torch.Tensor,
                       out_shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate :func:`blend_tiles_torch` arguments; returns ``out_shape`` as a tuple of ints."""
    if tiles.ndim != 4:
        raise InputError(f"tiles must be (T, d, h, w), got shape {tuple(tiles.shape)}")
    if origins.ndim != 2 or origins.shape[1] != 3 or origins.shape[0] != tiles.shape[0]:
        raise InputError(f"origins must be ({tiles.shape[0]}, 3), got shape {tuple(origins.shape)}")
    if tuple(window.shape) != tuple(tiles.shape[1:]):
        raise InputError(f"window shape {tuple(window.shape)} differs from the tile shape {tuple(tiles.shape[1:])}")
    shape = tuple(int(s) for s in out_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"out_shape must be a positive 3D (z, y, x) shape, got {tuple(out_shape)}")
    if origins.numel():
        o = origins.detach().to("cpu", torch.int64)
        lo = o.min(dim=0).values
        hi = (o + torch.tensor(tiles.shape[1:], dtype=torch.int64)).max(dim=0).values
        if (lo < 0).any() or any(int(hi[i]) > shape[i] for i in range(3)):
            raise InputError(f"tiles reach outside the output volume {shape}: origins must lie in [0, shape - tile]")
    return shape  # type: ignore[return-value]


def blend_tiles_torch(tiles: torch.Tensor, origins: torch.Tensor, window: torch.Tensor,
                      out_shape: Sequence[int]) -> torch.Tensor:
    """Overlap-add ``Σ window·tile / Σ window`` of tiles (T, d, h, w) at ``origins`` (T, 3) (z, y, x).

    Returns a float32 (Z, Y, X) volume on the tiles' device; voxels no tile covers are 0. The sums
    are accumulated in float32 (the twin of :func:`blend_tiles`).
    """
    shape = check_blend_inputs(tiles, origins, window, out_shape)
    dev = tiles.device
    num = torch.zeros(shape, dtype=torch.float32, device=dev)
    den = torch.zeros(shape, dtype=torch.float32, device=dev)
    w = window.to(device=dev, dtype=torch.float32)
    d, h, wd = tiles.shape[1:]
    for t, (z0, y0, x0) in enumerate(origins.detach().to("cpu", torch.int64).tolist()):
        sl = (slice(z0, z0 + d), slice(y0, y0 + h), slice(x0, x0 + wd))
        num[sl] += w * tiles[t].to(torch.float32)
        den[sl] += w
    return torch.where(den > 0, num / den.clamp(min=torch.finfo(torch.float32).tiny), torch.zeros_like(num))


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------
def blend_tiles(tiles: torch.Tensor, origins: torch.Tensor, window: torch.Tensor,
                out_shape: Sequence[int]) -> torch.Tensor:
    """Overlap-add ``Σ window·tile / Σ window`` of tiles (T, d, h, w) at ``origins`` (T, 3) (z, y, x).

    Returns float32 (Z, Y, X) on the tiles' device, 0 where no tile reaches; same result as
    :func:`blend_tiles_torch` (bit-identical on the CPU). Tiles that need gradients go through the twin.
    """
    shape = check_blend_inputs(tiles, origins, window, out_shape)

    def twin() -> torch.Tensor:
        return blend_tiles_torch(tiles, origins, window, shape)

    ext = native_for(tiles.device, "blend_tiles")
    if ext is None or (torch.is_grad_enabled() and tiles.requires_grad):
        return twin()
    t = tiles.detach().to(torch.float32).contiguous()
    o = origins.detach().to(device=t.device, dtype=torch.int64).contiguous()
    w = window.detach().to(device=t.device, dtype=torch.float32).contiguous()
    return launch("blend_tiles", lambda: ext.blend_tiles(t, o, w, *shape), twin)
