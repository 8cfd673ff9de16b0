"""Data-parallel faults on 2 gloo ranks (CPU): a set-up error on rank 0 ends every rank with one line,
BatchNorm is refused where it cannot be synchronised, and a killed rank stops the run, which --resume
finishes on the uninterrupted run's weights."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from cryorestore import distributed
from cryorestore.modeldir import load_model_dir
from cryorestore.train import CHECKPOINT, TrainConfig, read_checkpoint, train

TINY = {"base_channels": 4, "depth": 2, "convs_per_block": 1}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from cryorestore.simulate import simulate_dataset

    d = tmp_path_factory.mktemp("sim")
    simulate_dataset(d, shape=(32, 48, 48), seed=3, preset="toy")
    return d


def _cfg(sim: Path, out: Path, **kw) -> TrainConfig:
    base = dict(even=[str(sim / "even.mrc")], odd=[str(sim / "odd.mrc")], out=str(out), method="n2n", model="unet",
                model_options=dict(TINY), subtomo_size=16, n_subtomos=24, epochs=2, batch_size=4, lr=2e-3,
                device="cpu", seed=5)
    return TrainConfig(**(base | kw))


def test_rank0_setup_error_ends_every_rank_with_one_line(sim, tmp_path, capfd):
    t0 = time.perf_counter()
    rc = distributed.launch(2, CPU, train, _cfg(sim, tmp_path / "m", even=[str(tmp_path / "gone.mrc")]), False)
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and "gone.mrc" in err[0], err
    assert time.perf_counter() - t0 < 300  # no rank waits for the gloo timeout


def test_batchnorm_is_refused_on_cpu_ranks_with_one_line(sim, tmp_path, capfd):
    rc = distributed.launch(2, CPU, train, _cfg(sim, tmp_path / "m", model_options=TINY | {"norm": "batch"}), False)
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and "SyncBatchNorm needs GPUs" in err[0], err


def _train_writing_pid(cfg: TrainConfig, pid_dir: Path, resume: bool) -> None:
    (pid_dir / f"rank{os.environ['RANK']}.pid").write_text(str(os.getpid()))
    train(cfg, False, resume)


@pytest.mark.faults
def test_killing_one_rank_stops_the_run_and_resume_finishes_it(sim, tmp_path, capfd):
    straight = tmp_path / "straight"
    assert distributed.launch(2, CPU, train, _cfg(sim, straight, epochs=4), False) == 0
    out = tmp_path / "killed"
    pids = tmp_path / "pids"
    pids.mkdir()

    def kill_rank1_after_first_checkpoint():
        for _ in range(30000):
            if (out / CHECKPOINT).is_file() and (pids / "rank1.pid").is_file():
                break
            time.sleep(0.01)
        os.kill(int((pids / "rank1.pid").read_text()), signal.SIGKILL)

    t = threading.Thread(target=kill_rank1_after_first_checkpoint, daemon=True)
    t.start()
    rc = distributed.launch(2, CPU, _train_writing_pid, _cfg(sim, out, epochs=4), pids, False,
                            kept=lambda: "kept the checkpoint")
    t.join()
    err = capfd.readouterr().err
    assert rc == 128 + signal.SIGKILL and "rank 1 ended by SIGKILL; every rank was stopped; kept the checkpoint" in err
    done = read_checkpoint(out / CHECKPOINT)["epoch"]
    assert done < 3  # stopped before the end
    assert distributed.launch(2, CPU, train, _cfg(sim, out, epochs=4), False, True) == 0
    a, b = read_checkpoint(straight / CHECKPOINT), read_checkpoint(out / CHECKPOINT)
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:  # gloo's two-rank all-reduce has a fixed order: equal bit for bit
        assert torch.equal(a["model"][k], b["model"][k]), k
    load_model_dir(out)
