"""The native extension against its torch twins and independent float64 numpy references.

The CPU extension is built ahead of time by ``make setup`` (``python -m cryorestore.native --build``)
and reused here from its cache. CUDA tests run only where a GPU is present (``pytest -m cuda``);
the ``.cu`` sources are compiled to object files wherever ``nvcc`` exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cryorestore import fourier, geometry, native, tiling
from cryorestore.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
HAS_COMPILER = shutil.which(os.environ.get("CXX", "c++")) is not None and shutil.which("ninja") is not None
needs_ext = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler/ninja: the extension cannot be built here")
cuda = pytest.mark.cuda
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

# odd and even sizes on every axis, including an odd X whose last rfft plane is not a Nyquist plane
SHAPES = [(12, 10, 14), (11, 13, 9), (9, 16, 15), (8, 8, 1)]


@pytest.fixture(scope="module", autouse=True)
def _fresh_state():
    native._reset_state()
    yield
    native._reset_state()


@pytest.fixture(scope="module")
def ext():
    if not HAS_COMPILER:
        pytest.skip("no C++ compiler/ninja")
    assert native.is_compiled(), f"native extension failed to build: {native._state['reason']}"
    return native._extension()


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------
def numpy_shell_sums(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, 3, n) shell sums over the FULL fftn grid in float64 (no half-space weighting needed)."""
    shape = a.shape[1:]
    fa = np.fft.fftn(a.astype(np.float64), axes=(1, 2, 3))
    fb = np.fft.fftn(b.astype(np.float64), axes=(1, 2, 3))
    kz, ky, kx = np.meshgrid(*[np.fft.fftfreq(s) for s in shape], indexing="ij")
    shell = np.floor(np.sqrt(kz**2 + ky**2 + kx**2) * min(shape) + 0.5).astype(np.int64)
    n = min(shape) // 2 + 1
    out = np.zeros((a.shape[0], 3, n))
    sel = shell < n
    for i in range(a.shape[0]):
        terms = [(fa[i] * fb[i].conj()).real, np.abs(fa[i]) ** 2, np.abs(fb[i]) ** 2]
        for t, term in enumerate(terms):
            out[i, t] = np.bincount(shell[sel], weights=term[sel], minlength=n)
    return out


def numpy_wedge(shape, tmin, tmax, rotations):
    """Rotated wedge masks on the rfft grid in float64 numpy, written from the rule in fourier.py's docstring."""
    z, y, x = shape
    kz = np.fft.fftfreq(z)[:, None, None]
    ky = np.fft.fftfreq(y)[None, :, None]
    kx = np.fft.fftfreq(x)[: x // 2 + 1][None, None, :]
    k = np.stack(np.broadcast_arrays(kz, ky, kx), axis=-1)  # (Z, Y, Xr, 3)
    out = []
    for r in rotations:
        kr = np.einsum("ji,zyxj->zyxi", r, k)  # k' = Rᵀ k
        kzr = np.where(np.abs(kr[..., 0]) < 1e-12, 0.0, kr[..., 0])
        kxr = np.where(np.abs(kr[..., 2]) < 1e-12, 0.0, kr[..., 2])
        phi = np.degrees(np.arctan2(kzr, kxr))
        phi = np.where(phi > 90, phi - 180, phi)
        phi = np.where(phi <= -90, phi + 180, phi)
        m = ((phi >= tmin - 1e-6) & (phi <= tmax + 1e-6)) | ((kzr == 0) & (kxr == 0))
        out.append(m.astype(np.float32))
    return np.stack(out)


def numpy_blend(tiles, origins, window, shape):
    num = np.zeros(shape)
    den = np.zeros(shape)
    d, h, w = tiles.shape[1:]
    for t, (z, y, x) in enumerate(origins):
        num[z:z + d, y:y + h, x:x + w] += window.astype(np.float64) * tiles[t]
        den[z:z + d, y:y + h, x:x + w] += window
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0)


def random_pairs(rng, b, shape, dtype=torch.float32):
    a = torch.as_tensor(rng.standard_normal((b, *shape)), dtype=dtype)
    c = 0.6 * a + torch.as_tensor(rng.standard_normal((b, *shape)), dtype=dtype)
    return a, c


