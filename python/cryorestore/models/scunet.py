"""Swin-Conv U-Net (SCUNet; Zhang et al. 2023, Machine Intelligence Research 20:822) in 3D.

Building block (:class:`SwinConvBlock`): a 1×1×1 convolution, then the channels are split in two
halves; one goes through a residual convolution block (3×3×3 conv → ReLU → 3×3×3 conv, plus
identity), the other through a Swin transformer block (LayerNorm → windowed multi-head
self-attention with relative position bias over non-overlapping 3D windows of ``window``³ voxels,
shifted by ``window``/2 in every other block → residual; LayerNorm → MLP → residual). The halves are
concatenated, mixed by a 1×1×1 convolution and added to the block input.

The network is a U-Net with ``levels`` down-sampling steps (2×2×2 strided convolutions, channels
``dim·2**level``), ``blocks`` Swin-Conv blocks per stage, 2×2×2 transposed-convolution up-sampling
and additive skip connections, with 3×3×3 head and tail convolutions. Feature maps whose size is not
a multiple of the window (or smaller than it) are zero-padded inside the attention and the padded
tokens are masked out as keys, so any input divisible by 2**levels works (16 for the default 3 levels
up to 4). Window partitioning uses einops. Axes (z, y, x).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from cryorestore.errors import InputError

_MASKED = -1e4  # logit offset of masked keys (finite, so a fully masked row stays finite)


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, Z, Y, X, C) with Z, Y, X multiples of ``w`` → (B·nW, w³, C) windows (raster order)."""
    return rearrange(x, "b (z wz) (y wy) (x wx) c -> (b z y x) (wz wy wx) c", wz=w, wy=w, wx=w)


