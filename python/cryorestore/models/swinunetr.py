"""SwinUNETR (Tang et al. 2022; Hatamizadeh et al. 2022) from MONAI, as a 1-in/1-out 3D restorer.

MONAI's network has a Swin transformer encoder (patch size 2, four stages with patch merging) and a
convolutional decoder with skip connections at five scales, so its input must be a multiple of
2**5 = 32 voxels per axis; the :class:`~cryorestore.models.Restorer` wrapper pads inputs (reflect)
to that multiple and crops back, so any size divisible by 16 works. MONAI ≥ 1.5 no longer takes
``img_size``. A 32³ input would leave a single voxel at the deepest scale, where MONAI's instance
norm is undefined (training fails; in evaluation it erases the features), so such inputs are extended
along x by their mirror image to 32×32×64 and cropped back. ``feature_size`` must be a multiple of 12 (MONAI's rule); the default 12 keeps the
network small enough to train on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from cryorestore.errors import InputError


class MirrorToTwoCells(nn.Module):
    """Apply ``net`` to an input whose axes are multiples of 32 voxels; when every axis is exactly
    32, append the mirror image along x first (so the deepest map has 2 voxels) and crop after."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.swin = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, y, w = x.shape[-3:]
        if z * y * w <= 32**3:
            return self.swin(torch.cat([x, x.flip(-1)], dim=-1))[..., :w]
        return self.swin(x)


def make_swinunetr(*, feature_size: int = 12, depths: tuple[int, ...] = (2, 2, 2, 2),
                   num_heads: tuple[int, ...] = (3, 6, 12, 24), window_size: int = 7, norm_name: str = "instance",
                   drop_rate: float = 0.0, attn_drop_rate: float = 0.0, dropout_path_rate: float = 0.0,
                   use_checkpoint: bool = False, use_v2: bool = False) -> tuple[nn.Module, int]:
    """MONAI SwinUNETR with one input and one output channel; multiple 32 voxels."""
    from monai.networks.nets import SwinUNETR

    if int(feature_size) < 12 or int(feature_size) % 12:
        raise InputError(f"swinunetr feature_size must be a positive multiple of 12, got {feature_size}")
    if len(depths) != 4 or len(num_heads) != 4:
        raise InputError(f"swinunetr needs four stage depths and head counts, got {list(depths)} and {list(num_heads)}")
    try:
        net = SwinUNETR(in_channels=1, out_channels=1, feature_size=int(feature_size),
                        depths=tuple(int(d) for d in depths), num_heads=tuple(int(h) for h in num_heads),
                        window_size=int(window_size), norm_name=norm_name, drop_rate=float(drop_rate),
                        attn_drop_rate=float(attn_drop_rate), dropout_path_rate=float(dropout_path_rate),
                        use_checkpoint=bool(use_checkpoint), spatial_dims=3, use_v2=bool(use_v2))
    except (ValueError, TypeError) as exc:
        raise InputError(f"swinunetr options rejected by MONAI: {exc}") from None
    return MirrorToTwoCells(net), 32
