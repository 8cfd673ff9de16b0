"""Missing-wedge masks: the rule, its torch twin and the native kernels that build and apply it.

Rule (the same in ``csrc/wedge_rule.h``, which receives the line-angle bounds): for tilts in [a, b]
(degrees) about y, coefficient (kz, ky, kx) is measured when the angle of the line through (kx, kz),
``atan2(kz, kx)`` folded into (−90°, 90°], lies in [−b − ε, −a + ε] (ε = :data:`WEDGE_EPS_DEG`): positive
tilt turns the specimen's +x toward +z, so tilt θ samples the central plane whose in-plane x direction
is (kx, kz) = (cos θ, −sin θ) (see :mod:`cryorestore.projection`). The ky axis (kx = kz = 0) is always
measured. A rotated wedge is the mask of a volume rotated actively by R (a matrix on (z, y, x)
vectors): ``M_R(k) = M(Rᵀ k)``, rotated components below :data:`WEDGE_TINY` counting as 0.

================================  ==================================================
native                            torch twin
================================  ==================================================
:func:`wedge_mask`                :func:`missing_wedge_mask` (also ``fourier.missing_wedge_mask``)
:func:`apply_wedge`               ``spectra.mul_(missing_wedge_mask(...))``
================================  ==================================================
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Sequence

import numpy as np
import torch

from cryorestore.fourier_grid import DeviceLike, check_tilt_range, frequency_grid, rfft_shape
from cryorestore.native.build import launch, native_for

WEDGE_EPS_DEG = 1e-6  # tolerance of the angle test (degrees)
WEDGE_TINY = 1e-12  # rotated kz, kx below this are treated as exactly 0 (the rotated ky axis)


# --------------------------------------------------------------------------------------------
# the torch twin
# --------------------------------------------------------------------------------------------
def wedge_mask_from_frequencies(
    kz: torch.Tensor, kx: torch.Tensor, line_min: float, line_max: float, eps_deg: float = WEDGE_EPS_DEG
) -> torch.Tensor:
    """Float mask (1 measured) of the lines whose angle ``atan2(kz, kx)`` (folded into (−90°, 90°]) lies
    in [line_min, line_max] degrees, on given (broadcastable) kz, kx tensors; tilts [a, b] measure the
    line angles [−b, −a] (see the module docstring)."""
    phi = torch.rad2deg(torch.atan2(kz, kx))
    phi = torch.where(phi > 90.0, phi - 180.0, phi)
    phi = torch.where(phi <= -90.0, phi + 180.0, phi)
    measured = (phi >= line_min - eps_deg) & (phi <= line_max + eps_deg)
    on_axis = (kz == 0) & (kx == 0)
    return (measured | on_axis).to(torch.float32)


def missing_wedge_mask(
    shape: Sequence[int],
    tilt_min: float,
    tilt_max: float,
    rfft: bool = True,
    rotations: torch.Tensor | np.ndarray | None = None,
    device: DeviceLike = None,
) -> torch.Tensor:
    """Float32 mask (1 = measured) of the coefficients sampled by tilts in [tilt_min, tilt_max]°.

    Without ``rotations`` the result has the grid's shape (Z, Y, Xf). With ``rotations`` (B, 3, 3)
    (matrices on (z, y, x) vectors) it is (B, Z, Y, Xf): mask b is the wedge of a volume rotated
    actively by ``rotations[b]``, i.e. ``M(R_bᵀ k)``, evaluated analytically (no interpolation).
    The pure-torch twin of :func:`wedge_mask`.
    """
    check_tilt_range(tilt_min, tilt_max)
    lo, hi = -float(tilt_max), -float(tilt_min)  # tilt θ measures the line at angle −θ
    kz, ky, kx = frequency_grid(shape, rfft=rfft, device=device, dtype=torch.float64)
    if rotations is None:
        return wedge_mask_from_frequencies(kz, kx, lo, hi).expand(kz.shape[0], ky.shape[1], kx.shape[2]).contiguous()
    rot = torch.as_tensor(rotations, dtype=torch.float64, device=kz.device)
    if rot.ndim == 2:
        rot = rot.unsqueeze(0)
    # k' = Rᵀ k  →  k'_i = Σ_j R[j, i] k_j   (k = (kz, ky, kx))
    comps = (kz.unsqueeze(0), ky.unsqueeze(0), kx.unsqueeze(0))
    r = rot.view(-1, 3, 3, 1, 1, 1)
    kz_r = r[:, 0, 0] * comps[0] + r[:, 1, 0] * comps[1] + r[:, 2, 0] * comps[2]
    kx_r = r[:, 0, 2] * comps[0] + r[:, 1, 2] * comps[1] + r[:, 2, 2] * comps[2]
    # exact zero for the rotated ky axis would be lost to rounding; treat |k'_xz| tiny as on-axis
    kz_r = torch.where(kz_r.abs() < WEDGE_TINY, torch.zeros_like(kz_r), kz_r)
    kx_r = torch.where(kx_r.abs() < WEDGE_TINY, torch.zeros_like(kx_r), kx_r)
    return wedge_mask_from_frequencies(kz_r, kx_r, lo, hi)


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------
def _rotations_tensor(rotations: torch.Tensor | np.ndarray | None, device: torch.device) -> tuple[torch.Tensor, bool]:
    """(R, 3, 3) float64 rotations on ``device`` and whether the caller gave a batch."""
    if rotations is None:
        return torch.eye(3, dtype=torch.float64, device=device).unsqueeze(0), False
    rot = torch.as_tensor(rotations, dtype=torch.float64, device=device)
    if rot.ndim == 2:
        rot = rot.unsqueeze(0)
    if rot.ndim != 3 or tuple(rot.shape[1:]) != (3, 3):
        raise ValueError(f"rotations must be (B, 3, 3) or (3, 3) matrices, got shape {tuple(rot.shape)}")
    return rot, True


def _grid_vectors(shape: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kz, ky, kx = frequency_grid(shape, rfft=True, device=device, dtype=torch.float64)
    return kz.reshape(-1), ky.reshape(-1), kx.reshape(-1)


def _device_of(rotations: Any, device: DeviceLike) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(rotations, torch.Tensor):
        return rotations.device
    return torch.device("cpu")


def wedge_mask(shape: Sequence[int], tilt_min: float, tilt_max: float,
               rotations: torch.Tensor | np.ndarray | None = None, device: DeviceLike = None) -> torch.Tensor:
    """Float32 missing-wedge mask(s) on the rfft grid of a (Z, Y, X) volume; 1 = measured.

    Without ``rotations`` the result is (Z, Y, X//2+1); with ``rotations`` (B, 3, 3) (float64 matrices
    on (z, y, x) vectors) it is (B, Z, Y, X//2+1), mask b being the wedge of a volume rotated
    actively by ``rotations[b]``. Bit-identical to :func:`missing_wedge_mask`.
    Tilts in degrees; the device is ``device``, else that of ``rotations``, else the CPU.
    """
    shape3 = rfft_shape(shape)  # validates
    check_tilt_range(tilt_min, tilt_max)
    dev = _device_of(rotations, device)

    def twin() -> torch.Tensor:
        return missing_wedge_mask(shape, tilt_min, tilt_max, rfft=True, rotations=rotations, device=dev)

    ext = native_for(dev, "wedge_mask")
    if ext is None:
        return twin()
    rot, batched = _rotations_tensor(rotations, dev)
    kz, ky, kx = _grid_vectors(shape, dev)
    assert kx.numel() == shape3[2]

    def kernel() -> torch.Tensor:
        out = ext.wedge_mask(kz, ky, kx, rot, -float(tilt_max) - WEDGE_EPS_DEG, -float(tilt_min) + WEDGE_EPS_DEG,
                             WEDGE_TINY)
        return out if batched else out[0]

    return launch("wedge_mask", kernel, twin)


class _ApplyWedge(torch.autograd.Function):
    """In-place wedge multiplication whose backward multiplies the gradient by the same masks
    (the kernel, or ``twin`` — an in-place masking function — once the kernel has failed)."""

    @staticmethod
    def forward(ctx: Any, spectra: torch.Tensor, args: tuple, ext: ModuleType, twin: Any) -> torch.Tensor:
        ctx.mark_dirty(spectra)
        ctx.args, ctx.ext, ctx.twin = args, ext, twin
        ext.apply_wedge(spectra, *args)
        return spectra

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        g = grad.contiguous().clone()
        if native_for(g.device, "apply_wedge") is None:
            return ctx.twin(g), None, None, None
        launch("apply_wedge", lambda: ctx.ext.apply_wedge(g, *ctx.args), lambda: ctx.twin(g))
        return g, None, None, None


def _apply_wedge_twin(spectra: torch.Tensor, tilt_min: float, tilt_max: float,
                      rotations: torch.Tensor | np.ndarray | None, nx: int, mask_fn: Any) -> torch.Tensor:
    z, y, _ = spectra.shape[-3:]
    mask = mask_fn((z, y, nx), tilt_min, tilt_max, rotations=rotations, device=spectra.device)
    if spectra.ndim == 3 and mask.ndim == 4:
        mask = mask[0]
    return spectra.mul_(mask)


def apply_wedge(spectra: torch.Tensor, tilt_min: float, tilt_max: float,
                rotations: torch.Tensor | np.ndarray | None = None, nx: int | None = None) -> torch.Tensor:
    """Multiply rfft spectra (B, Z, Y, Xr) complex **in place** by their missing-wedge masks; returns them.

    ``rotations``: None (one unrotated wedge for all), (3, 3), or (B, 3, 3) matrices on (z, y, x)
    vectors (one per spectrum); ``nx``: the real-space x size (default ``2·(Xr−1)``). Twin:
    ``spectra.mul_(missing_wedge_mask((Z, Y, nx), tilt_min, tilt_max, rotations=rotations))``.
    Differentiable (the gradient is masked the same way). Tilts in degrees. A kernel that fails
    part-way leaves the spectra partly masked; the twin then masks them again, which changes
    nothing where the kernel already did (the masks are 0/1).
    """
    if not spectra.is_complex():
        raise ValueError(f"apply_wedge needs complex rfft spectra, got {spectra.dtype}")
    if spectra.ndim not in (3, 4):
        raise ValueError(f"spectra must be (B, Z, Y, Xr) or (Z, Y, Xr), got shape {tuple(spectra.shape)}")
    check_tilt_range(tilt_min, tilt_max)
    z, y, xr = spectra.shape[-3:]
    nx_ = 2 * (xr - 1) if nx is None else int(nx)
    if nx_ // 2 + 1 != xr:
        raise ValueError(f"nx={nx_} does not match an rfft grid with {xr} x-planes")
    b = spectra.shape[0] if spectra.ndim == 4 else 1
    rot, batched = _rotations_tensor(rotations, spectra.device)
    if rot.shape[0] not in (1, b):
        raise ValueError(f"need one rotation or one per spectrum, got {rot.shape[0]} rotations for {b} spectra")
    if batched and spectra.ndim == 3 and rot.shape[0] != 1:
        raise ValueError("a single (Z, Y, Xr) spectrum takes one rotation")
    ext = native_for(spectra.device, "apply_wedge")
    if ext is None or spectra.dtype not in (torch.complex64, torch.complex128) or not spectra.is_contiguous():
        # the masks themselves still come from the wedge_mask kernel when the extension is there
        mask_fn = wedge_mask if ext is not None else missing_wedge_mask
        return _apply_wedge_twin(spectra, tilt_min, tilt_max, rotations, nx_, mask_fn)
    kz, ky, kx = _grid_vectors((z, y, nx_), spectra.device)
    args = (kz, ky, kx, rot, -float(tilt_max) - WEDGE_EPS_DEG, -float(tilt_min) + WEDGE_EPS_DEG, WEDGE_TINY)

    def twin(target: torch.Tensor = spectra) -> torch.Tensor:
        return _apply_wedge_twin(target, tilt_min, tilt_max, rotations, nx_, missing_wedge_mask)

    if torch.is_grad_enabled() and spectra.requires_grad:
        if spectra.ndim == 3:
            raise ValueError("differentiable apply_wedge needs a (B, Z, Y, Xr) batch")
        return launch("apply_wedge", lambda: _ApplyWedge.apply(spectra, args, ext, twin), twin)

    def kernel() -> torch.Tensor:
        ext.apply_wedge((spectra if spectra.ndim == 4 else spectra.unsqueeze(0)).detach(), *args)
        return spectra

    return launch("apply_wedge", kernel, twin)
