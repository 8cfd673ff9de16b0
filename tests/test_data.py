"""Subtomogram sampling: boxes at the same positions in both halves, masks, the spatially disjoint
validation split, normalisation."""

import numpy as np
import pytest

from cryorestore.data import (Normalization, SlabSplit, SubtomoSampler, compute_normalization, pad_to_box,
                             sampling_mask, slab_split)
from cryorestore.errors import InputError


def test_normalization_matches_numpy_float64():
    rng = np.random.default_rng(0)
    vols = [rng.normal(3.0, 2.0, (10, 12, 14)).astype(np.float32), rng.normal(-1.0, 0.5, (8, 9, 7)).astype(np.float32)]
    allv = np.concatenate([v.astype(np.float64).ravel() for v in vols])
    n = compute_normalization(vols)
    assert n.mean == pytest.approx(allv.mean(), rel=1e-9)
    assert n.std == pytest.approx(allv.std(), rel=1e-9)
    x = vols[0]
    np.testing.assert_allclose(n.invert(n.apply(x)), x, atol=1e-5)
    np.testing.assert_allclose(n.apply(x), (x - allv.mean()) / allv.std(), atol=1e-5)
    assert Normalization.from_dict(n.to_dict()) == n


def test_constant_volume_is_rejected():
    with pytest.raises(InputError):
        compute_normalization([np.ones((4, 4, 4), np.float32)])


def test_pad_to_box_reflects_and_keeps_centre():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(10, 20, 20)).astype(np.float32)
    p = pad_to_box(v, 15)
    assert p.shape == (15, 20, 20)
    np.testing.assert_array_equal(p, np.pad(v, ((2, 3), (0, 0), (0, 0)), mode="reflect"))
    big = pad_to_box(v, 33)  # more than one reflection round along z
    assert big.shape == (33, 33, 33)
    assert pad_to_box(v, 8) is v


def test_sampling_mask_excludes_margins_and_empty_regions():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(24, 40, 40))
    m0 = sampling_mask(v, 8, min_std_percentile=0.0)
    ref = np.zeros(v.shape, bool)
    ref[4:24 - 4 + 1, 4:40 - 4 + 1, 4:40 - 4 + 1] = True  # centre c = corner + 4, corner in [0, n - 8]
    np.testing.assert_array_equal(m0, ref)
    v2 = v.copy()
    v2[:, :, :20] = 0.0  # an empty (flat) half
    m = sampling_mask(v2, 8, min_std_percentile=5.0)
    assert m[:, :, 24:].any()
    assert not m[:, :, :14].any()  # flat region far from the edge of the structure is skipped


def _volumes(seed=3, shape=(20, 32, 36)):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=shape).astype(np.float32)
    o = (e + 0.5 * rng.normal(size=shape)).astype(np.float32)
    return e, o


def test_sampler_pairs_share_positions_and_split():
    e1, o1 = _volumes(3)
    e2, o2 = _volumes(4, (24, 30, 30))
    s = SubtomoSampler([e1, e2], [o1, o2], box=10, n_subtomos=40, val_fraction=0.1, seed=7)
    sub = s.sample()
    assert sub.train.shape == (36, 2, 10, 10, 10) and sub.val.shape == (4, 2, 10, 10, 10)
    norm = sub.normalization
    both = np.concatenate([sub.train, sub.val])  # positions: training first, then validation
    halves = [(e1, o1), (e2, o2)]
    for box, (i, z, y, x) in zip(both, sub.positions):
        e, o = halves[i]
        np.testing.assert_allclose(box[0], norm.apply(e[z:z + 10, y:y + 10, x:x + 10]), atol=1e-6)
        np.testing.assert_allclose(box[1], norm.apply(o[z:z + 10, y:y + 10, x:x + 10]), atol=1e-6)
    assert set(sub.positions[:36, 0]) == {0, 1}
    again = SubtomoSampler([e1, e2], [o1, o2], box=10, n_subtomos=40, seed=7).sample()
    np.testing.assert_array_equal(again.train, sub.train)
    other = SubtomoSampler([e1, e2], [o1, o2], box=10, n_subtomos=40, seed=8).sample()
    assert not np.array_equal(other.positions, sub.positions)


def _box_cover(shape, corners, box):
    """Boolean (z, y, x) union of the boxes with the given corners, computed voxel by voxel."""
    cover = np.zeros(shape, bool)
    for z, y, x in corners:
        cover[z:z + box, y:y + box, x:x + box] = True
    return cover


@pytest.mark.parametrize("seed,shapes,box,frac", [
    (0, [(24, 64, 48)], 12, 0.1),            # slab along y (the longer in-plane axis)
    (1, [(20, 40, 70), (16, 50, 50)], 10, 0.25),  # along x in the first, y in the second; z padded in none
    (2, [(8, 60, 60)], 14, 0.1),             # thinner than the box along z: reflect-padded
])
def test_no_validation_voxel_lies_in_or_next_to_a_training_box(seed, shapes, box, frac):
    rng = np.random.default_rng(seed)
    evens = [rng.normal(size=s).astype(np.float32) for s in shapes]
    odds = [(e + rng.normal(size=e.shape)).astype(np.float32) for e in evens]
    sub = SubtomoSampler(evens, odds, box=box, n_subtomos=120, val_fraction=frac, seed=seed).sample()
    n_train = len(sub.train)
    assert len(sub.val) == round(frac * 120)
    for i, e in enumerate(evens):
        padded = pad_to_box(e, box).shape
        tr = sub.positions[:n_train][sub.positions[:n_train, 0] == i, 1:]
        va = sub.positions[n_train:][sub.positions[n_train:, 0] == i, 1:]
        assert len(tr) > 0 and len(va) > 0
        train_cover, val_cover = _box_cover(padded, tr, box), _box_cover(padded, va, box)
        assert not (train_cover & val_cover).any()
        # at least one box edge of space between them along the split axis
        axis = sub.splits[i].axis
        t_hi = np.flatnonzero(train_cover.any(axis=tuple(a for a in range(3) if a != axis))).max()
        v_lo = np.flatnonzero(val_cover.any(axis=tuple(a for a in range(3) if a != axis))).min()
        assert v_lo - t_hi - 1 >= box
        assert axis == (1 if padded[1] >= padded[2] else 2)


def test_split_too_small_volume_is_a_clear_input_error():
    e, _ = _volumes(5, (12, 30, 30))
    with pytest.raises(InputError, match="too small for a disjoint validation slab.*--subtomo-size"):
        SubtomoSampler([e], None, box=16, n_subtomos=5).sample()
    assert slab_split((12, 48, 40), 16, 0.1) == SlabSplit(axis=1, train_stop=16, val_start=32)
    assert slab_split((12, 40, 100), 16, 0.3, gap=4) == SlabSplit(axis=2, train_stop=66, val_start=70)


def test_sampler_single_map_thin_volume_and_min_one_validation():
    e, _ = _volumes(5, (12, 48, 48))
    sub = SubtomoSampler([e], None, box=16, n_subtomos=5, val_fraction=0.01, seed=0).sample()
    assert sub.train.shape == (4, 1, 16, 16, 16) and sub.val.shape[0] == 1


def test_sampler_rejects_bad_input():
    e, o = _volumes()
    with pytest.raises(InputError):
        SubtomoSampler([e], [o[:, :, :-1]], box=8)
    with pytest.raises(InputError):
        SubtomoSampler([e], [o, o], box=8)
    with pytest.raises(InputError):
        SubtomoSampler([e], [o], box=8, val_fraction=1.5)
