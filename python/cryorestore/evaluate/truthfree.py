"""A truth-free score of restored maps on a held-out region: estimated error and PSNR gain, cross-FSC,
hallucination and leak checks, and the uncertainty map.

Arrays are (z, y, x); sizes and positions in voxels; frequencies in cycles/voxel (shells of
:mod:`cryorestore.fourier`). Nothing here needs a truth; ``clean``/``truth`` only add the true figures
beside the estimates.

Why it works (Noise2Noise risk estimate)
----------------------------------------
Let the half maps be ``e = s + n_e`` and ``o = s + n_o`` with zero-mean noises independent of each other
(both T2T and F2F halves are), and let a method give a map of each half alone, ``g(e)`` and ``g(o)``,
where ``g(e)`` does not depend on ``n_o`` — true on a region no training box touched (the slab the
trainer holds out, recorded in the model directory) or for any classical filter. The map a user keeps
is their mean ``P = (g(e) + g(o)) / 2`` (what ``predict`` writes: see :func:`cryorestore.ensemble.combine_halves`).
Per voxel of the region, with ``a = g(e) − s`` and ``b = g(o) − s``,

* ``E (g(e) − o)² = E a² + σ_o²`` and ``E (g(o) − e)² = E b² + σ_e²`` (the other half's noise is
  independent of the map it is compared with), and ``E (e − o)² = σ_e² + σ_o²``;
* ``((a + b)/2)² = (a² + b²)/2 − ((a − b)/2)²`` exactly, and ``a − b = g(e) − g(o)`` is observed.

Hence, with region means ``A = ⟨(g(e) − o)²⟩``, ``B = ⟨(g(o) − e)²⟩``, ``D = ⟨(e − o)²⟩``, ``C = ⟨(g(e) − g(o))²⟩``,

    MSE_est(P) = (A + B)/2 − D/2 − C/4

is an **unbiased estimate of the mean squared error of P against s** — with no assumption of equal
noise in the halves, white noise, or Gaussian noise. The raw map ``(e + o)/2`` is the case ``g = id``:
``MSE_est(raw) = D/4``. The estimated gain is ``10 log10(MSE_est(raw) / MSE_est(P))`` dB (a ratio of
unbiased estimates; its bias is second order). Differences of estimated errors between maps are unbiased
as differences of held-out errors; a ratio of two estimates is what needs the region to be large.

What it does **not** cover:

* ``s`` is the signal *both halves share*: the noise-free reconstruction (CTF, missing wedge, the
  reconstruction filter), not the specimen's potential. Errors against a simulator's potential can rank
  maps differently (a map can approach the reconstruction and not the potential).
* With T2T halves the two halves see different tilts, so their signals differ: ``e = s + δ + n_e``,
  ``o = s − δ + n_o`` (``s`` the reconstruction from all tilts). For a linear filter ``G`` the estimate
  is then off by ``2⟨Gδ, δ⟩ − ⟨δ²⟩``: ``+⟨δ²⟩`` for raw (``G = 1``), about ``−⟨δ²⟩`` for a map that removes
  the frequencies where ``δ`` lives. The gain of such a map is over-estimated by about
  ``10 log10((1 + ⟨δ²⟩/MSE(raw)) · MSE/(MSE − ⟨δ²⟩))``, which grows as the map's own error approaches
  ``⟨δ²⟩``. F2F halves share the tilts and have no such bias. ``benchmarks/bench_truthfree.py`` measures
  ``⟨δ²⟩`` from the simulator's noise-free half reconstructions. Measured on the realistic simulation,
  seeds 0-2 (``benchmarks/RESULTS.md``, "Truth-free score: F2F validation"): with F2F halves every estimated gain is within 0.2 dB of the
  true one; with T2T halves the Gaussian, Wiener and network gains are 2.3-4.1 dB too high. Nothing in
  the two maps tells the splits apart, so :data:`HALVES_ASSUMPTION` is written to ``score.json`` and
  printed with every score.
* Precision: every map's estimate carries the same noise term ``⟨n_e·n_o⟩`` (standard deviation about
  ``σ²/√N_eff``); when a map's error is a small fraction of the noise (gains of 10 dB and more) it moves
  all gains together by a dB or more. Differences of estimated errors cancel it, so the ranking is much
  surer than the absolute gain: ``p_beats_gaussian`` is the fraction of bootstrap resamples in which the
  map's estimated error is below the Gaussian's.
* A map whose even-side output saw the odd half's noise (a network trained on the region, a joint method
  fed both halves) breaks the independence and makes the estimate optimistic, even negative: the leak
  check below is there to catch it.
* Data-driven choices made on the region itself (the Gaussian's sigma, the Wiener and combination weights
  from shell sums of the region) use its noise; with one or a few numbers per shell over ≥ 10⁴
  coefficients the optimism is negligible.

The interval is a block bootstrap: the region is cut into cubic blocks (``block`` voxels, 16 by default),
the sums ``A, B, C, D`` are kept per block, and blocks are resampled with replacement (the same draws for
every map); the 2.5 and 97.5 percentiles of the resampled gain are reported. Blocks are treated as
independent, which neighbouring blocks of smooth maps are not quite; the interval is a guide.

Fourier measures (per shell, over the *measured* coefficients when the tilt range is known, with
``⟨X, Y⟩ = Re Σ X·conj Y`` and capitals for transforms of the region box, the mask applied)
----------------------------------------------------------------------------------------------
* ``half_fsc``: the FSC of the halves, ``F``.
* ``cross_fsc``: ``(FSC(g(e), o) + FSC(g(o), e)) / 2``: the signal each half's map keeps as the other
  half confirms it. No map of one half can beat the signal itself, whose FSC against one half is
  ``sqrt(F)`` when both halves have the same SNR: ``cross_fsc_bound``.
* *leak*: ``cross_fsc`` above ``sqrt(max(F, 0)) + z/√n`` in some shell (``n`` independent
  coefficients in the shell, ``z`` = :data:`Z_SIGMAS`), or an estimated error ≤ 0: the map of one half
  knows the other half's noise (trained on the region, or a joint method). Its estimate is not to be trusted.
* *no-signal shells*: shells ≥ 1 where ``F < z/√n`` (and ``z/√n`` ≤ :data:`MAX_NOSIGNAL_TOL`, so that a
  shell of a few coefficients is never one): the halves share nothing there that the noise could not explain.
* *hallucinated power*: over the no-signal shells, ``(Σ⟨G_e, G_o⟩ − Σ⟨E, O⟩) / Σ(|E|² + |O|²)/2``: structure
  that the maps of the two halves *agree on* beyond what the halves themselves share, as a fraction of
  the raw half power there. A filter that only shrinks (gain ≤ 1 per coefficient) scores ≤ 0; a network
  that invents consistent texture scores its power. Flagged above :data:`HALLUCINATION_POWER`.
* *removed correlation*: ``(⟨E − G_e, O⟩ + ⟨O − G_o, E⟩) / (|E|² + |O|²)``: the correlation of what was
  removed with the other half. Positive where signal was removed (a low-pass's removed part correlates
  like the halves do), negative where the map kept the other half's noise or amplified structure;
  in the no-signal shells it must be about zero (|·| ≤ z/√n), else flagged.
* ``kept_power``: power of ``P`` over the raw map's ``(e + o)/2`` in the no-signal shells.

Uncertainty map
---------------
``u = sqrt(uniform_filter(((g(e) − g(o)) / 2)², window))``: ``((g(e) − g(o))/2)²`` is an unbiased estimate
of the variance of ``P`` due to the noise (the ``C/4`` term above), so ``u`` is the local standard
deviation of the restored map from the half maps' noise, in the map's grey units. It does not include
the error both halves share (bias, hallucinated structure common to both).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from cryorestore import blockwise, ensemble, fourier
from cryorestore.errors import InputError

#: noise standard deviations of an FSC (1/√n, n independent coefficients) for the checks' tolerances
Z_SIGMAS = 4.0
#: flag a map whose consistent power in the no-signal shells exceeds this fraction of the raw half power there
HALLUCINATION_POWER = 0.05
#: a shell counts as without signal only when its FSC noise level z/√n is at most this (enough coefficients)
MAX_NOSIGNAL_TOL = 0.2
#: edge (voxels) of the bootstrap blocks
BLOCK = 16
#: bootstrap resamples
N_BOOTSTRAP = 2000
#: what the estimate assumes of the halves, with the size of the error when it does not hold (measured:
#: benchmarks/RESULTS.md "Truth-free score against the truth" and "Truth-free score: F2F validation"); written to score.json and printed
HALVES_ASSUMPTION = (
    "the estimate assumes half maps that share their noise-free signal, as frame-split (F2F) halves do; "
    "tilt-split (T2T, even/odd tilts) halves do not, and the estimate then over-rates maps that smooth "
    "(measured on the realistic simulation, seeds 0-2: estimated gains of the Gaussian, Wiener filter and "
    "three networks 2.3-4.1 dB above the true gains; the leak check also flagged a network that had learnt none of "
    "the other half's noise): with T2T halves read the ranking and P(>gauss), not the dB")


# --------------------------------------------------------------------------------------------
# held-out region
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """A held-out region of a (z, y, x) map: the bounding box ``box`` (three ``(start, stop)`` pairs,
    voxels) and, optionally, a boolean ``mask`` of the box's shape (None: the whole box)."""

    box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    mask: np.ndarray | None = None
    description: str = ""

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in self.box)  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in self.box)  # type: ignore[return-value]

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape)) if self.mask is None else int(self.mask.sum())

    def to_dict(self) -> dict:
        return {"box": [list(p) for p in self.box], "masked": self.mask is not None,
                "n_voxels": self.n_voxels, "description": self.description}


