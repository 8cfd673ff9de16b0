"""The long fault-injection campaign (``make test-faults``; marked ``faults``, excluded from ``make test``).

``CRYORESTORE_FAULT_KILLS_PER_COMMAND`` (default 19) seeded trials for each of simulate, reconstruct,
train, predict, evaluate and denoise (``CRYORESTORE_FAULT_COMMANDS`` picks a comma-separated subset, so
that the campaign can run as several processes): trials 10 and 19 of each command send SIGTERM and
SIGINT, the others SIGKILL (6 × 17 = 102 SIGKILLs by default), each at a uniformly drawn moment between
the end of Python's start-up and 1.05 × the command's uninterrupted run time; then two ``train`` runs
started together into one model directory. The summary (counts per
command of complete / absent / corrupt outputs, and of resumes that matched the uninterrupted result
bit for bit) is printed and written to ``CRYORESTORE_FAULT_REPORT`` (default
``fault_report.json`` in the pytest temporary folder); ``CRYORESTORE_FAULT_SEED`` (default 19) seeds the
kill times.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402

# the campaign runs for tens of minutes: lift pytest-timeout's 600 s default for it
pytestmark = [pytest.mark.faults, pytest.mark.timeout(7200)]


def _startup_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cryorestore", "--version"], capture_output=True, env=harness.env(),
                   check=True)
    return time.perf_counter() - t0


ORDER = ("simulate", "reconstruct", "train", "predict", "evaluate", "denoise")


def test_random_kills_leave_complete_or_absent_outputs_and_resumes_match(tmp_path):
    per_command = int(os.environ.get("CRYORESTORE_FAULT_KILLS_PER_COMMAND", "19"))
    names = [n for n in os.environ.get("CRYORESTORE_FAULT_COMMANDS", ",".join(ORDER)).split(",") if n]
    seed = int(os.environ.get("CRYORESTORE_FAULT_SEED", "19"))
    report_path = Path(os.environ.get("CRYORESTORE_FAULT_REPORT", tmp_path / "fault_report.json"))
    t_start = time.perf_counter()
    cmds = harness.setup(tmp_path / "work", names=tuple(names))
    startup = _startup_seconds()
    trials = []
    for name in names:
        c = cmds[name]
        rng = np.random.default_rng([seed, ORDER.index(name)])  # the same draws however the commands are grouped
        for j in range(per_command):
            sig = signal.SIGTERM if j == 9 else signal.SIGINT if j == 18 else signal.SIGKILL
            t = harness.trial(c, rng, sig=sig, earliest=min(startup, 0.9 * c.seconds))
            trials.append(t)
            print(f"[{name} {j + 1}/{per_command}] {t.signal:<7} at {t.delay:6.2f} s of {c.seconds:5.1f}: "
                  f"{t.state:<8} rc {t.rc} debris {t.debris} resumed {t.resumed} {t.why}", flush=True)
    summary = harness.summarise(trials)
    if "train" in cmds and os.environ.get("CRYORESTORE_FAULT_RACE", "1") == "1":
        summary["concurrent_train"] = harness.concurrent_train(cmds["train"])
    summary["reference_seconds"] = {n: round(c.seconds, 2) for n, c in cmds.items()}
    summary["startup_seconds"] = round(startup, 2)
    summary["seed"] = seed
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    summary["stop_lines"] = sorted({t.stderr_tail for t in trials if t.signal != "SIGKILL" and t.rc in (130, 143)})
    summary["trials"] = [t.__dict__ for t in trials]
    report_path.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=1))
    total = summary["total"]
    assert total["corrupt"] == 0, [t.why for t in trials if t.state == "corrupt"]
    assert total["resumes_matched"] == total["resumes"]
    if "concurrent_train" in summary:
        cc = summary["concurrent_train"]
        assert sorted(cc["exit_codes"]) == [0, 2] and cc["loser_line_names_holder"] and cc["model_matches_reference"]
