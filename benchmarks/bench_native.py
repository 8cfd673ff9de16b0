"""Time the native kernels against their torch twins and float64 numpy references, in one run.

For each kernel the three implementations get the same inputs; each is called once as warm-up
(excluded) and then timed over repeats (median, ms; slow references get fewer repeats). Results
are checked against each other before timing, so the table compares equal work.

    python benchmarks/bench_native.py                 # the issue's sizes on the CPU
    python benchmarks/bench_native.py --quick         # small sizes, a smoke test
    python benchmarks/bench_native.py --device cuda   # the GPU path (numpy stays on the CPU)

Sizes: FSC shell sums on 64 pairs of 64³ and 8 pairs of 128³; wedge masks for 64 rotations of
64³ (and their in-place application to 64 spectra); blending of a 256×512×512 volume from 64³
tiles with 16-voxel overlap.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch

from cryorestore import fourier, geometry, native, tiling


CPU = torch.device("cpu")
NUMPY_BUDGET_S = [20.0]  # seconds per numpy timing; 0 (--no-numpy-timing) skips them (the checks still run)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, device: torch.device, budget_s: float = 20.0) -> float:
    """Median time (ms) of ``fn`` over ``repeats`` calls after one warm-up call (CUDA events on a GPU).

    When the warm-up alone takes more than ``budget_s / repeats`` the repeats are reduced (≥ 2) so
    that slow references do not dominate the run. ``budget_s = 0`` skips the timing (NaN).
    """
    if budget_s <= 0:
        return float("nan")
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    warm = time.perf_counter() - t0
    n = max(2, min(repeats, int(budget_s / max(warm, 1e-9))))
    times = []
    for _ in range(n):
        if device.type == "cuda":  # device time between two events on the current stream
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
            continue
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


# --------------------------------------------------------------------------------------------
# numpy float64 references
# --------------------------------------------------------------------------------------------
def numpy_fsc_shells(f1: np.ndarray, f2: np.ndarray, shells: np.ndarray, n: int, nx: int) -> np.ndarray:
    xr = f1.shape[-1]
    w = np.full(xr, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    w = np.broadcast_to(w, shells.shape).ravel()
    idx = np.minimum(shells.ravel(), n)
    out = np.zeros((f1.shape[0], 3, n))
    for b in range(f1.shape[0]):
        a, c = f1[b].ravel().astype(np.complex128), f2[b].ravel().astype(np.complex128)
        terms = ((a * c.conj()).real, a.real**2 + a.imag**2, c.real**2 + c.imag**2)
        for t, term in enumerate(terms):
            out[b, t] = np.bincount(idx, weights=term * w, minlength=n + 1)[:n]
    return out


def numpy_wedge(shape, tmin, tmax, rotations: np.ndarray) -> np.ndarray:
    z, y, x = shape
    kz = np.fft.fftfreq(z)[:, None, None]
    ky = np.fft.fftfreq(y)[None, :, None]
    kx = np.fft.fftfreq(x)[: x // 2 + 1][None, None, :]
    out = np.empty((len(rotations), z, y, x // 2 + 1), dtype=np.float32)
    for i, r in enumerate(rotations):
        kzr = r[0, 0] * kz + r[1, 0] * ky + r[2, 0] * kx
        kxr = r[0, 2] * kz + r[1, 2] * ky + r[2, 2] * kx
        kzr = np.where(np.abs(kzr) < 1e-12, 0.0, kzr)
        kxr = np.where(np.abs(kxr) < 1e-12, 0.0, kxr)
        phi = np.degrees(np.arctan2(kzr, kxr))
        phi = np.where(phi > 90, phi - 180, phi)
        phi = np.where(phi <= -90, phi + 180, phi)
        out[i] = ((phi >= tmin - 1e-6) & (phi <= tmax + 1e-6)) | ((kzr == 0) & (kxr == 0))
    return out


def numpy_blend(tiles: np.ndarray, origins: np.ndarray, window: np.ndarray, shape) -> np.ndarray:
    num = np.zeros(shape)
    den = np.zeros(shape)
    w64 = window.astype(np.float64)
    d, h, w = tiles.shape[1:]
    for t, (z, y, x) in enumerate(origins):
        num[z:z + d, y:y + h, x:x + w] += w64 * tiles[t]
        den[z:z + d, y:y + h, x:x + w] += w64
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------
def rel_err(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    x = np.asarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    y = np.asarray(b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300))


def bench_fsc(pairs: int, n: int, device: torch.device, repeats: int, rng: np.random.Generator) -> dict:
    shape = (n, n, n)
    a = torch.as_tensor(rng.standard_normal((pairs, *shape)), dtype=torch.float32, device=device)
    b = 0.5 * a + torch.as_tensor(rng.standard_normal((pairs, *shape)), dtype=torch.float32, device=device)
    f1, f2 = torch.fft.rfftn(a, dim=(-3, -2, -1)), torch.fft.rfftn(b, dim=(-3, -2, -1))
    del a, b
    ns = fourier.n_shells(shape)
    idx = fourier.shell_index(shape, device=device)
    f1n, f2n, idxn = f1.cpu().numpy(), f2.cpu().numpy(), idx.cpu().numpy()
    got = native.fsc_shells(f1, f2, idx, ns, nx=n)
    twin = fourier.fsc_shell_sums(f1, f2, idx, ns, nx=n)
    ref = numpy_fsc_shells(f1n, f2n, idxn, ns, n)
    err = max(rel_err(got, twin), rel_err(got, ref))
    return dict(kernel="fsc_shells", size=f"{pairs}x{n}^3",
                native=timed(lambda: native.fsc_shells(f1, f2, idx, ns, nx=n), repeats, device),
                torch=timed(lambda: fourier.fsc_shell_sums(f1, f2, idx, ns, nx=n), repeats, device),
                numpy=timed(lambda: numpy_fsc_shells(f1n, f2n, idxn, ns, n), repeats, CPU, NUMPY_BUDGET_S[0]),
                err=err)


def bench_wedge(count: int, n: int, device: torch.device, repeats: int, rng: np.random.Generator) -> list[dict]:
    shape = (n, n, n)
    rot_np = geometry.random_rotations(count, rng)
    rot = torch.as_tensor(rot_np, dtype=torch.float64, device=device)
    got = native.wedge_mask(shape, -60, 60, rotations=rot)
    twin = fourier.missing_wedge_mask(shape, -60, 60, rotations=rot, device=device)
    ref = numpy_wedge(shape, -60, 60, rot_np)
    mism = int((got.cpu() != twin.cpu()).sum()) + int((got.cpu().numpy() != ref).sum())
    rows = [dict(kernel="wedge_mask", size=f"{count}x{n}^3",
                 native=timed(lambda: native.wedge_mask(shape, -60, 60, rotations=rot), repeats, device),
                 torch=timed(lambda: fourier.missing_wedge_mask(shape, -60, 60, rotations=rot, device=device),
                             repeats, device),
                 numpy=timed(lambda: numpy_wedge(shape, -60, 60, rot_np), repeats, CPU, NUMPY_BUDGET_S[0]),
                 err=float(mism))]
    vol = torch.as_tensor(rng.standard_normal((count, *shape)), dtype=torch.float32, device=device)
    spec = torch.fft.rfftn(vol, dim=(-3, -2, -1))
    del vol
    work = spec.clone()
    spec_np = spec.cpu().numpy()

    def run_native():
        work.copy_(spec)
        native.apply_wedge(work, -60, 60, rotations=rot, nx=n)

    def run_torch():
        work.copy_(spec)
        work.mul_(fourier.missing_wedge_mask(shape, -60, 60, rotations=rot, device=device))

    def run_numpy():
        return spec_np * numpy_wedge(shape, -60, 60, rot_np)

    run_native()
    mine = work.clone()
    run_torch()
    mism = int((mine != work).sum())
    # the copy_ of the input is part of every timing; it is the same for all three
    rows.append(dict(kernel="apply_wedge", size=f"{count}x{n}^3", native=timed(run_native, repeats, device),
                     torch=timed(run_torch, repeats, device), numpy=timed(run_numpy, repeats, CPU, NUMPY_BUDGET_S[0]),
                     err=float(mism)))
    return rows


def bench_blend(shape, tile: int, overlap: int, device: torch.device, repeats: int,
                rng: np.random.Generator) -> dict:
    origins = tiling.tile_origins(shape, tile, overlap)
    tiles = torch.as_tensor(rng.standard_normal((origins.shape[0], tile, tile, tile)), dtype=torch.float32)
    window = tiling.blending_window(tile, overlap)
    tiles_np, origins_np, window_np = tiles.numpy(), origins.numpy(), window.numpy()
    tiles, origins_d, window = tiles.to(device), origins.to(device), window.to(device)
    got = native.blend_tiles(tiles, origins_d, window, shape)
    twin = tiling.blend_tiles_torch(tiles, origins_d, window, shape)
    err = rel_err(got, twin)
    del twin
    ref = numpy_blend(tiles_np, origins_np, window_np, shape)
    err = max(err, rel_err(got, ref))
    del ref, got
    return dict(kernel="blend_tiles", size=f"{origins.shape[0]}x{tile}^3->{shape[0]}x{shape[1]}x{shape[2]}",
                native=timed(lambda: native.blend_tiles(tiles, origins_d, window, shape), repeats, device),
                torch=timed(lambda: tiling.blend_tiles_torch(tiles, origins_d, window, shape), repeats, device),
                numpy=timed(lambda: numpy_blend(tiles_np, origins_np, window_np, shape), repeats, CPU,
                            2 * NUMPY_BUDGET_S[0]),
                err=err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per implementation (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, not the reported figures)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-numpy-timing", action="store_true",
                        help="skip timing the float64 numpy references (still checked against); nan in the table")
    args = parser.parse_args(argv)
    NUMPY_BUDGET_S[0] = 0.0 if args.no_numpy_timing else 20.0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_native: --device cuda asked for but no GPU is present", file=sys.stderr)
        return 2
    if not native.is_compiled():
        print(f"bench_native: the native extension is not available ({native._state['reason']})", file=sys.stderr)
        return 1
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    if args.quick:
        rows.append(bench_fsc(8, 32, device, args.repeats, rng))
        rows += bench_wedge(8, 32, device, args.repeats, rng)
        rows.append(bench_blend((64, 96, 96), 32, 8, device, args.repeats, rng))
    else:
        rows.append(bench_fsc(64, 64, device, args.repeats, rng))
        rows.append(bench_fsc(8, 128, device, args.repeats, rng))
        rows += bench_wedge(64, 64, device, args.repeats, rng)
        rows.append(bench_blend((256, 512, 512), 64, 16, device, args.repeats, rng))
    print(f"device: {device} | torch {torch.__version__}, {torch.get_num_threads()} threads | "
          f"median of up to {args.repeats} repeats after 1 warm-up")
    header = f"{'kernel':<12} {'size':<28} {'native ms':>10} {'torch ms':>10} {'numpy ms':>10} " \
             f"{'torch/native':>12} {'numpy/native':>12} {'max diff':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['kernel']:<12} {r['size']:<28} {r['native']:>10.1f} {r['torch']:>10.1f} {r['numpy']:>10.1f} "
              f"{r['torch'] / r['native']:>11.1f}x {r['numpy'] / r['native']:>11.1f}x {r['err']:>10.2g}")
    print("max diff: relative to the twin and to numpy (fsc, blend); mismatching mask elements (wedge)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
