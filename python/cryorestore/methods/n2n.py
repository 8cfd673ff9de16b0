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


def rotate90_about_y(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each (…, Z, Y, X) sample ``b`` of ``x`` (B, C, Z, Y, X) by ``k[b]·90°`` in the (z, x) plane."""
    out = torch.empty_like(x)
    for q in range(4):
        sel = k == q
        if bool(sel.any()):
            out[sel] = torch.rot90(x[sel], q, dims=(-3, -1))
    return out


class Noise2Noise:
    """cryoCARE-style even ↔ odd training with 90° rotations about the tilt axis."""

    name = "n2n"
    paired = "required"
    refill_every = 0

    def __init__(self, loss: str = "l2", rotate: bool = True, **_: Any) -> None:
        from cryorestore.losses import build_loss

        self.loss_spec = loss
        self.criterion = build_loss(loss)
        self.rotate = rotate

    def extract_size(self, crop: int) -> int:
        return int(crop)

    def make_batch(self, raw: torch.Tensor, rng: np.random.Generator, filled: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
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

    def loss(self, pred: torch.Tensor, target: torch.Tensor, ctx: dict) -> torch.Tensor:
        return self.criterion(pred, target)

    @staticmethod
    def prediction_inputs(even: np.ndarray, odd: np.ndarray | None) -> Sequence[np.ndarray]:
        """cryoCARE: the mean of f(even) and f(odd); f(v) alone when only one volume is given."""
        return (even,) if odd is None else (even, odd)
