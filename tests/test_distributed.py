"""Data-parallel training on CPU with gloo: sharding arithmetic, two ranks follow one rank's trajectory
(same losses, weights and refilled boxes), resume after a two-rank run, `train --devices 2` and torchrun
write one loadable model directory from rank 0."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from cryorestore import distributed
from cryorestore.cli import main
from cryorestore.distributed import Context, grad_weight, launch, share, shard_batch, usable
from cryorestore.modeldir import load_model_dir
from cryorestore.train import CHECKPOINT, read_checkpoint, train
from test_train import dataset  # noqa: F401  (the simulated 32×64×64 dataset fixture)
from test_train import _cfg as _train_cfg


def _cfg(d, out, **kw):
    return _train_cfg(d, out, **({"n_subtomos": 12, "epochs": 2, "batch_size": 4, "subtomo_size": 16} | kw))


def _cli_args(d, out):
    return ["train", "--even", str(d / "even.mrc"), "--odd", str(d / "odd.mrc"), "--out", str(out), "--device", "cpu",
            "--epochs", "2", "--subtomo-size", "16", "--n-subtomos", "12", "--batch-size", "4", "--no-progress",
            "--model-option", "base_channels=4", "--model-option", "depth=2", "--method", "n2n"]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shares_partition_a_batch_and_weights_give_the_global_mean(world, rng):
    for n in range(0, 11):
        parts = [share(n, Context(r, world)) for r in range(world)]
        assert parts[0].start == 0 and parts[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
        sizes = [p.stop - p.start for p in parts]
        assert max(sizes) - min(sizes) <= 1
        assert usable(n, Context(0, world)) == (min(sizes) >= 1)
        if not usable(n, Context(0, world)):
            continue
        per_sample = rng.standard_normal(n)
        # DDP averages the ranks' gradients: mean over ranks of weight × local mean = the global mean
        ddp = np.mean([grad_weight(s, n, Context(r, world)) * per_sample[p].mean()
                       for r, (p, s) in enumerate(zip(parts, sizes))])
        np.testing.assert_allclose(ddp, per_sample.mean(), rtol=1e-12)


def test_shard_batch_slices_per_sample_tensors_only():
    inp, tgt, wedge = torch.arange(5.0).view(5, 1), torch.arange(5.0, 10.0), torch.ones(1, 3)
    got = shard_batch((inp, tgt, {"wedge": wedge, "rot": inp * 2, "k": 3}), 5, slice(3, 5))
    assert got[0].tolist() == [[3.0], [4.0]] and got[1].tolist() == [8.0, 9.0]
    assert got[2]["wedge"] is wedge and got[2]["rot"].tolist() == [[6.0], [8.0]] and got[2]["k"] == 3


def test_single_process_context_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx, dev = distributed.setup(torch.device("cpu"))
    assert ctx == distributed.SINGLE and ctx.is_main and not ctx.active and dev == torch.device("cpu")
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, ctx, dev) is model
    assert distributed.all_sum([1.5, 2], ctx, dev) == [1.5, 2.0]
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(Exception, match="WORLD_SIZE"):
        distributed.env_world_size()


def _history(run_dir):
    return read_checkpoint(run_dir / CHECKPOINT)


def _stop_after_second_epoch(epoch, record):
    if epoch == 1:
        raise RuntimeError("interrupted on purpose")


@pytest.mark.slow
def test_two_gloo_ranks_follow_one_rank_through_refills_and_resume(dataset, tmp_path):
    """deepdewedge: losses, weights and refilled boxes of 2 ranks (interrupted, resumed) match 1 rank."""
    # crops of 8 (boxes of 16): box, gap and validation box fit the 64-voxel y axis of the disjoint split
    kw = dict(method="deepdewedge", refill_every=1, n_subtomos=12, batch_size=4, epochs=3, subtomo_size=8)
    one = train(_cfg(dataset, tmp_path / "one", **kw), progress=False)
    cpu = torch.device("cpu")
    cfg = _cfg(dataset, tmp_path / "two", **kw)
    assert launch(2, cpu, train, cfg, False, False, _stop_after_second_epoch) != 0  # both ranks stop
    first = _history(tmp_path / "two")
    assert first["world_size"] == 2 and len(first["history"]) == 2
    assert launch(2, cpu, train, cfg, False, True) == 0  # --resume on two ranks
    ck = _history(tmp_path / "two")
    assert [h["epoch"] for h in ck["history"]] == [0, 1, 2]
    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose([h[key] for h in ck["history"]], [h[key] for h in one.history], rtol=1e-4)
    w1 = torch.load(tmp_path / "one" / "weights.pt", weights_only=True)
    w2 = torch.load(tmp_path / "two" / "weights.pt", weights_only=True)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-4)
    f1 = torch.load(tmp_path / "one" / _history(tmp_path / "one")["refilled"], weights_only=True)
    f2 = torch.load(tmp_path / "two" / ck["refilled"], weights_only=True)
    torch.testing.assert_close(f2["train"], f1["train"], rtol=1e-3, atol=1e-4)  # sharded refill, then shared
    assert sorted(p.name for p in (tmp_path / "two").glob("refilled-*")) == [ck["refilled"]]
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    load_model_dir(tmp_path / "two")


def test_cli_devices_two_writes_one_model_and_matches_one_rank(dataset, tmp_path, capfd):
    out = tmp_path / "m"
    assert main(_cli_args(dataset, out) + ["--devices", "2"]) == 0
    text = capfd.readouterr().out
    assert "2 ranks (DistributedDataParallel, global batch 4)" in text
    assert text.count("trained 2 epochs") == 1 and text.count("epoch 2/2") == 1  # rank 0 alone prints
    loaded = load_model_dir(out)
    assert loaded.config["world_size"] == 2
    # the same global batches on one rank: same losses and weights up to floating-point reduction order
    one = train(_cfg(dataset, tmp_path / "one", seed=0, lr=4e-4, model_options={"base_channels": 4, "depth": 2}),
                progress=False)
    two = _history(out)["history"]
    # the validation loss of a later epoch is computed with the trained weights, which may differ by the
    # reduction order (checked to 1e-4 below), so it gets the weights' tolerance
    for key, rtol in (("train_loss", 1e-5), ("val_loss", 1e-4)):
        np.testing.assert_allclose([h[key] for h in two], [h[key] for h in one.history], rtol=rtol)
    w1 = torch.load(tmp_path / "one" / "weights.pt", weights_only=True)
    # AdamW's first steps move each weight by about ±lr whatever the gradient's size, so a weight whose gradient
    # is a near-exact cancellation takes a sign from reduction-order noise: the CLI runs can only agree to
    # within one step (lr = 4e-4); the losses above carry the equality of the global batches
    flat = lambda sd: torch.cat([t.flatten().float() for _, t in sorted(sd.items())])  # noqa: E731
    assert float((flat(loaded.model.state_dict()) - flat(w1)).abs().max()) < 4e-4
    assert not [p.name for p in out.iterdir() if ".part" in p.name or ".shared" in p.name]  # no temporary files left
    # a rank's input error: exit 2 and one line, no model directory
    bad = _cli_args(dataset, tmp_path / "bad") + ["--devices", "2"]
    bad[2] = str(tmp_path / "missing.mrc")
    assert main(bad) == 2
    err = capfd.readouterr().err
    assert "missing.mrc" in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "weights.pt").exists()


def test_devices_option_rejects_bad_requests_before_spawning(dataset, tmp_path, capsys):
    args = _cli_args(dataset, tmp_path / "m") + ["--devices", "2", "--odd", str(dataset / "odd.mrc")]
    assert main(args) == 2  # unpaired --odd: one line from the launcher, no rank started
    assert "pairs" in capsys.readouterr().err
    args = _cli_args(dataset, tmp_path / "m") + ["--devices", "2", "--device", "cuda"]
    if not torch.cuda.is_available():
        assert main(args) == 2
        assert "cuda" in capsys.readouterr().err.lower()
    with pytest.raises(Exception, match="--devices"):
        distributed.check_devices(0, torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_torchrun_form_documented_in_the_readme_works(dataset, tmp_path):
    """`torchrun ... -m cryorestore -- train --even ...`: the `--` keeps torchrun from parsing --even."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "cryorestore", "--"] + _cli_args(dataset,
                                                                                                       tmp_path / "m")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2 ranks" in res.stdout and res.stdout.count("trained 2 epochs") == 1
    assert load_model_dir(tmp_path / "m").config["world_size"] == 2


