"""3D U-Net: encoder/decoder with skip connections (Ronneberger et al. 2015, in 3D).

Defaults follow DeepDeWedge's U-Net: 3 down-sampling levels, 32 base channels doubling per level,
blocks of 3×3×3 convolution → instance norm → LeakyReLU, strided-convolution down-sampling and
upsampling by interpolation followed by a convolution (no checkerboard artefacts of transposed
convolutions), 1×1×1 output convolution. Inputs (B, 1, Z, Y, X), sizes divisible by 2**depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cryorestore.errors import InputError

NORMS = ("instance", "group", "batch", "none")
DOWNS = ("strided", "maxpool", "avgpool")
UPS = ("trilinear", "nearest", "transpose")


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: instance (affine), group (8 groups or fewer), batch, none."""
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "group":
        groups = max(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "none":
        return nn.Identity()
    raise InputError(f"norm '{kind}' is unknown; choose one of {', '.join(NORMS)}")


class ConvBlock(nn.Sequential):
    """``n_convs`` × (3×3×3 conv → norm → LeakyReLU → optional dropout)."""

    def __init__(self, c_in: int, c_out: int, n_convs: int, norm: str, slope: float, dropout: float) -> None:
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [nn.Conv3d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=norm == "none"),
                       make_norm(norm, c_out), nn.LeakyReLU(slope, inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout3d(dropout))
        super().__init__(*layers)


class Down(nn.Sequential):
    """Halve the spatial size: strided 3×3×3 conv (+ LeakyReLU), max- or average-pooling."""

    def __init__(self, channels: int, mode: str, slope: float) -> None:
        if mode == "strided":
            super().__init__(nn.Conv3d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(slope, inplace=True))
        elif mode == "maxpool":
            super().__init__(nn.MaxPool3d(2))
        elif mode == "avgpool":
            super().__init__(nn.AvgPool3d(2))
        else:
            raise InputError(f"down-sampling '{mode}' is unknown; choose one of {', '.join(DOWNS)}")


class Up(nn.Module):
    """Double the spatial size and map ``c_in`` → ``c_out`` channels."""

    def __init__(self, c_in: int, c_out: int, mode: str, slope: float) -> None:
        super().__init__()
        if mode not in UPS:
            raise InputError(f"up-sampling '{mode}' is unknown; choose one of {', '.join(UPS)}")
        self.mode = mode
        if mode == "transpose":
            self.conv: nn.Module = nn.ConvTranspose3d(c_in, c_out, 2, stride=2)
        else:
            self.conv = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.act = nn.LeakyReLU(slope, inplace=True)

    def forward(self, x: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        if self.mode != "transpose":
            x = F.interpolate(x, size=size, mode=self.mode, **({"align_corners": False} if self.mode == "trilinear" else {}))
        return self.act(self.conv(x))


class UNet3D(nn.Module):
    """3D U-Net with ``depth`` down-sampling levels; channels ``base_channels · 2**level``.

    Encoder level l: ConvBlock → (skip) → Down; bottleneck ConvBlock at 2**depth·base channels;
    decoder: Up → concat skip → ConvBlock; 1×1×1 conv to ``out_channels``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 3, base_channels: int = 32,
                 convs_per_block: int = 3, norm: str = "instance", down: str = "strided", up: str = "trilinear",
                 negative_slope: float = 0.05, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1 or convs_per_block < 1:
            raise InputError(f"unet needs depth >= 1, base_channels >= 1, convs_per_block >= 1 "
                             f"(got {depth}, {base_channels}, {convs_per_block})")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"unet dropout must be in [0, 1), got {dropout}")
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        c = in_channels
        for i in range(depth):
            self.encoders.append(ConvBlock(c, chans[i], convs_per_block, norm, negative_slope, dropout))
            self.downs.append(Down(chans[i], down, negative_slope))
            c = chans[i]
        self.bottleneck = ConvBlock(c, chans[depth], convs_per_block, norm, negative_slope, dropout)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(depth)):
            self.ups.append(Up(chans[i + 1], chans[i], up, negative_slope))
            self.decoders.append(ConvBlock(2 * chans[i], chans[i], convs_per_block, norm, negative_slope, dropout))
        self.head = nn.Conv3d(chans[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, dec in zip(self.ups, self.decoders):
            skip = skips.pop()
            x = dec(torch.cat([up(x, tuple(skip.shape[-3:])), skip], dim=1))
        return self.head(x)


def make_unet(*, depth: int = 3, base_channels: int = 32, convs_per_block: int = 3, norm: str = "instance",
              down: str = "strided", up: str = "trilinear", negative_slope: float = 0.05,
              dropout: float = 0.0) -> tuple[nn.Module, int]:
    """The U-Net and the multiple (2**depth voxels) its input size must be padded to."""
    net = UNet3D(1, 1, int(depth), int(base_channels), int(convs_per_block), str(norm), str(down), str(up),
                 float(negative_slope), float(dropout))
    return net, 2 ** int(depth)
