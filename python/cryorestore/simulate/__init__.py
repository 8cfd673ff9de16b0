"""The synthetic benchmark: a specimen whose truth is known, its noisy tilt series and WBP tomograms.

Two presets share the output contract of :func:`simulate_dataset` (ground truth, tomograms, tilt series,
CTF file in the CTFFIND4 format, particle list with species, templates, membranes, simulation.json):

* ``realistic`` (:mod:`cryorestore.simulate.realistic`, the default of ``cryorestore simulate``): real
  molecules from an atomic model (:mod:`cryorestore.simulate.molecules`), bilayers, gold and ice, imaged
  as a weak-phase object with a CTF, exposure damage, ice attenuation and shot noise on a 2× finer grid;
* ``teamtomo`` (:mod:`cryorestore.simulate.teamtomo`): the same kind of specimen and physics computed by teamtomo's
  packages (ttsim3d potentials of every atom, torch-fourier-slice projection, torch-ctf CTF with the defocus
  gradient, torch-fourier-filter's critical exposure), an image formation that shares none of our projector
  and CTF code; tomograms through our phase flip and WBP (the ``teamtomo`` extra);
* ``toy`` (this module; fast, for unit tests): the blob phantom below with pure amplitude contrast.

Geometry and handedness are those of :mod:`cryorestore.projection`: positive tilt turns +x toward +z,
and (IMOD, Dynamo and novaCTF) at positive tilt angles the right side (+x) of a tilt image is more
underfocused than the left.

Toy phantom (:func:`make_phantom`, deterministic given the random generator)
---------------------------------------------------------------------------
* copies of one asymmetric particle (:func:`make_template`: seven Gaussian blobs of different sizes and
  densities, no rotation maps it onto itself, diameter ≈ 18 voxels, peak density 1) at random
  non-overlapping integer positions away from the margins, each rotated actively by
  ``A = geometry.euler_to_matrix(angles)`` with uniformly random orientations; listed in
  ``particles`` (``rlnCoordinateX/Y/Z`` in voxels, RELION ZYZ angles in degrees);
* lipid vesicles: spherical shells of radius 15–35 voxels (smaller if Z is thin), membrane thickness
  40 Å (converted to voxels with the voxel size), soft edges, density 0.6; ``membranes`` is the
  binary mask of the shells (|distance − radius| ≤ thickness / 2);
* a few gold beads (radius 2.5 voxels, density 4);
* a weak smooth background (low-pass Gaussian noise, standard deviation 0.05).

Toy image formation
-------------------
The phantom is projected (:func:`cryorestore.projection.project`) at tilts ``min, min + step, …, ≤ max``
about y. Per tilt the expected number of electrons per pixel is ``λ = dose / n_tilts · voxel_size²``
(dose in e/Å² over the whole series) and the expected image is ``I = λ (1 − c·p)``, ``p`` the projection
and ``c`` the contrast constant (:data:`DEFAULT_CONTRAST`). Counts are Poisson(I) (or Gaussian with
the same mean and variance), and the measured projection is ``(λ − counts) / (λ c)``, an unbiased
estimate of ``p`` on the phantom's scale.

* T2T: one noisy projection per tilt; even half = tilts 0, 2, 4, …, odd half = tilts 1, 3, 5, …,
  full = all tilts (stack order is ascending tilt angle).
* F2F: every tilt's dose is split into ``frames`` frames; the even-frame sum and the odd-frame sum
  are drawn directly as two independent Poisson variables with means ``f_e I`` and ``f_o I``
  (``f_e``, ``f_o`` the fractions of frames in each half). This is exact because a sum of independent
  Poisson variables is Poisson with the summed mean. Each half is normalised with its own
  ``λ_h = f_h λ`` and reconstructed from all tilts; the full projection is the sum of the two counts,
  i.e. ``(λ_e p_e + λ_o p_o) / λ``, so the full tomogram is the same combination of the half tomograms.

All tomograms are weighted back-projections (:mod:`cryorestore.projection`) with the phantom's
thickness, so ``full.mrc`` lies on the same grid (and scale) as ``ground_truth.mrc``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from cryorestore import ctf as ctfmod
from cryorestore import fourier, geometry, io
from cryorestore.errors import InputError
from cryorestore.projection import project
from cryorestore.reconstruct import reconstruct_f2f, reconstruct_t2t
from cryorestore.simulate.shapes import sphere_distance

#: Contrast constant ``c`` of ``I = λ (1 − c·p)``: chosen so that at the default dose the even/odd FSC
#: of the default dataset crosses 0.5 between 0.08 and 0.2 cycles/voxel (see benchmarks/RESULTS.md).
DEFAULT_CONTRAST = 0.01
DEFAULT_SHAPE = (64, 256, 256)
DEFAULT_VOXEL_SIZE = 10.0  # Å
DEFAULT_TILT_RANGE = (-60.0, 60.0)  # degrees
DEFAULT_TILT_STEP = 3.0  # degrees
DEFAULT_DOSE = 110.0  # e/Å² over the whole tilt series
DEFAULT_FRAMES = 10
MEMBRANE_THICKNESS_A = 40.0
TEMPLATE_BOX = 32
PARTICLE_RADIUS = 11  # voxels: the template's blobs lie within this radius of the box centre
BEAD_RADIUS = 2.5  # voxels
MIN_SIZE = 24  # smallest phantom edge in voxels

OUTPUT_FILES = ("ground_truth", "full", "even", "odd", "tilts", "tilt_series", "ctf", "particles", "template",
                "membranes", "simulation", "clean", "clean_even", "clean_odd", "tilt_series_clean")
_SUFFIX = {"tilts": ".tlt", "particles": ".star", "ctf": ".txt", "simulation": ".json"}

# (dz, dy, dx) offset from the particle centre in voxels, Gaussian sigma in voxels, density
_BLOBS = (
    ((0.0, 0.0, 0.0), 2.0, 0.6),
    ((3.2, -2.4, 1.6), 2.2, 0.9),
    ((-2.4, 4.0, 0.8), 2.3, 0.8),
    ((0.8, 1.6, -5.2), 1.7, 1.2),
    ((-4.0, -3.2, -2.4), 1.5, 0.7),
    ((4.8, 3.2, 4.0), 1.2, 1.0),
    ((0.4, -6.0, 3.6), 1.5, 0.6),
)


@dataclass
class Phantom:
    """A synthetic specimen; arrays (z, y, x), densities in arbitrary units (particle peak ≈ 1)."""

    volume: np.ndarray  # float32 (Z, Y, X)
    template: np.ndarray  # float32 (B, B, B), particle centred on voxel B // 2
    particles: pd.DataFrame  # rlnCoordinateX/Y/Z (voxels), rlnAngleRot/Tilt/Psi (degrees)
    membranes: np.ndarray  # bool (Z, Y, X): inside a vesicle membrane
    voxel_size: float  # Å
    beads: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (n, 3) bead centres (z, y, x)
    vesicles: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (centre zyx, radius voxels)


# --------------------------------------------------------------------------------------------
# phantom
# --------------------------------------------------------------------------------------------
def make_template(box: int = TEMPLATE_BOX) -> np.ndarray:
    """The asymmetric particle in a (box, box, box) float32 cube, centred on voxel box // 2, peak 1."""
    if box < 2 * PARTICLE_RADIUS:
        raise InputError(f"template box {box} is too small; it must be at least {2 * PARTICLE_RADIUS} voxels")
    ax = np.arange(box, dtype=np.float64) - box // 2
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    t = np.zeros((box, box, box))
    for (dz, dy, dx), sigma, density in _BLOBS:
        t += density * np.exp(-((z - dz) ** 2 + (y - dy) ** 2 + (x - dx) ** 2) / (2.0 * sigma**2))
    return (t / t.max()).astype(np.float32)


