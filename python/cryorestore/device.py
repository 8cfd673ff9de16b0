"""Where to compute: turn the ``auto|cpu|cuda`` device names of every command into a torch device.

A core module (no command-line code): :mod:`cryorestore.train` and the commands share it, and
:mod:`cryorestore.cli.common` re-exports it for the commands.
"""

from __future__ import annotations

import torch

from cryorestore.errors import InputError

DEVICE_NAMES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """Turn ``auto|cpu|cuda`` into a torch device; asking for CUDA without a GPU is an input error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)
