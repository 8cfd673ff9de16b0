"""The synthetic benchmark: phantom layout, noise model, half sets, CLI outputs and errors."""

from __future__ import annotations

import itertools

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryorestore import ctf, fourier, geometry, io, simulate
from cryorestore.simulate import molecules, realistic
from cryorestore.cli import main as cli_main
from cryorestore.errors import InputError

SMALL = (40, 64, 64)


def fsc_curve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return fourier.fsc(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def norm_corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# --------------------------------------------------------------------------------------------
# phantom
# --------------------------------------------------------------------------------------------
def test_template_is_asymmetric():
    t = simulate.make_template().astype(np.float64)
    assert t.shape == (32, 32, 32) and np.isclose(t.max(), 1.0)
    # centred on voxel 16 (centre of mass within two voxels), density within the particle radius
    grid = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), axis=-1)
    com = (grid * t[..., None]).sum(axis=(0, 1, 2)) / t.sum()
    assert np.abs(com - 16).max() <= 2
    dist = np.linalg.norm(grid - 16, axis=-1)
    assert t[dist > simulate.PARTICLE_RADIUS].max() < 0.1
    assert 16 <= 2 * dist[t > 0.1].max() <= 24  # diameter ≈ 16–24 voxels
    # no rotation maps it onto itself: the 23 non-trivial axis permutations/flips of the cube and
    # random rotations all decorrelate it
    rots = [m for m in (Rotation.from_euler("zyx", np.deg2rad(a)).as_matrix()
                        for a in itertools.product((0, 90, 180, 270), repeat=3)) if not np.allclose(m, np.eye(3))]
    rots += list(Rotation.random(10, random_state=5).as_matrix())
    best = max(norm_corr(t, geometry.rotate_volume(t, r, order=1)) for r in rots)
    assert best < 0.85
    # a mirror image is also different (the particle is chiral)
    assert norm_corr(t, t[::-1].copy()) < 0.8


def test_phantom_layout_and_reproducibility():
    shape, voxel = (48, 96, 96), 10.0
    ph = simulate.make_phantom(shape, voxel, np.random.default_rng(7))
    again = simulate.make_phantom(shape, voxel, np.random.default_rng(7))
    other = simulate.make_phantom(shape, voxel, np.random.default_rng(8))
    assert np.array_equal(ph.volume, again.volume) and ph.particles.equals(again.particles)
    assert not np.array_equal(ph.volume, other.volume)
    assert ph.volume.shape == shape and ph.volume.dtype == np.float32 and np.isfinite(ph.volume).all()
    assert ph.membranes.dtype == bool and ph.membranes.shape == shape and ph.membranes.any()

    coords, eulers = io.particle_arrays(ph.particles)
    assert len(coords) >= 3
    r = simulate.PARTICLE_RADIUS
    assert (coords >= r).all() and (coords <= np.array(shape) - 1 - r).all()
    d = np.linalg.norm(coords[:, None] - coords[None], axis=-1) + np.eye(len(coords)) * 1e9
    assert d.min() >= 2 * r
    # every copy is the template rotated actively by A = euler_to_matrix(angles), centred at the coordinate
    h = simulate.TEMPLATE_BOX // 2
    for p, ang in zip(coords.astype(int), eulers):
        box = ph.volume[tuple(slice(c - r, c + r + 1) for c in p)]
        ref = geometry.rotate_volume(ph.template, geometry.xyz_to_zyx(geometry.euler_to_matrix(ang)), order=1)
        ref = ref[tuple(slice(h - r, h + r + 1) for _ in p)]
        wrong = geometry.rotate_volume(ph.template, geometry.xyz_to_zyx(geometry.euler_to_matrix(ang + [0, 0, 90])), order=1)
        wrong = wrong[tuple(slice(h - r, h + r + 1) for _ in p)]
        assert norm_corr(box, ref) > 0.8  # the weak background and nearby membranes also fall in the box
        assert norm_corr(box, ref) > norm_corr(box, wrong) + 0.1
    # membranes: the shell thickness is 40 Å → 4 voxels at 10 Å; the mask lies where the phantom has density
    for centre, radius in ph.vesicles:
        assert 6 <= radius <= 35
    assert ph.volume[ph.membranes].mean() > ph.volume[~ph.membranes].mean() + 0.3
    assert not ph.membranes[tuple(coords.astype(int).T)].any()
    # gold beads are the densest objects
    for b in ph.beads:
        assert ph.volume[tuple(np.round(b).astype(int))] > 2.5


