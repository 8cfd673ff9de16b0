"""Tomograms from a tilt series: weighted back-projection of the full series and of two half sets.

Half sets (training pairs never share noise; see ``docs/architecture.md``)
--------------------------------------------------------------------------
* T2T (tilt to tilt): ``even`` = images 0, 2, 4, … of the stack, ``odd`` = images 1, 3, 5, …,
  ``full`` = all images; each is reconstructed with its own angular weights, so all three are on the
  same density scale.
* F2F (frame to frame): the stack holds ``frames`` frames per tilt, tilt by tilt (images
  ``i·frames … (i+1)·frames − 1`` belong to tilt ``i``). Per tilt the mean of the even frames and the mean
  of the odd frames make the two half series, the mean of all frames the full one; all three are
  reconstructed from every tilt.

Geometry and filtering are those of :mod:`cryorestore.projection` (tilt axis y, angles in degrees,
stacks (n, Y, X), tomograms (Z, Y, X) with Z = ``thickness``). The stack is reconstructed as given:
no contrast inversion, so an intensity tilt series (dark particles) gives negative particle density;
invert it first if positive density is wanted (the simulator's stacks are already density-like).

CTF correction (optional): with per-tilt CTF estimates (:func:`cryorestore.ctf.read_ctffind`) every
image is phase-flipped before back-projection, in strips along the tilt axis that follow the defocus
gradient of the tilted image (handedness of :mod:`cryorestore.projection`: at positive tilt +x is
more underfocused). For F2F the even and odd frame means of a tilt are flipped with that tilt's CTF.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from cryorestore import ctf as ctfmod
from cryorestore.errors import InputError
from cryorestore.projection import backproject, check_angles

DeviceLike = torch.device | str | None


def default_thickness(width: int) -> int:
    """Default tomogram thickness in voxels when none is given: a quarter of the detector width
    (at least 16), the usual aspect of a thin-specimen tomogram (e.g. 64 for a 256-pixel detector)."""
    return max(16, int(width) // 4)


def _check_stack(stack: np.ndarray) -> np.ndarray:
    s = np.asarray(stack)
    if s.ndim != 3:
        raise InputError(f"a tilt series must be a (n_images, Y, X) stack, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise InputError("the tilt series contains NaN or infinite values; fix or remove those images")
    return s.astype(np.float32, copy=False)


def _check_thickness(thickness: int | None, width: int) -> int:
    if thickness is None:
        return default_thickness(width)
    t = int(thickness)
    if t < 1:
        raise InputError(f"thickness must be a positive number of voxels, got {thickness}")
    return t


def _bp(stack: np.ndarray, angles: np.ndarray, thickness: int, device: DeviceLike, progress: bool) -> np.ndarray:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    vol = backproject(torch.from_numpy(np.ascontiguousarray(stack)).to(dev), angles, thickness, progress=progress)
    return vol.cpu().numpy().astype(np.float32)


def reconstruct_t2t(
    stack: np.ndarray,
    angles: Sequence[float] | np.ndarray,
    thickness: int | None = None,
    device: DeviceLike = None,
    progress: bool = False,
    timings: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """{'full', 'even', 'odd'} (thickness, Y, X) WBP tomograms of all, even and odd images of ``stack``."""
    s = _check_stack(stack)
    a = check_angles(angles, n_expected=s.shape[0])
    if s.shape[0] < 4:
        raise InputError(f"T2T needs at least 4 tilts (2 per half set), the series has {s.shape[0]}")
    t = _check_thickness(thickness, s.shape[2])
    out: dict[str, np.ndarray] = {}
    for name, sel in (("full", slice(None)), ("even", slice(0, None, 2)), ("odd", slice(1, None, 2))):
        t0 = time.perf_counter()
        out[name] = _bp(s[sel], a[sel], t, device, progress)
        if timings is not None:
            timings[f"backprojection_{name}"] = time.perf_counter() - t0
    return out


def reconstruct_f2f(
    even_stack: np.ndarray,
    odd_stack: np.ndarray,
    angles: Sequence[float] | np.ndarray,
    thickness: int | None = None,
    even_fraction: float = 0.5,
    device: DeviceLike = None,
    progress: bool = False,
    timings: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """{'full', 'even', 'odd'} tomograms from the even-frame and odd-frame half series (n, Y, X).

    ``even_fraction`` is the share of the dose (or of the frames) in the even half; the full series is
    ``even_fraction · even + (1 − even_fraction) · odd`` per image, and since back-projection is linear
    the full tomogram is that same combination of the half tomograms (computed so, not a third time).
    """
    e, o = _check_stack(even_stack), _check_stack(odd_stack)
    if e.shape != o.shape:
        raise InputError(f"even and odd frame series differ in shape: {e.shape} vs {o.shape}")
    a = check_angles(angles, n_expected=e.shape[0])
    if not 0.0 < even_fraction < 1.0:
        raise InputError(f"even_fraction must lie strictly between 0 and 1, got {even_fraction}")
    t = _check_thickness(thickness, e.shape[2])
    out: dict[str, np.ndarray] = {}
    for name, s in (("even", e), ("odd", o)):
        t0 = time.perf_counter()
        out[name] = _bp(s, a, t, device, progress)
        if timings is not None:
            timings[f"backprojection_{name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["full"] = (even_fraction * out["even"] + (1.0 - even_fraction) * out["odd"]).astype(np.float32)
    if timings is not None:
        timings["backprojection_full"] = time.perf_counter() - t0
    return {k: out[k] for k in ("full", "even", "odd")}


def split_frames(frames: np.ndarray, n_tilts: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-tilt means of the even and odd frames of a (n_tilts·F, Y, X) frame stack, and F.

    Frames are stored tilt by tilt; F must be a whole number ≥ 2.
    """
    s = _check_stack(frames)
    n = int(n_tilts)
    if n < 1 or s.shape[0] % n != 0 or s.shape[0] // n < 2:
        raise InputError(
            f"F2F needs the stack to hold the same number (>= 2) of frames for each of the {n} tilts, "
            f"but it has {s.shape[0]} images; give the frames tilt by tilt or use --split t2t"
        )
    f = s.shape[0] // n
    per_tilt = s.reshape(n, f, *s.shape[1:])
    return per_tilt[:, 0::2].mean(axis=1), per_tilt[:, 1::2].mean(axis=1), f