def window_reverse(windows: torch.Tensor, w: int, b: int, z: int, y: int, x: int) -> torch.Tensor:
    """Inverse of :func:`window_partition` for a (b, z, y, x, C) map."""
    return rearrange(windows, "(b z y x) (wz wy wx) c -> b (z wz) (y wy) (x wx) c",
                     b=b, z=z // w, y=y // w, x=x // w, wz=w, wy=w, wx=w)


@functools.lru_cache(maxsize=16)
def _relative_index(w: int) -> torch.Tensor:
    """(w³, w³) index into the (2w−1)³ relative-position table for every query/key pair."""
    r = torch.arange(w)
    coords = torch.stack(torch.meshgrid(r, r, r, indexing="ij")).flatten(1)  # (3, w³)
    rel = coords[:, :, None] - coords[:, None, :] + (w - 1)  # (3, N, N) in [0, 2w-2]
    m = 2 * w - 1
    return rel[0] * m * m + rel[1] * m + rel[2]


def attention_mask(padded: tuple[int, int, int], size: tuple[int, int, int], w: int, shift: int,
                   device: torch.device) -> torch.Tensor | None:
    """Cached :func:`_attention_mask`."""
    return _attention_mask(tuple(padded), tuple(size), int(w), int(shift), str(device))


@functools.lru_cache(maxsize=64)
def _attention_mask(padded: tuple[int, int, int], size: tuple[int, int, int], w: int, shift: int,
                    device: str) -> torch.Tensor | None:
    """Additive (nW, N, N) mask for windows of a (padded) map holding ``size`` real voxels.

    A key is masked for a query when, after the cyclic shift by −``shift``, the two come from
    different regions of the map (they are not neighbours), or when the key is padding.
    Returns None when nothing needs masking.
    """
    if shift == 0 and padded == size:
        return None
    labels = torch.zeros(padded, device=device)
    if shift > 0:
        cnt = 0
        bounds = (slice(0, -w), slice(-w, -shift), slice(-shift, None))
        for sz in bounds:
            for sy in bounds:
                for sx in bounds:
                    labels[sz, sy, sx] = cnt
                    cnt += 1
    valid = torch.zeros(padded, device=device)
    valid[: size[0], : size[1], : size[2]] = 1.0
    if shift > 0:
        valid = torch.roll(valid, shifts=(-shift,) * 3, dims=(0, 1, 2))
        # labels are defined on the shifted map directly (as in Swin), valid voxels are rolled
    lw = window_partition(labels[None, ..., None], w)[..., 0]  # (nW, N)
    vw = window_partition(valid[None, ..., None], w)[..., 0]
    different = lw[:, :, None] != lw[:, None, :]
    padded_key = (vw < 0.5)[:, None, :]
    mask = torch.zeros(different.shape, device=device)
    return mask.masked_fill(different | padded_key, _MASKED)


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside w³ windows with a learned relative position bias."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        if dim % heads:
            raise InputError(f"scunet: {dim} channels do not split into {heads} heads")
        self.heads = heads
        self.window = window
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 3, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("rel_index", _relative_index(window).reshape(-1).clone(), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        logits = (q * self.scale) @ k.transpose(-2, -1)  # (bw, h, n, n)
        bias = self.bias_table[self.rel_index].view(n, n, self.heads).permute(2, 0, 1)
        logits = logits + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            logits = logits.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None].to(logits.dtype)
            logits = logits.view(bw, self.heads, n, n)
        out = logits.softmax(dim=-1) @ v
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class SwinBlock3D(nn.Module):
    """Pre-norm Swin transformer block on channels-last (B, Z, Y, X, C) maps."""

    def __init__(self, dim: int, heads: int, window: int, shifted: bool, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.shift = window // 2 if shifted else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, z, y, w_, c = x.shape
        win = self.window
        # a map no larger than a window in every axis needs no shift (one window sees everything)
        shift = self.shift if max(z, y, w_) > win else 0
        h = self.norm1(x)
        pz, py, px = (-z) % win, (-y) % win, (-w_) % win
        if pz or py or px:
            h = F.pad(h, (0, 0, 0, px, 0, py, 0, pz))
        zp, yp, xp = z + pz, y + py, w_ + px
        if shift:
            h = torch.roll(h, shifts=(-shift,) * 3, dims=(1, 2, 3))
        mask = attention_mask((zp, yp, xp), (z, y, w_), win, shift, x.device)
        h = self.attn(window_partition(h, win), mask)
        h = window_reverse(h, win, b, zp, yp, xp)
        if shift:
            h = torch.roll(h, shifts=(shift,) * 3, dims=(1, 2, 3))
        x = x + h[:, :z, :y, :w_]
        return x + self.mlp(self.norm2(x))


class SwinConvBlock(nn.Module):
    """SCUNet's Swin-Conv block on (B, C, Z, Y, X): split, residual conv ‖ Swin, merge, residual."""

    def __init__(self, conv_dim: int, trans_dim: int, head_dim: int, window: int, shifted: bool) -> None:
        super().__init__()
        self.conv_dim, self.trans_dim = conv_dim, trans_dim
        dim = conv_dim + trans_dim
        heads = max(1, trans_dim // head_dim)
        self.mix_in = nn.Conv3d(dim, dim, 1)
        self.mix_out = nn.Conv3d(dim, dim, 1)
        self.conv = nn.Sequential(nn.Conv3d(conv_dim, conv_dim, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                  nn.Conv3d(conv_dim, conv_dim, 3, padding=1, bias=False))
        self.swin = SwinBlock3D(trans_dim, heads, window, shifted)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, t = torch.split(self.mix_in(x), (self.conv_dim, self.trans_dim), dim=1)
        c = c + self.conv(c)
        t = rearrange(self.swin(rearrange(t, "b c z y x -> b z y x c")), "b z y x c -> b c z y x")
        return x + self.mix_out(torch.cat([c, t], dim=1))


def _stage(dim: int, blocks: int, head_dim: int, window: int) -> list[nn.Module]:
    return [SwinConvBlock(dim // 2, dim - dim // 2, head_dim, window, shifted=bool(i % 2)) for i in range(blocks)]


class SCUNet3D(nn.Module):
    """3D SCUNet: head conv, ``levels`` × (Swin-Conv stage, 2× down), body stage,
    ``levels`` × (2× up, Swin-Conv stage) with additive skips, tail conv."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, dim: int = 32, levels: int = 3,
                 blocks: int = 2, head_dim: int = 16, window: int = 4) -> None:
        super().__init__()
        if dim < 2 or levels < 0 or blocks < 1 or head_dim < 1 or window < 2:
            raise InputError(f"scunet needs dim >= 2, levels >= 0, blocks >= 1, head_dim >= 1, window >= 2 "
                             f"(got {dim}, {levels}, {blocks}, {head_dim}, {window})")
        self.head = nn.Conv3d(in_channels, dim, 3, padding=1, bias=False)
        dims = [dim * 2**i for i in range(levels + 1)]
        self.downs = nn.ModuleList(
            nn.Sequential(*_stage(dims[i], blocks, head_dim, window), nn.Conv3d(dims[i], dims[i + 1], 2, stride=2, bias=False))
            for i in range(levels))
        self.body = nn.Sequential(*_stage(dims[levels], blocks, head_dim, window))
        self.ups = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose3d(dims[i + 1], dims[i], 2, stride=2, bias=False), *_stage(dims[i], blocks, head_dim, window))
            for i in reversed(range(levels)))
        self.tail = nn.Conv3d(dim, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        x = self.body(x)
        for up in self.ups:
            x = up(x + skips.pop())
        return self.tail(x + skips.pop())


def make_scunet(*, dim: int = 32, levels: int = 3, blocks: int = 2, head_dim: int = 16,
                window: int = 4) -> tuple[nn.Module, int]:
    """SCUNet in 3D; inputs are padded to a multiple of 2**levels voxels."""
    net = SCUNet3D(1, 1, int(dim), int(levels), int(blocks), int(head_dim), int(window))
    return net, 2 ** int(levels)
