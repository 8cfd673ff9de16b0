"""The teamtomo preset and what it checks independently: handedness and centre of our reconstruction against
torch-fourier-slice, and the sign of our defocus gradient against torch-ctf and IMOD's documented convention."""

from __future__ import annotations

import math

import mrcfile
import numpy as np
import pytest

pytest.importorskip("ttsim3d")
pytest.importorskip("torch_fourier_slice")
pytest.importorskip("torch_ctf")
pytest.importorskip("torch_fourier_filter")

from cryorestore import ctf, io, projection  # noqa: E402
from cryorestore.simulate import teamtomo  # noqa: E402

ANGLES = np.arange(-60.0, 61.0, 3.0)


def blob_volume(shape, centres, sigma=1.5, weights=None):
    """Gaussian blobs at (z, y, x) voxel positions (float64 grid, float32 result)."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    vol = np.zeros(shape)
    for i, (cz, cy, cx) in enumerate(centres):
        w = 1.0 if weights is None else weights[i]
        vol += w * np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    return vol.astype(np.float32)


def phase_shift_estimate(a: np.ndarray, ref: np.ndarray, kmax: float = 0.12) -> np.ndarray:
    """(dz, dy, dx) voxels by which ``a`` is displaced from ``ref``: weighted least squares on the phase of
    the cross-spectrum at low frequency (a WBP's transfer is real and non-negative, so only a shift leaves a phase)."""
    cross = np.fft.fftn(a) * np.conj(np.fft.fftn(ref))
    ks = np.meshgrid(*[np.fft.fftfreq(n) for n in a.shape], indexing="ij")
    k = np.sqrt(sum(kk**2 for kk in ks))
    m = (k > 0) & (k < kmax) & (np.abs(cross) > 1e-3 * np.abs(cross).max())
    w = np.sqrt(np.abs(cross[m]))
    design = np.stack([kk[m] for kk in ks], axis=1) * w[:, None]
    sol, *_ = np.linalg.lstsq(design, -np.angle(cross[m]) / (2 * np.pi) * w, rcond=None)
    return sol


# --------------------------------------------------------------------------------------------
# (a) handedness and centre: torch-fourier-slice projection, our WBP
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(40, 48, 64), (33, 40, 51)])
def test_fourier_slice_projection_reconstructs_in_place(shape):
    """An asymmetric pair of blobs, off-centre in z, y and x, projected by torch-fourier-slice at 41 tilts
    and reconstructed by our WBP: the brighter blob is the maximum within half a voxel of where it was put
    (a flipped tilt sense would mirror it in z, 2 × 5.3 voxels away), and the whole reconstruction is
    displaced from the truth by less than 0.1 voxel (the half-voxel centre convention would show as ~0.5)."""
    cz, cy, cx = (n / 2.0 for n in shape)
    centres = [(cz + 5.3, cy - 4.0, cx + 9.7), (cz - 3.0, cy + 3.0, cx - 6.0)]
    vol = blob_volume(shape, centres, weights=[1.0, 0.6])
    stack = teamtomo.project(vol, ANGLES)
    assert stack.shape == (len(ANGLES), shape[1], shape[2]) and stack.dtype == np.float32
    rec = np.asarray(projection.backproject(stack, ANGLES, shape[0]))
    peak = np.array(np.unravel_index(np.argmax(rec), rec.shape))
    assert np.abs(peak - np.array(centres[0])).max() <= 0.75, (peak, centres[0])
    shift = phase_shift_estimate(rec, vol)
    assert np.abs(shift).max() < 0.1, shift


def test_centre_correction_is_what_makes_it_agree():
    """Without the per-tilt shift onto (N − 1)/2 the same check fails: the test above can catch that bug."""
    shape = (40, 48, 64)
    cz, cy, cx = (n / 2.0 for n in shape)
    vol = blob_volume(shape, [(cz + 5.3, cy - 4.0, cx + 9.7), (cz - 3.0, cy + 3.0, cx - 6.0)], weights=[1.0, 0.6])
    rec = np.asarray(projection.backproject(teamtomo.project(vol, ANGLES, correct_centre=False), ANGLES, shape[0]))
    assert np.abs(phase_shift_estimate(rec, vol)).max() > 0.3


