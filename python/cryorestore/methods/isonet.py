"""IsoNet (Liu et al. 2022): missing-wedge filling from a single map, iteratively refined.

Single-map mode (one volume per dataset): with v the current wedge-filled box, R a random 3D
rotation and M the original missing wedge (tilt range about y),

* input  = F⁻¹(M · F(R·v))   (crop of the rotated box: a second wedge in a new direction)
* target = R·v
* loss   = the loss spec (IsoNet uses ``l1``) between prediction and target.

After every ``refill_every`` epochs (default 1: IsoNet's "iterations") the stored boxes are refilled:
v ← F⁻¹(M·F(v₀) + (1−M)·F(f(v))), measured coefficients kept. Optional noise-addition schedule:
from epoch ``noise_epochs[i]`` on, Gaussian noise filtered by M with standard deviation
``noise_levels[i]`` × the input's standard deviation is added to the input (IsoNet's denoising mode).

Joint even/odd mode (IsoNet2's n2n mode, chosen when both halves are given): the input comes from
one half's filled box, the target from the other half's filled box (halves swapped at random).
Boxes are extracted at ``ceil(√3·crop) + 2`` (see DeepDeWedge) and rotated/cropped on the training device.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from cryorestore import fourier
from cryorestore.errors import InputError
from cryorestore.methods.base import Batch, TrainingMethod, even_odd_inputs
from cryorestore.methods.deepdewedge import (extract_size_for_rotation, random_rotations_torch,
                                             refill_wedge, rotate_and_crop, wedge_masks)


class IsoNet(TrainingMethod):
    """Wedge filling by learning to undo an artificial second wedge on rotated, refilled boxes."""

    name = "isonet"
    paired = "optional"
    default_loss = "l1"
    tta_quarter_turns = (0, 2)  # wedge-preserving turns only: see TrainingMethod

    def __init__(self, loss: str = "l1", tilt_range: tuple[float, float] = (-60.0, 60.0), crop: int = 32,
                 refill_every: int = 1, noise_levels: Sequence[float] = (), noise_epochs: Sequence[int] = (),
                 **_: Any) -> None:
        from cryorestore.losses import build_training_loss

        fourier.check_tilt_range(*tilt_range)
        if len(noise_levels) != len(noise_epochs):
            raise InputError("noise schedule: give as many noise levels as start epochs")
        if any(n < 0 for n in noise_levels):
            raise InputError("noise levels must be >= 0")
        self.loss_spec = loss
        self.criterion = build_training_loss(loss)
        self.tilt_range = (float(tilt_range[0]), float(tilt_range[1]))
        self.crop = int(crop)
        self.refill_every = int(refill_every)
        self.noise_levels = [float(x) for x in noise_levels]
        self.noise_epochs = [int(x) for x in noise_epochs]
        self.epoch = 0

    def extract_size(self, crop: int) -> int:
        return extract_size_for_rotation(crop)

    def start_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of each epoch (0-based) to advance the noise schedule."""
        self.epoch = int(epoch)

    def noise_level(self) -> float:
        level = 0.0
        for lv, ep in sorted(zip(self.noise_levels, self.noise_epochs), key=lambda p: p[1]):
            if self.epoch >= ep:
                level = lv
        return level

    def make_batch(self, raw: torch.Tensor, rng: np.random.Generator,
                   filled: torch.Tensor | None = None) -> Batch:
        """Training batch: inputs and targets from the refilled boxes, noise added per the schedule."""
        return self._batch(raw, rng, filled, self.noise_level())

    def validation_batch(self, raw: torch.Tensor, rng: np.random.Generator) -> Batch:
        """Input and target from the unrefilled boxes and no added noise, so the target never moves."""
        return self._batch(raw, rng, None, 0.0)

    def _batch(self, raw: torch.Tensor, rng: np.random.Generator, filled: torch.Tensor | None,
               level: float) -> Batch:
        if raw.ndim != 5 or raw.shape[1] not in (1, 2):
            raise InputError("isonet expects boxes of one map or of an even/odd pair")
        src = raw if filled is None else filled
        b, dev = raw.shape[0], raw.device
        if src.shape[1] == 1:
            a = t = src
            both_in = src
        else:
            swap = torch.as_tensor(rng.integers(0, 2, size=b).astype(bool), device=dev).view(b, 1, 1, 1)
            a = torch.where(swap, src[:, 1], src[:, 0]).unsqueeze(1)
            t = torch.where(swap, src[:, 0], src[:, 1]).unsqueeze(1)
            both_in = torch.cat([a, t], dim=1)
        rot = random_rotations_torch(b, rng, dev)
        rotated = rotate_and_crop(both_in, rot, self.crop)
        tgt = rotated[:, -1:].contiguous()
        wedge = wedge_masks((self.crop,) * 3, self.tilt_range, None, dev)
        inp = fourier.apply_fourier_mask(rotated[:, :1], wedge)
        if level > 0:
            noise = torch.as_tensor(rng.standard_normal(inp.shape), dtype=inp.dtype, device=dev)
            noise = fourier.apply_fourier_mask(noise, wedge)
            noise = noise / noise.flatten(1).std(dim=1).clamp(min=1e-12).view(b, 1, 1, 1, 1)
            inp = inp + level * inp.flatten(1).std(dim=1).view(b, 1, 1, 1, 1) * noise
        return inp.contiguous(), tgt, {}

    def loss(self, pred: torch.Tensor, target: torch.Tensor, ctx: dict) -> torch.Tensor:
        return self.criterion(pred.float(), target)

    def refill(self, model: torch.nn.Module, original: torch.Tensor, filled: torch.Tensor, batch_size: int = 8,
               progress: bool = True) -> None:
        refill_wedge(model, original, filled, self.tilt_range, batch_size, progress=progress)

    @staticmethod
    def prediction_inputs(even: np.ndarray, odd: np.ndarray | None) -> Sequence[np.ndarray]:
        """f(v) of the single map, or the mean of f(even) and f(odd) in joint mode."""
        return even_odd_inputs(even, odd)
