"""PNG figures (matplotlib, Agg backend): orthoslices, Fourier log-magnitude slices, FSC, PR curves,
score histograms, training loss curves. Every function writes one PNG atomically and returns its path.

Maps are (z, y, x); the XY slice is the central z plane, XZ the central y plane (z vertical), YZ the
central x plane. Fourier slices show ``log(1 + |F|)`` of the fftshifted spectrum through the origin;
the missing wedge appears as two empty sectors in the XZ (kx, kz) slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cryorestore import io  # noqa: E402


def _save(fig, path: io.PathLike) -> Path:
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _central(vol: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y, x = (n // 2 for n in vol.shape)
    return vol[z], vol[:, y, :], vol[:, :, x]


def _limits(a: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(a, [1, 99])
    return (float(lo), float(hi)) if hi > lo else (float(a.min()), float(a.max()) + 1e-12)


def orthoslices(maps: Mapping[str, np.ndarray], path: io.PathLike, title: str | None = None) -> Path:
    """Central XY, XZ, YZ slices of each map, one row per map (grey levels from its 1–99th percentile; for
    maps above :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels, the percentiles of the three slices)."""
    names = list(maps)
    fig, axes = plt.subplots(len(names), 3, figsize=(11, 2.8 * len(names)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 0.6]})
    from cryorestore import blockwise

    for r, name in enumerate(names):
        if blockwise.is_large(np.shape(maps[name])):  # large maps: the three slices only, read by slabs
            slices = blockwise.central_slices(maps[name])
            vmin, vmax = _limits(np.concatenate([s.ravel() for s in slices]))
        else:
            vol = np.asarray(maps[name], dtype=np.float32)
            vmin, vmax = _limits(vol)
            slices = _central(vol)
        for c, (img, lab) in enumerate(zip(slices, ("XY", "XZ", "YZ"))):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
            ax.set_title(f"{name} {lab}", fontsize=9)
            ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def fourier_slices(maps: Mapping[str, np.ndarray], path: io.PathLike) -> Path:
    """log(1 + |F|) central slices (fftshifted): XY (kz = 0), XZ (ky = 0: the wedge), YZ (kx = 0)."""
    names = list(maps)
    fig, axes = plt.subplots(len(names), 3, figsize=(10, 3.2 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        spec = np.log1p(np.abs(np.fft.fftshift(np.fft.fftn(np.asarray(maps[name], dtype=np.float64)))))
        for c, (img, lab) in enumerate(zip(_central(spec), ("kx-ky", "kx-kz", "ky-kz"))):
            ax = axes[r, c]
            ax.imshow(img, cmap="viridis", origin="lower", aspect="auto", vmin=float(np.percentile(img, 1)),
                      vmax=float(np.percentile(img, 99.9)))
            ax.set_title(f"{name} {lab}", fontsize=9)
            ax.axis("off")
    return _save(fig, path)


def fsc_plot(frequencies: Sequence[float], curves: Mapping[str, Sequence[float]], path: io.PathLike,
             voxel_size: float | None = None, title: str = "Fourier shell correlation") -> Path:
    """FSC curves over frequency (cycles/voxel) with the 0.5 and 0.143 thresholds."""
    fig, ax = plt.subplots(figsize=(6, 4))
    f = np.asarray(frequencies, dtype=float)
    for name, c in curves.items():
        ax.plot(f, np.asarray(c, dtype=float), label=name)
    for t in (0.5, 0.143):
        ax.axhline(t, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("spatial frequency (cycles/voxel)" + (f"; voxel {voxel_size:g} Å" if voxel_size else ""))
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlim(0, 0.5)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def pr_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: io.PathLike,
            title: str = "Template matching: precision-recall") -> Path:
    """Precision (y) over recall (x), one step curve per name: ``{name: (recall, precision)}``."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, (rec, prec) in curves.items():
        ax.step(np.concatenate([[0.0], np.asarray(rec, float)]), np.concatenate([[1.0], np.asarray(prec, float)]),
                where="post", label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def score_histogram(scores: Mapping[str, Sequence[float]], path: io.PathLike,
                    title: str = "Peak scores (NCC)") -> Path:
    """Histograms of peak scores, one per name (true/false positives, raw/restored, …)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, s in scores.items():
        arr = np.asarray(s, dtype=float)
        if arr.size:
            ax.hist(arr, bins=30, alpha=0.6, label=f"{name} (n={arr.size})")
    ax.set_xlabel("score")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def f1_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: io.PathLike) -> Path:
    """F1 over score threshold: ``{name: (thresholds, f1)}``."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, (thr, f1) in curves.items():
        ax.plot(np.asarray(thr, float), np.asarray(f1, float), label=name)
    ax.set_xlabel("score threshold")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _draw_losses(ax, name: str, hist: Sequence[Mapping[str, Any]], colour: str) -> None:
    steps = np.array([h.get("step", h["epoch"] + 1) for h in hist], dtype=float)
    ax.plot(steps, [h["train_loss"] for h in hist], color=colour, ls="--", lw=1, label=f"{name} training")
    val = np.array([h["val_loss"] for h in hist], dtype=float)
    ax.plot(steps, val, color=colour, lw=1.5, label=f"{name} held-out")
    refill = np.array([bool(h.get("refilled", False)) for h in hist])
    if refill.any():
        ax.plot(steps[refill], val[refill], "o", color=colour, ms=3, label=f"{name} refilled after")
    ax.set_xlabel("optimiser steps")
    ax.set_ylabel("loss")


def loss_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: io.PathLike,
                title: str = "Training and held-out loss", panels: bool = False) -> Path:
    """Loss over optimiser steps, one colour per run: ``{name: history}`` with a history as
    :class:`cryorestore.train.TrainResult` keeps it (``step``, ``train_loss``, ``val_loss``, ``refilled``).

    Training loss dashed, held-out (validation) loss solid; epochs after which a wedge method refilled its
    boxes are marked with a dot on the held-out curve (its training targets change there, the held-out ones
    do not). ``panels``: one panel per run, for runs whose losses are on different scales (different
    methods); otherwise all runs share one axis."""
    n = len(histories) if panels else 1
    fig, axes = plt.subplots(1, n, figsize=(6.5 if n == 1 else 4.2 * n, 4 if n == 1 else 3.4), squeeze=False)
    for i, (name, hist) in enumerate(histories.items()):
        ax = axes[0, i if panels else 0]
        _draw_losses(ax, name, hist, f"C{i % 10}")
        ax.set_title(name if panels else title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def truthfree_plot(frequencies: Sequence[float], half_fsc: Sequence[float], bound: Sequence[float],
                   cross: Mapping[str, Sequence[float]], removed: Mapping[str, Sequence[float]],
                   path: io.PathLike, nosignal: Sequence[int] = ()) -> Path:
    """The truth-free score's curves (:mod:`cryorestore.evaluate.truthfree`): left, each map's cross-FSC
    against the other half with the half maps' FSC and the bound ``sqrt(FSC)`` no map of one half can pass;
    right, the correlation of the removed part with the other half (0 where only noise was removed).
    No-signal shells are shaded."""
    f = np.asarray(frequencies, dtype=float)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    step = f[1] - f[0] if len(f) > 1 else 0.01
    for k in nosignal:
        for ax in (a1, a2):
            ax.axvspan(f[k] - step / 2, f[k] + step / 2, color="0.92", lw=0)
    a1.plot(f, np.asarray(half_fsc, dtype=float), color="k", lw=1.5, label="half maps (FSC)")
    a1.plot(f, np.asarray(bound, dtype=float), color="k", lw=1, ls=":", label="bound sqrt(FSC)")
    for name, c in cross.items():
        if name != "raw":
            a1.plot(f, np.asarray(c, dtype=float), label=name)
    a1.set_ylim(-0.1, 1.05)
    a1.set_title("cross-FSC of each half's map against the other half")
    for name, c in removed.items():
        if name != "raw":
            a2.plot(f, np.asarray(c, dtype=float), label=name)
    a2.axhline(0.0, color="grey", lw=0.8)
    a2.set_title("removed part (half − map) vs the other half")
    for ax in (a1, a2):
        ax.set_xlim(0, 0.5)
        ax.set_xlabel("spatial frequency (cycles/voxel); grey: no-signal shells")
        ax.legend(fontsize=8)
    return _save(fig, path)
