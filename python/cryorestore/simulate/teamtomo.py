"""The ``teamtomo`` preset: a second simulator built on the field's packages, not on our projector or CTF code.

Why a second simulator: a restoration ranking that holds on one simulator and flips on another is not a
result, and a sign or centre shared by our simulator and our reconstruction cannot be caught by a test
that uses both. Here every step of the image formation is someone else's code; only the reconstruction
(:func:`cryorestore.reconstruct.reconstruct_t2t` after :func:`cryorestore.ctf.phase_flip` with the written
``ctf.txt``, the user's path) is ours. Needs the ``teamtomo`` extra (``pip install 'cryorestore[teamtomo]'``).

Specimen (:func:`make_specimen`, on the tomogram's own grid; potential in volts **relative to vitreous ice**)
-----------------------------------------------------------------------------------------------------------
* molecules: every placed copy of every species is a rotated and translated copy of the **atoms** of
  PDB 4V6X (``assets/molecules/4v6x_atoms.npz``, made by ``assets/make_atom_model.py``; the 80S ribosome and
  its 40S subunit, the species of :data:`cryorestore.simulate.molecules.SPECIES`); the potential of all
  atoms of all copies is computed in one call of ttsim3d's ``simulate3d`` (five-Gaussian electron
  scattering factors integrated exactly over each voxel, cisTEM's bond scaling 1.043, one B-factor
  :data:`B_FACTOR` for every atom, no upsampling, no dose filter, no detector), so placement is exact
  (no interpolation of a rotated map). Positions are continuous (sub-voxel), orientations uniform on SO(3),
  exclusion spheres of the radius holding 98 % of a species' atoms, :data:`CROWDING` as the realistic preset;
* solvent: amorphous ice of :data:`ICE_WATER_DENSITY` water molecules per Å³ whose mean potential
  ``V_ice`` is computed from ttsim3d's own oxygen scattering factors (hydrogen-free, like the atoms); each
  molecule displaces ice in proportion to its excluded volume, ``occupancy = atoms per voxel ·``
  :data:`ATOM_VOLUME_A3` ``/ voxel³`` (smoothed by σ = ½ voxel, clipped to [0, 1]); the ice's own texture is
  the number fluctuation of its molecules, white per voxel with standard deviation
  ``V_ice · sqrt(S(0) (1 − occupancy) / N_w)`` (``N_w`` molecules in a full voxel, ``S(0)`` =
  :data:`WATER_STRUCTURE_FACTOR_0` the structure factor of water at q → 0);
* lipid vesicles: spherical bilayers, two head-group Gaussians (phosphate, denser than ice) and a
  hydrocarbon core (lighter), averaged over each voxel along the normal (erf); ``membranes`` marks
  |d| ≤ ``MEMBRANE_HALF_A`` Å. No gold beads.

The truth (``ground_truth.mrc``) is this potential; particle coordinates are the centres of mass.

Image formation (:func:`acquire`, :func:`record`)
-------------------------------------------------
Per tilt θ (degrees; positive tilt turns +x toward +z, the package's geometry), acquired in a
dose-symmetric order (:func:`dose_symmetric_order`, groups of :data:`DOSE_GROUP`):

1. projection with ``torch_fourier_slice.project_3d_to_2d`` (central slices of the zero-padded cube's
   spectrum, pad factor 2): the (Z, Y, X) volume is embedded in a cube of edge max(Z, Y, X) and projected
   with the rotation ``R = [[c, 0, s], [0, 1, 0], [−s, 0, c]]`` (on xyz), whose image column is
   ``u = x cos θ − z sin θ``. torch-fourier-slice rotates about the DFT centre ``M // 2`` of the cube,
   the package about the geometric centre ``(N − 1) / 2`` of each axis; each image is shifted along x
   by :func:`centre_shift` (a phase ramp) so that both put the tilt axis in the same place;
2. weak-phase CTF from ``torch_ctf.calculate_ctf_2d`` (300 kV, Cs 2.7 mm, amplitude contrast 0.07, its
   own defocus/astigmatism parameters). torch-ctf's CTF is ``−sin(γ)`` with ``γ = −πλΔf q² + …`` for
   underfocus Δf > 0, i.e. positive at low frequency: the transfer of a density-like image (particles
   bright), the package's convention. **Defocus gradient**: column u (pixels, centre (X − 1)/2) has
   defocus ``Δf + (u − (X − 1)/2) · pixel · tan θ``: at positive tilt the right side (+x) is more
   underfocused, the documented convention of IMOD, Dynamo and novaCTF (Dynamo wiki, "Tilt angle
   convention"). It is applied per pixel column by filtering the image at a ladder of defoci
   (≤ :data:`DEFOCUS_STEP_A` apart) and interpolating linearly between the two rungs around each column's
   defocus;
3. exposure filter (Grant & Grigorieff 2015) with torch-fourier-filter's critical exposure N_e(q): the mean
   amplitude ``⟨exp(−N / 2N_e)⟩`` over the tilt's exposure window [N₀, N₁] (:func:`exposure_filter`);
4. electrons per pixel ``λ = dose / n · pixel² · exp(−t / (Λ cos θ))`` (energy-filter loss over the ice
   path, Λ = :data:`INELASTIC_MFP_A`), counts ~ Poisson(λ (1 − 2σ c)) with σ the interaction constant
   (from torch-ctf's relativistic wavelength) and ``c`` the CTF-filtered projected potential (V·Å);
   the stored image is density-like, ``(λ − counts) / (2σ λ · voxel)`` in V·voxel, on the truth's scale.

Shot noise is drawn on the tomogram's own pixel grid (white up to Nyquist; the realistic preset draws it on
a 2× finer grid and bins by Fourier cropping).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from cryorestore import ctf as ctfmod
from cryorestore import geometry, io
from cryorestore.errors import InputError
from cryorestore.simulate import molecules, realistic

ATOMS_FILE = "4v6x_atoms.npz"
DEFAULT_DOSE = 120.0  # e/Å² over the series
B_FACTOR = 60.0  # Å², every atom of the truth
TEMPLATE_B_FACTOR = 200.0  # Å², the matching templates (independent of the truth array)
VOLT_A2 = 47.878  # h² / (2π m₀ e) in V·Å²: potential of a scattering factor of 1 Å
ICE_WATER_DENSITY = 0.0314  # water molecules per Å³ (amorphous ice, 0.94 g/cm³)
WATER_STRUCTURE_FACTOR_0 = 0.06  # S(q → 0) of water near 0 °C (ρ k T κ_T)
ATOM_VOLUME_A3 = 17.0  # excluded volume per non-hydrogen atom of protein/RNA, hydrogens included
INELASTIC_MFP_A = 3500.0  # inelastic mean free path in ice at 300 kV (energy-filtered)
HEADGROUP_V, HEADGROUP_OFFSET_A, HEADGROUP_SIGMA_A = 1.0, 20.0, 3.5  # V relative to ice
CORE_V, CORE_SIGMA_A = -0.6, 6.0
MEMBRANE_HALF_A = 25.0
DEFOCUS_RANGE_UM = (3.0, 5.0)  # the series' target defocus is drawn uniformly from this range (µm)
DEFOCUS_JITTER_UM = 0.1  # per-tilt standard deviation about the target (µm)
DEFAULT_ASTIGMATISM_A = 300.0  # defocus 1 − defocus 2
DEFOCUS_STEP_A = 100.0  # largest defocus step between rungs of the gradient ladder
DOSE_GROUP = 2
CROWDING = 8.0  # one molecule per CROWDING exclusion-sphere volumes of the region its centres may occupy
PAD_FACTOR = 2.0  # torch-fourier-slice's padding of the cube


def require_packages() -> None:
    """InputError naming the extra when the teamtomo packages are missing."""
    missing = []
    for mod in ("ttsim3d", "torch_fourier_slice", "torch_ctf", "torch_fourier_filter"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise InputError(f"the teamtomo preset needs {', '.join(missing)}: pip install 'cryorestore[teamtomo]'")


def package_versions() -> dict[str, str]:
    """Versions of the packages this preset is built on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("ttsim3d", "torch-fourier-slice", "torch-ctf", "torch-fourier-filter"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


# --------------------------------------------------------------------------------------------
# atoms and potentials (ttsim3d)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AtomModel:
    """One species' atoms: (n, 3) zyx in Å relative to its centre of mass, upper-case element symbols."""

    name: str
    zyx: np.ndarray
    elements: np.ndarray

    @property
    def radius_a(self) -> float:
        """Radius (Å) about the centre of mass holding 98 % of the atoms: the exclusion radius."""
        return float(np.percentile(np.linalg.norm(self.zyx, axis=1), 98.0))


def load_atoms() -> dict[str, AtomModel]:
    """The species of :data:`molecules.SPECIES` as atom models, from ``assets/molecules/4v6x_atoms.npz``."""
    path = molecules.asset_dir() / ATOMS_FILE
    if not path.is_file():
        raise InputError(f"atomic model {path} is missing; run assets/make_atom_model.py or set CRYORESTORE_ASSETS")
    d = np.load(path)
    zyx = d["zyx_centi_a"].astype(np.float64) / 100.0
    elements = d["elements"][d["element"]]
    out = {}
    for name, _, _ in molecules.SPECIES:
        sel = np.ones(len(zyx), bool) if name == "ribosome" else d[f"in_{name}"]
        out[name] = AtomModel(name, zyx[sel] - d[f"centre_{name}_zyx_a"], elements[sel])
    return out


def volts_per_unit(voltage_kv: float, voxel_size: float) -> float:
    """Factor from ttsim3d's output to the voxel-mean potential in volts.

    ttsim3d scales the voxel integral of each atom's potential by ``λ / (8 · pixel²)`` (its "lead term",
    bond factor included) where the voxel integral is ``VOLT_A2 / 8 · Π erf-differences`` V·Å³; so
    output · VOLT_A2 / (λ · pixel) is the mean potential over the voxel (bond factor kept).
    """
    return VOLT_A2 / (ctfmod.electron_wavelength(voltage_kv) * float(voxel_size))


def ice_potential() -> float:
    """Mean potential (V) of amorphous ice from ttsim3d's oxygen scattering factors (hydrogen-free),
    with the same bond factor as its atoms: 1.043 · VOLT_A2 · Σ a_O · n_water."""
    from ttsim3d.scattering_potential import SCATTERING_PARAMS_A
    from ttsim3d.simulate3d import BOND_SCALING_FACTOR

    return float(BOND_SCALING_FACTOR * VOLT_A2 * sum(SCATTERING_PARAMS_A["O"]) * ICE_WATER_DENSITY)


def atom_potential(zyx_a: np.ndarray, elements: Sequence[str], shape: Sequence[int], voxel_size: float,
                   b_factor: float, voltage_kv: float = ctfmod.DEFAULT_VOLTAGE,
                   device: torch.device | str | None = None) -> np.ndarray:
    """Voxel-mean potential (V, float32 (Z, Y, X)) of atoms at ``zyx_a`` Å by ttsim3d's ``simulate3d``.

    Positions are relative to ttsim3d's origin, the centre of voxel ``shape / 2`` (so voxel index v of
    an axis of N sits at ``(v − N/2) · voxel_size`` Å). Atoms whose voxel neighbourhood would leave the
    grid are dropped (ttsim3d would index outside the volume).
    """
    from ttsim3d.grid_coords import get_size_neighborhood_cistem
    from ttsim3d.simulate3d import simulate3d

    shp = np.array([int(n) for n in shape])
    pos = np.asarray(zyx_a, dtype=np.float64).reshape(-1, 3)
    margin = get_size_neighborhood_cistem(torch.tensor(float(b_factor)), float(voxel_size))
    idx = np.floor(pos / voxel_size + shp / 2.0 + 0.5)
    keep = np.all((idx >= margin) & (idx <= shp - 1 - margin), axis=1)
    if not keep.any():
        return np.zeros(tuple(shp), np.float32)
    dev = "cpu" if device is None else str(torch.device(device))
    out = simulate3d(
        atom_positions_zyx=torch.from_numpy(pos[keep].astype(np.float32)),
        atom_ids=[str(e) for e in np.asarray(elements)[keep]],
        atom_b_factors=torch.full((int(keep.sum()),), float(b_factor)),
        beam_energy_kev=float(voltage_kv), sim_pixel_spacing=float(voxel_size), sim_volume_shape=tuple(int(n) for n in shp),
        requested_upsampling=1, apply_dose_weighting=False, apply_dqe=False, device=dev,
    )
    return (out.detach().cpu().numpy() * volts_per_unit(voltage_kv, voxel_size)).astype(np.float32)


def template(model: AtomModel, voxel_size: float, box: int | None = None, voltage_kv: float = ctfmod.DEFAULT_VOLTAGE) -> np.ndarray:
    """Matching template of a species: ttsim3d potential (V) at B = :data:`TEMPLATE_B_FACTOR` in a cubic box
    (default: the smallest even edge holding the exclusion diameter plus 4 voxels), centre of mass on voxel box // 2."""
    b = int(box) if box is not None else 2 * int(math.ceil(model.radius_a / voxel_size + 2.0))
    return atom_potential(model.zyx, model.elements, (b, b, b), voxel_size, TEMPLATE_B_FACTOR, voltage_kv)


# --------------------------------------------------------------------------------------------
# specimen
# --------------------------------------------------------------------------------------------
@dataclass
class Specimen:
    """The teamtomo specimen: potential relative to ice, particle list, membranes (arrays (z, y, x))."""

    truth: np.ndarray  # float32 (Z, Y, X), V relative to ice
    particles: pd.DataFrame  # rlnCoordinateX/Y/Z (voxels, continuous), angles, cryorestoreSpecies, rlnClassNumber
    membranes: np.ndarray  # bool (Z, Y, X)
    voxel_size: float
    counts: dict[str, int] = field(default_factory=dict)
    ice_potential: float = 0.0
    protein_fraction: float = 0.0  # mean occupancy of the slab by molecules


def bilayer_voxel_mean(d_a: np.ndarray, voxel_size: float) -> np.ndarray:
    """Bilayer potential (V, relative to ice) averaged over ±voxel/2 along the normal at signed distance d_a Å."""
    h = voxel_size / 2.0

    def gauss_mean(mu: float, sigma: float) -> np.ndarray:
        s = sigma * math.sqrt(2.0)
        from scipy.special import erf

        return (erf((d_a + h - mu) / s) - erf((d_a - h - mu) / s)) * (sigma * math.sqrt(math.pi / 2.0)) / (2.0 * h)

    return (HEADGROUP_V * (gauss_mean(HEADGROUP_OFFSET_A, HEADGROUP_SIGMA_A) + gauss_mean(-HEADGROUP_OFFSET_A, HEADGROUP_SIGMA_A))
            + CORE_V * gauss_mean(0.0, CORE_SIGMA_A))


def _distance_from_sphere(shape: tuple[int, int, int], centre_vox: np.ndarray, reach: float):
    """(slices, distance in voxels from ``centre_vox``) over the bounding box of radius ``reach``."""
    lo = [max(0, int(math.floor(c - reach))) for c in centre_vox]
    hi = [min(n, int(math.ceil(c + reach)) + 1) for c, n in zip(centre_vox, shape)]
    axes = [np.arange(a, b, dtype=np.float64) - c for a, b, c in zip(lo, hi, centre_vox)]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    return tuple(slice(a, b) for a, b in zip(lo, hi)), np.sqrt(z**2 + y**2 + x**2)


def make_specimen(shape: Sequence[int], voxel_size: float, rng: np.random.Generator, voltage_kv: float = ctfmod.DEFAULT_VOLTAGE,
                  device: torch.device | str | None = None, timings: dict[str, float] | None = None) -> Specimen:
    """Build the specimen (see the module docstring) on a (Z, Y, X) grid of ``voxel_size`` Å voxels."""
    require_packages()
    t0 = time.perf_counter()
    shp = tuple(int(n) for n in shape)
    vs = float(voxel_size)
    ext = np.array(shp, dtype=np.float64) * vs  # extent in Å
    models = load_atoms()
    names = [name for name, _, _ in molecules.SPECIES]
    radii = [models[n].radius_a for n in names]

    # vesicles (centres in voxel index units, radii in Å)
    half_t = MEMBRANE_HALF_A + 10.0
    r_max = min(400.0, ext[0] / 2.0 - half_t - vs, min(ext[1], ext[2]) / 2.0 - half_t)
    r_min = min(150.0, r_max)
    n_ves = max(1, round(shp[1] * shp[2] * vs**2 / 2.5e6)) if r_max >= 60.0 else 0
    vesicles: list[tuple[np.ndarray, float]] = []
    for _ in range(200 * max(n_ves, 1)):
        if len(vesicles) >= n_ves:
            break
        radius = float(rng.uniform(r_min, r_max))
        reach = radius + half_t
        c_a = np.array([rng.uniform(reach, e - reach) if e > 2 * reach else e / 2.0 for e in ext])
        if all(np.linalg.norm(c_a - c2) > radius + r2 + 2 * half_t for c2, r2 in vesicles):
            vesicles.append((c_a, radius))

    def clear_of_vesicles(p_a: np.ndarray, margin_a: float) -> bool:
        return all(abs(np.linalg.norm(p_a - c) - r) > margin_a + MEMBRANE_HALF_A for c, r in vesicles)

    # molecules: interleaved species draws, continuous positions, exclusion spheres
    interior = [float(np.prod([max(e - 2 * r, 0.0) for e in ext])) for r in radii]
    targets = [int(round(v / (CROWDING * 4.0 / 3.0 * math.pi * r**3))) if v > 0 else 0 for v, r in zip(interior, radii)]
    draws = np.repeat(np.arange(len(names)), targets)
    rng.shuffle(draws)
    placed: list[tuple[int, np.ndarray]] = []  # (species, centre in Å from the volume's corner)
    for s in draws:
        r = radii[s]
        for _ in range(300):
            p_a = np.array([rng.uniform(r, e - r) for e in ext])
            if (all(np.linalg.norm(p_a - q) >= r + radii[t] for t, q in placed) and clear_of_vesicles(p_a, r)):
                placed.append((int(s), p_a))
                break
    rots = geometry.random_rotations(len(placed), rng) if placed else np.zeros((0, 3, 3))
    eulers = geometry.matrix_to_euler(rots) if placed else np.zeros((0, 3))
    origin_a = (np.array(shp) / 2.0) * vs + vs / 2.0  # ttsim3d's origin: the centre of voxel N/2, from the corner
    pos, els = [], []
    for (s, p_a), a_xyz in zip(placed, rots):
        m = models[names[s]]
        r_zyx = geometry.xyz_to_zyx(a_xyz)
        pos.append(m.zyx @ np.asarray(r_zyx).T + (p_a - origin_a))
        els.append(m.elements)
    all_pos = np.concatenate(pos) if pos else np.zeros((0, 3))
    all_els = np.concatenate(els) if els else np.zeros((0,), str)
    if timings is not None:
        timings["placement"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    v_mol = atom_potential(all_pos, all_els, shp, vs, B_FACTOR, voltage_kv, device=device) if len(all_pos) else np.zeros(shp, np.float32)
    if timings is not None:
        timings["potential"] = time.perf_counter() - t1

    # excluded volume and ice
    idx = np.floor(all_pos / vs + np.array(shp) / 2.0 + 0.5).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.array(shp)), axis=1)
    counts = np.bincount(np.ravel_multi_index(idx[inside].T, shp), minlength=int(np.prod(shp))).reshape(shp) if inside.any() \
        else np.zeros(shp)
    occupancy = np.clip(ndimage.gaussian_filter(counts * (ATOM_VOLUME_A3 / vs**3), 0.5, mode="constant"), 0.0, 1.0)
    v_ice = ice_potential()
    n_full = ICE_WATER_DENSITY * vs**3
    texture = v_ice * np.sqrt(WATER_STRUCTURE_FACTOR_0 * (1.0 - occupancy) / n_full) * rng.standard_normal(shp)
    truth = v_mol.astype(np.float64) - v_ice * occupancy + texture

    membranes = np.zeros(shp, dtype=bool)
    for c_a, radius in vesicles:
        sl, d = _distance_from_sphere(shp, c_a / vs - 0.5, (radius + half_t) / vs + 1.0)
        d_a = d * vs - radius
        truth[sl] += bilayer_voxel_mean(d_a, vs)
        membranes[sl] |= np.abs(d_a) <= MEMBRANE_HALF_A

    coords = np.array([p_a / vs - 0.5 for _, p_a in placed]).reshape(-1, 3)  # voxel index of the centre of mass
    df = io.particles_frame(coords, eulers)
    df["cryorestoreSpecies"] = [names[s] for s, _ in placed]
    df["rlnClassNumber"] = np.array([s + 1 for s, _ in placed], dtype=int)
    n_by = {name: int(sum(1 for s, _ in placed if s == i)) for i, name in enumerate(names)}
    return Specimen(truth.astype(np.float32), df, membranes, vs, n_by, v_ice, float(occupancy.mean()))


