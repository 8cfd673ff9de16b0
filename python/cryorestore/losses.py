"""Training losses: L1, L2, the Fourier-shell-correlation loss, DeepDeWedge's masked Fourier loss,
and weighted sums of them.

All losses take a prediction and a target of shape (B, C, Z, Y, X) (or (B, Z, Y, X)), axes (z, y, x),
and return a scalar tensor. Frequencies are in cycles/voxel; shells follow :mod:`cryorestore.fourier`
(shell ``k`` at ``k / min(Z, Y, X)`` cycles/voxel, ``k = 0 … min//2``, width one frequency index).

Loss specs for :func:`build_loss`: ``l1``, ``l2``, ``fsc`` or a ``+``-joined combination with optional
weights, e.g. ``l2+fsc``, ``l2+0.5*fsc``, ``0.1*l1+fsc``. Training refuses ``fsc`` alone
(:func:`check_training_loss`): the FSC does not see a shell's amplitude, so it could drift.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import torch
from torch import nn

from cryorestore import fourier
from cryorestore.errors import InputError

LOSS_NAMES = ("l1", "l2", "fsc")
FSC_WEIGHTINGS = (None, "shell", "frequency")

# Added to each shell's power sums before normalising: it keeps FSC = 0 with a finite gradient on a
# shell with exactly zero power (sqrt'(0) would otherwise give inf·0 = NaN through torch.where) and is
# far below any real shell power of a float32 volume, so FSC values are unchanged.
_POWER_EPS = 1e-20


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim < 3:
        raise ValueError(f"expected (…, Z, Y, X) volumes, got shape {tuple(pred.shape)}")


def _full(t: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors (e.g. a network output under autocast) to float32: FFTs and shell
    sums need at least single precision."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class L1Loss(nn.Module):
    """Mean absolute difference over all voxels and batch items."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(pred, target)
        return (_full(pred) - _full(target)).abs().mean()


class L2Loss(nn.Module):
    """Mean squared difference over all voxels and batch items."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(pred, target)
        return (_full(pred) - _full(target)).square().mean()


def shell_weights(shape: tuple[int, int, int], weighting: str | None, device: torch.device | None = None) -> torch.Tensor:
    """Normalised (sum 1) float64 weights of shells 1 … Nyquist (cached); see :func:`_shell_weights`."""
    if weighting not in FSC_WEIGHTINGS:
        raise InputError(f"FSC weighting '{weighting}' is unknown; choose one of none, shell, frequency")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _shell_weights(tuple(int(n) for n in shape), weighting, str(dev))


@functools.lru_cache(maxsize=32)
def _shell_weights(shape: tuple[int, int, int], weighting: str | None, device: str) -> torch.Tensor:
    """Normalised (sum 1) float64 weights of shells 1 … Nyquist for a (Z, Y, X) volume.

    * ``None``: equal weights (plain mean over shells),
    * ``'shell'``: proportional to the number of Fourier coefficients in each shell (full grid), so
      the loss is the coefficient-weighted mean and high-frequency shells count more,
    * ``'frequency'``: proportional to the shell frequency k/min(shape) (cycles/voxel).

    Shell 0 (the mean) is not included; see :class:`FSCLoss`.
    """
    n = fourier.n_shells(shape)
    if weighting is None:
        w = torch.ones(n - 1, dtype=torch.float64, device=device)
    elif weighting == "shell":
        idx = fourier.shell_index(shape, rfft=True, device=device)
        mult = fourier.rfft_weights(shape, device=device).expand(idx.shape)
        counts = torch.zeros(n + 1, dtype=torch.float64, device=idx.device)
        counts.scatter_add_(0, idx.reshape(-1), mult.reshape(-1))
        w = counts[1:n]
    else:
        w = torch.arange(1, n, dtype=torch.float64, device=device)
    return w / w.sum()


def fsc_curves(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Differentiable FSC curves (B·C, n_shells) in float64 between each pair of (…, Z, Y, X) volumes.

    Spectra via ``torch.fft.rfftn``, shell sums via :func:`cryorestore.native.fsc_shells` (or its
    torch twin), curves via :func:`cryorestore.fourier.fsc_from_sums`.
    """
    from cryorestore import native

    _check_pair(pred, target)
    shape = tuple(int(s) for s in pred.shape[-3:])
    a = _full(pred).reshape(-1, *shape)
    b = _full(target).reshape(-1, *shape)
    fa = torch.fft.rfftn(a, dim=(-3, -2, -1))
    fb = torch.fft.rfftn(b, dim=(-3, -2, -1))
    n = fourier.n_shells(shape)
    idx = fourier.shell_index(shape, rfft=True, device=fa.device)
    sums = native.fsc_shells(fa, fb, idx, n, nx=shape[2])
    eps = torch.tensor([0.0, _POWER_EPS, _POWER_EPS], dtype=sums.dtype, device=sums.device).view(1, 3, 1)
    return fourier.fsc_from_sums(sums + eps)


