"""``cryorestore train``: train a restoration network (n2n, deepdewedge, isonet) on half tomograms.

The maps may be MRC files or OME-Zarr stores (``--zarr-level``), binned at load with ``--bin``; the model
directory's ``config.json`` records ``bin``, ``zarr_level`` and the (binned) ``voxel_size``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cryorestore.cli.common import add_device_option, add_seed_option, add_volume_options, positive, tilt_range
from cryorestore.errors import InputError
from cryorestore.presets import DEFAULT_PRESET, PRESET_NAMES

# options a preset sets unless they are given explicitly (argparse default None = not given)
_PRESET_OPTIONS = ("epochs", "max_steps", "patience", "batch_size", "subtomo_size", "n_subtomos", "lr",
                   "refill_every")

NAME = "train"
OUTPUT_ARGS = ("out",)  # the model directory is locked for the whole run (cryorestore.outputs)
HELP = "train a restoration network on even/odd half tomograms; writes a model directory"


def _model_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def add_train_arguments(p: argparse.ArgumentParser, with_out: bool = True) -> None:
    """Options shared by ``train`` and ``denoise``."""
    from cryorestore.methods import DEFAULT_METHOD, METHOD_NAMES

    p.add_argument("--even", action="append", required=True, metavar="E.mrc",
                   help="even half tomogram, MRC or OME-Zarr (.zarr folder, s3:// or https:// URL) (repeat --even/--odd "
                        "for several datasets); the only map in isonet single-map mode")
    p.add_argument("--odd", action="append", metavar="O.mrc", help="odd half tomogram, same grid as its --even")
    p.add_argument("--method", choices=METHOD_NAMES, default=DEFAULT_METHOD,
                   help="training scheme: n2n (cryoCARE-style denoising), deepdewedge or isonet (denoising and "
                        f"missing-wedge filling; isonet also works from one map) (default: {DEFAULT_METHOD})")
    p.add_argument("--model", default="unet", help="network: unet, msdnet, scunet, swinunetr (default: unet)")
    p.add_argument("--model-option", action="append", type=_model_option, default=[], metavar="KEY=VALUE",
                   help="network option (JSON value), e.g. --model-option base_channels=16; repeatable")
    p.add_argument("--preset", choices=PRESET_NAMES, default=DEFAULT_PRESET,
                   help="option set sized by optimiser steps: quick (small U-Net, minutes on a CPU) or standard "
                        "(paper-sized networks and schedule, for a GPU); options given explicitly override it "
                        f"(default: {DEFAULT_PRESET})")
    p.add_argument("--loss", default=None,
                   help="l1, l2 or a sum like l2+fsc; fsc alone is refused, it leaves shell amplitudes free "
                        "(default: the method's own: l1 for isonet, l2 for n2n and deepdewedge)")
    p.add_argument("--tilt-range", nargs=2, type=float, default=[-60.0, 60.0], metavar=("MIN", "MAX"),
                   help="tilt range of the data in degrees (default: -60 60)")
    for flag, kind, text in (
            ("--epochs", int, "at most this many passes over the training boxes"),
            ("--max-steps", int, "optimiser-step budget, rounded up to whole epochs"),
            ("--patience", int, "stop after this many epochs without a better validation loss"),
            ("--batch-size", int, "boxes per step"),
            ("--subtomo-size", int, "training crop edge in voxels"),
            ("--n-subtomos", int, "boxes drawn from all tomograms together"),
            ("--lr", float, "AdamW learning rate")):
        p.add_argument(flag, type=positive(kind), default=None, help=f"{text} (default: the preset's)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of boxes held out, drawn from a slab of each tomogram that no training box comes "
                        "within one crop edge (--subtomo-size) of (default: 0.1)")
    p.add_argument("--lr-schedule", choices=("cosine", "step", "constant"), default="cosine",
                   help="learning-rate schedule over the epochs (default: cosine)")
    p.add_argument("--wedge-weight", type=float, default=2.0,
                   help="deepdewedge: weight of the missing-wedge term of the loss (default: 2)")
    p.add_argument("--refill-every", type=positive(int), default=None,
                   help="deepdewedge/isonet: refill the inputs' missing wedge every N epochs "
                        "(default: the preset's, else 10 / 1)")
    p.add_argument("--noise-schedule", nargs="*", default=[], metavar="EPOCH:LEVEL",
                   help="isonet: add wedge-filtered noise of LEVEL×std to the input from EPOCH on, e.g. 5:0.1 10:0.2")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in the model directory")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (bars are live on a terminal, one line per epoch in a file or pipe)")
    add_volume_options(p)
    add_seed_option(p)
    add_device_option(p)
    if with_out:
        p.add_argument("--out", required=True, metavar="MODEL_DIR", help="model directory to write")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p)
    p.add_argument("--devices", type=positive(int), default=1, metavar="N",
                   help="train one model on N devices (GPUs, or CPU processes with --device cpu) with "
                        "DistributedDataParallel; --batch-size stays the global batch (default: 1)")


def config_from_args(args: argparse.Namespace, out: str):
    """Build a :class:`cryorestore.train.TrainConfig` from parsed options."""
    from cryorestore.train import TrainConfig

    tr = tilt_range(args.tilt_range)
    if args.odd is not None and len(args.odd) != len(args.even):
        raise InputError(f"got {len(args.even)} --even and {len(args.odd)} --odd maps; give them in pairs")
    levels, epochs = [], []
    for item in args.noise_schedule:
        try:
            e, lv = item.split(":")
            epochs.append(int(e))
            levels.append(float(lv))
        except ValueError:
            raise InputError(f"--noise-schedule item '{item}' is not EPOCH:LEVEL") from None
    from cryorestore.losses import check_training_loss
    from cryorestore.methods import method_class

    loss = args.loss or method_class(args.method).default_loss
    check_training_loss(loss)  # one-line InputError for a bad or drifting spec, before any work
    from cryorestore.models import MODEL_NAMES

    if args.model not in MODEL_NAMES:
        raise InputError(f"--model {args.model} is unknown; choose one of {', '.join(MODEL_NAMES)}")
    chosen = resolve_preset(args)
    return TrainConfig(
        even=[str(e) for e in args.even], odd=None if args.odd is None else [str(o) for o in args.odd], out=str(out),
        method=args.method, model=args.model, loss=loss, tilt_range=tr, val_fraction=args.val_fraction,
        lr_schedule=args.lr_schedule, seed=args.seed, device=args.device, wedge_weight=args.wedge_weight,
        noise_levels=levels, noise_epochs=epochs, preset=args.preset, zarr_level=args.zarr_level, bin=args.bin,
        **chosen)


def resolve_preset(args: argparse.Namespace) -> dict:
    """TrainConfig values from ``--preset``, overridden by every option given explicitly.

    ``--model-option`` entries are merged into the preset's options for the chosen network.
    """
    from cryorestore.presets import preset_values

    values = preset_values(args.preset, args.method, args.model)
    for key in _PRESET_OPTIONS:
        given = getattr(args, key)
        if given is not None:
            values[key] = given
    values["model_options"] = values.get("model_options", {}) | dict(args.model_option)
    return values


def run_training(args: argparse.Namespace, out: str):
    from cryorestore.cli.common import resolve_device, seed_everything
    from cryorestore import outputs
    from cryorestore.train import describe_kept, train

    cfg = config_from_args(args, out)
    outputs.on_stop(lambda: describe_kept(out))  # a stop keeps the last checkpoint and the best model so far
    seed_everything(cfg.seed)
    if cfg.preset == "standard" and resolve_device(cfg.device).type == "cpu":
        print(f"note: preset standard ({cfg.max_steps} steps of a paper-sized network) is meant for a GPU; "
              "on this CPU use --preset quick for a run of minutes", flush=True)
    res = train(cfg, progress=not args.no_progress, resume=args.resume)
    last = res.history[-1] if res.history else {}
    if res.is_main:
        print(f"trained {len(res.history)} epochs in {res.seconds:.1f} s; best validation loss "
              f"{res.best_val_loss:.5g} at epoch {res.best_epoch + 1}; last train/val "
              f"{last.get('train_loss', float('nan')):.5g}/{last.get('val_loss', float('nan')):.5g}; "
              f"model in {res.model_dir}; {res.stop_reason}")
        if res.history:
            from cryorestore import plots

            plots.loss_curves({f"{cfg.method} ({cfg.loss})": res.history}, Path(res.model_dir) / "loss.png")
    return cfg, res


def _rank_main(args: argparse.Namespace) -> int:
    """One rank of ``--devices N`` (started by :func:`cryorestore.distributed.launch`)."""
    run_training(args, args.out)
    return 0


def run(args: argparse.Namespace) -> int:
    from cryorestore import distributed

    if args.devices > 1 and distributed.env_world_size() == 1:  # not already a rank of torchrun
        from cryorestore.cli.common import resolve_device

        config_from_args(args, args.out).validate()  # bad options: one line here, not one per rank
        from cryorestore import outputs
        from cryorestore.train import describe_kept

        outputs.on_stop(lambda: describe_kept(args.out))
        return distributed.launch(args.devices, resolve_device(args.device), _rank_main, args,
                                  kept=outputs.kept_line)
    run_training(args, args.out)
    return 0
