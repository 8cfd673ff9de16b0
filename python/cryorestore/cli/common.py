"""Options and helpers shared by the command modules."""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from cryorestore.device import DEVICE_NAMES, resolve_device  # noqa: F401  (re-exported for the commands)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda`` (auto: CUDA when available)."""
    parser.add_argument("--device", choices=DEVICE_NAMES, default="auto",
                        help="where to compute: auto picks CUDA when a GPU is present (default: auto)")


def add_seed_option(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--seed", type=int, default=default, help=f"random seed for reproducible runs (default: {default})")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def tilt_range(values: list[float] | tuple[float, float]) -> tuple[float, float]:
    """Validate a ``--tilt-range MIN MAX`` pair in degrees (see :func:`fourier.check_tilt_range`)."""
    from cryorestore.fourier import check_tilt_range

    lo, hi = float(values[0]), float(values[1])
    check_tilt_range(lo, hi)
    return lo, hi


def positive(kind: type = float):
    """argparse type: a strictly positive number."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return v

    return parse


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """``--tta`` and ``--combine``: what prediction does with the trained network (default: the preset's)."""
    from cryorestore.ensemble import COMBINE_MODES, TTA_MODES

    parser.add_argument("--tta", choices=TTA_MODES, default=None,
                        help="test-time augmentation of every tile: none, rot (turns about y: the 4 quarter turns for "
                             "n2n, the half turn for the wedge methods, whose networks fill the wedge in one "
                             "orientation) or rot+flip (also mirrored along y) (default: the preset's)")
    parser.add_argument("--combine", choices=COMBINE_MODES, default=None,
                        help="mean of f(even) and f(odd); mean+lowpass: that mean low-passed at the half maps' "
                             "FSC=0.143 frequency; calibrated: per-shell weights of the mean and the raw map fitted "
                             "against the other half map (default: the preset's)")


def add_volume_options(parser: argparse.ArgumentParser, bin: bool = True) -> None:
    """``--zarr-level N`` (which OME-Zarr level to read) and, with ``bin``, ``--bin 1|2|4`` (Fourier binning at load)."""
    parser.add_argument("--zarr-level", type=int, default=0, metavar="N",
                        help="OME-Zarr inputs: the multiscale level to read (0 = full resolution, each next level "
                             "binned by 2; its scale gives the voxel size) (default: 0)")
    if bin:
        from cryorestore.volume_io import BIN_FACTORS

        parser.add_argument("--bin", type=int, choices=BIN_FACTORS, default=1,
                            help="bin every input map by this factor in Fourier space at load (crop of the centred "
                                 "spectrum); voxel sizes in every output are multiplied by it (default: 1)")