def test_centre_shift_formula():
    """For an even edge that fills the cube the offset is −½ per axis: Δ = −½ (1 − cos θ) − ½ sin θ."""
    t = np.deg2rad(ANGLES)
    np.testing.assert_allclose(teamtomo.centre_shift(ANGLES, (64, 64, 64)), -0.5 * (1 - np.cos(t)) - 0.5 * np.sin(t))
    # odd edges go into the next even cube (34) at offset 0: the package's centre 16 lies 1 voxel before 34 // 2
    np.testing.assert_allclose(teamtomo.centre_shift(ANGLES, (33, 33, 33)), -1.0 * (1 - np.cos(t)) - 1.0 * np.sin(t))


def test_projection_matches_ours_on_a_smooth_object(rng):
    """torch-fourier-slice and our Joseph projector agree on a band-limited object (same geometry, same scale)."""
    from scipy import ndimage

    shape = (32, 24, 48)
    z, _, x = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    vol = (ndimage.gaussian_filter(rng.standard_normal(shape), 2.5) * np.exp(-(z**2 + x**2) / (2 * 7.0**2))).astype(np.float32)
    a = teamtomo.project(vol, ANGLES)
    b = np.asarray(projection.project(vol, ANGLES))
    assert np.abs(a - b).max() < 0.08 * np.abs(b).max()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.995


# --------------------------------------------------------------------------------------------
# (b) the defocus-gradient sign, checked against torch-ctf and IMOD's documented convention
# --------------------------------------------------------------------------------------------
def test_torch_ctf_equals_our_transfer():
    """torch-ctf's CTF (its defocus, astigmatism and phase-shift parameters) is our density-like T = sin χ,
    astigmatism azimuth and sign included; so the two simulators share no CTF code but one CTF."""
    optics = ctf.Optics()
    qy, qx = ctf.frequencies_2d((64, 96), 4.0)
    for row in (ctf.TiltCTF(40000.0, 39000.0, 30.0), ctf.TiltCTF(25000.0, 26000.0, 120.0, 0.3)):
        ours = ctf.transfer(qy, qx, row, optics)
        theirs = teamtomo.ctf_2d(np.array([row.mean_defocus]), row, (64, 96), 4.0, optics)[0].numpy()
        np.testing.assert_allclose(theirs, ours, atol=1e-4)
    assert ours[0, 0] > 0  # amplitude contrast: positive transfer at q = 0 (particles bright)


def fit_defocus(image: np.ndarray, pixel: float, optics: ctf.Optics, candidates: np.ndarray) -> float:
    """Defocus (Å) whose torch-ctf CTF² best matches the image's radially averaged power spectrum
    (white-noise input, so the spectrum is CTF² itself): a ctfplotter-style estimate, independent of ctf.py."""
    ny, nx = image.shape
    win = np.hanning(ny)[:, None] * np.hanning(nx)[None, :]
    ps = np.abs(np.fft.rfft2((image - image.mean()) * win)) ** 2
    q = np.sqrt(np.fft.fftfreq(ny)[:, None] ** 2 + np.fft.rfftfreq(nx)[None, :] ** 2)
    band = (q > 0.05) & (q < 0.45)
    scores = []
    for d in candidates:
        model = teamtomo.ctf_2d(np.array([d]), ctf.TiltCTF(d, d), (ny, nx), pixel, optics)[0].numpy() ** 2
        scores.append(np.corrcoef(ps[band], model[band])[0, 1])
    return float(candidates[int(np.argmax(scores))])


@pytest.mark.parametrize("angle", [45.0, -45.0])
def test_our_strip_ctf_puts_more_underfocus_on_the_right_at_positive_tilt(rng, angle):
    """White noise filtered by our strip-wise CTF (ctf.filter_tilt) of a 45° tilt: torch-ctf's model fitted to
    the left and right quarters finds defoci that differ by the gradient, the right one the larger at +45°
    (IMOD, Dynamo, novaCTF: "at positive tilt angles the right side is more underfocused") and the smaller at
    −45°. Flipping the sign in ctf.py turns both around, and this test fails."""
    optics = ctf.Optics()
    pixel, nominal, ny, nx = 4.0, 20000.0, 128, 512
    row = ctf.TiltCTF(nominal, nominal)
    noise = rng.standard_normal((ny, nx))
    img = ctf.filter_tilt(noise, angle, pixel, row, optics, lambda qy, qx, off: ctf.transfer(qy, qx, row, optics, off))
    quarter = nx // 4
    centre_offset = (nx - 1) / 2.0 - (quarter - 1) / 2.0  # pixels from the image centre to a quarter's centre
    expected = centre_offset * pixel * math.tan(math.radians(angle))  # ≈ 770 Å
    candidates = np.arange(nominal - 2000.0, nominal + 2000.0 + 1.0, 50.0)
    left = fit_defocus(img[:, :quarter], pixel, optics, candidates)
    right = fit_defocus(img[:, -quarter:], pixel, optics, candidates)
    assert np.sign(right - left) == np.sign(angle)
    assert abs((right - nominal) - expected) < 250.0 and abs((left - nominal) + expected) < 250.0, (left, right, expected)


