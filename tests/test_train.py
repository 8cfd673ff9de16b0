"""Training: a short run lowers the validation loss, --resume continues exactly, model directories
reload to identical predictions, and the train/denoise CLI reports bad input with exit code 2."""

import json

import numpy as np
import pytest
import torch

from cryorestore import io
from cryorestore.cli import main
from cryorestore.data import compute_normalization
from cryorestore.modeldir import load_model_dir, save_model_dir
from cryorestore.predict import predict_volume, restore
from cryorestore.train import CHECKPOINT, TrainConfig, train

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


def test_resume_continues_from_saved_epoch_like_an_uninterrupted_run(dataset, tmp_path):
    straight = train(_cfg(dataset, tmp_path / "a", epochs=3, n_subtomos=12), progress=False)
    def stop_after_second(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt  # as if the job had been killed after epoch 2

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(dataset, tmp_path / "b", epochs=3, n_subtomos=12), progress=False, on_epoch_end=stop_after_second)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["epoch"] == 1
    resumed = train(_cfg(dataset, tmp_path / "b", epochs=3, n_subtomos=12), progress=False, resume=True)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    np.testing.assert_allclose([h["val_loss"] for h in resumed.history], [h["val_loss"] for h in straight.history],
                               rtol=1e-5)
    wa = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="differ"):
        train(_cfg(dataset, tmp_path / "b", epochs=4, n_subtomos=12, lr=1e-2), progress=False, resume=True)


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


def test_wedge_methods_train_and_refill(dataset, tmp_path):
    res = train(_cfg(dataset, tmp_path / "dd", method="deepdewedge", epochs=2, refill_every=1, n_subtomos=12),
                progress=False)
    assert all(np.isfinite(h["val_loss"]) for h in res.history)
    ck = torch.load(tmp_path / "dd" / CHECKPOINT, weights_only=False)
    filled = torch.load(tmp_path / "dd" / ck["refilled"], weights_only=True)  # written beside, not inside
    assert "train_filled" not in ck and filled["train"].shape[-1] == 30  # ceil(√3·16)+2 → 30
    iso = train(_cfg(dataset, tmp_path / "iso", method="isonet", odd=None, loss="l1", epochs=2, n_subtomos=12,
                     noise_levels=[0.1], noise_epochs=[1]), progress=False)
    assert len(iso.history) == 2 and json.loads((tmp_path / "iso" / "config.json").read_text())["odd"] is None


def test_denoise_cli_end_to_end(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["denoise", "--even", str(dataset / "even.mrc"), "--odd", str(dataset / "odd.mrc"), "--raw",
               str(dataset / "full.mrc"), "--truth", str(dataset / "ground_truth.mrc"), "--out-dir", str(out),
               "--epochs", "1", "--subtomo-size", "16", "--n-subtomos", "12", "--batch-size", "4", "--device", "cpu",
               "--model-option", "base_channels=4", "--model-option", "depth=2", "--no-progress", "--tile", "32"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "restored" in text
    rep = json.loads((out / "metrics.json").read_text())
    for k in ("psnr_raw", "psnr_restored", "fsc05_raw", "fsc05_restored", "wedge_corr_raw", "wedge_corr_restored"):
        assert np.isfinite(rep["metrics"][k])
    assert rep["training"]["epochs"] == 1 and (out / "model" / "weights.pt").is_file()
    assert io.read_mrc(out / "restored.mrc").voxel_size == pytest.approx(io.read_mrc(dataset / "even.mrc").voxel_size)


def test_cli_bad_input_exits_2_without_output(dataset, tmp_path, capsys):
    small = tmp_path / "small.mrc"
    io.write_mrc(small, io.read_mrc(dataset / "odd.mrc").data[:, :, :60], io.read_mrc(dataset / "odd.mrc").voxel_size)
    base = ["--epochs", "1", "--device", "cpu", "--no-progress", "--subtomo-size", "16", "--n-subtomos", "8"]
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
