"""Training loop shared by all methods: AdamW, LR schedule, AMP on CUDA, clipping, validation, checkpoints.

One *epoch* is one pass over the training boxes in random order (seeded per epoch, so a resumed
run draws the same batches as an uninterrupted one). After each epoch the validation loss is
computed on the held-out boxes with fixed augmentations (same rotations every epoch), the last
state is written to ``OUT/checkpoint.pt`` (model, optimizer, scheduler, epoch, history, RNG states,
refilled boxes) and, when the validation loss improved, the model directory ``OUT/`` is updated
with the best weights (see :mod:`cryorestore.modeldir`).
"""

from __future__ import annotations

import io as _io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from cryorestore import io, modeldir
from cryorestore.data import SubtomoSampler
from cryorestore.errors import InputError
from cryorestore.methods import METHOD_NAMES, get_method

CHECKPOINT = "checkpoint.pt"
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
    batch_size: int = 8
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


@dataclass
class TrainResult:
    """History (one dict per epoch: epoch, train_loss, val_loss, lr, seconds), best epoch, wall time (s)."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    seconds: float
    model_dir: str
    n_parameters: int


def resolve_device(name: str) -> torch.device:
    from cryorestore.device import resolve_device as _resolve

    return _resolve(name)


def load_volumes(config: TrainConfig) -> tuple[list[np.ndarray], list[np.ndarray] | None, float]:
    """Read the even (and odd) maps, check grids, return arrays and the voxel size (Å)."""
    evens, odds = [], None if config.odd is None else []
    voxel = None
    for i, e in enumerate(config.even):
        ve = io.read_mrc(e)
        if odds is not None:
            vo = io.read_mrc(config.odd[i])
            io.check_same_grid(ve, vo, e, config.odd[i])
            odds.append(vo.data)
        if voxel is None:
            voxel = ve.voxel_size
        elif not np.isclose(voxel, ve.voxel_size, rtol=1e-3):
            raise InputError(f"{e} has voxel size {ve.voxel_size:g} Å but the first map has {voxel:g} Å")
        evens.append(ve.data)
    return evens, odds, float(voxel)


def _scheduler(opt: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    n = config.epochs
    if config.lr_schedule == "cosine":
        fn = lambda e: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(e, n) / n))  # noqa: E731
    elif config.lr_schedule == "step":
        fn = lambda e: 0.5 ** (e // max(1, n // 3))  # noqa: E731
    else:
        fn = lambda e: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(opt, fn)


def _method(config: TrainConfig):
    opts: dict[str, Any] = dict(loss=config.loss, tilt_range=tuple(config.tilt_range), crop=config.subtomo_size,
                                wedge_weight=config.wedge_weight, noise_levels=config.noise_levels,
                                noise_epochs=config.noise_epochs)
    if config.refill_every is not None:
        opts["refill_every"] = config.refill_every
    return get_method(config.method, **opts)


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    import contextlib

    return contextlib.nullcontext()


def _run_epoch(model, method, data, filled, idx, batch_size, rng, device, config, opt=None, scaler=None,
               desc="", progress=True) -> float:
    total, count = 0.0, 0
    bar = tqdm(range(0, len(idx), batch_size), desc=desc, leave=False, disable=not progress, unit="batch")
    for s in bar:
        sel = idx[s:s + batch_size]
        raw = data[sel]
        fil = None if filled is None else filled[sel]
        inp, tgt, ctx = method.make_batch(raw, rng, fil)
        with torch.set_grad_enabled(opt is not None):
            with _autocast(device, config.amp):
                pred = model(inp)
            loss = method.loss(pred.float(), tgt, ctx)
        if not torch.isfinite(loss):
            raise RuntimeError("training diverged (loss is not finite); lower --lr")
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
        total += float(loss.detach()) * len(sel)
        count += len(sel)
        bar.set_postfix(loss=f"{total / count:.4g}")
    return total / max(count, 1)


def train(config: TrainConfig, progress: bool = True, resume: bool = False,
          on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``config.method`` on the configured maps; write the model directory ``config.out``.

    ``resume`` continues from ``OUT/checkpoint.pt`` (same options required; ``epochs`` may grow, which
    stretches the LR schedule from there on). ``on_epoch_end(epoch, record)`` is called after each
    epoch's checkpoint is written (e.g. for logging, or to stop a run early by raising).
    """
    from cryorestore.models import count_parameters

    config.validate()
    device = resolve_device(config.device)
    method = _method(config)
    if config.odd is None and method.paired == "required":
        raise InputError(f"method {config.method} needs even and odd half tomograms: give --odd")
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT
    ckpt = None
    if resume:
        if not ckpt_path.is_file():
            raise InputError(f"--resume: no checkpoint in {out}; train without --resume first")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        old = ckpt["config"]
        new = config.to_dict()
        diff = [k for k in _RESUME_KEYS if json.dumps(old.get(k)) != json.dumps(new.get(k))]
        if diff:
            raise InputError(f"--resume: options differ from the checkpoint's ({', '.join(diff)}); use the same options")

    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    evens, odds, voxel = load_volumes(config)
    extract = method.extract_size(config.subtomo_size)
    sampler = SubtomoSampler(evens, odds, extract, n_subtomos=config.n_subtomos, val_fraction=config.val_fraction,
                             seed=config.seed, min_std_percentile=config.min_std_percentile)
    subs = sampler.sample()
    del evens, odds
    train_t = torch.from_numpy(subs.train).to(device)
    val_t = torch.from_numpy(subs.val).to(device)
    refills = getattr(method, "refill_every", 0) or 0
    train_f = train_t.clone() if refills else None
    val_f = val_t.clone() if refills else None

    torch.manual_seed(config.seed)
    model = modeldir.build_network(config.to_dict()).to(device)
    n_params = count_parameters(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = _scheduler(opt, config)
    scaler = None
    if device.type == "cuda" and config.amp and not torch.cuda.is_bf16_supported():
        scaler = torch.amp.GradScaler("cuda")
    history: list[dict[str, float]] = []
    best_val, best_epoch, start = math.inf, -1, 0
    elapsed0 = 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        history = list(ckpt["history"])
        best_val, best_epoch, start = ckpt["best_val_loss"], ckpt["best_epoch"], ckpt["epoch"] + 1
        elapsed0 = float(ckpt.get("seconds", 0.0))
        if train_f is not None and ckpt.get("train_filled") is not None:
            train_f = ckpt["train_filled"].to(device)
            val_f = ckpt["val_filled"].to(device)
        torch.set_rng_state(ckpt["torch_rng"])
        if start >= config.epochs:
            print(f"checkpoint already has {start} epochs (asked for {config.epochs}); nothing to do")

    print(f"{config.method} / {config.model} ({n_params:,} parameters) / loss {config.loss}: "
          f"{len(train_t)} training + {len(val_t)} validation boxes of {extract}³ → crops of {config.subtomo_size}³, "
          f"device {device}", flush=True)
    # The model directory records every option of the network (defaults included), so that a later
    # release with different defaults still rebuilds this exact architecture from config.json.
    model_config = config.to_dict() | {"extract_size": extract, "n_parameters": n_params, "voxel_size": voxel,
                                       "tilt_range": list(config.tilt_range),
                                       "model_options": dict(model.options)}
    t0 = time.perf_counter()
    bar = tqdm(range(start, config.epochs), desc="epochs", disable=not progress, unit="epoch", initial=start,
               total=config.epochs)
    for epoch in bar:
        te = time.perf_counter()
        if hasattr(method, "start_epoch"):
            method.start_epoch(epoch)
        model.train()
        rng = np.random.default_rng([config.seed, epoch])
        idx = torch.as_tensor(rng.permutation(len(train_t)), device=device)
        tl = _run_epoch(model, method, train_t, train_f, idx, config.batch_size, rng, device, config, opt, scaler,
                        desc=f"epoch {epoch + 1}", progress=progress)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        model.eval()
        with torch.no_grad():
            vrng = np.random.default_rng([config.seed, 2**31 - 1])
            vidx = torch.arange(len(val_t), device=device)
            vl = _run_epoch(model, method, val_t, val_f, vidx, config.batch_size, vrng, device, config,
                            desc="validation", progress=progress)
        improved = vl < best_val
        if improved:
            best_val, best_epoch = vl, epoch
            modeldir.save_model_dir(out, model, model_config | {"best_epoch": epoch, "best_val_loss": vl},
                                    subs.normalization)
        if refills and (epoch + 1) % refills == 0 and epoch + 1 < config.epochs:
            method.refill(model, train_t, train_f, config.batch_size)
            method.refill(model, val_t, val_f, config.batch_size)
        history.append({"epoch": epoch, "train_loss": tl, "val_loss": vl, "lr": lr,
                        "seconds": time.perf_counter() - te})
        bar.set_postfix(train=f"{tl:.4g}", val=f"{vl:.4g}", best=best_epoch + 1)
        if not progress:
            print(f"epoch {epoch + 1}/{config.epochs}: train {tl:.5g}  val {vl:.5g}{'  (best)' if improved else ''}  "
                  f"{history[-1]['seconds']:.0f} s", flush=True)
        _save_checkpoint(ckpt_path, model, opt, sched, epoch, history, best_val, best_epoch, config,
                         train_f, val_f, elapsed0 + time.perf_counter() - t0)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history[-1])
    seconds = elapsed0 + time.perf_counter() - t0
    return TrainResult(history, best_epoch, float(best_val), seconds, str(out), n_params)


def _save_checkpoint(path: Path, model, opt, sched, epoch, history, best_val, best_epoch, config, train_f, val_f,
                     seconds) -> None:
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": epoch,
        "history": history,
        "best_val_loss": best_val,
        "best_epoch": best_epoch,
        "config": config.to_dict(),
        "train_filled": None if train_f is None else train_f.cpu(),
        "val_filled": None if val_f is None else val_f.cpu(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "seconds": seconds,
    }
    buf = _io.BytesIO()
    torch.save(state, buf)
    with io.atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
