"""Training loop shared by all methods: AdamW, LR schedule, AMP on CUDA, clipping, validation, checkpoints.

One *epoch* is one pass over the training boxes in random order (seeded per epoch, so a resumed
run draws the same batches as an uninterrupted one). The run lasts ``epochs`` epochs, fewer when
``max_steps`` optimiser steps are reached first (the LR schedule spans the epochs actually planned),
and stops early when the validation loss has not improved for ``patience`` epochs; the last line
of the log says which of the three ended it. After each epoch the validation loss is computed on
the held-out boxes (a slab of each tomogram disjoint from the training boxes, see
:mod:`cryorestore.data`) with the method's fixed validation batches (same rotations every epoch,
unrefilled boxes, so the target never moves), the last state is written to ``OUT/checkpoint.pt``
(model, optimizer, scheduler, epoch, history, best/early-stopping state, the torch, NumPy and Python
RNG states, the name of the refilled-box file) and, when the validation loss improved, the model
directory ``OUT/`` is updated with the best weights in one step (see :mod:`cryorestore.modeldir`).

Checkpoints: ``checkpoint.pt`` starts with one text line ``CRYORESTORE-CHECKPOINT sha256=<hex>
epoch=<n>`` (the SHA-256 of the ``torch.save`` payload after it), verified on load. Before a new one
is written the current one becomes ``checkpoint.prev.pt``; ``--resume`` uses the previous one, with a
line naming the bad file, when ``checkpoint.pt`` is missing, truncated or fails its checksum. A resumed
run repeats the interrupted epoch from its start and reaches the same weights, bit for bit on the CPU,
as an uninterrupted run with the same options (``tests/test_faults_quick.py``).

Memory: the boxes stay in host memory and go to the device one batch at a time
(:mod:`cryorestore.boxes`). The refilled training boxes of deepdewedge/isonet are written to their own
file ``OUT/refilled-eNNNN.pt`` only after a refill changed them; the checkpoint names that file.
Several devices: under ``torchrun`` or ``cryorestore train --devices N`` the ranks train one model
with DistributedDataParallel (see :mod:`cryorestore.distributed`); rank 0 writes every file.
Precision: see :mod:`cryorestore.precision` (bf16 on GPUs with native bf16, else fp16 + GradScaler).
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cryorestore import distributed, io, modeldir
from cryorestore.boxes import HostBoxes, refilled_name, remove_stale_refills
from cryorestore.data import SubtomoSampler, SubtomoSet
from cryorestore.device import resolve_device
from cryorestore.errors import InputError
from cryorestore.methods import METHOD_NAMES, get_method
from cryorestore.methods.base import TrainingMethod
from cryorestore.precision import Precision, training_precision
from cryorestore.progress import is_live, progress_bar

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PREV = "checkpoint.prev.pt"  # the one before, kept for when the last one is damaged
_MAGIC = b"CRYORESTORE-CHECKPOINT "
# options that must match for --resume to continue the same run
_RESUME_KEYS = ("even", "odd", "method", "model", "model_options", "loss", "tilt_range", "subtomo_size",
                "n_subtomos", "val_fraction", "seed", "batch_size", "lr", "lr_schedule", "wedge_weight")


@dataclass
class TrainConfig:
    """Everything a training run depends on (JSON-serialisable). Sizes in voxels, angles in degrees."""

    even: list[str]
    odd: list[str] | None = None
    out: str = "model"
    method: str = "n2n"
    model: str = "unet"
    model_options: dict[str, Any] = field(default_factory=dict)
    loss: str = "l2"
    tilt_range: tuple[float, float] = (-60.0, 60.0)
    subtomo_size: int = 64
    n_subtomos: int = 200
    val_fraction: float = 0.1
    min_std_percentile: float = 5.0
    epochs: int = 20
    batch_size: int = 8  # boxes per optimizer step, all data-parallel ranks together
    lr: float = 4e-4
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"  # cosine | step | constant
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # only ever used on CUDA
    wedge_weight: float = 2.0  # deepdewedge: weight of the missing-wedge term
    refill_every: int | None = None  # deepdewedge/isonet: None → method default (10 / 1)
    noise_levels: list[float] = field(default_factory=list)  # isonet noise schedule
    noise_epochs: list[int] = field(default_factory=list)
    max_steps: int | None = None  # optimiser-step budget; None: only ``epochs`` limits the run
    patience: int | None = None  # stop after this many epochs without a better validation loss
    preset: str | None = None  # the --preset the options came from (recorded, not used)
    zarr_level: int = 0  # OME-Zarr inputs: the multiscale level read
    bin: int = 1  # Fourier binning of the maps at load (volume_io.fourier_bin); the recorded voxel_size includes it

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tilt_range"] = list(self.tilt_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        cfg = cls(**known)
        cfg.tilt_range = tuple(cfg.tilt_range)  # type: ignore[assignment]
        return cfg

    def validate(self) -> None:
        if self.method not in METHOD_NAMES:
            raise InputError(f"unknown method '{self.method}'; choose one of {', '.join(METHOD_NAMES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("--epochs and --batch-size must be at least 1")
        if self.subtomo_size < 8:
            raise InputError(f"--subtomo-size {self.subtomo_size} is too small; use at least 8 voxels")
        if self.lr_schedule not in ("cosine", "step", "constant"):
            raise InputError(f"unknown LR schedule '{self.lr_schedule}'; use cosine, step or constant")
        if not self.lr > 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if self.odd is not None and len(self.odd) != len(self.even):
            raise InputError(f"got {len(self.even)} --even and {len(self.odd)} --odd volumes; give them in pairs")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.bin not in (1, 2, 4):
            raise InputError(f"--bin {self.bin} is not one of 1, 2, 4")
        if self.zarr_level < 0:
            raise InputError(f"--zarr-level must be >= 0, got {self.zarr_level}")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"--patience must be at least 1 epoch, got {self.patience}")


@dataclass
class TrainResult:
    """History (one dict per epoch: ``epoch`` (0-based), ``step`` (optimiser steps so far), ``train_loss``,
    ``val_loss`` (held-out), ``lr``, ``refilled`` (the wedge methods refilled their boxes after it),
    ``seconds``), best epoch, wall time (s), and why training stopped (one sentence)."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float
    seconds: float
    model_dir: str
    n_parameters: int
    stop_reason: str = ""
    is_main: bool = True  # False on the ranks > 0 of a data-parallel run (they write and print nothing)


