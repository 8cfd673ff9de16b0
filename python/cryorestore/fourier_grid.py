"""The discrete Fourier grid of a (z, y, x) volume: frequencies, shells and rfft plane weights.

The bottom layer of the Fourier code (plain PyTorch, nothing else from cryorestore but the error
type): the torch twins of the native kernels (:mod:`cryorestore.native`) and the Fourier tools of
:mod:`cryorestore.fourier` are built on it, and :mod:`cryorestore.fourier` re-exports every name
here. The conventions (frequencies in cycles/voxel, the rfft and full grids, shells) are stated in
:mod:`cryorestore.fourier` and docs/architecture.md.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from cryorestore.errors import InputError

Shape3 = tuple[int, int, int]
DeviceLike = torch.device | str | None


def _shape3(shape: Sequence[int]) -> Shape3:
    s = tuple(int(n) for n in shape)
    if len(s) != 3 or min(s) < 1:
        raise ValueError(f"expected a 3D (z, y, x) shape, got {shape}")
    return s  # type: ignore[return-value]


def rfft_shape(shape: Sequence[int]) -> Shape3:
    """Shape (Z, Y, X//2 + 1) of the rfft grid of a (Z, Y, X) volume."""
    z, y, x = _shape3(shape)
    return (z, y, x // 2 + 1)


def frequency_grid(
    shape: Sequence[int], rfft: bool = True, device: DeviceLike = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frequencies (kz, ky, kx) in cycles/voxel as broadcastable (Z,1,1), (1,Y,1), (1,1,Xf) tensors.

    ``Xf`` is ``X//2 + 1`` on the rfft grid and ``X`` on the full grid (FFT order, not shifted).
    On the rfft grid of an even X the Nyquist plane has kx = −0.5, as on the full grid.
    """
    z, y, x = _shape3(shape)
    kz = torch.fft.fftfreq(z, device=device, dtype=dtype).view(z, 1, 1)
    ky = torch.fft.fftfreq(y, device=device, dtype=dtype).view(1, y, 1)
    kx = torch.fft.fftfreq(x, device=device, dtype=dtype)
    if rfft:
        # the rfft grid holds the full grid's first X//2 + 1 planes; for an even X its last plane is
        # the full grid's Nyquist plane, whose frequency fftfreq gives as -0.5: keep that value so
        # that every rfft-grid quantity equals the matching part of the full-grid one.
        kx = kx[: x // 2 + 1]
    return kz, ky, kx.view(1, 1, -1)


def n_shells(shape: Sequence[int]) -> int:
    """Number of shells up to Nyquist: ``min(shape) // 2 + 1``."""
    return min(_shape3(shape)) // 2 + 1


def shell_frequencies(shape: Sequence[int]) -> np.ndarray:
    """Frequency of each shell in cycles/voxel: ``k / min(shape)`` for ``k = 0 … min(shape)//2``."""
    s = _shape3(shape)
    return np.arange(n_shells(s), dtype=np.float64) / min(s)


@functools.lru_cache(maxsize=32)
def _shell_index_cached(shape: Shape3, rfft: bool, device: str) -> torch.Tensor:
    kz, ky, kx = frequency_grid(shape, rfft=rfft, device=device, dtype=torch.float64)
    radius = torch.sqrt(kz**2 + ky**2 + kx**2) * min(shape)
    idx = torch.floor(radius + 0.5).to(torch.int64)
    n = n_shells(shape)
    return torch.where(idx < n, idx, torch.full_like(idx, n))


def shell_index(shape: Sequence[int], rfft: bool = True, device: DeviceLike = None) -> torch.Tensor:
    """Shell index (int64) of every coefficient of the rfft (or full) grid; ``n_shells`` = excluded."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _shell_index_cached(_shape3(shape), bool(rfft), str(dev))


@functools.lru_cache(maxsize=32)
def _rfft_weights_cached(shape: Shape3, device: str) -> torch.Tensor:
    x = shape[2]
    xr = x // 2 + 1
    w = torch.full((xr,), 2.0, dtype=torch.float64, device=device)
    w[0] = 1.0
    if x % 2 == 0:
        w[-1] = 1.0
    return w.view(1, 1, xr)


def rfft_weights(shape: Sequence[int], device: DeviceLike = None) -> torch.Tensor:
    """Multiplicity of each rfft-grid plane along x (1, 1, X//2+1): 1 for x = 0 and the Nyquist plane
    of an even X, 2 for the others, so that a weighted rfft sum equals the full-grid sum."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _rfft_weights_cached(_shape3(shape), str(dev))


def check_tilt_range(tilt_min: float, tilt_max: float) -> None:
    """Raise :class:`~cryorestore.errors.InputError` (a ``ValueError``) unless
    −90 ≤ tilt_min < tilt_max ≤ 90 (degrees, finite); the one check every caller shares."""
    if not (np.isfinite(tilt_min) and np.isfinite(tilt_max)) or not (-90.0 <= tilt_min < tilt_max <= 90.0):
        raise InputError(
            f"tilt range {tilt_min:g} {tilt_max:g} makes no sense: need -90 <= MIN < MAX <= 90 degrees"
        )
