"""MRC and OME-Zarr reading/writing (cryorestore.volume_io), Fourier binning, and the commands that use them.

The OME-Zarr stores here are built by the tests with zarr directly, laid out as the CryoET Data Portal
writes them (NGFF 0.4, zarr format 2, root ``multiscales`` with z/y/x axes in Å and one ``scale`` per
level, each level binned by 2); nothing touches the network (URLs point at a closed local port or a
local HTTP server).
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from cryorestore import io, volume_io  # noqa: E402
from cryorestore.cli import main  # noqa: E402
from cryorestore.errors import InputError  # noqa: E402
from test_predict import _model_dir  # noqa: E402


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def mean2(a: np.ndarray) -> np.ndarray:
    z, y, x = (n // 2 for n in a.shape)
    return a[:2 * z, :2 * y, :2 * x].reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5))


def portal_store(path: Path, data: np.ndarray, voxel: float, levels: int = 3, dtype=None,
                 scale=None, attrs: bool = True) -> Path:
    """An OME-Zarr store as the portal writes it: levels '0', '1', … (2×2×2 means), NGFF 0.4 metadata."""
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    lvl = np.asarray(data, dtype=np.float64)
    datasets = []
    for k in range(levels):
        arr = lvl.astype(dtype or data.dtype)
        a = g.create_array(str(k), shape=arr.shape, chunks=(16, 16, 16), dtype=arr.dtype,
                           chunk_key_encoding={"name": "v2", "separator": "/"})
        a[:] = arr
        s = list(scale) if scale is not None else [voxel * 2 ** k] * 3
        datasets.append({"path": str(k), "coordinateTransformations": [{"scale": s, "type": "scale"}]})
        lvl = mean2(lvl)
    if attrs:
        g.attrs["multiscales"] = [{"axes": [{"name": n, "type": "space", "unit": "angstrom"} for n in "zyx"],
                                   "datasets": datasets, "name": "/", "version": "0.4"}]
    return path


def check_napari_pyramid(store: Path, voxel: float, shape0: tuple[int, ...]) -> None:
    """What a NGFF 0.4 reader (napari-ome-zarr, neuroglancer) needs, read from the files themselves."""
    assert json.loads((store / ".zgroup").read_text())["zarr_format"] == 2
    ms = json.loads((store / ".zattrs").read_text())["multiscales"]
    assert isinstance(ms, list) and len(ms) == 1
    m = ms[0]
    assert m["version"] == "0.4"
    assert m["axes"] == [{"name": n, "type": "space", "unit": "angstrom"} for n in "zyx"]
    assert len(m["datasets"]) >= 2
    shape = tuple(shape0)
    for k, d in enumerate(m["datasets"]):
        meta = json.loads((store / d["path"] / ".zarray").read_text())
        assert meta["zarr_format"] == 2 and meta["dtype"] == "<f4" and meta["dimension_separator"] == "/"
        assert tuple(meta["shape"]) == shape
        ts = d["coordinateTransformations"]
        assert ts[0]["type"] == "scale" and ts[0]["scale"] == pytest.approx([voxel * 2 ** k] * 3)
        assert all(len(t.get("scale", t.get("translation", []))) == 3 for t in ts)
        if k:
            assert ts[1] == {"type": "translation", "translation": pytest.approx([voxel * (2 ** k - 1) / 2] * 3)}
        shape = tuple(n // 2 for n in shape)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_exit_2(code: int, capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def test_read_portal_store_levels_lazy_and_eager(tmp_path, rng):
    v = rng.normal(size=(24, 40, 36)).astype(np.float32)
    store = portal_store(tmp_path / "tomo.zarr", v, 7.84)
    got = volume_io.read_volume(store)
    assert got.data.dtype == np.float32 and np.array_equal(got.data, v)
    assert got.voxel_size == pytest.approx(7.84) and "level 0" in got.source
    two = volume_io.read_volume(store, level=2)
    np.testing.assert_allclose(two.data, mean2(mean2(v.astype(np.float64))), rtol=1e-6, atol=1e-6)
    assert two.voxel_size == pytest.approx(4 * 7.84) and two.shape == (6, 10, 9)
    lazy = volume_io.read_volume(store, lazy=True)
    assert isinstance(lazy.data, volume_io.LazyLevel) and lazy.shape == v.shape
    np.testing.assert_array_equal(lazy.data[3:9, 5:20, 30:], v[3:9, 5:20, 30:])
    assert np.array_equal(np.asarray(lazy.data), v)
    assert volume_io.volume_header(store, 1) == ((12, 20, 18), pytest.approx(2 * 7.84))
    ms = volume_io.zarr_levels(store)
    assert ms.paths == ("0", "1", "2") and ms.version == "0.4"


def test_lazy_reads_of_a_local_store_decode_one_chunk_at_a_time(tmp_path, rng):
    """Local stores read with zarr's async concurrency at LOCAL_READ_CONCURRENCY (decoded chunks would pile up
    in worker threads' malloc arenas, RESULTS); a URL keeps zarr's own setting; the setting is restored."""
    v = rng.normal(size=(20, 24, 28)).astype(np.float32)
    store = portal_store(tmp_path / "tomo.zarr", v, 5.0, levels=1)
    default = zarr.config.get("async.concurrency")
    seen: list[int] = []

    class Recording:  # wraps the zarr array: records the concurrency in force while a block is read
        def __init__(self, array):
            self.array, self.shape, self.dtype = array, array.shape, array.dtype

        def __getitem__(self, key):
            seen.append(zarr.config.get("async.concurrency"))
            return self.array[key]

    for path, want in ((store, volume_io.LOCAL_READ_CONCURRENCY), (f"file://{store}", default)):
        lazy = volume_io.read_volume(path, lazy=True).data
        assert lazy.concurrency == (None if want == default else want)
        lazy.array = Recording(lazy.array)
        np.testing.assert_array_equal(lazy[2:9, 3:17, 5:], v[2:9, 3:17, 5:])
        assert seen[-1] == want and zarr.config.get("async.concurrency") == default
    assert volume_io.LOCAL_READ_CONCURRENCY < default


def test_nanometre_units_and_leading_axes(tmp_path, rng):
    v = rng.normal(size=(1, 10, 12, 14)).astype(np.float32)
    g = zarr.open_group(str(tmp_path / "t.zarr"), mode="w", zarr_format=2)
    g.create_array("s0", shape=v.shape, dtype="float32")[:] = v
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.5, 0.5]}]}]}]
    got = volume_io.read_volume(tmp_path / "t.zarr")
    assert got.voxel_size == pytest.approx(5.0) and np.array_equal(got.data, v[0])


def test_mrc_lazy_is_a_memory_map_that_outlives_the_file_handle(tmp_path, rng):
    v = rng.normal(size=(12, 14, 16)).astype(np.float32)
    io.write_mrc(tmp_path / "a.mrc", v, 3.0)
    lazy = volume_io.read_volume(tmp_path / "a.mrc", lazy=True)
    assert isinstance(lazy.data, np.memmap) and lazy.voxel_size == pytest.approx(3.0)
    np.testing.assert_array_equal(lazy.data[2:5, :, 7], v[2:5, :, 7])
    with pytest.raises(InputError, match="zarr-level"):
        volume_io.read_volume(tmp_path / "a.mrc", level=1)


def test_integer_store_is_converted_with_a_notice(tmp_path, rng, capsys):
    v = rng.integers(-128, 128, size=(16, 18, 20)).astype(np.int8)
    store = portal_store(tmp_path / "i8.zarr", v, 10.0, levels=1)
    got = volume_io.read_volume(store)
    assert got.data.dtype == np.float32 and np.array_equal(got.data, v.astype(np.float32))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "int8" in err and "converted to float32" in err


def test_reads_over_http_from_a_local_server(tmp_path, rng):
    v = rng.normal(size=(16, 20, 18)).astype(np.float32)
    portal_store(tmp_path / "srv" / "t.zarr", v, 6.0, levels=2)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "srv"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *a, **k: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/t.zarr"
        got = volume_io.read_volume(url, level=1)
        np.testing.assert_allclose(got.data, mean2(v.astype(np.float64)), rtol=1e-6, atol=1e-6)
        assert got.voxel_size == pytest.approx(12.0)
    finally:
        server.shutdown()
        server.server_close()


def test_bad_stores_are_one_line_input_errors(tmp_path, rng):
    v = rng.normal(size=(16, 16, 16)).astype(np.float32)
    with pytest.raises(InputError, match="no NGFF 'multiscales'"):
        volume_io.read_volume(portal_store(tmp_path / "plain.zarr", v, 5.0, attrs=False))
    store = portal_store(tmp_path / "t.zarr", v, 5.0, levels=2)
    with pytest.raises(InputError, match=r"2 level\(s\) \(0..1\); --zarr-level 2 does not exist"):
        volume_io.read_volume(store, level=2)
    shutil.rmtree(store / "1")
    with pytest.raises(InputError, match="level 1 .*missing from the store"):
        volume_io.read_volume(store, level=1)
    with pytest.raises(InputError, match="anisotropic"):
        volume_io.read_volume(portal_store(tmp_path / "an.zarr", v, 5.0, levels=1, scale=[10.0, 5.0, 5.0]))
    with pytest.raises(InputError, match="does not exist"):
        volume_io.read_volume(tmp_path / "absent.zarr")
    nan = v.copy()
    nan[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        volume_io.read_volume(portal_store(tmp_path / "nan.zarr", nan, 5.0, levels=1))
    with pytest.raises(InputError, match="cannot open the OME-Zarr store"):
        volume_io.read_volume(f"http://127.0.0.1:{closed_port()}/t.zarr")
    with pytest.raises(InputError, match="only OME-Zarr stores"):
        volume_io.read_volume(f"http://127.0.0.1:{closed_port()}/t.mrc")


def test_missing_zarr_package_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_zarr(name, *args, **kwargs):
        if name == "zarr":
            raise ImportError("no zarr")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zarr)
    with pytest.raises(InputError, match=r"cryorestore\[zarr\]"):
        volume_io.read_volume("x.zarr")


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def test_write_ome_zarr_pyramid_reads_back(tmp_path, rng):
    v = rng.normal(size=(70, 90, 130)).astype(np.float32)
    out = volume_io.write_volume(tmp_path / "o.zarr", v, 4.5)
    check_napari_pyramid(out, 4.5, v.shape)
    assert volume_io.zarr_levels(out).paths == ("0", "1", "2")  # 130 → 65 → 32: stops at ≤ 64 voxels
    np.testing.assert_array_equal(volume_io.read_volume(out).data, v)
    ref = v.astype(np.float64)
    for k in (1, 2):
        ref = mean2(ref)
        lv = volume_io.read_volume(out, level=k)
        np.testing.assert_allclose(lv.data, ref, rtol=1e-5, atol=1e-6)
        assert lv.voxel_size == pytest.approx(4.5 * 2 ** k)
    # replacing a store keeps only the new one, and nothing else is left in the folder
    volume_io.write_volume(out, 2 * v[:40], 4.5)
    assert volume_io.read_volume(out).shape == (40, 90, 130)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]


def test_failed_write_leaves_nothing(tmp_path, rng, monkeypatch):
    v = rng.normal(size=(20, 20, 20)).astype(np.float32)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(volume_io, "ngff_metadata", boom)
    with pytest.raises(RuntimeError):
        volume_io.write_volume(tmp_path / "o.zarr", v, 2.0)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(InputError, match="not a zarr store"):
        volume_io.write_volume(tmp_path / "file.zarr", v, 2.0)


# --------------------------------------------------------------------------------------------
# Fourier binning
# --------------------------------------------------------------------------------------------
def numpy_fourier_bin(x: np.ndarray, b: int) -> np.ndarray:
    """float64 reference: full complex FFT of the cut volume, keep |k| < m/2 per axis, inverse on the m-grid."""
    m = [n // b for n in x.shape]
    cut = x[tuple(slice(0, b * k) for k in m)].astype(np.float64)
    spec = np.fft.fftn(cut)
    out = np.zeros(m, dtype=complex)
    idx = []
    for n, k in zip(cut.shape, m):
        f = np.rint(np.fft.fftfreq(n) * n).astype(int)
        keep = np.nonzero(np.abs(f) < k / 2)[0]
        idx.append((keep, f[keep] % k))
    (iz, oz), (iy, oy), (ix, ox) = idx
    out[np.ix_(oz, oy, ox)] = spec[np.ix_(iz, iy, ix)]
    return np.fft.ifftn(out).real * (np.prod(m) / np.prod(cut.shape))


@pytest.mark.parametrize("shape,b", [((20, 24, 28), 2), ((21, 26, 35), 2), ((37, 40, 29), 4), ((16, 33, 18), 4)])
def test_fourier_bin_matches_numpy_fft_crop(shape, b, rng):
    x = rng.normal(size=shape).astype(np.float32)
    got = volume_io.fourier_bin(x, b)
    want = numpy_fourier_bin(x, b)
    assert got.shape == tuple(n // b for n in shape) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())
    small = volume_io.fourier_bin(x, b, slab_voxels=100)  # many slabs: the streaming must not matter
    np.testing.assert_allclose(small, got, rtol=0, atol=1e-6)


@pytest.mark.parametrize("m,b,extra", [((10, 12, 14), 2, (1, 0, 1)), ((9, 11, 8), 4, (3, 2, 0))])
def test_binning_a_band_limited_volume_samples_it_on_the_coarse_grid(m, b, extra, rng):
    """A sum of cosines below the new Nyquist, periodic on b·m voxels, sampled at voxels b·j: exact."""
    n = [b * k + e for k, e in zip(m, extra)]  # odd leftovers are cut away
    grids = np.meshgrid(*[np.arange(k) for k in n], indexing="ij")
    coarse = np.meshgrid(*[b * np.arange(k) for k in m], indexing="ij")
    fine, want = np.zeros(n), np.zeros(m)
    for _ in range(12):
        k = [rng.integers(-((q - 1) // 2), (q - 1) // 2 + 1) for q in m]  # |k| < m/2
        amp, phase = rng.normal(), rng.uniform(0, 2 * np.pi)
        fine += amp * np.cos(sum(2 * np.pi * kk * g / (b * q) for kk, g, q in zip(k, grids, m)) + phase)
        want += amp * np.cos(sum(2 * np.pi * kk * g / (b * q) for kk, g, q in zip(k, coarse, m)) + phase)
    got = volume_io.fourier_bin(fine.astype(np.float32), b)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_read_volume_bins_lazily_read_zarr_and_mrc_alike(tmp_path, rng):
    v = rng.normal(size=(22, 30, 26)).astype(np.float32)
    store = portal_store(tmp_path / "t.zarr", v, 3.0, levels=1)
    io.write_mrc(tmp_path / "t.mrc", v, 3.0)
    want = numpy_fourier_bin(v, 2)
    for path in (store, tmp_path / "t.mrc"):
        got = volume_io.read_volume(path, bin=2)
        assert got.voxel_size == pytest.approx(6.0) and "Fourier-binned by 2" in got.source
        np.testing.assert_allclose(got.data, want, atol=2e-6 * np.abs(want).max())


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------
def test_round_trip_portal_zarr_in_restored_zarr_out(tmp_path, rng):
    """predict: a portal-like OME-Zarr (3 levels) in, an OME-Zarr pyramid out, voxel size kept."""
    from cryorestore.modeldir import load_model_dir
    from cryorestore.predict import restore

    model = _model_dir(tmp_path / "m", mean=0.5, std=2.0)
    v = (0.5 + 2.0 * rng.normal(size=(40, 72, 80))).astype(np.float32)
    store = portal_store(tmp_path / "TS_026.zarr", v, 10.0)
    out = tmp_path / "out" / "restored.zarr"
    assert main(["predict", str(model), "--even", str(store), "--out", str(out), "--tile", "16", "--device", "cpu",
                 "--no-progress"]) == 0
    got = volume_io.read_volume(out)
    assert got.voxel_size == pytest.approx(10.0) and got.shape == v.shape
    want = restore(load_model_dir(model), v, None, tile=16, progress=False)
    np.testing.assert_allclose(got.data, want, rtol=1e-5, atol=1e-5)
    check_napari_pyramid(out, 10.0, v.shape)
    prov = json.loads((tmp_path / "out" / "restored.provenance.json").read_text())
    assert prov["output"]["voxel_size_A"] == pytest.approx(10.0) and prov["output"]["file"] == "restored.zarr"
    assert prov["source"]["files"]["even"]["bytes"] > 0 and prov["reading"] == {"zarr_level": 0, "bin": 1}
    # a chosen level, and binning at load: the voxel size follows
    lvl = tmp_path / "out" / "level1.mrc"
    assert main(["predict", str(model), "--even", str(store), "--zarr-level", "1", "--out", str(lvl), "--tile", "16",
                 "--device", "cpu", "--no-progress"]) == 0
    assert io.read_mrc(lvl).voxel_size == pytest.approx(20.0) and io.read_mrc(lvl).shape == (20, 36, 40)
    binned = tmp_path / "out" / "bin2.zarr"
    assert main(["predict", str(model), "--even", str(store), "--bin", "2", "--out", str(binned), "--tile", "16",
                 "--device", "cpu", "--no-progress"]) == 0
    b = volume_io.read_volume(binned)
    assert b.voxel_size == pytest.approx(20.0) and b.shape == (20, 36, 40)
    np.testing.assert_allclose(b.data, restore(load_model_dir(model), volume_io.fourier_bin(v, 2), None, tile=16,
                                                progress=False), rtol=1e-5, atol=1e-5)


def _bad_cases(tmp_path: Path, rng) -> dict[str, tuple[str, list[str], str]]:
    v = rng.normal(size=(16, 16, 16)).astype(np.float32)
    plain = portal_store(tmp_path / "in" / "plain.zarr", v, 5.0, attrs=False)
    store = portal_store(tmp_path / "in" / "t.zarr", v, 5.0, levels=2)
    holed = portal_store(tmp_path / "in" / "holed.zarr", v, 5.0, levels=2)
    shutil.rmtree(holed / "1")
    aniso = portal_store(tmp_path / "in" / "an.zarr", v, 5.0, levels=1, scale=[8.0, 5.0, 5.0])
    return {
        "no multiscales": (str(plain), [], "multiscales"),
        "level out of range": (str(store), ["--zarr-level", "4"], "does not exist"),
        "level missing from the store": (str(holed), ["--zarr-level", "1"], "missing from the store"),
        "anisotropic voxels": (str(aniso), [], "anisotropic"),
        "unreachable URL": (f"http://127.0.0.1:{closed_port()}/t.zarr", [], "cannot open"),
        "missing file:// store": (f"file://{tmp_path}/in/absent.zarr", [], "cannot open"),
    }


def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, rng, capsys):
    model = _model_dir(tmp_path / "m")
    cases = _bad_cases(tmp_path, rng)
    for i, (name, (source, extra, phrase)) in enumerate(cases.items()):
        out_dir = tmp_path / f"out{i}"
        out_dir.mkdir()
        code = main(["predict", str(model), "--even", source, "--out", str(out_dir / "r.zarr"), "--device", "cpu",
                     "--no-progress", *extra])
        line = one_line_exit_2(code, capsys)
        assert phrase in line, (name, line)
        assert list(out_dir.iterdir()) == [], name
        code = main(["baseline", "--even", source, "--odd", source, "--out-dir", str(out_dir / "b"), *extra])
        assert phrase in one_line_exit_2(code, capsys) and list(out_dir.iterdir()) == [], name


def test_integer_zarr_through_predict_says_so(tmp_path, rng, capsys):
    model = _model_dir(tmp_path / "m")
    v = rng.integers(-100, 100, size=(18, 20, 22)).astype(np.int8)
    store = portal_store(tmp_path / "i8.zarr", v, 10.0, levels=1)
    out = tmp_path / "r.mrc"
    assert main(["predict", str(model), "--even", str(store), "--out", str(out), "--tile", "16", "--device", "cpu",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "int8 data; converted to float32" in err and io.read_mrc(out).voxel_size == pytest.approx(10.0)


def test_baseline_and_mean_read_zarr_and_write_zarr(tmp_path, rng):
    v = rng.normal(size=(24, 28, 32)).astype(np.float32)
    w = rng.normal(size=(24, 28, 32)).astype(np.float32)
    e = portal_store(tmp_path / "e.zarr", v, 4.0, levels=2)
    o = portal_store(tmp_path / "o.zarr", w, 4.0, levels=2)
    assert main(["baseline", "--even", str(e), "--odd", str(o), "--zarr-level", "1", "--out-dir", str(tmp_path / "b")]) == 0
    g = io.read_mrc(tmp_path / "b" / "gaussian.mrc")
    assert g.voxel_size == pytest.approx(8.0) and g.shape == (12, 14, 16)
    assert main(["mean", str(e), str(o), "--out", str(tmp_path / "mean.zarr")]) == 0
    m = volume_io.read_volume(tmp_path / "mean.zarr")
    assert m.voxel_size == pytest.approx(4.0)
    np.testing.assert_allclose(m.data, 0.5 * (v.astype(np.float64) + w), rtol=1e-6, atol=1e-6)


def test_denoise_with_bin_records_it_and_writes_zarr(tmp_path, rng):
    tomo = io.write_mrc(tmp_path / "full.mrc", rng.normal(size=(64, 96, 64)), 5.0)
    out = tmp_path / "run"
    assert main(["denoise", "--even", str(tomo), "--method", "isonet", "--model-option", "base_channels=4",
                 "--model-option", "depth=1", "--epochs", "1", "--subtomo-size", "8", "--n-subtomos", "4",
                 "--batch-size", "2", "--tile", "16", "--no-progress", "--device", "cpu", "--bin", "2",
                 "--output-format", "zarr", "--out-dir", str(out)]) == 0
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["bin"] == 2 and cfg["voxel_size"] == pytest.approx(10.0)
    r = volume_io.read_volume(out / "restored.zarr")
    assert r.voxel_size == pytest.approx(10.0) and r.shape == (32, 48, 32)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["voxel_size"] == pytest.approx(10.0) and metrics["bin"] == 2
    assert not (out / "restored.mrc").exists()
