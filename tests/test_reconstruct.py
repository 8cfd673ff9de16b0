"""Reconstruction of a user's tilt series: T2T/F2F half sets, thickness, CLI round trip and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryorestore import fourier, io, projection, reconstruct
from cryorestore.cli import main as cli_main
from cryorestore.errors import InputError

SHAPE = (24, 16, 48)
ANGLES = np.arange(-60.0, 60.1, 4.0)  # 31 tilts


@pytest.fixture
def phantom(rng) -> np.ndarray:
    v = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 1.5)
    z, _, x = np.meshgrid(*[np.arange(n) - n // 2 for n in SHAPE], indexing="ij")
    return (v * np.exp(-(z**2 + x**2) / (2 * 6.0**2))).astype(np.float32)


def test_t2t_halves_are_even_and_odd_images(phantom, rng):
    stack = projection.project(phantom, ANGLES)
    noisy = stack + rng.normal(scale=0.5, size=stack.shape).astype(np.float32)
    out = reconstruct.reconstruct_halves(noisy, ANGLES, split="t2t", thickness=SHAPE[0])
    assert set(out) == {"full", "even", "odd"}
    # independent path: the same WBP of the explicitly chosen subsets (a swapped or shifted split differs)
    ref_even = projection.backproject(noisy[0::2], ANGLES[0::2], SHAPE[0])
    ref_odd = projection.backproject(noisy[1::2], ANGLES[1::2], SHAPE[0])
    assert np.allclose(out["even"], ref_even, atol=1e-5) and np.allclose(out["odd"], ref_odd, atol=1e-5)
    assert not np.allclose(out["even"], out["odd"], atol=1e-2)
    # all three are on one density scale (each uses its own angular weights); the ±60° wedge removes
    # a third of the spectrum, so against the truth the slope is below 1 but far above 0
    slopes = {name: float((out[name] * phantom).sum() / (phantom * phantom).sum()) for name in out}
    assert 0.5 < slopes["full"] < 1.0
    assert abs(slopes["even"] / slopes["full"] - 1) < 0.1 and abs(slopes["odd"] / slopes["full"] - 1) < 0.1


def test_f2f_frames_split_and_full_is_mean_of_all_frames(phantom, rng):
    clean = projection.project(phantom, ANGLES)
    n_frames = 5
    frames = np.repeat(clean[:, None], n_frames, axis=1) + rng.normal(scale=2.0, size=(len(ANGLES), n_frames, *clean.shape[1:]))
    frames = frames.astype(np.float32).reshape(-1, *clean.shape[1:])  # tilt by tilt
    even, odd, f = reconstruct.split_frames(frames, len(ANGLES))
    per_tilt = frames.reshape(len(ANGLES), n_frames, *clean.shape[1:]).astype(np.float64)
    assert f == n_frames
    assert np.allclose(even, per_tilt[:, [0, 2, 4]].mean(axis=1), atol=1e-5)
    assert np.allclose(odd, per_tilt[:, [1, 3]].mean(axis=1), atol=1e-5)
    out = reconstruct.reconstruct_halves(frames, ANGLES, split="f2f", thickness=SHAPE[0])
    # the full tomogram equals the WBP of the mean of all frames (computed there by linearity)
    ref_full = projection.backproject(per_tilt.mean(axis=1).astype(np.float32), ANGLES, SHAPE[0])
    assert np.allclose(out["full"], ref_full, atol=1e-4 * np.abs(ref_full).max())
    # independent frame noise: the halves agree on the signal but not on the noise
    c = fourier.fsc(torch.from_numpy(out["even"]), torch.from_numpy(out["odd"])).numpy()
    c_truth = fourier.fsc(torch.from_numpy(out["full"]), torch.from_numpy(phantom)).numpy()
    assert c[1] > 0.5 and c_truth[1] > 0.5
    with pytest.raises(InputError, match="frames"):
        reconstruct.split_frames(frames[:-1], len(ANGLES))


def test_default_thickness_and_errors(rng):
    stack = rng.standard_normal((6, 8, 64)).astype(np.float32)
    angles = np.linspace(-50, 50, 6)
    out = reconstruct.reconstruct_halves(stack, angles)
    assert out["full"].shape == (reconstruct.default_thickness(64), 8, 64) == (16, 8, 64)
    with pytest.raises(InputError, match="counts must match"):
        reconstruct.reconstruct_halves(stack, angles[:-1])
    with pytest.raises(InputError, match="at least 4"):
        reconstruct.reconstruct_halves(stack[:3], angles[:3])
    bad = stack.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        reconstruct.reconstruct_halves(bad, angles)
    with pytest.raises(InputError, match="split"):
        reconstruct.reconstruct_halves(stack, angles, split="x2y")


def test_cli_reconstruct_round_trip(tmp_path, phantom, cli):
    stack = projection.project(phantom, ANGLES)
    ts = io.write_mrc(tmp_path / "ts.mrc", stack, 7.5)
    tlt = io.write_tlt(tmp_path / "ts.tlt", ANGLES)
    out = tmp_path / "rec"
    # one real subprocess run: the installed entry point finds the command
    res = cli("reconstruct", ts, "--angles", tlt, "--out-dir", out, "--thickness", SHAPE[0], "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert {p.name for p in out.iterdir()} == {"full.mrc", "even.mrc", "odd.mrc"}
    full = io.read_mrc(out / "full.mrc")
    assert full.shape == SHAPE and full.voxel_size == pytest.approx(7.5)
    c = fourier.fsc(torch.from_numpy(full.data), torch.from_numpy(phantom)).numpy()
    assert c[1:4].min() > 0.8


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_cli_reconstruct_bad_input(tmp_path, rng, capsys):
    stack = rng.standard_normal((6, 8, 32)).astype(np.float32)
    ts = io.write_mrc(tmp_path / "ts.mrc", stack, 10.0)
    tlt = io.write_tlt(tmp_path / "ts.tlt", np.linspace(-50, 50, 6))
    short_tlt = io.write_tlt(tmp_path / "short.tlt", np.linspace(-50, 50, 5))
    nan_stack = stack.copy()
    nan_stack[2, 3, 4] = np.nan
    nan_ts = io.write_mrc(tmp_path / "nan.mrc", nan_stack, 10.0)
    junk = tmp_path / "junk.mrc"
    junk.write_text("this is not an MRC file\n" * 100)
    bad_tlt = tmp_path / "bad.tlt"
    bad_tlt.write_text("0\n10\n200\n")
    out = tmp_path / "out"
    cases = [
        ([tmp_path / "missing.mrc", "--angles", tlt], "does not exist"),
        ([junk, "--angles", tlt], "not a readable MRC"),
        ([nan_ts, "--angles", tlt], "NaN"),
        ([ts, "--angles", short_tlt], "counts must match"),
        ([ts, "--angles", short_tlt, "--split", "f2f"], "frames"),
        ([ts, "--angles", bad_tlt], "-90..90"),
        ([ts, "--angles", tmp_path / "nope.tlt"], "does not exist"),
    ]
    for args, match in cases:
        rc = cli_main(["reconstruct", *map(str, args), "--out-dir", str(out)])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1 and match in lines[0], (args, err)
        assert not out.exists()


def test_off_centre_point_source_lands_where_it_was(rng):
    """Handedness and centre: analytic projections of a point (a narrow Gaussian) at (z0, y0, x0),
    reconstructed by ``reconstruct``, peak at (z0, y0, x0) to a fraction of a voxel.

    Convention: positive tilt turns the specimen's +x toward +z, so the point appears at
    u = x0 cos θ − z0 sin θ about the detector centre (U − 1) / 2; centres are (N − 1) / 2.
    A z-mirrored reconstruction would put the peak at −z0, a half-voxel centre error 0.5 off.
    """
    shape = (32, 20, 48)
    cz, cy, cx = ((n - 1) / 2 for n in shape)
    z0, y0, x0 = 6.3, 2.0, -7.6  # offsets from the centre, voxels
    sigma = 1.0
    angles = np.arange(-60.0, 60.1, 2.0)
    u = np.arange(shape[2]) - cx
    yy = np.arange(shape[1]) - cy
    stack = np.empty((len(angles), shape[1], shape[2]), np.float32)
    for i, theta in enumerate(np.deg2rad(angles)):
        uc = x0 * np.cos(theta) - z0 * np.sin(theta)
        stack[i] = 2 * np.pi * sigma**2 * np.exp(-((u[None] - uc) ** 2 + (yy[:, None] - y0) ** 2) / (2 * sigma**2))
    rec = reconstruct.reconstruct_halves(stack, angles, thickness=shape[0])["full"]
    peak = np.unravel_index(np.argmax(rec), rec.shape)
    # centroid of the positive values in a small box about the maximum
    sl = tuple(slice(p - 3, p + 4) for p in peak)
    box = np.clip(rec[sl], 0, None).astype(np.float64)
    grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij")
    found = np.array([(g * box).sum() / box.sum() for g in grids])
    expected = np.array([cz + z0, cy + y0, cx + x0])
    assert np.abs(found - expected).max() < 0.2, (found, expected)
    # the mirror image would sit 2·z0 away in z
    assert abs(found[0] - (cz - z0)) > 10


def _ctf_series(phantom, rng, pixel=10.0):
    """Noisy projections of ``phantom`` through a 4 µm-underfocus CTF with the tilted-image defocus
    gradient (the simulator's image formation), and the per-tilt CTF rows."""
    from cryorestore import ctf
    from cryorestore.simulate import realistic

    clean = projection.project(phantom, ANGLES).astype(np.float64)
    rows = [ctf.TiltCTF(40000.0 + 500 * np.sin(i), 39800.0 + 500 * np.sin(i), 20.0) for i in range(len(ANGLES))]
    opt = ctf.Optics()
    blurred = np.stack([realistic.expected_contrast(p, a, pixel, c, opt, 0.0, 0.0, strip=8)
                        for p, a, c in zip(clean, ANGLES, rows)])
    noisy = blurred + rng.normal(scale=0.3 * blurred.std(), size=blurred.shape)
    return noisy.astype(np.float32), rows


def test_cli_reconstruct_ctf_beats_no_ctf(tmp_path, rng, cli):
    """Phase flipping with the CTF file raises the FSC against the truth over the CTF's band."""
    from cryorestore import ctf

    v = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 0.8)
    z, _, x = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in SHAPE], indexing="ij")
    phantom = (v * np.exp(-(z**2 + x**2) / (2 * 7.0**2))).astype(np.float32)
    # 5 Å pixels: at 4 µm underfocus the CTF changes sign from 0.18 cycles/pixel on
    stack, rows = _ctf_series(phantom, rng, pixel=5.0)
    ts = io.write_mrc(tmp_path / "ts.mrc", stack, 5.0)
    tlt = io.write_tlt(tmp_path / "ts.tlt", ANGLES)
    ctf_file = ctf.write_ctffind(tmp_path / "ctf.txt", rows, 5.0)
    common = ["--angles", tlt, "--thickness", SHAPE[0], "--device", "cpu"]
    assert cli_main(["reconstruct", str(ts), *map(str, common), "--out-dir", str(tmp_path / "raw")]) == 0
    assert cli_main(["reconstruct", str(ts), *map(str, common), "--out-dir", str(tmp_path / "ctf"),
                     "--ctf", str(ctf_file)]) == 0
    freqs = fourier.shell_frequencies(SHAPE)
    band = (freqs > 0.15) & (freqs < 0.45)
    curves = {k: fourier.fsc(torch.from_numpy(io.read_mrc(tmp_path / k / "full.mrc").data),
                             torch.from_numpy(phantom)).numpy() for k in ("raw", "ctf")}
    assert curves["ctf"][band].mean() > curves["raw"][band].mean() + 0.2, curves
    assert curves["ctf"][band].min() > 0.3


def test_cli_reconstruct_bad_ctf_files(tmp_path, rng, capsys):
    stack = rng.standard_normal((6, 8, 32)).astype(np.float32)
    ts = io.write_mrc(tmp_path / "ts.mrc", stack, 10.0)
    tlt = io.write_tlt(tmp_path / "ts.tlt", np.linspace(-50, 50, 6))
    row = "1 30000 29000 10 0 0.1 20\n"
    cases = {
        "count.txt": ("# hdr\n" + row * 5, "has 5 CTF rows but the tilt series has 6"),
        "text.txt": ("# hdr\n" + row * 5 + "1 30000 x 10 0 0.1 20\n", "not numeric"),
        "neg.txt": ("# hdr\n" + row * 5 + "1 -30000 29000 10 0 0.1 20\n", "negative defocus"),
    }
    out = tmp_path / "out"
    for name, (body, match) in cases.items():
        (tmp_path / name).write_text(body)
        rc = cli_main(["reconstruct", str(ts), "--angles", str(tlt), "--out-dir", str(out), "--ctf", str(tmp_path / name)])
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1 and match in lines[0], (name, lines)
        assert not out.exists()
