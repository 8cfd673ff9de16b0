"""Contrast transfer function: model, CTFFIND4 files, strip-wise filtering of tilted images, phase
flipping, exposure (dose) filter and Wiener deconvolution of a tomogram.

Conventions
-----------
* Defocus in Å, positive = underfocus (CTFFIND4); astigmatism azimuth in degrees, the direction of
  defocus 1 measured from the image x axis toward y; phase shift in radians; voltage in kV; Cs in mm;
  spatial frequency ``q`` in cycles/Å. Images are (y, x) with the tilt axis along y.
* Phase aberration ``χ(q) = π λ Δf(φ) q² − (π/2) C_s λ³ q⁴ + φ_shift + arcsin(A)`` with
  ``Δf(φ) = ½ [Δf₁ + Δf₂ + (Δf₁ − Δf₂) cos 2(φ − φ_ast)]``, λ the relativistic electron wavelength and
  A the amplitude contrast. CTFFIND4's CTF is ``−sin χ`` (the transfer of an intensity image: dark
  particles). The package's images are **density-like** (contrast inverted, particles bright: what
  ``cryorestore simulate`` writes and what ``cryorestore reconstruct`` expects), whose transfer is
  ``T(q) = sin χ(q)`` (= A at q = 0). Phase flipping multiplies by ``sign T``.
* Handedness (IMOD, Dynamo and novaCTF; the geometry of :mod:`cryorestore.projection`): at positive
  tilt angles the right side (+x) of the tilt image is more underfocused than the left. A tilted
  image's defocus therefore varies across x as ``Δf(u) = Δf + u · pixel · tan θ`` (u in pixels from
  the image centre (U − 1) / 2); the CTFFIND4 values are those at the centre (on the tilt axis).
  :func:`filter_tilt` applies any CTF-derived filter in strips along the tilt axis with that defocus,
  blended linearly between strip centres.
* Exposure filter (Grant & Grigorieff 2015, eLife 4:e06980): the critical exposure at 300 kV is
  ``N_e(q) = 0.245 q^−1.665 + 2.81`` e/Å² (×0.8 at 200 kV, linear in between); an image recorded
  from pre-exposure N₀ to N₁ keeps the amplitude fraction ``⟨exp(−N / 2N_e)⟩`` averaged over
  N ∈ [N₀, N₁].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cryorestore import io
from cryorestore.errors import InputError

DEFAULT_VOLTAGE = 300.0  # kV
DEFAULT_CS = 2.7  # mm
DEFAULT_AMPLITUDE_CONTRAST = 0.07
#: Default strip width (pixels) along the tilt axis for the defocus gradient of tilted images.
DEFAULT_STRIP = 16
CTFFIND_COLUMNS = ("micrograph", "defocus1", "defocus2", "azimuth", "phase_shift", "cross_correlation", "fit_limit")


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an accelerating voltage in kV (0.01969 Å at 300 kV)."""
    v = float(voltage_kv) * 1e3
    return 12.2642598 / math.sqrt(v * (1.0 + 0.978475e-6 * v))


@dataclass(frozen=True)
class Optics:
    """Microscope constants: voltage (kV), spherical aberration (mm), amplitude contrast (0..1)."""

    voltage: float = DEFAULT_VOLTAGE
    cs: float = DEFAULT_CS
    amplitude_contrast: float = DEFAULT_AMPLITUDE_CONTRAST

    def __post_init__(self) -> None:
        if not (np.isfinite(self.voltage) and self.voltage > 0):
            raise InputError(f"voltage must be a positive number of kV, got {self.voltage}")
        if not (np.isfinite(self.cs) and self.cs >= 0):
            raise InputError(f"spherical aberration must be a non-negative number of mm, got {self.cs}")
        if not (np.isfinite(self.amplitude_contrast) and 0 <= self.amplitude_contrast < 1):
            raise InputError(f"amplitude contrast must lie in [0, 1), got {self.amplitude_contrast}")


@dataclass(frozen=True)
class TiltCTF:
    """One tilt's CTF estimate, as a CTFFIND4 row: defoci (Å), azimuth (°), phase shift (rad)."""

    defocus1: float
    defocus2: float
    azimuth: float = 0.0
    phase_shift: float = 0.0
    cross_correlation: float = 0.0
    fit_limit: float = 0.0

    @property
    def mean_defocus(self) -> float:
        return 0.5 * (self.defocus1 + self.defocus2)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
