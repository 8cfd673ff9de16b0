"""3D restoration networks mapping (B, 1, Z, Y, X) volumes to the same shape.

``build_model(name, residual=True, **options)`` builds one of :data:`MODEL_NAMES`:

* ``unet``      classic encoder/decoder with skip connections (DeepDeWedge-like defaults),
* ``msdnet``    mixed-scale dense network (Pelt & Sethian 2018): width 1, dilated convolutions,
                every layer sees all previous maps; tens of thousands of parameters,
* ``scunet``    Swin-Conv U-Net (Zhang et al. 2023) in 3D: residual convolutions and shifted-window
                self-attention over 3D windows,
* ``swinunetr`` MONAI's SwinUNETR (Tang et al. 2022).

Every network is wrapped in :class:`Restorer`, which pads the input (reflect) to the size the
architecture needs, crops back, and with ``residual=True`` returns ``input + net(input)``. Inputs
are float (B, 1, Z, Y, X) with axes (z, y, x); any size divisible by 16 works (others too, through
padding). ``default_options(name)`` is the full option dict (including ``residual``) to save in a
model config so that ``build_model(name, **options)`` rebuilds the same network.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from cryorestore.errors import InputError

MODEL_NAMES = ("unet", "msdnet", "scunet", "swinunetr")

# name -> (module, factory function). Each factory takes keyword-only options with defaults and
# returns (network, multiple): the network maps (B, 1, Z', Y', X') to the same shape for every size
# that is a multiple of ``multiple``.
_FACTORIES = {
    "unet": ("cryorestore.models.unet", "make_unet"),
    "msdnet": ("cryorestore.models.msdnet", "make_msdnet"),
    "scunet": ("cryorestore.models.scunet", "make_scunet"),
    "swinunetr": ("cryorestore.models.swinunetr", "make_swinunetr"),
}


def _factory(name: str) -> Callable[..., tuple[nn.Module, int]]:
    if name not in _FACTORIES:
        raise InputError(f"model '{name}' is unknown; choose one of {', '.join(MODEL_NAMES)}")
    mod, fn = _FACTORIES[name]
    return getattr(importlib.import_module(mod), fn)


def default_options(name: str) -> dict[str, Any]:
    """The full option dict of network ``name`` with its defaults, plus ``residual`` (True).

    JSON-serialisable; ``build_model(name, **default_options(name))`` builds the default network.
    """
    sig = inspect.signature(_factory(name))
    opts: dict[str, Any] = {"residual": True}
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            d = p.default
            opts[p.name] = list(d) if isinstance(d, tuple) else d
    return opts


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Pad the last three axes of ``x`` at their far end up to a multiple of ``multiple`` voxels.

    Each axis is padded by reflection where it is long enough (padding < size), by replication
    otherwise. Returns the padded tensor and the original (Z, Y, X) size to crop back to.
    """
    size = tuple(int(s) for s in x.shape[-3:])
    if multiple > 1:
        for axis, n in enumerate(size):
            extra = (-n) % multiple
            if extra:
                pad = [0] * 6
                pad[2 * (2 - axis) + 1] = extra  # F.pad lists (x_lo, x_hi, y_lo, y_hi, z_lo, z_hi)
                x = F.pad(x, tuple(pad), mode="reflect" if extra < n else "replicate")
    return x, size  # type: ignore[return-value]


class Restorer(nn.Module):
    """Wraps a network: pad to ``multiple``, apply, crop, and add the input when ``residual``."""

    def __init__(self, net: nn.Module, name: str, multiple: int = 1, residual: bool = True,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.multiple = int(multiple)
        self.residual = bool(residual)
        self.options = dict(options or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"{self.name} expects (B, 1, Z, Y, X) input, got shape {tuple(x.shape)}")
        xp, (z, y, w) = pad_to_multiple(x, self.multiple)
        out = self.net(xp)[..., :z, :y, :w]
        return x + out if self.residual else out

    def extra_repr(self) -> str:
        return f"name={self.name!r}, residual={self.residual}, multiple={self.multiple}"


def build_model(name: str, *, residual: bool = True, **options: Any) -> nn.Module:
    """Build network ``name`` (one of :data:`MODEL_NAMES`) with per-network ``options``.

    ``residual=True``: output = input + net(input). Unknown names or options raise
    :class:`cryorestore.errors.InputError` (a ``ValueError``) listing the valid ones. The result
    maps float (B, 1, Z, Y, X) to the same shape.
    """
    factory = _factory(name)
    valid = {p.name for p in inspect.signature(factory).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY}
    bad = sorted(set(options) - valid)
    if bad:
        raise InputError(f"unknown option(s) {', '.join(bad)} for model '{name}'; valid: {', '.join(sorted(valid))}")
    net, multiple = factory(**options)
    full = default_options(name)
    full.update(options)
    full["residual"] = bool(residual)
    return Restorer(net, name, multiple, residual, full)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


__all__ = ["MODEL_NAMES", "build_model", "default_options", "count_parameters", "pad_to_multiple", "Restorer"]