AXES = {"z": 0, "y": 1, "x": 2, "0": 0, "1": 1, "2": 2}


def slab_region(shape: Sequence[int], axis: int, start: int, stop: int, description: str = "") -> Region:
    """The slab ``start ≤ index < stop`` along ``axis`` (0 z, 1 y, 2 x) of a map of ``shape``."""
    shape = tuple(int(s) for s in shape)
    if axis not in (0, 1, 2):
        raise InputError(f"the holdout axis must be z, y or x, got {axis}")
    n = shape[axis]
    if not 0 <= start < stop <= n:
        raise InputError(f"the holdout slab {'zyx'[axis]} {start}:{stop} lies outside the map, which has "
                         f"{n} voxels along {'zyx'[axis]} (shape {shape}); give 0 <= START < STOP <= {n}")
    box = [(0, s) for s in shape]
    box[axis] = (int(start), int(stop))
    return Region(tuple(box), None, description or f"slab {'zyx'[axis]} in [{start}, {stop})")  # type: ignore[arg-type]


def parse_holdout(text: str, shape: Sequence[int]) -> Region:
    """``AXIS:START:STOP`` (axis z, y or x; voxel indices, STOP exclusive) as a :class:`Region`."""
    m = re.fullmatch(r"\s*([zyxZYX012])\s*:\s*(-?\d+)\s*:\s*(-?\d+)\s*", text)
    if not m:
        raise InputError(f"--holdout '{text}' is not AXIS:START:STOP (e.g. y:224:256, voxels, STOP exclusive)")
    return slab_region(shape, AXES[m.group(1).lower()], int(m.group(2)), int(m.group(3)),
                       f"slab {m.group(1).lower()} in [{m.group(2)}, {m.group(3)}) (--holdout)")