def frequencies_2d(shape: Sequence[int], pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(qy, qx) in cycles/Å on the rfft grid of a (Y, X) image: shapes (Y, 1) and (1, X//2 + 1)."""
    ny, nx = int(shape[0]), int(shape[1])
    return (np.fft.fftfreq(ny, d=pixel_size)[:, None], np.fft.rfftfreq(nx, d=pixel_size)[None, :])


def chi(qy: np.ndarray, qx: np.ndarray, ctf: TiltCTF, optics: Optics, defocus_offset: float = 0.0) -> np.ndarray:
    """Phase aberration χ (radians, float64) at frequencies (qy, qx) in cycles/Å (see the module docstring).

    ``defocus_offset`` (Å) is added to both defoci (the defocus gradient of a tilted image).
    """
    lam = electron_wavelength(optics.voltage)
    cs = optics.cs * 1e7  # mm → Å
    q2 = qx**2 + qy**2
    phi = np.arctan2(qy, qx)
    d1, d2 = ctf.defocus1 + defocus_offset, ctf.defocus2 + defocus_offset
    dfa = 0.5 * (d1 + d2 + (d1 - d2) * np.cos(2.0 * (phi - math.radians(ctf.azimuth))))
    amp = math.asin(optics.amplitude_contrast)
    return math.pi * lam * dfa * q2 - 0.5 * math.pi * cs * lam**3 * q2**2 + ctf.phase_shift + amp


def transfer(qy: np.ndarray, qx: np.ndarray, ctf: TiltCTF, optics: Optics, defocus_offset: float = 0.0) -> np.ndarray:
    """``T = sin χ``: the transfer of a density-like (contrast-inverted) image; CTFFIND4's CTF is −T."""
    return np.sin(chi(qy, qx, ctf, optics, defocus_offset))


def transfer_1d(q: np.ndarray, defocus: float, optics: Optics) -> np.ndarray:
    """Radially symmetric ``sin χ`` at |q| cycles/Å for one defocus (Å): no astigmatism, no phase plate."""
    return transfer(np.zeros_like(q), np.asarray(q, dtype=np.float64), TiltCTF(defocus, defocus), optics)


def critical_exposure(q: np.ndarray, voltage: float = DEFAULT_VOLTAGE) -> np.ndarray:
    """Grant & Grigorieff (2015) critical exposure N_e(q) in e/Å² (q in cycles/Å; ∞ at q = 0)."""
    scale = 0.8 + 0.2 * min(1.0, max(0.0, (float(voltage) - 200.0) / 100.0))
    with np.errstate(divide="ignore"):
        ne = (0.245 * np.power(np.abs(q), -1.665) + 2.81) * scale
    return np.where(np.abs(q) > 0, ne, np.inf)


def exposure_filter(q: np.ndarray, pre_exposure: float, exposure: float, voltage: float = DEFAULT_VOLTAGE) -> np.ndarray:
    """Mean amplitude fraction ⟨exp(−N / 2N_e(q))⟩ over N ∈ [pre_exposure, pre_exposure + exposure] (e/Å²)."""
    ne2 = 2.0 * critical_exposure(q, voltage)
    finite = np.isfinite(ne2)
    ne2 = np.where(finite, ne2, 1.0)
    n0, dn = float(pre_exposure), float(exposure)
    if dn <= 0:
        kept = np.exp(-n0 / ne2)
    else:
        kept = ne2 / dn * (np.exp(-n0 / ne2) - np.exp(-(n0 + dn) / ne2))
    return np.where(finite, kept, 1.0)


# --------------------------------------------------------------------------------------------
# tilted images: strip-wise filtering along the tilt axis
# --------------------------------------------------------------------------------------------
def strip_centres(width: int, strip: int) -> np.ndarray:
    """Strip centres (pixel indices, float) from 0 to width − 1, spaced at most ``strip`` pixels."""
    m = max(1, math.ceil((width - 1) / max(1, int(strip))))
    return np.linspace(0.0, width - 1.0, m + 1)


def filter_tilt(
    image: np.ndarray,
    angle: float,
    pixel_size: float,
    ctf: TiltCTF,
    optics: Optics,
    make_filter: Callable[[np.ndarray, np.ndarray, float], np.ndarray],
    strip: int = DEFAULT_STRIP,
) -> np.ndarray:
    """Filter one tilted (Y, X) image whose defocus varies across x (see the module docstring).

    ``make_filter(qy, qx, defocus_offset)`` returns the rfft-grid multiplier for a defocus offset (Å)
    from the centre value. The image is filtered once per strip centre (offset ``u · pixel · tan θ``)
    and the results are blended with linear (hat) weights between neighbouring centres, so the
    defocus seen by column u is interpolated between the strips; an untilted image (or one whose
    defocus changes by less than 1 Å across the width) is filtered once.
    """
    img = np.asarray(image, dtype=np.float64)
    ny, nx = img.shape
    qy, qx = frequencies_2d(img.shape, pixel_size)
    spec = np.fft.rfft2(img)
    slope = pixel_size * math.tan(math.radians(float(angle)))  # Å of defocus per pixel along x
    centre = (nx - 1) / 2.0
    if abs(slope) * nx < 1.0:
        return np.fft.irfft2(spec * make_filter(qy, qx, 0.0), s=img.shape)
    centres = strip_centres(nx, strip)
    spacing = centres[1] - centres[0]
    cols = np.arange(nx, dtype=np.float64)
    out = np.zeros_like(img)
    for c in centres:
        w = np.clip(1.0 - np.abs(cols - c) / spacing, 0.0, None)
        sel = w > 0
        filtered = np.fft.irfft2(spec * make_filter(qy, qx, (c - centre) * slope), s=img.shape)
        out[:, sel] += filtered[:, sel] * w[sel]
    return out


def phase_flip(
    stack: np.ndarray,
    angles: Sequence[float] | np.ndarray,
    ctfs: Sequence[TiltCTF],
    pixel_size: float,
    optics: Optics = Optics(),
    strip: int = DEFAULT_STRIP,
) -> np.ndarray:
    """Phase-flip every (Y, X) image of a density-like (n, Y, X) stack: multiply by ``sign T`` per strip.

    ``ctfs[i]`` and ``angles[i]`` (degrees) belong to image i. Returns float32.
    """
    s = np.asarray(stack)
    if len(ctfs) != s.shape[0] or len(angles) != s.shape[0]:
        raise InputError(f"{len(ctfs)} CTF rows and {len(angles)} angles for {s.shape[0]} images; one of each per image is needed")
    out = np.empty(s.shape, np.float32)
    for i, (img, a, c) in enumerate(zip(s, angles, ctfs)):
        def flip(qy, qx, off, c=c):
            return np.where(transfer(qy, qx, c, optics, off) >= 0, 1.0, -1.0)

        out[i] = filter_tilt(img, float(a), pixel_size, c, optics, flip, strip)
    return out


# --------------------------------------------------------------------------------------------
# Wiener deconvolution of a tomogram (as IsoNet's and Warp's deconvolution)
# --------------------------------------------------------------------------------------------
def wiener_filter_1d(q: np.ndarray, defocus: float, optics: Optics, snr_falloff: float = 1.0, strength: float = 1.0,
                     highpass: float = 0.02, phase_flipped: bool = False) -> np.ndarray:
    """Wiener filter ``T / (T² + 1/SNR)`` at |q| cycles/Å with an assumed spectral SNR.

    ``SNR(q) = 10^(3·strength) · exp(−100 · snr_falloff · q) · h(q)``, ``h`` a raised-cosine high-pass
    that rises from 0 at q = 0 to 1 at ``highpass`` cycles/Å (it keeps the mean and the lowest
    frequencies from being amplified by 1/A). ``phase_flipped``: the tomogram was reconstructed from
    phase-flipped images, so its transfer is |T|.
    """
    if not (np.isfinite(defocus) and defocus > 0):
        raise InputError(f"deconvolution needs a positive (underfocus) defocus in Å, got {defocus}")
    if not (snr_falloff > 0 and strength > 0 and highpass > 0):
        raise InputError("snr falloff, strength and high-pass frequency must be positive")
    qa = np.abs(np.asarray(q, dtype=np.float64))
    t = transfer_1d(qa, defocus, optics)
    if phase_flipped:
        t = np.abs(t)
    h = 0.5 * (1.0 - np.cos(np.pi * np.clip(qa / highpass, 0.0, 1.0)))
    snr = 10.0 ** (3.0 * strength) * np.exp(-100.0 * snr_falloff * qa) * h
    with np.errstate(divide="ignore"):
        return np.where(snr > 0, t / (t**2 + 1.0 / np.where(snr > 0, snr, 1.0)), 0.0)


def wiener_deconvolve(volume: np.ndarray, voxel_size: float, defocus: float, optics: Optics = Optics(),
                      snr_falloff: float = 1.0, strength: float = 1.0, highpass: float = 0.02,
                      phase_flipped: bool = False) -> np.ndarray:
    """Deconvolve a (Z, Y, X) tomogram with :func:`wiener_filter_1d` of its 3D radial frequency.

    ``voxel_size`` in Å, ``defocus`` in Å (the tilt series' mean). Returns float32 on the same grid;
    where the SNR is high the result is on the scale of the specimen's potential (the filter ≈ 1/T).
    """
    v = np.asarray(volume, dtype=np.float64)
    freqs = [np.fft.fftfreq(n, d=voxel_size) for n in v.shape[:2]] + [np.fft.rfftfreq(v.shape[2], d=voxel_size)]
    qz, qy, qx = np.meshgrid(*freqs, indexing="ij", sparse=True)
    q = np.sqrt(qz**2 + qy**2 + qx**2)
    w = wiener_filter_1d(q, defocus, optics, snr_falloff, strength, highpass, phase_flipped)
    return np.fft.irfftn(np.fft.rfftn(v) * w, s=v.shape, axes=(0, 1, 2)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# CTFFIND4 text files
# --------------------------------------------------------------------------------------------
def read_ctffind(path: str | Path, n_expected: int | None = None) -> list[TiltCTF]:
    """Read a CTFFIND4 (or AreTomo3) per-tilt CTF file: ``#`` comments, then 7 numbers per row.

    Rows are in stack order. Raises :class:`InputError` (one line) for a missing file, a non-numeric
    or short row, NaN, a negative defocus, or a row count other than ``n_expected``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"CTF file {p} does not exist: check the path")
    rows: list[TiltCTF] = []
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise InputError(f"{p} is not a text file; give the CTFFIND4 output (.txt)") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        fields = s.split()
        if len(fields) < 7:
            raise InputError(f"{p}:{lineno}: a CTFFIND4 row needs 7 numbers (micrograph, defocus 1, defocus 2, azimuth, "
                             f"phase shift, cross-correlation, fit limit), found {len(fields)}")
        try:
            vals = [float(f) for f in fields[:7]]
        except ValueError:
            raise InputError(f"{p}:{lineno}: '{s}' is not numeric; a CTFFIND4 row is 7 numbers") from None
        if not np.isfinite(vals).all():
            raise InputError(f"{p}:{lineno}: NaN or infinite value in a CTF row")
        if vals[1] < 0 or vals[2] < 0:
            raise InputError(f"{p}:{lineno}: negative defocus ({vals[1]:g}, {vals[2]:g} Å); CTFFIND4 defocus is underfocus in Å, > 0")
        rows.append(TiltCTF(*vals[1:7]))
    if not rows:
        raise InputError(f"{p} holds no CTF rows")
    if n_expected is not None and len(rows) != int(n_expected):
        raise InputError(f"{p} has {len(rows)} CTF rows but the tilt series has {n_expected} tilts; give one row per tilt in stack order")
    return rows


def write_ctffind(path: str | Path, ctfs: Sequence[TiltCTF], pixel_size: float, optics: Optics = Optics()) -> Path:
    """Write per-tilt CTF rows in the CTFFIND4 text format (atomically); micrograph numbers from 1."""
    lines = [
        "# Output from CTFFind version 4.1.14 format, written by cryorestore",
        f"# Pixel size: {pixel_size:.3f} Angstroms ; acceleration voltage: {optics.voltage:.1f} keV ; "
        f"spherical aberration: {optics.cs:.2f} mm ; amplitude contrast: {optics.amplitude_contrast:.2f}",
        "# Columns: #1 - micrograph number; #2 - defocus 1 [Angstroms]; #3 - defocus 2; #4 - azimuth of astigmatism; "
        "#5 - additional phase shift [radians]; #6 - cross correlation; #7 - spacing (in Angstroms) up to which CTF rings were fit successfully",
    ]
    for i, c in enumerate(ctfs, start=1):
        lines.append(f"{i:.6f} {c.defocus1:.6f} {c.defocus2:.6f} {c.azimuth:.6f} {c.phase_shift:.6f} "
                     f"{c.cross_correlation:.6f} {c.fit_limit:.6f}")
    return io.write_text(path, "\n".join(lines) + "\n")