def _soft_sphere(shape: tuple[int, int, int], centre: np.ndarray, radius: float, edge: float = 0.7) -> tuple[tuple[slice, ...], np.ndarray]:
    """A solid sphere with a tanh edge, returned as (slices into the volume, values) over its bounding box."""
    sl, d = sphere_distance(shape, centre, radius + 3.0 * edge + 1.0)
    return sl, 0.5 * (1.0 - np.tanh((d - radius) / edge))


def _shell(shape: tuple[int, int, int], centre: np.ndarray, radius: float, thickness: float, edge: float = 0.7):
    """A spherical shell (soft values, binary mask) over its bounding box."""
    sl, d = sphere_distance(shape, centre, radius + thickness / 2.0 + 3.0 * edge + 1.0)
    dist = np.abs(d - radius)
    soft = 0.5 * (1.0 - np.tanh((dist - thickness / 2.0) / edge))
    return sl, soft, dist <= thickness / 2.0


def _smooth_background(shape: tuple[int, int, int], rng: np.random.Generator, sigma: float = 4.0, std: float = 0.05) -> np.ndarray:
    """Gaussian white noise low-pass filtered (Gaussian, ``sigma`` voxels) and scaled to ``std``."""
    noise = rng.standard_normal(shape)
    smooth = np.fft.irfftn(ndimage.fourier_gaussian(np.fft.rfftn(noise), sigma, n=shape[-1]), s=shape, axes=(0, 1, 2))
    return (smooth * (std / max(smooth.std(), 1e-12))).astype(np.float32)


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        s = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be three integers Z Y X, got {shape}") from None
    if len(s) != 3 or min(s) < MIN_SIZE:
        raise InputError(f"shape {tuple(shape)} is too small: need three sizes Z Y X of at least {MIN_SIZE} voxels")
    return s  # type: ignore[return-value]


