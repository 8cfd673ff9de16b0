"""Native (C++/CUDA) kernels with pure-torch twins.

The package only loads and dispatches: :mod:`~cryorestore.native.build` builds, caches and loads the
extension in ``csrc/`` and decides, per call, between a kernel and its twin; one module per kernel
family holds the dispatch (and, for fsc and wedge, the family's torch twin):

================================  ==================================================  ======================
native                            torch twin                                          module
================================  ==================================================  ======================
:func:`fsc_shells`                :func:`cryorestore.fourier.fsc_shell_sums`          ``native.fsc``
:func:`wedge_mask`                :func:`cryorestore.fourier.missing_wedge_mask`      ``native.wedge``
:func:`apply_wedge`               ``spectra.mul_(missing_wedge_mask(...))``           ``native.wedge``
:func:`blend_tiles`               :func:`cryorestore.tiling.blend_tiles_torch`        ``native.blend``
================================  ==================================================  ======================

Every entry point has the signature of its twin and falls back to it, with one warning per cause
and process: no extension (no compiler, ninja or sources), a CUDA tensor meeting a CPU-only build,
``CRYORESTORE_NATIVE=0``, or a kernel that fails at run time (it then stays on its twin).
``python -m cryorestore.native --build`` pre-builds the extension.

Layering: ``native.build`` imports nothing from cryorestore; ``native.fsc`` and ``native.wedge``
hold their families' twins and import only :mod:`cryorestore.fourier_grid`; ``native.blend``
dispatches against the twin in :mod:`cryorestore.tiling`, which never imports native.
:mod:`cryorestore.fourier` sits above native and re-exports the fsc and wedge twins.

Conventions: arrays are (z, y, x), spectra are ``torch.fft.rfftn`` half-spaces (B, Z, Y, X//2+1),
frequencies in cycles/voxel, tilt angles in degrees.
"""

from cryorestore.native.blend import blend_tiles, blend_tiles_torch, check_blend_inputs
from cryorestore.native.build import (
    _extension,
    _reset_state,
    _state,
    build,
    build_key,
    cache_root,
    cuda_arch_list,
    cuda_compiled,
    disabled,
    is_compiled,
    launch,
    main,
    native_for,
    source_dir,
)
from cryorestore.native.fsc import fsc_shell_sums, fsc_shells
from cryorestore.native.wedge import (
    WEDGE_EPS_DEG,
    WEDGE_TINY,
    _grid_vectors,
    apply_wedge,
    missing_wedge_mask,
    wedge_mask,
    wedge_mask_from_frequencies,
)

__all__ = [
    "WEDGE_EPS_DEG", "WEDGE_TINY", "apply_wedge", "blend_tiles", "blend_tiles_torch", "build", "build_key",
    "cache_root", "check_blend_inputs", "cuda_arch_list", "cuda_compiled", "disabled", "fsc_shell_sums",
    "fsc_shells", "is_compiled", "launch", "main", "missing_wedge_mask", "native_for", "source_dir",
    "wedge_mask", "wedge_mask_from_frequencies",
]