def test_membrane_thickness_follows_voxel_size():
    a = simulate.make_phantom((48, 96, 96), 10.0, np.random.default_rng(1))
    b = simulate.make_phantom((48, 96, 96), 5.0, np.random.default_rng(1))
    # 40 Å is 4 voxels at 10 Å and 8 voxels at 5 Å: about twice the mask volume per shell area
    ra = a.membranes.sum() / sum(r**2 for _, r in a.vesicles)
    rb = b.membranes.sum() / sum(r**2 for _, r in b.vesicles)
    assert 1.6 < rb / ra < 2.4


# --------------------------------------------------------------------------------------------
# noise model
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", ["poisson", "gaussian"])
def test_noise_is_unbiased_with_shot_noise_variance(noise):
    rng = np.random.default_rng(3)
    p = np.full((4, 100, 100), 12.0, np.float32)
    p[2:] = 3.0
    lam, c = 250.0, 0.01
    meas = simulate.noisy_projections(p, lam, c, rng, noise)
    for sl, val in ((slice(0, 2), 12.0), (slice(2, 4), 3.0)):
        expected_var = lam * (1 - c * val) / (lam * c) ** 2  # Poisson variance of the counts, rescaled
        m = meas[sl].astype(np.float64)
        assert abs(m.mean() - val) < 4 * np.sqrt(expected_var / m.size)
        assert abs(m.var() / expected_var - 1) < 0.03


def test_expected_projections_are_the_mean_of_the_noisy_ones():
    """The noise-free stack is E[measured]: checked against the mean of many independent draws, including
    pixels opaque enough to be clipped (c·p > 1), where E[measured] = 1/c, not p."""
    rng = np.random.default_rng(11)
    p = rng.uniform(0.0, 140.0, (2, 6, 7)).astype(np.float32)  # c·p up to 1.4: a few opaque pixels
    lam, c, draws = 40.0, 0.01, 4000
    mean = np.mean([simulate.noisy_projections(p, lam, c, rng) for _ in range(draws)], axis=0, dtype=np.float64)
    reference = np.minimum(p.astype(np.float64), 1.0 / c)  # float64, from the image model, not the code
    sd = np.sqrt(lam * np.clip(1 - c * reference, 1e-3, None) / draws) / (lam * c)
    assert np.all(np.abs(mean - reference) < 5 * sd + 1e-9)
    np.testing.assert_allclose(simulate.expected_projections(p, c), reference, rtol=1e-5, atol=1e-4)


def test_realistic_expected_image_is_the_mean_of_recorded_images():
    rng = np.random.default_rng(12)
    contrast = rng.normal(0.0, 100.0, (2, 5, 6)).astype(np.float32)  # V·Å, 2σ|c| < 0.5: never clipped
    acq = realistic.Acquisition(contrast, np.array([30.0, 50.0]), realistic.interaction_constant(300.0))
    vs, draws = 10.0, 4000
    mean = np.mean([realistic.record(acq, 0.5, vs, rng) for _ in range(draws)], axis=0, dtype=np.float64)
    reference = contrast.astype(np.float64) / vs  # 2σc << 1 here: no clipping, E = c / voxel
    np.testing.assert_allclose(realistic.expected_image(acq, vs), reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())
    lam = 0.5 * acq.electrons[:, None, None]
    sd = np.sqrt(lam) / (2 * acq.sigma * lam * vs) / np.sqrt(draws)
    assert np.all(np.abs(mean - reference) < 5 * sd)


