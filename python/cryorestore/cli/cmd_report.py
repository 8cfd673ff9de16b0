"""``cryorestore report RUN_DIR [RUN_DIR …] [--out report.html]``: one self-contained HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryorestore import report

NAME = "report"
HELP = "gather run directories (metrics.json, figures, restored maps) into one self-contained report.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (denoise --out-dir, match/average/segment outputs)")
    p.add_argument("--out", metavar="report.html", help="output file (default: RUN_DIR/report.html for one run, ./report.html for several)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else (Path(args.run_dirs[0]) / "report.html" if len(args.run_dirs) == 1 else Path("report.html"))
    path = report.write_report(args.run_dirs, out)
    print(f"wrote {path}")
    return 0
