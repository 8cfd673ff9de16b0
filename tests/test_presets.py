"""Presets: one table sized by optimiser steps, explicit options override it, the CLI resolves it."""

import argparse

import pytest

from cryorestore.cli.cmd_train import add_train_arguments, config_from_args
from cryorestore.errors import InputError
from cryorestore.methods.deepdewedge import extract_size_for_rotation
from cryorestore.presets import DEFAULT_PRESET, PRESET_NAMES, PRESETS, preset_values
from cryorestore.train import TrainConfig


def _args(*extra):
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return p.parse_args(["--even", "e.mrc", "--odd", "o.mrc", "--out", "m", *extra])


def test_every_preset_value_is_a_train_config_field():
    fields = set(TrainConfig.__dataclass_fields__)
    for name in PRESET_NAMES:
        assert set(PRESETS[name]) <= fields
        for method in ("n2n", "deepdewedge", "isonet"):
            vals = preset_values(name, method, "unet")
            assert {"max_steps", "patience", "subtomo_size", "n_subtomos", "batch_size", "lr"} <= set(vals)
    with pytest.raises(InputError, match="quick"):
        preset_values("huge", "n2n", "unet")


def test_standard_is_the_default_and_paper_sized():
    assert DEFAULT_PRESET == "standard"
    cfg = config_from_args(_args(), "m")
    assert cfg.method == "isonet" and cfg.loss == "l1"  # the default method, with its own loss
    assert cfg.preset == "standard" and cfg.model_options == {}  # the networks' own (paper-sized) defaults
    assert cfg.subtomo_size == 48 and cfg.max_steps == 20000 and cfg.patience and cfg.amp
    assert config_from_args(_args("--method", "n2n"), "m").subtomo_size == 64
    assert cfg.refill_every == 10  # not IsoNet's every epoch: ~600 refills of all boxes over the budget
    for method in ("deepdewedge", "isonet"):
        crop = preset_values("standard", method, "unet")["subtomo_size"]
        assert 64 <= extract_size_for_rotation(crop) <= 96  # the box cut before rotation


def test_quick_preset_and_explicit_options_override_it():
    cfg = config_from_args(_args("--preset", "quick", "--method", "n2n"), "m")
    assert cfg.model_options == {"base_channels": 8, "convs_per_block": 1}
    assert (cfg.subtomo_size, cfg.batch_size, cfg.max_steps) == (32, 8, 1000)
    # quick is sized by steps: 1,000 n2n steps at the ~0.3 s per step measured on an idle 2-core machine;
    # 600 steps of a wedge method at ~0.4 s plus a refill of ~40 s after every 10 epochs of 15 steps but the
    # last (IsoNet on 64x256x256: 345 s of training on the idle machine, benchmarks/RESULTS.md)
    assert cfg.max_steps * 0.3 < 6 * 60
    wedge = config_from_args(_args("--preset", "quick"), "m")
    assert (wedge.method, wedge.subtomo_size, wedge.max_steps, wedge.refill_every) == ("isonet", 32, 600, 10)
    assert wedge.max_steps * 0.4 + (wedge.max_steps // 15 // wedge.refill_every - 1) * 40 < 7 * 60
    cfg = config_from_args(_args("--preset", "quick", "--subtomo-size", "16", "--lr", "1e-3", "--max-steps", "50",
                                 "--epochs", "3", "--model-option", "base_channels=4", "--patience", "2"), "m")
    assert (cfg.subtomo_size, cfg.lr, cfg.max_steps, cfg.epochs, cfg.patience) == (16, 1e-3, 50, 3, 2)
    assert cfg.model_options == {"base_channels": 4, "convs_per_block": 1}
    other = config_from_args(_args("--preset", "quick", "--model", "msdnet"), "m")
    assert other.model_options == {}  # unet's small options are not forced on another network
    iso = config_from_args(_args("--preset", "quick", "--method", "isonet"), "m")
    assert iso.refill_every == 10 and iso.loss == "l1"
    assert config_from_args(_args("--preset", "quick", "--method", "isonet", "--refill-every", "2"), "m").refill_every == 2


def test_cli_refuses_fsc_alone():
    with pytest.raises(InputError, match="l2\\+fsc"):
        config_from_args(_args("--loss", "fsc"), "m")
    assert config_from_args(_args("--loss", "l2+fsc"), "m").loss == "l2+fsc"