class FSCLoss(nn.Module):
    """1 − (weighted) mean FSC over shells 1 … Nyquist between prediction and target.

    The FSC is computed per batch item (and channel) and the loss is averaged over them. Shell 0 is
    left out: it holds the single DC coefficient, whose "correlation" is just the sign of the product
    of the two means (±1, or undefined for zero-mean normalised volumes), so it carries no
    information about the restoration and its gradient is ill-conditioned. ``weighting``: see
    :func:`shell_weights` (``None`` = plain mean over shells, as in the paper's quadrature).
    The result is float64 on the prediction's device.
    """

    def __init__(self, weighting: str | None = None) -> None:
        super().__init__()
        if isinstance(weighting, str) and weighting.lower() == "none":
            weighting = None
        if weighting not in FSC_WEIGHTINGS:
            raise InputError(f"FSC weighting '{weighting}' is unknown; choose one of none, shell, frequency")
        self.weighting = weighting

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        curves = fsc_curves(pred, target)  # (N, n_shells)
        shape = tuple(int(s) for s in pred.shape[-3:])
        w = shell_weights(shape, self.weighting, device=curves.device)  # type: ignore[arg-type]
        score = (curves[:, 1:] * w).sum(dim=1).mean()
        return (1.0 - score).to(pred.dtype if pred.dtype == torch.float64 else torch.float32)

    def extra_repr(self) -> str:
        return f"weighting={self.weighting!r}"


