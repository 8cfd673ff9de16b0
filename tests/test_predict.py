"""Prediction end to end: grey scale, method averaging, voxel size, CLI errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cryorestore import io
from cryorestore.cli import main
from cryorestore.data import Normalization
from cryorestore.errors import InputError
from cryorestore.modeldir import LoadedModel
from cryorestore.predict import default_tile, predict_volume, restore
from test_tiling import np_tiled_reference


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x.clone()


class _Square(torch.nn.Module):
    """A pointwise non-linear network: tiling must not matter, normalisation must be undone."""

    def forward(self, x):
        return x * x - 0.5 * x


def _loaded(net, method="n2n", mean=3.0, std=2.0, crop=16):
    cfg = {"method": method, "loss": "l2", "tilt_range": [-60, 60], "subtomo_size": crop}
    return LoadedModel(net, cfg, Normalization(mean, std), "test")


@pytest.mark.parametrize("shape", [(13, 29, 22), (40, 37, 45)])
def test_identity_model_returns_input_in_its_grey_scale(shape):
    rng = np.random.default_rng(0)
    v = (5.0 + 3.0 * rng.normal(size=shape)).astype(np.float32)
    out = predict_volume(_loaded(_Identity()), v, tile=16, overlap=6, batch_size=3, progress=False)
    np.testing.assert_allclose(out, v, atol=1e-4)


def test_n2n_restore_averages_both_halves_with_pointwise_model():
    rng = np.random.default_rng(1)
    e = rng.normal(2.0, 1.5, size=(18, 21, 19)).astype(np.float32)
    o = rng.normal(2.0, 1.5, size=(18, 21, 19)).astype(np.float32)
    lm = _loaded(_Square(), mean=2.0, std=1.5)
    f = lambda v: ((((v.astype(np.float64) - 2.0) / 1.5) ** 2 - 0.5 * (v - 2.0) / 1.5) * 1.5 + 2.0)  # noqa: E731
    out = restore(lm, e, o, tile=16, overlap=4, progress=False)
    np.testing.assert_allclose(out, 0.5 * (f(e) + f(o)), atol=1e-4)
    single = restore(_loaded(_Square(), method="isonet", mean=2.0, std=1.5), e, None, tile=16, overlap=4, progress=False)
    np.testing.assert_allclose(single, f(e), atol=1e-4)


def test_default_tile_and_bad_tiles():
    lm = _loaded(_Identity(), crop=24)
    assert default_tile(lm) == 48 and default_tile(_loaded(_Identity(), crop=64)) == 96
    v = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(InputError):
        predict_volume(lm, v, tile=16, overlap=16, progress=False)
    with pytest.raises(InputError):
        predict_volume(lm, v, tile=4, progress=False)


def test_predict_cli_errors(tmp_path, capsys):
    a = tmp_path / "a.mrc"
    b = tmp_path / "b.mrc"
    io.write_mrc(a, np.random.default_rng(0).normal(size=(8, 8, 8)), 2.0)
    io.write_mrc(b, np.random.default_rng(0).normal(size=(8, 8, 9)), 2.0)
    assert main(["predict", str(tmp_path / "nomodel"), "--even", str(a), "--out", str(tmp_path / "o.mrc"), "--device", "cpu"]) == 2
    assert "model directory" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    assert main(["predict", str(tmp_path / "m"), "--even", str(a), "--out", str(tmp_path / "o.mrc")]) == 2
    assert not (tmp_path / "o.mrc").exists()


# --------------------------------------------------------------------------------------------
# streaming prediction: exactness against an independent reference, memory maps, out-of-memory
# --------------------------------------------------------------------------------------------
def _conv_net(seed=0):
    """A small random 3D convolution (zero padding inside each tile): its output depends on the tile."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(3, 1, 3, padding=1))
    return net.eval()


def _reference_restore(net, volumes, mean, std, tile, overlap):
    """numpy float64: global normalisation, then test_tiling's full-buffer tiled reference, then the inverse."""
    def fn(t):
        with torch.no_grad():
            return net(t)

    outs = [np_tiled_reference((v.astype(np.float64) - mean) / std, fn, tile, overlap) * std + mean for v in volumes]
    return np.mean(outs, axis=0)


@pytest.mark.parametrize("shape,tile,overlap", [((19, 30, 23), 12, 4), ((9, 21, 26), 16, 5)])
def test_streaming_restore_matches_global_normalisation_reference(shape, tile, overlap):
    rng = np.random.default_rng(11)
    e = rng.normal(4.0, 2.5, size=shape).astype(np.float32)
    o = rng.normal(4.0, 2.5, size=shape).astype(np.float32)
    net = _conv_net()
    got = restore(_loaded(net, mean=4.2, std=2.3), e, o, tile=tile, overlap=overlap, batch_size=5, progress=False)
    assert got.dtype == np.float32 and got.shape == shape
    ref = _reference_restore(net, [e, o], 4.2, 2.3, tile, overlap)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-5)
    single = predict_volume(_loaded(net, mean=4.2, std=2.3), e, tile=tile, overlap=overlap, progress=False)
    np.testing.assert_allclose(single, _reference_restore(net, [e], 4.2, 2.3, tile, overlap), rtol=1e-5, atol=2e-5)


