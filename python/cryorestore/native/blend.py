"""Overlap-add blending of predicted tiles: the kernel, dispatched against its twin in tiling.

``out = Σ window·tile / Σ window`` over the tiles covering each voxel (0 where none does), tiles
(T, d, h, w) placed at origins (T, 3) (z, y, x) voxels. The twin and the input check live with
the tiling code (:mod:`cryorestore.tiling`), which this module imports: tiling is pure torch and
does not import :mod:`cryorestore.native`.

================================  ==================================================
native                            torch twin
================================  ==================================================
:func:`blend_tiles`               :func:`cryorestore.tiling.blend_tiles_torch`
================================  ==================================================
"""

from __future__ import annotations

from typing import Sequence

import torch

from cryorestore.native.build import launch, native_for
from cryorestore.tiling import blend_tiles_torch, check_blend_inputs


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------
def blend_tiles(tiles: torch.Tensor, origins: torch.Tensor, window: torch.Tensor,
                out_shape: Sequence[int]) -> torch.Tensor:
    """Overlap-add ``Σ window·tile / Σ window`` of tiles (T, d, h, w) at ``origins`` (T, 3) (z, y, x).

    Returns float32 (Z, Y, X) on the tiles' device, 0 where no tile reaches; same result as
    :func:`cryorestore.tiling.blend_tiles_torch` (bit-identical on the CPU). Tiles that need
    gradients go through the twin.
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
