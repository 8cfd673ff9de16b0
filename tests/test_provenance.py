"""Provenance beside restored maps, `cryorestore mean` (the pipeline's raw map of a half pair) and bin/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cryorestore import __version__, io, provenance
from cryorestore.cli import main
from cryorestore.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_mean_matches_float64_reference_and_keeps_voxel_size(tmp_path, rng, capsys):
    a = rng.normal(3.0, 2.0, size=(9, 12, 11)).astype(np.float32)
    b = rng.normal(-1.0, 0.5, size=(9, 12, 11)).astype(np.float32)
    io.write_mrc(tmp_path / "a.mrc", a, 13.48)
    io.write_mrc(tmp_path / "b.mrc", b, 13.48)
    assert main(["mean", str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc"), "--out", str(tmp_path / "m.mrc")]) == 0
    m = io.read_mrc(tmp_path / "m.mrc")
    np.testing.assert_allclose(m.data, (a.astype(np.float64) + b.astype(np.float64)) / 2, rtol=0, atol=1e-6)
    assert m.voxel_size == pytest.approx(13.48, rel=1e-5)


def test_mean_rejects_other_grids_and_writes_nothing(tmp_path, rng, capsys):
    io.write_mrc(tmp_path / "a.mrc", rng.normal(size=(8, 8, 8)), 2.0)
    io.write_mrc(tmp_path / "b.mrc", rng.normal(size=(8, 8, 9)), 2.0)
    io.write_mrc(tmp_path / "c.mrc", rng.normal(size=(8, 8, 8)), 3.0)
    for other in ("b.mrc", "c.mrc"):
        assert main(["mean", str(tmp_path / "a.mrc"), str(tmp_path / other), "--out", str(tmp_path / "m.mrc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "shape" in err[0] and "voxel size 2 Å" in err[1]
    assert main(["mean", str(tmp_path / "a.mrc"), "--out", str(tmp_path / "m.mrc")]) == 2
    assert not (tmp_path / "m.mrc").exists()


def test_single_map_train_then_predict_writes_provenance(tmp_path, rng, capsys):
    """isonet trains from one map (`train --even X`, no --odd); predict writes OUT.provenance.json."""
    # 48 voxels along y hold a training box (16³ around crops of 8), a one-crop gap and the validation slab
    tomo = io.write_mrc(tmp_path / "TS_026.mrc", rng.normal(size=(32, 48, 32)).astype(np.float32), 13.48)
    model = tmp_path / "model"
    assert main(["train", "--even", str(tomo), "--method", "isonet", "--model", "unet",
                 "--model-option", "base_channels=4", "--model-option", "depth=1", "--tilt-range", "-54", "54",
                 "--epochs", "1", "--subtomo-size", "8", "--n-subtomos", "4", "--batch-size", "2",
                 "--noise-schedule", "0:0.1", "--no-progress", "--device", "cpu", "--out", str(model)]) == 0
    out = tmp_path / "restored" / "TS_026_restored.mrc"
    assert main(["predict", str(model), "--even", str(tomo), "--out", str(out), "--tile", "16", "--overlap", "4",
                 "--source", "dataset=10000", "--source", "run=TS_026", "--source", "tomograms=5261",
                 "--no-progress", "--device", "cpu"]) == 0
    prov_path = tmp_path / "restored" / "TS_026_restored.provenance.json"
    assert prov_path == provenance.provenance_path(out) and prov_path.is_file()
    prov = json.loads(prov_path.read_text())
    assert prov["format"] == provenance.FORMAT
    assert prov["source"]["dataset"] == "10000" and prov["source"]["run"] == "TS_026" and prov["source"]["tomograms"] == "5261"
    assert prov["source"]["files"]["even"] == {"path": str(tomo.resolve()), "bytes": tomo.stat().st_size}
    assert "odd" not in prov["source"]["files"]
    assert prov["method"] == "isonet" and prov["model"] == "unet"
    assert prov["training"]["tilt_range"] == [-54.0, 54.0] and prov["training"]["loss"] == "l1"
    assert len(prov["training"]["weights_sha256"]) == 64
    assert prov["output"] == {"file": "TS_026_restored.mrc", "shape_zyx": [32, 48, 32], "voxel_size_A": pytest.approx(13.48, rel=1e-5)}
    assert prov["software"]["cryorestore"] == __version__ and prov["software"]["torch"]
    assert isinstance(prov["command"], str) and prov["command"]


def test_command_line_and_source_parsing():
    assert provenance.command_line(["/usr/bin/cryorestore", "predict", "m", "--out", "a b.mrc"]) == \
        "cryorestore predict m --out 'a b.mrc'"
    assert provenance.command_line(["/x/cryorestore/__main__.py", "mean"]) == "python -m cryorestore mean"
    assert provenance.parse_source(["dataset=10000", "run = TS_1"]) == {"dataset": "10000", "run": "TS_1"}
    with pytest.raises(InputError, match="is not KEY=VALUE"):
        provenance.parse_source(["10000"])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(ROOT / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def test_bin_versions_writes_the_versions_block():
    proc = subprocess.run(["cryorestore-versions", "CRYORESTORE:TRAIN", "torch"], capture_output=True, text=True,
                          env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == '"CRYORESTORE:TRAIN":' and lines[1] == f"    cryorestore: {__version__}"
    assert lines[2].startswith("    torch: 2.") and len(lines) == 3


def test_bin_raw_map_is_the_mean_of_the_halves(tmp_path, rng):
    e = rng.normal(size=(6, 7, 8)).astype(np.float32)
    o = rng.normal(size=(6, 7, 8)).astype(np.float32)
    io.write_mrc(tmp_path / "e.mrc", e, 5.0)
    io.write_mrc(tmp_path / "o.mrc", o, 5.0)
    if not (Path(sys.executable).parent / "cryorestore").exists():
        pytest.skip("the cryorestore entry point is not installed beside this python")
    proc = subprocess.run(["cryorestore-raw-map", "e.mrc", "o.mrc", "raw.mrc"], cwd=tmp_path, capture_output=True,
                          text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(io.read_mrc(tmp_path / "raw.mrc").data, (e.astype(np.float64) + o) / 2, atol=1e-6)
    bad = subprocess.run(["cryorestore-raw-map", "e.mrc"], cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert bad.returncode == 2 and bad.stderr.startswith("usage: cryorestore-raw-map")


def test_denoise_on_a_single_map_writes_provenance(tmp_path, rng, capsys):
    tomo = io.write_mrc(tmp_path / "full.mrc", rng.normal(size=(32, 48, 32)).astype(np.float32), 10.0)
    out = tmp_path / "run"
    assert main(["denoise", "--even", str(tomo), "--method", "isonet", "--model-option", "base_channels=4",
                 "--model-option", "depth=1", "--epochs", "1", "--subtomo-size", "8", "--n-subtomos", "4",
                 "--batch-size", "2", "--tile", "16", "--overlap", "4", "--no-progress", "--device", "cpu",
                 "--out-dir", str(out)]) == 0
    prov = json.loads((out / "restored.provenance.json").read_text())
    assert prov["method"] == "isonet" and prov["output"]["file"] == "restored.mrc"
    assert set(prov["source"]["files"]) == {"even"} and prov["training"]["model_dir"] == str((out / "model").resolve())