def _oom_forward(limit, calls):
    """A forward that raises CUDA out-of-memory for batches larger than ``limit`` tiles."""
    inner = _conv_net(3)

    def forward(x):
        calls.append(x.shape[0])
        if x.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} GiB")
        return inner(x)

    return forward


def test_restore_halves_the_batch_on_out_of_memory_with_the_same_result():
    rng = np.random.default_rng(2)
    e, o = (rng.normal(size=(20, 24, 22)).astype(np.float32) for _ in range(2))
    calls: list[int] = []
    net = _conv_net(3)
    want = restore(_loaded(net), e, o, tile=12, overlap=3, batch_size=8, progress=False)
    flaky = _Identity()
    flaky.forward = _oom_forward(2, calls)
    with pytest.warns(RuntimeWarning, match="out of memory on cpu with (8|4) tiles per batch; retrying with (4|2)"):
        got = restore(_loaded(flaky), e, o, tile=12, overlap=3, batch_size=8, progress=False)
    assert calls[:3] == [8, 4, 2] and max(calls[3:]) == 2  # the second volume starts at the size that worked
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _model_dir(path, mean=0.0, std=1.0):
    from cryorestore.modeldir import save_model_dir
    from cryorestore.models import build_model

    torch.manual_seed(0)
    net = build_model("unet", depth=1, base_channels=2, convs_per_block=1)
    cfg = {"method": "n2n", "model": "unet", "model_options": dict(net.options), "loss": "l2",
           "tilt_range": [-60, 60], "subtomo_size": 16}
    return save_model_dir(path, net, cfg, Normalization(mean, std))


def test_predict_cli_memory_maps_inputs_of_any_dtype(tmp_path):
    import mrcfile

    from cryorestore.modeldir import load_model_dir

    rng = np.random.default_rng(4)
    model = _model_dir(tmp_path / "m", mean=10.0, std=30.0)
    e = rng.integers(-100, 100, size=(18, 20, 17)).astype(np.int16)
    o = rng.integers(-100, 100, size=(18, 20, 17)).astype(np.int16)
    for name, v in (("e.mrc", e), ("o.mrc", o)):
        with mrcfile.new(tmp_path / name) as mrc:
            mrc.set_data(v)
            mrc.voxel_size = 3.5
    out = tmp_path / "out.mrc"
    assert main(["predict", str(model), "--even", str(tmp_path / "e.mrc"), "--odd", str(tmp_path / "o.mrc"),
                 "--out", str(out), "--tile", "16", "--device", "cpu", "--no-progress"]) == 0
    got = io.read_mrc(out)
    assert got.voxel_size == pytest.approx(3.5)
    want = restore(load_model_dir(model), e.astype(np.float32), o.astype(np.float32), tile=16, progress=False)
    np.testing.assert_allclose(got.data, want, rtol=1e-6, atol=1e-5)


def test_predict_cli_one_tile_out_of_memory_exits_75_without_output(tmp_path, monkeypatch, capsys):
    from cryorestore.models import Restorer
    from cryorestore.predict import EXIT_TILE_OOM

    model = _model_dir(tmp_path / "m")
    a = io.write_mrc(tmp_path / "a.mrc", np.random.default_rng(0).normal(size=(20, 20, 20)), 2.0)
    calls: list[int] = []
    monkeypatch.setattr(Restorer, "forward", lambda self, x: _oom_forward(0, calls)(x))
    out = tmp_path / "o.mrc"
    with pytest.warns(RuntimeWarning):
        code = main(["predict", str(model), "--even", str(a), "--out", str(out), "--tile", "16", "--batch-size", "4",
                     "--device", "cpu", "--no-progress"])
    assert code == EXIT_TILE_OOM == 75
    assert calls == [4, 2, 1]
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tile" in err
    assert not out.exists() and not list(tmp_path.glob(".o.mrc*"))


