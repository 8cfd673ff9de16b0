"""Mixed-scale dense network (MS-D Net; Pelt & Sethian 2018, PNAS 115:254) in 3D.

Layer i (i = 0 … depth−1) applies a 3×3×3 convolution with dilation ``1 + (i mod max_dilation)``
voxels to the concatenation of the input and *all* previous layers' maps, adds a bias and a ReLU,
and yields ``width`` new maps. A final 1×1×1 convolution combines the input and every map. Scale
comes from dilation, not down-sampling, so any input size works and the parameter count stays tiny
(≈ 27·width²·depth²/2: 34 k for the default depth 50, width 1).

Speed: every layer is one ``torch.nn.functional.conv3d`` with ``dilation`` (mkldnn on the CPU, cuDNN
on CUDA). An earlier version evaluated CPU dilations as undilated convolutions of the d³ polyphase
sub-grids; with torch 2.13 on an idle machine that was 1.6× slower than the direct call, so it was
removed (benchmarks/RESULTS.md, "Networks").

Memory: a naive implementation keeps every concatenation for the backward pass (O(depth²) maps).
Here each layer is gradient-checkpointed while training, so only the depth+1 maps themselves are
kept and the concatenation is recomputed during the backward pass (O(depth) memory, ≈2× compute).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cryorestore.errors import InputError


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
        return F.relu(conv(torch.cat(maps, dim=1)))

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
