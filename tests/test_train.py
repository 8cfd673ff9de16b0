"""Training: a short run lowers the validation loss, --resume continues exactly, model directories
reload to identical predictions, and the train/denoise CLI reports bad input with exit code 2."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cryorestore import io
from cryorestore.cli import main
from cryorestore.data import compute_normalization
from cryorestore.modeldir import load_model_dir, save_model_dir
from cryorestore.predict import predict_volume, restore
from cryorestore.train import CHECKPOINT, TrainConfig, plan_epochs, read_checkpoint, stop_reason, train

TINY = {"base_channels": 4, "depth": 2, "convs_per_block": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from cryorestore.simulate import simulate_dataset

    d = tmp_path_factory.mktemp("sim")
    simulate_dataset(d, shape=(32, 64, 64), seed=3)
    return d


def _cfg(d, out, **kw):
    base = dict(even=[str(d / "even.mrc")], odd=[str(d / "odd.mrc")], out=str(out), method="n2n", model="unet",
                model_options=dict(TINY), loss="l2", subtomo_size=16, n_subtomos=24, epochs=3, batch_size=4,
                lr=2e-3, device="cpu", seed=5)
    base.update(kw)
    return TrainConfig(**base)


def test_short_training_lowers_validation_loss_and_writes_model_dir(dataset, tmp_path):
    res = train(_cfg(dataset, tmp_path / "m", n_subtomos=40, epochs=5), progress=False)
    vals = [h["val_loss"] for h in res.history]
    assert len(vals) == 5 and min(vals[1:]) < vals[0]
    assert res.best_epoch > 0 and res.best_val_loss == pytest.approx(min(vals))
    for f in ("weights.pt", "config.json", "normalization.json", "version.txt", CHECKPOINT):
        assert (tmp_path / "m" / f).is_file()
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["method"] == "n2n" and cfg["best_epoch"] == res.best_epoch
    # the full option set is stored (defaults too), so the architecture does not depend on future defaults
    from cryorestore.models import default_options
    assert cfg["model_options"] == default_options("unet") | TINY | {"residual": True}
    norm = json.loads((tmp_path / "m" / "normalization.json").read_text())
    ref = compute_normalization([io.read_mrc(dataset / "even.mrc").data, io.read_mrc(dataset / "odd.mrc").data])
    assert norm["mean"] == pytest.approx(ref.mean) and norm["std"] == pytest.approx(ref.std)


def test_binned_training_bins_each_map_once_and_records_the_binned_slab(dataset, tmp_path, monkeypatch):
    """The held-out slab and fingerprint in config.json come from the maps as trained on (binned), read once:
    the record used to read and Fourier-bin every even map a second time."""
    from cryorestore import volume_io
    from cryorestore.data import volume_fingerprint

    calls = []
    real = volume_io.fourier_bin
    monkeypatch.setattr(volume_io, "fourier_bin", lambda v, f, *a, **k: calls.append(f) or real(v, f, *a, **k))
    train(_cfg(dataset, tmp_path / "m", bin=2, subtomo_size=8, n_subtomos=12, epochs=1), progress=False)
    assert calls == [2, 2]  # the even map and the odd map, once each
    even2 = real(io.read_mrc(dataset / "even.mrc").data, 2)
    (entry,) = json.loads((tmp_path / "m" / "config.json").read_text())["holdout"]
    assert entry["shape"] == list(even2.shape) == [16, 32, 32]
    assert entry["fingerprint"] == pytest.approx(volume_fingerprint(even2), rel=1e-6)


def test_resume_continues_from_saved_epoch_like_an_uninterrupted_run(dataset, tmp_path):
    straight = train(_cfg(dataset, tmp_path / "a", epochs=3, n_subtomos=12), progress=False)
    def stop_after_second(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt  # as if the job had been killed after epoch 2

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(dataset, tmp_path / "b", epochs=3, n_subtomos=12), progress=False, on_epoch_end=stop_after_second)
    assert read_checkpoint(tmp_path / "b" / CHECKPOINT)["epoch"] == 1
    resumed = train(_cfg(dataset, tmp_path / "b", epochs=3, n_subtomos=12), progress=False, resume=True)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    np.testing.assert_allclose([h["val_loss"] for h in resumed.history], [h["val_loss"] for h in straight.history],
                               rtol=1e-5)
    wa = read_checkpoint(tmp_path / "a" / CHECKPOINT)["model"]
    wb = read_checkpoint(tmp_path / "b" / CHECKPOINT)["model"]
    for k in wa:  # bit for bit on the CPU
        assert torch.equal(wa[k], wb[k]), k
    with pytest.raises(Exception, match="differ"):
        train(_cfg(dataset, tmp_path / "b", epochs=4, n_subtomos=12, lr=1e-2), progress=False, resume=True)


def test_epoch_plan_and_stop_reasons():
    here = Path(".")
    cfg = _cfg(here, "m", epochs=50, batch_size=4, max_steps=30, patience=3)
    assert plan_epochs(cfg, 10) == (10, True)  # 3 steps per epoch: 30 steps in 10 epochs
    assert plan_epochs(cfg, 9) == (10, True)  # 3 steps per epoch (last batch short)
    assert plan_epochs(_cfg(here, "m", epochs=5, batch_size=4, max_steps=1000), 10) == (5, False)
    assert plan_epochs(_cfg(here, "m", epochs=5, batch_size=4), 10) == (5, False)
    assert stop_reason(4, 10, True, 3, cfg, 15) is None
    assert "not improved for 3 epochs (best: epoch 2)" in stop_reason(4, 10, True, 1, cfg, 15)
    assert "step budget of 30 steps" in stop_reason(9, 10, True, 9, cfg, 30)
    assert "all 10 epochs done" in stop_reason(9, 10, False, 9, cfg, 30)


def test_step_budget_and_patience_end_training_and_say_why(dataset, tmp_path, capsys):
    res = train(_cfg(dataset, tmp_path / "s", epochs=50, n_subtomos=12, max_steps=7), progress=True)
    # 11 training boxes in batches of 4: 3 steps per epoch, 7 steps → 3 epochs
    assert len(res.history) == 3 and "step budget of 7 steps" in res.stop_reason
    out = capsys.readouterr()
    assert out.out.strip().splitlines()[-1] == res.stop_reason
    # progress on, but not a terminal (as in a log file): plain lines, one per epoch, no bar updates
    assert "\r" not in out.out + out.err
    assert sum(line.startswith("epoch ") and "/3:" in line for line in out.out.splitlines()) == 3
    assert len((out.out + out.err).splitlines()) <= 3 + 3 + 1 + 3 * 10  # header, epochs, reason, ≤1/min
    # a learning rate too small to move the loss: no improvement after the first epoch
    res = train(_cfg(dataset, tmp_path / "p", epochs=50, n_subtomos=12, lr=1e-12, patience=2), progress=False)
    assert "has not improved for 2 epochs" in res.stop_reason
    assert len(res.history) == res.best_epoch + 3
    again = train(_cfg(dataset, tmp_path / "p", epochs=50, n_subtomos=12, lr=1e-12, patience=2), progress=False,
                  resume=True)
    assert len(again.history) == len(res.history)  # a resumed run that already met its end trains no more


def test_saved_model_predicts_identically_after_reload(dataset, tmp_path):
    train(_cfg(dataset, tmp_path / "m", epochs=1), progress=False)
    loaded = load_model_dir(tmp_path / "m")
    vol = io.read_mrc(dataset / "even.mrc").data[:20, :30, :28]
    first = predict_volume(loaded, vol, tile=16, overlap=4, progress=False)
    save_model_dir(tmp_path / "copy", loaded.model, loaded.config, loaded.normalization)
    again = predict_volume(load_model_dir(tmp_path / "copy"), vol, tile=16, overlap=4, progress=False)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - vol).max() > 0  # a trained network, not an identity
    out = tmp_path / "r.mrc"
    assert main(["predict", str(tmp_path / "m"), "--even", str(dataset / "even.mrc"), "--odd", str(dataset / "odd.mrc"),
                 "--out", str(out), "--tile", "32", "--overlap", "8", "--device", "cpu", "--no-progress"]) == 0
    written = io.read_mrc(out)
    assert written.voxel_size == pytest.approx(io.read_mrc(dataset / "even.mrc").voxel_size)
    ref = restore(loaded, io.read_mrc(dataset / "even.mrc").data, io.read_mrc(dataset / "odd.mrc").data,
                  tile=32, overlap=8, progress=False)
    np.testing.assert_allclose(written.data, ref, atol=1e-5)


def test_wedge_methods_train_and_refill(dataset, tmp_path, capsys):
    # crops of 8 → boxes of 16 (ceil(√3·8)+2): three box edges fit the 64-voxel y axis of the split
    res = train(_cfg(dataset, tmp_path / "dd", method="deepdewedge", epochs=3, refill_every=1, n_subtomos=12,
                     subtomo_size=8), progress=False)
    assert all(np.isfinite(h["val_loss"]) for h in res.history)
    # the history says when the boxes were refilled (after every epoch but the last) and counts steps
    assert [h["refilled"] for h in res.history] == [True, True, False]
    steps = [h["step"] for h in res.history]
    assert steps[0] > 0 and steps == [steps[0] * (i + 1) for i in range(3)]
    # slab of one 16-voxel box at the end of y (64), training boxes one 8-voxel crop edge before it
    assert "training boxes in y < 40, validation boxes in y >= 48" in capsys.readouterr().out
    ck = read_checkpoint(tmp_path / "dd" / CHECKPOINT)
    filled = torch.load(tmp_path / "dd" / ck["refilled"], weights_only=True)  # written beside, not inside
    assert "train_filled" not in ck and filled["train"].shape[-1] == 16
    iso = train(_cfg(dataset, tmp_path / "iso", method="isonet", odd=None, loss="l1", epochs=2, n_subtomos=12,
                     subtomo_size=8, noise_levels=[0.1], noise_epochs=[1]), progress=False)
    assert len(iso.history) == 2 and json.loads((tmp_path / "iso" / "config.json").read_text())["odd"] is None


def test_denoise_cli_end_to_end(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    clean = tmp_path / "clean.mrc"  # a stand-in for the simulator's noise-free reconstruction
    from scipy import ndimage

    gt = io.read_mrc(dataset / "ground_truth.mrc")
    io.write_mrc(clean, ndimage.gaussian_filter(gt.data, 0.8), gt.voxel_size)
    rc = main(["denoise", "--even", str(dataset / "even.mrc"), "--odd", str(dataset / "odd.mrc"), "--raw",
               str(dataset / "full.mrc"), "--truth", str(dataset / "ground_truth.mrc"), "--out-dir", str(out),
               "--clean", str(clean), "--tilt-range", "-60", "60",
               "--method", "n2n", "--epochs", "1", "--subtomo-size", "16", "--n-subtomos", "12", "--batch-size", "4", "--device", "cpu",
               "--model-option", "base_channels=4", "--model-option", "depth=2", "--no-progress", "--tile", "32"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "restored" in text and "gaussian" in text
    assert "stopped after epoch 1" in text
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["gaussian_baseline"]["sigma_voxels"] > 0
    for k in ("psnr_raw", "psnr_gaussian", "psnr_restored", "fsc05_raw", "fsc05_restored", "wedge_corr_raw", "wedge_corr_restored",
              "psnr_eq_raw", "psnr_eq_gaussian", "psnr_eq_restored", "psnr_clean_raw", "psnr_clean_gaussian",
              "psnr_clean_restored"):
        assert np.isfinite(rep["metrics"][k]), k
    assert "equalised per shell" in text and "PSNR vs clean, sampled region" in text
    from cryorestore.evaluate.quality import psnr_vs_clean

    assert rep["metrics"]["psnr_clean_restored"] == pytest.approx(
        psnr_vs_clean(io.read_mrc(out / "restored.mrc").data, io.read_mrc(clean).data, (-60.0, 60.0)), abs=1e-6)
    assert rep["inputs"]["clean"] == str(clean)
    assert rep["training"]["epochs"] == 1 and (out / "model" / "weights.pt").is_file()
    png = (out / "model" / "loss.png").read_bytes()  # the loss curves, beside the model
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert io.read_mrc(out / "restored.mrc").voxel_size == pytest.approx(io.read_mrc(dataset / "even.mrc").voxel_size)


def test_cli_bad_input_exits_2_without_output(dataset, tmp_path, capsys):
    small = tmp_path / "small.mrc"
    io.write_mrc(small, io.read_mrc(dataset / "odd.mrc").data[:, :, :60], io.read_mrc(dataset / "odd.mrc").voxel_size)
    base = ["--method", "n2n", "--epochs", "1", "--device", "cpu", "--no-progress", "--subtomo-size", "16", "--n-subtomos", "8"]
    assert main(["train", "--even", str(dataset / "even.mrc"), "--odd", str(small), "--out", str(tmp_path / "m")] + base) == 2
    assert "shape" in capsys.readouterr().err and not (tmp_path / "m").exists()
    other_vs = tmp_path / "vs.mrc"
    io.write_mrc(other_vs, io.read_mrc(dataset / "odd.mrc").data, 3.3)
    assert main(["denoise", "--even", str(dataset / "even.mrc"), "--odd", str(other_vs), "--out-dir", str(tmp_path / "d")] + base) == 2
    assert "voxel size" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert main(["train", "--even", str(dataset / "even.mrc"), "--out", str(tmp_path / "m2")] + base) == 2
    assert "--odd" in capsys.readouterr().err
    assert main(["train", "--even", str(dataset / "even.mrc"), "--odd", str(dataset / "odd.mrc"), "--resume",
                 "--out", str(tmp_path / "m3")] + base) == 2
    assert main(["train", "--even", str(dataset / "even.mrc"), "--odd", str(dataset / "odd.mrc"), "--loss", "l7",
                 "--out", str(tmp_path / "m4")] + base) == 2
    assert main(["train", "--even", str(dataset / "even.mrc"), "--odd", str(dataset / "odd.mrc"), "--tilt-range", "60",
                 "-60", "--out", str(tmp_path / "m5")] + base) == 2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_with_amp_and_prediction(dataset, tmp_path):
    res = train(_cfg(dataset, tmp_path / "g", method="deepdewedge", device="cuda", epochs=2, refill_every=1,
                     n_subtomos=12), progress=False)
    assert all(np.isfinite(h["val_loss"]) for h in res.history)
    loaded = load_model_dir(tmp_path / "g", "cuda")
    vol = io.read_mrc(dataset / "even.mrc").data
    gpu = predict_volume(loaded, vol, tile=32, overlap=8, device="cuda", progress=False)
    cpu = predict_volume(load_model_dir(tmp_path / "g", "cpu"), vol, tile=32, overlap=8, amp=False, progress=False)
    assert np.corrcoef(gpu.ravel(), cpu.ravel())[0, 1] > 0.99  # bf16/fp16 autocast vs float32


def test_loss_curves_draw_histories_with_and_without_step_counts(tmp_path):
    """One panel per run or one shared axis; histories of older checkpoints (no 'step'/'refilled') still draw."""
    from cryorestore import plots

    new = [{"epoch": e, "step": 15 * (e + 1), "train_loss": 1.0 / (e + 1), "val_loss": 0.9 / (e + 1),
            "refilled": e == 1} for e in range(3)]
    old = [{"epoch": e, "train_loss": 2.0 - e, "val_loss": 1.5 - e} for e in range(2)]
    for panels in (False, True):
        path = plots.loss_curves({"isonet (l1)": new, "n2n (l2)": old}, tmp_path / f"l{panels}.png", panels=panels)
        assert path.read_bytes().startswith(b"\x89PNG")
    # one panel per run makes a wider figure than one shared axis
    from PIL import Image

    assert Image.open(tmp_path / "lTrue.png").size[0] > Image.open(tmp_path / "lFalse.png").size[0]