def load_volumes(config: TrainConfig) -> tuple[list[np.ndarray], list[np.ndarray] | None, float]:
    """Read the even (and odd) maps (MRC or OME-Zarr level ``config.zarr_level``, Fourier-binned by
    ``config.bin``), check grids, return arrays and the voxel size (Å, binned).

    Unbinned maps above :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels stay lazy
    (:func:`cryorestore.blockwise.open_map`: memory-mapped MRC, or an OME-Zarr level read block by
    block): the sampler reads boxes from them."""
    from cryorestore.blockwise import open_map

    evens, odds = [], None if config.odd is None else []
    voxel = None
    for i, e in enumerate(config.even):
        ve = open_map(e, config.zarr_level, config.bin)
        if odds is not None:
            vo = open_map(config.odd[i], config.zarr_level, config.bin)
            io.check_same_grid(ve, vo, e, config.odd[i])
            odds.append(vo.data)
        if voxel is None:
            voxel = ve.voxel_size
        elif not np.isclose(voxel, ve.voxel_size, rtol=1e-3):
            raise InputError(f"{e} has voxel size {ve.voxel_size:g} Å but the first map has {voxel:g} Å")
        evens.append(ve.data)
    return evens, odds, float(voxel)


def plan_epochs(config: TrainConfig, n_train: int) -> tuple[int, bool]:
    """(epochs to run, whether the step budget rather than ``epochs`` sets it) for ``n_train`` boxes.

    One epoch takes ``ceil(n_train / batch_size)`` steps; the budget is rounded up to whole epochs.
    """
    steps_per_epoch = max(1, math.ceil(n_train / config.batch_size))
    if config.max_steps is None:
        return config.epochs, False
    by_steps = max(1, math.ceil(config.max_steps / steps_per_epoch))
    return (by_steps, True) if by_steps < config.epochs else (config.epochs, False)


