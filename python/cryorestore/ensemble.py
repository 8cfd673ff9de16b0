"""Ensembles at prediction time: test-time augmentation and the half-map-calibrated combination.

Test-time augmentation (TTA)
----------------------------
The network is applied to transformed copies of each tile, each output is transformed back, and the
results are averaged. The transforms are those the missing-wedge geometry allows (arrays (z, y, x),
tilt axis y):

* the rotations by ``k · 90°`` about y (in the (z, x) plane), ``k = 0 … 3`` — Noise2Noise's training
  augmentation, so its network has seen every one of them. ``k = 2`` maps the missing wedge onto
  itself; ``k = 1, 3`` turn it by 90°. The missing-wedge methods' networks learn to fill the wedge
  in the tomogram's own orientation only, so for them ``rot`` uses ``k = 0, 2``
  (``TrainingMethod.tta_quarter_turns``);
* optionally the mirror ``y → −y`` along the tilt axis, which keeps the wedge for any tilt range
  (the wedge is a set of (kx, kz) directions, whatever ky is).

``TTA_MODES``: ``none`` (the network alone), ``rot`` (4 rotations, or 2), ``rot+flip`` (8 transforms, or 4). Every
transform is exactly invertible on a cubic tile (no interpolation), so the TTA of a model that commutes
with them (e.g. the identity) returns its input exactly.

Combinations of f(even) and f(odd) (:data:`COMBINE_MODES`, :func:`combine_outputs`)
------------------------------------------------------------------------------------
``mean``: cryoCARE's ``(f(even) + f(odd)) / 2``; ``mean+lowpass``: that mean through
:func:`half_fsc_lowpass`; ``calibrated``: the per-shell combination below.

Half-map-calibrated combination
-------------------------------
With half maps ``e``, ``o`` (independent noise, same signal ``s``) and a denoiser ``f``, cryoCARE's
result is ``m = (f(e) + f(o)) / 2``. ``f`` was trained to denoise *one half*; ``m`` averages two and
has less noise than either, so its shells are not weighted as the mean-squared error against ``s``
would want, and the raw map ``r = (e + o) / 2`` still holds detail the network smoothed away. The
combination chooses, per Fourier shell ``k`` (shells of :mod:`cryorestore.fourier`), the weights
``(α_k, β_k)`` of ``α_k M + β_k R`` (capitals: Fourier transforms) that minimise the expected squared
error against ``s``. The normal equations need

    ⟨M, M⟩, ⟨M, R⟩, ⟨R, R⟩            (computed directly), and
    ⟨M, S⟩ ≈ (⟨F(e), O⟩ + ⟨F(o), E⟩) / 2,   ⟨R, S⟩ ≈ ⟨E, O⟩,

where ``⟨A, B⟩ = Re Σ_shell A·conj(B)``: the other half is an unbiased stand-in for ``s`` because its
noise is independent of the map it is compared with (the same argument as the half-map FSC). The
shell sums are taken over the *measured* coefficients only (the half maps carry no signal in the
missing wedge, so they could not tell what is right there) and the weights are applied to every
coefficient of the shell. Shell 0 (the mean) is left as ``m``'s. The weights minimise the error
against the signal as the half maps record it (CTF-modulated, phase-flipped), not against a
simulator's truth, which the method never sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from cryorestore import fourier
from cryorestore.errors import InputError

TileFn = Callable[[torch.Tensor], torch.Tensor]
TTA_MODES = ("none", "rot", "rot+flip")
COMBINE_MODES = ("mean", "mean+lowpass", "calibrated")


@dataclass(frozen=True)
class Transform:
    """``k`` quarter turns about y (in the (z, x) plane) after an optional mirror of y."""

    k: int = 0
    flip_y: bool = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Transform (…, Z, Y, X) tensors (Z must equal X when ``k`` is odd)."""
        if self.flip_y:
            x = torch.flip(x, dims=(-2,))
        return torch.rot90(x, self.k, dims=(-3, -1)) if self.k % 4 else x

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`apply`."""
        if self.k % 4:
            x = torch.rot90(x, -self.k, dims=(-3, -1))
        return torch.flip(x, dims=(-2,)) if self.flip_y else x


def tta_transforms(mode: str, quarter_turns: Sequence[int] = (0, 1, 2, 3)) -> list[Transform]:
    """The transforms of TTA mode ``mode`` (one of :data:`TTA_MODES`), identity first.

    ``quarter_turns``: the turns ``k`` about y that ``rot`` may use (a method's
    ``TrainingMethod.tta_quarter_turns``: ``(0, 2)``, which map the missing wedge onto itself, for
    networks trained to fill the wedge in its own orientation)."""
    if mode not in TTA_MODES:
        raise InputError(f"unknown test-time augmentation '{mode}'; choose one of {', '.join(TTA_MODES)}")
    turns = sorted({int(k) % 4 for k in quarter_turns} | {0})
    if mode == "none":
        return [Transform()]
    flips = (False, True) if mode == "rot+flip" else (False,)
    return [Transform(k, f) for f in flips for k in turns]


def with_tta(fn: TileFn, mode: str, quarter_turns: Sequence[int] = (0, 1, 2, 3)) -> TileFn:
    """``fn`` (batches (B, C, T, T, T) → same shape) averaged over the transforms of ``mode`` (turns
    about y limited to ``quarter_turns``, see :func:`tta_transforms`)."""
    transforms = tta_transforms(mode, quarter_turns)
    if len(transforms) == 1:
        return fn

    def wrapped(batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[-3] != batch.shape[-1]:
            raise InputError(f"test-time rotations about y need tiles with Z = X, got {tuple(batch.shape[-3:])}")
        acc = None
        for t in transforms:
            out = t.invert(fn(t.apply(batch).contiguous()))
            out = out.to(torch.promote_types(out.dtype, torch.float32))  # half-precision outputs add up in float32
            acc = out if acc is None else acc + out
        return acc / len(transforms)

    return wrapped


# --------------------------------------------------------------------------------------------
# half-map-calibrated combination
# --------------------------------------------------------------------------------------------
@dataclass
class Combination:
    """The combined map (float32 (z, y, x)) and its per-shell weights (plain lists, JSON-ready)."""

    volume: np.ndarray
    shell_frequency: list[float]
    weight_restored: list[float]
    weight_raw: list[float]


def _spectrum(v: np.ndarray) -> torch.Tensor:
    return torch.fft.rfftn(torch.from_numpy(np.asarray(v, dtype=np.float64)))


def combination_weights(f_even: np.ndarray, f_odd: np.ndarray, even: np.ndarray, odd: np.ndarray,
                        tilt_range: tuple[float, float] | None = None,
                        ridge: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Per-shell weights ``(alpha, beta)`` (each (n_shells,) float64) of the module doc's combination.

    ``tilt_range`` (degrees about y) restricts the shell sums to the measured coefficients; ``ridge``
    (relative to the Gram matrix's trace) keeps a shell without power solvable.
    """
    shape = _check_four(f_even, f_odd, even, odd)
    n = fourier.n_shells(shape)
    idx = fourier.shell_index(shape)
    measured = None if tilt_range is None else fourier.missing_wedge_mask(shape, *tilt_range).double()
    fa, fb, fe, fo = (_spectrum(v) for v in (f_even, f_odd, even, odd))
    return _solve_weights(_combination_sums(fa, fb, fe, fo, idx, n, shape[2], measured), ridge)


