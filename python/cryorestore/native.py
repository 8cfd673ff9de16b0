"""Native (C++/CUDA) kernels with pure-torch fallbacks.

The extension in ``csrc/`` (``torch.utils.cpp_extension``, pybind11, ninja) is built on first use
and cached in ``$CRYORESTORE_NATIVE_CACHE`` (default ``~/.cache/cryorestore/native``), one folder per
hash of the sources, the torch and Python versions and the build flags; a file lock makes a second
process wait for (and then reuse) a build in progress. ``make setup`` pre-builds it with
``python -m cryorestore.native --build``. CUDA sources are compiled in only when a CUDA toolkit
*and* a GPU are present.

Every entry point has the signature of its torch twin and falls back to it, with one warning per
process, when the extension cannot be built or loaded (no compiler, no ninja, no sources), when a
CUDA tensor meets a CPU-only build, or when ``CRYORESTORE_NATIVE=0`` forces the twins:

================================  ==================================================
native                            torch twin
================================  ==================================================
:func:`fsc_shells`                :func:`cryorestore.fourier.fsc_shell_sums`
:func:`wedge_mask`                :func:`cryorestore.fourier.missing_wedge_mask`
:func:`apply_wedge`               ``spectra.mul_(missing_wedge_mask(...))``
:func:`blend_tiles`               :func:`cryorestore.tiling.blend_tiles_torch`
================================  ==================================================

Conventions: arrays are (z, y, x), spectra are ``torch.fft.rfftn`` half-spaces (B, Z, Y, X//2+1),
frequencies in cycles/voxel, tilt angles in degrees.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np
import torch

from cryorestore import fourier

_CPU_SOURCES = ("bindings.cpp", "fsc_cpu.cpp", "wedge_cpu.cpp", "blend_cpu.cpp")
_CUDA_SOURCES = ("fsc_cuda.cu", "wedge_cuda.cu", "blend_cuda.cu")
_HEADERS = ("native.h", "wedge_rule.h", "kernels_cuda.h")
_CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off")
_LDFLAGS = ("-fopenmp",)
_CUDA_CFLAGS = ("-O3",)
_MARKER = "BUILD_OK"

# the wedge rule's tolerances, as in fourier.wedge_mask_from_frequencies / missing_wedge_mask; the
# kernels take the line-angle bounds [-tilt_max, -tilt_min] (tilt θ measures the line at angle -θ)
WEDGE_EPS_DEG = 1e-6
WEDGE_TINY = 1e-12

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "ext": None, "reason": None, "warned": set()}


# --------------------------------------------------------------------------------------------
# building and loading
# --------------------------------------------------------------------------------------------
def source_dir() -> Path:
    """Folder holding the C++/CUDA sources (``$CRYORESTORE_CSRC`` or the repository's ``csrc/``)."""
    env = os.environ.get("CRYORESTORE_CSRC")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "csrc"


def cache_root() -> Path:
    """Root of the build cache (``$CRYORESTORE_NATIVE_CACHE`` or ``~/.cache/cryorestore/native``)."""
    env = os.environ.get("CRYORESTORE_NATIVE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cryorestore" / "native"


def disabled() -> bool:
    """True when ``CRYORESTORE_NATIVE=0`` (or ``false``/``no``/``off``) forces the torch twins."""
    return os.environ.get("CRYORESTORE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _force_cuda() -> bool:
    """``FORCE_CUDA=1`` asks for the CUDA path without a GPU present (container builds on GPU-less hosts)."""
    return os.environ.get("FORCE_CUDA", "0").strip().lower() in ("1", "true", "yes", "on")


def _want_cuda() -> bool:
    from torch.utils.cpp_extension import CUDA_HOME

    if not CUDA_HOME or torch.version.cuda is None:  # no toolkit, or a CPU-only torch build
        return False
    return bool(torch.cuda.is_available() or _force_cuda())


def _build_key(with_cuda: bool) -> str:
    h = hashlib.sha256()
    src = source_dir()
    names = _CPU_SOURCES + _HEADERS + (_CUDA_SOURCES if with_cuda else ())
    for name in names:
        h.update(name.encode())
        h.update((src / name).read_bytes())
    h.update(repr((torch.__version__, sys.version_info[:2], _CFLAGS, _LDFLAGS, _CUDA_CFLAGS, with_cuda)).encode())
    return h.hexdigest()[:16]


def _import_built(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FileLock:
    """Exclusive advisory lock on a file (fcntl), so that concurrent processes build one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> "_FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): rely on torch's own build baton
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def _build_or_import(with_cuda: bool, verbose: bool = False) -> ModuleType:
    """Import the cached build for this configuration, building it first (under a lock) if needed."""
    src = source_dir()
    missing = [n for n in _CPU_SOURCES + _HEADERS + (_CUDA_SOURCES if with_cuda else ()) if not (src / n).is_file()]
    if missing:
        raise FileNotFoundError(f"native sources not found in {src} (missing {', '.join(missing)})")
    key = _build_key(with_cuda)
    name = f"cryorestore_native_{'cuda' if with_cuda else 'cpu'}_{key}"
    build_dir = cache_root() / name
    lib = build_dir / f"{name}.so"
    marker = build_dir / _MARKER
    if marker.is_file() and lib.is_file():
        return _import_built(name, lib)
    with _FileLock(cache_root() / f"{name}.lock"):
        if marker.is_file() and lib.is_file():  # another process finished it while we waited
            return _import_built(name, lib)
        from torch.utils.cpp_extension import load

        build_dir.mkdir(parents=True, exist_ok=True)
        sources = [str(src / n) for n in _CPU_SOURCES]
        cflags = list(_CFLAGS)
        if with_cuda:
            sources += [str(src / n) for n in _CUDA_SOURCES]
            cflags.append("-DCRYORESTORE_WITH_CUDA")
        module = load(
            name=name,
            sources=sources,
            extra_cflags=cflags,
            extra_cuda_cflags=list(_CUDA_CFLAGS),
            extra_ldflags=list(_LDFLAGS),
            extra_include_paths=[str(src)],
            build_directory=str(build_dir),
            with_cuda=with_cuda,
            verbose=verbose,
        )
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(f"{name}\ntorch {torch.__version__}\ncuda {with_cuda}\n")
        os.replace(tmp, marker)
        return module


def _extension(verbose: bool = False) -> ModuleType | None:
    """The loaded extension, or None (with the reason in ``_state``) when the twins must be used."""
    if disabled():
        _state["reason"] = "CRYORESTORE_NATIVE=0 forces the torch twins"
        return None
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            errors = []
            for with_cuda in ([True, False] if _want_cuda() else [False]):
                try:
                    _state["ext"] = _build_or_import(with_cuda, verbose=verbose)
                    _state["reason"] = None
                    break
                except Exception as exc:  # no compiler/ninja/sources, a failed build: fall back
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    errors.append(f"{'CUDA' if with_cuda else 'CPU'} build: {first}")
            if _state["ext"] is None:
                _state["reason"] = "; ".join(errors)
        return _state["ext"]


def _warn_once(key: str, message: str) -> None:
    if key not in _state["warned"]:
        _state["warned"].add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _native_for(device: torch.device) -> ModuleType | None:
    """The extension if it can run on ``device``; else None after one warning."""
    ext = _extension()
    if ext is None:
        _warn_once("fallback", f"cryorestore.native: using the pure-torch twins ({_state['reason']})")
        return None
    if device.type == "cuda" and not ext.with_cuda():
        _warn_once("cuda", "cryorestore.native: the extension was built without CUDA (no toolkit or no GPU at build "
                           "time); CUDA tensors use the pure-torch twins")
        return None
    if device.type not in ("cpu", "cuda"):
        _warn_once(f"device-{device.type}", f"cryorestore.native: no kernels for {device.type} tensors; using the twins")
        return None
    return ext


def is_compiled() -> bool:
    """Whether the compiled extension is in use (builds or loads it if that has not been tried)."""
    return _extension() is not None


def cuda_compiled() -> bool:
    """Whether the extension in use has its CUDA path compiled in."""
    ext = _extension()
    return bool(ext is not None and ext.with_cuda())


def build(verbose: bool = False) -> bool:
    """Build (or load the cached build of) the extension now; False, with a warning, if impossible."""
    with _lock:
        _state.update(tried=False, ext=None, reason=None)
    ext = _extension(verbose=verbose)
    if ext is None:
        _warn_once("fallback", f"cryorestore.native: extension not built, the torch twins will be used ({_state['reason']})")
    return ext is not None


def _reset_state() -> None:
    """Forget the loaded extension and the warnings shown (for tests)."""
    with _lock:
        _state.update(tried=False, ext=None, reason=None, warned=set())


# --------------------------------------------------------------------------------------------
# FSC shell sums
# --------------------------------------------------------------------------------------------
def _rfft_weights_flat(shape: tuple[int, int, int], xr: int, device: torch.device) -> torch.Tensor:
    return fourier.rfft_weights(shape, device=device).view(1, 1, 1, xr)


class _FscShells(torch.autograd.Function):
    """Native shell sums with a torch backward (gather of the shell gradients, rfft weights)."""

    @staticmethod
    def forward(ctx: Any, f1: torch.Tensor, f2: torch.Tensor, shells32: torch.Tensor, n: int, nx: int,
                ext: ModuleType) -> torch.Tensor:
        ctx.save_for_backward(f1, f2, shells32)
        ctx.n, ctx.nx = n, nx
        return ext.fsc_shells(f1, f2, shells32, n, nx % 2 == 0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        f1, f2, shells32 = ctx.saved_tensors
        b, z, y, xr = f1.shape
        g = torch.cat([grad, grad.new_zeros(b, 3, 1)], dim=2)  # bin n = excluded → gradient 0
        per = g[:, :, shells32.reshape(-1).long()].view(b, 3, z, y, xr)
        w = _rfft_weights_flat((z, y, ctx.nx), xr, f1.device)
        real = f1.real.dtype
        g_num = (per[:, 0] * w).to(real)
        g_p1 = (2.0 * per[:, 1] * w).to(real)
        g_p2 = (2.0 * per[:, 2] * w).to(real)
        d1 = g_num * f2 + g_p1 * f1 if ctx.needs_input_grad[0] else None
        d2 = g_num * f1 + g_p2 * f2 if ctx.needs_input_grad[1] else None
        return d1, d2, None, None, None, None


def fsc_shells(f1: torch.Tensor, f2: torch.Tensor, shell_index: torch.Tensor, n_shells: int,
               nx: int | None = None, coefficient_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Shell sums (B, 3, n_shells) float64 of rfft spectra: Re Σ F1·conj F2, Σ|F1|², Σ|F2|² per shell.

    ``f1``, ``f2``: complex (B, Z, Y, X//2+1) or (Z, Y, X//2+1); ``shell_index``: int (Z, Y, X//2+1),
    values ≥ ``n_shells`` ignored; ``nx``: the real-space x size (default even, ``2·(Xr−1)``); the
    x = 0 plane and an even X's Nyquist plane count once, the others twice. Differentiable with
    respect to ``f1`` and ``f2``. ``coefficient_weights`` is handled by the twin
    (:func:`cryorestore.fourier.fsc_shell_sums`), as is any case the kernel does not cover.
    """
    if coefficient_weights is not None:
        return fourier.fsc_shell_sums(f1, f2, shell_index, n_shells, nx=nx, coefficient_weights=coefficient_weights)
    if f1.shape != f2.shape:
        raise ValueError(f"spectra differ in shape: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    if f1.ndim == 3:
        f1, f2 = f1.unsqueeze(0), f2.unsqueeze(0)
    if f1.ndim != 4:
        raise ValueError(f"spectra must be (B, Z, Y, Xr) or (Z, Y, Xr), got shape {tuple(f1.shape)}")
    xr = f1.shape[-1]
    nx_ = 2 * (xr - 1) if nx is None else int(nx)
    if nx_ // 2 + 1 != xr:
        raise ValueError(f"nx={nx_} does not match an rfft grid with {xr} x-planes")
    n = int(n_shells)
    if n < 1:
        raise ValueError(f"n_shells must be >= 1, got {n_shells}")
    if tuple(shell_index.shape) != tuple(f1.shape[1:]):
        raise ValueError(f"shell index {tuple(shell_index.shape)} does not match the spectra {tuple(f1.shape[1:])}")
    ext = _native_for(f1.device)
    if ext is None or not (f1.is_complex() and f2.is_complex()) or f2.device != f1.device:
        return fourier.fsc_shell_sums(f1, f2, shell_index, n, nx=nx_)
    if f1.dtype != f2.dtype or f1.dtype not in (torch.complex64, torch.complex128):
        f1, f2 = f1.to(torch.complex128), f2.to(torch.complex128)
    idx = shell_index.to(f1.device)
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError("shell index must be >= 0 (values >= n_shells mark excluded coefficients)")
    shells32 = idx.clamp(max=n).to(torch.int32)
    if torch.is_grad_enabled() and (f1.requires_grad or f2.requires_grad):
        return _FscShells.apply(f1, f2, shells32, n, nx_, ext)
    return ext.fsc_shells(f1.detach(), f2.detach(), shells32, n, nx_ % 2 == 0)


# --------------------------------------------------------------------------------------------
# missing wedge
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
    kz, ky, kx = fourier.frequency_grid(shape, rfft=True, device=device, dtype=torch.float64)
    return kz.reshape(-1), ky.reshape(-1), kx.reshape(-1)


def _device_of(rotations: Any, device: fourier.DeviceLike) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(rotations, torch.Tensor):
        return rotations.device
    return torch.device("cpu")


def wedge_mask(shape: Sequence[int], tilt_min: float, tilt_max: float,
               rotations: torch.Tensor | np.ndarray | None = None, device: fourier.DeviceLike = None) -> torch.Tensor:
    """Float32 missing-wedge mask(s) on the rfft grid of a (Z, Y, X) volume; 1 = measured.

    Without ``rotations`` the result is (Z, Y, X//2+1); with ``rotations`` (B, 3, 3) (float64 matrices
    on (z, y, x) vectors) it is (B, Z, Y, X//2+1), mask b being the wedge of a volume rotated
    actively by ``rotations[b]``. Bit-identical to :func:`cryorestore.fourier.missing_wedge_mask`.
    Tilts in degrees; the device is ``device``, else that of ``rotations``, else the CPU.
    """
    shape3 = fourier.rfft_shape(shape)  # validates
    fourier.check_tilt_range(tilt_min, tilt_max)
    dev = _device_of(rotations, device)
    ext = _native_for(dev)
    if ext is None:
        return fourier.missing_wedge_mask(shape, tilt_min, tilt_max, rfft=True, rotations=rotations, device=dev)
    rot, batched = _rotations_tensor(rotations, dev)
    kz, ky, kx = _grid_vectors(shape, dev)
    assert kx.numel() == shape3[2]
    out = ext.wedge_mask(kz, ky, kx, rot, -float(tilt_max) - WEDGE_EPS_DEG, -float(tilt_min) + WEDGE_EPS_DEG, WEDGE_TINY)
    return out if batched else out[0]


class _ApplyWedge(torch.autograd.Function):
    """In-place wedge multiplication whose backward multiplies the gradient by the same masks."""

    @staticmethod
    def forward(ctx: Any, spectra: torch.Tensor, args: tuple, ext: ModuleType) -> torch.Tensor:
        ctx.mark_dirty(spectra)
        ctx.args, ctx.ext = args, ext
        ext.apply_wedge(spectra, *args)
        return spectra

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        g = grad.contiguous().clone()
        ctx.ext.apply_wedge(g, *ctx.args)
        return g, None, None


def apply_wedge(spectra: torch.Tensor, tilt_min: float, tilt_max: float,
                rotations: torch.Tensor | np.ndarray | None = None, nx: int | None = None) -> torch.Tensor:
    """Multiply rfft spectra (B, Z, Y, Xr) complex **in place** by their missing-wedge masks; returns them.

    ``rotations``: None (one unrotated wedge for all), (3, 3), or (B, 3, 3) matrices on (z, y, x)
    vectors (one per spectrum); ``nx``: the real-space x size (default ``2·(Xr−1)``). Twin:
    ``spectra.mul_(fourier.missing_wedge_mask((Z, Y, nx), tilt_min, tilt_max, rotations=rotations))``.
    Differentiable (the gradient is masked the same way). Tilts in degrees.
    """
    if not spectra.is_complex():
        raise ValueError(f"apply_wedge needs complex rfft spectra, got {spectra.dtype}")
    if spectra.ndim not in (3, 4):
        raise ValueError(f"spectra must be (B, Z, Y, Xr) or (Z, Y, Xr), got shape {tuple(spectra.shape)}")
    fourier.check_tilt_range(tilt_min, tilt_max)
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
    ext = _native_for(spectra.device)
    if ext is None or spectra.dtype not in (torch.complex64, torch.complex128) or not spectra.is_contiguous():
        mask = (wedge_mask if ext is not None else fourier.missing_wedge_mask)(
            (z, y, nx_), tilt_min, tilt_max, rotations=rotations, device=spectra.device)
        if spectra.ndim == 3 and mask.ndim == 4:
            mask = mask[0]
        return spectra.mul_(mask)
    kz, ky, kx = _grid_vectors((z, y, nx_), spectra.device)
    args = (kz, ky, kx, rot, -float(tilt_max) - WEDGE_EPS_DEG, -float(tilt_min) + WEDGE_EPS_DEG, WEDGE_TINY)
    view = spectra if spectra.ndim == 4 else spectra.unsqueeze(0)
    if torch.is_grad_enabled() and spectra.requires_grad:
        if spectra.ndim == 3:
            raise ValueError("differentiable apply_wedge needs a (B, Z, Y, Xr) batch")
        return _ApplyWedge.apply(spectra, args, ext)
    ext.apply_wedge(view.detach(), *args)
    return spectra


# --------------------------------------------------------------------------------------------
# tile blending
# --------------------------------------------------------------------------------------------
def blend_tiles(tiles: torch.Tensor, origins: torch.Tensor, window: torch.Tensor,
                out_shape: Sequence[int]) -> torch.Tensor:
    """Overlap-add ``Σ window·tile / Σ window`` of tiles (T, d, h, w) at ``origins`` (T, 3) (z, y, x).

    Returns float32 (Z, Y, X) on the tiles' device, 0 where no tile reaches; same result as
    :func:`cryorestore.tiling.blend_tiles_torch` (bit-identical on the CPU). Tiles that need
    gradients go through the twin.
    """
    from cryorestore.tiling import blend_tiles_torch, check_blend_inputs

    shape = check_blend_inputs(tiles, origins, window, out_shape)
    ext = _native_for(tiles.device)
    if ext is None or (torch.is_grad_enabled() and tiles.requires_grad):
        return blend_tiles_torch(tiles, origins, window, shape)
    t = tiles.detach().to(torch.float32).contiguous()
    o = origins.detach().to(device=t.device, dtype=torch.int64).contiguous()
    w = window.detach().to(device=t.device, dtype=torch.float32).contiguous()
    return ext.blend_tiles(t, o, w, *shape)


# --------------------------------------------------------------------------------------------
# command line: python -m cryorestore.native --build
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Pre-build the extension (``--build``) or report its state; exits 0 (never fails a workstation
    setup) unless ``--require-cuda`` is given and the CUDA path is missing (container builds)."""
    parser = argparse.ArgumentParser(prog="python -m cryorestore.native",
                                     description="build or inspect the cryorestore native extension")
    parser.add_argument("--build", action="store_true", help="build (or load the cached build of) the extension now")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    parser.add_argument("--require-cuda", action="store_true",
                        help="exit 1 unless the CUDA path is compiled in (container builds: set FORCE_CUDA=1)")
    args = parser.parse_args(argv)
    if disabled():
        print("cryorestore.native: disabled by CRYORESTORE_NATIVE=0 (torch twins in use)")
        return 0
    ok = build(verbose=args.verbose) if args.build else is_compiled()
    if ok:
        print(f"cryorestore.native: extension ready (CUDA path: {'yes' if cuda_compiled() else 'no'}; "
              f"cache {cache_root()})")
    else:
        print(f"cryorestore.native: extension unavailable, torch twins in use ({_state['reason']})")
    if args.require_cuda and not (ok and cuda_compiled()):
        print("cryorestore.native: the CUDA path is required (--require-cuda) but was not compiled", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
