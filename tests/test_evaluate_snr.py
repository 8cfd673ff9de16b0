"""SNR (Bepler et al. 2020) against the formula computed by hand on synthetic box pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryorestore.errors import InputError
from cryorestore.evaluate import snr


def test_snr_matches_formula_on_synthetic_pairs():
    rng = np.random.default_rng(0)
    vol = rng.normal(0.0, 1.0, size=(40, 40, 40))
    box = 8
    sig = np.array([[8, 8, 8], [8, 30, 20], [25, 12, 30]], dtype=float)
    bg = np.array([[30, 30, 8], [20, 8, 8], [30, 20, 20]], dtype=float)
    diffs, sds = [2.0, 3.0, 1.5], [1.0, 2.0, 0.5]
    for s, b, d, sd in zip(sig, bg, diffs, sds):
        sl_s = tuple(slice(int(c) - box // 2, int(c) - box // 2 + box) for c in s)
        sl_b = tuple(slice(int(c) - box // 2, int(c) - box // 2 + box) for c in b)
        vol[sl_b] = 5.0 + rng.normal(0, sd, size=(box,) * 3)
        vol[sl_s] = 5.0 + d + rng.normal(0, 0.3, size=(box,) * 3)
    # hand computation from the boxes' own voxels
    ratios = []
    for s, b in zip(sig, bg):
        vs = vol[tuple(slice(int(c) - 4, int(c) + 4) for c in s)]
        vb = vol[tuple(slice(int(c) - 4, int(c) + 4) for c in b)]
        ratios.append((vs.mean() - vb.mean()) ** 2 / vb.var())
    expected = 10 * math.log10(np.mean(ratios))
    got = snr.snr_db(vol, sig, bg, box)
    assert got == pytest.approx(expected, rel=1e-10)
    # and close to the design values (mean difference d, background variance sd²)
    design = 10 * math.log10(np.mean([d * d / (sd * sd) for d, sd in zip(diffs, sds)]))
    assert got == pytest.approx(design, abs=0.5)


def test_snr_errors():
    vol = np.random.default_rng(1).normal(size=(20, 20, 20))
    with pytest.raises(InputError):
        snr.snr_db(vol, [[10, 10, 10]], [[10, 10, 10], [5, 5, 5]], 4)
    with pytest.raises(InputError):
        snr.snr_db(vol, [[1, 10, 10]], [[10, 10, 10]], 6)  # leaves the volume
    with pytest.raises(InputError):
        snr.snr_db_from_stats([1.0], [0.0], [0.0])


def test_auto_boxes_choose_dense_signal_and_empty_background():
    truth = np.zeros((32, 48, 48), dtype=np.float32)
    truth[10:20, 10:20, 10:20] = 1.0
    truth[5:9, 30:40, 30:44] = 0.5
    rng = np.random.default_rng(2)
    s, b = snr.auto_boxes(truth, 6, 5, rng, signal_centres=np.array([[15, 15, 15]]))
    assert len(s) == len(b) == 1 and np.allclose(s[0], [15, 15, 15])
    for c in b:
        sl = tuple(slice(int(x) - 3, int(x) + 3) for x in c)
        assert truth[sl].max() == 0.0