@pytest.mark.parametrize("split", ["t2t", "f2f"])
def test_clean_tomograms_are_the_noise_free_signal_of_the_noisy_ones(tmp_path, split):
    """clean.mrc is the reconstruction of the noise-free series: full − clean is noise, uncorrelated with
    clean and with the other half's noise; F2F halves share one clean signal, T2T halves do not."""
    paths = simulate.simulate_dataset(tmp_path, shape=SMALL, split=split, seed=4, frames=4)
    v = {k: io.read_mrc(paths[k]).data.astype(np.float64)
         for k in ("full", "even", "odd", "clean", "clean_even", "clean_odd", "ground_truth")}
    n_full, n_even, n_odd = v["full"] - v["clean"], v["even"] - v["clean_even"], v["odd"] - v["clean_odd"]
    assert abs(np.corrcoef(n_full.ravel(), v["clean"].ravel())[0, 1]) < 0.05
    assert abs(np.corrcoef(n_even.ravel(), n_odd.ravel())[0, 1]) < 0.05
    assert np.corrcoef(v["clean"].ravel(), v["ground_truth"].ravel())[0, 1] > 0.5
    assert n_full.var() < 0.75 * n_even.var()  # the full series has twice the dose of a half
    if split == "f2f":
        assert np.array_equal(v["clean_even"], v["clean"]) and np.array_equal(v["clean_odd"], v["clean"])
    else:
        assert not np.allclose(v["clean_even"], v["clean_odd"])
    stack = io.read_mrc(paths["tilt_series_clean"])
    assert stack.shape == io.read_mrc(paths["tilt_series"]).shape


def test_tilt_angles_and_dose():
    a = simulate.tilt_angles((-60, 60), 3)
    assert len(a) == 41 and a[0] == -60 and a[-1] == 60
    assert np.allclose(simulate.tilt_angles((-50, 52), 7), np.arange(-50, 52.1, 7))
    assert simulate.electrons_per_pixel(123.0, 41, 10.0) == pytest.approx(300.0)
    for bad in ((60, -60), (-100, 60), (np.nan, 10)):
        with pytest.raises(InputError, match="makes no sense"):
            simulate.tilt_angles(bad, 3)
    with pytest.raises(InputError, match="at least 4"):
        simulate.tilt_angles((-3, 3), 3)


# --------------------------------------------------------------------------------------------
# half sets
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["t2t", "f2f"])
def test_pure_noise_halves_are_independent(tmp_path, split):
    paths = simulate.simulate_dataset(tmp_path, shape=SMALL, split=split, seed=2, signal=False, frames=4)
    even, odd = io.read_mrc(paths["even"]).data, io.read_mrc(paths["odd"]).data
    assert even.std() > 0 and odd.std() > 0
    curve = fsc_curve(even, odd)
    # shells 1–2 hold only a handful of effectively independent coefficients, so they scatter widely;
    # from shell 3 on the noise FSC stays within a few 1/sqrt(n) of 0 (a real dataset gives > 0.9 there)
    assert abs(curve[1:].mean()) < 0.05 and np.abs(curve[3:]).max() < 0.25, curve
    assert not io.read_mrc(paths["ground_truth"]).data.any()


def test_real_simulation_full_beats_half(tmp_path):
    paths = simulate.simulate_dataset(tmp_path, shape=SMALL, seed=4)
    truth = io.read_mrc(paths["ground_truth"]).data
    full, even, odd = (io.read_mrc(paths[k]).data for k in ("full", "even", "odd"))
    freqs = fourier.shell_frequencies(SMALL)
    mid = (freqs >= 0.075) & (freqs <= 0.2)  # below, both are limited by the wedge, not by the noise
    c_full, c_even, c_odd = fsc_curve(full, truth), fsc_curve(even, truth), fsc_curve(odd, truth)
    assert (c_full[mid] > c_even[mid]).all() and (c_full[mid] > c_odd[mid]).all()
    assert c_full[1] > 0.5  # the phantom is clearly visible at low resolution
    # T2T halves share the signal: their FSC is high at low frequency
    assert fsc_curve(even, odd)[1] > 0.5


def test_f2f_full_is_dose_weighted_sum_of_halves(tmp_path):
    paths = simulate.simulate_dataset(tmp_path, shape=SMALL, split="f2f", frames=5, seed=6)
    full, even, odd = (io.read_mrc(paths[k]).data for k in ("full", "even", "odd"))
    assert np.allclose(full, 0.6 * even + 0.4 * odd, atol=1e-4 * np.abs(full).max())
    truth = io.read_mrc(paths["ground_truth"]).data
    mid = (fourier.shell_frequencies(SMALL) >= 0.075) & (fourier.shell_frequencies(SMALL) <= 0.2)
    assert (fsc_curve(full, truth)[mid] > fsc_curve(odd, truth)[mid]).all()


