"""CTF model, CTFFIND4 files, strip-wise filtering of tilted images, phase flipping, exposure filter, Wiener."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryorestore import ctf
from cryorestore.cli import main as cli_main
from cryorestore.errors import InputError

OPT = ctf.Optics()


def reference_transfer(qy, qx, d1, d2, az_deg, phase, kv=300.0, cs_mm=2.7, ac=0.07):
    """Independent float64 formula (CTFFIND4 paper): CTF = −sin(χ), the density-like transfer is −CTF."""
    v = kv * 1e3
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    lam = h / math.sqrt(2 * m0 * e * v * (1 + e * v / (2 * m0 * c**2))) * 1e10  # Å
    ang = np.arctan2(qy, qx)
    df = 0.5 * (d1 + d2 + (d1 - d2) * np.cos(2 * (ang - np.deg2rad(az_deg))))
    q2 = qx**2 + qy**2
    w = math.atan(ac / math.sqrt(1 - ac**2))
    chi_ = np.pi * lam * df * q2 - np.pi / 2 * cs_mm * 1e7 * lam**3 * q2**2 + phase + w
    return -(-np.sin(chi_))


def test_wavelength_and_transfer_match_reference(rng):
    assert ctf.electron_wavelength(300) == pytest.approx(0.019687, rel=1e-4)
    assert ctf.electron_wavelength(200) == pytest.approx(0.025079, rel=1e-4)
    qy = rng.uniform(-0.1, 0.1, size=(50, 1))
    qx = rng.uniform(-0.1, 0.1, size=(1, 40))
    for _ in range(3):
        d1, d2 = rng.uniform(5000, 50000, 2)
        az, ph = rng.uniform(0, 180), rng.uniform(0, 1)
        got = ctf.transfer(qy, qx, ctf.TiltCTF(d1, d2, az, ph), OPT)
        # χ reaches ~30 rad at 0.1 Å⁻¹; the 8-digit wavelength constant leaves ~1e-4 of it
        assert np.allclose(got, reference_transfer(qy, qx, d1, d2, az, ph), atol=3e-4)
    # the density-like image keeps the amplitude contrast at q = 0 (bright particles)
    assert ctf.transfer(np.zeros((1, 1)), np.zeros((1, 1)), ctf.TiltCTF(40000, 40000), OPT)[0, 0] == pytest.approx(0.07, abs=1e-9)


def test_exposure_filter_is_mean_of_exponential_and_matches_grant_grigorieff():
    q = np.array([0.0, 0.01, 0.05, 0.1])
    ne = ctf.critical_exposure(q)
    assert np.isinf(ne[0]) and ne[2] == pytest.approx(0.245 * 0.05**-1.665 + 2.81)
    got = ctf.exposure_filter(q, 30.0, 3.0)
    n = np.linspace(30.0, 33.0, 20001)
    with np.errstate(divide="ignore"):
        ref = np.exp(-n[None, :] / (2 * ne[:, None])).mean(axis=1)
    assert np.allclose(got, ref, atol=1e-6)
    assert got[0] == 1.0 and np.all(np.diff(got) < 0)
    assert np.allclose(ctf.critical_exposure(q[1:], 200.0), 0.8 * ne[1:])


def test_filter_tilt_follows_the_defocus_gradient(rng):
    """Each column sees the defocus Δf + u · pixel · tan θ (u from the centre): compare with filtering
    the whole image at one column's defocus, away from the strip blending."""
    img = rng.standard_normal((32, 129))  # 129 columns: strip centres fall on whole columns 0, 8, …, 128
    pix, theta, base = 10.0, 50.0, ctf.TiltCTF(40000, 40000)

    def t_filter(qy, qx, off):
        return ctf.transfer(qy, qx, base, OPT, off)

    got = ctf.filter_tilt(img, theta, pix, base, OPT, t_filter, strip=8)
    centres = ctf.strip_centres(129, 8)
    assert np.allclose(centres, np.arange(0, 129, 8))
    slope = pix * math.tan(math.radians(theta))
    qy, qx = ctf.frequencies_2d(img.shape, pix)
    for c in centres[[1, 5, 10, -2]]:
        col = int(round(c))
        whole = np.fft.irfft2(np.fft.rfft2(img) * t_filter(qy, qx, (c - 64.0) * slope), s=img.shape)
        assert np.allclose(got[:, col], whole[:, col], atol=1e-9)
    # untilted: one plain filter
    flat = ctf.filter_tilt(img, 0.0, pix, base, OPT, t_filter)
    assert np.allclose(flat, np.fft.irfft2(np.fft.rfft2(img) * t_filter(qy, qx, 0.0), s=img.shape))


