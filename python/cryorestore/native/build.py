"""Building, caching and loading the C++/CUDA extension, and choosing between a kernel and its twin.

The extension in ``csrc/`` (``torch.utils.cpp_extension``, pybind11, ninja) is built on first use
and cached in ``$CRYORESTORE_NATIVE_CACHE`` (default ``~/.cache/cryorestore/native``), one folder per
:func:`build_key`: a hash of the sources, the torch, CUDA and Python versions, the CUDA
architectures compiled for and the build flags; a file lock makes a second process wait for (and
then reuse) a build in progress. ``make setup`` pre-builds it with ``python -m cryorestore.native
--build``. CUDA sources are compiled in only when a CUDA toolkit *and* a GPU are present (or
``FORCE_CUDA=1``, for container builds on GPU-less hosts).

The kernel modules (:mod:`~cryorestore.native.fsc`, :mod:`~cryorestore.native.wedge`,
:mod:`~cryorestore.native.blend`) ask :func:`native_for` for the extension and run every call
through :func:`launch`. The torch twin is used, with one warning per process and cause, when the
extension cannot be built or loaded (no compiler, no ninja, no sources), when a CUDA tensor meets
a CPU-only build, when ``CRYORESTORE_NATIVE=0`` forces the twins, or when a kernel fails at run
time (e.g. "no kernel image is available for execution on the device": a GPU the build did not
target); a kernel that failed once stays on its twin for the rest of the process.

This module imports nothing else from cryorestore, so every layer may use it.
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
from typing import Any, Callable, Sequence, TypeVar

import torch

_CPU_SOURCES = ("bindings.cpp", "fsc_cpu.cpp", "wedge_cpu.cpp", "blend_cpu.cpp")
_CUDA_SOURCES = ("fsc_cuda.cu", "wedge_cuda.cu", "blend_cuda.cu")
_HEADERS = ("native.h", "wedge_rule.h", "kernels_cuda.h")
_CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off")
_LDFLAGS = ("-fopenmp",)
_CUDA_CFLAGS = ("-O3",)
_MARKER = "BUILD_OK"

T = TypeVar("T")

_lock = threading.Lock()
# tried: a build/load was attempted; ext: the loaded module or None; reason: why the twins are used;
# warned: warning keys already shown; failed: kernel name → first line of its run-time failure
_state: dict[str, Any] = {"tried": False, "ext": None, "reason": None, "warned": set(), "failed": {}}


# --------------------------------------------------------------------------------------------
# where and for what
# --------------------------------------------------------------------------------------------
def source_dir() -> Path:
    """Folder holding the C++/CUDA sources (``$CRYORESTORE_CSRC`` or the repository's ``csrc/``)."""
    env = os.environ.get("CRYORESTORE_CSRC")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "csrc"


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


def cuda_arch_list() -> str:
    """The CUDA architectures a CUDA build compiles for, as torch's extension builder chooses them:
    ``$TORCH_CUDA_ARCH_LIST`` when set, else the compute capabilities of the visible GPUs ("" if none)."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if env:
        return env
    if not torch.cuda.is_available():
        return ""
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return ";".join(f"{major}.{minor}" for major, minor in caps)


def build_key(with_cuda: bool) -> str:
    """16 hex digits naming one build: the sources, the torch, CUDA and Python versions, the build
    flags and, for a CUDA build, the architecture list. Any change gives a new cache folder, so a
    cached build is never loaded into a torch, CUDA or GPU it was not compiled for."""
    h = hashlib.sha256()
    src = source_dir()
    names = _CPU_SOURCES + _HEADERS + (_CUDA_SOURCES if with_cuda else ())
    for name in names:
        h.update(name.encode())
        h.update((src / name).read_bytes())
    arch = cuda_arch_list() if with_cuda else ""
    h.update(repr((torch.__version__, torch.version.cuda, arch, sys.version_info[:2], _CFLAGS, _LDFLAGS,
                   _CUDA_CFLAGS, with_cuda)).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# building and loading
# --------------------------------------------------------------------------------------------
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
    key = build_key(with_cuda)
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
        tmp.write_text(f"{name}\ntorch {torch.__version__}\ncuda {torch.version.cuda if with_cuda else None}\n"
                       f"arch {cuda_arch_list() if with_cuda else ''}\n")
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
                    errors.append(f"{'CUDA' if with_cuda else 'CPU'} build: {_first_line(exc)}")
            if _state["ext"] is None:
                _state["reason"] = "; ".join(errors)
        return _state["ext"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def warn_once(key: str, message: str) -> None:
    """Show ``message`` as a RuntimeWarning the first time ``key`` is seen in this process."""
    if key not in _state["warned"]:
        _state["warned"].add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------
def native_for(device: torch.device, kernel: str) -> ModuleType | None:
    """The extension if ``kernel`` can run on ``device``; else None (after one warning per cause)."""
    if kernel in _state["failed"]:
        return None  # warned when it failed
    ext = _extension()
    if ext is None:
        warn_once("fallback", f"cryorestore.native: using the pure-torch twins ({_state['reason']})")
        return None
    if device.type == "cuda" and not ext.with_cuda():
        warn_once("cuda", "cryorestore.native: the extension was built without CUDA (no toolkit or no GPU at build "
                          "time); CUDA tensors use the pure-torch twins")
        return None
    if device.type not in ("cpu", "cuda"):
        warn_once(f"device-{device.type}", f"cryorestore.native: no kernels for {device.type} tensors; using the twins")
        return None
    return ext


def launch(kernel: str, native_call: Callable[[], T], twin_call: Callable[[], T]) -> T:
    """Run ``native_call``; if the extension raises a RuntimeError (a launch failure such as "no
    kernel image is available for execution on the device", or any other error of the kernel), warn
    once, keep ``kernel`` on its twin for the rest of the process and return ``twin_call()``."""
    try:
        return native_call()
    except RuntimeError as exc:
        _state["failed"][kernel] = _first_line(exc)
        warn_once(f"launch-{kernel}", f"cryorestore.native: the {kernel} kernel failed ({_first_line(exc)}); "
                                      f"using its pure-torch twin from now on")
        return twin_call()


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
        warn_once("fallback", f"cryorestore.native: extension not built, the torch twins will be used ({_state['reason']})")
    return ext is not None


def _reset_state() -> None:
    """Forget the loaded extension, the failed kernels and the warnings shown (for tests)."""
    with _lock:
        _state.update(tried=False, ext=None, reason=None, warned=set(), failed={})


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
        arch = f"; architectures {cuda_arch_list() or 'of the visible GPUs'}" if cuda_compiled() else ""
        print(f"cryorestore.native: extension ready (CUDA path: {'yes' if cuda_compiled() else 'no'}{arch}; "
              f"cache {cache_root()})")
    else:
        print(f"cryorestore.native: extension unavailable, torch twins in use ({_state['reason']})")
    if args.require_cuda and not (ok and cuda_compiled()):
        print("cryorestore.native: the CUDA path is required (--require-cuda) but was not compiled", file=sys.stderr)
        return 1
    return 0