def test_same_seed_same_dataset(tmp_path):
    kw = dict(shape=(32, 48, 48), seed=11, tilt_step=6.0)
    a = simulate.simulate_dataset(tmp_path / "a", **kw)
    b = simulate.simulate_dataset(tmp_path / "b", **kw)
    for name in ("ground_truth", "full", "even", "membranes"):
        assert np.array_equal(io.read_mrc(a[name]).data, io.read_mrc(b[name]).data)
    assert a["particles"].read_text().split("\n", 2)[2] == b["particles"].read_text().split("\n", 2)[2]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def test_cli_simulate_writes_design_outputs(tmp_path, capsys):
    # in-process to spare a second interpreter start-up; `python -m cryorestore` itself is tested in test_cli_fsc
    out = tmp_path / "D"
    rc = cli_main(["simulate", str(out), "--preset", "toy", "--shape", "48", "96", "96", "--seed", "3",
                   "--voxel-size", "8.5", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert "ground_truth" in capsys.readouterr().out
    names = {"ground_truth.mrc", "full.mrc", "even.mrc", "odd.mrc", "tilts.tlt", "particles.star", "template.mrc",
             "membranes.mrc", "tilt_series.mrc", "ctf.txt", "simulation.json", "template_blob.mrc",
             "clean.mrc", "clean_even.mrc", "clean_odd.mrc", "tilt_series_clean.mrc"}
    assert {p.name for p in out.iterdir()} == names
    assert np.array_equal(io.read_mrc(out / "template_blob.mrc").data, io.read_mrc(out / "template.mrc").data)
    stack = io.read_mrc(out / "tilt_series.mrc")
    assert stack.shape == (41, 96, 96) and stack.voxel_size == pytest.approx(8.5)
    assert len(ctf.read_ctffind(out / "ctf.txt", n_expected=41)) == 41
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["preset"] == "toy" and meta["seed"] == 3 and meta["species"][0]["name"] == "blob"
    for name in ("ground_truth", "full", "even", "odd", "membranes"):
        vol = io.read_mrc(out / f"{name}.mrc")
        assert vol.shape == (48, 96, 96) and vol.voxel_size == pytest.approx(8.5)
    assert io.read_mrc(out / "template.mrc").voxel_size == pytest.approx(8.5)
    assert set(np.unique(io.read_mrc(out / "membranes.mrc").data)) <= {0.0, 1.0}
    assert np.allclose(io.read_tlt(out / "tilts.tlt"), np.arange(-60, 60.1, 3))
    df = io.read_particles(out / "particles.star")
    assert len(df) >= 1 and {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"} <= set(df.columns)
    assert set(df["cryorestoreSpecies"]) == {"blob"} and set(df["rlnClassNumber"]) == {1}


def _assert_clean_failure(capsys, argv, out, match):
    """Run the CLI in-process (`python -m cryorestore` is covered in test_cli_fsc) and check a clean exit 2."""
    rc = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0], err
    assert not out.exists() or not any(out.iterdir())


def test_cli_simulate_bad_input(tmp_path, capsys):
    out = tmp_path / "D"
    _assert_clean_failure(capsys, ["simulate", out, "--tilt-range", "60", "-60"], out, "makes no sense")
    _assert_clean_failure(capsys, ["simulate", out, "--tilt-range", "-60", "100"], out, "makes no sense")
    _assert_clean_failure(capsys, ["simulate", out, "--tilt-step", "50"], out, "at least 4")
    _assert_clean_failure(capsys, ["simulate", out, "--shape", "8", "96", "96"], out, "too small")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _assert_clean_failure(capsys, ["simulate", blocker, "--preset", "toy", "--shape", "32", "32", "32"], tmp_path / "nothing", "not a folder")
    assert blocker.read_text() == "x"


# --------------------------------------------------------------------------------------------
# realistic preset
# --------------------------------------------------------------------------------------------
def test_dose_symmetric_order():
    a = np.arange(-9.0, 9.1, 3.0)  # -9 … 9
    order = realistic.dose_symmetric_order(a, group=2)
    assert list(a[order]) == [0.0, 3.0, 6.0, -3.0, -6.0, 9.0, -9.0]
    asym = np.arange(-6.0, 12.1, 3.0)
    o2 = realistic.dose_symmetric_order(asym, group=1)
    assert list(asym[o2]) == [0.0, 3.0, -3.0, 6.0, -6.0, 9.0, 12.0]
    assert sorted(o2) == list(range(len(asym)))


def test_simulated_defocus_gradient_has_the_stated_sign():
    """IMOD/Dynamo/novaCTF: at positive tilt the right side (+x) of the image is more underfocused.

    Two identical point images at u = ±40 pixels pass through the simulator's image formation at
    +45°; the local defocus of each is found by fitting uniform-defocus images; the +x one must be
    the more underfocused by ≈ 2 · 40 · pixel · tan 45° (and the sign reverses at −45°)."""
    pix, n = 10.0, 161
    u = np.arange(n) - (n - 1) / 2
    y = np.arange(64) - 31.5
    blob = lambda x0: np.exp(-((u[None] - x0) ** 2 + y[:, None] ** 2) / (2 * 1.2**2))  # noqa: E731
    base = ctf.TiltCTF(40000.0, 40000.0)
    opt = ctf.Optics()
    qy, qx = ctf.frequencies_2d((64, n), pix)
    for theta, sign in ((45.0, 1.0), (-45.0, -1.0)):
        fitted = {}
        for x0 in (-40.0, 40.0):
            img = realistic.expected_contrast(blob(x0), theta, pix, base, opt, 0.0, 0.0, strip=8)
            win = np.abs(u - x0) <= 20
            trial = np.arange(-1200.0, 1201.0, 50.0)
            err = [np.sum((img[:, win] - np.fft.irfft2(np.fft.rfft2(blob(x0)) * ctf.transfer(qy, qx, base, opt, d),
                                                       s=img.shape)[:, win]) ** 2) for d in trial]
            fitted[x0] = trial[int(np.argmin(err))]
        expected = 40 * pix * math.tan(math.radians(abs(theta)))  # 400 Å either side
        assert sign * (fitted[40.0] - fitted[-40.0]) > 0, fitted
        assert abs(fitted[40.0] - sign * expected) <= 100 and abs(fitted[-40.0] + sign * expected) <= 100, fitted


def test_fourier_bin_keeps_positions_and_means(rng):
    """Fourier binning puts coarse pixel j at the fine pixels 2j, 2j+1 (a band-limited blob stays put)."""
    fy, fx = 64, 96
    yy, xx = np.meshgrid(np.arange(fy), np.arange(fx), indexing="ij")
    y0, x0 = 30.5, 41.5  # between fine pixels 30/31 and 41/42 = coarse pixel 15, 20.5
    fine = np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 3.0**2))
    coarse = realistic.fourier_bin(fine)
    assert coarse.shape == (32, 48)
    assert coarse.sum() * 4 == pytest.approx(fine.sum(), rel=1e-4)
    cy, cx = np.meshgrid(np.arange(32), np.arange(48), indexing="ij")
    w = np.clip(coarse, 0, None)
    assert (cy * w).sum() / w.sum() == pytest.approx((y0 - 0.5) / 2, abs=0.02)
    assert (cx * w).sum() / w.sum() == pytest.approx((x0 - 0.5) / 2, abs=0.02)
    assert np.allclose(realistic.bin_volume(np.ones((4, 6, 8))), 1.0)