def spectra(v):
    return torch.fft.rfftn(v, dim=(-3, -2, -1))


# --------------------------------------------------------------------------------------------
# FSC shell sums
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_fsc_shells_matches_twin_and_numpy(ext, shape):
    rng = np.random.default_rng(sum(shape))
    a, b = random_pairs(rng, 3, shape)
    n = fourier.n_shells(shape)
    idx = fourier.shell_index(shape)
    fa, fb = spectra(a), spectra(b)
    got = native.fsc_shells(fa, fb, idx, n, nx=shape[2])
    assert got.dtype == torch.float64 and got.shape == (3, 3, n)
    twin = fourier.fsc_shell_sums(fa, fb, idx, n, nx=shape[2])
    torch.testing.assert_close(got, twin, rtol=1e-10, atol=1e-10 * float(twin.abs().max()))
    ref = numpy_shell_sums(a.numpy(), b.numpy())
    scale = np.sqrt(ref[:, 1] * ref[:, 2])  # |num| ≤ sqrt(p1 p2): compare each term on that scale
    assert np.all(np.abs(got.numpy() - ref) <= 1e-5 * scale[:, None, :] + 1e-9)
    # complex128 input reaches float64 accuracy
    got64 = native.fsc_shells(spectra(a.double()), spectra(b.double()), idx, n, nx=shape[2]).numpy()
    assert np.all(np.abs(got64 - ref) <= 1e-11 * scale[:, None, :] + 1e-12)


def test_fsc_shells_batched_equals_looped_and_writes_every_element(ext):
    rng = np.random.default_rng(7)
    shape = (10, 12, 11)
    a, b = random_pairs(rng, 5, shape)
    fa, fb = spectra(a), spectra(b)
    n = fourier.n_shells(shape)
    idx = fourier.shell_index(shape)
    batched = native.fsc_shells(fa, fb, idx, n, nx=shape[2])
    looped = torch.cat([native.fsc_shells(fa[i], fb[i], idx, n, nx=shape[2]) for i in range(5)])
    assert torch.equal(batched, looped)
    poisoned = torch.full((5, 3, n), float("nan"), dtype=torch.float64)
    ext.fsc_shells(fa, fb, idx.clamp(max=n).to(torch.int32), n, False, out=poisoned)
    assert torch.equal(poisoned, batched)


def test_fsc_shells_honours_excluded_shells_and_custom_index(ext):
    rng = np.random.default_rng(3)
    shape = (9, 9, 10)
    a, b = random_pairs(rng, 2, shape)
    fa, fb = spectra(a), spectra(b)
    # a coarse custom index with many excluded coefficients (values ≥ n)
    idx = torch.as_tensor(rng.integers(0, 7, size=(9, 9, 6)), dtype=torch.int64)
    got = native.fsc_shells(fa, fb, idx, 4, nx=10)
    twin = fourier.fsc_shell_sums(fa, fb, idx, 4, nx=10)
    torch.testing.assert_close(got, twin, rtol=1e-10, atol=1e-9)
    with pytest.raises(ValueError):
        native.fsc_shells(fa, fb, idx - 1, 4, nx=10)  # negative index
    with pytest.raises(ValueError):
        native.fsc_shells(fa, fb, idx, 4, nx=12)  # nx does not match the grid
    with pytest.raises(ValueError):
        native.fsc_shells(fa, fb[:, :-1], idx, 4)