def make_phantom(shape: Sequence[int] = DEFAULT_SHAPE, voxel_size: float = DEFAULT_VOXEL_SIZE,
                 rng: np.random.Generator | None = None) -> Phantom:
    """Build the synthetic specimen on a (Z, Y, X) grid of ``voxel_size`` Å voxels (see module docstring).

    Particle count: about one per 40 000 voxels of the region where particle centres may lie (about 55
    in 64×256×256); fewer if the rejection sampling cannot fit them without overlap.
    """
    shp = _check_shape(shape)
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise InputError(f"voxel size must be a positive number of Å, got {voxel_size}")
    rng = np.random.default_rng(0) if rng is None else rng
    nz, ny, nx = shp
    vol = _smooth_background(shp, rng)
    membranes = np.zeros(shp, dtype=bool)
    t_mem = MEMBRANE_THICKNESS_A / voxel_size

    # vesicles: shells that fit in Z, not overlapping each other
    vesicles: list[tuple[np.ndarray, float]] = []
    r_max = min(35.0, nz / 2.0 - t_mem / 2.0 - 3.0, min(ny, nx) / 2.0 - t_mem / 2.0 - 3.0)
    r_min = min(15.0, r_max)
    n_ves = max(1, round(ny * nx / 25000)) if r_max >= 6.0 else 0
    for _ in range(200 * max(n_ves, 1)):
        if len(vesicles) >= n_ves:
            break
        radius = float(rng.uniform(r_min, r_max))
        reach = radius + t_mem / 2.0 + 2.0
        centre = np.array([
            rng.uniform(reach, nz - 1 - reach) if nz - 1 > 2 * reach else (nz - 1) / 2.0,
            rng.uniform(reach, ny - 1 - reach),
            rng.uniform(reach, nx - 1 - reach),
        ])
        if all(np.linalg.norm(centre - c) > radius + r + t_mem + 4.0 for c, r in vesicles):
            vesicles.append((centre, radius))
    for centre, radius in vesicles:
        sl, soft, mask = _shell(shp, centre, radius, t_mem)
        vol[sl] += 0.6 * soft.astype(np.float32)
        membranes[sl] |= mask

    def clear_of_vesicles(p: np.ndarray, margin: float) -> bool:
        return all(abs(np.linalg.norm(p - c) - r) > margin + t_mem / 2.0 for c, r in vesicles)

    # gold beads
    beads: list[np.ndarray] = []
    n_beads = max(1, round(ny * nx / 20000))
    lo_b = np.full(3, BEAD_RADIUS + 2.0)
    for _ in range(200 * n_beads):
        if len(beads) >= n_beads:
            break
        p = rng.uniform(lo_b, np.array(shp) - 1 - lo_b)
        if clear_of_vesicles(p, BEAD_RADIUS + 2.0) and all(np.linalg.norm(p - b) > 4 * BEAD_RADIUS for b in beads):
            beads.append(p)
    for p in beads:
        sl, soft = _soft_sphere(shp, p, BEAD_RADIUS)
        vol[sl] += 4.0 * soft.astype(np.float32)

    # particles
    template = make_template(TEMPLATE_BOX)
    rp = PARTICLE_RADIUS
    lo = np.array([rp, rp, rp])
    hi = np.array(shp) - 1 - rp
    interior = float(np.prod(np.maximum(hi - lo + 1, 0)))
    n_target = max(1, round(interior / 40000))
    coords: list[np.ndarray] = []
    for _ in range(300 * n_target):
        if len(coords) >= n_target:
            break
        p = np.array([rng.integers(a, b + 1) for a, b in zip(lo, hi)], dtype=np.float64)
        if (all(np.linalg.norm(p - q) >= 2 * rp for q in coords)
                and all(np.linalg.norm(p - b) >= rp + BEAD_RADIUS + 2 for b in beads)
                and clear_of_vesicles(p, rp + 1.0)):
            coords.append(p)
    coords_arr = np.array(coords, dtype=np.float64).reshape(-1, 3)
    eulers = geometry.matrix_to_euler(geometry.random_rotations(len(coords_arr), rng)) if len(coords_arr) else np.zeros((0, 3))
    half = TEMPLATE_BOX // 2
    for p, ang in zip(coords_arr, eulers):
        rotated = geometry.rotate_volume(template, geometry.xyz_to_zyx(geometry.euler_to_matrix(ang)), order=1)
        # the box centre (voxel half) goes to p; clip the box to the volume
        start = p.astype(int) - half
        src = tuple(slice(max(0, -s), TEMPLATE_BOX - max(0, s + TEMPLATE_BOX - n)) for s, n in zip(start, shp))
        dst = tuple(slice(max(0, s), min(n, s + TEMPLATE_BOX)) for s, n in zip(start, shp))
        vol[dst] += rotated[src].astype(np.float32)

    particles = io.particles_frame(coords_arr, eulers)
    return Phantom(vol.astype(np.float32), template, particles, membranes, float(voxel_size),
                   np.array(beads).reshape(-1, 3), vesicles)


