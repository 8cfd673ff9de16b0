"""``python tests/faults/tally.py LOG ...``: counts from the per-trial lines of fault-campaign logs.

The campaign (``test_faults_long.py``, run with ``-s``) prints one line per trial,
``[COMMAND i/n] SIGNAL at D s of T: STATE rc RC debris K resumed R ...``; this adds them up per command
and signal (complete / absent / corrupt, kills that left hidden debris, resumes that matched), so that
a campaign split over several processes, or stopped early, can still be reported.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\[(\w+) \d+/\d+\] (SIG\w+)\s+at\s+([\d.]+) s of\s+([\d.]+): (\w+)\s+rc (-?\d+|None) "
                  r"debris (\d+) resumed (True|False|None)")


def tally(lines: list[str]) -> dict:
    per: dict = defaultdict(lambda: defaultdict(int))
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        cmd, sig, _, _, state, _, debris, resumed = m.groups()
        if cmd == "train" and state == "corrupt" and "differ from the reference: [" in line:
            # logs of harness versions before the ``earlier`` state: the model directory had passed the check
            # that it equals one of the reference's saves, and differed only from the last one
            state = "earlier"
        for key in (cmd, "total"):
            d = per[key]
            d["trials"] += 1
            d[f"{sig}"] += 1
            d[f"{state}"] += 1
            d[f"{state}_{sig}"] += 1
            d["debris_left"] += int(debris) > 0
            if resumed != "None":
                d["resumes"] += 1
                d["resumes_matched"] += resumed == "True"
    return {k: dict(v) for k, v in per.items()}


def main(paths: list[str]) -> int:
    lines = []
    for p in paths:
        with open(p) as fh:
            lines += fh.read().splitlines()
    print(json.dumps(tally(lines), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
