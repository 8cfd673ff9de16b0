"""DeepDeWedge (Wiedemann & Heckel 2024): joint denoising and missing-wedge filling from half tomograms.

Per sample, both halves' boxes ``a`` and ``b`` (which one is the input is chosen at random) are
rotated by the same random 3D rotation R and centre-cropped to the training size, so the boxes are
extracted at ``ceil(√3·crop) + 2`` voxels (≥ √2·crop; a cube's corners need √3 under 3D rotations)
and rotated crops have no empty corners. With M the original
missing wedge (tilt range about y) and R(M) the wedge of the rotated box (built analytically per
rotation, never interpolated):

* input  = F⁻¹(M · F(R·a))     (the original wedge applied again: a second, artificial wedge)
* target = R·b
* loss   = mean|F⁻¹(R(M)·M·F(t − y))|² + w · mean|F⁻¹(R(M)·(1−M)·F(t − y))|²,  w = 2 by default;
  coefficients outside R(M) (unmeasured in the target) never count. For a loss spec other than
  ``l2`` the spec's loss compares the R(M)-filtered prediction and target instead.

Every ``refill_every`` epochs (default 10) the stored input boxes get their missing wedge filled
with the model's prediction, their measured coefficients kept: v ← F⁻¹(M·F(v₀) + (1−M)·F(f(v))).
Rotation and masking run on the training device.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cryorestore import fourier
from cryorestore.errors import InputError
from cryorestore.methods.base import Batch, TrainingMethod, even_odd_inputs


def wedge_masks(shape: Sequence[int], tilt_range: tuple[float, float], rotations: torch.Tensor | None,
                device: torch.device | str) -> torch.Tensor:
    """Analytic rfft-grid wedge mask(s): (Z, Y, Xr) without rotations, (B, Z, Y, Xr) with (B, 3, 3) on zyx.

    Built by :func:`cryorestore.native.wedge_mask` (the C++/CUDA kernel when built, else its torch twin).
    """
    from cryorestore import native

    rot = None if rotations is None else rotations.to(device=device, dtype=torch.float64)
    return native.wedge_mask(tuple(shape), tilt_range[0], tilt_range[1], rotations=rot,
                             device=device).to(device=device, dtype=torch.float32)


def random_rotations_torch(n: int, rng: np.random.Generator, device: torch.device | str) -> torch.Tensor:
    """(n, 3, 3) uniformly random rotations (float32) on the given device."""
    from cryorestore.geometry import random_rotations

    return torch.as_tensor(random_rotations(n, rng), dtype=torch.float32, device=device)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Crop (…, E, E, E) to (…, size, size, size) keeping voxel E//2 at voxel size//2."""
    e = x.shape[-1]
    s = e // 2 - size // 2
    return x[..., s:s + size, s:s + size, s:s + size]


def rotate_and_crop(x: torch.Tensor, rot: torch.Tensor, size: int) -> torch.Tensor:
    """Rotate (B, C, E, E, E) boxes actively by (B, 3, 3) zyx matrices about voxel E//2, crop to ``size``."""
    from cryorestore.geometry import rotate_volumes_torch

    return center_crop(rotate_volumes_torch(x, rot), size).contiguous()


def extract_size_for_rotation(crop: int) -> int:
    """Box edge (voxels) such that every 3D rotation of it still covers a centred ``crop``³ cube.

    A cube's corners lie √3·crop/2 from its centre, so an arbitrary 3D rotation needs
    ``ceil(√3·crop) + 2`` (one voxel of interpolation margin per side; ≥ the √2·crop that suffices
    for rotations about one axis only), rounded up so that box and crop share their centre parity.
    """
    e = math.ceil(math.sqrt(3.0) * crop) + 2
    return e + ((e - crop) % 2)


