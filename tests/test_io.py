"""MRC/STAR/.tlt input and output: round trips, voxel sizes, atomic writes, clear errors."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from cryorestore import io
from cryorestore.errors import InputError


def test_mrc_round_trip_keeps_data_and_voxel_size(tmp_path, rng):
    data = rng.normal(size=(6, 7, 8)).astype(np.float32)
    path = io.write_mrc(tmp_path / "a.mrc", data, 4.25)
    vol = io.read_mrc(path)
    assert vol.data.dtype == np.float32 and vol.shape == (6, 7, 8)
    assert np.array_equal(vol.data, data) and np.isclose(vol.voxel_size, 4.25)
    with mrcfile.open(path) as m:  # header read by the reference library
        assert np.isclose(float(m.voxel_size.x), 4.25) and np.isclose(float(m.voxel_size.z), 4.25)
    assert io.read_mrc_header(path) == ((6, 7, 8), pytest.approx(4.25))
    assert [p.name for p in tmp_path.iterdir()] == ["a.mrc"]  # no temp file left


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.mrc"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path, rng):
    target = io.write_mrc(tmp_path / "keep.mrc", np.ones((3, 3, 3), np.float32), 1.0)
    with pytest.raises(InputError):
        io.write_mrc(target, np.ones((3, 3, 3)), voxel_size=0)
    assert np.array_equal(io.read_mrc(target).data, np.ones((3, 3, 3)))


@pytest.mark.parametrize(
    "content, match",
    [(None, "does not exist"), (b"this is not an MRC file at all" * 40, "not a readable MRC")],
)
def test_read_mrc_errors(tmp_path, content, match):
    p = tmp_path / "x.mrc"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(InputError, match=match) as err:
        io.read_mrc(p)
    assert "\n" not in str(err.value)


def test_read_mrc_rejects_nans(tmp_path, rng):
    data = rng.normal(size=(4, 4, 4)).astype(np.float32)
    data[1, 2, 3] = np.nan
    p = io.write_mrc(tmp_path / "nan.mrc", data, 1.0)
    with pytest.raises(InputError, match="1 NaN"):
        io.read_mrc(p)


def test_read_mrc_rejects_2d(tmp_path):
    p = io.write_mrc(tmp_path / "img.mrc", np.ones((5, 6), np.float32), 1.0)
    with pytest.raises(InputError, match="3D volume"):
        io.read_mrc(p)


def test_check_same_grid(tmp_path):
    a = io.Volume(np.zeros((4, 4, 4), np.float32), 10.0)
    with pytest.raises(InputError, match="shape"):
        io.check_same_grid(a, io.Volume(np.zeros((4, 4, 5), np.float32), 10.0), "a", "b")
    with pytest.raises(InputError, match="voxel size"):
        io.check_same_grid(a, io.Volume(np.zeros((4, 4, 4), np.float32), 12.0), "a", "b")
    io.check_same_grid(a, io.Volume(np.zeros((4, 4, 4), np.float32), 10.0), "a", "b")


def test_tlt_round_trip_and_errors(tmp_path):
    angles = np.arange(-60, 61, 3.0)
    p = io.write_tlt(tmp_path / "t.tlt", angles)
    assert np.allclose(io.read_tlt(p), angles)
    bad = tmp_path / "bad.tlt"
    bad.write_text("0\nabc\n")
    with pytest.raises(InputError, match="bad.tlt:2"):
        io.read_tlt(bad)
    bad.write_text("0\n120\n")
    with pytest.raises(InputError, match="-90..90"):
        io.read_tlt(bad)


def test_star_round_trip(tmp_path, rng):
    coords = rng.uniform(0, 100, size=(5, 3))
    eulers = rng.uniform(-180, 180, size=(5, 3))
    df = io.particles_frame(coords, eulers, scores=np.arange(5.0))
    p = io.write_particles(tmp_path / "p.star", df)
    back = io.read_particles(p)
    c2, e2 = io.particle_arrays(back)
    assert np.allclose(c2, coords) and np.allclose(e2, eulers)
    assert np.allclose(back[io.STAR_SCORE], np.arange(5.0))
    # RELION column meaning: X is the last array axis
    assert np.allclose(back["rlnCoordinateX"], coords[:, 2])


def test_star_errors(tmp_path):
    p = tmp_path / "x.star"
    p.write_text("data_\nloop_\n_rlnFoo #1\n1\n")
    with pytest.raises(InputError, match="rlnCoordinateX"):
        io.read_particles(p)
    with pytest.raises(InputError, match="does not exist"):
        io.read_particles(tmp_path / "missing.star")


def test_written_files_get_umask_permissions(tmp_path):
    import os
    import stat

    p = io.write_text(tmp_path / "x.txt", "hi")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
