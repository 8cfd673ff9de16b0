"""Training presets: one table of option values, sized by optimiser steps, that ``--preset`` selects.

* ``quick``: a small U-Net (8 base channels, one convolution per block) on 32³ crops, 8 boxes per
  step: 1,000 steps for n2n, 600 for the missing-wedge methods, whose steps cost more (each crop is
  cut from a randomly rotated box) and which refill every 10 epochs (each refill predicts every stored
  box, about 40 s for the 115 boxes of a 64×256×256 tomogram on 2 CPU cores). Sized so that
  ``make demo`` (simulate, train, restore and evaluate a 64×256×256 tomogram) ends inside 10 minutes
  on 2 CPU cores (``benchmarks/RESULTS.md``, "make demo": n2n's 1,000 steps trained in 320 s and the
  whole demo took 6 min 35 s; IsoNet's 600 steps with 3 refills in 347 s, 6 min 43 s in all).
* ``standard`` (the default): the networks' own, paper-sized options; crops of 64³ for n2n and 48³
  (boxes of 86³ before rotation; with the held-out slab and its one-crop gap they need tomograms
  at least 220 voxels long in y or x) for the wedge methods; 20,000 steps (the order of cryoCARE's
  default schedule); bf16 autocast on GPUs that support it. Meant for a GPU: on a CPU it runs for
  many hours. The wedge methods refill every 10 epochs (about 60 refills over the budget, the order of
  IsoNet's refinement iterations; IsoNet's own default of every epoch would predict all 300 stored
  boxes some 600 times).

Both stop early when the validation loss has not improved for ``patience`` epochs. :data:`INFERENCE`
holds what ``denoise`` does with the trained network by default (test-time augmentation and the
combination of f(even) and f(odd), see :mod:`cryorestore.ensemble`): both presets average the turns
about y the method's network was trained for (n2n: the four quarter turns; the missing-wedge methods:
the half turn, which keeps the wedge where their networks learned to fill it), take the mean of
f(even) and f(odd) and low-pass it at the half maps' FSC=0.143 frequency
(:func:`cryorestore.ensemble.half_fsc_lowpass`, threshold chosen on seeds 0-1 against the noise-free
reconstruction; the calibrated combination fits the signal as the half maps record it, CTF and
reconstruction filter included, and lost equalised PSNR on seed 0: ``benchmarks/RESULTS.md``, "Choosing
the final low-pass"); ``--tta`` and ``--combine`` override it. Every value is
a :class:`cryorestore.train.TrainConfig` field; a value may depend on the method (a dict keyed by
method name) and ``model_options`` on the network (keyed by model name). Options given explicitly
on the command line override the preset's.
"""

from __future__ import annotations

from typing import Any

from cryorestore.errors import InputError

PRESET_NAMES = ("quick", "standard")
DEFAULT_PRESET = "standard"

_WEDGE = ("deepdewedge", "isonet")

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "model_options": {"unet": {"base_channels": 8, "convs_per_block": 1}},
        "subtomo_size": 32,
        "n_subtomos": {"n2n": 256, "deepdewedge": 128, "isonet": 128},
        "batch_size": 8,
        "lr": 3e-3,
        "max_steps": {"n2n": 1000, "deepdewedge": 600, "isonet": 600},
        "epochs": 500,
        "patience": 10,
        "refill_every": {m: 10 for m in _WEDGE},
        "amp": True,
    },
    "standard": {
        "model_options": {},
        "subtomo_size": {"n2n": 64, "deepdewedge": 48, "isonet": 48},
        "n_subtomos": {"n2n": 1000, "deepdewedge": 300, "isonet": 300},
        "batch_size": {"n2n": 16, "deepdewedge": 8, "isonet": 8},
        "lr": 4e-4,
        "max_steps": 20000,
        "epochs": 2000,
        "patience": 20,
        "refill_every": {m: 10 for m in _WEDGE},
        "amp": True,
    },
}


INFERENCE: dict[str, dict[str, str]] = {
    "quick": {"tta": "rot", "combine": "mean+lowpass"},
    "standard": {"tta": "rot", "combine": "mean+lowpass"},
}


def inference_values(name: str) -> dict[str, str]:
    """The prediction options (``tta``, ``combine``) preset ``name`` gives ``denoise``."""
    if name not in INFERENCE:
        raise InputError(f"unknown preset '{name}'; choose one of {', '.join(PRESET_NAMES)}")
    return dict(INFERENCE[name])


def preset_values(name: str, method: str, model: str) -> dict[str, Any]:
    """The TrainConfig values preset ``name`` gives ``method`` with network ``model``.

    Per-method entries missing from a dict (e.g. ``refill_every`` for n2n) are left out, so the
    TrainConfig default applies.
    """
    if name not in PRESETS:
        raise InputError(f"unknown preset '{name}'; choose one of {', '.join(PRESET_NAMES)}")
    out: dict[str, Any] = {}
    for key, value in PRESETS[name].items():
        if key == "model_options":
            out[key] = dict(value.get(model, {}))
        elif isinstance(value, dict):
            if method in value:
                out[key] = value[method]
        else:
            out[key] = value
    return out