def reconstruct_halves(
    stack: np.ndarray,
    angles: Sequence[float] | np.ndarray,
    split: str = "t2t",
    thickness: int | None = None,
    device: DeviceLike = None,
    progress: bool = False,
    ctfs: Sequence[ctfmod.TiltCTF] | None = None,
    pixel_size: float | None = None,
    optics: ctfmod.Optics | None = None,
    strip: int = ctfmod.DEFAULT_STRIP,
) -> dict[str, np.ndarray]:
    """Full, even and odd (thickness, Y, X) tomograms of a user's stack (see the module docstring).

    T2T: ``stack`` is (n_tilts, Y, X) with one angle per image. F2F: ``stack`` is (n_tilts·F, Y, X)
    frames, tilt by tilt, with one angle per tilt. ``thickness`` defaults to
    :func:`default_thickness` of the detector width X. ``ctfs`` (one per tilt, stack order) switches
    on phase flipping; it needs ``pixel_size`` (Å) and uses ``optics`` (default 300 kV, 2.7 mm, 0.07)
    and strips of ``strip`` pixels.
    """
    if split not in ("t2t", "f2f"):
        raise InputError(f"split must be 't2t' or 'f2f', got {split!r}")
    a = check_angles(angles)
    if ctfs is not None:
        if len(ctfs) != a.size:
            raise InputError(f"{len(ctfs)} CTF rows for {a.size} tilts; give one row per tilt in stack order")
        if pixel_size is None or not pixel_size > 0:
            raise InputError("CTF correction needs the pixel size in Å (the stack's header has none)")
    opt = optics if optics is not None else ctfmod.Optics()

    def flip(s: np.ndarray) -> np.ndarray:
        return s if ctfs is None else ctfmod.phase_flip(s, a, ctfs, float(pixel_size), opt, strip)

    if split == "t2t":
        s = _check_stack(stack)
        if s.shape[0] != a.size:
            raise InputError(f"the tilt series has {s.shape[0]} images but {a.size} tilt angles were given; the counts must match")
        return reconstruct_t2t(flip(s), a, thickness, device=device, progress=progress)
    even, odd, f = split_frames(stack, a.size)
    n_even = (f + 1) // 2
    # the full series is the mean of all F frames = (n_even · even_mean + n_odd · odd_mean) / F
    return reconstruct_f2f(flip(even), flip(odd), a, thickness, even_fraction=n_even / f, device=device, progress=progress)
