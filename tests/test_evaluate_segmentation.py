"""Membrane segmentation: Hessian eigenvalues, hysteresis, Dice, and the simulator's membranes."""

from __future__ import annotations

import numpy as np
import pytest

from cryorestore import simulate
from cryorestore.evaluate import segmentation


def test_hessian_eigenvalues_of_a_quadratic():
    # f = -3 z² + 0.5 y² + x·y: Hessian [[-6,0,0],[0,1,1],[0,1,0]] everywhere (away from the borders)
    g = np.arange(-12, 13, dtype=np.float64)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    f = -3 * z**2 + 0.5 * y**2 + x * y
    ev = segmentation.hessian_eigenvalues(f, 1.0)[12, 12, 12]
    ref = np.linalg.eigvalsh(np.array([[-6.0, 0, 0], [0, 1, 1], [0, 1, 0]]))
    np.testing.assert_allclose(ev, ref, atol=1e-2)  # truncated discrete Gaussian derivatives: ~0.1 % error


def test_surfaceness_prefers_sheets_over_lines_and_blobs():
    g = np.arange(40, dtype=np.float64)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    sheet = np.exp(-((z - 8) ** 2) / 2)
    line = np.exp(-((z - 26) ** 2 + (y - 26) ** 2) / 2)
    blob = np.exp(-((z - 30) ** 2 + (y - 9) ** 2 + (x - 9) ** 2) / 2)
    s = segmentation.surfaceness((sheet + line + blob).astype(np.float32), 10.0, thickness=20.0)
    assert s[8, 20, 20] > 5 * max(s[26, 26, 20], s[30, 9, 9])


def test_hysteresis_and_dice_by_hand():
    s = np.zeros((1, 1, 12), dtype=np.float32)
    s[0, 0, 1:4] = [0.4, 0.9, 0.4]  # weak-strong-weak: kept
    s[0, 0, 6:9] = [0.4, 0.4, 0.4]  # weak only: dropped
    s[0, 0, 10] = 0.95  # strong single voxel
    m = segmentation.hysteresis(s, 0.3, 0.6)
    assert m[0, 0].tolist() == [False, True, True, True, False, False, False, False, False, False, True, False]
    assert segmentation.hysteresis(s, 0.3, 0.6, min_size=2)[0, 0, 10] == False  # noqa: E712
    a = np.array([1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 0, 1, 1], bool)
    assert segmentation.dice(a, b) == pytest.approx(2 * 2 / 6)


def test_segmentation_of_noiseless_truth_reaches_dice_08():
    ph = simulate.make_phantom((40, 96, 96), 10.0, np.random.default_rng(3))
    assert ph.membranes.sum() > 1000
    s, mask = segmentation.segment_membranes(ph.volume, ph.voxel_size)
    assert segmentation.dice(mask, ph.membranes) >= 0.8
