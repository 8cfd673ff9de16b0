"""`cryorestore portal sheet`: a samplesheet from the CryoET Data Portal through the official client.

These tests run offline. The official ``cryoet-data-portal`` client runs unchanged (its models, filter
expressions, query building with gql's DSL and the schema shipped with it); only its transport, the
object that would POST each GraphQL query over HTTP, is replaced by :class:`RecordedPortal`. That
transport answers from recorded portal records in ``tests/fixtures/portal/*.json`` by executing the
client's query against the portal's real schema (the client's ``data/schema.graphql``) with graphql-core,
so every selected field must exist in the schema, every non-null field must be in the records, and enum
values must be the schema's. The records are hand-written from that schema (there is no network here;
see ``tests/fixtures/portal/README.md``): one dataset without halves (10000), one with
``filtered_even``/``filtered_odd`` halves (10301) and one whose runs differ (10302).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from cryorestore import samplesheet
from cryorestore.cli import main

cdp = pytest.importorskip("cryoet_data_portal", reason="the portal client is not installed (pip install 'cryorestore[portal]')")
graphql = pytest.importorskip("graphql")
from gql import Client as GQLClient  # noqa: E402
from gql.transport import Transport  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "portal"
S3 = "s3://cryoet-data-portal-public"


def _matches(value, cond: dict) -> bool:
    """One scalar comparator of the portal's where clauses (IntComparators, StrComparators, ...)."""
    for op, arg in cond.items():
        ok = {"_eq": lambda: value == arg, "_neq": lambda: value != arg, "_in": lambda: value in arg,
              "_nin": lambda: value not in arg, "_gt": lambda: value is not None and value > arg,
              "_gte": lambda: value is not None and value >= arg, "_lt": lambda: value is not None and value < arg,
              "_lte": lambda: value is not None and value <= arg, "_is_null": lambda: (value is None) == arg,
              "_ilike": lambda: re.fullmatch(arg.replace("%", ".*"), str(value), re.I) is not None,
              "_like": lambda: re.fullmatch(arg.replace("%", ".*"), str(value)) is not None}.get(op)
        if ok is None:
            raise NotImplementedError(f"comparator {op} is not handled by the test transport")
        if not ok():
            return False
    return True


class RecordedPortal(Transport):
    """A gql transport that executes each query against the portal schema over recorded records."""

    def __init__(self, schema, tables: dict[str, list[dict]]):
        self.schema = schema
        self.tables = tables
        self.queries: list[str] = []

    def _root(self) -> dict:
        def resolver(table: str):
            def resolve(_info, where=None, **_):
                rows = self.tables.get(table, [])
                for field, cond in (where or {}).items():
                    if not all(k.startswith("_") for k in cond):
                        raise NotImplementedError(f"relationship filter {field} is not handled by the test transport")
                    rows = [r for r in rows if _matches(r.get(field), cond)]
                return rows
            return resolve
        return {name: resolver(name) for name in ("datasets", "runs", "tomograms", "tiltseries")}

    def execute(self, request, *args, **kwargs):
        self.queries.append(graphql.print_ast(request.document))
        result = graphql.graphql_sync(self.schema, graphql.print_ast(request.document), root_value=self._root(),
                                      variable_values=request.variable_values)
        assert not result.errors, f"the portal schema rejects the query or the records: {result.errors}"
        return result


def load_tables(*names: str) -> dict[str, list[dict]]:
    tables: dict[str, list[dict]] = {}
    for name in names:
        for key, rows in json.loads((FIXTURES / name).read_text()).items():
            tables.setdefault(key, []).extend(rows)
    return tables


@pytest.fixture
def portal(monkeypatch):
    """Route the real client's requests to recorded records of datasets 10000, 10301 and 10302."""
    transports: list[RecordedPortal] = []
    tables = load_tables("dataset_10000.json", "dataset_10301.json")

    def get_client(self):
        transports.append(RecordedPortal(self.schema, tables))
        return GQLClient(transport=transports[-1], schema=self.schema)

    monkeypatch.setattr(cdp.Client, "get_client", get_client)
    return transports


