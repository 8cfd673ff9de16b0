"""``cryorestore score``: the model directory records its held-out slab, the command scores it, and bad
input exits 2 with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from cryorestore import io
from cryorestore.cli import main
from cryorestore.train import TrainConfig, train

TINY = {"base_channels": 4, "depth": 2, "convs_per_block": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from cryorestore.simulate import simulate_dataset

    d = tmp_path_factory.mktemp("sim")
    simulate_dataset(d, shape=(32, 64, 64), seed=3)
    cfg = TrainConfig(even=[str(d / "even.mrc")], odd=[str(d / "odd.mrc")], out=str(d / "model"), method="n2n",
                      model="unet", model_options=dict(TINY), subtomo_size=16, n_subtomos=16, epochs=1, batch_size=4,
                      device="cpu", seed=1)
    train(cfg, progress=False)
    return d


def test_training_records_the_held_out_slab(trained):
    cfg = json.loads((trained / "model" / "config.json").read_text())
    (h,) = cfg["holdout"]
    assert h["shape"] == [32, 64, 64] and h["axis"] in (1, 2)
    assert h["stop"] == 64 and h["start"] - h["train_stop"] >= 16 and h["start"] <= 64 - 16


def test_score_with_model_writes_table_and_files(trained, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["score", "--even", str(trained / "even.mrc"), "--odd", str(trained / "odd.mrc"), "--model",
               str(trained / "model"), "--clean", str(trained / "ground_truth.mrc"), "--tta", "none", "--tile", "32",
               "--n-bootstrap", "200", "--device", "cpu", "--out-dir", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "truth-free score" in text and "est. gain dB" in text and "true gain dB" in text
    doc = json.loads((out / "score.json").read_text())
    assert list(doc["maps"]) == ["raw", "gaussian", "wiener", "n2n"]
    assert doc["maps"]["raw"]["gain_db"] == pytest.approx(0.0, abs=1e-9)
    assert doc["region"]["box"][1][1] == 64 or doc["region"]["box"][2][1] == 64
    assert doc["parameters"]["gaussian"]["sigma_voxels"] > 0
    curves = json.loads((out / "score_curves.json").read_text())
    assert set(curves["cross_fsc"]) == set(doc["maps"]) and len(curves["frequency"]) == len(curves["half_fsc"])
    assert (out / "score.png").read_bytes().startswith(b"\x89PNG")


def test_score_of_maps_made_elsewhere_writes_uncertainty(trained, tmp_path, capsys):
    e, o = io.read_mrc(trained / "even.mrc"), io.read_mrc(trained / "odd.mrc")
    ra = io.write_mrc(tmp_path / "a.mrc", ndimage.gaussian_filter(e.data, 1.0), e.voxel_size)
    rb = io.write_mrc(tmp_path / "b.mrc", ndimage.gaussian_filter(o.data, 1.0), e.voxel_size)
    out = tmp_path / "s"
    rc = main(["score", "--even", str(trained / "even.mrc"), "--odd", str(trained / "odd.mrc"), "--restored-even",
               str(ra), "--restored-odd", str(rb), "--name", "blur", "--holdout", "x:40:64", "--n-bootstrap", "100",
               "--out-dir", str(out)])
    assert rc == 0
    doc = json.loads((out / "score.json").read_text())
    assert "blur" in doc["maps"] and doc["region"]["box"][2] == [40, 64]
    u = io.read_mrc(out / "blur_uncertainty.mrc")
    assert u.shape == e.shape and u.voxel_size == pytest.approx(e.voxel_size)
    ref = np.sqrt(ndimage.uniform_filter(((io.read_mrc(ra).data.astype(np.float64) - io.read_mrc(rb).data) / 2) ** 2,
                                         size=5, mode="reflect"))
    np.testing.assert_allclose(u.data, ref, rtol=1e-4, atol=1e-6)


def test_bad_input_exits_2_with_nothing_written(trained, tmp_path, capsys):
    even, odd = str(trained / "even.mrc"), str(trained / "odd.mrc")
    small = io.write_mrc(tmp_path / "small.mrc", io.read_mrc(odd).data[:, :, :60], io.read_mrc(odd).voxel_size)
    out = tmp_path / "o"
    base = ["--n-bootstrap", "50", "--device", "cpu", "--out-dir", str(out)]
    # maps on different grids
    assert main(["score", "--even", even, "--odd", str(small), "--model", str(trained / "model")] + base) == 2
    err = capsys.readouterr().err
    assert "shape" in err and len(err.strip().splitlines()) == 1
    # a holdout slab outside the map
    assert main(["score", "--even", even, "--odd", odd, "--model", str(trained / "model"), "--holdout", "y:50:90"]
                + base) == 2
    err = capsys.readouterr().err
    assert "outside the map" in err and len(err.strip().splitlines()) == 1
    # a model directory that records no slab, and no --holdout
    old = tmp_path / "old_model"
    old.mkdir()
    for f in ("weights.pt", "normalization.json", "version.txt"):
        (old / f).write_bytes((trained / "model" / f).read_bytes())
    cfg = json.loads((trained / "model" / "config.json").read_text())
    del cfg["holdout"]
    (old / "config.json").write_text(json.dumps(cfg))
    assert main(["score", "--even", even, "--odd", odd, "--model", str(old)] + base) == 2
    err = capsys.readouterr().err
    assert "records no held-out slab" in err and "--holdout" in err and len(err.strip().splitlines()) == 1
    # a clean map on another grid
    assert main(["score", "--even", even, "--odd", odd, "--model", str(trained / "model"), "--clean", str(small)]
                + base) == 2
    err = capsys.readouterr().err
    assert "shape" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _bench_module(name):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_truthfree_on_one_tiny_case(tmp_path, capsys):
    """A case with a known shared signal (clean = s): the Gaussian's estimate is close to its true gain,
    the table has every row, the summary its figures, and the T2T line its signal difference."""
    rng = np.random.default_rng(4)
    shape = (32, 64, 64)
    s = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    s *= 2.0 / s.std()
    sim = tmp_path / "sim"
    sim.mkdir()
    delta = 0.05 * ndimage.gaussian_filter(rng.standard_normal(shape), 0.7)
    for name, v in (("even", s + delta + rng.standard_normal(shape)), ("odd", s - delta + rng.standard_normal(shape)),
                    ("clean", s), ("ground_truth", s), ("clean_even", s + delta), ("clean_odd", s - delta)):
        io.write_mrc(sim / f"{name}.mrc", v.astype(np.float32), 10.0)
    run = tmp_path / "n2n"
    train(TrainConfig(even=[str(sim / "even.mrc")], odd=[str(sim / "odd.mrc")], out=str(run / "model"), method="n2n",
                      model="unet", model_options=dict(TINY), subtomo_size=16, n_subtomos=16, epochs=2, batch_size=4,
                      device="cpu", seed=1), progress=False)
    io.write_text(run / "metrics.json", json.dumps({"inference": {"tta": "none", "combine": "mean"}}))
    bench = _bench_module("bench_truthfree")
    out = tmp_path / "t.json"
    assert bench.main(["--case", str(sim), str(run), "--n-bootstrap", "200", "--tile", "32", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| sim | gaussian |" in text and "P(beats Gaussian)" in text and "| sim | n2n |" in text and "Spearman" in text and "T2T" in text
    doc = json.loads(out.read_text())
    rows = {r["map"]: r for r in doc["cases"][0]["rows"]}
    assert set(rows) == {"raw", "gaussian", "wiener", "n2n"}
    assert abs(rows["gaussian"]["est"] - rows["gaussian"]["true"]) < 1.0
    t2t = doc["cases"][0]["t2t"]
    sl = (slice(None), slice(doc["cases"][0]["region"]["box"][1][0], 64), slice(None))
    assert t2t["delta2"] == pytest.approx(float(np.mean(delta[sl].astype(np.float32).astype(np.float64) ** 2)), rel=1e-3)
    assert doc["summary"]["n_rows"] == 4 and -1 <= doc["summary"]["spearman"] <= 1
    assert doc["cases"][0]["halves"] == "t2t"
    # F2F halves (clean_even = clean_odd): no T2T block, the table says so; --merge pools saved cases
    f2f = tmp_path / "f2f"
    f2f.mkdir()
    for name in ("even", "odd", "clean", "ground_truth"):
        (f2f / f"{name}.mrc").write_bytes((sim / f"{name}.mrc").read_bytes())
    for name in ("clean_even", "clean_odd"):
        (f2f / f"{name}.mrc").write_bytes((sim / "clean.mrc").read_bytes())
    out2 = tmp_path / "f.json"
    assert bench.main(["--case", str(f2f), str(run), "--n-bootstrap", "200", "--tile", "32", "--json", str(out2)]) == 0
    text = capsys.readouterr().out
    case = json.loads(out2.read_text())["cases"][0]
    assert case["halves"] == "f2f" and "t2t" not in case and "no T2T bias" in text
    assert all("t2t_bias_db" not in r for r in case["rows"])
    assert bench.main(["--merge", str(out), str(out2)]) == 0
    text = capsys.readouterr().out
    assert "Spearman (estimated vs true gain, 8 rows)" in text and "| f2f | n2n |" in text and "| sim | n2n |" in text


def test_evaluate_adds_the_truth_free_block(trained, tmp_path, capsys):
    even, odd, model = str(trained / "even.mrc"), str(trained / "odd.mrc"), str(trained / "model")
    out = tmp_path / "ev" / "metrics.json"
    out.parent.mkdir()
    rc = main(["evaluate", "--raw", str(trained / "full.mrc"), "--restored", str(trained / "full.mrc"), "--even", even,
               "--odd", odd, "--model", model, "--device", "cpu", "--out", str(out)])
    assert rc == 0
    assert "truth-free score" in capsys.readouterr().out
    m = json.loads(out.read_text())["metrics"]
    assert m["tf_gain_db_raw"] == pytest.approx(0.0, abs=1e-9) and "tf_gain_db_restored" in m
    assert (out.parent / "score.json").is_file() and (out.parent / "score.png").is_file()
    bad = tmp_path / "bad" / "metrics.json"
    assert main(["evaluate", "--raw", str(trained / "full.mrc"), "--restored", str(trained / "full.mrc"), "--even", even,
                 "--model", model, "--out", str(bad)]) == 2
    assert "--even, --odd and --model together" in capsys.readouterr().err and not bad.parent.exists()
    # the report shows the truth-free table on its own, before the side-by-side one
    assert main(["report", str(out.parent), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Truth-free score: ev" in page and "estimated PSNR gain over raw (dB), no truth" in page
    assert page.index("Truth-free score") < page.index("Maps side by side")
    assert "frame-split (F2F)" in page  # the estimate's assumption about the halves, from score.json
