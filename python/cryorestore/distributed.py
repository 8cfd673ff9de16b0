"""Data-parallel training: process group set-up, batch sharding, reductions, rank-0 writes, the launcher.

One model is trained by ``W`` processes ("ranks"), one per device, with
:class:`torch.nn.parallel.DistributedDataParallel` (NCCL on GPUs, gloo on CPU). Two ways to start them:

* ``cryorestore train --devices N ...`` spawns the ranks itself (:func:`launch`, loopback rendezvous);
* ``torchrun --nproc_per_node N -m cryorestore train --even=E.mrc ...`` (torchrun sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; write ``--even=...`` with ``=``
  because torchrun's own parser takes a bare ``--even`` for an abbreviation of ``--event-log-handler``).

Sharding: ``--batch-size`` is the *global* batch. Every rank draws the same permutation and the same
augmentations for the whole global batch (from the shared seed) and keeps a contiguous share of it
(:func:`share`); gradients are averaged by DDP with weights that make the step the full batch's
gradient (:func:`grad_weight`). So a run on ``N`` devices follows the trajectory of a run on one, up
to floating-point reduction order. Global batches with fewer boxes than ranks are skipped.

Failures: an input error in rank 0's set-up (a bad map while cutting the boxes) is sent to every rank,
which all end with the same one-line error (exit 2) instead of waiting for rank 0; with ``--devices N``
only rank 0 prints it. When a rank dies (killed, out of memory, an exception) :func:`launch` stops the
others and prints one line naming the rank and how it ended; the last checkpoint is kept for
``--resume``. Normalisation: the networks' default norms (instance, group, layer) are per sample and
need no synchronisation, so N ranks follow one rank's trajectory; BatchNorm layers are converted to
SyncBatchNorm on GPUs and refused on CPU ranks, where PyTorch has no SyncBatchNorm
(``benchmarks/bench_faults_norm.py`` measures the difference).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from cryorestore.errors import InputError

class SharedInputError(InputError):
    """Rank 0's input error, received by another rank (which then need not print it again)."""


@dataclass(frozen=True)
class Context:
    """This process's place in the run: ``rank`` of ``world_size``; ``owns_group``: we started the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and prints (rank 0; the only rank without DDP)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


SINGLE = Context()


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (set by torchrun or :func:`launch`), 1 when unset."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group described by the environment; return the context and this rank's device.

    Without ``WORLD_SIZE`` > 1 nothing happens (single process). On CUDA rank ``r`` uses GPU
    ``LOCAL_RANK`` and NCCL; on CPU the ranks use gloo.
    """
    world = env_world_size()
    if world <= 1:
        return SINGLE, device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise InputError(f"rank {rank} wants GPU {local} but only {torch.cuda.device_count()} are visible")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        kw: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world, **kw)
    return Context(rank, world, local, owns), device


def teardown(ctx: Context) -> None:
    """Leave the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, ctx: Context, device: torch.device) -> torch.nn.Module:
    """The module to train: ``model`` itself, or a DDP wrapper (batch norms synchronised on CUDA).

    On CPU ranks a network with BatchNorm layers is refused (one line): PyTorch's SyncBatchNorm needs
    GPUs, and unsynchronised batch statistics would make N ranks train a different model than one.
    """
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type != "cuda" and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise (InputError if ctx.is_main else SharedInputError)("this network has BatchNorm layers, whose statistics cannot be synchronised across CPU "
                         "ranks (SyncBatchNorm needs GPUs); use --model-option norm=instance (the default) or "
                         "norm=group, or train on one CPU process")
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def share(n: int, ctx: Context) -> slice:
    """This rank's contiguous part of ``n`` items (sizes differ by at most one, lower ranks first)."""
    q, r = divmod(n, ctx.world_size)
    start = ctx.rank * q + min(ctx.rank, r)
    return slice(start, start + q + (1 if ctx.rank < r else 0))


def usable(n: int, ctx: Context) -> bool:
    """Whether a global batch of ``n`` items gives every rank at least one (else it is skipped)."""
    return n >= ctx.world_size


def grad_weight(n_local: int, n_global: int, ctx: Context) -> float:
    """Factor for the local mean loss so that DDP's gradient average equals the global batch's gradient."""
    return n_local * ctx.world_size / n_global if ctx.active else 1.0


def shard_batch(batch: Any, n: int, part: slice) -> Any:
    """The rows ``part`` of every per-sample tensor (leading dimension ``n``) in a batch structure.

    Tensors whose leading dimension is not ``n`` (e.g. a mask shared by the whole batch) and
    non-tensors are returned unchanged; tuples, lists and dicts are walked.
    """
    if isinstance(batch, torch.Tensor):
        return batch[part] if batch.ndim > 0 and batch.shape[0] == n else batch
    if isinstance(batch, dict):
        return {k: shard_batch(v, n, part) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_batch(v, n, part) for v in batch)
    return batch


def all_sum(values: Sequence[float], ctx: Context, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64); the values themselves without DDP."""
    if not ctx.active:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def single_node(ctx: Context) -> bool:
    """Whether all ranks run on this machine (``LOCAL_WORLD_SIZE`` = ``WORLD_SIZE``) and so see the same files."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size)) == ctx.world_size


