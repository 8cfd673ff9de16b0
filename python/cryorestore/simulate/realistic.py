"""The realistic preset: a crowded specimen of real molecules imaged with CTF, exposure damage and shot noise.

Specimen (:func:`make_specimen`, on a grid ``OVERSAMPLING`` = 2 times finer than the tomogram)
--------------------------------------------------------------------------------------------------
Electrostatic potential in volts **relative to vitreous ice** (the ice itself is the constant
``ICE_POTENTIAL``; a constant phase does not change a weak-phase image, so only the departures from it
are projected):

* ice background: a weak random texture (Gaussian field, σ ``ICE_TEXTURE_STD`` V, correlation ≈ one fine voxel);
* molecules of every species in :data:`cryorestore.simulate.molecules.SPECIES` (maps from the atomic
  model 4V6X, see ``assets/molecules``), at random non-overlapping positions (exclusion spheres of the
  98 %-potential radius) and uniformly random orientations; each displaces ice: the molecule adds
  ``V − ICE_POTENTIAL · min(1, V / MOLECULE_POTENTIAL)``;
* lipid vesicles: bilayers with two leaflets, head-group peaks of ``HEADGROUP_V`` V at ±``LEAFLET_OFFSET_A`` Å
  from the mid-surface and a hydrocarbon core of ``CORE_V`` V; ``membranes`` marks |d| ≤ ``MEMBRANE_HALF_A`` Å;
* gold beads of radius ``BEAD_RADIUS_A`` Å and ``GOLD_V`` V.

The truth (``ground_truth.mrc``) is the fine potential averaged over 2 × 2 × 2 blocks; coarse voxel j
covers fine voxels 2j and 2j + 1, so a particle at coarse position p sits at fine position 2p + ½.

Image formation (:func:`expected_contrast`, :func:`acquire`)
------------------------------------------------------------
Per tilt θ (degrees, acquired in the dose-symmetric order of :func:`dose_symmetric_order`):

1. projection of the fine potential (:func:`cryorestore.projection.project`, geometry and handedness
   of that module) → ``V_p`` in V·Å at the fine pixel;
2. weak-phase object: the contrast of a density-like image is ``T ⊛ V_p`` with ``T = sin χ`` at the
   tilt's defocus (astigmatism included), varying across x as the defocus gradient of a tilted image
   (:func:`cryorestore.ctf.filter_tilt`; at positive tilt +x is more underfocused), multiplied by the
   exposure filter for the tilt's pre-exposure (Grant & Grigorieff 2015). Each image column gets the
   defocus of the specimen's mid-plane there; across the slab's own thickness (±320 Å for 64 voxels of
   10 Å) χ changes by π λ Δz q² < 0.05 rad at the 10 Å Nyquist, so no per-depth (3D) CTF is modelled;
3. binning 2 × 2 by Fourier cropping (anti-aliased, centred on the fine pixels' mean position);
4. expected electrons per tilt-image pixel ``λ = dose/n · pixel² · exp(−t / (Λ cos θ))``, the
   energy-filter loss over the ice path t / cos θ (t the slab thickness, Λ = ``INELASTIC_MFP_A``);
   counts ~ Poisson(λ (1 − 2σ · contrast)), σ the interaction constant at the voltage;
5. the stored image is density-like, ``(λ − counts) / (2σ λ · voxel)`` in V·voxel, so that its
   weighted back-projection is on the truth's scale (volts) up to the CTF.

The stored tomograms are weighted back-projections of the **phase-flipped** images (per tilt, strips
along the tilt axis, the true CTF), so ``full.mrc`` ≈ |T|-filtered truth; ``tilt_series.mrc`` and
``ctf.txt`` let ``cryorestore reconstruct --ctf`` (or any other tool) start from the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from cryorestore import ctf as ctfmod
from cryorestore import geometry, io
from cryorestore.projection import project
from cryorestore.progress import progress_bar
from cryorestore.simulate import molecules
from cryorestore.simulate.shapes import sphere_distance

OVERSAMPLING = 2
DEFAULT_DOSE = 120.0  # e/Å² over the series
DEFOCUS_RANGE_A = (30000.0, 50000.0)  # per-tilt defocus stays within 3–5 µm underfocus
DEFOCUS_NOMINAL_A = (35000.0, 45000.0)  # the series' target defocus is drawn from this range
DEFOCUS_JITTER_A = 1500.0  # per-tilt standard deviation about the target
DEFAULT_ASTIGMATISM_A = 300.0  # defocus 1 − defocus 2
INELASTIC_MFP_A = 3500.0  # inelastic mean free path in vitreous ice at 300 kV (energy-filtered)
ICE_POTENTIAL = 4.0  # V, mean potential of vitreous ice (hydrogen-free scale of the maps)
MOLECULE_POTENTIAL = 6.0  # V, a molecule voxel at or above this potential displaces all its ice
ICE_TEXTURE_STD = 0.3  # V
HEADGROUP_V, CORE_V = 1.2, -0.4  # V relative to ice
LEAFLET_OFFSET_A, HEADGROUP_SIGMA_A, CORE_SIGMA_A = 19.0, 4.0, 7.0
MEMBRANE_HALF_A = 25.0
BEAD_RADIUS_A, GOLD_V = 50.0, 26.0
STRIP_FINE = 32  # strip width (fine pixels) of the defocus gradient
DOSE_GROUP = 2  # tilts per side before switching in the dose-symmetric scheme
#: Each species aims at one molecule per CROWDING exclusion-sphere volumes of the region its centres may
#: occupy (fewer where rejection sampling cannot fit them without overlap).
CROWDING = 8.0


@dataclass
class Specimen:
    """The realistic specimen: fine potential, coarse truth, particle list and masks (arrays (z, y, x))."""

    fine: np.ndarray  # float32 (OZ, OY, OX), V relative to ice, fine voxels of voxel_size / OVERSAMPLING Å
    truth: np.ndarray  # float32 (Z, Y, X), the fine potential averaged over OVERSAMPLING³ blocks
    particles: pd.DataFrame  # rlnCoordinateX/Y/Z (coarse voxels), angles, cryorestoreSpecies, rlnClassNumber
    membranes: np.ndarray  # bool (Z, Y, X)
    voxel_size: float  # Å
    counts: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# acquisition scheme and physics constants
# --------------------------------------------------------------------------------------------
def dose_symmetric_order(angles: Sequence[float] | np.ndarray, group: int = DOSE_GROUP) -> np.ndarray:
    """Acquisition order (indices into ``angles``) of the dose-symmetric scheme (Hagen et al. 2017).

    Starts at the tilt nearest 0°, then ``group`` tilts toward positive angles, ``group`` toward
    negative ones, and so on outward; when one side is exhausted the other continues.
    """
    a = np.asarray(angles, dtype=np.float64)
    start = int(np.argmin(np.abs(a)))
    pos = [int(i) for i in np.argsort(a) if a[i] > a[start]]
    neg = [int(i) for i in np.argsort(-a) if a[i] < a[start]]
    order = [start]
    while pos or neg:
        order += pos[:group]
        pos = pos[group:]
        order += neg[:group]
        neg = neg[group:]
    return np.array(order, dtype=int)


def interaction_constant(voltage_kv: float) -> float:
    """σ in rad/(V·Å): ``2π / (λ V) · (E₀ + E) / (2E₀ + E)`` (6.53e-4 at 300 kV)."""
    e = float(voltage_kv) * 1e3
    e0 = 510998.95
    return 2.0 * math.pi / (ctfmod.electron_wavelength(voltage_kv) * e) * (e0 + e) / (2.0 * e0 + e)


def draw_ctfs(n: int, rng: np.random.Generator, astigmatism: float = DEFAULT_ASTIGMATISM_A) -> list[ctfmod.TiltCTF]:
    """Per-tilt CTFs: a target defocus from :data:`DEFOCUS_NOMINAL_A`, per-tilt jitter, clipped to
    :data:`DEFOCUS_RANGE_A`; ``astigmatism`` Å (defocus 1 − defocus 2) at one random azimuth."""
    target = rng.uniform(*DEFOCUS_NOMINAL_A)
    mean = np.clip(target + DEFOCUS_JITTER_A * rng.standard_normal(n), *DEFOCUS_RANGE_A)
    azimuth = float(rng.uniform(0.0, 180.0))
    return [ctfmod.TiltCTF(float(m + astigmatism / 2), float(m - astigmatism / 2), azimuth) for m in mean]


# --------------------------------------------------------------------------------------------
# specimen
# --------------------------------------------------------------------------------------------
def bilayer_profile(d_a: np.ndarray) -> np.ndarray:
    """Potential (V, relative to ice) at signed distance ``d_a`` Å from a bilayer's mid-surface."""
    g = lambda x, s: np.exp(-(x**2) / (2.0 * s**2))  # noqa: E731
    return (HEADGROUP_V * (g(d_a - LEAFLET_OFFSET_A, HEADGROUP_SIGMA_A) + g(d_a + LEAFLET_OFFSET_A, HEADGROUP_SIGMA_A))
            + CORE_V * g(d_a, CORE_SIGMA_A))