# --------------------------------------------------------------------------------------------
# tilt scheme and noise
# --------------------------------------------------------------------------------------------
def tilt_angles(tilt_range: Sequence[float] = DEFAULT_TILT_RANGE, tilt_step: float = DEFAULT_TILT_STEP) -> np.ndarray:
    """Tilts ``min, min + step, …`` up to ``max`` (degrees, ascending); InputError if they make no sense."""
    try:
        lo, hi = (float(v) for v in tilt_range)
    except (TypeError, ValueError):
        raise InputError(f"tilt range must be two numbers MIN MAX in degrees, got {tilt_range}") from None
    fourier.check_tilt_range(lo, hi)
    step = float(tilt_step)
    if not (np.isfinite(step) and step > 0):
        raise InputError(f"tilt step must be a positive number of degrees, got {tilt_step}")
    n = int(math.floor((hi - lo) / step + 1e-9)) + 1
    if n < 4:
        raise InputError(f"tilt range {lo:g}..{hi:g} with step {step:g} gives {n} tilts; at least 4 are needed (2 per half set)")
    return lo + step * np.arange(n)


def electrons_per_pixel(dose: float, n_tilts: int, voxel_size: float) -> float:
    """Expected electrons per detector pixel and tilt: ``dose / n_tilts · voxel_size²`` (dose in e/Å²)."""
    return float(dose) / int(n_tilts) * float(voxel_size) ** 2


