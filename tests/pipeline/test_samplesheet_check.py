"""`cryorestore samplesheet check`: accepts good sheets, rejects bad rows with one clear line each and exit 2."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cryorestore import io, samplesheet
from cryorestore.cli import main

ASSET = Path(__file__).resolve().parents[2] / "assets" / "samplesheet_test.csv"
RNG = np.random.default_rng(7)


def mrc(path: Path, voxel: float = 2.5, shape=(6, 8, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_mrc(path, RNG.standard_normal(shape).astype(np.float32), voxel)
    return path


def materialise(sheet: Path, base: Path, voxel: float = 2.5) -> None:
    """Create every local file a sheet names (MRC with a random map, .tlt with angles)."""
    with open(sheet, newline="") as fh:
        for row in csv.DictReader(fh):
            for col in ("even", "odd", "tilt_series", "tomogram", "full", "template"):
                if row.get(col) and not samplesheet.is_url(row[col]):
                    mrc(base / row[col], voxel)
            if row.get("angles"):
                io.write_tlt(base / row["angles"], np.arange(-60, 61, 20.0))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = main(["samplesheet", "check", *argv])
    captured = capsys.readouterr()
    return code, [l for l in captured.err.splitlines() if l.strip()], captured.out


@pytest.fixture
def base(tmp_path):
    shutil.copy(ASSET, tmp_path / "sheet.csv")
    materialise(tmp_path / "sheet.csv", tmp_path)
    return tmp_path


def test_shipped_test_sheet_is_good_and_normalised(base, capsys):
    out = base / "valid.csv"
    code, err, stdout = run(capsys, str(base / "sheet.csv"), "--base-dir", str(base), "--out", str(out))
    assert code == 0, err
    assert "OK, 5 tomogram(s)" in stdout and "4 training group(s)" in stdout
    rows = list(csv.DictReader(open(out)))
    assert [r["id"] for r in rows] == ["TS_01", "TS_02", "TS_03", "TS_04", "TS_05"]
    assert list(rows[0]) == list(samplesheet.VALID_COLUMNS)
    assert [r["group"] for r in rows] == ["lamella_A", "lamella_A", "TS_03", "TS_04", "TS_05"]
    assert [r["mode"] for r in rows] == ["halves"] * 3 + ["tilt_series", "single"]
    ranges = [(r["tilt_min"], r["tilt_max"]) for r in rows]
    assert ranges == [("-60", "60"), ("-60", "60"), ("", ""), ("-60", "60"), ("-54", "54")]  # group's; none; angles file
    assert rows[0]["even"] == str((base / "data/TS_01_even.mrc").resolve())
    assert rows[3]["angles"] == str((base / "data/TS_04.tlt").resolve()) and rows[3]["even"] == ""
    assert all(float(r["voxel_size"]) == 2.5 for r in rows)  # read from the MRC headers


def test_relative_paths_follow_the_current_folder_by_default(base, capsys, monkeypatch):
    monkeypatch.chdir(base)
    code, err, _ = run(capsys, "sheet.csv")
    assert code == 0, err
    monkeypatch.chdir(base / "data")
    code, err, _ = run(capsys, str(base / "sheet.csv"))
    assert code == 2 and len(err) == 6  # 5 rows with missing files + the summary line


def test_urls_are_not_checked_but_local_files_are(tmp_path, capsys):
    mrc(tmp_path / "a_odd.mrc")
    sheet = write(tmp_path / "s.csv",
                  "id,even,odd,voxel_size\n"
                  "A,s3://bucket/run/a_even.mrc,a_odd.mrc,2.5\n"
                  "B,https://host/b_even.mrc,http://host/b_odd.mrc,\n"
                  "C,s3://bucket/c_even.mrc,c_odd.mrc,\n")
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(tmp_path))
    assert code == 2
    assert err[0] == f"s.csv line 4 (C): odd file {tmp_path.resolve() / 'c_odd.mrc'} does not exist"
    assert err[-1].startswith("cryorestore samplesheet: error: 1 problem(s) in s.csv")


def test_missing_file_duplicate_id_and_bad_values_one_line_per_row(base, capsys):
    (base / "data/TS_02_odd.mrc").unlink()
    sheet = write(base / "bad.csv",
                  "id,even,odd,group,voxel_size\n"
                  "TS_01,data/TS_01_even.mrc,data/TS_01_odd.mrc,,\n"
                  "TS_02,data/TS_02_even.mrc,data/TS_02_odd.mrc,,\n"
                  "TS_01,data/TS_03_even.mrc,data/TS_03_odd.mrc,,\n"
                  "TS 4,data/TS_03_even.mrc,,,-1\n"
                  "TS_05,data/TS_03_even.mrc,data/TS_03_odd.mrc,,\n"
                  "TS_06,data/TS_03_even.mrc,data/TS_03_odd.tlt,,\n"
                  "TS_07,data/TS_03_even.mrc\n")
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(base))
    assert code == 2
    assert len(err) == 6, err  # five bad rows + the summary
    assert err[0] == f"bad.csv line 3 (TS_02): odd file {(base / 'data/TS_02_odd.mrc').resolve()} does not exist"
    assert err[1] == "bad.csv line 4 (TS_01): id 'TS_01' is already used on line 2; ids must be unique"
    assert "id 'TS 4' may hold only letters" in err[2] and "has only even" in err[2] and "voxel_size '-1'" in err[2]
    assert err[3] == "bad.csv line 7 (TS_06): odd 'data/TS_03_odd.tlt' should end in .mrc/.rec/.st/.ali/.map/.mrcs/.zarr"
    assert err[4] == "bad.csv line 8: has 2 fields but the header has 5"
    assert err[5] == "cryorestore samplesheet: error: 5 problem(s) in bad.csv; fix the row(s) above"


@pytest.mark.parametrize(
    "header, expected",
    [
        ("id,even,odd,colour", "unknown column(s) 'colour'; allowed: id, even, odd, tilt_series, angles"),
        ("sample,even,odd", "unknown column(s) 'sample'"),
        ("id,even,group", "the header has 'even' but not 'odd'; both are needed"),
        ("id,tilt_series,group", "the header has 'tilt_series' but not 'angles'"),
        ("id,group", "needs the columns even,odd (half tomograms), tilt_series,angles or tomogram"),
        ("id,even,odd,even", "column(s) even appear more than once"),
        ("even,odd", "the header has no 'id' column"),
    ],
)
def test_bad_columns_rejected_with_one_line(tmp_path, capsys, header, expected):
    sheet = write(tmp_path / "c.csv", header + "\nA,b,c\n")
    code, err, _ = run(capsys, str(sheet))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("cryorestore samplesheet: error: ") and expected in err[0]


def test_empty_sheets_rejected(tmp_path, capsys):
    assert run(capsys, str(write(tmp_path / "e.csv", "")))[0] == 2
    code, err, _ = run(capsys, str(write(tmp_path / "h.csv", "id,even,odd\n")))
    assert code == 2 and "no rows under the header" in err[0]
    code, err, _ = run(capsys, str(tmp_path / "absent.csv"))
    assert code == 2 and "does not exist" in err[0]


def test_mixed_voxel_sizes_in_a_group_rejected(tmp_path, capsys):
    for name, voxel in (("a", 2.5), ("b", 2.5), ("c", 3.1), ("d", 3.1)):
        mrc(tmp_path / f"{name}_even.mrc", voxel)
        mrc(tmp_path / f"{name}_odd.mrc", voxel)
    sheet = write(tmp_path / "g.csv",
                  "id,even,odd,group,voxel_size\n"
                  "A,a_even.mrc,a_odd.mrc,g1,\n"
                  "B,b_even.mrc,b_odd.mrc,g1,\n"
                  "C,c_even.mrc,c_odd.mrc,g1,\n"
                  "D,d_even.mrc,d_odd.mrc,,\n"           # its own group: 3.1 Å is fine
                  "E,s3://x/e_even.mrc,s3://x/e_odd.mrc,g1,2.6\n")  # URL: voxel size from the column
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(tmp_path))
    assert code == 2 and len(err) == 3, err
    assert err[0] == ("g.csv line 4 (C): voxel size 3.1 Å differs from 2.5 Å of line 2 (A) in group 'g1'; "
                      "a shared model needs one voxel size")
    assert err[1].startswith("g.csv line 6 (E): voxel size 2.6 Å differs from 2.5 Å")


def test_voxel_size_column_must_agree_with_header_and_halves_share_a_grid(tmp_path, capsys):
    mrc(tmp_path / "e.mrc", 2.5)
    mrc(tmp_path / "o.mrc", 2.5)
    mrc(tmp_path / "o_small.mrc", 2.5, shape=(6, 8, 8))
    mrc(tmp_path / "o_vox.mrc", 2.0)
    sheet = write(tmp_path / "v.csv",
                  "id,even,odd,voxel_size\n"
                  "A,e.mrc,o.mrc,2.5\n"
                  "B,e.mrc,o.mrc,5.0\n"
                  "C,e.mrc,o_small.mrc,\n"
                  "D,e.mrc,o_vox.mrc,\n")
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(tmp_path))
    assert code == 2 and len(err) == 4, err
    assert "voxel_size 5 Å disagrees with the even header (2.5 Å)" in err[0]
    assert "odd has shape (6, 8, 8) but even has (6, 8, 10)" in err[1]
    assert "odd has voxel size 2 Å but even has 2.5 Å" in err[2]


def test_group_name_may_not_capture_an_ungrouped_id(tmp_path, capsys):
    for n in "ab":
        mrc(tmp_path / f"{n}_even.mrc")
        mrc(tmp_path / f"{n}_odd.mrc")
    sheet = write(tmp_path / "g.csv", "id,even,odd,group\nA,a_even.mrc,a_odd.mrc,\nB,b_even.mrc,b_odd.mrc,A\n")
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(tmp_path))
    assert code == 2 and "id 'A' is also the group of other rows" in err[0]
    write(sheet, "id,even,odd,group\nA,a_even.mrc,a_odd.mrc,A\nB,b_even.mrc,b_odd.mrc,A\n")
    assert run(capsys, str(sheet), "--base-dir", str(tmp_path))[0] == 0


def test_both_row_kinds_in_one_row_rejected_and_no_file_check(tmp_path, capsys):
    sheet = write(tmp_path / "m.csv",
                  "id,even,odd,tilt_series,angles\n"
                  "A,a_e.mrc,a_o.mrc,a.st,a.tlt\n"
                  "B,,,b.st,b.tlt\n")
    code, err, _ = run(capsys, str(sheet), "--no-file-check")
    assert code == 2 and len(err) == 2 and "fill one of even,odd / tilt_series,angles / tomogram, not even,odd and tilt_series,angles" in err[0]
    write(sheet, "id,even,odd,tilt_series,angles\nB,,,b.st,b.tlt\n")
    assert run(capsys, str(sheet), "--no-file-check")[0] == 0
    assert run(capsys, str(sheet))[0] == 2


def test_bad_row_writes_no_output(base, capsys):
    out = base / "valid.csv"
    (base / "data/TS_03_even.mrc").unlink()
    assert run(capsys, str(base / "sheet.csv"), "--base-dir", str(base), "--out", str(out))[0] == 2
    assert not out.exists()


def test_command_line_exit_code(base):
    (base / "data/TS_01_even.mrc").unlink()
    proc = subprocess.run([sys.executable, "-m", "cryorestore", "samplesheet", "check", "sheet.csv"],
                          cwd=base, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("sheet.csv line 2 (TS_01): even file")


# ----------------------------------------------------------------------------------------------
# single-map rows (id,tomogram) and per-row tilt ranges
# ----------------------------------------------------------------------------------------------
def test_single_map_rows_are_a_third_kind(tmp_path, capsys):
    mrc(tmp_path / "a.mrc", 13.48)
    mrc(tmp_path / "b_even.mrc", 13.48)
    mrc(tmp_path / "b_odd.mrc", 13.48)
    sheet = write(tmp_path / "s.csv",
                  "id,tomogram,even,odd,group,portal_dataset,portal_run,portal_tomograms\n"
                  "A,a.mrc,,,,10000,TS_026,5231\n"
                  "B,,b_even.mrc,b_odd.mrc,,10000,TS_027,5232;5233\n"
                  "C,s3://bucket/10000/TS_028/c.mrc,,,,,,\n")
    out = tmp_path / "valid.csv"
    code, err, stdout = run(capsys, str(sheet), "--base-dir", str(tmp_path), "--out", str(out))
    assert code == 0, err
    assert "1 half-tomogram pair, 2 single maps" in stdout
    rows = list(csv.DictReader(open(out)))
    assert [r["mode"] for r in rows] == ["single", "halves", "single"]
    assert rows[0]["tomogram"] == str((tmp_path / "a.mrc").resolve()) and rows[0]["even"] == ""
    assert rows[0]["voxel_size"] == "13.48" and rows[2]["voxel_size"] == ""
    assert (rows[1]["portal_dataset"], rows[1]["portal_run"], rows[1]["portal_tomograms"]) == ("10000", "TS_027", "5232;5233")


def test_single_map_row_errors(tmp_path, capsys):
    mrc(tmp_path / "a.mrc")
    sheet = write(tmp_path / "s.csv",
                  "id,tomogram,even,odd,full,portal_dataset\n"
                  "A,a.mrc,a.mrc,a.mrc,,\n"        # two kinds
                  "B,a.mrc,,,a.mrc,\n"             # full on a single row
                  "C,a.tlt,,,,\n"                  # not an MRC name
                  "D,a.mrc,,,,ten thousand\n"      # bad portal id
                  "E,missing.mrc,,,,\n")
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(tmp_path))
    assert code == 2 and len(err) == 6, err
    assert "fill one of even,odd / tilt_series,angles / tomogram, not even,odd and tomogram" in err[0]
    assert "a tomogram row has no 'full' column" in err[1]
    assert "tomogram 'a.tlt' should end in .mrc" in err[2]
    assert "portal_dataset and portal_tomograms must be portal ids" in err[3]
    assert err[4].endswith(f"tomogram file {(tmp_path / 'missing.mrc').resolve()} does not exist")


def test_single_and_half_rows_may_not_share_a_group(tmp_path, capsys):
    mrc(tmp_path / "a.mrc")
    mrc(tmp_path / "e.mrc")
    mrc(tmp_path / "o.mrc")
    sheet = write(tmp_path / "g.csv", "id,tomogram,even,odd,group\nA,a.mrc,,,g\nB,,e.mrc,o.mrc,g\n")
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(tmp_path))
    assert code == 2 and len(err) == 2, err
    assert err[0] == ("g.csv line 3 (B): a halves row in group 'g' with the single row of line 2 (A); a shared "
                      "model trains on single maps only, so give them different groups")


def test_tilt_range_per_row_filled_from_angles_and_checked(tmp_path, capsys):
    mrc(tmp_path / "ts.st")
    io.write_tlt(tmp_path / "ts.tlt", np.arange(-54, 67, 3.0))
    mrc(tmp_path / "a.mrc")
    sheet = write(tmp_path / "t.csv",
                  "id,tilt_series,angles,tomogram,tilt_min,tilt_max\n"
                  "TS,ts.st,ts.tlt,,,\n"
                  "A,,,a.mrc,-45,45.5\n"
                  "B,,,a.mrc,,\n")
    out = tmp_path / "valid.csv"
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(tmp_path), "--out", str(out))
    assert code == 0, err
    rows = {r["id"]: r for r in csv.DictReader(open(out))}
    assert (rows["TS"]["tilt_min"], rows["TS"]["tilt_max"]) == ("-54", "66")   # from the angles file
    assert (rows["A"]["tilt_min"], rows["A"]["tilt_max"]) == ("-45", "45.5")
    assert (rows["B"]["tilt_min"], rows["B"]["tilt_max"]) == ("", "")          # the pipeline's --tilt_min/--tilt_max


def test_bad_tilt_ranges_one_line_each(tmp_path, capsys):
    mrc(tmp_path / "ts.st")
    io.write_tlt(tmp_path / "ts.tlt", np.arange(-54, 67, 3.0))
    mrc(tmp_path / "a.mrc")
    sheet = write(tmp_path / "t.csv",
                  "id,tilt_series,angles,tomogram,tilt_min,tilt_max\n"
                  "TS,ts.st,ts.tlt,,-60,60\n"
                  "A,,,a.mrc,-45,\n"
                  "B,,,a.mrc,60,-60\n"
                  "C,,,a.mrc,minus,60\n")
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(tmp_path))
    assert code == 2 and len(err) == 5, err
    assert "tilt_min/tilt_max -60/60 disagree with the angles file (-54 to 66 degrees)" in err[0]
    assert "give both tilt_min and tilt_max (degrees) or neither" in err[1]
    assert "tilt range 60 -60 makes no sense" in err[2]
    assert "tilt_min/tilt_max 'minus'/'60' are not numbers of degrees" in err[3]
    code, err, _ = run(capsys, str(write(tmp_path / "h.csv", "id,tomogram,tilt_min\nA,a.mrc,-60\n")))
    assert code == 2 and "the header has 'tilt_min' but not 'tilt_max'" in err[0]


def test_one_tilt_range_per_group(tmp_path, capsys):
    for n in "abcd":
        mrc(tmp_path / f"{n}.mrc")
    sheet = write(tmp_path / "g.csv",
                  "id,tomogram,group,tilt_min,tilt_max\n"
                  "A,a.mrc,g1,-60,60\n"
                  "B,b.mrc,g1,,\n"          # takes g1's range
                  "C,c.mrc,g2,-60,60\n"
                  "D,d.mrc,g2,-50,60\n")
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(tmp_path))
    assert code == 2 and len(err) == 2, err
    assert err[0] == ("g.csv line 5 (D): tilt range -50 to 60 degrees differs from -60 to 60 of line 4 (C) in "
                      "group 'g2'; a shared model needs one tilt range, so split the group")
    write(sheet, "id,tomogram,group,tilt_min,tilt_max\nA,a.mrc,g1,-60,60\nB,b.mrc,g1,,\n")
    out = tmp_path / "valid.csv"
    assert run(capsys, str(sheet), "--base-dir", str(tmp_path), "--out", str(out))[0] == 0
    assert [(r["tilt_min"], r["tilt_max"]) for r in csv.DictReader(open(out))] == [("-60", "60")] * 2


def test_ome_zarr_stores_local_and_remote(tmp_path, capsys):
    """Tomogram columns take OME-Zarr stores: local ones are read for their level-0 voxel size and grid."""
    pytest.importorskip("zarr")
    from cryorestore import volume_io

    data = np.random.default_rng(0).normal(size=(8, 10, 12)).astype(np.float32)
    for name in ("e.zarr", "o.zarr"):
        volume_io.write_ome_zarr(tmp_path / name, data, 7.84)
    volume_io.write_ome_zarr(tmp_path / "small.zarr", data[:6], 7.84)
    sheet = write(tmp_path / "s.csv",
                  "id,tomogram,even,odd\n"
                  "A,,e.zarr,o.zarr\n"
                  "B,s3://cryoet-data-portal-public/10000/TS_026/Reconstructions/VoxelSpacing13.480/Tomograms/100/TS_026.zarr,,\n")
    out = tmp_path / "valid.csv"
    code, err, _ = run(capsys, str(sheet), "--base-dir", str(tmp_path), "--out", str(out))
    assert code == 0, err
    rows = list(csv.DictReader(open(out)))
    assert rows[0]["even"] == str((tmp_path / "e.zarr").resolve()) and rows[0]["voxel_size"] == "7.84"
    assert rows[1]["tomogram"].endswith("TS_026.zarr") and rows[1]["voxel_size"] == ""
    bad = write(tmp_path / "bad.csv", "id,even,odd\nA,e.zarr,small.zarr\nB,e.zarr,absent.zarr\n")
    code, err, _ = run(capsys, str(bad), "--base-dir", str(tmp_path))
    assert code == 2
    assert "odd has shape (6, 10, 12) but even has (8, 10, 12)" in err[0]
    assert f"odd OME-Zarr store {(tmp_path / 'absent.zarr').resolve()} does not exist" in err[1]
