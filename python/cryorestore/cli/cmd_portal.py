"""``cryorestore portal sheet --dataset-id N --out sheet.csv``: a pipeline samplesheet from the CryoET Data Portal."""

from __future__ import annotations

import argparse
import sys

from cryorestore.cli.common import positive

NAME = "portal"
OUTPUT_ARGS = ("out",)  # `portal sheet --out`: locked (the sheet itself is written atomically)
HELP = "CryoET Data Portal: write a pipeline samplesheet for a dataset's runs (official cryoet-data-portal client)"
DESCRIPTION = (
    "Ask the CryoET Data Portal (through the official cryoet-data-portal client) for the runs of a dataset and "
    "write one samplesheet row per run: its filtered_even/filtered_odd halves where the deposition has them, "
    "else its single full tomogram (processing --processing); voxel size from the portal, tilt range from the "
    "run's tilt series, the dataset as training group, the tomogram's S3 (or HTTPS) URL for Nextflow to stage "
    "(the MRC file, or with --format zarr the OME-Zarr store). "
    "Runs left out are named on stderr. Exit 2 with one line for an unknown dataset or run, no matching "
    "tomogram, or no network."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cryorestore.portal import FORMATS, PROCESSING, URL_KINDS

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("sheet", help="write a samplesheet for the runs of one portal dataset", description=DESCRIPTION)
    s.add_argument("--dataset-id", type=positive(int), required=True, metavar="N", help="portal dataset id, e.g. 10000")
    s.add_argument("--run", action="append", default=None, metavar="NAME",
                   help="run name to include (repeatable; default: every run of the dataset)")
    s.add_argument("--voxel-spacing", type=positive(float), default=None, metavar="A",
                   help="voxel spacing of the tomograms in Å (default: each run's only spacing)")
    s.add_argument("--processing", choices=PROCESSING, default="raw",
                   help="processing of the full tomogram to restore (default: raw)")
    s.add_argument("--url", choices=URL_KINDS, default="s3",
                   help="file URLs: s3 (read with -profile portal) or https (default: s3)")
    s.add_argument("--format", choices=FORMATS, default="mrc", dest="file_format",
                   help="point the rows at the tomograms' MRC files or at their OME-Zarr stores (multiscale; read "
                        "with --zarr-level, no download needed) (default: mrc)")
    s.add_argument("--api-url", default=None, metavar="URL", help="GraphQL endpoint (default: the client's own)")
    s.add_argument("--out", required=True, metavar="SHEET.csv", help="samplesheet to write")


def run(args: argparse.Namespace) -> int:
    from cryorestore import portal

    client = portal.make_client(args.api_url)
    rows = portal.build_rows(client, args.dataset_id, runs=args.run, voxel_spacing=args.voxel_spacing,
                             processing=args.processing, url_kind=args.url, file_format=args.file_format,
                             note=lambda line: print(f"cryorestore portal: {line}", file=sys.stderr))
    portal.write_sheet(rows, args.out)
    halves = sum(r.kind == "halves" for r in rows)
    groups = len({r.values["group"] for r in rows})
    print(f"wrote {args.out}: {len(rows)} run(s) of dataset {args.dataset_id} ({halves} with even/odd halves, "
          f"{len(rows) - halves} single map(s)) in {groups} training group(s); check it with "
          f"`cryorestore samplesheet check {args.out}`")
    return 0