def noisy_projections(projections: np.ndarray, lam: float, contrast: float, rng: np.random.Generator,
                      noise: str = "poisson") -> np.ndarray:
    """Measured projections ``(λ − counts) / (λ c)`` with counts ~ Poisson(λ (1 − c p)) (or Gaussian).

    ``projections`` (n, Y, U) are line integrals ``p``; ``lam`` the expected electrons per pixel;
    the expected image is clipped at 0 (an opaque object stops every electron).
    """
    expected = lam * np.clip(1.0 - contrast * projections.astype(np.float64), 0.0, None)
    if noise == "poisson":
        counts = rng.poisson(expected).astype(np.float64)
    elif noise == "gaussian":
        counts = expected + np.sqrt(expected) * rng.standard_normal(expected.shape)
    else:
        raise InputError(f"noise model must be 'poisson' or 'gaussian', got {noise!r}")
    return ((lam - counts) / (lam * contrast)).astype(np.float32)


def expected_projections(projections: np.ndarray, contrast: float) -> np.ndarray:
    """The noise-free measured projections: the expectation of :func:`noisy_projections` (any dose).

    ``E[(λ − counts) / (λ c)] = (1 − clip(1 − c p, 0, ∞)) / c``, i.e. ``p`` wherever the object is not opaque.
    """
    expected = np.clip(1.0 - contrast * projections.astype(np.float64), 0.0, None)
    return ((1.0 - expected) / contrast).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the whole dataset
# --------------------------------------------------------------------------------------------
PRESETS = ("realistic", "toy", "teamtomo")


def _check_inputs(shape, voxel_size, tilt_range, tilt_step, dose, split, frames, noise, contrast, preset):
    shp = _check_shape(shape)
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise InputError(f"voxel size must be a positive number of Å, got {voxel_size}")
    angles = tilt_angles(tilt_range, tilt_step)
    if not (np.isfinite(dose) and dose > 0):
        raise InputError(f"dose must be a positive number of e/Å², got {dose}")
    if split not in ("t2t", "f2f"):
        raise InputError(f"split must be 't2t' or 'f2f', got {split!r}")
    if int(frames) < 2:
        raise InputError(f"F2F needs at least 2 frames per tilt, got {frames}")
    if noise not in ("poisson", "gaussian"):
        raise InputError(f"noise model must be 'poisson' or 'gaussian', got {noise!r}")
    if not (np.isfinite(contrast) and contrast > 0):
        raise InputError(f"contrast must be positive, got {contrast}")
    return shp, angles


def _record_series(acq, split: str, f_even: float, voxel_size: float, rng: np.random.Generator, noise: str,
                   clock: dict[str, float]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None, np.ndarray]:
    """The noisy series of a weak-phase acquisition (``realistic`` or ``teamtomo``): ``(stack, halves,
    clean_stack)``. T2T: one draw of the whole dose per tilt, ``halves`` None; F2F: two independent draws
    of the even and odd frames' dose fractions, ``stack`` their dose-weighted sum. ``clean_stack`` is the
    expectation of any of them (:func:`cryorestore.simulate.realistic.expected_image`)."""
    from cryorestore.simulate import realistic

    t0 = time.perf_counter()
    if split == "t2t":
        stack, halves = realistic.record(acq, 1.0, voxel_size, rng, noise), None
    else:
        halves = (realistic.record(acq, f_even, voxel_size, rng, noise),
                  realistic.record(acq, 1.0 - f_even, voxel_size, rng, noise))
        stack = (f_even * halves[0] + (1.0 - f_even) * halves[1]).astype(np.float32)
    clock["noise"] = time.perf_counter() - t0
    return stack, halves, realistic.expected_image(acq, voxel_size)


