"""A trained model as one directory that ``predict`` can use with nothing else.

Layout of ``MODEL_DIR/``:

* ``weights.pt``         the network's ``state_dict`` (best validation epoch)
* ``config.json``        the full training configuration (:class:`cryorestore.train.TrainConfig` as a
                         dict), including ``model`` (architecture name) and ``model_options`` (every option of
                         the network, defaults included, so a later release rebuilds the same one) and
                         ``holdout`` (per training tomogram, the slab no training box touched, in the input's
                         voxels: what ``cryorestore score`` scores on; see :meth:`cryorestore.data.SlabSplit.holdout`)
* ``normalization.json`` ``{"mean": …, "std": …}``: the network sees ``(v − mean)/std``
* ``version.txt``        the cryorestore version that wrote it

``cryorestore train`` (and ``denoise``) also leave there ``checkpoint.pt`` (for ``--resume``) and
``loss.png`` (training and held-out loss over optimiser steps, :func:`cryorestore.plots.loss_curves`);
neither is needed to predict.

The four model files change together: :func:`save_model_dir` writes them into a staging folder
that replaces the directory in one step (:func:`cryorestore.outputs.folder`; the other entries, such
as ``checkpoint.pt``, are carried over), so a run killed while saving leaves the previous complete
model or the new one, never a mixture.
"""

from __future__ import annotations

import io as _io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cryorestore import __version__
from cryorestore import io, outputs
from cryorestore.data import Normalization
from cryorestore.errors import InputError

FILES = ("weights.pt", "config.json", "normalization.json", "version.txt")


@dataclass
class LoadedModel:
    """A network in eval mode with everything needed to apply it."""

    model: torch.nn.Module
    config: dict[str, Any]
    normalization: Normalization
    version: str


def build_network(config: dict[str, Any]) -> torch.nn.Module:
    """Build the architecture named in ``config['model']`` with ``config['model_options']``."""
    from cryorestore.models import build_model

    return build_model(config["model"], **dict(config.get("model_options") or {}))


def save_model_dir(path: str | Path, model: torch.nn.Module, config: dict[str, Any],
                   normalization: Normalization) -> Path:
    """Write weights, config, normalisation and version into ``path`` (created if needed)."""
    d = Path(path)
    buf = _io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    with outputs.folder(d) as stage:
        (stage / "weights.pt").write_bytes(buf.getvalue())
        (stage / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (stage / "normalization.json").write_text(json.dumps(normalization.to_dict(), indent=2) + "\n")
        (stage / "version.txt").write_text(__version__ + "\n")
    return d


def load_model_dir(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a model directory written by :func:`save_model_dir`; the network is in eval mode."""
    d = Path(path)
    if not d.is_dir():
        raise InputError(f"model directory {d} does not exist: train one first with 'cryorestore train --out {d}'")
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise InputError(f"{d} is not a complete model directory (missing {', '.join(missing)})")
    try:
        config = json.loads((d / "config.json").read_text())
        norm = Normalization.from_dict(json.loads((d / "normalization.json").read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{d}: config.json or normalization.json is malformed ({exc})") from None
    try:
        model = build_network(config)
        state = torch.load(d / "weights.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, KeyError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{d}/weights.pt does not fit the configured network ({first})") from None
    model.to(device).eval()
    return LoadedModel(model, config, norm, (d / "version.txt").read_text().strip())