def test_phase_flip_makes_transfer_positive(rng):
    """Flipping an image filtered by T gives one filtered by |T| (untilted, so exact)."""
    img = rng.standard_normal((47, 47))  # odd: no Nyquist plane, where an astigmatic T is not Hermitian
    c = ctf.TiltCTF(30000, 29000, 30.0)
    qy, qx = ctf.frequencies_2d(img.shape, 8.0)
    t = ctf.transfer(qy, qx, c, OPT)
    blurred = np.fft.irfft2(np.fft.rfft2(img) * t, s=img.shape)
    flipped = ctf.phase_flip(blurred[None], [0.0], [c], 8.0)[0]
    assert np.allclose(flipped, np.fft.irfft2(np.fft.rfft2(img) * np.abs(t), s=img.shape), atol=1e-5)
    with pytest.raises(InputError, match="one of each"):
        ctf.phase_flip(blurred[None], [0.0, 1.0], [c], 8.0)


def test_ctffind_round_trip_and_bad_files(tmp_path):
    rows = [ctf.TiltCTF(30000 + i, 29500 + i, 12.5, 0.0, 0.1, 20.0) for i in range(5)]
    p = ctf.write_ctffind(tmp_path / "ctf.txt", rows, 10.0)
    text = p.read_text()
    assert text.startswith("#") and len([l for l in text.splitlines() if not l.startswith("#")]) == 5
    back = ctf.read_ctffind(p, n_expected=5)
    assert [(r.defocus1, r.defocus2, r.azimuth) for r in back] == [(r.defocus1, r.defocus2, r.azimuth) for r in rows]
    cases = {
        "count": ("1 30000 30000 0 0 0 0\n", "has 1 CTF rows but the tilt series has 5"),
        "text": ("1 30000 abc 0 0 0 0\n" * 5, "not numeric"),
        "negative": ("1 -30000 30000 0 0 0 0\n" * 5, "negative defocus"),
        "short": ("1 30000 30000\n" * 5, "needs 7 numbers"),
        "nan": ("1 nan 30000 0 0 0 0\n" * 5, "NaN"),
        "empty": ("# only comments\n", "no CTF rows"),
    }
    for name, (body, match) in cases.items():
        f = tmp_path / f"{name}.txt"
        f.write_text("# comment\n" + body)
        with pytest.raises(InputError, match=match):
            ctf.read_ctffind(f, n_expected=5)
    with pytest.raises(InputError, match="does not exist"):
        ctf.read_ctffind(tmp_path / "missing.txt")


def test_wiener_filter_inverts_transfer_where_snr_is_high():
    q = np.linspace(0.0, 0.05, 200)
    w = ctf.wiener_filter_1d(q, 40000.0, OPT, snr_falloff=0.1, strength=3.0, highpass=0.005)
    t = ctf.transfer_1d(q, 40000.0, OPT)
    ok = (np.abs(t) > 0.3) & (q > 0.005)
    assert np.allclose(w[ok] * t[ok], 1.0, atol=0.01)
    assert w[0] == 0.0  # the high-pass removes the mean
    flipped = ctf.wiener_filter_1d(q, 40000.0, OPT, phase_flipped=True)
    assert np.all(flipped >= 0)
    with pytest.raises(InputError, match="defocus"):
        ctf.wiener_filter_1d(q, -1.0, OPT)


def test_cli_deconv(tmp_path, rng, capsys):
    from cryorestore import io

    vol = rng.standard_normal((16, 20, 24)).astype(np.float32)
    src = io.write_mrc(tmp_path / "t.mrc", vol, 10.0)
    out = tmp_path / "d.mrc"
    assert cli_main(["deconv", str(src), "--defocus", "40000", "--out", str(out)]) == 0
    got = io.read_mrc(out)
    ref = ctf.wiener_deconvolve(vol, 10.0, 40000.0)
    assert got.voxel_size == pytest.approx(10.0) and np.allclose(got.data, ref, atol=1e-5)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 -5 3 0 0 0 0\n")
    capsys.readouterr()
    assert cli_main(["deconv", str(src), "--ctf", str(bad), "--out", str(tmp_path / "x.mrc")]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and "negative defocus" in err[0] and not (tmp_path / "x.mrc").exists()