def simulate_dataset(
    out_dir: str | Path,
    shape: Sequence[int] = DEFAULT_SHAPE,
    voxel_size: float = DEFAULT_VOXEL_SIZE,
    tilt_range: Sequence[float] = DEFAULT_TILT_RANGE,
    tilt_step: float = DEFAULT_TILT_STEP,
    dose: float | None = None,
    split: str = "t2t",
    seed: int = 0,
    frames: int = DEFAULT_FRAMES,
    noise: str = "poisson",
    contrast: float = DEFAULT_CONTRAST,
    signal: bool = True,
    device: torch.device | str | None = None,
    progress: bool = False,
    timings: dict[str, float] | None = None,
    preset: str = "toy",
    astigmatism: float | None = None,
    optics: "ctfmod.Optics | None" = None,
) -> dict[str, Path]:
    """Simulate the benchmark into ``out_dir`` and return {name: path} of the files written.

    ``preset``: ``toy`` (the blob phantom, amplitude contrast ``contrast``, no CTF; the default of this
    function so that unit tests stay fast) or ``realistic`` (:mod:`cryorestore.simulate.realistic`: real
    molecules, CTF with the defocus gradient, exposure filter, ice path, 2× oversampled projection;
    the default of ``cryorestore simulate``) or ``teamtomo`` (:mod:`cryorestore.simulate.teamtomo`: the same
    contract from teamtomo's packages). ``dose`` (e/Å² over the series) defaults to
    :data:`DEFAULT_DOSE` (toy) or ``realistic.DEFAULT_DOSE`` (realistic, teamtomo).

    Files: ``ground_truth.mrc`` (the phantom / potential), ``full.mrc``, ``even.mrc``, ``odd.mrc`` (WBP
    tomograms on the same grid; realistic: from phase-flipped images), ``tilts.tlt``,
    ``tilt_series.mrc`` (the noisy density-like stack (n, Y, X) in the order of tilts.tlt), ``ctf.txt``
    (CTFFIND4 format, one row per tilt; toy: defocus 0, no CTF applied), ``particles.star`` (with
    ``cryorestoreSpecies`` and ``rlnClassNumber``), ``template.mrc`` and ``template_<species>.mrc``,
    ``membranes.mrc`` (0/1) and ``simulation.json`` (every parameter); the noise-free counterparts
    ``tilt_series_clean.mrc`` (the expectation of each noisy image: CTF, exposure filter, wedge and all,
    no shot noise) and ``clean.mrc``, ``clean_even.mrc``, ``clean_odd.mrc`` (its reconstructions through
    exactly the pipeline of ``full``/``even``/``odd``, phase flip included: the signal the noisy tomograms
    share; with T2T the halves' signals differ where their tilts sample Fourier space differently, with
    F2F both halves equal ``clean``). No random numbers are drawn for them, so the noisy files are those
    of earlier versions bit for bit. Every MRC with ``voxel_size`` Å
    in its header. ``signal=False`` images an empty specimen (pure noise; the truth, membranes and
    particle list are then empty). ``timings``, if given, receives seconds per stage. All inputs are
    checked before anything is computed or written.
    """
    from cryorestore.simulate import realistic

    if dose is None:
        dose = realistic.DEFAULT_DOSE if preset in ("realistic", "teamtomo") else DEFAULT_DOSE
    shp, angles = _check_inputs(shape, voxel_size, tilt_range, tilt_step, dose, split, frames, noise, contrast, preset)
    if preset in ("realistic", "teamtomo") and min(shp) * voxel_size < 2 * 160.0 + 2 * voxel_size:
        raise InputError(f"the {preset} preset needs every edge of at least {int(2 * 160 + 2 * voxel_size)} Å "
                         f"(a ribosome is 320 Å across); shape {shp} at {voxel_size:g} Å is smaller")
    opt = optics if optics is not None else ctfmod.Optics()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder {out} exists and is not a folder")
    clock = timings if timings is not None else {}
    rng = np.random.default_rng(seed)
    n = len(angles)
    n_even = (int(frames) + 1) // 2
    f_even = n_even / int(frames)
    vs = float(voxel_size)
    params: dict = {"preset": preset, "seed": int(seed), "shape_zyx": list(shp), "voxel_size_A": vs,
                    "tilt_angles_deg": [float(a) for a in angles], "dose_e_per_A2": float(dose), "split": split,
                    "noise": noise, "signal": bool(signal)}
    if split == "f2f":
        params.update(frames=int(frames), even_dose_fraction=f_even)

    t0 = time.perf_counter()
    if preset == "toy":
        phantom = make_phantom(shp, vs, rng)
        if not signal:
            phantom = Phantom(np.zeros(shp, np.float32), phantom.template, io.particles_frame(np.zeros((0, 3))),
                              np.zeros(shp, bool), vs)
        truth, particles, membranes = phantom.volume, phantom.particles, phantom.membranes
        particles["cryorestoreSpecies"] = "blob"
        particles["rlnClassNumber"] = 1
        templates = {"blob": phantom.template}
        clock["phantom"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        proj = (project(torch.from_numpy(truth), angles, device=device, progress=progress).cpu().numpy()
                if signal else np.zeros((n, shp[1], shp[2]), np.float32))
        clock["projection"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        lam = electrons_per_pixel(dose, n, vs)
        ctfs = [ctfmod.TiltCTF(0.0, 0.0)] * n
        if split == "t2t":
            stack = noisy_projections(proj, lam, contrast, rng, noise)
            halves = None
        else:
            halves = (noisy_projections(proj, lam * f_even, contrast, rng, noise),
                      noisy_projections(proj, lam * (1.0 - f_even), contrast, rng, noise))
            stack = (f_even * halves[0] + (1.0 - f_even) * halves[1]).astype(np.float32)
        clock["noise"] = time.perf_counter() - t2
        clean_stack = expected_projections(proj, contrast)
        params.update(contrast=float(contrast), image_formation="amplitude contrast, no CTF (toy)",
                      species=[{"name": "blob", "pdb": None, "count": int(len(particles))}])
        flip = None
    elif preset == "teamtomo":
        from cryorestore.simulate import teamtomo

        teamtomo.require_packages()
        tspec = teamtomo.make_specimen(shp, vs, rng, opt.voltage, device=device, timings=clock)
        clock["phantom"] = time.perf_counter() - t0
        if not signal:
            tspec.truth[...] = 0.0
            tspec.membranes[...] = False
            tspec.particles = tspec.particles.iloc[0:0]
            tspec.counts = {k: 0 for k in tspec.counts}
        truth, particles, membranes = tspec.truth, tspec.particles, tspec.membranes
        atoms = teamtomo.load_atoms()
        templates = {name: teamtomo.template(atoms[name], vs, voltage_kv=opt.voltage) for name, _, _ in realistic.molecules.SPECIES}
        order = teamtomo.dose_symmetric_order(angles)
        astig = teamtomo.DEFAULT_ASTIGMATISM_A if astigmatism is None else float(astigmatism)
        ctfs = teamtomo.draw_ctfs(n, rng, astig)
        tacq = teamtomo.acquire(tspec, angles, ctfs, order, float(dose), opt, timings=clock)
        stack, halves, clean_stack = _record_series(tacq, split, f_even, vs, rng, noise, clock)

        def flip(s: np.ndarray) -> np.ndarray:
            return ctfmod.phase_flip(s, angles, ctfs, vs, opt)

        params.update(teamtomo.describe(tspec, ctfs, order, tacq, opt, astig))
    else:
        spec = realistic.make_specimen(shp, vs, rng, progress=progress)
        clock["phantom"] = time.perf_counter() - t0
        if not signal:
            spec.fine[...] = 0.0
            spec.truth[...] = 0.0
            spec.membranes[...] = False
            spec.particles = spec.particles.iloc[0:0]
            spec.counts = {k: 0 for k in spec.counts}
        truth, particles, membranes = spec.truth, spec.particles, spec.membranes
        templates = {name: realistic.molecules.template(name, vs) for name, _, _ in realistic.molecules.SPECIES}
        order = realistic.dose_symmetric_order(angles)
        astig = realistic.DEFAULT_ASTIGMATISM_A if astigmatism is None else float(astigmatism)
        ctfs = realistic.draw_ctfs(n, rng, astig)
        acq = realistic.acquire(spec, angles, ctfs, order, float(dose), opt, device=device, progress=progress, timings=clock)
        del spec.fine
        stack, halves, clean_stack = _record_series(acq, split, f_even, vs, rng, noise, clock)

        def flip(s: np.ndarray) -> np.ndarray:
            return ctfmod.phase_flip(s, angles, ctfs, vs, opt)

        params.update(
            image_formation="weak-phase object, CTF with defocus gradient (strips along the tilt axis), "
                            "exposure filter (Grant & Grigorieff 2015), ice path 1/cos(theta), Poisson counts",
            oversampling=realistic.OVERSAMPLING, binning="Fourier cropping",
            voltage_kV=opt.voltage, cs_mm=opt.cs, amplitude_contrast=opt.amplitude_contrast,
            astigmatism_A=astig, defocus_A=[[c.defocus1, c.defocus2, c.azimuth] for c in ctfs],
            acquisition_order=[int(i) for i in order], dose_symmetric_group=realistic.DOSE_GROUP,
            electrons_per_pixel=[float(x) for x in acq.electrons], interaction_constant=acq.sigma,
            ice={"potential_V": realistic.ICE_POTENTIAL, "thickness_A": shp[0] * vs,
                 "inelastic_mean_free_path_A": realistic.INELASTIC_MFP_A, "texture_std_V": realistic.ICE_TEXTURE_STD},
            species=[{"name": name, "pdb": pdb, "description": what, "count": spec.counts.get(name, 0),
                      "truth_map": f"{name}_truth.mrc.gz", "template_map": f"{name}_template.mrc.gz"}
                     for name, pdb, what in realistic.molecules.SPECIES],
            tomograms="WBP of phase-flipped images (true CTF)",
            ctf_file="the true per-tilt values used by the simulation (defocus at the image centre)",
            handedness="IMOD/Dynamo/novaCTF: at positive tilt angles the right side (+x) of a tilt image is "
                       "more underfocused; positive tilt turns +x toward +z",
        )

    t3 = time.perf_counter()
    if split == "t2t":
        rec_in = flip(stack) if flip else stack
        tomos = reconstruct_t2t(rec_in, angles, shp[0], device=device, progress=progress, timings=clock)
    else:
        e, o = (flip(h) for h in halves) if flip else halves
        tomos = reconstruct_f2f(e, o, angles, shp[0], even_fraction=f_even, device=device, progress=progress, timings=clock)
    clean_rec = reconstruct_t2t(flip(clean_stack) if flip else clean_stack, angles, shp[0], device=device)
    if split == "f2f":  # both halves reconstruct every tilt: they share the full series' noise-free signal
        clean_rec["even"] = clean_rec["odd"] = clean_rec["full"]
    clock["reconstruction"] = time.perf_counter() - t3

    t4 = time.perf_counter()
    paths = {name: out / f"{name}{_SUFFIX.get(name, '.mrc')}" for name in OUTPUT_FILES}
    io.write_mrc(paths["ground_truth"], truth, vs)
    for name in ("full", "even", "odd"):
        io.write_mrc(paths[name], tomos[name], vs)
    io.write_tlt(paths["tilts"], angles)
    write_stack(paths["tilt_series"], stack, vs)
    write_stack(paths["tilt_series_clean"], clean_stack, vs)
    for name in ("full", "even", "odd"):
        io.write_mrc(paths["clean" if name == "full" else f"clean_{name}"], clean_rec[name], vs)
    ctfmod.write_ctffind(paths["ctf"], ctfs, vs, opt)
    io.write_particles(paths["particles"], particles)
    first = next(iter(templates))
    io.write_mrc(paths["template"], templates[first], vs)
    for name, t in templates.items():
        paths[f"template_{name}"] = io.write_mrc(out / f"template_{name}.mrc", t, vs)
    io.write_mrc(paths["membranes"], membranes.astype(np.float32), vs)
    params["templates"] = {name: {"box": int(t.shape[0]), "file": f"template_{name}.mrc"} for name, t in templates.items()}
    io.write_text(paths["simulation"], json.dumps(params, indent=1) + "\n")
    clock["write"] = time.perf_counter() - t4
    return paths


def write_stack(path: str | Path, stack: np.ndarray, voxel_size: float) -> Path:
    """Write a (n, Y, X) tilt stack as an MRC image stack (atomically) with the pixel size in Å."""
    import mrcfile

    with io.atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(np.ascontiguousarray(stack, dtype=np.float32))
            m.set_image_stack()
            m.voxel_size = float(voxel_size)
    return Path(path)