def run_model_padded(model: torch.nn.Module, x: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    """Apply ``model`` to (B, 1, Z, Y, X) after reflect-padding each axis up to a multiple of ``multiple``."""
    pads = []
    for n in reversed(x.shape[-3:]):
        extra = (-n) % multiple
        pads += [extra // 2, extra - extra // 2]
    xp = F.pad(x, pads, mode="reflect") if any(pads) else x
    y = model(xp)
    z0, y0, x0 = pads[4], pads[2], pads[0]
    return y[..., z0:z0 + x.shape[-3], y0:y0 + x.shape[-2], x0:x0 + x.shape[-1]]


@torch.no_grad()
def refill_wedge(model: torch.nn.Module, original: torch.Tensor, filled: torch.Tensor,
                 tilt_range: tuple[float, float], batch_size: int = 8, multiple: int = 16,
                 progress: bool = True) -> None:
    """In place: ``filled`` (N, C, E, E, E) ← F⁻¹(M·F(original) + (1−M)·F(model(filled))) per channel.

    The boxes may live in host memory: each batch goes to the model's device and comes back.
    """
    from cryorestore.progress import progress_bar

    was_training = model.training
    model.eval()
    dev = next(model.parameters(), filled).device  # a parameterless model runs where the boxes are
    m = wedge_masks(original.shape[-3:], tilt_range, None, dev)
    for i in progress_bar(range(0, filled.shape[0], batch_size), desc="refilling the wedge", unit="batch",
                          enabled=progress, leave=False):
        for c in range(filled.shape[1]):
            cur = filled[i:i + batch_size, c:c + 1].to(dev)
            pred = run_model_padded(model, cur, multiple).float()
            f_orig = torch.fft.rfftn(original[i:i + batch_size, c:c + 1].to(dev), dim=(-3, -2, -1))
            f_pred = torch.fft.rfftn(pred, dim=(-3, -2, -1))
            new = torch.fft.irfftn(m * f_orig + (1 - m) * f_pred, s=cur.shape[-3:], dim=(-3, -2, -1))
            filled[i:i + batch_size, c:c + 1] = new.to(filled.device)
    model.train(was_training)


class DeepDeWedge(TrainingMethod):
    """Masked Noise2Noise on randomly rotated half-set boxes with an artificial second wedge."""

    name = "deepdewedge"
    paired = "required"
    default_loss = "l2"
    tta_quarter_turns = (0, 2)  # wedge-preserving turns only: see TrainingMethod

    def __init__(self, loss: str = "l2", tilt_range: tuple[float, float] = (-60.0, 60.0),
                 crop: int = 32, wedge_weight: float = 2.0, refill_every: int = 10, **_: Any) -> None:
        from cryorestore.losses import build_training_loss

        fourier.check_tilt_range(*tilt_range)
        if wedge_weight < 0:
            raise InputError(f"--wedge-weight must be >= 0, got {wedge_weight}")
        self.loss_spec = loss
        self.tilt_range = (float(tilt_range[0]), float(tilt_range[1]))
        self.crop = int(crop)
        self.wedge_weight = float(wedge_weight)
        self.refill_every = int(refill_every)
        self.criterion = None if loss == "l2" else build_training_loss(loss)

    def extract_size(self, crop: int) -> int:
        return extract_size_for_rotation(crop)

    def make_batch(self, raw: torch.Tensor, rng: np.random.Generator,
                   filled: torch.Tensor | None = None) -> Batch:
        if raw.ndim != 5 or raw.shape[1] != 2:
            raise InputError("deepdewedge needs even and odd half tomograms (give --odd)")
        src = raw if filled is None else filled
        b, dev = raw.shape[0], raw.device
        swap = torch.as_tensor(rng.integers(0, 2, size=b).astype(bool), device=dev).view(b, 1, 1, 1)
        a = torch.where(swap, src[:, 1], src[:, 0]).unsqueeze(1)
        t = torch.where(swap, raw[:, 0], raw[:, 1]).unsqueeze(1)
        rot = random_rotations_torch(b, rng, dev)
        both = rotate_and_crop(torch.cat([a, t], dim=1), rot, self.crop)
        wedge = wedge_masks((self.crop,) * 3, self.tilt_range, None, dev)
        rot_wedge = wedge_masks((self.crop,) * 3, self.tilt_range, rot, dev)
        inp = fourier.apply_fourier_mask(both[:, :1], wedge).contiguous()
        tgt = both[:, 1:].contiguous()
        return inp, tgt, {"wedge": wedge.view(1, 1, *wedge.shape), "rot_wedge": rot_wedge.unsqueeze(1)}

    def validation_batch(self, raw: torch.Tensor, rng: np.random.Generator) -> Batch:
        """Input from the unrefilled half (not the refilled store), target the raw other half: fixed."""
        return self.make_batch(raw, rng)

    def start_epoch(self, epoch: int) -> None:
        """Nothing depends on the epoch (refills are scheduled by the trainer)."""

    def loss(self, pred: torch.Tensor, target: torch.Tensor, ctx: dict) -> torch.Tensor:
        pred = pred.float()
        if self.criterion is None:
            from cryorestore.losses import masked_fourier_loss

            return masked_fourier_loss(pred, target, ctx["rot_wedge"], ctx["wedge"],
                                       weight_inside=1.0, weight_missing=self.wedge_weight)
        return self.criterion(fourier.apply_fourier_mask(pred, ctx["rot_wedge"]),
                              fourier.apply_fourier_mask(target, ctx["rot_wedge"]))

    def refill(self, model: torch.nn.Module, original: torch.Tensor, filled: torch.Tensor, batch_size: int = 8,
               progress: bool = True) -> None:
        refill_wedge(model, original, filled, self.tilt_range, batch_size, progress=progress)

    @staticmethod
    def prediction_inputs(even: np.ndarray, odd: np.ndarray | None) -> Sequence[np.ndarray]:
        """The mean of f(even) and f(odd); f(v) alone when only one volume is given."""
        return even_odd_inputs(even, odd)