def mask_region(mask: np.ndarray, shape: Sequence[int], name: str = "mask") -> Region:
    """The voxels where ``mask`` (same shape as the map) is non-zero, within their bounding box."""
    if tuple(np.shape(mask)) != tuple(shape):
        raise InputError(f"the holdout mask {name} has shape {tuple(np.shape(mask))} but the maps have "
                         f"{tuple(shape)}; they must match voxel for voxel")
    sel = np.asarray(mask) != 0
    if not sel.any():
        raise InputError(f"the holdout mask {name} selects no voxel; mark the held-out region with 1")
    idx = [np.flatnonzero(sel.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
    box = tuple((int(ix[0]), int(ix[-1]) + 1) for ix in idx)
    sub = sel[tuple(slice(a, b) for a, b in box)]
    return Region(box, None if sub.all() else sub.copy(), f"mask {name} ({int(sel.sum())} voxels)")  # type: ignore[arg-type]


def holdout_from_config(config: Mapping, shape: Sequence[int], model_dir: str = "the model directory",
                        even_path: str | None = None, even_data: np.ndarray | None = None) -> Region:
    """The held-out slab the trainer recorded in a model directory's ``config.json`` (``holdout``, one
    entry per training tomogram, in the order of ``even``: ``axis``, ``start``, ``stop`` in the input
    tomogram's voxels, ``shape``, ``fingerprint``). With several, the entry whose fingerprint
    (:func:`cryorestore.data.volume_fingerprint`) matches ``even_data``, else whose tomogram is the file
    ``even_path``, else the only one of the maps' shape."""
    from pathlib import Path

    from cryorestore.data import volume_fingerprint

    entries = list(config.get("holdout") or [])
    if not entries:
        raise InputError(f"{model_dir} records no held-out slab (trained before cryorestore recorded it); "
                         f"give the region yourself with --holdout AXIS:START:STOP or --holdout-mask")
    shape = tuple(int(v) for v in shape)
    evens = list(config.get("even") or [])
    chosen = None
    if even_data is not None:
        fp = np.asarray(volume_fingerprint(even_data))
        hits = [h for h in entries if tuple(h["shape"]) == shape and "fingerprint" in h
                and np.allclose(h["fingerprint"], fp, rtol=1e-6, atol=0.0)]
        if len(hits) == 1:
            chosen = hits[0]
    if chosen is None and even_path is not None:
        for i, h in enumerate(entries):
            try:
                if i < len(evens) and Path(evens[i]).samefile(even_path):
                    chosen = h
            except OSError:
                pass
    if chosen is None:
        fits = [h for h in entries if tuple(h["shape"]) == shape]
        if len(fits) != 1:
            shapes = ", ".join(str(tuple(h["shape"])) for h in entries)
            raise InputError(f"{model_dir} was trained on tomograms of shape {shapes}, and none of them is "
                             f"unambiguously these maps {shape}; give the held-out region with --holdout or "
                             f"--holdout-mask")
        chosen = fits[0]
    if tuple(chosen["shape"]) != shape:
        raise InputError(f"{model_dir} was trained on a tomogram of shape {tuple(chosen['shape'])}, not on these "
                         f"maps {shape}; give the held-out region with --holdout or --holdout-mask")
    a = int(chosen["axis"])
    return slab_region(shape, a, int(chosen["start"]), int(chosen["stop"]),
                       f"slab {'zyx'[a]} in [{chosen['start']}, {chosen['stop']}) held out in training")


#: the held-out region of a map above :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels is scored on its
#: central part of at most this many voxels (:func:`capped_region`)
SCORE_VOXELS = 1 << 22


def capped_region(region: Region, max_voxels: int = SCORE_VOXELS) -> Region:
    """``region`` itself when it has at most ``max_voxels`` voxels or a mask; else its central part: the
    region's thinnest axis (a held-out slab's own axis) kept whole, the two others cut to their centred
    ``n·sqrt(max_voxels / n_voxels)`` voxels. The score's float64 sums and FFTs of the region (and the
    network run on it plus a margin) then stay bounded on portal-sized maps; the description says so."""
    if region.mask is not None or region.n_voxels <= max_voxels:
        return region
    shape = region.shape
    thin = int(np.argmin(shape))
    scale = math.sqrt(max_voxels / region.n_voxels)
    box = list(region.box)
    for a in range(3):
        if a == thin:
            continue
        m = max(1, min(shape[a], int(shape[a] * scale)))
        lo = region.box[a][0] + (shape[a] - m) // 2
        box[a] = (lo, lo + m)
    cut = Region(tuple(box), None, "")  # type: ignore[arg-type]
    where = " x ".join(f"{'zyx'[a]} [{lo}, {hi})" for a, (lo, hi) in enumerate(cut.box))
    return Region(cut.box, None, f"{region.description}, its central part {where} ({cut.n_voxels} voxels; "
                                 f"large map: at most {max_voxels} voxels scored)")


def training_overlap(config: Mapping, region: Region) -> str | None:
    """A sentence when ``region`` reaches into the part of a training tomogram (of the same shape) where
    the model directory says training boxes lay, else None: the estimate there is biased (optimistic)."""
    for h in config.get("holdout") or []:
        a, stop = int(h["axis"]), int(h.get("train_stop", h["start"]))
        if region.box[a][0] < stop:
            return (f"the region reaches {'zyx'[a]} < {stop}, where the model's training boxes lay: the estimate "
                    f"there is optimistic (the network has seen that noise)")
    return None


def expanded_box(region: Region, shape: Sequence[int], margin: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(outer, inner): the region's box grown by ``margin`` voxels on every side (clipped to ``shape``), and
    the region's box in the outer box's coordinates. Filters and networks run on the outer box so that the
    region sees the same context as in the whole map."""
    outer, inner = [], []
    for (a, b), n in zip(region.box, shape):
        lo, hi = max(0, a - margin), min(int(n), b + margin)
        outer.append(slice(lo, hi))
        inner.append(slice(a - lo, b - lo))
    return tuple(outer), tuple(inner)


# --------------------------------------------------------------------------------------------
# error estimates and bootstrap
# --------------------------------------------------------------------------------------------
def block_sums(g_even: np.ndarray, g_odd: np.ndarray, even: np.ndarray, odd: np.ndarray,
               mask: np.ndarray | None = None, block: int = BLOCK) -> np.ndarray:
    """Per-block sums (n_blocks, 5) float64 of ``(g(e)−o)², (g(o)−e)², (g(e)−g(o))², (e−o)²`` and the
    voxel count, over the region box (arrays of one shape) cut into ``block``³ blocks (smaller at the far
    edges); blocks without a masked voxel are dropped."""
    shape = np.shape(even)
    for name, v in (("g(even)", g_even), ("g(odd)", g_odd), ("odd", odd)):
        if np.shape(v) != shape:
            raise InputError(f"{name} {np.shape(v)} differs in shape from the even half {shape}")
    ge, go, e, o = (np.asarray(v, dtype=np.float64) for v in (g_even, g_odd, even, odd))
    w = np.ones(shape) if mask is None else np.asarray(mask, dtype=np.float64)
    terms = [(ge - o) ** 2, (go - e) ** 2, (ge - go) ** 2, (e - o) ** 2, np.ones(shape)]
    edges = [np.arange(0, n, block) for n in shape]
    out = []
    for i in edges[0]:
        for j in edges[1]:
            for k in edges[2]:
                sl = (slice(i, i + block), slice(j, j + block), slice(k, k + block))
                ww = w[sl]
                if ww.sum() > 0:
                    out.append([float((t[sl] * ww).sum()) for t in terms])
    return np.asarray(out, dtype=np.float64).reshape(-1, 5)


def mse_from_sums(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(MSE_est(raw), MSE_est(P)) from summed terms (…, 5) (see the module doc)."""
    a, b, c, d, n = (sums[..., i] for i in range(5))
    return d / (4 * n), ((a + b) / 2 - d / 2 - c / 4) / n


def gain_db(mse_raw: np.ndarray | float, mse: np.ndarray | float) -> np.ndarray:
    """``10 log10(mse_raw / mse)``; +inf where ``mse`` ≤ 0 (an impossible estimate: see *leak*)."""
    mr, m = np.asarray(mse_raw, dtype=np.float64), np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, 10.0 * np.log10(mr / np.where(m > 0, m, 1.0)), np.inf)


def bootstrap_weights(n_blocks: int, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """(n_boot, n_blocks) multiplicities of ``n_boot`` resamples of the blocks with replacement (seeded)."""
    rng = np.random.default_rng([seed, 0xb007])
    return rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=n_boot).astype(np.float64)


def gain_interval(sums: np.ndarray, weights: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval (dB) of the gain over the block resamples ``weights`` (n_boot, n_blocks)."""
    mr, m = mse_from_sums(weights @ sums)
    g = np.minimum(gain_db(mr, m), _INF_DB)  # an impossible (≤ 0) error counts as the largest gain
    lo, hi = np.percentile(g, [50 * (1 - level), 50 * (1 + level)])
    return tuple(float(v) if v < _INF_DB else math.inf for v in (lo, hi))  # type: ignore[return-value]


_INF_DB = 1e9


# --------------------------------------------------------------------------------------------
# Fourier measures
# --------------------------------------------------------------------------------------------
@dataclass
class _Spectra:
    shape: tuple[int, int, int]
    idx: torch.Tensor
    n: int
    weights: torch.Tensor | None
    counts: np.ndarray  # independent coefficients per shell (full-grid count / 2)

    def dot(self, p: torch.Tensor, q: torch.Tensor) -> np.ndarray:
        return fourier.fsc_shell_sums(p, q, self.idx, self.n, nx=self.shape[2],
                                      coefficient_weights=self.weights)[0].numpy()


def _spectra(shape: tuple[int, int, int], tilt_range: tuple[float, float] | None) -> _Spectra:
    n = fourier.n_shells(shape)
    idx = fourier.shell_index(shape)
    weights = None if tilt_range is None else fourier.missing_wedge_mask(shape, *tilt_range).double()
    cw = torch.broadcast_to(fourier.rfft_weights(shape).double(), idx.shape) * (1.0 if weights is None else weights)
    keep = idx < n
    counts = torch.bincount(idx[keep].flatten(), weights=cw[keep].flatten(), minlength=n).numpy() / 2.0
    return _Spectra(shape, idx, n, weights, np.maximum(counts, 1.0))


def _fft(v: np.ndarray, mask: np.ndarray | None) -> torch.Tensor:
    a = np.asarray(v, dtype=np.float64)
    if mask is not None:
        a = a * mask
    return torch.fft.rfftn(torch.from_numpy(np.ascontiguousarray(a)))


def _fsc(s: np.ndarray) -> np.ndarray:
    den = np.sqrt(s[1] * s[2])
    return np.where(den > 0, s[0] / np.where(den > 0, den, 1.0), 0.0)


# --------------------------------------------------------------------------------------------
# the score
# --------------------------------------------------------------------------------------------
@dataclass
class HalfMaps:
    """A method's map of each half on the region box (``g_even`` from the even half alone, ``g_odd`` from
    the odd half alone) and one sentence on how they were made."""

    g_even: np.ndarray
    g_odd: np.ndarray
    how: str


@dataclass
class MapScore:
    """Truth-free figures of one map (see the module doc); true figures when a clean map or truth was given."""

    name: str
    how: str
    mse_est: float
    gain_db: float | None  # None when the estimated error is ≤ 0
    gain_ci: tuple[float | None, float | None]
    cross_fsc: list[float]
    removed_corr: list[float]
    hallucinated_power: float | None
    kept_power: float | None
    removed_corr_max: float | None
    leak_excess: float
    flags: list[str] = field(default_factory=list)
    true: dict[str, float] = field(default_factory=dict)
    p_beats_gaussian: float | None = None

    def to_dict(self) -> dict:
        return {"how": self.how, "mse_est": self.mse_est, "gain_db": self.gain_db,
                "gain_ci_low": self.gain_ci[0], "gain_ci_high": self.gain_ci[1],
                "hallucinated_power": self.hallucinated_power, "kept_power_nosignal": self.kept_power,
                "removed_corr_max_nosignal": self.removed_corr_max, "leak_excess": self.leak_excess,
                "p_beats_gaussian": self.p_beats_gaussian, "flags": list(self.flags), **self.true}


@dataclass
class ScoreResult:
    """Every map's :class:`MapScore` (raw first), the half-map curves, the region and the settings."""

    region: Region
    rows: dict[str, MapScore]
    frequencies: list[float]
    half_fsc: list[float]
    cross_fsc_bound: list[float]
    nosignal_shells: list[int]
    mse_raw_est: float
    settings: dict

    @property
    def flagged(self) -> dict[str, list[str]]:
        return {k: r.flags for k, r in self.rows.items() if r.flags}

    def to_dict(self) -> dict:
        return {"region": self.region.to_dict(), "mse_raw_est": self.mse_raw_est, "assumption": HALVES_ASSUMPTION,
                "nosignal_shells": self.nosignal_shells, "settings": self.settings,
                "maps": {k: r.to_dict() for k, r in self.rows.items()},
                "flagged": self.flagged}

    def curves(self) -> dict:
        return {"frequency": self.frequencies, "half_fsc": self.half_fsc, "cross_fsc_bound": self.cross_fsc_bound,
                "cross_fsc": {k: r.cross_fsc for k, r in self.rows.items()},
                "removed_corr": {k: r.removed_corr for k, r in self.rows.items()}}

    def flat_metrics(self, prefix: str = "tf") -> dict[str, float | None]:
        """Flat ``<prefix>_<figure>_<map>`` keys for metrics.json."""
        out: dict[str, float | None] = {f"{prefix}_mse_est_raw": self.mse_raw_est}
        for k, r in self.rows.items():
            out[f"{prefix}_gain_db_{k}"] = r.gain_db
            out[f"{prefix}_gain_ci_low_{k}"], out[f"{prefix}_gain_ci_high_{k}"] = r.gain_ci
            out[f"{prefix}_hallucinated_power_{k}"] = r.hallucinated_power
            out[f"{prefix}_flagged_{k}"] = float(bool(r.flags))
            if r.p_beats_gaussian is not None:
                out[f"{prefix}_p_beats_gaussian_{k}"] = r.p_beats_gaussian
            for tk, tv in r.true.items():
                out[f"{prefix}_{tk}_{k}"] = tv
        return out


def score_maps(even: np.ndarray, odd: np.ndarray, maps: Mapping[str, HalfMaps], region: Region,
               tilt_range: tuple[float, float] | None = None, clean: np.ndarray | None = None,
               truth: np.ndarray | None = None, block: int = BLOCK, n_boot: int = N_BOOTSTRAP,
               seed: int = 0) -> ScoreResult:
    """Score every map of ``maps`` (plus ``raw``, the identity) on the region box.

    ``even``, ``odd``, the maps, ``clean`` (noise-free reconstruction: the true gain) and ``truth`` (the
    specimen's potential: the gain in PSNR after the affine grey-level fit, as the benchmark scores) are
    arrays of the region box's shape. ``tilt_range`` restricts the Fourier sums to measured coefficients.
    """
    shape = tuple(np.shape(even))
    if tuple(region.shape) != shape:
        raise InputError(f"the half maps {shape} are not cut to the region's box {region.shape}")
    if region.n_voxels < 8:
        raise InputError(f"the held-out region has {region.n_voxels} voxels; it needs many more for a score")
    e = np.asarray(even, dtype=np.float64)
    o = np.asarray(odd, dtype=np.float64)
    mask = region.mask
    all_maps = {"raw": HalfMaps(e, o, "the half maps themselves; the raw map is (even + odd) / 2")} | dict(maps)
    sums = {k: block_sums(m.g_even, m.g_odd, e, o, mask, block) for k, m in all_maps.items()}
    weights = bootstrap_weights(len(sums["raw"]), n_boot, seed)
    mse_raw = float(mse_from_sums(sums["raw"].sum(axis=0))[0])

    sp = _spectra(shape, tilt_range)  # type: ignore[arg-type]
    fe, fo = _fft(e, mask), _fft(o, mask)
    eo = sp.dot(fe, fo)
    half = _fsc(eo)
    tol = Z_SIGMAS / np.sqrt(sp.counts)
    bound = np.sqrt(np.clip(half, 0.0, None))
    nosig = [k for k in range(1, sp.n) if half[k] < tol[k] and tol[k] <= MAX_NOSIGNAL_TOL]
    raw_power = 0.5 * (eo[1] + eo[2])
    fr = 0.5 * (fe + fo)

    def true_figures(p: np.ndarray) -> dict[str, float]:
        out = {}
        sel = (slice(None),) * 3 if mask is None else mask
        if clean is not None:
            c = np.asarray(clean, dtype=np.float64)
            out["true_mse"] = float(np.mean((p[sel] - c[sel]) ** 2))
        if truth is not None:
            from cryorestore.evaluate.quality import psnr

            t = np.asarray(truth, dtype=np.float64)
            out["psnr_potential"] = float(psnr(p[sel], t[sel]))
        return out

    raw_true = true_figures(0.5 * (e + o))
    rows: dict[str, MapScore] = {}
    for name, m in all_maps.items():
        mr, mse = mse_from_sums(sums[name].sum(axis=0))
        g = float(gain_db(mr, mse))
        ci = gain_interval(sums[name], weights)
        p_gauss = None
        if "gaussian" in sums and name not in ("raw", "gaussian"):
            # differences of estimated errors drop the noise term every map shares (n_e·n_o): far tighter
            boot_map, boot_gauss = (mse_from_sums(weights @ sums[k])[1] for k in (name, "gaussian"))
            p_gauss = float(np.mean(boot_map < boot_gauss))
        fge, fgo = _fft(m.g_even, mask), _fft(m.g_odd, mask)
        s_eo, s_oe, s_gg = sp.dot(fge, fo), sp.dot(fgo, fe), sp.dot(fge, fgo)
        cross = 0.5 * (_fsc(s_eo) + _fsc(s_oe))
        removed_num = (eo[0] - s_eo[0]) + (eo[0] - s_oe[0])
        removed = np.where(raw_power > 0, removed_num / (2 * np.where(raw_power > 0, raw_power, 1.0)), 0.0)
        flags = []
        excess = cross[1:] - bound[1:] - tol[1:]
        leak_excess = float(excess.max()) if len(excess) else 0.0
        if name != "raw" and (leak_excess > 0 or not mse > 0):
            flags.append("leak")
        halluc = kept = rmax = None
        if nosig:
            ns = np.asarray(nosig)
            pw = float(raw_power[ns].sum())
            if pw > 0:
                halluc = float((s_gg[0][ns].sum() - eo[0][ns].sum()) / pw)
                fp = 0.5 * (fge + fgo)
                kept = float(sp.dot(fp, fp)[0][ns].sum() / sp.dot(fr, fr)[0][ns].sum())
            rmax = float(np.abs(removed[ns]).max())
            if name != "raw" and halluc is not None and halluc > HALLUCINATION_POWER:
                flags.append("hallucinated power")
            if name != "raw" and bool((np.abs(removed[ns]) > tol[ns]).any()):
                flags.append("removed part correlates with the other half")
        true = {}
        p = 0.5 * (np.asarray(m.g_even, dtype=np.float64) + np.asarray(m.g_odd, dtype=np.float64))
        tf = true_figures(p)
        if "true_mse" in tf:
            true["true_gain_db"] = float(gain_db(raw_true["true_mse"], tf["true_mse"]))
            true["true_mse"] = tf["true_mse"]
        if "psnr_potential" in tf:
            true["gain_potential_db"] = tf["psnr_potential"] - raw_true["psnr_potential"]
        rows[name] = MapScore(name, m.how, float(mse), None if not np.isfinite(g) else g,
                              tuple(None if not np.isfinite(v) else v for v in ci),  # type: ignore[arg-type]
                              cross.tolist(), removed.tolist(), halluc, kept, rmax, leak_excess, flags, true, p_gauss)
    settings = {"block": block, "n_bootstrap": n_boot, "seed": seed, "z_sigmas": Z_SIGMAS,
                "hallucination_power": HALLUCINATION_POWER,
                "tilt_range": None if tilt_range is None else list(tilt_range)}
    return ScoreResult(region, rows, fourier.shell_frequencies(shape).tolist(), half.tolist(), bound.tolist(),
                       nosig, mse_raw, settings)


# --------------------------------------------------------------------------------------------
# the classical rows: a Gaussian chosen by the score, the half-map Wiener filter
# --------------------------------------------------------------------------------------------
def gaussian_halves(even_outer: np.ndarray, odd_outer: np.ndarray, inner: tuple[slice, ...],
                    mask: np.ndarray | None = None, sigmas: Sequence[float] | None = None) -> tuple[HalfMaps, dict]:
    """The Gaussian low-pass of each half whose sigma (voxels, from ``sigmas``, default
    :data:`cryorestore.baseline.SIGMA_GRID`) minimises the estimated error on the region (no truth).

    ``even_outer``/``odd_outer`` are the region's box grown by a margin (:func:`expanded_box`), ``inner``
    the region in them. Returns the region-box maps and ``{"sigma_voxels", "mse_est_by_sigma"}``."""
    from cryorestore import baseline

    sigmas = baseline.SIGMA_GRID if sigmas is None else sigmas
    e, o = even_outer[inner], odd_outer[inner]
    best, scores, maps = None, {}, {}
    for s in sigmas:
        ge = baseline.gaussian_lowpass(even_outer, s)[inner]
        go = baseline.gaussian_lowpass(odd_outer, s)[inner]
        mse = float(mse_from_sums(block_sums(ge, go, e, o, mask, block=max(np.shape(e))).sum(axis=0))[1])
        scores[f"{float(s):g}"] = mse
        if best is None or mse < scores[f"{best:g}"]:
            best, maps[0] = float(s), (ge, go)
    ge, go = maps[0]
    how = (f"Gaussian low-pass (sigma {best:g} voxels, chosen by the lowest estimated error on the region) "
           f"of each half alone")
    return HalfMaps(ge, go, how), {"sigma_voxels": best, "mse_est_by_sigma": scores}


def wiener_halves(even_outer: np.ndarray, odd_outer: np.ndarray, inner: tuple[slice, ...]) -> tuple[HalfMaps, dict]:
    """The FSC-weighted half-map Wiener filter (:func:`cryorestore.baseline.wiener_weights`) with weights
    from the half maps' FSC over the outer box, applied to each half alone; region-box maps and params."""
    from cryorestore import baseline

    f = baseline.half_map_fsc(even_outer, odd_outer)
    w = baseline.wiener_weights(f)
    ge = baseline.apply_shell_weights(even_outer, w)[inner]
    go = baseline.apply_shell_weights(odd_outer, w)[inner]
    how = ("FSC-weighted Wiener filter, w = 2F/(1+F) per shell from the half maps' FSC over the region and its "
           "margin, applied to each half alone")
    return HalfMaps(ge, go, how), {"weights": w.tolist()}


def model_halves(loaded, even: np.ndarray, odd: np.ndarray, region: Region, combine: str, tta: str,
                 tile: int | None = None, overlap: int | None = None, batch_size: int = 4,
                 device: torch.device | str = "cpu", progress: bool = False) -> tuple[HalfMaps, dict]:
    """A model directory's map of each half on the region box: the network on the even half alone and on
    the odd half alone (with test-time augmentation ``tta``), over the region grown by one tile on every
    side, then the combination ``combine`` split per half (:func:`cryorestore.ensemble.combine_halves`,
    its parameters from the grown box). Every method's restored map is the mean of these two (methods'
    ``prediction_inputs`` are (even, odd)); a joint use of both halves is what this avoids."""
    from cryorestore.predict import default_tile, predict_volume

    margin = default_tile(loaded) if tile is None else int(tile)
    outer, inner = expanded_box(region, np.shape(even), margin)
    # copies of the grown box (np.asarray of a float32 memory map would be a view, read tile by tile with its
    # pages left resident); then the halves' pages leave the process before the network runs
    e, o = blockwise.read(even, outer), blockwise.read(odd, outer)
    blockwise.release_all(even, odd)
    kw = dict(tile=tile, overlap=overlap, batch_size=batch_size, device=device, progress=progress, tta=tta)
    fe, fo = predict_volume(loaded, e, **kw), predict_volume(loaded, o, **kw)
    ge, go, params = ensemble.combine_halves(fe, fo, e, o, combine, tuple(loaded.config["tilt_range"]))
    del fe, fo, e, o
    how = (f"{loaded.config['method']} network on each half alone (tta {tta}), combination '{combine}' "
           f"applied to each half's output")
    return HalfMaps(ge[inner].copy(), go[inner].copy(), how), params | {"margin_voxels": margin}  # the margin freed


#: margin (voxels) around the region for the classical filters (four times the widest Gaussian of the grid)
FILTER_MARGIN = 16


def run_score(even: np.ndarray, odd: np.ndarray, region: Region, *, loaded=None, combine: str | None = None,
              tta: str | None = None, restored: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
              model_halves_region: HalfMaps | None = None, clean: np.ndarray | None = None,
              truth: np.ndarray | None = None, tilt_range: tuple[float, float] | None = None,
              block: int = BLOCK, n_boot: int = N_BOOTSTRAP, seed: int = 0, tile: int | None = None,
              overlap: int | None = None, batch_size: int = 4, device: torch.device | str = "cpu",
              progress: bool = False, model_row: str | None = None) -> tuple[ScoreResult, dict]:
    """Score raw, the Gaussian chosen by the score, the half-map Wiener filter and the given restorations
    on ``region`` of the whole (z, y, x) half maps ``even``/``odd`` (arrays or memory maps).

    Restorations: ``loaded`` (a model directory; the row is named ``model_row``, default its method; ``combine``/``tta``
    default to its preset's, see :func:`model_halves`), ``model_halves_region`` (that row already
    computed, e.g. by ``denoise``) and ``restored`` (``{name: (map of the even half, map of the odd half)}``
    on the whole grid, e.g. another program's output for each half). ``clean``/``truth`` are whole maps.
    Returns the result and ``{row: parameters}``."""
    shape = tuple(np.shape(even))
    outer, inner = expanded_box(region, shape, FILTER_MARGIN)
    eo, oo = (np.asarray(v[outer], dtype=np.float64) for v in (even, odd))
    blockwise.release_all(even, odd)  # memory-mapped halves: the box's pages leave the process
    maps: dict[str, HalfMaps] = {}
    params: dict[str, dict] = {}
    maps["gaussian"], params["gaussian"] = gaussian_halves(eo, oo, inner, region.mask)
    maps["wiener"], params["wiener"] = wiener_halves(eo, oo, inner)
    if loaded is not None:
        from cryorestore.presets import inference_values

        preset = loaded.config.get("preset")
        chosen = inference_values(preset) if preset else {"tta": "none", "combine": "mean"}
        chosen |= {k: v for k, v in (("tta", tta), ("combine", combine)) if v is not None}
        name = model_row or str(loaded.config["method"])
        maps[name], params[name] = model_halves(loaded, even, odd, region, chosen["combine"], chosen["tta"], tile=tile,
                                                overlap=overlap, batch_size=batch_size, device=device,
                                                progress=progress)
        params[name] |= chosen
    if model_halves_region is not None:
        maps["restored"] = model_halves_region
    for name, (ge, go) in (restored or {}).items():
        maps[name] = HalfMaps(np.asarray(ge[region.slices], dtype=np.float64),
                              np.asarray(go[region.slices], dtype=np.float64),
                              "maps of each half given by the user (made elsewhere); scored as given")
    sl = region.slices
    cut = (lambda v: None if v is None else np.asarray(v[sl], dtype=np.float64))
    e_r, o_r, c_r, t_r = np.asarray(even[sl], dtype=np.float64), np.asarray(odd[sl], dtype=np.float64), cut(clean), cut(truth)
    blockwise.release_all(even, odd, clean, truth)
    result = score_maps(e_r, o_r, maps, region, tilt_range=tilt_range, clean=c_r, truth=t_r, block=block,
                        n_boot=n_boot, seed=seed)
    return result, params


def write_score(result: ScoreResult, params: Mapping[str, dict], out_dir, extra: Mapping | None = None,
                stem: str = "score") -> list:
    """Write ``OUT/<stem>.json`` (figures, flags, parameters, ``extra``), ``OUT/<stem>_curves.json`` and the
    figure ``OUT/<stem>.png`` (:func:`cryorestore.plots.truthfree_plot`), each atomically; return the paths."""
    import json
    from pathlib import Path

    from cryorestore import io, plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = result.to_dict() | {"parameters": dict(params)} | dict(extra or {})
    curves = result.curves()
    paths = [io.write_text(out / f"{stem}.json", json.dumps(doc, indent=2, default=_json_default) + "\n"),
             io.write_text(out / f"{stem}_curves.json", json.dumps(curves, indent=1) + "\n"),
             plots.truthfree_plot(result.frequencies, result.half_fsc, result.cross_fsc_bound, curves["cross_fsc"],
                                  curves["removed_corr"], out / f"{stem}.png", result.nosignal_shells)]
    return paths


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


# --------------------------------------------------------------------------------------------
# uncertainty map
# --------------------------------------------------------------------------------------------
uncertainty_map = ensemble.uncertainty_map  # re-exported: the score's module doc defines it


# --------------------------------------------------------------------------------------------
# printout
# --------------------------------------------------------------------------------------------
def format_table(result: ScoreResult) -> str:
    """Plain-text table: estimated gain with interval, hallucinated power, flags; true columns when known."""
    has_true = any("true_gain_db" in r.true for r in result.rows.values())
    has_pot = any("gain_potential_db" in r.true for r in result.rows.values())

    def f(v: float | None, fmt: str = "{:+.2f}") -> str:
        return "inf" if v is None else fmt.format(v)

    head = f"{'map':<12} {'est. gain dB':>12} {'95% interval':>17}"
    head += f" {'true gain dB':>12}" if has_true else ""
    head += f" {'vs potential':>12}" if has_pot else ""
    head += f" {'P(>gauss)':>9} {'halluc.':>8}  flags"
    lines = [f"truth-free score on the held-out region: {result.region.description}, {result.region.n_voxels} voxels",
             head]
    for name, r in result.rows.items():
        ci = f"[{f(r.gain_ci[0])}, {f(r.gain_ci[1])}]"
        row = f"{name:<12} {f(r.gain_db):>12} {ci:>17}"
        row += f" {f(r.true.get('true_gain_db')):>12}" if has_true else ""
        row += f" {f(r.true.get('gain_potential_db')):>12}" if has_pot else ""
        hp = "" if r.hallucinated_power is None else f"{r.hallucinated_power:+.3f}"
        pg = "" if r.p_beats_gaussian is None else f"{r.p_beats_gaussian:.2f}"
        row += f" {pg:>9} {hp:>8}  {', '.join(r.flags) or 'ok'}"
        lines.append(row)
    if not result.nosignal_shells:
        lines.append("no shell without signal between the halves: the hallucination checks do not apply")
    lines.append("note: " + HALVES_ASSUMPTION)
    if result.flagged:
        lines.append("FLAGGED: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in result.flagged.items())
                     + " — do not trust these maps' estimates (leak: the map of one half saw the other half's noise; "
                     "hallucinated power: structure the halves do not share; details in score.json)")
    return "\n".join(lines)
