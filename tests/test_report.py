"""End-to-end CLI runs of evaluate/match/average/segment/snr on a small phantom, and the HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cryorestore import io, simulate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    ph = simulate.make_phantom((40, 80, 80), 10.0, np.random.default_rng(11))
    rng = np.random.default_rng(0)
    raw = ph.volume + rng.normal(scale=0.3, size=ph.volume.shape).astype(np.float32)
    io.write_mrc(d / "ground_truth.mrc", ph.volume, 10.0)
    io.write_mrc(d / "full.mrc", raw, 10.0)
    for half in ("even", "odd"):  # halves with twice the noise variance, mean = raw in expectation
        io.write_mrc(d / f"{half}.mrc", ph.volume + rng.normal(scale=0.3 * 2**0.5, size=ph.volume.shape).astype(np.float32), 10.0)
    io.write_mrc(d / "restored.mrc", ndimage.gaussian_filter(raw, 1.0), 10.0)
    io.write_mrc(d / "template.mrc", ph.template, 10.0)
    io.write_mrc(d / "membranes.mrc", ph.membranes.astype(np.float32), 10.0)
    io.write_particles(d / "particles.star", ph.particles)
    return d, len(ph.particles)


@pytest.fixture(scope="module")
def run_dir(dataset, tmp_path_factory):
    from conftest import run_cli

    d, _ = dataset
    run = tmp_path_factory.mktemp("run")
    r = run_cli("baseline", "--even", d / "even.mrc", "--odd", d / "odd.mrc", "--full", d / "full.mrc",
                "--truth", d / "ground_truth.mrc", "--out-dir", run / "baselines")
    assert r.returncode == 0, r.stderr
    r = run_cli("evaluate", "--raw", d / "full.mrc", "--restored", d / "restored.mrc", "--truth", d / "ground_truth.mrc",
                "--baselines", run / "baselines", "--match-step", "90",
                "--tilt-range", "-60", "60", "--particles", d / "particles.star", "--template", d / "template.mrc",
                "--membranes", d / "membranes.mrc", "--out", run / "metrics.json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    r = run_cli("match", d / "full.mrc", d / "template.mrc", "--angular-step", "45", "--tilt-range", "-60", "60",
                "--out-dir", run / "match", "--truth", d / "particles.star", "--no-progress", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    r = run_cli("average", d / "ground_truth.mrc", d / "particles.star", "--box", "32", "--out-dir", run / "average",
                "--reference", d / "template.mrc", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    return run


def test_evaluate_writes_required_metrics(run_dir, dataset):
    from cryorestore.evaluate.species import species_names

    doc = json.loads((run_dir / "metrics.json").read_text())
    m = doc["metrics"]
    (sp,) = species_names(io.read_particles(dataset[0] / "particles.star"))
    for name in ("raw", "gaussian", "wiener", "restored"):
        for key in ("psnr", "fsc05_apod", "fsc05", "ssim", "wedge_corr", "snr_db", "membrane_dice",
                    f"sta_half_fsc0143_{sp}", f"sta_ref_fsc05_{sp}", f"pr_auc_{sp}"):
            assert np.isfinite(m[f"{key}_{name}"]), f"{key}_{name}"
    assert m["psnr_restored"] > m["psnr_raw"]  # a Gaussian filter does help on white noise
    assert m["psnr_gaussian"] > m["psnr_raw"] and m["psnr_wiener"] > m["psnr_raw"]
    assert (run_dir / "figures" / "orthoslices.png").is_file() and (run_dir / "figures" / f"pr_{sp}.png").is_file()


def test_evaluate_scores_against_the_clean_map_in_the_sampled_region(dataset, tmp_path):
    from conftest import run_cli

    from cryorestore.evaluate.quality import psnr_vs_clean

    d, _ = dataset
    clean = tmp_path / "clean.mrc"
    io.write_mrc(clean, ndimage.gaussian_filter(io.read_mrc(d / "ground_truth.mrc").data, 0.7), 10.0)
    out = tmp_path / "ev" / "metrics.json"
    r = run_cli("evaluate", "--raw", d / "full.mrc", "--restored", d / "restored.mrc", "--clean", clean,
                "--tilt-range", "-50", "55", "--out", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    c = io.read_mrc(clean).data
    for name, f in (("raw", "full.mrc"), ("restored", "restored.mrc")):
        ref = psnr_vs_clean(io.read_mrc(d / f).data, c, (-50.0, 55.0))
        assert doc["metrics"][f"psnr_clean_{name}"] == pytest.approx(ref, abs=1e-6)
    assert doc["metrics"]["psnr_clean_restored"] > doc["metrics"]["psnr_clean_raw"]
    assert "psnr_clean" in r.stdout and len(json.loads((out.parent / "curves.json").read_text())["raw_vs_clean_error"]) > 10
    bad = tmp_path / "bad" / "metrics.json"
    r = run_cli("evaluate", "--raw", d / "full.mrc", "--restored", d / "restored.mrc", "--clean", clean, "--out", bad)
    assert r.returncode == 2 and "--tilt-range" in r.stderr and not bad.exists()


def test_match_cli_outputs(run_dir, dataset):
    m = json.loads((run_dir / "match" / "metrics.json").read_text())
    for key in ("pr_auc", "peak_f1", "n_peaks"):
        assert key in m
    assert 0.0 <= m["pr_auc"] <= 1.0 and m["n_rotations"] > 0
    peaks = io.read_particles(run_dir / "match" / "peaks.star")
    assert len(peaks) == m["n_peaks"] and io.STAR_SCORE in peaks.columns
    assert io.read_mrc(run_dir / "match" / "scores.mrc").voxel_size == pytest.approx(10.0)


def test_average_cli_outputs(run_dir):
    m = json.loads((run_dir / "average" / "metrics.json").read_text())
    assert m["ref_fsc05"] > 0.25
    assert io.read_mrc(run_dir / "average" / "average.mrc").shape == (32, 32, 32)


def test_report_inlines_every_image(run_dir, tmp_path):
    from conftest import run_cli

    r = run_cli("report", run_dir, "--out", tmp_path / "report.html")
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "report.html").read_text()
    srcs = re.findall(r"<img[^>]*src='([^']*)'", text)
    pngs = list(run_dir.rglob("*.png"))
    assert len(pngs) >= 4 and len(srcs) == len(pngs)
    assert all(s.startswith("data:image/png;base64,") and len(s) > 1000 for s in srcs)
    assert "psnr_raw" in text and "match.pr_auc" in text and "average.half_fsc05" in text
    # raw, the baselines and the restored map side by side, in that order
    side = text[text.index("Maps side by side"):]
    heads = re.findall(r"<th>([^<]*)</th>", side[: side.index("</tr>")])
    assert heads == ["figure", "raw", "gaussian", "wiener", "restored"]
    # several runs: one column each
    r = run_cli("report", run_dir, run_dir / "match", "--out", tmp_path / "two.html")
    assert r.returncode == 0, r.stderr


def test_report_draws_orthoslices_for_a_denoise_run(dataset, tmp_path):
    from conftest import run_cli

    d, _ = dataset
    run = tmp_path / "denoise_run"
    run.mkdir()
    (run / "restored.mrc").write_bytes((d / "restored.mrc").read_bytes())
    io.write_text(run / "metrics.json", json.dumps({"metrics": {"psnr_raw": 1.0}, "inputs": {"raw": str(d / "full.mrc")}}))
    r = run_cli("report", run)
    assert r.returncode == 0, r.stderr
    text = (run / "report.html").read_text()
    assert text.count("data:image/png;base64,") == 2 and "orthoslices" in text


def test_snr_and_segment_cli(dataset, tmp_path):
    from conftest import run_cli

    d, _ = dataset
    r = run_cli("snr", d / "full.mrc", "--box", "8", "--truth", d / "ground_truth.mrc", "--particles", d / "particles.star",
                "--out", tmp_path / "snr.json")
    assert r.returncode == 0, r.stderr
    assert "dB" in r.stdout and "snr_db" in json.loads((tmp_path / "snr.json").read_text())
    r = run_cli("segment", d / "ground_truth.mrc", "--out", tmp_path / "seg.mrc", "--truth", d / "membranes.mrc",
                "--metrics", tmp_path / "seg.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "seg.json").read_text())["dice"] > 0.7


def test_bad_input_exits_2_without_output(dataset, tmp_path):
    from conftest import run_cli

    d, _ = dataset
    big = io.write_mrc(tmp_path / "big.mrc", np.zeros((48, 48, 48), np.float32), 10.0)
    r = run_cli("match", d / "full.mrc", big, "--angular-step", "30", "--out-dir", tmp_path / "m")
    assert r.returncode == 2 and "larger than the tomogram" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
    small = io.write_mrc(tmp_path / "small.mrc", np.ones((8, 8, 8), np.float32), 10.0)
    r = run_cli("evaluate", "--raw", d / "full.mrc", "--restored", small, "--out", tmp_path / "x.json")
    assert r.returncode == 2 and not (tmp_path / "x.json").exists()
    r = run_cli("report", tmp_path / "missing")
    assert r.returncode == 2


def test_side_by_side_orders_maps_and_figures():
    from cryorestore.report import side_by_side

    m = {"psnr_restored": 3.0, "psnr_raw": 1.0, "psnr_wiener": 2.0, "zeta_raw": 5.0, "zeta_restored": 6.0,
         "pr_auc_ribosome_gaussian": 0.4, "pr_auc_ribosome_raw": 0.2, "std_ratio": 1.0,
         "fsc05_raw_vs_restored": 0.3, "note_raw": "text", "only_raw": 1.0}
    cols, rows = side_by_side(m)
    assert cols == ["raw", "gaussian", "wiener", "restored"]
    assert [r[0] for r in rows] == ["psnr", "pr_auc_ribosome", "zeta"]
    assert rows[0][1] == [1.0, None, 2.0, 3.0] and rows[1][1] == [0.2, 0.4, None, None]