def sheet_cmd(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = main(["portal", "sheet", *argv])
    cap = capsys.readouterr()
    return code, [l for l in cap.err.splitlines() if l.strip()], cap.out


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_dataset_without_halves_gives_single_map_rows(portal, tmp_path, capsys):
    out = tmp_path / "sheet.csv"
    code, err, stdout = sheet_cmd(capsys, "--dataset-id", "10000", "--out", str(out))
    assert code == 0, err
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["TS_026", "TS_027"]
    assert err == ["cryorestore portal: run TS_028: no raw tomogram nor filtered_even/filtered_odd halves; left out"]
    first = rows[0]
    assert first["tomogram"] == f"{S3}/10000/TS_026/Reconstructions/VoxelSpacing13.480/Tomograms/100/TS_026.mrc"
    assert (first["even"], first["odd"], first["full"]) == ("", "", "")
    assert (first["voxel_size"], first["tilt_min"], first["tilt_max"]) == ("13.48", "-60", "60")
    assert {r["group"] for r in rows} == {"dataset_10000"}
    assert (first["portal_dataset"], first["portal_run"], first["portal_tomograms"]) == ("10000", "TS_026", "5261")
    assert "2 run(s) of dataset 10000 (0 with even/odd halves, 2 single map(s)) in 1 training group(s)" in stdout
    # the real client sent real queries: by id, then runs, tomograms and tilt series of those runs
    queries = re.sub(r"\s+", "", "\n".join(q for t in portal for q in t.queries))
    assert "datasets(where:{id:{_eq:10000}})" in queries
    assert "runs(where:{datasetId:{_eq:10000}})" in queries
    assert "tomograms(where:{runId:{_in:[261,262,263]}})" in queries
    assert "tiltseries(where:{runId:{_in:[261,262,263]}})" in queries
    # and the sheet passes the samplesheet check (URLs are staged by Nextflow, not opened)
    assert main(["samplesheet", "check", str(out)]) == 0
    checked = samplesheet.check(out)
    assert [r.mode for r in checked] == ["single", "single"]
    assert checked[0].tilt_range == (-60.0, 60.0) and checked[0].voxel_size == 13.48


def test_processing_and_https_urls(portal, tmp_path, capsys):
    out = tmp_path / "sheet.csv"
    code, err, _ = sheet_cmd(capsys, "--dataset-id", "10000", "--processing", "denoised", "--url", "https",
                             "--run", "TS_028", "--run", "TS_026", "--out", str(out))
    assert code == 0, err
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["TS_026", "TS_028"]
    assert rows[0]["tomogram"].startswith("https://files.cryoetdataportal.cziscience.com/10000/TS_026/")
    assert rows[0]["tomogram"].endswith("/Tomograms/101/TS_026.mrc") and rows[0]["portal_tomograms"] == "5262"


def test_dataset_with_halves_gives_even_odd_rows(portal, tmp_path, capsys):
    out = tmp_path / "sheet.csv"
    code, err, _ = sheet_cmd(capsys, "--dataset-id", "10301", "--out", str(out))
    assert code == 0, err
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["Position_10", "Position_11", "Position_12"]
    p10 = rows[0]
    base = f"{S3}/10301/Position_10/Reconstructions/VoxelSpacing7.840/Tomograms"
    assert (p10["even"], p10["odd"], p10["full"], p10["tomogram"]) == (
        f"{base}/201/Position_10_even.mrc", f"{base}/202/Position_10_odd.mrc", f"{base}/200/Position_10.mrc", "")
    assert p10["portal_tomograms"] == "60102;60103;60101"
    assert rows[2]["tomogram"].endswith("/Position_12/Reconstructions/VoxelSpacing7.840/Tomograms/200/Position_12.mrc")
    # halves and a single map cannot share a model: two groups, each passes the check
    assert [r["group"] for r in rows] == ["dataset_10301_halves_7.84A_tilt-54_54"] * 2 + ["dataset_10301_single_7.84A_tilt-54_54"]
    assert any("2 training groups" in line for line in err)
    checked = samplesheet.check(out)
    assert [r.mode for r in checked] == ["halves", "halves", "single"]
    assert all(r.tilt_range == (-54.0, 54.0) for r in checked)


def test_runs_that_differ_split_groups_and_voxel_spacing_choice(portal, tmp_path, capsys):
    out = tmp_path / "sheet.csv"
    code, err, _ = sheet_cmd(capsys, "--dataset-id", "10302", "--out", str(out))
    assert code == 0, err
    rows = {r["id"]: r for r in read_rows(out)}
    assert set(rows) == {"TS_1", "TS_2"}
    assert "run TS_3: tomograms at several voxel spacings (7.84, 15.68 Å); left out, choose one with --voxel-spacing" in err[0]
    assert rows["TS_1"]["even"] and rows["TS_1"]["full"] == ""      # halves without a raw tomogram
    assert (rows["TS_2"]["tilt_min"], rows["TS_2"]["tilt_max"]) == ("-48", "62")
    assert rows["TS_1"]["group"] != rows["TS_2"]["group"]
    samplesheet.check(out)
    code, err, _ = sheet_cmd(capsys, "--dataset-id", "10302", "--voxel-spacing", "15.68", "--out", str(out))
    assert code == 0, err
    assert err == ["cryorestore portal: run TS_1: no raw tomogram nor filtered_even/filtered_odd halves at 15.68 Å; left out",
                   "cryorestore portal: run TS_2: no raw tomogram nor filtered_even/filtered_odd halves at 15.68 Å; left out"]
    (ts3,) = read_rows(out)
    assert ts3["tomogram"].endswith("/VoxelSpacing15.680/Tomograms/210/TS_3.mrc") and ts3["voxel_size"] == "15.68"
    assert ts3["group"] == "dataset_10302"


@pytest.mark.parametrize("argv, expected", [
    (["--dataset-id", "99999"], "dataset 99999 is not on the CryoET Data Portal"),
    (["--dataset-id", "10000", "--run", "TS_026", "--run", "TS_999"], "dataset 10000 has no run(s) named TS_999"),
    (["--dataset-id", "10000", "--run", "TS_028"], "no run of dataset 10000 has a raw tomogram"),
    (["--dataset-id", "10000", "--processing", "filtered"], "no run of dataset 10000 has a filtered tomogram"),
])
def test_errors_are_one_line_and_write_nothing(portal, tmp_path, capsys, argv, expected):
    out = tmp_path / "sheet.csv"
    code, err, _ = sheet_cmd(capsys, *argv, "--out", str(out))
    assert code == 2
    assert err[-1].startswith("cryorestore portal: error: ") and expected in err[-1]
    assert all(line.startswith("cryorestore portal: ") for line in err)
    assert not out.exists()


def test_no_network_is_one_line(tmp_path, capsys):
    """The client's own HTTP transport against a closed local port: a connection error, one line, exit 2."""
    out = tmp_path / "sheet.csv"
    code, err, _ = sheet_cmd(capsys, "--dataset-id", "10000", "--api-url", "http://127.0.0.1:9/graphql", "--out", str(out))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("cryorestore portal: error: cannot reach the CryoET Data Portal while listing dataset 10000")
    assert "check the network connection" in err[0]
    assert not out.exists()


def test_format_zarr_rows_carry_the_ome_zarr_stores(portal, tmp_path, capsys):
    out = tmp_path / "sheet.csv"
    code, err, _ = sheet_cmd(capsys, "--dataset-id", "10000", "--format", "zarr", "--out", str(out))
    assert code == 0, err
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["TS_026"]  # TS_027's record has no OME-Zarr store
    assert rows[0]["tomogram"] == f"{S3}/10000/TS_026/Reconstructions/VoxelSpacing13.480/Tomograms/100/TS_026.zarr"
    assert "cryorestore portal: run TS_027: no raw tomogram nor filtered_even/filtered_odd halves as OME-Zarr; left out" in err
    checked = samplesheet.check(out)
    assert checked[0].mode == "single" and checked[0].paths["tomogram"].endswith(".zarr")
    code, err, _ = sheet_cmd(capsys, "--dataset-id", "10301", "--format", "zarr", "--url", "https", "--out", str(out))
    assert code == 0, err
    p10 = read_rows(out)[0]
    assert p10["even"].startswith("https://files.cryoetdataportal.cziscience.com/10301/Position_10/")
    assert (p10["even"].endswith("/201/Position_10_even.zarr") and p10["odd"].endswith("/202/Position_10_odd.zarr")
            and p10["full"].endswith("/200/Position_10.zarr"))
    assert [r.mode for r in samplesheet.check(out)] == ["halves", "halves", "single"]