def share_from_main(make: Callable[[], tuple[Any, Any]], directory: Path, ctx: Context) -> tuple[Any, Any]:
    """``make()`` → ``(dataclass, extra)`` computed once on rank 0; every rank gets it, big arrays memory-mapped.

    The dataclass's numpy-array fields are written to ``directory/.shared-<field>.npy``; every rank
    (rank 0 too, which drops its own copy) maps them copy-on-write, so one node holds one copy of the
    boxes in its page cache however many ranks read them. The files are unlinked once every rank has
    mapped them (the mappings stay valid). The rest of the dataclass and ``extra`` are pickled and
    broadcast. Without DDP, or when the ranks span several machines, every rank just calls ``make()``.
    """
    if not ctx.active or not single_node(ctx):
        return make()
    import dataclasses

    import numpy as np

    payload: list[Any] = [None]
    if ctx.is_main:
        try:
            obj, extra = make()
        except InputError as exc:  # every rank ends with the same line instead of waiting for rank 0
            dist.broadcast_object_list([("error", str(exc))], src=0)
            raise
        names = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, np.ndarray):
                names[f.name] = Path(directory) / f".shared-{f.name}.npy"
                from cryorestore import io

                with io.atomic_path(names[f.name]) as tmp:
                    np.save(tmp, value)
        payload = [(dataclasses.replace(obj, **{k: None for k in names}), extra, names)]
        del obj
    dist.broadcast_object_list(payload, src=0)
    if payload[0][0] == "error":
        raise SharedInputError(payload[0][1])
    stripped, extra, names = payload[0]
    arrays = {k: np.load(p, mmap_mode="c") for k, p in names.items()}
    barrier(ctx)
    if ctx.is_main:
        for p in names.values():
            Path(p).unlink(missing_ok=True)
    return dataclasses.replace(stripped, **arrays), extra


def broadcast_rows(tensor: torch.Tensor, ctx: Context, device: torch.device, chunk: int = 8) -> None:
    """In place: rows :func:`share` (len, r) of ``tensor`` (on any device) take rank ``r``'s values.

    Used after each rank updated only its own share of a host tensor; rows are sent ``chunk`` at a
    time through ``device`` (NCCL needs CUDA tensors), so the extra memory is one chunk.
    """
    if not ctx.active:
        return
    n = tensor.shape[0]
    for r in range(ctx.world_size):
        part = share(n, Context(r, ctx.world_size))
        for s in range(part.start, part.stop, chunk):
            rows = slice(s, min(s + chunk, part.stop))
            buf = tensor[rows].to(device).contiguous()
            dist.broadcast(buf, src=r)
            if r != ctx.rank:
                tensor[rows] = buf.to(tensor.device)


# --------------------------------------------------------------------------------------- launcher


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, threads: int) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        result = fn(*args)
        rc = result if isinstance(result, int) else 0
    except SharedInputError:
        rc = 2  # rank 0 prints it
    except InputError as exc:
        print(f"cryorestore: error (rank {local_rank}): {exc}", file=sys.stderr, flush=True)
        rc = 2
    except KeyboardInterrupt:  # stopped by the launcher (SIGTERM/SIGINT)
        rc = 130
    if rc:
        # leave without the interpreter's teardown: destroying a process group whose peer has already gone
        # can abort in C++ ("terminate called without an active exception", SIGABRT), which would turn a
        # one-line input error into a crash report
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def check_devices(devices: int, device: torch.device) -> None:
    """One-line error when ``devices`` ranks cannot run on ``device`` (CUDA: that many visible GPUs)."""
    if devices < 1:
        raise InputError(f"--devices must be at least 1, got {devices}")
    if device.type == "cuda" and devices > torch.cuda.device_count():
        raise InputError(f"--devices {devices} asks for more GPUs than the {torch.cuda.device_count()} visible; "
                         f"lower --devices or set CUDA_VISIBLE_DEVICES")


def launch(devices: int, device: torch.device, fn: Callable[..., Any], *args: Any,
           kept: Callable[[], str] | None = None) -> int:
    """Run ``fn(*args)`` in ``devices`` new processes that form one process group; return an exit code.

    A rank's exit code is ``fn``'s result when that is an int, else 0 (2 on :class:`InputError`).
    Each process gets ``RANK``/``LOCAL_RANK``/``[LOCAL_]WORLD_SIZE``/``MASTER_*`` as torchrun sets them
    (rendezvous on 127.0.0.1). ``fn`` and ``args`` must be picklable. On CPU the cores are split
    among the ranks. Exit code: 0, or the first failing rank's code (its siblings are stopped); a rank
    killed by a signal gives 128 + its number and one line naming the rank, followed by ``kept()``
    (what the run leaves, e.g. the last checkpoint). When this process itself is stopped (SIGTERM or
    SIGINT raise in it), the ranks are terminated before the stop propagates.
    """
    import signal as _signal

    import torch.multiprocessing as mp

    check_devices(devices, device)
    threads = max(1, torch.get_num_threads() // devices) if device.type == "cpu" else 0
    ctx = mp.start_processes(_worker, args=(devices, free_port(), fn, args, threads), nprocs=devices, join=False,
                             start_method="spawn")
    try:
        while not ctx.join():
            pass
    except mp.ProcessExitedException as exc:
        code = exc.exit_code or 1
        if code < 0:  # killed by a signal; but when a sibling ended on an input error (exit 2, its one line
            for p in ctx.processes:  # printed), a rank that aborted while the group came down is its consequence
                p.join(10)
            if any(p.exitcode == 2 for p in ctx.processes):
                return 2
            name = exc.signal_name or _signal.Signals(-code).name
            more = f"; {kept()}" if kept is not None else ""
            print(f"cryorestore: rank {exc.error_index} ended by {name}; every rank was stopped{more}",
                  file=sys.stderr, flush=True)
            return 128 + abs(code)
        return int(code)
    except mp.ProcessRaisedException as exc:
        print(f"cryorestore: a training rank failed:\n{exc}", file=sys.stderr)
        return 1
    except BaseException:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
        for p in ctx.processes:
            p.join(30)
        raise
    return 0


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` through a temporary file (no partial file on failure)."""
    import io as _io

    from cryorestore import io

    buf = _io.BytesIO()
    torch.save(obj, buf)
    with io.atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
