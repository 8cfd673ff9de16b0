"""``cryorestore samplesheet check SHEET.csv``: validate a pipeline samplesheet before anything runs."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from cryorestore import samplesheet
from cryorestore.errors import InputError

NAME = "samplesheet"
HELP = "validate a pipeline samplesheet (id,even,odd / id,tilt_series,angles / id,tomogram; optional group, voxel_size, tilt range)"
DESCRIPTION = (
    "Check a Nextflow samplesheet: the columns, one of the three row kinds (even,odd half tomograms, "
    "tilt_series,angles, or one full tomogram), unique ids, that local files exist (URLs such as s3:// or "
    "https:// are staged by Nextflow and not checked), that even and odd share one grid, that tilt_min/tilt_max "
    "agree with a local angles file (and are filled from it), and that all tomograms of a group (one shared "
    "model) have one row kind, one voxel size and one tilt range. Prints one line per bad row and exits 2 if "
    "there is any."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("check", help="validate SHEET.csv; one line per bad row, exit 2 if any",
                       description=DESCRIPTION)
    c.add_argument("sheet", metavar="SHEET.csv", help="the samplesheet")
    c.add_argument("--base-dir", metavar="DIR", default=None,
                   help="folder that relative paths are taken from (default: the current folder, as Nextflow's launch folder)")
    c.add_argument("--out", metavar="VALID.csv", default=None,
                   help="write the normalised sheet (absolute paths, group and voxel size filled in) for the pipeline")
    c.add_argument("--no-file-check", action="store_true",
                   help="check columns and ids only; do not look at local files (for sheets checked on another machine)")


def run(args: argparse.Namespace) -> int:
    if args.base_dir is not None and not Path(args.base_dir).is_dir():
        raise InputError(f"--base-dir {args.base_dir} is not a folder")
    try:
        rows = samplesheet.check(args.sheet, base_dir=args.base_dir, check_files=not args.no_file_check)
    except InputError as exc:
        for line in getattr(exc, "problems", []):
            print(line, file=sys.stderr)
        raise
    if args.out:
        samplesheet.write_valid(rows, args.out)
    modes = Counter(r.mode for r in rows)
    groups = len({r.group for r in rows})
    names = {"halves": ("half-tomogram pair", "half-tomogram pairs"), "tilt_series": ("tilt series", "tilt series"),
             "single": ("single map", "single maps")}
    kinds = ", ".join(f"{n} {names[m][n > 1]}" for m, n in sorted(modes.items()))
    print(f"{args.sheet}: OK, {len(rows)} tomogram(s) ({kinds}) in {groups} training group(s)")
    return 0
