"""`cryorestore fsc`: agreement with an independent numpy FSC, CSV format, clear errors."""

from __future__ import annotations

import numpy as np

from cryorestore import io
from test_fourier import np_fsc_loop


def test_fsc_cli_matches_numpy(tmp_path, rng, write_map, cli):
    a = rng.normal(size=(20, 24, 22)).astype(np.float32)
    b = (a + rng.normal(size=a.shape)).astype(np.float32)
    pa, pb = write_map("a.mrc", a, 8.0), write_map("b.mrc", b, 8.0)
    out = tmp_path / "fsc.csv"
    res = cli("fsc", pa, pb, "--out", out, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "FSC=0.5" in res.stdout and "FSC=0.143" in res.stdout and "Å" in res.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "frequency,fsc"
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert table.shape == (11, 2)
    assert np.allclose(table[:, 0], np.arange(11) / 20)
    assert np.allclose(table[:, 1], np_fsc_loop(a.astype(np.float64), b.astype(np.float64)), atol=1e-4)


def test_fsc_cli_with_mask(tmp_path, rng, write_map, cli):
    a = rng.normal(size=(16, 16, 16)).astype(np.float32)
    mask = np.zeros_like(a)
    mask[4:12, 4:12, 4:12] = 1
    res = cli("fsc", write_map("a.mrc", a), write_map("b.mrc", a), "--mask", write_map("m.mrc", mask))
    assert res.returncode == 0, res.stderr


def _assert_one_line_error(res, out_path, match):
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0], res.stderr
    assert not out_path.exists()
    assert not any(p.name.startswith(".") for p in out_path.parent.iterdir())


def test_fsc_cli_bad_inputs(tmp_path, rng, write_map, cli):
    a = write_map("a.mrc", rng.normal(size=(8, 8, 8)).astype(np.float32))
    other = write_map("c.mrc", rng.normal(size=(8, 8, 9)).astype(np.float32))
    nan_data = rng.normal(size=(8, 8, 8)).astype(np.float32)
    nan_data[0, 0, 0] = np.nan
    nan = write_map("n.mrc", nan_data)
    junk = tmp_path / "junk.mrc"
    junk.write_text("not an mrc\n" * 200)
    out = tmp_path / "fsc.csv"
    _assert_one_line_error(cli("fsc", a, tmp_path / "missing.mrc", "--out", out), out, "does not exist")
    _assert_one_line_error(cli("fsc", a, junk, "--out", out), out, "not a readable MRC")
    _assert_one_line_error(cli("fsc", a, nan, "--out", out), out, "NaN")
    _assert_one_line_error(cli("fsc", a, other, "--out", out), out, "shape")
    vs = write_map("v.mrc", io.read_mrc(a).data, 12.0)
    _assert_one_line_error(cli("fsc", a, vs, "--out", out), out, "voxel size")


def test_python_m_and_help(cli):
    res = cli("--help")
    assert res.returncode == 0 and "fsc" in res.stdout
    assert cli("fsc", "--help").returncode == 0


def test_usage_errors_are_one_line(cli):
    res = cli("fsc", "only_one.mrc")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "required" in lines[0] and "--help" in lines[0]