def stop_reason(epoch: int, n_epochs: int, by_steps: bool, best_epoch: int, config: TrainConfig,
                steps: int) -> str | None:
    """Why training ends after ``epoch`` (0-based), or None to go on."""
    if config.patience is not None and epoch - best_epoch >= config.patience:
        return (f"stopped early after epoch {epoch + 1}: the validation loss has not improved for "
                f"{config.patience} epochs (best: epoch {best_epoch + 1})")
    if epoch + 1 >= n_epochs:
        if by_steps:
            return f"stopped after epoch {epoch + 1}: the step budget of {config.max_steps} steps is spent ({steps} steps)"
        return f"stopped after epoch {epoch + 1}: all {n_epochs} epochs done ({steps} steps)"
    return None


def _sample_boxes(config: TrainConfig, extract: int) -> tuple[SubtomoSet, tuple[float, list[dict[str, Any]]]]:
    """The training and validation boxes (edge ``extract`` voxels), and (the maps' voxel size in Å, the
    held-out slab of each map): :func:`_holdout_entries` of the maps as loaded here, read and binned once.
    The pair is the shape :func:`cryorestore.distributed.share_from_main` shares.

    The validation slab is separated from the training boxes by one training-crop edge (the box the
    network sees); rotating methods cut bigger boxes around it.
    """
    evens, odds, voxel = load_volumes(config)
    sampler = SubtomoSampler(evens, odds, extract, n_subtomos=config.n_subtomos, val_fraction=config.val_fraction,
                             seed=config.seed, min_std_percentile=config.min_std_percentile,
                             gap=config.subtomo_size)
    subs = sampler.sample()
    return subs, (voxel, _holdout_entries(subs, evens))


