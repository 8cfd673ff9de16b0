"""Quick fault checks (part of ``make test``): locks, staged outputs, stops, disk errors, damaged checkpoints.

The long seeded kill campaign is ``test_faults_long.py`` (``make test-faults``); both use ``harness.py``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cryorestore import outputs
from cryorestore.cli import main
from cryorestore.errors import InputError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402

TINY = {"base_channels": 4, "depth": 2, "convs_per_block": 1}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from cryorestore.simulate import simulate_dataset

    d = tmp_path_factory.mktemp("sim")
    simulate_dataset(d, shape=(32, 48, 48), seed=3, preset="toy")
    return d


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


# ------------------------------------------------------------------------------------------- locks


def test_lock_names_a_live_holder_and_takes_over_a_dead_one(tmp_path, capsys):
    out = tmp_path / "model"
    holder = _sleeper()
    try:
        record = {"pid": holder.pid, "host": __import__("socket").gethostname(), "command": "cryorestore train X",
                  "started": "2026-01-01 00:00:00", "start_time": outputs._start_time(holder.pid)}
        outputs.lock_path(out).write_text(json.dumps(record))
        with pytest.raises(InputError, match=f"in use by another run: pid {holder.pid} .*cryorestore train X"):
            outputs.acquire(out, "second")
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale, taken over with a line
    lp = outputs.acquire(out, "third")
    assert json.loads(lp.read_text())["pid"] == os.getpid()
    assert "took over the stale lock" in capsys.readouterr().err
    outputs.release(out)
    assert not lp.exists()


def test_lock_with_a_reused_pid_is_stale(tmp_path):
    """A pid that now belongs to another process (different start time) does not hold the lock."""
    out = tmp_path / "o"
    rec = {"pid": os.getpid(), "host": __import__("socket").gethostname(), "start_time": "1",
           "command": "old", "started": "x"}
    assert outputs._stale(rec) == (outputs._start_time(os.getpid()) is not None)


def test_second_train_into_a_locked_model_directory_exits_2_naming_the_holder(sim, tmp_path, capsys):
    out = tmp_path / "model"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from cryorestore import outputs; "
                               f"outputs.acquire({str(out)!r}, 'cryorestore train --out M'); "
                               "print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=harness.env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["train", "--even", str(sim / "even.mrc"), "--odd", str(sim / "odd.mrc"), "--out", str(out),
                   "--epochs", "1", "--device", "cpu", "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1
        assert f"pid {holder.pid}" in err[0] and "cryorestore train --out M" in err[0]
        assert not out.exists()  # nothing written by the loser
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------------------------- staged outputs


def test_folder_commit_replaces_in_one_step_and_keeps_other_entries(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / "a.txt").write_text("old a")
    (d / "model").mkdir()
    (d / "model" / "checkpoint.pt").write_text("ckpt")
    with outputs.folder(d) as stage:
        (stage / "a.txt").write_text("new a")
        (stage / "b.txt").write_text("new b")
        assert (d / "a.txt").read_text() == "old a"  # nothing visible before the commit
        assert not (d / "b.txt").exists()
    assert (d / "a.txt").read_text() == "new a" and (d / "b.txt").read_text() == "new b"
    assert (d / "model" / "checkpoint.pt").read_text() == "ckpt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left


def test_folder_failure_leaves_the_old_folder_and_no_debris(tmp_path):
    d = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with outputs.folder(d) as stage:
            (stage / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert not d.exists() and list(tmp_path.iterdir()) == []


def test_folder_fallback_without_exchange_and_recovery_of_a_kill_between_renames(tmp_path, monkeypatch):
    d = tmp_path / "out"
    d.mkdir()
    (d / "a.txt").write_text("old")
    monkeypatch.setattr(outputs, "_renameat2", lambda a, b: False)
    with outputs.folder(d) as stage:
        (stage / "a.txt").write_text("new")
    assert (d / "a.txt").read_text() == "new"
    # a kill after `out` was moved aside and before the staging folder took its place
    old = tmp_path / ".out.old-999999-deadbeef"
    os.rename(d, old)
    (tmp_path / ".out.staging-999999-deadbeef").mkdir()
    done = outputs.recover(d)
    assert (d / "a.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert any("restored" in x for x in done)


def test_files_commit_is_rolled_forward_after_a_kill_between_renames(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "other.txt").write_text("not ours")
    # the state a kill leaves after the journal was written and one of two renames was done
    host = __import__("socket").gethostname()
    tok = f"{host}-999999-abcdef01"
    stage = folder / f"{outputs.FILES_STAGING}{tok}"
    stage.mkdir()
    (stage / "b.json").write_text("b")
    (folder / "a.mrc").write_text("a")  # already moved
    (folder / f"{outputs.JOURNAL_PREFIX}{tok}.json").write_text(json.dumps({"stage": stage.name,
                                                                             "names": ["a.mrc", "b.json"]}))
    if outputs.process_alive(999999):
        pytest.skip("pid 999999 exists here")
    outputs.recover(folder / "a.mrc")
    assert sorted(p.name for p in folder.iterdir()) == ["a.mrc", "b.json", "other.txt"]


def test_files_stage_discarded_on_failure(tmp_path):
    with pytest.raises(OSError):
        with outputs.files(tmp_path) as stage:
            (stage / "x.mrc").write_text("partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(stage / "x.mrc"))
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------- disk errors


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, ro: bool = False):
    path.mkdir()
    opts = f"size={size}" + (",ro" if ro else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root in a privileged container)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _toy_simulate(out: Path) -> list[str]:
    return ["simulate", str(out), "--preset", "toy", "--shape", "24", "32", "32", "--tilt-step", "6", "--device", "cpu"]


def test_full_disk_is_one_line_exit_2_and_nothing_partial(tmp_path, capsys):
    """A real 256 KiB file system: the simulation's ~1 MB cannot fit."""
    with _tmpfs(tmp_path / "small", "256k") as fs:
        rc = main(_toy_simulate(fs / "sim"))
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "no space left" in err[0], err
        assert list(fs.iterdir()) == []  # no output, no staging folder, no lock


