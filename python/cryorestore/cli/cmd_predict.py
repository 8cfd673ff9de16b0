"""``cryorestore predict MODEL_DIR --even E.mrc [--odd O.mrc] --out OUT.mrc``: streaming tiled inference.

Inputs are MRC files or OME-Zarr stores (local ``.zarr`` folders, ``s3://`` or ``https://`` URLs;
``--zarr-level`` picks the level, ``--bin`` bins at load); ``--out`` ending in ``.zarr`` writes an
OME-Zarr pyramid instead of an MRC file.

Exit status 75 (:data:`cryorestore.predict.EXIT_TILE_OOM`) when a single tile does not fit in device
memory (the batch is halved down to one tile first): rerun with a smaller ``--tile``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryorestore import outputs
from cryorestore.cli.common import add_device_option, add_inference_options, add_volume_options, positive, resolve_device

NAME = "predict"
OUTPUT_ARGS = ("out",)  # locked; the map and its provenance appear together (cryorestore.outputs)
HELP = "restore tomograms with a trained model directory (tiled, blended inference)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="directory written by 'cryorestore train'")
    p.add_argument("--even", required=True, metavar="E.mrc",
                   help="even half tomogram (or the full map alone): MRC, or OME-Zarr (.zarr folder, s3:// or https:// URL)")
    p.add_argument("--odd", metavar="O.mrc", help="odd half tomogram; the result is the mean of f(even) and f(odd)")
    p.add_argument("--out", required=True, metavar="OUT.mrc",
                   help="restored map (keeps the input's voxel size, times --bin): MRC, or an OME-Zarr pyramid when "
                        "it ends in .zarr")
    p.add_argument("--tile", type=positive(int), default=None, help="tile edge in voxels (default: 2× training crop, ≤ 96)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in voxels (default: tile/4)")
    p.add_argument("--batch-size", type=positive(int), default=4, help="tiles per forward pass (default: 4; halved on device out-of-memory)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--source", action="append", default=[], metavar="KEY=VALUE",
                   help="where the input came from, for OUT.provenance.json (e.g. dataset=10000 run=TS_026); repeatable")
    p.add_argument("--uncertainty", action="store_true",
                   help="with --odd: also write OUT_uncertainty.mrc, the local standard deviation of the restored map "
                        "from the half maps' noise (spread of the restorations of the two halves)")
    add_volume_options(p)
    add_inference_options(p)  # default: the preset the model was trained with, as in 'denoise'
    add_device_option(p)


def run(args: argparse.Namespace) -> int:
    from cryorestore import provenance
    from cryorestore.predict import EXIT_TILE_OOM, predict_files
    from cryorestore.tiling import TileOutOfMemoryError

    source = provenance.parse_source(args.source)
    device = resolve_device(args.device)
    try:
        stage = outputs.StagedFiles(Path(args.out).parent)  # the map and its provenance appear together
        out = predict_files(args.model_dir, args.even, args.odd, stage.path / Path(args.out).name, device=device, tile=args.tile,
                            overlap=args.overlap, batch_size=args.batch_size, progress=not args.no_progress,
                            tta=args.tta, combine=args.combine, zarr_level=args.zarr_level,
                            bin=args.bin, uncertainty=args.uncertainty)
    except TileOutOfMemoryError as exc:
        print(f"cryorestore predict: error: {exc}", file=sys.stderr)
        return EXIT_TILE_OOM
    prov = provenance.write(out, args.model_dir, {"even": args.even, "odd": args.odd}, source,
                            reading={"zarr_level": args.zarr_level, "bin": args.bin})
    stage.commit()
    print(f"wrote {stage.final(out)} and {stage.final(prov)}")
    return 0