def _share_probe(directory):
    """One rank: share_from_main on one node (files, mapped) and across nodes (every rank computes)."""
    from cryorestore.data import Normalization, SubtomoSet

    ctx, _ = distributed.setup(torch.device("cpu"))
    results = {}
    for mode, local_world in (("node", "2"), ("nodes", "1")):
        os.environ["LOCAL_WORLD_SIZE"] = local_world

        def make():
            (directory / f"made-{mode}-{ctx.rank}").touch()
            boxes = np.arange(24, dtype=np.float32).reshape(2, 1, 2, 3, 2)
            return SubtomoSet(boxes, boxes[:1] * 2, np.zeros((3, 4), np.int64), Normalization(1.0, 2.0), []), 7.5

        subs, extra = distributed.share_from_main(make, directory, ctx)
        results[mode] = (subs.train.sum(), subs.val.sum(), subs.normalization.std, extra,
                         isinstance(subs.train, np.memmap))
    distributed.teardown(ctx)
    torch.save(results, directory / f"result-{ctx.rank}.pt")


def test_share_from_main_maps_rank_zero_boxes_on_one_node(tmp_path):
    assert launch(2, torch.device("cpu"), _share_probe, tmp_path) == 0
    made = sorted(p.name for p in tmp_path.glob("made-*"))
    assert made == ["made-node-0", "made-nodes-0", "made-nodes-1"]  # one node: rank 0 alone computes
    r0, r1 = (torch.load(tmp_path / f"result-{r}.pt", weights_only=False) for r in (0, 1))
    assert r0 == r1
    assert r0["node"] == (276.0, 132.0, 2.0, 7.5, True) and r0["nodes"] == (276.0, 132.0, 2.0, 7.5, False)
    assert not list(tmp_path.glob(".shared-*"))  # unlinked once every rank had mapped them