def test_injected_write_error_is_one_line_exit_2_and_nothing_partial(tmp_path, capsys, monkeypatch):
    """The same without a mount: the MRC writer fails with ENOSPC half-way through the file set."""
    from cryorestore import io

    real = io.write_mrc
    calls = []

    def failing(path, data, voxel_size):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, voxel_size)

    monkeypatch.setattr(io, "write_mrc", failing)
    rc = main(_toy_simulate(tmp_path / "sim"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no space left" in err[0]
    assert list(tmp_path.iterdir()) == [] and len(calls) == 3


def test_stop_in_the_middle_of_writing_keeps_nothing_and_says_so(tmp_path, capsys, monkeypatch):
    """SIGTERM arriving while simulate writes its files (raised where the handler would raise it)."""
    from cryorestore import io

    real = io.write_mrc
    calls = []

    def stopped(path, data, voxel_size):
        calls.append(path)
        if len(calls) == 4:
            raise outputs.Stopped(signal.SIGTERM)
        return real(path, data, voxel_size)

    monkeypatch.setattr(io, "write_mrc", stopped)
    rc = main(_toy_simulate(tmp_path / "sim"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 143 and err == ["cryorestore simulate: stopped by SIGTERM; nothing was written "
                                 "(outputs appear only when complete)"]
    assert list(tmp_path.iterdir()) == []


def test_read_only_output_folder_is_one_line_exit_2(tmp_path, capsys):
    with _tmpfs(tmp_path / "ro", "1m", ro=True) as fs:
        rc = main(_toy_simulate(fs / "sim"))
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "read-only" in err[0], err
        assert list(fs.iterdir()) == []


# ------------------------------------------------------------------------------ stops and checkpoints


def _train_args(sim: Path, out: Path, epochs: int = 3) -> list[str]:
    return ["train", "--even", str(sim / "even.mrc"), "--odd", str(sim / "odd.mrc"), "--out", str(out),
            "--method", "n2n", "--subtomo-size", "16", "--n-subtomos", "24", "--epochs", str(epochs),
            "--batch-size", "4", "--lr", "2e-3", "--device", "cpu", "--seed", "5", "--no-progress",
            *sum((["--model-option", f"{k}={v}"] for k, v in TINY.items()), [])]


def test_sigterm_stops_training_cleanly_saying_what_was_kept_and_resume_matches(sim, tmp_path, capsys):
    """SIGTERM after the first checkpoint: exit 143, one line naming the checkpoint; --resume then ends
    on the same weights, bit for bit, as an uninterrupted run."""
    from cryorestore.train import CHECKPOINT, read_checkpoint

    assert main(_train_args(sim, tmp_path / "straight")) == 0
    out = tmp_path / "stopped"

    def stop_after_first_checkpoint():
        for _ in range(6000):
            if (out / CHECKPOINT).is_file():
                break
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    capsys.readouterr()
    t = threading.Thread(target=stop_after_first_checkpoint, daemon=True)
    t.start()
    rc = main(_train_args(sim, out))
    t.join()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 143 and err[-1].startswith("cryorestore train: stopped by SIGTERM; kept ")
    assert "checkpoint.pt (after epoch" in err[-1] and "--resume" in err[-1]
    assert not outputs.lock_path(out).exists()  # the lock is released
    assert main(_train_args(sim, out) + ["--resume"]) == 0
    a, b = read_checkpoint(tmp_path / "straight" / CHECKPOINT), read_checkpoint(out / CHECKPOINT)
    assert a["epoch"] == b["epoch"] == 2
    wa = torch.load(tmp_path / "straight" / "weights.pt", weights_only=True)
    wb = torch.load(out / "weights.pt", weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_corrupt_checkpoint_is_named_and_the_previous_one_used(sim, tmp_path, capsys):
    from cryorestore.train import CHECKPOINT, CHECKPOINT_PREV, TrainConfig, read_checkpoint, train

    def cfg(out):
        return TrainConfig(even=[str(sim / "even.mrc")], odd=[str(sim / "odd.mrc")], out=str(out), method="n2n",
                           model="unet", model_options=dict(TINY), subtomo_size=16, n_subtomos=24, epochs=3,
                           batch_size=4, lr=2e-3, device="cpu", seed=5)

    straight = train(cfg(tmp_path / "a"), progress=False)

    def stop(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "b"), progress=False, on_epoch_end=stop)
    ck = tmp_path / "b" / CHECKPOINT
    assert read_checkpoint(ck)["epoch"] == 1 and read_checkpoint(ck.with_name(CHECKPOINT_PREV))["epoch"] == 0
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    ck.write_bytes(bytes(data))
    capsys.readouterr()
    resumed = train(cfg(tmp_path / "b"), progress=False, resume=True)
    err = capsys.readouterr().err
    assert f"{ck} fails its SHA-256 checksum" in err and "resuming from checkpoint.prev.pt (after epoch 1)" in err
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]
    wa = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # both damaged: one line, exit 2 through the command line
    ck.write_bytes(b"CRYORESTORE-CHECKPOINT sha256=00 epoch=1\ntruncated")
    ck.with_name(CHECKPOINT_PREV).write_bytes(b"")
    with pytest.raises(InputError, match="no usable checkpoint"):
        train(cfg(tmp_path / "b"), progress=False, resume=True)


def test_model_directory_is_never_a_mixture_of_two_saves(tmp_path, monkeypatch):
    """A failure while saving (after some files were written) leaves the previous complete model."""
    from cryorestore.data import Normalization
    from cryorestore.modeldir import load_model_dir, save_model_dir
    from cryorestore.models import build_model

    cfg = {"model": "unet", "model_options": dict(TINY)}
    torch.manual_seed(0)
    m1 = build_model("unet", **TINY)
    save_model_dir(tmp_path / "m", m1, cfg | {"best_epoch": 0}, Normalization(0.0, 1.0))
    m2 = build_model("unet", **TINY)
    real = Path.write_text

    def fail_on_version(self, text, *a, **k):
        if self.name == "version.txt":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", fail_on_version)
    with pytest.raises(OSError):
        save_model_dir(tmp_path / "m", m2, cfg | {"best_epoch": 1}, Normalization(5.0, 2.0))
    monkeypatch.undo()
    loaded = load_model_dir(tmp_path / "m")
    assert loaded.config["best_epoch"] == 0 and loaded.normalization.mean == 0.0
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), m1.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# ----------------------------------------------------------------------------- one seeded kill trial


def test_seeded_sigkill_of_reconstruct_leaves_all_or_nothing(tmp_path):
    """The harness on one command: a seeded SIGKILL and a SIGINT (about 40 s on a loaded core)."""
    from cryorestore.simulate import simulate_dataset

    simulate_dataset(tmp_path / "inputs", shape=(32, 48, 48), seed=1, preset="toy")
    cmds = harness.setup(tmp_path, names=("reconstruct",))
    c = cmds["reconstruct"]
    rng = np.random.default_rng(19)
    trials = [harness.trial(c, rng), harness.trial(c, rng, sig=signal.SIGINT)]
    assert all(t.state in ("complete", "absent") for t in trials), [t.why for t in trials]
    sigint = trials[-1]
    if sigint.rc == 130:  # stopped while running (not after finishing): the line says what was kept
        assert sigint.stderr_tail.startswith("cryorestore reconstruct: stopped by SIGINT; nothing was written")
    # the next run cleans what the kills left and completes
    assert main(c.argv) == 0 and harness.classify(c)[0] == "complete"
    assert harness.hidden_debris(c.out.parent) == [] and harness.hidden_debris(c.out) == []
