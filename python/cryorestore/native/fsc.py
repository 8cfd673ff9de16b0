"""FSC shell sums: the reduction behind every Fourier shell correlation, its torch twin and the kernel.

For rfft spectra F1, F2 (B, Z, Y, X//2+1) and a shell index per coefficient, the sums per shell
are Re Σ w·F1·conj F2, Σ w·|F1|², Σ w·|F2|² (float64), with w = 1 on the x = 0 plane (and the Nyquist
plane of an even X) and 2 elsewhere, so that they equal the sums over the full grid.

================================  ==================================================
native                            torch twin
================================  ==================================================
:func:`fsc_shells`                :func:`fsc_shell_sums` (also ``fourier.fsc_shell_sums``)
================================  ==================================================
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from cryorestore.fourier_grid import rfft_weights
from cryorestore.native.build import launch, native_for


# --------------------------------------------------------------------------------------------
# the torch twin
# --------------------------------------------------------------------------------------------
def fsc_shell_sums(
    f1: torch.Tensor,
    f2: torch.Tensor,
    shells: torch.Tensor,
    n: int,
    nx: int | None = None,
    coefficient_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shell sums of rfft spectra: (B, 3, n) with Re Σ F1·conj F2, Σ|F1|², Σ|F2|² per shell.

    ``f1``, ``f2``: complex (B, Z, Y, Xr) rfft spectra; ``shells``: int64 (Z, Y, Xr) shell index,
    values ≥ ``n`` ignored; ``nx``: the real-space x size (default ``2·(Xr−1)``, i.e. even), which
    decides whether the last plane is a Nyquist plane counted once. ``coefficient_weights``
    (broadcastable to (Z, Y, Xr)) restricts or weights coefficients (e.g. a wedge selection).
    Sums are accumulated in float64 (the pure-torch twin of ``native.fsc_shells``).
    """
    if f1.shape != f2.shape:
        raise ValueError(f"spectra differ in shape: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    if f1.ndim == 3:
        f1, f2 = f1.unsqueeze(0), f2.unsqueeze(0)
    b, z, y, xr = f1.shape
    nx = 2 * (xr - 1) if nx is None else int(nx)
    if nx // 2 + 1 != xr:
        raise ValueError(f"nx={nx} does not match an rfft grid with {xr} x-planes")
    w = rfft_weights((z, y, nx), device=f1.device)
    if coefficient_weights is not None:
        w = w * coefficient_weights.to(device=f1.device, dtype=torch.float64)
    w = w.expand(z, y, xr).reshape(-1)
    idx = shells.to(f1.device).reshape(-1)
    f1d = f1.reshape(b, -1).to(torch.complex128)
    f2d = f2.reshape(b, -1).to(torch.complex128)
    terms = torch.stack(
        [
            (f1d * f2d.conj()).real * w,
            (f1d.real**2 + f1d.imag**2) * w,
            (f2d.real**2 + f2d.imag**2) * w,
        ],
        dim=1,
    )  # (B, 3, N)
    out = torch.zeros(b, 3, n + 1, dtype=torch.float64, device=f1.device)
    out.scatter_add_(2, idx.clamp(max=n).view(1, 1, -1).expand(b, 3, -1), terms)
    return out[..., :n]


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------
def _rfft_weights_flat(shape: tuple[int, int, int], xr: int, device: torch.device) -> torch.Tensor:
    return rfft_weights(shape, device=device).view(1, 1, 1, xr)


class _FscShells(torch.autograd.Function):
    """Native shell sums with a torch backward (gather of the shell gradients, rfft weights)."""

    @staticmethod
    def forward(ctx: Any, f1: torch.Tensor, f2: torch.Tensor, shells32: torch.Tensor, n: int, nx: int,
                ext: ModuleType) -> torch.Tensor:
        ctx.save_for_backward(f1, f2, shells32)
        ctx.n, ctx.nx = n, nx
        return ext.fsc_shells(f1, f2, shells32, n, nx % 2 == 0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        f1, f2, shells32 = ctx.saved_tensors
        b, z, y, xr = f1.shape
        g = torch.cat([grad, grad.new_zeros(b, 3, 1)], dim=2)  # bin n = excluded → gradient 0
        per = g[:, :, shells32.reshape(-1).long()].view(b, 3, z, y, xr)
        w = _rfft_weights_flat((z, y, ctx.nx), xr, f1.device)
        real = f1.real.dtype
        g_num = (per[:, 0] * w).to(real)
        g_p1 = (2.0 * per[:, 1] * w).to(real)
        g_p2 = (2.0 * per[:, 2] * w).to(real)
        d1 = g_num * f2 + g_p1 * f1 if ctx.needs_input_grad[0] else None
        d2 = g_num * f1 + g_p2 * f2 if ctx.needs_input_grad[1] else None
        return d1, d2, None, None, None, None


def fsc_shells(f1: torch.Tensor, f2: torch.Tensor, shell_index: torch.Tensor, n_shells: int,
               nx: int | None = None, coefficient_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Shell sums (B, 3, n_shells) float64 of rfft spectra: Re Σ F1·conj F2, Σ|F1|², Σ|F2|² per shell.

    ``f1``, ``f2``: complex (B, Z, Y, X//2+1) or (Z, Y, X//2+1); ``shell_index``: int (Z, Y, X//2+1),
    values ≥ ``n_shells`` ignored; ``nx``: the real-space x size (default even, ``2·(Xr−1)``); the
    x = 0 plane and an even X's Nyquist plane count once, the others twice. Differentiable with
    respect to ``f1`` and ``f2``. ``coefficient_weights`` is handled by the twin
    (:func:`fsc_shell_sums`), as is any case the kernel does not cover.
    """
    if coefficient_weights is not None:
        return fsc_shell_sums(f1, f2, shell_index, n_shells, nx=nx, coefficient_weights=coefficient_weights)
    if f1.shape != f2.shape:
        raise ValueError(f"spectra differ in shape: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    if f1.ndim == 3:
        f1, f2 = f1.unsqueeze(0), f2.unsqueeze(0)
    if f1.ndim != 4:
        raise ValueError(f"spectra must be (B, Z, Y, Xr) or (Z, Y, Xr), got shape {tuple(f1.shape)}")
    xr = f1.shape[-1]
    nx_ = 2 * (xr - 1) if nx is None else int(nx)
    if nx_ // 2 + 1 != xr:
        raise ValueError(f"nx={nx_} does not match an rfft grid with {xr} x-planes")
    n = int(n_shells)
    if n < 1:
        raise ValueError(f"n_shells must be >= 1, got {n_shells}")
    if tuple(shell_index.shape) != tuple(f1.shape[1:]):
        raise ValueError(f"shell index {tuple(shell_index.shape)} does not match the spectra {tuple(f1.shape[1:])}")
    ext = native_for(f1.device, "fsc_shells")
    if ext is None or not (f1.is_complex() and f2.is_complex()) or f2.device != f1.device:
        return fsc_shell_sums(f1, f2, shell_index, n, nx=nx_)
    if f1.dtype != f2.dtype or f1.dtype not in (torch.complex64, torch.complex128):
        f1, f2 = f1.to(torch.complex128), f2.to(torch.complex128)
    idx = shell_index.to(f1.device)
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError("shell index must be >= 0 (values >= n_shells mark excluded coefficients)")
    shells32 = idx.clamp(max=n).to(torch.int32)

    def twin() -> torch.Tensor:
        return fsc_shell_sums(f1, f2, idx, n, nx=nx_)

    if torch.is_grad_enabled() and (f1.requires_grad or f2.requires_grad):
        return launch("fsc_shells", lambda: _FscShells.apply(f1, f2, shells32, n, nx_, ext), twin)
    return launch("fsc_shells", lambda: ext.fsc_shells(f1.detach(), f2.detach(), shells32, n, nx_ % 2 == 0), twin)
