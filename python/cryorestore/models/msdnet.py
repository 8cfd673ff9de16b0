"""Mixed-scale dense network (MS-D Net; Pelt & Sethian 2018, PNAS 115:254) in 3D.

Layer i (i = 0 … depth−1) applies a 3×3×3 convolution with dilation ``1 + (i mod max_dilation)``
voxels to the concatenation of the input and *all* previous layers' maps, adds a bias and a ReLU,
and yields ``width`` new maps. A final 1×1×1 convolution combines the input and every map. Scale
comes from dilation, not down-sampling, so any input size works and the parameter count stays tiny
(≈ 27·width²·depth²/2: 34 k for the default depth 50, width 1).

Speed: PyTorch's CPU backward pass of dilated 3D convolutions is several times slower than that of
ordinary ones, so on the CPU a dilated convolution is computed as an ordinary 3×3×3 convolution of
the d³ polyphase components of the input (voxels with equal coordinates mod d), which is exactly
equivalent with zero padding (:func:`dilated_conv3d`). On CUDA cuDNN's dilated kernels are used.

Memory: a naive implementation keeps every concatenation for the backward pass (O(depth²) maps).
Here each layer is gradient-checkpointed while training, so only the depth+1 maps themselves are
kept and the concatenation is recomputed during the backward pass (O(depth) memory, ≈2× compute).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from einops import rearrange

from cryorestore.errors import InputError


def dilated_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int,
                   polyphase: bool | None = None) -> torch.Tensor:
    """3×3×3 convolution with dilation ``dilation`` voxels and zero padding ``dilation`` ("same" size).

    ``polyphase`` (default: on the CPU for dilation > 1) evaluates it as an undilated convolution of
    the input's d³ polyphase components: out[p + d·j] = Σₖ w_k · x[p + d·(j + k − 1)] only touches
    voxels of phase p, and zero padding to a multiple of d reproduces the zero border.
    """
    d = int(dilation)
    if polyphase is None:
        polyphase = x.device.type == "cpu" and d > 1
    if not polyphase or d == 1:
        return F.conv3d(x, weight, bias, padding=d, dilation=d)
    z, y, w = x.shape[-3:]
    extra = ((-w) % d, (-y) % d, (-z) % d)
    if any(extra):
        x = F.pad(x, (0, extra[0], 0, extra[1], 0, extra[2]))
    xp = rearrange(x, "b c (z pz) (y py) (x px) -> (b pz py px) c z y x", pz=d, py=d, px=d)
    out = F.conv3d(xp, weight, bias, padding=1)
    out = rearrange(out, "(b pz py px) c z y x -> b c (z pz) (y py) (x px)", pz=d, py=d, px=d)
    return out[..., :z, :y, :w]


class MSDNet3D(nn.Module):
    """MS-D network on (B, in_channels, Z, Y, X) → (B, out_channels, Z, Y, X)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 50, width: int = 1,
                 max_dilation: int = 10, checkpointing: bool = True) -> None:
        super().__init__()
        if depth < 1 or width < 1 or max_dilation < 1:
            raise InputError(f"msdnet needs depth, width, max_dilation >= 1 (got {depth}, {width}, {max_dilation})")
        self.dilations = [1 + (i % max_dilation) for i in range(depth)]
        self.checkpointing = bool(checkpointing)
        self.layers = nn.ModuleList()
        for i, d in enumerate(self.dilations):
            conv = nn.Conv3d(in_channels + i * width, width, 3, padding=d, dilation=d)
            # He initialisation for ReLU layers with fan-in = all channels the layer sees (as Pelt & Sethian)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            self.layers.append(conv)
        self.final = nn.Conv3d(in_channels + depth * width, out_channels, 1)

    @staticmethod
    def _layer(conv: nn.Conv3d, *maps: torch.Tensor) -> torch.Tensor:
        return F.relu(dilated_conv3d(torch.cat(maps, dim=1), conv.weight, conv.bias, conv.dilation[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        use_ckpt = self.checkpointing and torch.is_grad_enabled()
        for conv in self.layers:
            if use_ckpt:
                y = checkpoint(self._layer, conv, *maps, use_reentrant=False)
            else:
                y = self._layer(conv, *maps)
            maps.append(y)
        return self.final(torch.cat(maps, dim=1))


def make_msdnet(*, depth: int = 50, width: int = 1, max_dilation: int = 10,
                checkpointing: bool = True) -> tuple[nn.Module, int]:
    """MS-D Net (width ``width`` maps per layer, dilations cycling 1 … ``max_dilation`` voxels);
    needs no padding (multiple 1)."""
    return MSDNet3D(1, 1, int(depth), int(width), int(max_dilation), bool(checkpointing)), 1
