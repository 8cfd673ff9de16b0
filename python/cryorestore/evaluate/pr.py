"""Precision and recall of picked peaks against known particle positions.

Peaks are taken in order of decreasing score; peak ``k`` is a true positive when an unmatched true
position lies within ``tolerance`` voxels (the nearest such one is matched, one-to-one, greedily in
score order), otherwise a false positive. Because the greedy matching of the top ``k`` peaks is a
prefix of the matching of all peaks, thresholding the scores just below peak ``k`` gives

    precision_k = tp_k / k,   recall_k = tp_k / n_true,   F1_k = 2·P·R / (P + R)

(Xu et al. 2011; the paper's section 2.2.2). PR-AUC is the area under the step curve of precision
over recall, ``Σ_k (R_k − R_{k−1})·P_k`` with ``R_0 = 0`` (average precision). The mean distance of
true positives is reported at the peak-F1 threshold and over all matched peaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class PRResult:
    """Curves over thresholds (one entry per peak, by decreasing score) and summary numbers."""

    thresholds: np.ndarray  # score of peak k
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    matched: np.ndarray  # bool per peak (score order): true positive
    distances: np.ndarray  # distance (voxels) to the matched truth, NaN for false positives
    pr_auc: float
    peak_f1: float
    peak_f1_threshold: float
    precision_at_peak_f1: float
    recall_at_peak_f1: float
    mean_tp_distance_at_peak_f1: float
    mean_tp_distance: float
    n_true: int
    n_peaks: int

    def summary(self) -> dict[str, float]:
        """The scalar results as a JSON-ready dict."""
        return {
            "pr_auc": self.pr_auc, "peak_f1": self.peak_f1, "peak_f1_threshold": self.peak_f1_threshold,
            "precision_at_peak_f1": self.precision_at_peak_f1, "recall_at_peak_f1": self.recall_at_peak_f1,
            "mean_tp_distance_at_peak_f1": self.mean_tp_distance_at_peak_f1,
            "mean_tp_distance": self.mean_tp_distance, "n_true": float(self.n_true), "n_peaks": float(self.n_peaks),
            "max_recall": float(self.recall[-1]) if len(self.recall) else 0.0,
        }


def match_peaks(peaks_zyx: np.ndarray, scores: np.ndarray, truth_zyx: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy one-to-one matching in decreasing-score order.

    Returns (order: indices of peaks by decreasing score, matched bool per ordered peak, distance per
    ordered peak in voxels, NaN when unmatched).
    """
    p = np.asarray(peaks_zyx, dtype=float).reshape(-1, 3)
    s = np.asarray(scores, dtype=float).ravel()
    t = np.asarray(truth_zyx, dtype=float).reshape(-1, 3)
    order = np.argsort(-s, kind="stable")
    matched = np.zeros(len(p), dtype=bool)
    dist = np.full(len(p), np.nan)
    if len(t) == 0 or len(p) == 0:
        return order, matched, dist
    tree = cKDTree(t)
    used = np.zeros(len(t), dtype=bool)
    for k, i in enumerate(order):
        cand = tree.query_ball_point(p[i], r=tolerance)
        cand = [j for j in cand if not used[j]]
        if cand:
            d = np.linalg.norm(t[cand] - p[i], axis=1)
            j = cand[int(np.argmin(d))]
            used[j] = True
            matched[k] = True
            dist[k] = float(d.min())
    return order, matched, dist


def precision_recall(peaks_zyx: np.ndarray, scores: np.ndarray, truth_zyx: np.ndarray, tolerance: float) -> PRResult:
    """Precision/recall/F1 over score thresholds, PR-AUC, peak F1 and true-positive distances."""
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0 voxels, got {tolerance}")
    s = np.asarray(scores, dtype=float).ravel()
    n_true = len(np.asarray(truth_zyx).reshape(-1, 3))
    order, matched, dist = match_peaks(peaks_zyx, s, truth_zyx, tolerance)
    k = np.arange(1, len(s) + 1, dtype=float)
    tp = np.cumsum(matched).astype(float)
    precision = tp / k if len(s) else np.zeros(0)
    recall = tp / n_true if n_true else np.zeros(len(s))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    prev = np.concatenate([[0.0], recall[:-1]]) if len(recall) else recall
    pr_auc = float(np.sum((recall - prev) * precision))
    if len(s):
        best = int(np.argmax(f1))
        pf1, thr, pp, rr = float(f1[best]), float(s[order][best]), float(precision[best]), float(recall[best])
        d_best = dist[: best + 1][matched[: best + 1]]
        md_best = float(d_best.mean()) if d_best.size else float("nan")
    else:
        pf1, thr, pp, rr, md_best = 0.0, float("nan"), 0.0, 0.0, float("nan")
    md_all = float(np.nanmean(dist)) if matched.any() else float("nan")
    return PRResult(s[order], precision, recall, f1, matched, dist, pr_auc, pf1, thr, pp, rr, md_best, md_all, n_true, len(s))
