"""Run the pipeline with Nextflow itself where `nextflow` is on PATH (not in CI here: its launcher
downloads its runtime from the internet). `-stub-run` checks the channel wiring in seconds; the
`test` profile runs the whole chain on a small simulated dataset on CPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.nextflow,
    pytest.mark.skipif(shutil.which("nextflow") is None, reason="nextflow is not on PATH"),
]


def nextflow(tmp_path: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    cmd = ["nextflow", "run", str(ROOT / "main.nf"), *args, "--outdir", str(tmp_path / "results")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def test_stub_run_test_profile(tmp_path):
    nextflow(tmp_path, "-profile", "test", "-stub-run", timeout=600)
    out = tmp_path / "results"
    for rel in ("models/sim", "restored/sim1_restored.mrc", "restored/sim2_restored.mrc",
                "evaluation/sim1/metrics.json", "report/report.html", "pipeline_info/software_versions.yml"):
        assert (out / rel).exists(), rel


def test_stub_run_samplesheet(tmp_path):
    sheet = ROOT / "assets" / "samplesheet_test.csv"
    shutil.copy(sheet, tmp_path / "sheet.csv")
    for line in sheet.read_text().splitlines()[1:]:
        for cell in line.split(","):
            if cell.startswith("data/"):
                (tmp_path / cell).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / cell).touch()
    nextflow(tmp_path, "-stub-run", "--input", "sheet.csv", timeout=600)
    out = tmp_path / "results"
    assert (out / "models/lamella_A").is_dir() and (out / "models/TS_04").is_dir()
    for sid in ("TS_01", "TS_02", "TS_03", "TS_04", "TS_05"):
        assert (out / f"restored/{sid}_restored.mrc").exists()
        assert (out / f"restored/{sid}_restored.provenance.json").exists()
    assert (out / "models/TS_05").is_dir()  # the single-map row trains its own model
    assert (out / "reconstruct/TS_04/even.mrc").exists()


@pytest.mark.slow
def test_test_profile_runs_the_chain(tmp_path):
    nextflow(tmp_path, "-profile", "test", timeout=3600)
    out = tmp_path / "results"
    metrics = json.loads((out / "evaluation/sim1/metrics.json").read_text())
    assert metrics
    assert (out / "report/report.html").stat().st_size > 1000
