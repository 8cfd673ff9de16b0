"""Rows of each kind through SAMPLESHEET_CHECK -> TRAIN -> PREDICT -> EVALUATE, rendered by Groovy itself.

Nextflow cannot run here, but its language is Groovy, which the Nextflow language server's jar carries
(the jar of the lint test). The test runs the real `cryorestore samplesheet check` on a sheet with a
single-map row, a half-tomogram pair and a tilt-series row with per-row tilt ranges, feeds the
normalised rows to main.nf's own helper functions (``sheetMetas``, ``trainMeta``, ``rawMaps``, evaluated
by Groovy with the pipeline's params), renders the TRAIN, PREDICT and EVALUATE ``script:`` sections with
those metas, and parses every `cryorestore` command in them with the real command-line parser.
Skips, saying why, when java or the jar is missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import nf_files as nf
from cryorestore import io
from cryorestore.cli import build_parser, main

ROOT = nf.ROOT
JAR = ROOT / "tools" / "cache" / "language-server-all.jar"
HARNESS = Path(__file__).with_name("render.groovy")
pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None, reason="java is not on PATH (Groovy runs on it)"),
    pytest.mark.skipif(not JAR.is_file(), reason=f"{JAR} is missing: run `make setup` or tools/fetch_nf_lsp.sh"),
]
PROCS = {p.name: p for p in nf.all_processes()}
BARE_ROW = {"id": "A", "group": "", "tilt_min": "", "tilt_max": "", "tomogram": "/d/a.mrc"}  # as a stub run's unchecked copy


_literal = nf.literal


PARAMS = {k: _literal(v) for k, v in nf.config_params(ROOT / "nextflow.config").items() if "${" not in v}


def groovy(cases: list[dict], tmp_path: Path) -> dict[str, object]:
    """Evaluate the cases with Groovy (one JVM); name -> value, failing on any error."""
    path = tmp_path / f"cases_{len(list(tmp_path.glob('cases_*')))}.json"
    path.write_text(json.dumps(cases))
    proc = subprocess.run(["java", "-cp", str(JAR), "groovy.ui.GroovyMain", str(HARNESS), str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = {r["name"]: r["error"] for r in out if "error" in r}
    assert not errors, errors
    return {r["name"]: r["value"] for r in out}


def main_functions() -> str:
    """The `def name(...) { ... }` helper functions of main.nf (top level, closed by a `}` line)."""
    text = (ROOT / "main.nf").read_text()
    return "\n".join(m.group(0) for m in re.finditer(r"(?ms)^def \w+\(.*?^\}$", text))


def script_case(name: str, proc: str, meta: dict, inputs: dict) -> dict:
    return {"name": name, "script": PROCS[proc].sections["script"],
            "vars": {"params": PARAMS, "meta": meta, "task": {"cpus": 2, "attempt": 1, "process": f"CRYORESTORE:{proc}"},
                     "workflow": {"launchDir": "/launch"}, **inputs}}


def commands(rendered: str) -> list[list[str]]:
    """The shell commands of a rendered script (continuations joined), as argv lists."""
    text = rendered.replace("\\\n", " ")
    return [shlex.split(line) for line in (l.strip() for l in text.splitlines()) if line.startswith("cryorestore")]


def parse(argv: list[str]) -> argparse.Namespace:
    assert argv[0] == "cryorestore"
    return build_parser().parse_args(argv[1:])


@pytest.fixture
def checked_rows(tmp_path, capsys):
    rng = np.random.default_rng(3)
    for name in ("TS_026.mrc", "P10_even.mrc", "P10_odd.mrc", "TS_09.st"):
        io.write_mrc(tmp_path / name, rng.normal(size=(6, 8, 10)).astype(np.float32), 7.84)
    io.write_tlt(tmp_path / "TS_09.tlt", np.arange(-51.0, 64.0, 3.0))
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(
        "id,tomogram,even,odd,tilt_series,angles,group,tilt_min,tilt_max,portal_dataset,portal_run,portal_tomograms\n"
        "TS_026,TS_026.mrc,,,,,dataset_10000,-54,54,10000,TS_026,5261\n"
        "P10,,P10_even.mrc,P10_odd.mrc,,,,-60,58,,,\n"
        "TS_09,,,,TS_09.st,TS_09.tlt,,,,,,\n")
    valid = tmp_path / "valid.csv"
    assert main(["samplesheet", "check", str(sheet), "--base-dir", str(tmp_path), "--out", str(valid)]) == 0
    capsys.readouterr()
    with open(valid, newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_through_train_predict_evaluate(checked_rows, tmp_path):
    fns = main_functions()
    assert "def rowMeta(" in fns and "def trainMeta(" in fns and "def rawMaps(" in fns
    # 1. main.nf's functions on the checked rows, and what the workflow builds from them for TRAIN and
    #    EVALUATE (a single map is [meta, full=tomogram, even=tomogram, odd=[]]); a row without a range
    steps = groovy([{"name": "steps", "vars": {"params": PARAMS, "rows": checked_rows, "bare": BARE_ROW}, "script": fns + """
        def metas = sheetMetas(rows).collect { pair -> pair[0] }
        def byId = metas.collectEntries { m -> [(m.id): m] }
        [
            metas: byId, bare: sheetMetas([bare])[0][0],
            train_single: trainMeta('dataset_10000', [byId.TS_026]), train_pair: trainMeta('P10', [byId.P10]),
            raw_single: rawMaps('raw/TS_026.mrc', 'TS_026.mrc', []),
            raw_pair: rawMaps([], 'raw1/P10_even.mrc', 'raw2/P10_odd.mrc'),
            raw_series: rawMaps('raw1/full.mrc', 'raw2/even.mrc', 'raw3/odd.mrc'),
        ]
        """}], tmp_path)["steps"]
    by_id = steps["metas"]
    single, pair, series = by_id["TS_026"], by_id["P10"], by_id["TS_09"]
    assert single["mode"] == "single" and single["group"] == "dataset_10000"
    assert (single["tilt_min"], single["tilt_max"]) == ("-54", "54")
    assert single["source"] == {"dataset": "10000", "run": "TS_026", "tomograms": "5261"}
    assert (pair["tilt_min"], pair["tilt_max"], pair["source"]) == ("-60", "58", {})
    assert (series["tilt_min"], series["tilt_max"]) == ("-51", "63")       # from the angles file by the check
    bare = steps["bare"]  # no tilt_min/tilt_max in the sheet: --tilt_min/--tilt_max
    assert (bare["tilt_min"], bare["tilt_max"]) == (PARAMS["tilt_min"], PARAMS["tilt_max"]) == (-60.0, 60.0)
    assert bare["group"] == "A" and bare["group_size"] == 1 and bare["source"] == {} and bare["mode"] == "single"
    assert steps["train_single"] == {"id": "dataset_10000", "tomograms": 1, "mode": "single", "tilt_min": "-54", "tilt_max": "54"}
    assert steps["train_pair"]["mode"] == "pair"
    assert steps["raw_single"] == ["raw/TS_026.mrc"] and steps["raw_pair"] == ["raw1/P10_even.mrc", "raw2/P10_odd.mrc"]
    assert steps["raw_series"] == ["raw1/full.mrc"]

    # 2. the process scripts with those metas
    rendered = groovy([
        script_case("check", "SAMPLESHEET_CHECK", {}, {"samplesheet": "sheet.csv", "data": []}),
        script_case("train_single", "TRAIN", steps["train_single"], {"evens": ["even1/TS_026.mrc"], "odds": []}),
        script_case("train_pair", "TRAIN", steps["train_pair"], {"evens": "even/P10_even.mrc", "odds": "odd/P10_odd.mrc"}),
        script_case("predict_single", "PREDICT", single, {"model": "dataset_10000", "even": "even/TS_026.mrc", "odd": []}),
        script_case("predict_pair", "PREDICT", pair, {"model": "P10", "even": "even/P10_even.mrc", "odd": "odd/P10_odd.mrc"}),
        *[script_case(f"evaluate_{k}", "EVALUATE", m, {"raw": steps[f"raw_{k}"], "restored": f"{m['id']}_restored.mrc",
                                                          "truth": [], "particles": [], "template": [], "membranes": [],
                                                          "halves": halves, "model": "trained/" + m["group"]})
          for k, m, halves in (("single", single, []), ("pair", pair, ["halves1/P10_even.mrc", "halves2/P10_odd.mrc"]),
                               ("series", series, ["halves1/even.mrc", "halves2/odd.mrc"]))],
    ], tmp_path)

    (check,) = commands(rendered["check"])[:1]
    assert parse(check).action == "check"

    (train_cmd, versions) = commands(rendered["train_single"])
    t = parse(train_cmd)
    assert t.command == "train" and t.even == ["even1/TS_026.mrc"] and t.odd is None
    assert (t.method, t.loss) == (PARAMS["single_method"], PARAMS["single_loss"]) == ("isonet", "l1")
    assert t.tilt_range == [-54.0, 54.0] and t.noise_schedule == PARAMS["single_noise_schedule"].split()
    assert versions == ["cryorestore-versions", "CRYORESTORE:TRAIN", "torch", ">", "versions.yml"]
    t = parse(commands(rendered["train_pair"])[0])
    assert (t.method, t.loss) == (PARAMS["method"], PARAMS["loss"]) == ("isonet", "l1")  # joint even/odd IsoNet
    assert (t.odd, t.tilt_range, t.noise_schedule) == (["odd/P10_odd.mrc"], [-60.0, 58.0], [])

    p = parse(commands(rendered["predict_single"])[0])
    assert p.command == "predict" and p.odd is None and p.model_dir == "dataset_10000"
    assert p.source == ["id=TS_026", "dataset=10000", "run=TS_026", "tomograms=5261"]
    p = parse(commands(rendered["predict_pair"])[0])
    assert p.odd == "odd/P10_odd.mrc" and p.source == ["id=P10"] and p.uncertainty

    (e_cmd, _v) = commands(rendered["evaluate_single"])
    e = parse(e_cmd)
    assert e.command == "evaluate" and e.raw == "raw/TS_026.mrc" and e.tilt_range == [-54.0, 54.0]
    assert e.even is None and e.model is None  # a single map: no halves, no truth-free score
    mean_cmd, e_cmd, _v = commands(rendered["evaluate_pair"])
    assert mean_cmd == ["cryorestore-raw-map", "raw1/P10_even.mrc", "raw2/P10_odd.mrc", "raw_mean.mrc"]
    e = parse(e_cmd)
    assert e.raw == "raw_mean.mrc" and e.tilt_range == [-60.0, 58.0]
    assert (e.even, e.odd, e.model) == ("halves1/P10_even.mrc", "halves2/P10_odd.mrc", "trained/" + pair["group"])
    e = parse(commands(rendered["evaluate_series"])[0])
    assert e.raw == "raw1/full.mrc" and e.tilt_range == [-51.0, 63.0]