def _check_four(f_even, f_odd, even, odd) -> tuple[int, ...]:
    shape = tuple(np.shape(even))
    for name, v in (("f(odd)", f_odd), ("f(even)", f_even), ("odd", odd)):
        if tuple(np.shape(v)) != shape:
            raise InputError(f"{name} {tuple(np.shape(v))} differs in shape from the even half {shape}")
    if len(shape) != 3:
        raise InputError(f"expected (z, y, x) volumes, got shape {shape}")
    return shape


def _combination_sums(fa: torch.Tensor, fb: torch.Tensor, fe: torch.Tensor, fo: torch.Tensor, idx: torch.Tensor,
                      n: int, nx: int, measured: torch.Tensor | None) -> np.ndarray:
    """(5, n) shell sums ⟨M,M⟩, ⟨M,R⟩, ⟨R,R⟩, ⟨M,S⟩, ⟨R,S⟩ of the module doc from the four spectra."""
    fm, fr = 0.5 * (fa + fb), 0.5 * (fe + fo)

    def dot(p: torch.Tensor, q: torch.Tensor) -> np.ndarray:
        return fourier.fsc_shell_sums(p, q, idx, n, nx=nx, coefficient_weights=measured)[0, 0].numpy()

    return np.stack([dot(fm, fm), dot(fm, fr), dot(fr, fr), 0.5 * (dot(fa, fo) + dot(fb, fe)), dot(fe, fo)])


