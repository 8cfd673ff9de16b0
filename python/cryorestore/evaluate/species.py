"""Per-species template matching and subtomogram averaging of one map against the true particle list.

The particle list (RELION STAR, :func:`cryorestore.io.read_particles`) names each particle's species in
the string column :data:`SPECIES_COLUMN`; a list without that column is one species called
:data:`DEFAULT_SPECIES`. Each species has its own template (``template_<species>.mrc`` next to the
particle list, box³ voxels at the tomogram's voxel size; ``template.mrc`` serves a list with one
species when no ``template_<species>.mrc`` exists).

Both measurements treat every map alike (raw, baselines, restored): the same wedge compensation
(``tilt_range``: the template is wedge-filtered in matching, the average is wedge-compensated in STA),
the same angular search, the same half split (seeded), and the map's contrast is first multiplied by
``sign`` (:func:`cryorestore.evaluate.quality.truth_sign`; pass −1 for a map whose dense matter is dark,
as in a phase-contrast tomogram, since the templates are positive density).

Matching: :func:`matching.match_template` over :func:`angles.uniform_eulers` of the given step, then
``3 × n_true`` peaks (non-maximum suppression at the mask radius) scored by :func:`pr.precision_recall`
against that species' true positions (tolerance half the mask radius): peaks on other species count as
false positives. Averaging: :func:`averaging.subtomogram_average` at the true poses; the resolution is
where the masked half-map FSC drops below 0.143 (two half maps), and the FSC of the full average against
the template (a known reference) is read at 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryorestore import io
from cryorestore.errors import InputError
from cryorestore.evaluate import angles, averaging, matching, pr

SPECIES_COLUMN = "cryorestoreSpecies"
DEFAULT_SPECIES = "all"


def species_labels(particles: pd.DataFrame) -> np.ndarray:
    """Species name per particle (str array); :data:`DEFAULT_SPECIES` when the column is missing."""
    if SPECIES_COLUMN not in particles.columns:
        return np.full(len(particles), DEFAULT_SPECIES, dtype=object)
    return particles[SPECIES_COLUMN].astype(str).to_numpy(dtype=object)


def species_names(particles: pd.DataFrame) -> list[str]:
    """The species of a particle list in order of first appearance."""
    return list(dict.fromkeys(species_labels(particles).tolist()))


def load_templates(particles: pd.DataFrame, folder: str | Path, fallback: str | Path | None = None) -> dict[str, np.ndarray]:
    """``{species: template}`` from ``folder/template_<species>.mrc``; with one species, ``fallback``
    (default ``folder/template.mrc``) when that file is missing."""
    d = Path(folder)
    names = species_names(particles)
    out = {}
    for s in names:
        p = d / f"template_{s}.mrc"
        if not p.is_file() and len(names) == 1:
            p = Path(fallback) if fallback is not None else d / "template.mrc"
        if not p.is_file():
            raise InputError(f"no template for species '{s}': expected {d / f'template_{s}.mrc'}")
        out[s] = io.read_mrc(p).data
    return out


def species_match(volume: np.ndarray, template: np.ndarray, true_zyx: np.ndarray, eulers: np.ndarray,
                  tilt_range: tuple[float, float] | None = None, sign: float = 1.0,
                  device: torch.device | str = "cpu", progress: bool = False) -> pr.PRResult:
    """Template-match ``sign · volume`` with one species' template and score the peaks against its
    ``true_zyx`` positions (module doc)."""
    matching.check_template(template, tuple(volume.shape))
    res = matching.match_template(sign * np.asarray(volume, dtype=np.float32), template, eulers,
                                  tilt_range=tilt_range, device=device, progress=progress)
    peaks, scores = matching.find_peaks(res.scores, 3 * len(true_zyx), res.mask_radius)
    return pr.precision_recall(peaks, scores, true_zyx, res.mask_radius / 2)


def species_metrics(volume: np.ndarray, particles: pd.DataFrame, templates: dict[str, np.ndarray],
                    voxel_size: float, tilt_range: tuple[float, float] | None = None, sign: float = 1.0,
                    match_step: float | None = None, seed: int = 0, device: torch.device | str = "cpu",
                    progress: bool = False, pr_curves: dict | None = None) -> dict[str, dict[str, float]]:
    """``{species: figures}`` for one map: ``n_particles``; with two or more particles the STA figures
    ``sta_half_fsc0143`` (cycles/voxel, ``…_angstrom`` in Å), ``sta_half_fsc05`` and ``sta_ref_fsc05``;
    with ``match_step`` (degrees) ``pr_auc``, ``peak_f1``, ``max_recall`` and ``match_rotations``, and
    ``pr_curves[species] = (recall, precision)`` when a ``pr_curves`` dict is passed."""
    coords, eul = io.particle_arrays(particles)
    labels = species_labels(particles)
    vol = sign * np.asarray(volume, dtype=np.float32)
    search = angles.uniform_eulers(match_step) if match_step else None
    out: dict[str, dict[str, float]] = {}
    for s, tmpl in templates.items():
        sel = labels == s
        figs: dict[str, float] = {"n_particles": float(sel.sum())}
        if sel.sum() >= 2:
            box = tmpl.shape[0]
            res = averaging.subtomogram_average(vol, coords[sel], eul[sel], box, voxel_size,
                                                np.random.default_rng(seed), reference=tmpl,
                                                tilt_range=tilt_range, progress=progress)
            m = res.metrics
            figs.update({"sta_half_fsc0143": m["half_fsc0143"], "sta_half_fsc0143_angstrom": m["half_fsc0143_angstrom"],
                         "sta_half_fsc05": m["half_fsc05"], "sta_ref_fsc05": m["ref_fsc05"]})
        if search is not None and sel.sum() >= 1:
            p = species_match(vol, tmpl, coords[sel], search, tilt_range, 1.0, device, progress)
            figs.update({"pr_auc": p.pr_auc, "peak_f1": p.peak_f1,
                         "max_recall": float(p.recall[-1]) if len(p.recall) else 0.0,
                         "match_rotations": float(len(search))})
            if pr_curves is not None:
                pr_curves[s] = (p.recall, p.precision)
        out[s] = {k: float(v) for k, v in figs.items()}
    return out
