"""Bounded training memory: the sampling mask's blockwise float32 local standard deviation matches the
full-volume float64 computation, boxes stay in host memory and go to the device per batch, and the
refilled boxes are written to their own file only after a refill changed them."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryorestore.boxes import HostBoxes, refilled_name, remove_stale_refills
from cryorestore.data import local_std, sampling_mask
from cryorestore.train import CHECKPOINT, read_checkpoint, train
from test_train import _cfg
from test_train import dataset  # noqa: F401  (the simulated 32×64×64 dataset fixture)


def _reference_mask(volume, box, percentile):
    """The former sampling mask: full-volume float64 arrays throughout (independent reference)."""
    allowed = np.zeros(volume.shape, dtype=bool)
    lo = box // 2
    allowed[tuple(slice(lo, n - (box - lo) + 1) for n in volume.shape)] = True
    v = volume.astype(np.float64)
    size = max(3, box // 2)
    m1 = ndimage.uniform_filter(v, size=size, mode="reflect")
    m2 = ndimage.uniform_filter(v * v, size=size, mode="reflect")
    sd = np.sqrt(np.clip(m2 - m1 * m1, 0.0, None))
    thr = np.percentile(sd[allowed], percentile)
    keep = allowed & (sd >= thr) & (sd > 1e-6 * float(np.median(sd[allowed])))
    return (keep if keep.any() else allowed), sd, thr


def _volume(rng, shape):
    """Noise whose amplitude grows along z and a flat (zero) margin: the mask has something to cut."""
    v = rng.standard_normal(shape) * np.linspace(0.2, 3.0, shape[0])[:, None, None] + 4.0
    v[:, :, :5] = 0.0
    return v.astype(np.float32)


@pytest.mark.parametrize("shape, box, slab", [((40, 30, 36), 8, 7), ((23, 41, 29), 12, 1), ((33, 33, 33), 16, 64)])
def test_blockwise_local_std_matches_full_volume_float64(rng, shape, box, slab):
    v = _volume(rng, shape)
    size = max(3, box // 2)
    _, ref, _ = _reference_mask(v, box, 5.0)
    got = local_std(v, size, slab=slab)
    assert got.dtype == np.float32 and got.shape == v.shape
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-6 * ref.max())


@pytest.mark.parametrize("seed, percentile", [(0, 5.0), (1, 30.0), (2, 60.0)])
def test_sampling_mask_matches_the_float64_version(seed, percentile):
    v = _volume(np.random.default_rng(seed), (36, 40, 44))
    ref, sd, thr = _reference_mask(v, 10, percentile)
    got = sampling_mask(v, 10, percentile)
    differ = got != ref
    # a centre may only flip where its float64 local std lies within float32 rounding of the threshold
    assert np.all(np.abs(sd[differ] - thr) <= 1e-6 * thr)
    assert differ.sum() <= 2 and 0 < got.sum() < got.size


def test_sampling_mask_memory_is_bounded_by_slabs(rng):
    """Peak numpy memory of the mask on a deep volume: a few float32 volumes, not ~10 (the float64 path)."""
    import tracemalloc

    v = rng.standard_normal((320, 48, 48)).astype(np.float32)
    tracemalloc.start()
    try:
        sampling_mask(v, 32, 5.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3.5 * v.nbytes, f"peak {peak / v.nbytes:.1f}× the volume"


def test_host_boxes_give_device_batches_and_stay_on_the_host(rng):
    boxes = rng.standard_normal((6, 2, 5, 5, 5)).astype(np.float32)
    hb = HostBoxes(boxes, torch.device("cpu"))
    assert len(hb) == 6 and hb.data.device.type == "cpu" and tuple(hb.shape) == boxes.shape
    sel = torch.tensor([4, 0, 2])
    np.testing.assert_array_equal(hb.batch(sel).numpy(), boxes[[4, 0, 2]])
    copy = hb.clone()
    copy.data += 1
    np.testing.assert_array_equal(hb.data.numpy(), boxes)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_host_boxes_send_pinned_batches_to_the_gpu(rng):
    boxes = rng.standard_normal((5, 1, 4, 4, 4)).astype(np.float32)
    hb = HostBoxes(boxes, torch.device("cuda"))
    b = hb.batch(torch.tensor([3, 1]))
    assert b.is_cuda and hb.data.device.type == "cpu"
    np.testing.assert_array_equal(b.cpu().numpy(), boxes[[3, 1]])


def test_stale_refill_files_are_removed(tmp_path):
    for e in (0, 1, 2):
        (tmp_path / refilled_name(e)).write_bytes(b"x")
    (tmp_path / "weights.pt").write_bytes(b"w")
    remove_stale_refills(tmp_path, refilled_name(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refilled-e0003.pt", "weights.pt"]


def test_refilled_boxes_written_separately_and_only_when_changed(dataset, tmp_path):
    out = tmp_path / "dd"
    seen = []  # per epoch: {refilled file name: inode} (an atomic rewrite gets a new inode)

    def record(epoch, _):
        seen.append({p.name: p.stat().st_ino for p in out.glob("refilled-*")})

    # crops of 8 → boxes of 16 (ceil(√3·8)+2): training box, one-crop gap and validation slab fit the 64-voxel y axis
    cfg = _cfg(dataset, out, method="deepdewedge", n_subtomos=8, epochs=4, refill_every=2, subtomo_size=8)
    train(cfg, progress=False, on_epoch_end=record)
    name = refilled_name(1)  # refill after epoch 2 (index 1); none after the last epoch
    assert seen[0] == {} and list(seen[1]) == [name] and seen[1] == seen[2] == seen[3]
    ck = read_checkpoint(out / CHECKPOINT)
    assert ck["refilled"] == name and "train_filled" not in ck and "val_filled" not in ck
    filled = torch.load(out / name, weights_only=True)
    assert filled["epoch"] == 1 and filled["train"].shape[1:] == (2, 16, 16, 16)
    from cryorestore import io
    from cryorestore.data import SubtomoSampler

    raw = SubtomoSampler([io.read_mrc(dataset / "even.mrc").data], [io.read_mrc(dataset / "odd.mrc").data], 16,
                         n_subtomos=8, seed=cfg.seed, gap=8).sample()
    assert raw.train.shape == tuple(filled["train"].shape)
    assert not np.allclose(filled["train"].numpy(), raw.train, atol=1e-3)  # the refill changed the boxes