def test_templates_come_from_the_independent_map():
    """Templates are made from the template map (6.5 Å, B 200), not from the truth map placed in the
    specimen: similar (same atomic model) but not the same array."""
    for name, pdb, _ in molecules.SPECIES:
        truth, tmpl = molecules.load(name, "truth"), molecules.load(name, "template")
        assert pdb == "4V6X" and truth.pixel == 5.0 and tmpl.pixel == 6.5
        t = molecules.template(name, 10.0)
        assert t.shape[0] % 2 == 0 and t.shape[0] == t.shape[1] == t.shape[2]
        # the truth map on the same 10 Å grid (box centre b // 2 ↔ map centre)
        b = t.shape[0]
        ref = molecules._sample(truth, 10.0, (b, b, b), np.full(3, b // 2, dtype=float))
        cc = np.corrcoef(t.ravel(), ref.ravel())[0, 1]
        assert 0.8 < cc < 0.995, (name, cc)
        # the molecule's centre sits on the box centre
        g = np.meshgrid(*[np.arange(b)] * 3, indexing="ij")
        w = np.clip(t, 0, None)
        assert np.allclose([(gi * w).sum() / w.sum() for gi in g], b // 2, atol=1.0)


@pytest.mark.slow
def test_cli_simulate_realistic_writes_the_contract(tmp_path, capsys):
    out = tmp_path / "R"
    rc = cli_main(["simulate", str(out), "--shape", "40", "96", "96", "--seed", "5", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    names = {"ground_truth.mrc", "full.mrc", "even.mrc", "odd.mrc", "tilts.tlt", "particles.star", "template.mrc",
             "membranes.mrc", "tilt_series.mrc", "ctf.txt", "simulation.json", "template_ribosome.mrc",
             "template_ribosome_40s.mrc", "clean.mrc", "clean_even.mrc", "clean_odd.mrc", "tilt_series_clean.mrc"}
    assert {p.name for p in out.iterdir()} == names
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["preset"] == "realistic" and meta["dose_e_per_A2"] == 120.0 and meta["oversampling"] == 2
    assert [s["name"] for s in meta["species"]] == ["ribosome", "ribosome_40s"]
    rows = ctf.read_ctffind(out / "ctf.txt", n_expected=41)
    assert all(30000 <= r.mean_defocus <= 50000 for r in rows)
    assert sorted(meta["acquisition_order"]) == list(range(41))
    df = io.read_particles(out / "particles.star")
    assert set(df["cryorestoreSpecies"]) <= {"ribosome", "ribosome_40s"}
    assert all(df["rlnClassNumber"] == df["cryorestoreSpecies"].map({"ribosome": 1, "ribosome_40s": 2}))
    assert sum(s["count"] for s in meta["species"]) == len(df)
    assert np.array_equal(io.read_mrc(out / "template.mrc").data, io.read_mrc(out / "template_ribosome.mrc").data)
    truth, full = io.read_mrc(out / "ground_truth.mrc").data, io.read_mrc(out / "full.mrc").data
    assert fsc_curve(full, truth)[2:6].mean() > 0.3


def test_cli_simulate_realistic_bad_input(tmp_path, capsys):
    out = tmp_path / "R"
    _assert_clean_failure(capsys, ["simulate", out, "--shape", "24", "96", "96"], out, "at least 340 Å")
    _assert_clean_failure(capsys, ["simulate", out, "--amplitude-contrast", "1.5"], out, "amplitude contrast")


def test_realistic_particles_sit_where_the_list_says():
    """Each listed particle, sampled from the truth at its coordinate and brought back with its angles
    (``truth(p + R s)``, the geometry module's convention), matches its species' independent template;
    a wrong orientation or the other species' template matches worse."""
    from scipy import ndimage

    spec = realistic.make_specimen((40, 128, 128), 10.0, np.random.default_rng(3))
    assert len(spec.particles) >= 2 and spec.truth.shape == (40, 128, 128)
    assert spec.fine.shape == (80, 256, 256)
    assert np.allclose(realistic.bin_volume(spec.fine), spec.truth)
    coords, angles = io.particle_arrays(spec.particles)
    names = list(spec.particles["cryorestoreSpecies"])
    templates = {n: molecules.template(n, 10.0) for n, _, _ in molecules.SPECIES}
    wrong = geometry.xyz_to_zyx(geometry.euler_to_matrix(np.array([10.0, 80.0, 130.0])))

    def cc(p, r, t):
        b = t.shape[0]
        s = np.stack(np.meshgrid(*[np.arange(b) - b // 2] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
        pts = (p + s @ r.T).T
        sub = ndimage.map_coordinates(spec.truth, pts, order=1, mode="constant").reshape(t.shape)
        return np.corrcoef(sub.ravel(), t.ravel())[0, 1]

    for p, ang, name in list(zip(coords, angles, names))[:3]:
        r = geometry.xyz_to_zyx(geometry.euler_to_matrix(ang))
        right = cc(p, r, templates[name])
        assert right > 0.6, (name, right)
        assert cc(p, wrong @ r, templates[name]) < right - 0.1