def test_predict_cli_rejects_non_finite_memory_mapped_input(tmp_path, capsys):
    model = _model_dir(tmp_path / "m")
    v = np.random.default_rng(0).normal(size=(10, 10, 10)).astype(np.float32)
    v[3, 4, 5] = np.nan
    with pytest.warns(RuntimeWarning, match="NaN"):
        a = io.write_mrc(tmp_path / "a.mrc", v, 2.0)
    out = tmp_path / "o.mrc"
    assert main(["predict", str(model), "--even", str(a), "--out", str(out), "--device", "cpu"]) == 2
    assert "NaN" in capsys.readouterr().err and not out.exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_streaming_matches_cpu_and_survives_a_real_out_of_memory():
    """On a GPU: the streamed result equals the CPU's, and with the device nearly full the batch halves."""
    from cryorestore.models import build_model

    torch.manual_seed(0)
    net = build_model("unet", depth=2, base_channels=8, convs_per_block=1)
    vol = np.random.default_rng(0).normal(1.0, 2.0, size=(96, 160, 150)).astype(np.float32)  # 60 tiles
    cpu = predict_volume(_loaded(net, mean=1.0, std=2.0), vol, tile=48, overlap=12, amp=False, progress=False)
    gpu_net = build_model("unet", depth=2, base_channels=8, convs_per_block=1)
    gpu_net.load_state_dict(net.state_dict())
    lm = _loaded(gpu_net.cuda(), mean=1.0, std=2.0)
    gpu = predict_volume(lm, vol, tile=48, overlap=12, device="cuda", amp=False, progress=False)
    assert np.abs(gpu - cpu).max() < 1e-2 * vol.std()  # cuDNN may use TF32
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    blocker = torch.empty(max(0, free - (256 << 20)), dtype=torch.uint8, device="cuda")  # leave 256 MiB
    try:
        with pytest.warns(RuntimeWarning, match="out of memory on cuda"):
            tight = predict_volume(lm, vol, tile=48, overlap=12, batch_size=64, device="cuda", amp=False, progress=False)
    finally:
        del blocker
        torch.cuda.empty_cache()
    assert np.abs(tight - gpu).max() < 1e-2 * vol.std()


# --------------------------------------------------------------------------------------------
# the benchmarks behind the GPU check run on the CPU at toy sizes
# --------------------------------------------------------------------------------------------
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench_module(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_script_parses():
    import subprocess

    assert subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], capture_output=True).returncode == 0


def test_bench_predict_memory_runs_a_child_and_checks_the_bound(tmp_path):
    """The child really runs predict, its peak RSS is read, and the verdict follows the bound both ways.

    On a map this small the peak is the interpreter and torch (about 0.4 GiB with the CPU wheel, about
    1 GiB with a CUDA build), so the test sets the bound's fixed part instead of relying on the 1 GiB default.
    """
    import json

    bench = _bench_module("bench_predict_memory")
    common = ["--shape", "12", "20", "18", "--tile", "8", "--net", "tiny"]
    ballast = np.ones(1 << 28, dtype=np.float32)  # 1 GiB resident here: wait4's ru_maxrss would carry it into the child
    parent_mib = bench.proc_status_mib("VmRSS")
    assert bench.main([*common, "--workdir", str(tmp_path), "--fixed-mib", "16384",
                       "--json", str(tmp_path / "r.json")]) == 0
    del ballast
    res = json.loads((tmp_path / "r.json").read_text())
    run = res["runs"]["streaming"]
    assert res["ok"] and res["within_bound"] and run["returncode"] == 0 and run["output_written"]
    assert 50 < run["peak_rss_mib"] < parent_mib - 512  # the child's own peak: torch imported, no parent pages
    assert res["bound_mib"] == pytest.approx(2.5 * res["input_mib"] + 16384)
    assert io.read_mrc(tmp_path / "out_streaming.mrc").shape == (12, 20, 18)
    # a bound below the measured peak must fail the run
    tight = tmp_path / "tight"
    assert bench.main([*common, "--workdir", str(tight), "--fixed-mib", "1", "--json", str(tmp_path / "t.json")]) == 1
    res = json.loads((tmp_path / "t.json").read_text())
    assert not res["ok"] and not res["within_bound"] and res["runs"]["streaming"]["returncode"] == 0


def test_bench_train_step_times_fp32_and_bf16(tmp_path):
    import json

    bench = _bench_module("bench_train_step")
    assert bench.main(["--device", "cpu", "--net", "small", "--batch", "1", "--size", "8", "--warmup", "1",
                       "--steps", "1", "--json", str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "bf16"] and all(r["ms_per_step"] > 0 for r in rows)


def test_denoise_exits_75_without_a_restored_map_when_one_tile_does_not_fit(tmp_path, monkeypatch, capsys):
    """denoise maps prediction's TileOutOfMemoryError to predict's exit code and keeps the trained model."""
    from cryorestore import predict as predict_module
    from cryorestore.tiling import TileOutOfMemoryError

    def no_room(*args, **kwargs):
        raise TileOutOfMemoryError("one tile of 16³ voxels does not fit in device memory; use a smaller --tile")

    monkeypatch.setattr(predict_module, "restore", no_room)
    # 48 voxels along y hold a training box (16³ around crops of 8), a one-crop gap and the validation slab
    tomo = io.write_mrc(tmp_path / "full.mrc", np.random.default_rng(1).normal(size=(32, 48, 32)), 10.0)
    out = tmp_path / "run"
    code = main(["denoise", "--even", str(tomo), "--method", "isonet", "--model-option", "base_channels=4",
                 "--model-option", "depth=1", "--epochs", "1", "--subtomo-size", "8", "--n-subtomos", "4",
                 "--batch-size", "2", "--tile", "16", "--no-progress", "--device", "cpu", "--out-dir", str(out)])
    assert code == predict_module.EXIT_TILE_OOM == 75
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tile" in err and str(out / "model") in err
    assert (out / "model" / "weights.pt").is_file() and not (out / "restored.mrc").exists()