def displace_ice(v: np.ndarray) -> np.ndarray:
    """A molecule's potential relative to ice: ``V − ICE · min(1, V / MOLECULE_POTENTIAL)`` (≥ 0 where V ≥ 0)."""
    return v - ICE_POTENTIAL * np.clip(v / MOLECULE_POTENTIAL, 0.0, 1.0)


def bin_volume(v: np.ndarray, k: int = OVERSAMPLING) -> np.ndarray:
    """Mean over k × k × k blocks (every size divisible by k)."""
    z, y, x = v.shape
    return v.reshape(z // k, k, y // k, k, x // k, k).mean(axis=(1, 3, 5))


def _place(vol: np.ndarray, src: np.ndarray, r_zyx: np.ndarray, centre: np.ndarray) -> None:
    """Add ``src`` (centre (N − 1) / 2) rotated actively by ``r_zyx`` with its centre at ``centre`` (fine voxels)."""
    c_src = (np.array(src.shape) - 1) / 2.0
    reach = float(np.sqrt(((np.array(src.shape) / 2.0) ** 2).sum())) + 1.0
    lo = np.array([max(0, int(math.floor(c - reach))) for c in centre])
    hi = np.array([min(n, int(math.ceil(c + reach)) + 1) for c, n in zip(centre, vol.shape)])
    inv = np.asarray(r_zyx, dtype=np.float64).T
    offset = c_src + inv @ (lo - centre)
    patch = ndimage.affine_transform(src, inv, offset=offset, output_shape=tuple(hi - lo), order=1,
                                     mode="grid-constant", cval=0.0)
    vol[tuple(slice(a, b) for a, b in zip(lo, hi))] += patch.astype(np.float32)


def make_specimen(shape: Sequence[int], voxel_size: float, rng: np.random.Generator,
                  progress: bool = False) -> Specimen:
    """Build the realistic specimen on a (Z, Y, X) grid of ``voxel_size`` Å (see the module docstring)."""
    k = OVERSAMPLING
    shp = tuple(int(n) for n in shape)
    fshape = tuple(k * n for n in shp)
    fpix = voxel_size / k
    # ice texture
    noise = rng.standard_normal(fshape, dtype=np.float32)
    fine = ndimage.gaussian_filter(noise, 0.7, mode="wrap")
    fine *= ICE_TEXTURE_STD / max(float(fine.std()), 1e-12)
    del noise
    membranes = np.zeros(shp, dtype=bool)
    z_a, y_a, x_a = (n * voxel_size for n in shp)  # extent in Å

    # vesicles (coarse-voxel centres and radii in Å)
    half_t = MEMBRANE_HALF_A + 10.0
    r_max = min(400.0, z_a / 2.0 - half_t - voxel_size, min(y_a, x_a) / 2.0 - half_t)
    r_min = min(150.0, r_max)
    vesicles: list[tuple[np.ndarray, float]] = []
    n_ves = max(1, round(shp[1] * shp[2] * voxel_size**2 / 2.5e6)) if r_max >= 60.0 else 0
    for _ in range(200 * max(n_ves, 1)):
        if len(vesicles) >= n_ves:
            break
        radius = float(rng.uniform(r_min, r_max))
        reach = radius + half_t
        c = np.array([rng.uniform(reach, e - reach) if e > 2 * reach else e / 2.0 for e in (z_a, y_a, x_a)])
        if all(np.linalg.norm(c - c2) > radius + r2 + 2 * half_t for c2, r2 in vesicles):
            vesicles.append((c, radius))
    for c, radius in vesicles:
        sl, d = sphere_distance(fshape, c / fpix - 0.5, (radius + half_t) / fpix)
        fine[sl] += bilayer_profile((d * fpix - radius)).astype(np.float32)
        slc, dc = sphere_distance(shp, c / voxel_size - 0.5, (radius + half_t) / voxel_size)
        membranes[slc] |= np.abs(dc * voxel_size - radius) <= MEMBRANE_HALF_A

    def clear_of_vesicles(p_a: np.ndarray, margin_a: float) -> bool:
        return all(abs(np.linalg.norm(p_a - c) - r) > margin_a + MEMBRANE_HALF_A for c, r in vesicles)

    # gold beads
    beads: list[np.ndarray] = []
    n_beads = max(1, round(shp[1] * shp[2] * voxel_size**2 / 2.0e6))
    lo_b = BEAD_RADIUS_A + voxel_size
    for _ in range(200 * n_beads):
        if len(beads) >= n_beads:
            break
        p = np.array([rng.uniform(lo_b, e - lo_b) for e in (z_a, y_a, x_a)])
        if clear_of_vesicles(p, BEAD_RADIUS_A + 20.0) and all(np.linalg.norm(p - b) > 4 * BEAD_RADIUS_A for b in beads):
            beads.append(p)
    for p in beads:
        sl, d = sphere_distance(fshape, p / fpix - 0.5, BEAD_RADIUS_A / fpix + 3.0)
        fine[sl] += (GOLD_V * 0.5 * (1.0 - np.tanh((d - BEAD_RADIUS_A / fpix) / 0.7))).astype(np.float32)

    # molecules: interleaved random draws of species, rejection-sampled exclusion spheres
    maps = [molecules.load(name, "truth") for name, _, _ in molecules.SPECIES]
    radii = [m.radius_a for m in maps]
    interior = [float(np.prod([max(e - 2 * r, 0.0) for e in (z_a, y_a, x_a)])) for r in radii]
    targets = [int(round(v / (CROWDING * 4.0 / 3.0 * math.pi * r**3))) if v > 0 else 0 for v, r in zip(interior, radii)]
    draws = np.repeat(np.arange(len(maps)), targets)
    rng.shuffle(draws)
    placed: list[tuple[int, np.ndarray]] = []  # (species index, centre in coarse voxels)
    for s in draws:
        r = radii[s]
        for _ in range(300):
            p = np.array([rng.integers(int(math.ceil(r / voxel_size)), n - int(math.ceil(r / voxel_size))) for n in shp],
                         dtype=np.float64)
            pa = (p + 0.5) * voxel_size
            if (all(np.linalg.norm(pa - (q + 0.5) * voxel_size) >= r + radii[t] for t, q in placed)
                    and all(np.linalg.norm(pa - b) >= r + BEAD_RADIUS_A + voxel_size for b in beads)
                    and clear_of_vesicles(pa, r)):
                placed.append((int(s), p))
                break
    fine_maps = [displace_ice(molecules.resample(m, fpix)) for m in maps]
    eulers = geometry.matrix_to_euler(geometry.random_rotations(len(placed), rng)) if placed else np.zeros((0, 3))
    for (s, p), ang in zip(progress_bar(placed, desc="placing molecules", enabled=progress, leave=False), eulers):
        _place(fine, fine_maps[s], geometry.xyz_to_zyx(geometry.euler_to_matrix(ang)), k * p + (k - 1) / 2.0)

    coords = np.array([p for _, p in placed], dtype=np.float64).reshape(-1, 3)
    df = io.particles_frame(coords, eulers)
    names = [name for name, _, _ in molecules.SPECIES]
    df["cryorestoreSpecies"] = [names[s] for s, _ in placed]
    df["rlnClassNumber"] = np.array([s + 1 for s, _ in placed], dtype=int)
    counts = {name: int(sum(1 for s, _ in placed if s == i)) for i, name in enumerate(names)}
    return Specimen(fine, bin_volume(fine).astype(np.float32), df, membranes, float(voxel_size), counts)


# --------------------------------------------------------------------------------------------
# image formation
# --------------------------------------------------------------------------------------------
def fourier_bin(image: np.ndarray, k: int = OVERSAMPLING) -> np.ndarray:
    """Bin a (kY, kX) image to (Y, X) by Fourier cropping: the band-limited mean over k × k pixels.

    Coarse pixel j stands for fine pixels kj … kj + k − 1 (centre kj + (k − 1)/2), as in :func:`bin_volume`.
    """
    fy, fx = image.shape
    ny, nx = fy // k, fx // k
    shift = (k - 1) / 2.0  # move fine position kj + shift onto kj
    qy = np.fft.fftfreq(fy)[:, None]
    qx = np.fft.rfftfreq(fx)[None, :]
    spec = np.fft.rfft2(image) * np.exp(2j * np.pi * shift * (qy + qx))
    rows = np.concatenate([np.arange(0, (ny + 1) // 2), np.arange(fy - ny // 2, fy)])
    cropped = spec[rows][:, : nx // 2 + 1]
    return (np.fft.irfft2(cropped, s=(ny, nx)) / (k * k)).astype(np.float32)


def expected_contrast(projection_va: np.ndarray, angle: float, fine_pixel: float, tilt_ctf: ctfmod.TiltCTF,
                      optics: ctfmod.Optics, pre_exposure: float, exposure: float,
                      strip: int = STRIP_FINE) -> np.ndarray:
    """Noise-free contrast ``T ⊛ V_p`` (V·Å) of one tilt at the fine pixel: CTF with the defocus gradient
    of the tilted image and the exposure filter for [pre_exposure, pre_exposure + exposure] e/Å²."""

    def filt(qy: np.ndarray, qx: np.ndarray, offset: float) -> np.ndarray:
        q = np.sqrt(qy**2 + qx**2)
        return (ctfmod.transfer(qy, qx, tilt_ctf, optics, offset)
                * ctfmod.exposure_filter(q, pre_exposure, exposure, optics.voltage))

    return ctfmod.filter_tilt(projection_va, angle, fine_pixel, tilt_ctf, optics, filt, strip)


@dataclass
class Acquisition:
    """What the microscope recorded: per-tilt expected contrast at the tomogram's pixel and the counts scale."""

    contrast: np.ndarray  # float32 (n, Y, X): noise-free T ⊛ V_p binned to the tomogram pixel, V·Å
    electrons: np.ndarray  # float64 (n,): expected electrons per tomogram pixel and tilt (λ)
    sigma: float  # interaction constant, rad/(V·Å)


def acquire(specimen: Specimen, angles: np.ndarray, ctfs: Sequence[ctfmod.TiltCTF], order: np.ndarray, dose: float,
            optics: ctfmod.Optics, device: torch.device | str | None = None, progress: bool = False,
            timings: dict[str, float] | None = None) -> Acquisition:
    """Project the fine specimen at every tilt and form the noise-free images (steps 1–4 of the docstring)."""
    import time

    t0 = time.perf_counter()
    fpix = specimen.voxel_size / OVERSAMPLING
    proj = project(torch.from_numpy(specimen.fine), angles, device=device, progress=progress).cpu().numpy()
    t1 = time.perf_counter()
    n = len(angles)
    per_tilt = dose / n
    pre = np.empty(n)
    pre[order] = per_tilt * np.arange(n)
    contrast = np.empty((n, proj.shape[1] // OVERSAMPLING, proj.shape[2] // OVERSAMPLING), np.float32)
    for i in progress_bar(range(n), desc="CTF and exposure", enabled=progress, leave=False):
        c = expected_contrast(proj[i].astype(np.float64) * fpix, float(angles[i]), fpix, ctfs[i], optics, pre[i], per_tilt)
        contrast[i] = fourier_bin(c)
    thickness = specimen.truth.shape[0] * specimen.voxel_size
    lam = per_tilt * specimen.voxel_size**2 * np.exp(-thickness / (INELASTIC_MFP_A * np.cos(np.deg2rad(angles))))
    if timings is not None:
        timings["projection"] = t1 - t0
        timings["ctf"] = time.perf_counter() - t1
    return Acquisition(contrast, lam, interaction_constant(optics.voltage))


def expected_image(acq: Acquisition, voxel_size: float) -> np.ndarray:
    """The noise-free images: the expectation of :func:`record` at any dose fraction (V·voxel, (n, Y, X)).

    ``E[(f λ − counts) / (2σ f λ · voxel)] = (1 − clip(1 − 2σ c, 0, ∞)) / (2σ · voxel)``.
    """
    kept = np.clip(1.0 - 2.0 * acq.sigma * acq.contrast.astype(np.float64), 0.0, None)
    return ((1.0 - kept) / (2.0 * acq.sigma * voxel_size)).astype(np.float32)


def record(acq: Acquisition, fraction: float, voxel_size: float, rng: np.random.Generator, noise: str = "poisson") -> np.ndarray:
    """Draw the counts of a ``fraction`` of each tilt's dose and return the density-like images (V·voxel).

    counts ~ Poisson(f λ (1 − 2σ c)) (or Gaussian of that mean and variance); image =
    (f λ − counts) / (2σ f λ · voxel), whose expectation is the contrast c in V·voxel.
    """
    lam = (fraction * acq.electrons)[:, None, None]
    expected = lam * np.clip(1.0 - 2.0 * acq.sigma * acq.contrast.astype(np.float64), 0.0, None)
    if noise == "poisson":
        counts = rng.poisson(expected).astype(np.float64)
    else:
        counts = expected + np.sqrt(expected) * rng.standard_normal(expected.shape)
    return ((lam - counts) / (2.0 * acq.sigma * lam * voxel_size)).astype(np.float32)