def _scheduler(opt: torch.optim.Optimizer, n: int, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch LR factor over ``n`` planned epochs."""
    if config.lr_schedule == "cosine":
        fn = lambda e: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(e, n) / n))  # noqa: E731
    elif config.lr_schedule == "step":
        fn = lambda e: 0.5 ** (e // max(1, n // 3))  # noqa: E731
    else:
        fn = lambda e: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(opt, fn)


def _method(config: TrainConfig) -> TrainingMethod:
    opts: dict[str, Any] = dict(loss=config.loss, tilt_range=tuple(config.tilt_range), crop=config.subtomo_size,
                                wedge_weight=config.wedge_weight, noise_levels=config.noise_levels,
                                noise_epochs=config.noise_epochs)
    if config.refill_every is not None:
        opts["refill_every"] = config.refill_every
    return get_method(config.method, **opts)


def _optimizer_step(loss: torch.Tensor, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler,
                    grad_clip: float) -> None:
    """Backward pass, gradient clipping (``grad_clip`` > 0) and one optimiser step (scaled with ``scaler``)."""
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()


def _run_epoch(model, method: TrainingMethod, data: HostBoxes, filled: HostBoxes | None, idx, batch_size, rng,
               device, config, opt=None, precision: Precision | None = None, desc="", progress=True,
               dctx: distributed.Context = distributed.SINGLE) -> float:
    """Mean loss over the boxes ``data[idx]``: a training epoch with ``opt``, a validation pass without.

    Validation batches come from :meth:`TrainingMethod.validation_batch` (fixed targets), training
    batches from :meth:`TrainingMethod.make_batch` with the refilled boxes ``filled`` (or None).
    Data parallel: every rank draws the augmentations of the whole global batch and keeps its share.
    """
    precision = precision or training_precision(device, enabled=False)
    total, count = 0.0, 0
    bar = progress_bar(range(0, len(idx), batch_size), desc=desc, leave=False, enabled=progress, unit="batch")
    for s in bar:
        sel = idx[s:s + batch_size]
        n_global = len(sel)
        if opt is not None and not distributed.usable(n_global, dctx):
            continue  # every rank must join each gradient all-reduce
        raw = data.batch(sel)
        if opt is None:
            batch = method.validation_batch(raw, rng)
        else:
            batch = method.make_batch(raw, rng, None if filled is None else filled.batch(sel))
        part = distributed.share(n_global, dctx)
        inp, tgt, ctx = distributed.shard_batch(batch, n_global, part)
        n_local = part.stop - part.start
        if n_local == 0:
            continue  # validation: a global batch smaller than the number of ranks
        with torch.set_grad_enabled(opt is not None):
            with precision.autocast():
                pred = model(inp)
            loss = method.loss(pred.float(), tgt, ctx)
        if not torch.isfinite(loss):
            raise RuntimeError("training diverged (loss is not finite); lower --lr")
        if opt is not None:
            _optimizer_step(loss * distributed.grad_weight(n_local, n_global, dctx), model, opt, precision.scaler,
                            config.grad_clip)
        total += float(loss.detach()) * n_local
        count += n_local
        bar.set_postfix(loss=f"{total / count:.4g}")
    total, count = distributed.all_sum([total, count], dctx, device)
    return total / max(count, 1)


def train(config: TrainConfig, progress: bool = True, resume: bool = False,
          on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``config.method`` on the configured maps; write the model directory ``config.out``.

    ``resume`` continues from ``OUT/checkpoint.pt`` (same options required; ``epochs`` and
    ``max_steps`` may grow, which stretches the LR schedule from there on; a run that already ended
    by patience or budget trains no more). ``on_epoch_end(epoch, record)`` is called after each
    epoch's checkpoint is written (e.g. for logging, or to stop a run early by raising).
    """
    from cryorestore.models import count_parameters

    config.validate()
    device = resolve_device(config.device)
    dctx, device = distributed.setup(device)  # data parallel under torchrun / --devices N, else a no-op
    progress = progress and dctx.is_main
    method = _method(config)
    if config.odd is None and method.paired == "required":
        raise InputError(f"method {config.method} needs even and odd half tomograms: give --odd")
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT
    ckpt = _load_resume_checkpoint(ckpt_path, config, dctx.is_main) if resume else None

    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    extract = method.extract_size(config.subtomo_size)
    # data parallel on one node: rank 0 alone reads the maps and cuts the boxes, every rank maps them from a file
    subs, (voxel, holdout) = distributed.share_from_main(lambda: _sample_boxes(config, extract), out, dctx)
    train_t, val_t = HostBoxes(subs.train, device), HostBoxes(subs.val, device)  # host memory, batches to device
    refills = method.refill_every
    train_f = train_t.clone() if refills else None
    refilled_file = None  # name of the file holding train_f, once a refill changed it
    n_epochs, by_steps = plan_epochs(config, len(train_t))
    steps_per_epoch = math.ceil(len(train_t) / config.batch_size)

    torch.manual_seed(config.seed)
    model = modeldir.build_network(config.to_dict()).to(device)
    n_params = count_parameters(model)
    net = distributed.wrap_model(model, dctx, device)  # what the optimizer steps through (DDP when several ranks)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = _scheduler(opt, n_epochs, config)
    precision = training_precision(device, config.amp)
    scaler = precision.scaler
    history: list[dict[str, float]] = []
    best_val, best_epoch, start = math.inf, -1, 0
    elapsed0 = 0.0
    reason = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        history = list(ckpt["history"])
        best_val, best_epoch, start = ckpt["best_val_loss"], ckpt["best_epoch"], ckpt["epoch"] + 1
        elapsed0 = float(ckpt.get("seconds", 0.0))
        if train_f is not None and ckpt.get("refilled"):
            refilled_file = ckpt["refilled"]
            if not (out / refilled_file).is_file():
                raise InputError(f"--resume: the checkpoint needs {out / refilled_file}, which is missing; "
                                 f"train without --resume")
            filled = torch.load(out / refilled_file, map_location="cpu", weights_only=True)
            train_f = HostBoxes(filled["train"], device)
        elif train_f is not None and ckpt.get("train_filled") is not None:  # checkpoints before refilled-*.pt
            train_f = HostBoxes(ckpt["train_filled"], device)
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt.get("numpy_rng") is not None:
            np.random.set_state(ckpt["numpy_rng"])
        if ckpt.get("python_rng") is not None:
            random.setstate(ckpt["python_rng"])
        reason = stop_reason(start - 1, n_epochs, by_steps, best_epoch, config, start * steps_per_epoch)
        if reason is not None and dctx.is_main:
            print(f"checkpoint after epoch {start} already met its end; nothing to do", flush=True)

    if dctx.is_main:
        _log_start(config, subs, n_params, extract, device, n_epochs, steps_per_epoch, precision, dctx)
    # The model directory records every option of the network (defaults included), so that a later
    # release with different defaults still rebuilds this exact architecture from config.json.
    model_config = config.to_dict() | {"extract_size": extract, "n_parameters": n_params, "voxel_size": voxel,
                                       "tilt_range": list(config.tilt_range),
                                       "model_options": dict(model.options), "world_size": dctx.world_size,
                                       "holdout": holdout}
    live = is_live(progress)
    t0 = time.perf_counter()
    epochs = range(start, n_epochs) if reason is None else range(0)
    bar = progress_bar(epochs, desc="epochs", enabled=progress, unit="epoch", leave=True, interval=None,
                       initial=start, total=n_epochs)
    for epoch in bar:
        te = time.perf_counter()
        method.start_epoch(epoch)
        model.train()
        rng = np.random.default_rng([config.seed, epoch])
        idx = torch.as_tensor(rng.permutation(len(train_t)))
        tl = _run_epoch(net, method, train_t, train_f, idx, config.batch_size, rng, device, config, opt, precision,
                        desc=f"epoch {epoch + 1}", progress=progress, dctx=dctx)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        vl = _validate(model, method, val_t, device, config, progress, precision, dctx)
        improved = vl < best_val  # vl is the all-ranks mean: every rank takes the same branch
        if improved:
            best_val, best_epoch = vl, epoch
            if dctx.is_main:
                modeldir.save_model_dir(out, model, model_config | {"best_epoch": epoch, "best_val_loss": vl},
                                        subs.normalization)
        reason = stop_reason(epoch, n_epochs, by_steps, best_epoch, config, (epoch + 1) * steps_per_epoch)
        refilled_now = bool(refills) and (epoch + 1) % refills == 0 and reason is None
        if refilled_now:
            refilled_file = _refill(method, model, train_t, train_f, config.batch_size, dctx, device, out, epoch,
                                    progress)
        history.append({"epoch": epoch, "step": (epoch + 1) * steps_per_epoch, "train_loss": tl, "val_loss": vl,
                        "lr": lr, "refilled": refilled_now, "seconds": time.perf_counter() - te})
        bar.set_postfix(train=f"{tl:.4g}", val=f"{vl:.4g}", best=best_epoch + 1)
        if not live and dctx.is_main:
            print(f"epoch {epoch + 1}/{n_epochs}: train {tl:.5g}  val {vl:.5g}{'  (best)' if improved else ''}  "
                  f"{history[-1]['seconds']:.0f} s", flush=True)
        if dctx.is_main:
            kept_refill = _checkpoint_refill(ckpt_path)  # about to become checkpoint.prev.pt's
            _save_checkpoint(ckpt_path, model, opt, sched, epoch, history, best_val, best_epoch, config,
                             refilled_file, elapsed0 + time.perf_counter() - t0, scaler, dctx.world_size)
            remove_stale_refills(out, {refilled_file, kept_refill})
        if on_epoch_end is not None:
            on_epoch_end(epoch, history[-1])
        if reason is not None:
            break
    seconds = elapsed0 + time.perf_counter() - t0
    reason = reason or "stopped: no epoch left to run"
    if dctx.is_main:
        print(reason, flush=True)
    distributed.barrier(dctx)  # rank 0's files are complete before any rank returns
    distributed.teardown(dctx)
    return TrainResult(history, best_epoch, float(best_val), seconds, str(out), n_params, reason, dctx.is_main)


def _holdout_entries(subs: SubtomoSet, evens: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """Per training tomogram, the slab no training box touched (input voxels, :meth:`SlabSplit.holdout`)
    and a fingerprint of its even map (:func:`cryorestore.data.volume_fingerprint`), for ``cryorestore score``.

    ``evens`` are the (z, y, x) even maps as trained on (level and binning applied: the arrays of
    :func:`load_volumes`, in memory or lazy)."""
    from cryorestore.data import volume_fingerprint

    return [sp.holdout(v.shape) | {"fingerprint": volume_fingerprint(v)} for sp, v in zip(subs.splits, evens)]


class CorruptCheckpoint(Exception):
    """A checkpoint file that is truncated, fails its checksum or cannot be unpickled."""


def write_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` with its checksum line (atomically); the current file becomes ``checkpoint.prev.pt``."""
    buf = _io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = _MAGIC + f"sha256={hashlib.sha256(payload).hexdigest()} epoch={int(state.get('epoch', -1))}\n".encode()
    path = Path(path)
    if path.is_file():  # keep it as the previous checkpoint (a hard link, then a rename: never absent)
        prev = path.with_name(CHECKPOINT_PREV)
        link = path.with_name(f".{CHECKPOINT_PREV}.{os.getpid()}.part")
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, prev)
    with io.atomic_path(path) as tmp:
        tmp.write_bytes(header + payload)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state, its checksum verified; :class:`CorruptCheckpoint` saying what is wrong.

    Files without the checksum line (written before checksums) are loaded as they are.
    """
    data = Path(path).read_bytes()
    payload = data
    if data.startswith(_MAGIC):
        line, _, payload = data.partition(b"\n")
        fields = dict(f.split("=", 1) for f in line[len(_MAGIC):].decode().split() if "=" in f)
        if hashlib.sha256(payload).hexdigest() != fields.get("sha256"):
            raise CorruptCheckpoint(f"{path} fails its SHA-256 checksum (damaged or truncated)")
    try:
        return torch.load(_io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 — any unpickling failure means a damaged file
        raise CorruptCheckpoint(f"{path} cannot be read ({type(exc).__name__})") from None


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch (0-based) in a checkpoint's checksum line, without loading it; None when unknown."""
    try:
        with open(path, "rb") as fh:
            line = fh.readline(200)
    except OSError:
        return None
    if not line.startswith(_MAGIC):
        return None
    for f in line[len(_MAGIC):].decode(errors="replace").split():
        if f.startswith("epoch="):
            return int(f[6:])
    return None


def describe_kept(out: str | Path) -> str | None:
    """What a stopped run leaves in model directory ``out`` (for the stop line), None when nothing."""
    d = Path(out)
    parts = []
    e = checkpoint_epoch(d / CHECKPOINT)
    if e is not None:
        parts.append(f"{d / CHECKPOINT} (after epoch {e + 1}; continue with --resume)")
    if all((d / f).is_file() for f in modeldir.FILES):
        parts.append(f"the model directory {d} (best epoch so far)")
    return " and ".join(parts) or None


def _checkpoint_refill(path: Path) -> str | None:
    """The refilled-box file the checkpoint at ``path`` names (read from the file; None if none/unreadable)."""
    if not path.is_file():
        return None
    try:
        return read_checkpoint(path).get("refilled")
    except (CorruptCheckpoint, OSError):
        return None


def _load_resume_checkpoint(path: Path, config: TrainConfig, verbose: bool = True) -> dict[str, Any]:
    """The checkpoint ``--resume`` continues from; an input error when absent or made with other options.

    ``checkpoint.pt`` when it is sound, else ``checkpoint.prev.pt`` with a line naming what was wrong.
    """
    prev = path.with_name(CHECKPOINT_PREV)
    if not path.is_file() and not prev.is_file():
        raise InputError(f"--resume: no checkpoint in {path.parent}; train without --resume first")
    problems = []
    ckpt = None
    for cand in (path, prev):
        if not cand.is_file():
            problems.append(f"{cand} is missing")
            continue
        try:
            ckpt = read_checkpoint(cand)
            break
        except CorruptCheckpoint as exc:
            problems.append(str(exc))
    if ckpt is None:
        raise InputError(f"--resume: no usable checkpoint ({'; '.join(problems)}); train without --resume")
    if problems and verbose:
        print(f"warning: {problems[0]}; resuming from {prev.name} (after epoch {ckpt['epoch'] + 1})",
              file=sys.stderr, flush=True)
    old, new = ckpt["config"], config.to_dict()
    diff = [k for k in _RESUME_KEYS if json.dumps(old.get(k)) != json.dumps(new.get(k))]
    if diff:
        raise InputError(f"--resume: options differ from the checkpoint's ({', '.join(diff)}); use the same options")
    return ckpt


def _validate(model: torch.nn.Module, method: TrainingMethod, val_t: HostBoxes, device: torch.device,
              config: TrainConfig, progress: bool, precision: Precision,
              dctx: distributed.Context = distributed.SINGLE) -> float:
    """Mean validation loss on the held-out boxes, with the same augmentations every epoch (all ranks' mean)."""
    model.eval()
    with torch.no_grad():
        vrng = np.random.default_rng([config.seed, 2**31 - 1])
        vidx = torch.arange(len(val_t))
        return _run_epoch(model, method, val_t, None, vidx, config.batch_size, vrng, device, config,
                          precision=precision, desc="validation", progress=progress, dctx=dctx)


def _log_start(config: TrainConfig, subs, n_params: int, extract: int, device: torch.device, n_epochs: int,
               steps_per_epoch: int, precision: Precision, dctx: distributed.Context) -> None:
    """One line on what is trained (and where), one on the split, one on the schedule."""
    ranks = f", {dctx.world_size} ranks (DistributedDataParallel, global batch {config.batch_size})" \
        if dctx.active else ""
    print(f"{config.method} / {config.model} ({n_params:,} parameters) / loss {config.loss}: "
          f"{len(subs.train)} training + {len(subs.val)} validation boxes of {extract}³ → crops of "
          f"{config.subtomo_size}³, device {device}, {precision.describe()}{ranks}", flush=True)
    print("disjoint validation: " + "; ".join(f"tomogram {i + 1}: {sp.describe()}" for i, sp in enumerate(subs.splits)),
          flush=True)
    budget = f", step budget {config.max_steps}" if config.max_steps is not None else ""
    patience = f", patience {config.patience} epochs" if config.patience is not None else ""
    print(f"schedule: up to {n_epochs} epoch{'s' * (n_epochs != 1)} of {steps_per_epoch} steps (batch {config.batch_size}){budget}{patience}",
          flush=True)


def _refill(method: TrainingMethod, model, original: HostBoxes, filled: HostBoxes, batch_size: int,
            dctx: distributed.Context, device: torch.device, out: Path, epoch: int, progress: bool) -> str:
    """Refill the training boxes' missing wedge (each rank its share, then shared); rank 0 writes them.

    Returns the name of the file (in ``out``) that holds the refilled boxes.
    """
    part = distributed.share(len(original), dctx)
    method.refill(model, original.data[part], filled.data[part], batch_size, progress=progress)
    distributed.broadcast_rows(filled.data, dctx, device)
    name = refilled_name(epoch)
    if dctx.is_main:
        distributed.atomic_save({"train": filled.data, "epoch": epoch}, out / name)
    return name


def _save_checkpoint(path: Path, model, opt, sched, epoch, history, best_val, best_epoch, config, refilled,
                     seconds, scaler=None, world_size=1) -> None:
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": epoch,
        "history": history,
        "best_val_loss": best_val,
        "best_epoch": best_epoch,
        "config": config.to_dict(),
        "refilled": refilled,  # file (in the same directory) with the refilled boxes, or None
        "scaler": None if scaler is None else scaler.state_dict(),
        "world_size": world_size,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "seconds": seconds,
    }
    write_checkpoint(state, path)