# --------------------------------------------------------------------------------------------
# acquisition
# --------------------------------------------------------------------------------------------
def dose_symmetric_order(angles: Sequence[float] | np.ndarray, group: int = DOSE_GROUP) -> np.ndarray:
    """Acquisition order (indices into ``angles``): the tilt nearest 0°, then alternately ``group`` tilts
    further out on the positive side and ``group`` on the negative side; one side exhausted, the other goes on."""
    a = np.asarray(angles, dtype=np.float64)
    first = int(np.argmin(np.abs(a)))
    pos = sorted((i for i in range(len(a)) if a[i] > a[first]), key=lambda i: a[i])
    neg = sorted((i for i in range(len(a)) if a[i] < a[first]), key=lambda i: -a[i])
    order = [first]
    while pos or neg:
        order += pos[:group]
        order += neg[:group]
        pos, neg = pos[group:], neg[group:]
    return np.array(order, dtype=int)


def draw_ctfs(n: int, rng: np.random.Generator, astigmatism: float = DEFAULT_ASTIGMATISM_A) -> list[ctfmod.TiltCTF]:
    """Per-tilt CTF rows (CTFFIND4 convention, Å): a series target from :data:`DEFOCUS_RANGE_UM`, per-tilt jitter,
    ``astigmatism`` Å (defocus 1 − defocus 2) at one random azimuth (degrees from x toward y)."""
    target = rng.uniform(*DEFOCUS_RANGE_UM)
    mean_a = 1e4 * np.clip(target + DEFOCUS_JITTER_UM * rng.standard_normal(n), 0.5, None)
    azimuth = float(rng.uniform(0.0, 180.0))
    return [ctfmod.TiltCTF(float(m + astigmatism / 2), float(m - astigmatism / 2), azimuth) for m in mean_a]


