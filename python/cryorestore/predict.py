"""Apply a trained model directory to whole tomograms by tiled inference.

The volume is normalised with the model's statistics, cut into overlapping cubic tiles (padded at
the borders), run through the network in batches (AMP on CUDA), blended with a smooth window by
:func:`cryorestore.tiling.tiled_apply` so no seams show, and mapped back to the input's grey scale.
Which volumes the network sees depends on the method (``prediction_inputs``): for ``n2n`` the result
is the mean of f(even) and f(odd) as in cryoCARE; for ``deepdewedge``/``isonet`` the same, or f(v)
when only one volume is given. Sizes are in voxels; volumes are (z, y, x) float32.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from cryorestore import io
from cryorestore.errors import InputError
from cryorestore.modeldir import LoadedModel, load_model_dir


def default_tile(loaded: LoadedModel) -> int:
    """Default tile edge (voxels): twice the training crop, at most 96 and at least 32, a multiple of 16."""
    crop = int(loaded.config.get("subtomo_size", 64))
    return int(min(96, max(32, 2 * crop)) // 16 * 16)


def predict_volume(loaded: LoadedModel, volume: np.ndarray, tile: int | None = None, overlap: int | None = None,
                   batch_size: int = 4, device: torch.device | str = "cpu", amp: bool = True,
                   progress: bool = True, tta: str = "none") -> np.ndarray:
    """Network output for one (z, y, x) volume, in the volume's grey scale (float32); ``tta``: a
    :data:`cryorestore.ensemble.TTA_MODES` test-time augmentation of every tile."""
    from cryorestore.ensemble import with_tta
    from cryorestore.tiling import tiled_apply

    tile = default_tile(loaded) if tile is None else int(tile)
    overlap = tile // 4 if overlap is None else int(overlap)
    if tile < 8:
        raise InputError(f"--tile {tile} is too small; use at least 8 voxels")
    if not 0 <= overlap < tile:
        raise InputError(f"--overlap {overlap} must lie in [0, tile) = [0, {tile})")
    dev = torch.device(device)
    model = loaded.model.to(dev).eval()
    norm = loaded.normalization
    x = torch.from_numpy(norm.apply(np.asarray(volume, dtype=np.float32))).to(dev)
    use_amp = amp and dev.type == "cuda"

    def fn(batch: torch.Tensor) -> torch.Tensor:
        ctx = (torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
               if use_amp else contextlib.nullcontext())
        with torch.no_grad(), ctx:
            return model(batch).float()

    out = tiled_apply(x, with_tta(fn, tta), tile=tile, overlap=overlap, batch_size=batch_size, progress=progress)
    return norm.invert(out.detach().cpu().numpy())


def restore(loaded: LoadedModel, even: np.ndarray, odd: np.ndarray | None = None, combine: str = "mean",
            **kwargs) -> np.ndarray:
    """The restored map from the network's outputs over the method's prediction inputs, combined by
    :func:`cryorestore.ensemble.combine_outputs` (``mean``: cryoCARE's mean of f(even) and f(odd))."""
    from cryorestore import ensemble
    from cryorestore.methods import method_class

    ensemble.check_combine(combine)
    inputs = method_class(loaded.config["method"]).prediction_inputs(even, odd)
    outs = [predict_volume(loaded, v, **kwargs) for v in inputs]
    return ensemble.combine_outputs(outs, even, odd, combine, tuple(loaded.config["tilt_range"]))


def predict_files(model_dir: str | Path, even: str | Path, odd: str | Path | None, out: str | Path,
                  device: torch.device | str = "cpu", **kwargs) -> Path:
    """Read maps, restore them with the model directory, write ``out`` with the input's voxel size."""
    loaded = load_model_dir(model_dir, device)
    ve = io.read_mrc(even)
    vo = None
    if odd is not None:
        vo = io.read_mrc(odd)
        io.check_same_grid(ve, vo, str(even), str(odd))
    result = restore(loaded, ve.data, None if vo is None else vo.data, device=device, **kwargs)
    return io.write_mrc(out, result, ve.voxel_size)
