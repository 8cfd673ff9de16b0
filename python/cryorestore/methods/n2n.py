"""Noise2Noise (cryoCARE): predict one half tomogram from the other.

Input: a box from the even half, target: the same box from the odd half, or the other way round
(chosen at random per sample). Augmentation: input and target are rotated together by the same
random multiple of 90° about the tilt axis y (in the (z, x) plane); the paper found this critical.
Loss: any :func:`cryorestore.losses.build_loss` spec (``l2`` as in cryoCARE, ``l1``, ``fsc``, ``l2+fsc``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from cryorestore.errors import InputError
from cryorestore.methods.base import Batch, TrainingMethod, even_odd_inputs


def rotate90_about_y(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each (…, Z, Y, X) sample ``b`` of ``x`` (B, C, Z, Y, X) by ``k[b]·90°`` in the (z, x) plane."""
    out = torch.empty_like(x)
    for q in range(4):
        sel = k == q
        if bool(sel.any()):
            out[sel] = torch.rot90(x[sel], q, dims=(-3, -1))
    return out


class Noise2Noise(TrainingMethod):
    """cryoCARE-style even ↔ odd training with 90° rotations about the tilt axis."""

    name = "n2n"
    paired = "required"
    default_loss = "l2"

    def __init__(self, loss: str = "l2", rotate: bool = True, **_: Any) -> None:
        from cryorestore.losses import build_training_loss

        self.loss_spec = loss
        self.criterion = build_training_loss(loss)
        self.rotate = rotate
        self.refill_every = 0

    def extract_size(self, crop: int) -> int:
        return int(crop)

    def make_batch(self, raw: torch.Tensor, rng: np.random.Generator, filled: torch.Tensor | None = None) -> Batch:
        if raw.ndim != 5 or raw.shape[1] != 2:
            raise InputError("n2n needs even and odd half tomograms (give --odd)")
        b = raw.shape[0]
        swap = torch.as_tensor(rng.integers(0, 2, size=b).astype(bool), device=raw.device)
        inp = torch.where(swap.view(b, 1, 1, 1), raw[:, 1], raw[:, 0]).unsqueeze(1)
        tgt = torch.where(swap.view(b, 1, 1, 1), raw[:, 0], raw[:, 1]).unsqueeze(1)
        if self.rotate:
            k = torch.as_tensor(rng.integers(0, 4, size=b), device=raw.device)
            inp, tgt = rotate90_about_y(inp, k), rotate90_about_y(tgt, k)
        return inp.contiguous(), tgt.contiguous(), {}

    def validation_batch(self, raw: torch.Tensor, rng: np.random.Generator) -> Batch:
        """The training pairing (targets are the raw other half, which never changes)."""
        return self.make_batch(raw, rng)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, ctx: dict) -> torch.Tensor:
        return self.criterion(pred, target)

    def start_epoch(self, epoch: int) -> None:
        """Nothing depends on the epoch."""

    def refill(self, model: torch.nn.Module, original: torch.Tensor, filled: torch.Tensor, batch_size: int = 8,
               progress: bool = True) -> None:
        """Noise2Noise has no missing wedge to refill (``refill_every`` is 0, so this is never called)."""

    @staticmethod
    def prediction_inputs(even: np.ndarray, odd: np.ndarray | None) -> Sequence[np.ndarray]:
        """cryoCARE: the mean of f(even) and f(odd); f(v) alone when only one volume is given."""
        return even_odd_inputs(even, odd)
