"""Mixed precision for training: which autocast dtype a device gets, and whether it needs a GradScaler.

* CUDA with native bf16 (compute capability ≥ 8.0: Ampere, Hopper, …) → bf16 autocast, no scaler
  (bf16 has float32's exponent range, so gradients do not underflow).
* CUDA without native bf16 (V100 = 7.0, T4 = 7.5, …) → fp16 autocast with a
  :class:`torch.amp.GradScaler`. ``torch.cuda.is_bf16_supported()`` is not used for this choice: it
  also returns True where bf16 is only emulated, which is slower than float32 there.
* CPU, or AMP switched off → no autocast (float32), no scaler.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

NATIVE_BF16_CAPABILITY = (8, 0)


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype for training on ``device`` (``None``: no autocast, plain float32)."""
    if not enabled or device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if (major, minor) >= NATIVE_BF16_CAPABILITY else torch.float16


@dataclass
class Precision:
    """An autocast dtype (or ``None``) for ``device`` and the GradScaler that fp16 needs (else ``None``)."""

    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    def autocast(self) -> ContextManager:
        """Context for the forward pass: autocast to ``dtype``, or nothing when ``dtype`` is None."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        if self.dtype is None:
            return "float32"
        name = str(self.dtype).removeprefix("torch.")
        return f"{name} autocast" + (" + GradScaler" if self.scaler is not None else "")


def training_precision(device: torch.device, enabled: bool = True) -> Precision:
    """Choose the training precision for ``device`` (see the module docstring)."""
    dtype = autocast_dtype(device, enabled)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return Precision(device, dtype, scaler)