def tilt_rotations(angles_deg: Sequence[float] | np.ndarray) -> torch.Tensor:
    """torch-fourier-slice rotation matrices (n, 3, 3) on xyz whose projection column is u = x cos θ − z sin θ.

    ``project_3d_to_2d`` samples the volume's spectrum on the plane spanned by R x̂ and R ŷ, so the image
    column of a point p is (R x̂)·p; R = [[c, 0, s], [0, 1, 0], [−s, 0, c]] gives (c, 0, −s)·(x, y, z).
    """
    t = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    r = np.zeros((len(t), 3, 3))
    r[:, 0, 0] = np.cos(t)
    r[:, 0, 2] = np.sin(t)
    r[:, 1, 1] = 1.0
    r[:, 2, 0] = -np.sin(t)
    r[:, 2, 2] = np.cos(t)
    return torch.from_numpy(r).float()


def cube_offsets(shape: Sequence[int]) -> tuple[int, tuple[int, int, int]]:
    """Edge M of the cube that holds a (Z, Y, X) volume and the volume's (z, y, x) offsets in it (centred).

    M is even: torch-fourier-slice 0.6.0 projects odd cubes displaced by 1.6–1.9 pixels along x (measured
    with a Gaussian blob against our projector; even cubes agree within 0.01 pixel).
    """
    m = max(int(n) for n in shape)
    m += m % 2
    return m, tuple((m - int(n)) // 2 for n in shape)  # type: ignore[return-value]


def centre_shift(angles_deg: Sequence[float] | np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Per-tilt shift (pixels along x) that moves torch-fourier-slice's image onto the package's geometry.

    A voxel (z, x) of the volume projects in the package to column (X−1)/2 + (x − (X−1)/2) c − (z − (Z−1)/2) s
    and in torch-fourier-slice (rotation about the cube's DFT centre M//2, image cropped at the x offset)
    to M//2 − o_x + (x + o_x − M//2) c − (z + o_z − M//2) s; the difference is
    ``a_x (1 − c) + a_z s`` with ``a = (N − 1)/2 − (M//2 − o)`` per axis (−½ for an even edge that fills the cube).
    """
    z, _, x = (int(n) for n in shape)
    m, (oz, _, ox) = cube_offsets(shape)
    a_x = (x - 1) / 2.0 - (m // 2 - ox)
    a_z = (z - 1) / 2.0 - (m // 2 - oz)
    t = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return a_x * (1.0 - np.cos(t)) + a_z * np.sin(t)


def project(volume: np.ndarray | torch.Tensor, angles_deg: Sequence[float] | np.ndarray, pad_factor: float = PAD_FACTOR,
            correct_centre: bool = True) -> np.ndarray:
    """Line integrals (voxel units, float32 (n, Y, X)) of a (Z, Y, X) volume with torch-fourier-slice.

    The volume is embedded (centred) in a cube of edge max(Z, Y, X), projected with :func:`tilt_rotations`
    and cropped back to (Y, X); ``correct_centre`` shifts each image by :func:`centre_shift` (Fourier phase
    ramp) so that the tilt axis passes through the package's centre (N − 1)/2.
    """
    from torch_fourier_slice import project_3d_to_2d

    v = torch.as_tensor(np.asarray(volume), dtype=torch.float32)
    z, y, x = v.shape
    m, (oz, oy, ox) = cube_offsets(v.shape)
    cube = torch.zeros((m, m, m), dtype=torch.float32)
    cube[oz:oz + z, oy:oy + y, ox:ox + x] = v
    with torch.no_grad():
        proj = project_3d_to_2d(cube, tilt_rotations(angles_deg), pad_factor=pad_factor)
    proj = proj[:, oy:oy + y, ox:ox + x].double()
    if correct_centre:
        kx = torch.fft.rfftfreq(x, dtype=torch.float64)
        shift = torch.from_numpy(centre_shift(angles_deg, (z, y, x)))
        ramp = torch.exp(-2j * math.pi * kx[None, :] * shift[:, None])[:, None, :]
        proj = torch.fft.irfft(torch.fft.rfft(proj, dim=-1) * ramp, n=x, dim=-1)
    return proj.float().numpy()


def column_defocus(tilt_ctf: ctfmod.TiltCTF, angle_deg: float, width: int, pixel_size: float) -> np.ndarray:
    """Mean defocus (Å) of every image column of a tilted image: Δf + (u − (X−1)/2) · pixel · tan θ.

    IMOD/Dynamo/novaCTF convention: at positive tilt angles the right side (+x) is more underfocused.
    """
    u = np.arange(int(width), dtype=np.float64) - (int(width) - 1) / 2.0
    return tilt_ctf.mean_defocus + u * float(pixel_size) * math.tan(math.radians(float(angle_deg)))


def ctf_2d(defocus_a: np.ndarray, tilt_ctf: ctfmod.TiltCTF, shape: tuple[int, int], pixel_size: float,
           optics: ctfmod.Optics) -> torch.Tensor:
    """torch-ctf CTFs (k, Y, X//2+1), float64, at mean defoci ``defocus_a`` (Å) with the row's astigmatism.

    torch-ctf's parameters: defocus = mean in µm, astigmatism = (Δf₁ − Δf₂)/2 in µm, angle = the azimuth of
    Δf₁ in degrees (its vector (sin, cos) on (y, x): measured from x toward y, as CTFFIND4), phase shift in degrees.
    """
    from torch_ctf import calculate_ctf_2d

    astig, azimuth = (tilt_ctf.defocus1 - tilt_ctf.defocus2) / 2.0, tilt_ctf.azimuth
    if astig < 0:  # torch-ctf takes a non-negative magnitude: the larger defocus lies 90° away
        astig, azimuth = -astig, azimuth + 90.0
    d = torch.as_tensor(np.asarray(defocus_a, dtype=np.float64) * 1e-4, dtype=torch.float64)
    c = calculate_ctf_2d(
        defocus=d, astigmatism=astig * 1e-4, astigmatism_angle=azimuth,
        voltage=optics.voltage, spherical_aberration=optics.cs, amplitude_contrast=optics.amplitude_contrast,
        phase_shift=math.degrees(tilt_ctf.phase_shift), pixel_size=float(pixel_size), image_shape=tuple(shape),
        rfft=True, fftshift=False,
    )
    return c.reshape(-1, shape[0], shape[1] // 2 + 1).double()


def exposure_filter(shape: tuple[int, int], pixel_size: float, pre_exposure: float, exposure: float) -> torch.Tensor:
    """Mean amplitude (Y, X//2+1), float64, over the exposure window [N₀, N₀ + ΔN] e/Å²:
    ``2N_e/ΔN · (exp(−N₀/2N_e) − exp(−N₁/2N_e))`` with torch-fourier-filter's critical exposure N_e(q)
    (Grant & Grigorieff 2015), 1 at q = 0.

    Not ``cumulative_dose_filter_3d`` itself: in 0.6.0 it divides by the end exposure instead of the window's
    length (right only for windows that start at 0) and, in float32, returns 0 instead of 1 at q = 0.
    """
    from torch_fourier_filter.dose_weight import critical_exposure

    qy = torch.fft.fftfreq(int(shape[0]), d=float(pixel_size), dtype=torch.float64)[:, None]
    qx = torch.fft.rfftfreq(int(shape[1]), d=float(pixel_size), dtype=torch.float64)[None, :]
    q = torch.sqrt(qy**2 + qx**2)
    ne2 = 2.0 * critical_exposure(q.clamp(min=1e-6))
    n0, dn = float(pre_exposure), float(exposure)
    if dn <= 0:
        out = torch.exp(-n0 / ne2)
    else:
        out = ne2 / dn * (torch.exp(-n0 / ne2) - torch.exp(-(n0 + dn) / ne2))
    out[0, 0] = 1.0
    return out


def tilted_filter(image: np.ndarray | torch.Tensor, angle_deg: float, tilt_ctf: ctfmod.TiltCTF, pixel_size: float,
                  optics: ctfmod.Optics, extra: torch.Tensor | None = None, step_a: float = DEFOCUS_STEP_A,
                  absolute: bool = False) -> np.ndarray:
    """Apply torch-ctf's CTF with the defocus gradient of a tilted (Y, X) image (times ``extra`` on the rfft grid;
    ``absolute``: its modulus |CTF|, what a perfect phase flip of the CTF-filtered image leaves).

    The image is filtered at a ladder of defoci from the leftmost to the rightmost column's
    (:func:`column_defocus`), at most ``step_a`` Å apart; each column takes the linear interpolation, in
    defocus, between the two rungs around its own defocus. Returns float64 (Y, X).
    """
    img = torch.as_tensor(np.asarray(image), dtype=torch.float64)
    ny, nx = img.shape
    col = column_defocus(tilt_ctf, angle_deg, nx, pixel_size)
    lo, hi = float(col.min()), float(col.max())
    k = max(2, int(math.ceil((hi - lo) / step_a)) + 1) if hi - lo > 1e-6 else 1
    rungs = np.linspace(lo, hi, k) if k > 1 else np.array([lo])
    spec = torch.fft.rfft2(img)
    filt = ctf_2d(rungs, tilt_ctf, (ny, nx), pixel_size, optics)
    if absolute:
        filt = filt.abs()
    if extra is not None:
        filt = filt * extra
    stack = torch.fft.irfft2(spec[None] * filt, s=(ny, nx)).numpy()  # (k, Y, X)
    if k == 1:
        return stack[0]
    pos = (col - lo) / (hi - lo) * (k - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, k - 2)
    w = pos - i0
    cols = np.arange(nx)
    return stack[i0, :, cols].T * (1.0 - w) + stack[i0 + 1, :, cols].T * w


def interaction_constant(voltage_kv: float) -> float:
    """σ in rad/(V·Å) from torch-ctf's relativistic wavelength: 2π/(λV) · (E₀ + eV)/(2E₀ + eV)."""
    from torch_ctf import calculate_relativistic_electron_wavelength

    v = float(voltage_kv) * 1e3
    lam = float(calculate_relativistic_electron_wavelength(v)) * 1e10
    e0 = 510998.95
    return 2.0 * math.pi / (lam * v) * (e0 + v) / (2.0 * e0 + v)


@dataclass
class Acquisition:
    """The noise-free record: per-tilt expected contrast (V·Å) and electrons per pixel."""

    contrast: np.ndarray  # float32 (n, Y, X)
    electrons: np.ndarray  # float64 (n,)
    sigma: float  # rad/(V·Å)
    pre_exposure: np.ndarray  # e/Å² before each tilt


def acquire(specimen: Specimen, angles: np.ndarray, ctfs: Sequence[ctfmod.TiltCTF], order: np.ndarray, dose: float,
            optics: ctfmod.Optics, timings: dict[str, float] | None = None) -> Acquisition:
    """Project, apply the CTF with its gradient and the exposure filter, and set the counts scale (steps 1–4)."""
    require_packages()
    t0 = time.perf_counter()
    vs = specimen.voxel_size
    proj = project(specimen.truth, angles) * vs  # V·Å
    t1 = time.perf_counter()
    n = len(angles)
    per_tilt = float(dose) / n
    pre = np.empty(n)
    pre[np.asarray(order)] = per_tilt * np.arange(n)
    contrast = np.empty(proj.shape, np.float32)
    shape2 = proj.shape[1:]
    for i in range(n):
        dose_f = exposure_filter(shape2, vs, pre[i], per_tilt)
        contrast[i] = tilted_filter(proj[i], float(angles[i]), ctfs[i], vs, optics, extra=dose_f)
    thickness = specimen.truth.shape[0] * vs
    lam = per_tilt * vs**2 * np.exp(-thickness / (INELASTIC_MFP_A * np.cos(np.deg2rad(angles))))
    if timings is not None:
        timings["projection"] = t1 - t0
        timings["ctf"] = time.perf_counter() - t1
    return Acquisition(contrast, lam, interaction_constant(optics.voltage), pre)


# Counting electrons is the same physics in both simulators: the expected image, the Poisson draw of a dose
# fraction and its density-like scaling are realistic's (they read only ``contrast``, ``electrons`` and
# ``sigma``, which this module's Acquisition holds alike); the image formation above is teamtomo's.
expected_image = realistic.expected_image
record = realistic.record


def describe(specimen: Specimen, ctfs: Sequence[ctfmod.TiltCTF], order: np.ndarray, acq: Acquisition,
             optics: ctfmod.Optics, astigmatism: float) -> dict:
    """The preset's entries of ``simulation.json``."""
    return {
        "image_formation": "teamtomo packages: ttsim3d atomic potentials (exact voxel integrals, one call for every "
                           "atom of every placed copy), torch-fourier-slice projection (pad factor 2, centre corrected "
                           "to (N-1)/2), torch-ctf CTF with a per-column defocus gradient (defocus ladder), "
                           "torch-fourier-filter exposure filter (Grant & Grigorieff 2015), ice path 1/cos(theta), "
                           "Poisson counts on the tomogram's pixel grid",
        "packages": package_versions(),
        "atomic_model": {"file": ATOMS_FILE, "pdb": "4V6X", "b_factor_A2": B_FACTOR, "template_b_factor_A2": TEMPLATE_B_FACTOR},
        "voltage_kV": optics.voltage, "cs_mm": optics.cs, "amplitude_contrast": optics.amplitude_contrast,
        "astigmatism_A": float(astigmatism), "defocus_A": [[c.defocus1, c.defocus2, c.azimuth] for c in ctfs],
        "defocus_step_A": DEFOCUS_STEP_A,
        "acquisition_order": [int(i) for i in order], "dose_symmetric_group": DOSE_GROUP,
        "pre_exposure_e_per_A2": [float(x) for x in acq.pre_exposure],
        "electrons_per_pixel": [float(x) for x in acq.electrons], "interaction_constant": acq.sigma,
        "ice": {"potential_V": specimen.ice_potential, "water_per_A3": ICE_WATER_DENSITY,
                "structure_factor_0": WATER_STRUCTURE_FACTOR_0, "atom_volume_A3": ATOM_VOLUME_A3,
                "thickness_A": specimen.truth.shape[0] * specimen.voxel_size, "inelastic_mean_free_path_A": INELASTIC_MFP_A},
        "molecule_volume_fraction": specimen.protein_fraction,
        "species": [{"name": name, "pdb": pdb, "description": what, "count": specimen.counts.get(name, 0),
                     "atoms": ATOMS_FILE} for name, pdb, what in molecules.SPECIES],
        "tomograms": "WBP of phase-flipped images (true CTF, cryorestore.ctf.phase_flip), cryorestore.reconstruct",
        "ctf_file": "the true per-tilt values used by the simulation (defocus at the image centre)",
        "handedness": "IMOD/Dynamo/novaCTF: at positive tilt angles the right side (+x) of a tilt image is more "
                      "underfocused; positive tilt turns +x toward +z",
    }