class CombinedLoss(nn.Module):
    """Weighted sum Σ wᵢ · lossᵢ(pred, target)."""

    def __init__(self, terms: list[tuple[float, str, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a combined loss needs at least one term")
        self.weights = [float(w) for w, _, _ in terms]
        self.names = [name for _, name, _ in terms]
        self.terms = nn.ModuleList([m for _, _, m in terms])

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for w, m in zip(self.weights, self.terms):
            v = w * m(pred, target)
            total = v if total is None else total + v
        assert total is not None
        return total

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}*{n}" for w, n in zip(self.weights, self.names))


_TERM = re.compile(r"^\s*(?:(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[A-Za-z0-9_]+)\s*$")


def parse_loss_spec(spec: str) -> list[tuple[float, str]]:
    """Split ``'l2+0.5*fsc'`` into ``[(1.0, 'l2'), (0.5, 'fsc')]``; raise InputError on bad specs."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"loss spec {spec!r} is empty; use one of {', '.join(LOSS_NAMES)} or e.g. l2+0.5*fsc")
    out: list[tuple[float, str]] = []
    for part in spec.split("+"):
        m = _TERM.match(part)
        if m is None:
            raise InputError(f"loss term '{part.strip()}' in '{spec}' is not NAME or WEIGHT*NAME (e.g. 0.5*fsc)")
        name = m.group("name").lower()
        if name not in LOSS_NAMES:
            raise InputError(f"loss '{name}' in '{spec}' is unknown; choose from {', '.join(LOSS_NAMES)}")
        w = 1.0 if m.group("w") is None else float(m.group("w"))
        if not math.isfinite(w) or w <= 0:
            raise InputError(f"loss weight {w:g} in '{spec}' must be a positive number")
        out.append((w, name))
    return out


def build_loss(spec: str, **options: Any) -> nn.Module:
    """Build a loss module from a spec (``l1``, ``l2``, ``fsc``, ``l2+0.5*fsc``, …).

    ``options``: ``weighting`` (for ``fsc``: ``None``/``'none'``, ``'shell'``, ``'frequency'``).
    A single unweighted term returns that loss itself; anything else a :class:`CombinedLoss`.
    ``forward(pred, target)`` returns a scalar.
    """
    known = {"weighting"}
    bad = sorted(set(options) - known)
    if bad:
        raise InputError(f"unknown loss option(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    terms = parse_loss_spec(spec)

    def make(name: str) -> nn.Module:
        if name == "l1":
            return L1Loss()
        if name == "l2":
            return L2Loss()
        return FSCLoss(weighting=options.get("weighting"))

    if len(terms) == 1 and terms[0][0] == 1.0:
        return make(terms[0][1])
    return CombinedLoss([(w, name, make(name)) for w, name in terms])


def check_training_loss(spec: str) -> None:
    """Raise InputError for a spec that cannot train a network: bad syntax, or FSC terms only.

    The FSC is invariant to scaling each shell of the prediction, so ``fsc`` alone (or ``2*fsc``)
    leaves every shell's amplitude free to drift; combined with a voxel loss (``l2+fsc``, as the
    benchmark uses) the amplitudes are pinned.
    """
    names = {name for _, name in parse_loss_spec(spec)}
    if names == {"fsc"}:
        raise InputError(f"--loss {spec} alone leaves each shell's amplitude free (the FSC ignores scale); "
                         "use l2+fsc")


def build_training_loss(spec: str, **options: Any) -> nn.Module:
    """:func:`build_loss` for training: refuses specs :func:`check_training_loss` rejects."""
    check_training_loss(spec)
    return build_loss(spec, **options)


# --------------------------------------------------------------------------------------------
# DeepDeWedge's masked Fourier loss
# --------------------------------------------------------------------------------------------
def masked_power_mean(residual_spectrum: torch.Tensor, mask: torch.Tensor, nx: int) -> torch.Tensor:
    """Real-space mean of |F⁻¹(mask · R)|² computed in Fourier space by Parseval.

    ``residual_spectrum`` R: rfft spectra (…, Z, Y, X//2+1) of real volumes with x size ``nx``;
    ``mask`` broadcastable to it. Σₓ|F⁻¹(A)(x)|² = (1/N) Σₖ |A(k)|² over the full grid, and the rfft
    grid counts each plane with its multiplicity (:func:`cryorestore.fourier.rfft_weights`), so the
    mean over N voxels (and over all leading axes) is Σₖ w_k |mask·R|² / N², averaged over items.
    """
    z, y, xr = (int(s) for s in residual_spectrum.shape[-3:])
    if nx // 2 + 1 != xr:
        raise ValueError(f"nx={nx} does not match an rfft grid with {xr} x-planes")
    n_vox = z * y * nx
    w = fourier.rfft_weights((z, y, nx), device=residual_spectrum.device).to(residual_spectrum.real.dtype)
    power = residual_spectrum.real.square() + residual_spectrum.imag.square()
    total = (power * mask.to(power.dtype).square() * w).sum(dim=(-3, -2, -1))
    return (total / float(n_vox) ** 2).mean()


def masked_fourier_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    rot_wedge: torch.Tensor,
    wedge: torch.Tensor,
    weight_inside: float = 1.0,
    weight_missing: float = 2.0,
) -> torch.Tensor:
    """DeepDeWedge's masked loss (Wiedemann & Heckel 2024) on (B, 1, Z, Y, X) volumes.

    With the residual r = pred − target, M = ``wedge`` (the input's missing-wedge mask, 1 = measured)
    and R(M) = ``rot_wedge`` (the target's rotated wedge), both float rfft-grid masks broadcastable to
    (B, 1, Z, Y, X//2+1)::

        loss = weight_inside  · mean |F⁻¹(R(M) · M · F(r))|²
             + weight_missing · mean |F⁻¹(R(M) · (1 − M) · F(r))|²

    (means over voxels and batch). The first term fits the coefficients both half sets measured, the
    second teaches the network to fill the input's missing wedge from coefficients the target has;
    coefficients outside R(M) never count. Evaluated by Parseval on the rfft grid: no inverse FFT.
    """
    _check_pair(pred, target)
    if weight_inside < 0 or weight_missing < 0:
        raise ValueError(f"loss weights must be >= 0, got {weight_inside}, {weight_missing}")
    nx = int(pred.shape[-1])
    spec = torch.fft.rfftn(_full(pred) - _full(target), dim=(-3, -2, -1))
    rw = rot_wedge.to(device=spec.device, dtype=spec.real.dtype)
    m = wedge.to(device=spec.device, dtype=spec.real.dtype)
    inside = masked_power_mean(spec, rw * m, nx)
    missing = masked_power_mean(spec, rw * (1.0 - m), nx)
    return weight_inside * inside + weight_missing * missing