def _solve_weights(sums: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    mm, mr, rr, ms, rs = sums
    n = sums.shape[1]
    alpha, beta = np.ones(n), np.zeros(n)
    for k in range(1, n):
        g = np.array([[mm[k], mr[k]], [mr[k], rr[k]]])
        lam = ridge * max(np.trace(g), np.finfo(np.float64).tiny)
        alpha[k], beta[k] = np.linalg.solve(g + lam * np.eye(2), np.array([ms[k], rs[k]]))
    return alpha, beta


def crop_combination_weights(f_even, f_odd, even, odd, tilt_range: tuple[float, float] | None = None,
                             ridge: float = 1e-9, edge: int | None = None
                             ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """:func:`combination_weights` with the shell sums added over the crops of
    :func:`cryorestore.blockwise.crop_slices` (edge ``edge``, default ``blockwise.FSC_CROP``), for maps
    too large for whole-volume FFTs; also returns the crop shape whose shells the weights have. With
    the whole map as the one crop the weights are :func:`combination_weights`'s."""
    from cryorestore import blockwise

    shape = _check_four(f_even, f_odd, even, odd)
    crops = blockwise.crop_slices(shape, blockwise.FSC_CROP if edge is None else edge)
    cshape = tuple(s.stop - s.start for s in crops[0])
    n, idx = fourier.n_shells(cshape), fourier.shell_index(cshape)
    measured = None if tilt_range is None else fourier.missing_wedge_mask(cshape, *tilt_range).double()
    views = [blockwise.page_releasing(v) for v in (f_even, f_odd, even, odd)]
    sums = np.zeros((5, n))
    for crop in crops:
        sums += _combination_sums(*(blockwise.crop_spectra(v, crop) for v in views), idx, n, cshape[2], measured)
    alpha, beta = _solve_weights(sums, ridge)
    return alpha, beta, cshape


def calibrated_combination(f_even: np.ndarray, f_odd: np.ndarray, even: np.ndarray, odd: np.ndarray,
                           tilt_range: tuple[float, float] | None = None) -> Combination:
    """``α_k M + β_k R`` per shell (module doc) from the network outputs and the half maps.

    Maps larger than :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels: the weights come from the
    stated crops (:func:`crop_combination_weights`, shells of the crop) and the per-shell filter is
    applied by overlap-save in blocks (:func:`cryorestore.blockwise.fourier_filter_blockwise`, float64
    blocks, float32 output); ``shell_frequency`` then lists the crop's shells."""
    from cryorestore import blockwise

    shape = tuple(np.shape(even))
    if blockwise.is_large(shape):
        alpha, beta, cshape = crop_combination_weights(f_even, f_odd, even, odd, tilt_range)
        freqs = fourier.shell_frequencies(cshape)
        out = np.empty(shape, dtype=np.float32)
        blockwise.fourier_filter_blockwise([blockwise.MeanOf(f_even, f_odd), blockwise.MeanOf(even, odd)], freqs,
                                           [alpha, beta], out)
        return Combination(out, freqs.tolist(), alpha.tolist(), beta.tolist())
    alpha, beta = combination_weights(f_even, f_odd, even, odd, tilt_range)
    idx = fourier.shell_index(shape).clamp(max=len(alpha) - 1)
    a, b = torch.from_numpy(alpha)[idx], torch.from_numpy(beta)[idx]
    fm = 0.5 * (_spectrum(f_even) + _spectrum(f_odd))
    fr = 0.5 * (_spectrum(even) + _spectrum(odd))
    out = torch.fft.irfftn(a * fm + b * fr, s=shape).numpy().astype(np.float32)
    return Combination(out, fourier.shell_frequencies(shape).tolist(), alpha.tolist(), beta.tolist())


def mean_of(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Plain mean of the network outputs (float32): cryoCARE's combination."""
    return (np.sum([np.asarray(o, dtype=np.float64) for o in outputs], axis=0) / len(outputs)).astype(np.float32)


#: half-map FSC at whose frequency :func:`half_fsc_lowpass`'s Gaussian transfer is 1/2 (the field's
#: gold-standard 0.143; chosen on seeds 0-1, see :func:`half_fsc_lowpass`)
LOWPASS_FSC = 0.143


def half_fsc_lowpass(volume: np.ndarray, even: np.ndarray, odd: np.ndarray, threshold: float = LOWPASS_FSC,
                     inplace: bool = False, sigma: float | None = None) -> np.ndarray:
    """``volume`` low-passed (float32) by the Gaussian whose transfer ``exp(−2π²σ²f²)`` is 1/2 at the
    frequency where the half maps' FSC first drops below ``threshold`` (no truth involved).

    A denoiser trained on half maps estimates the signal *as they record it* (CTF, reconstruction filter
    and all), but the network's own error is largest at the frequencies the halves barely agree on; a
    light low-pass there brings the mean of f(even) and f(odd) closer to the noise-free reconstruction.
    ``threshold`` was chosen on seeds 0-1 of the realistic simulation (IsoNet, 200 steps; PSNR against
    ``clean.mrc`` on the sampled region, ``benchmarks/RESULTS.md`` "Choosing the final low-pass"): 0.143
    gave 41.86 / 42.48 dB against the best Gaussian's 41.32 / 41.72, where 0.5 gave 39.94 / 40.68. 0.5
    scores higher against the specimen's potential (36.54 against 35.34 dB on seed 0, affine fit), which
    rewards heavy smoothing (a Gaussian of σ 2 is the best Gaussian there).

    Maps larger than :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels: the half-map FSC is
    estimated over the crops of :func:`cryorestore.blockwise.crop_slices` (up to 8 boxes of at most
    256³ voxels) and the Gaussian is applied in float32 by chunks (:func:`cryorestore.blockwise.
    gaussian_inplace`), into ``volume`` itself when ``inplace`` (a writable float32 array), so no
    whole-volume FFT or float64 copy is made. Smaller maps: whole-volume float64, as before (with
    ``inplace`` the result is copied into ``volume``). ``sigma``: :func:`half_fsc_lowpass_sigma` of the
    halves when the caller took it already (before the network's output was in memory, say)."""
    from cryorestore import baseline, blockwise

    sigma = half_fsc_lowpass_sigma(even, odd, threshold) if sigma is None else float(sigma)
    if not blockwise.is_large(np.shape(even)):
        out = baseline.gaussian_lowpass(volume, sigma).astype(np.float32)
        if inplace:
            volume[...] = out
            return volume
        return out
    own = inplace and isinstance(volume, np.ndarray) and volume.dtype == np.float32 and volume.flags.writeable
    out = volume if own else np.array(volume, dtype=np.float32)
    return blockwise.gaussian_inplace(out, sigma)


def half_fsc_lowpass_sigma(even: np.ndarray, odd: np.ndarray, threshold: float = LOWPASS_FSC) -> float:
    """Width (voxels) of :func:`half_fsc_lowpass`'s Gaussian: transfer 1/2 where the half maps' FSC first
    drops below ``threshold``. Maps larger than :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels:
    the FSC is estimated over the stated crops of :func:`cryorestore.blockwise.crop_fsc` (the curve has
    the crop's shells), never a whole-volume FFT."""
    from cryorestore import baseline, blockwise

    shape = tuple(np.shape(even))
    if blockwise.is_large(shape):
        curve, cshape = blockwise.crop_fsc(even, odd)
        f0 = fourier.resolutions(curve, cshape, thresholds=(threshold,))[threshold]
        return baseline.sigma_for_frequency(f0.frequency)
    f0 = fourier.resolutions(baseline.half_map_fsc(even, odd), shape, thresholds=(threshold,))[threshold]
    return baseline.sigma_for_frequency(f0.frequency)


def check_combine(mode: str) -> None:
    """An input error unless ``mode`` is one of :data:`COMBINE_MODES`."""
    if mode not in COMBINE_MODES:
        raise InputError(f"unknown combination '{mode}'; choose one of {', '.join(COMBINE_MODES)}")


def combine_outputs(outputs: Sequence[np.ndarray], even: np.ndarray, odd: np.ndarray | None, mode: str,
                    tilt_range: tuple[float, float]) -> np.ndarray:
    """The restored map from the network outputs of the method's prediction inputs (f(even), f(odd) or
    f(v)) by :data:`COMBINE_MODES` ``mode``; without ``odd`` (one map) every mode is the plain mean."""
    check_combine(mode)
    if odd is None or len(outputs) != 2 or mode == "mean":
        return mean_of(outputs)
    if mode == "calibrated":
        return calibrated_combination(outputs[0], outputs[1], even, odd, tilt_range).volume
    return half_fsc_lowpass(mean_of(outputs), even, odd, inplace=True)


def combine_halves(f_even: np.ndarray, f_odd: np.ndarray, even: np.ndarray, odd: np.ndarray, mode: str,
                   tilt_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, dict]:
    """The combination ``mode`` split into a map of each half, ``(g(even), g(odd), params)`` (float32).

    Every combination of :data:`COMBINE_MODES` is linear in ``(f(e), f(o), e, o)`` once its data-driven
    parameters are fixed, and symmetric in the halves, so it is the mean of ``g(e)`` and ``g(o)`` with

    * ``mean``: ``g(e) = f(e)``;
    * ``mean+lowpass``: ``g(e) = L f(e)``, ``L`` the Gaussian of :func:`half_fsc_lowpass`;
    * ``calibrated``: ``g(e) = α_k F(e) + β_k E`` per shell (:func:`combination_weights`).

    ``(g(e) + g(o)) / 2`` is :func:`combine_outputs`'s map. ``g(e)`` depends on the odd half only through
    the parameters (one Gaussian width, or two weights per shell, from sums over the whole map), which is
    what :mod:`cryorestore.evaluate.truthfree` needs to score the combination on a held-out region.
    """
    check_combine(mode)
    fe = np.asarray(f_even, dtype=np.float32)
    fo = np.asarray(f_odd, dtype=np.float32)
    if mode == "mean":
        return fe, fo, {"combine": mode}
    if mode == "mean+lowpass":
        sigma = half_fsc_lowpass_sigma(even, odd)
        lp = [ndimage.gaussian_filter(v, sigma, mode="reflect", output=np.float32) for v in (fe, fo)]
        return lp[0], lp[1], {"combine": mode, "sigma_voxels": sigma}
    shape = np.shape(even)
    alpha, beta = combination_weights(fe, fo, even, odd, tilt_range)
    idx = fourier.shell_index(shape).clamp(max=len(alpha) - 1)
    a, b = torch.from_numpy(alpha)[idx], torch.from_numpy(beta)[idx]
    ge = torch.fft.irfftn(a * _spectrum(fe) + b * _spectrum(even), s=shape).numpy().astype(np.float32)
    go = torch.fft.irfftn(a * _spectrum(fo) + b * _spectrum(odd), s=shape).numpy().astype(np.float32)
    return ge, go, {"combine": mode, "weight_restored": alpha.tolist(), "weight_raw": beta.tolist()}


#: window (voxels) of the uncertainty map's local mean
UNCERTAINTY_WINDOW = 5


def uncertainty_map(g_even: np.ndarray, g_odd: np.ndarray, window: int = UNCERTAINTY_WINDOW,
                    slab: int = 32) -> np.ndarray:
    """Local standard deviation (float32, (z, y, x), the maps' grey units) of the mean of ``g_even`` and
    ``g_odd`` due to the halves' noise: ``sqrt(uniform_filter(((g_e − g_o)/2)², window))`` (the module doc of :mod:`cryorestore.evaluate.truthfree`: ``((g_e − g_o)/2)²`` estimates
    the variance of the mean due to the halves' independent noise).

    Computed on z-slabs of ``slab`` planes plus the window's halo, so the temporaries stay small."""
    if np.shape(g_even) != np.shape(g_odd):
        raise InputError(f"the two half outputs differ in shape: {np.shape(g_even)} vs {np.shape(g_odd)}")
    if window < 1:
        raise InputError(f"the uncertainty window must be at least 1 voxel, got {window}")
    nz = np.shape(g_even)[0]
    out = np.empty(np.shape(g_even), dtype=np.float32)
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        h0, h1 = max(z0 - window // 2, 0), min(z1 + (window - 1) // 2, nz)
        d = 0.5 * (np.asarray(g_even[h0:h1], dtype=np.float64) - np.asarray(g_odd[h0:h1], dtype=np.float64))
        v = ndimage.uniform_filter(d * d, size=window, mode="reflect")
        out[z0:z1] = np.sqrt(np.clip(v[z0 - h0:z1 - h0], 0.0, None))
    return out


class UncertaintyOf:
    """:func:`uncertainty_map` of ``g_even``/``g_odd`` (array-likes with basic slicing, e.g. lazy views of
    :mod:`cryorestore.blockwise`) computed for the region asked for only: the region grown by the
    window's reach (``window // 2`` below, ``(window − 1) // 2`` above, clipped at the map's faces, where
    ``uniform_filter`` reflects as on the whole map) is read, filtered in float64 and cropped back, so a
    slab costs a slab. :func:`cryorestore.blockwise.write_map` writes it slab by slab."""

    def __init__(self, g_even, g_odd, window: int = UNCERTAINTY_WINDOW) -> None:
        if tuple(np.shape(g_even)) != tuple(np.shape(g_odd)):
            raise InputError(f"the two half outputs differ in shape: {np.shape(g_even)} vs {np.shape(g_odd)}")
        if window < 1:
            raise InputError(f"the uncertainty window must be at least 1 voxel, got {window}")
        self.g_even, self.g_odd, self.window = g_even, g_odd, int(window)
        self.shape, self.dtype, self.ndim = tuple(int(s) for s in np.shape(g_even)), np.dtype(np.float32), 3

    def __getitem__(self, key) -> np.ndarray:
        from cryorestore import blockwise

        sl = blockwise._norm_key(key, self.shape)
        lo = [max(0, s.start - self.window // 2) for s in sl]
        hi = [min(n, s.stop + (self.window - 1) // 2) for s, n in zip(sl, self.shape)]
        grown = tuple(slice(a, b) for a, b in zip(lo, hi))
        d = 0.5 * (blockwise.read(self.g_even, grown).astype(np.float64) - blockwise.read(self.g_odd, grown))
        v = ndimage.uniform_filter(d * d, size=self.window, mode="reflect")
        core = tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, lo))
        out = np.sqrt(np.clip(v[core], 0.0, None)).astype(np.float32)
        return blockwise._squeeze_ints(key, out)