def test_our_phase_flip_undoes_the_teamtomo_gradient(rng):
    """An image formed with torch-ctf and the documented gradient (teamtomo.tilted_filter), phase-flipped by ours
    (ctf.phase_flip with the same row and angle), correlates with the object seen through |CTF| (torch-ctf, same
    gradient) in the outer quarters of the image; flipped with the opposite tilt sign (our gradient reversed)
    it correlates clearly worse. Fails if ctf.py's gradient sign is flipped."""
    optics = ctf.Optics()
    pixel, angle, ny, nx = 5.0, 55.0, 64, 384
    row = ctf.TiltCTF(30000.0, 30000.0)
    obj = rng.standard_normal((ny, nx))
    formed = teamtomo.tilted_filter(obj, angle, row, pixel, optics)
    # the object seen through |CTF| with the same gradient (torch-ctf): what a correct phase flip recovers
    target = teamtomo.tilted_filter(obj, angle, row, pixel, optics, absolute=True)
    right = ctf.phase_flip(formed[None], [angle], [row], pixel, optics)[0]
    wrong = ctf.phase_flip(formed[None], [-angle], [row], pixel, optics)[0]
    edges = np.r_[0:nx // 4, nx - nx // 4:nx]  # the outer quarters, where the defocus is furthest from nominal
    c_right = np.corrcoef(right[:, edges].ravel(), target[:, edges].ravel())[0, 1]
    c_wrong = np.corrcoef(wrong[:, edges].ravel(), target[:, edges].ravel())[0, 1]
    assert c_right > 0.9 and c_right > c_wrong + 0.2, (c_right, c_wrong)


def test_column_defocus_follows_the_imod_convention():
    row = ctf.TiltCTF(40000.0, 38000.0, 12.0)
    d = teamtomo.column_defocus(row, 30.0, 100, 10.0)
    assert d[-1] > d[0] and d[0] < row.mean_defocus < d[-1]
    np.testing.assert_allclose(d[-1] - d[0], 99 * 10.0 * math.tan(math.radians(30.0)))
    assert teamtomo.column_defocus(row, -30.0, 100, 10.0)[-1] < row.mean_defocus


def test_exposure_filter_window_average():
    """The window mean from torch-fourier-filter's cumulative filter equals the direct average of
    exp(−N / 2N_e) over [N₀, N₁] with Grant & Grigorieff's N_e (float64 reference, midpoint rule)."""
    shape, pixel, n0, dn = (32, 48), 6.0, 40.0, 3.0
    got = teamtomo.exposure_filter(shape, pixel, n0, dn).numpy()
    q = np.sqrt(np.fft.fftfreq(shape[0])[:, None] ** 2 + np.fft.rfftfreq(shape[1])[None, :] ** 2) / pixel
    ne = 0.245 * np.power(np.maximum(q, 1e-10), -1.665) + 2.81
    ns = n0 + dn * (np.arange(2000) + 0.5) / 2000
    ref = np.mean(np.exp(-ns[:, None, None] / (2 * ne[None])), axis=0)
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------
# potentials and the whole preset
# --------------------------------------------------------------------------------------------
def test_atom_potential_volts_and_placement():
    """One carbon atom: ttsim3d's voxel integrals sum to the atom's integrated potential VOLT_A2 · Σa_C ·
    1.043 (V·Å³) and its centre lands on the voxel we asked for (origin = voxel N/2)."""
    from ttsim3d.scattering_potential import SCATTERING_PARAMS_A

    vs, shape = 2.0, (16, 16, 16)
    pos = np.array([[3.0 * vs, -2.0 * vs, 1.0 * vs]])
    v = teamtomo.atom_potential(pos, ["C"], shape, vs, 30.0)
    np.testing.assert_allclose(v.sum() * vs**3, 1.043 * teamtomo.VOLT_A2 * sum(SCATTERING_PARAMS_A["C"]), rtol=2e-3)
    assert tuple(np.unravel_index(np.argmax(v), shape)) == (8 + 3, 8 - 2, 8 + 1)


def test_ice_potential_is_plausible():
    v = teamtomo.ice_potential()
    assert 2.5 < v < 4.5  # hydrogen-free amorphous ice


@pytest.mark.slow
def test_teamtomo_preset_writes_the_contract(tmp_path):
    """The whole preset on a small slab: every file of the contract, the voxel size in every header, the
    particles inside the volume, Poisson noise of the recorded dose around the noise-free tilt series, and a
    noise-free reconstruction closer to the truth than the noisy one."""
    from cryorestore import simulate

    shape, vs = (48, 80, 80), 10.0
    paths = simulate.simulate_dataset(tmp_path, shape=shape, voxel_size=vs, tilt_range=(-60, 60), tilt_step=6.0,
                                      preset="teamtomo", seed=3, device="cpu")
    for name in ("ground_truth", "full", "even", "odd", "membranes", "clean", "clean_even", "clean_odd", "template"):
        with mrcfile.open(paths[name], permissive=True) as m:
            assert m.data.shape == shape or name.startswith("template"), name
            assert abs(float(m.voxel_size.x) - vs) < 1e-3, name
    for name in ("tilt_series", "tilt_series_clean"):
        with mrcfile.open(paths[name], permissive=True) as m:
            assert m.data.shape == (21, 80, 80) and abs(float(m.voxel_size.x) - vs) < 1e-3
    assert len(ctf.read_ctffind(paths["ctf"], 21)) == 21
    parts = io.read_particles(paths["particles"])
    assert len(parts) >= 1 and set(parts["cryorestoreSpecies"]) <= {"ribosome", "ribosome_40s"}
    xyz = parts[["rlnCoordinateZ", "rlnCoordinateY", "rlnCoordinateX"]].to_numpy()
    assert (xyz >= 0).all() and (xyz <= np.array(shape) - 1).all()
    import json

    rec = json.loads(paths["simulation"].read_text())
    assert rec["preset"] == "teamtomo" and rec["packages"]["ttsim3d"] != "missing"
    # the noise is Poisson with the recorded electrons: (λ − counts)/(2σλ·voxel) has variance ≈ 1/(λ (2σ·voxel)²)
    with mrcfile.open(paths["tilt_series"]) as m, mrcfile.open(paths["tilt_series_clean"]) as c:
        noise = np.asarray(m.data, np.float64) - np.asarray(c.data, np.float64)
    lam, sigma = np.array(rec["electrons_per_pixel"]), rec["interaction_constant"]
    predicted = 1.0 / (np.sqrt(lam) * 2.0 * sigma * vs)
    np.testing.assert_allclose(noise.std(axis=(1, 2)), predicted, rtol=0.05)
    assert np.abs(noise.mean(axis=(1, 2))).max() < 0.05 * predicted.min()
    vol = {n: io.read_mrc(paths[n]).data.ravel() for n in ("full", "clean", "ground_truth")}
    assert np.corrcoef(vol["clean"], vol["ground_truth"])[0, 1] > np.corrcoef(vol["full"], vol["ground_truth"])[0, 1] + 0.05
    assert np.abs(vol["ground_truth"]).max() > 1.0  # molecules, in volts


def test_missing_package_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    """Without ttsim3d the preset stops before writing anything, with the pip command to run."""
    import sys

    from cryorestore import simulate
    from cryorestore.errors import InputError

    monkeypatch.setitem(sys.modules, "ttsim3d", None)  # import ttsim3d → ImportError
    with pytest.raises(InputError, match=r"cryorestore\[teamtomo\]"):
        simulate.simulate_dataset(tmp_path / "out", shape=(48, 48, 48), voxel_size=10.0, preset="teamtomo")
    assert not (tmp_path / "out").exists()