def test_fsc_batch_uses_native_and_matches_numpy_fsc(ext):
    rng = np.random.default_rng(11)
    shape = (16, 15, 14)
    a, b = random_pairs(rng, 4, shape)
    curves = fourier.fsc_batch(a, b)
    ref = numpy_shell_sums(a.numpy(), b.numpy())
    ref_fsc = ref[:, 0] / np.sqrt(ref[:, 1] * ref[:, 2])
    np.testing.assert_allclose(curves.numpy(), ref_fsc, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_fsc_shells_gradients_equal_twin(ext, dtype):
    rng = np.random.default_rng(5)
    shape = (7, 8, 9)
    n = fourier.n_shells(shape)
    idx = fourier.shell_index(shape)
    xr = shape[2] // 2 + 1
    f1 = torch.as_tensor(rng.standard_normal((2, 7, 8, xr)) + 1j * rng.standard_normal((2, 7, 8, xr))).to(dtype)
    f2 = torch.as_tensor(rng.standard_normal((2, 7, 8, xr)) + 1j * rng.standard_normal((2, 7, 8, xr))).to(dtype)
    weights = torch.as_tensor(rng.standard_normal((2, 3, n)))
    grads = []
    for fn in (native.fsc_shells, fourier.fsc_shell_sums):
        x1, x2 = f1.clone().requires_grad_(True), f2.clone().requires_grad_(True)
        (fn(x1, x2, idx, n, nx=shape[2]) * weights).sum().backward()
        grads.append((x1.grad, x2.grad))
    tol = 1e-5 if dtype == torch.complex64 else 1e-12
    for g_native, g_twin in zip(grads[0], grads[1]):
        torch.testing.assert_close(g_native, g_twin, rtol=tol, atol=tol)


def test_fsc_through_native_passes_gradcheck(ext):
    rng = np.random.default_rng(9)
    shape = (4, 5, 6)  # odd and even axes, tiny so the numerical Jacobian stays cheap
    n = fourier.n_shells(shape)
    idx = fourier.shell_index(shape)
    a = torch.tensor(rng.standard_normal((1, *shape)), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(rng.standard_normal((1, *shape)), dtype=torch.float64, requires_grad=True)

    def fsc_curve(x, y):
        return fourier.fsc_from_sums(native.fsc_shells(spectra(x), spectra(y), idx, n, nx=shape[2]))

    assert torch.autograd.gradcheck(fsc_curve, (a, b), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


# --------------------------------------------------------------------------------------------
# missing wedge
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tilts", [(-60.0, 60.0), (-45.0, 65.0), (-89.0, 90.0)])
def test_wedge_mask_bit_identical_to_twin_and_numpy(ext, shape, tilts):
    rng = np.random.default_rng(abs(hash((shape, tilts))) % 2**32)
    rot = geometry.random_rotations(6, rng)
    rot[0] = np.eye(3)
    rot[1] = geometry.rotation_about_y(90.0)
    got = native.wedge_mask(shape, *tilts, rotations=rot)
    twin = fourier.missing_wedge_mask(shape, *tilts, rotations=rot)
    assert got.dtype == torch.float32 and got.shape == (6, *fourier.rfft_shape(shape))
    assert torch.equal(got, twin)
    assert np.array_equal(got.numpy(), numpy_wedge(shape, *tilts, rot))
    unrotated = native.wedge_mask(shape, *tilts)
    assert torch.equal(unrotated, fourier.missing_wedge_mask(shape, *tilts))
    assert torch.equal(unrotated, got[0])


def test_wedge_mask_batched_equals_looped_and_writes_every_element(ext):
    rng = np.random.default_rng(2)
    shape = (9, 10, 11)
    rot = torch.as_tensor(geometry.random_rotations(4, rng))
    batched = native.wedge_mask(shape, -50, 55, rotations=rot)
    looped = torch.cat([native.wedge_mask(shape, -50, 55, rotations=rot[i:i + 1]) for i in range(4)])
    assert torch.equal(batched, looped)
    kz, ky, kx = native._grid_vectors(shape, torch.device("cpu"))
    poisoned = torch.full(batched.shape, float("nan"))
    ext.wedge_mask(kz, ky, kx, rot.double(), -55 - native.WEDGE_EPS_DEG, 50 + native.WEDGE_EPS_DEG,
                   native.WEDGE_TINY, out=poisoned)
    assert torch.equal(poisoned, batched)


@pytest.mark.parametrize("shape", [(10, 12, 14), (9, 11, 13)])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_apply_wedge_in_place_equals_twin(ext, shape, dtype):
    rng = np.random.default_rng(4)
    vols = torch.as_tensor(rng.standard_normal((3, *shape)))
    spec = spectra(vols).to(dtype)
    rot = geometry.random_rotations(3, rng)
    for rotations in (rot, rot[:1], None):
        mine = spec.clone()
        ptr = mine.data_ptr()
        out = native.apply_wedge(mine, -55, 60, rotations=rotations, nx=shape[2])
        assert out is mine and out.data_ptr() == ptr
        twin = spec.clone().mul_(fourier.missing_wedge_mask(shape, -55, 60, rotations=rotations))
        assert torch.equal(mine, twin)
    single = spec[0].clone()
    native.apply_wedge(single, -55, 60, nx=shape[2])
    assert torch.equal(single, spec[0] * fourier.missing_wedge_mask(shape, -55, 60))
    with pytest.raises(ValueError):
        native.apply_wedge(spec.clone(), -55, 60, rotations=rot[:2], nx=shape[2])
    with pytest.raises(ValueError):
        native.apply_wedge(spec.clone(), 60, -55, nx=shape[2])


def test_apply_wedge_is_differentiable(ext):
    rng = np.random.default_rng(8)
    shape = (8, 9, 10)
    rot = geometry.random_rotations(2, rng)
    vols = torch.tensor(rng.standard_normal((2, *shape)))
    target = torch.as_tensor(rng.standard_normal((2, *shape)))
    grads = []
    for use_native in (True, False):
        v = vols.detach().clone().requires_grad_(True)
        spec = spectra(v) * 1.0
        if use_native:
            masked = native.apply_wedge(spec, -60, 60, rotations=rot, nx=shape[2])
        else:
            masked = spec * fourier.missing_wedge_mask(shape, -60, 60, rotations=rot)
        loss = (torch.fft.irfftn(masked, s=shape, dim=(-3, -2, -1)) - target).pow(2).sum()
        loss.backward()
        grads.append(v.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# blending
# --------------------------------------------------------------------------------------------
def random_tiles(rng, shape, tile, n):
    origins = np.stack([rng.integers(0, s - tile + 1, size=n) for s in shape], axis=1)
    tiles = rng.standard_normal((n, tile, tile, tile)).astype(np.float32)
    return torch.as_tensor(tiles), torch.as_tensor(origins, dtype=torch.int64)


@pytest.mark.parametrize("shape,tile,overlap", [((21, 18, 25), 8, 3), ((16, 17, 15), 7, 0), ((12, 12, 12), 12, 5)])
def test_blend_tiles_matches_twin_and_numpy(ext, shape, tile, overlap):
    rng = np.random.default_rng(tile + overlap)
    tiles, origins = random_tiles(rng, shape, tile, 9)  # random placement: gaps and multi-overlaps
    window = tiling.blending_window(tile, overlap)
    got = native.blend_tiles(tiles, origins, window, shape)
    twin = tiling.blend_tiles_torch(tiles, origins, window, shape)
    assert got.dtype == torch.float32 and got.shape == shape
    assert torch.equal(got, twin)  # same float32 operations in the same order
    ref = numpy_blend(tiles.numpy(), origins.numpy(), window.numpy(), shape)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)
    # a non-separable random positive window and the regular grid of tiled inference
    grid = tiling.tile_origins(shape, tile, overlap)
    tiles2 = torch.as_tensor(rng.standard_normal((grid.shape[0], tile, tile, tile)), dtype=torch.float32)
    window2 = torch.as_tensor(rng.uniform(0.05, 1.0, (tile, tile, tile)), dtype=torch.float32)
    got2 = native.blend_tiles(tiles2, grid, window2, shape)
    assert torch.equal(got2, tiling.blend_tiles_torch(tiles2, grid, window2, shape))
    np.testing.assert_allclose(got2.numpy(), numpy_blend(tiles2.numpy(), grid.numpy(), window2.numpy(), shape),
                               rtol=1e-5, atol=1e-5)


def test_blend_tiles_writes_every_element_and_checks_bounds(ext):
    rng = np.random.default_rng(1)
    shape = (14, 13, 12)
    tiles, origins = random_tiles(rng, shape, 6, 3)  # leaves most voxels uncovered → must be 0
    window = tiling.blending_window(6, 2)
    poisoned = torch.full(shape, float("nan"))
    ext.blend_tiles(tiles, origins, window, *shape, out=poisoned)
    assert torch.equal(poisoned, tiling.blend_tiles_torch(tiles, origins, window, shape))
    bad = origins.clone()
    bad[0, 2] = shape[2] - 5
    with pytest.raises(InputError):
        native.blend_tiles(tiles, bad, window, shape)
    with pytest.raises(InputError):
        native.blend_tiles(tiles, origins, window[:-1], shape)


# --------------------------------------------------------------------------------------------
# loading, fallback and the CUDA sources
# --------------------------------------------------------------------------------------------
@needs_ext
def test_extension_is_built_and_cached(ext):
    assert native.is_compiled()
    assert not native.cuda_compiled() or torch.cuda.is_available()
    builds = list(native.cache_root().glob("cryorestore_native_*/BUILD_OK"))
    assert builds, "no cached build found"


def test_fallback_gives_identical_results_with_one_warning(ext, monkeypatch):
    rng = np.random.default_rng(12)
    shape = (10, 9, 12)
    a, b = random_pairs(rng, 2, shape)
    fa, fb = spectra(a), spectra(b)
    idx, n = fourier.shell_index(shape), fourier.n_shells(shape)
    rot = geometry.random_rotations(2, rng)
    tiles, origins = random_tiles(rng, shape, 5, 6)
    window = tiling.blending_window(5, 2)

    def run_all():
        return (native.fsc_shells(fa, fb, idx, n, nx=shape[2]),
                native.wedge_mask(shape, -60, 50, rotations=rot),
                native.apply_wedge(fa.clone(), -60, 50, rotations=rot, nx=shape[2]),
                native.blend_tiles(tiles, origins, window, shape))

    fast = run_all()
    monkeypatch.setenv("CRYORESTORE_NATIVE", "0")
    native._reset_state()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            slow = run_all()
            run_all()
        assert not native.is_compiled()
    finally:
        monkeypatch.delenv("CRYORESTORE_NATIVE")
        native._reset_state()
    ours = [w for w in caught if "cryorestore.native" in str(w.message)]
    assert len(ours) == 1 and "CRYORESTORE_NATIVE=0" in str(ours[0].message)
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-12, atol=1e-12 * float(slow[0].abs().max()))
    for x, y in zip(fast[1:], slow[1:]):
        assert torch.equal(x, y)


def test_unbuildable_extension_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("CRYORESTORE_CSRC", str(tmp_path / "no_sources"))
    monkeypatch.setenv("CRYORESTORE_NATIVE_CACHE", str(tmp_path / "cache"))
    native._reset_state()
    try:
        shape = (6, 7, 8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert not native.is_compiled()
            m1 = native.wedge_mask(shape, -40, 40)
            m2 = native.wedge_mask(shape, -40, 40)
        assert torch.equal(m1, fourier.missing_wedge_mask(shape, -40, 40)) and torch.equal(m1, m2)
        ours = [w for w in caught if "cryorestore.native" in str(w.message)]
        assert len(ours) == 1 and "not found" in str(ours[0].message)
        assert native.main(["--build"]) == 0  # a setup step must not fail
    finally:
        monkeypatch.delenv("CRYORESTORE_CSRC")
        monkeypatch.delenv("CRYORESTORE_NATIVE_CACHE")
        native._reset_state()


def _nvcc_command(source: Path, out: Path) -> list[str]:
    return ["nvcc", "-c", str(source), "-o", str(out), "-std=c++17", "-Xcompiler", "-fPIC", f"-I{CSRC}",
            "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", sorted(p.name for p in CSRC.glob("*.cu")))
def test_cuda_sources_compile(source, tmp_path):
    result = subprocess.run(_nvcc_command(CSRC / source, tmp_path / "k.o"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "k.o").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_bindings_compile(tmp_path):
    """bindings.cpp with the CUDA dispatch compiled in (syntax and types; no GPU needed)."""
    from torch.utils.cpp_extension import include_paths

    inc = [f"-I{p}" for p in include_paths()]
    macros = Path(include_paths()[0]) / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    if not macros.is_file():  # CPU torch wheels ship c10/cuda headers without their generated config
        stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
        stub.mkdir(parents=True)
        (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
        inc.insert(0, f"-I{tmp_path / 'stub'}")
    homes = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda",
             str(Path(shutil.which("nvcc")).resolve().parents[1]), *sorted(map(str, Path("/usr/local").glob("cuda-*")))]
    cuda_home = next((Path(h) for h in homes if h and (Path(h) / "include" / "cuda_runtime.h").is_file()), None)
    if cuda_home is None:
        pytest.skip("CUDA runtime headers not found")
    import sysconfig

    cmd = ["c++", "-fsyntax-only", "-std=c++20", "-DCRYORESTORE_WITH_CUDA", "-DTORCH_EXTENSION_NAME=check",
           f"-I{CSRC}", f"-I{cuda_home / 'include'}", f"-I{sysconfig.get_paths()['include']}", *inc,
           str(CSRC / "bindings.cpp")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
@needs_ext
def test_concurrent_first_builds_share_one_cache(tmp_path):
    """Two processes building into an empty cache at once both succeed and leave one build."""
    env = dict(os.environ, CRYORESTORE_NATIVE_CACHE=str(tmp_path / "cache"))
    code = ("import torch, warnings; from cryorestore import native, fourier; assert native.build(); "
            "m = native.wedge_mask((6, 7, 8), -40, 40); assert torch.equal(m, fourier.missing_wedge_mask((6, 7, 8), -40, 40))")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=900)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    assert len(list((tmp_path / "cache").glob("cryorestore_native_*/BUILD_OK"))) == 1


# --------------------------------------------------------------------------------------------
# CUDA (run wherever a GPU is present: pytest -m cuda)
# --------------------------------------------------------------------------------------------
@cuda
@needs_gpu
def test_cuda_kernels_match_cpu_twins():
    assert native.cuda_compiled(), f"CUDA path not built: {native._state['reason']}"
    rng = np.random.default_rng(0)
    dev = torch.device("cuda")
    for shape in SHAPES:
        a, b = random_pairs(rng, 3, shape)
        n, idx = fourier.n_shells(shape), fourier.shell_index(shape)
        twin = fourier.fsc_shell_sums(spectra(a), spectra(b), idx, n, nx=shape[2])
        got = native.fsc_shells(spectra(a.to(dev)), spectra(b.to(dev)), idx.to(dev), n, nx=shape[2]).cpu()
        torch.testing.assert_close(got, twin, rtol=1e-5, atol=1e-6 * float(twin.abs().max()))
        rot = geometry.random_rotations(4, rng)
        mask = native.wedge_mask(shape, -60, 55, rotations=torch.as_tensor(rot, device=dev))
        assert torch.equal(mask.cpu(), fourier.missing_wedge_mask(shape, -60, 55, rotations=rot))
        spec = spectra(a[:1].to(dev)).repeat(4, 1, 1, 1)
        native.apply_wedge(spec, -60, 55, rotations=torch.as_tensor(rot, device=dev), nx=shape[2])
        assert torch.equal(spec.cpu(), spectra(a[:1]).repeat(4, 1, 1, 1) * mask.cpu())
    shape, tile = (21, 18, 25), 8
    grid = tiling.tile_origins(shape, tile, 3)
    tiles = torch.as_tensor(rng.standard_normal((grid.shape[0], tile, tile, tile)), dtype=torch.float32)
    window = tiling.blending_window(tile, 3)
    got = native.blend_tiles(tiles.to(dev), grid.to(dev), window.to(dev), shape).cpu()
    torch.testing.assert_close(got, tiling.blend_tiles_torch(tiles, grid, window, shape), rtol=1e-5, atol=1e-5)
    poisoned = torch.full(shape, float("nan"), device=dev)
    native._extension().blend_tiles(tiles.to(dev), grid.to(dev), window.to(dev), *shape, out=poisoned)
    assert not torch.isnan(poisoned).any()
