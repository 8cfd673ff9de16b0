"""Apply a trained model directory to whole tomograms by streaming tiled inference.

Each volume is cut into overlapping cubic tiles (reflect-padded at borders shorter than a tile),
read one batch at a time (from a memory map when the input is a file), normalised with the model's
stored statistics as they are read, run through the network (AMP on CUDA) and added, weighted by
a smooth window, into one host accumulator; dividing by the separable summed window
(:class:`cryorestore.tiling.TileGrid`) blends them without seams, and the result is mapped back to
the input's grey scale. Which volumes the network sees depends on the method
(``prediction_inputs``): for ``n2n`` the result is the mean of f(even) and f(odd) as in cryoCARE;
for ``deepdewedge``/``isonet`` the same, or f(v) when only one volume is given. All inputs share
the one accumulator.

Memory: the device holds the network and one batch of tiles (halved on out-of-memory; when one
tile does not fit, :class:`~cryorestore.tiling.TileOutOfMemoryError`, which ``cryorestore predict``
reports with exit code :data:`EXIT_TILE_OOM`); the host holds the output (float32) besides the
memory-mapped input, whose pages are released as the tiles pass on maps larger than
:data:`cryorestore.blockwise.BLOCKWISE_VOXELS`. The default combination (``mean+lowpass``) low-passes
that output in place, in float32 chunks, with the half-map FSC estimated over stated crops
(:func:`cryorestore.ensemble.half_fsc_lowpass`), so it adds no whole-volume copy. Sizes are in
voxels; volumes are (z, y, x) float32.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from cryorestore import io
from cryorestore.errors import InputError
from cryorestore.modeldir import LoadedModel, load_model_dir
from cryorestore.precision import Precision, autocast_dtype

EXIT_TILE_OOM = 75
"""Exit status of ``cryorestore predict`` when a single tile does not fit in device memory (EX_TEMPFAIL):
the pipeline retries the task with a smaller ``--tile``."""


def default_tile(loaded: LoadedModel) -> int:
    """Default tile edge (voxels): twice the training crop, at most 96 and at least 32, a multiple of 16."""
    crop = int(loaded.config.get("subtomo_size", 64))
    return int(min(96, max(32, 2 * crop)) // 16 * 16)


def network_fn(model: torch.nn.Module, device: torch.device, amp: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model as a no-grad float32 tile function on ``device`` (bf16/fp16 autocast on CUDA when ``amp``)."""
    use_amp = amp and device.type == "cuda"

    def fn(batch: torch.Tensor) -> torch.Tensor:
        ctx = Precision(device, autocast_dtype(device, use_amp), None).autocast()  # bf16 only where native
        with torch.no_grad(), ctx:
            return model(batch).float()

    return fn


def predict_mean(loaded: LoadedModel, volumes: Sequence[np.ndarray], tile: int | None = None,
                 overlap: int | None = None, batch_size: int = 4, device: torch.device | str = "cpu",
                 amp: bool = True, progress: bool = True, tta: str = "none") -> np.ndarray:
    """Mean of the network's outputs over ``volumes`` (same (z, y, x) shape), in their grey scale (float32).

    ``volumes`` may be numpy arrays or memory maps of any real dtype; each tile is read, cast to
    float32 and normalised with the model's statistics when its batch is due. ``tta``: a
    :data:`cryorestore.ensemble.TTA_MODES` test-time augmentation of every tile.
    """
    from cryorestore.ensemble import with_tta
    from cryorestore.tiling import TileGrid, accumulate_tiles

    tile = default_tile(loaded) if tile is None else int(tile)
    overlap = tile // 4 if overlap is None else int(overlap)
    if tile < 8:
        raise InputError(f"--tile {tile} is too small; use at least 8 voxels")
    if not 0 <= overlap < tile:
        raise InputError(f"--overlap {overlap} must lie in [0, tile) = [0, {tile})")
    if not volumes:
        raise InputError("no volume to predict")
    shape = tuple(volumes[0].shape)
    if len(shape) != 3 or any(tuple(v.shape) != shape for v in volumes):
        raise InputError(f"the volumes to restore must be 3D and of one shape, got {[tuple(v.shape) for v in volumes]}")
    dev = torch.device(device)
    model = loaded.model.to(dev).eval()
    norm = loaded.normalization
    grid = TileGrid(shape, tile, overlap)
    out = np.zeros(shape, dtype=np.float32)
    acc = torch.from_numpy(out)  # shares memory: the accumulator is the result
    from cryorestore.methods import method_class

    turns = method_class(loaded.config["method"]).tta_quarter_turns
    fn = with_tta(network_fn(model, dev, amp), tta, turns)
    from cryorestore import blockwise

    for i, v in enumerate(volumes):
        if blockwise.is_large(shape):  # a memory-mapped input's pages leave the process as the tiles pass
            v = blockwise.page_releasing(v)
        desc = "tiles" if len(volumes) == 1 else f"tiles {i + 1}/{len(volumes)}"
        batch_size = accumulate_tiles(grid, v, fn, acc, batch_size=batch_size, device=dev, prepare=norm.apply,
                                      progress=progress, desc=desc)
    grid.normalize_(acc, scale=len(volumes))
    np.multiply(out, np.float32(norm.std), out=out)  # norm.invert, in place
    np.add(out, np.float32(norm.mean), out=out)
    return out


def predict_volume(loaded: LoadedModel, volume: np.ndarray, tile: int | None = None, overlap: int | None = None,
                   batch_size: int = 4, device: torch.device | str = "cpu", amp: bool = True,
                   progress: bool = True, tta: str = "none") -> np.ndarray:
    """Network output for one (z, y, x) volume, in the volume's grey scale (float32); see :func:`predict_mean`."""
    return predict_mean(loaded, [volume], tile=tile, overlap=overlap, batch_size=batch_size, device=device, amp=amp,
                        progress=progress, tta=tta)


def restore(loaded: LoadedModel, even: np.ndarray, odd: np.ndarray | None = None, combine: str = "mean",
            **kwargs) -> np.ndarray:
    """The restored map from the network's outputs over the method's prediction inputs, combined by
    :func:`cryorestore.ensemble.combine_outputs` (``mean``: cryoCARE's mean of f(even) and f(odd))."""
    from cryorestore import ensemble
    from cryorestore.methods import method_class

    ensemble.check_combine(combine)
    inputs = list(method_class(loaded.config["method"]).prediction_inputs(even, odd))
    if combine == "calibrated" and odd is not None and len(inputs) == 2:  # needs f(even) and f(odd) apart
        outs = [predict_volume(loaded, v, **kwargs) for v in inputs]
        return ensemble.combine_outputs(outs, even, odd, combine, tuple(loaded.config["tilt_range"]))
    mean = predict_mean(loaded, inputs, **kwargs)  # one streaming accumulator for every input
    if combine == "mean+lowpass" and odd is not None and len(inputs) == 2:
        return ensemble.half_fsc_lowpass(mean, even, odd, inplace=True)  # large maps: crop FSC, float32 chunks
    return mean


def predict_files(model_dir: str | Path, even: str | Path, odd: str | Path | None, out: str | Path,
                  device: torch.device | str = "cpu", tta: str | None = None, combine: str | None = None,
                  **kwargs) -> Path:
    """Restore memory-mapped maps with the model directory; write ``out`` with the input's voxel size.

    ``tta``/``combine`` left None take the values of the preset the model was trained with
    (:func:`cryorestore.presets.inference_values`; no test-time augmentation and the plain mean for a
    model trained without one), so ``predict`` gives the map ``denoise`` gives.
    """
    from cryorestore.presets import inference_values

    loaded = load_model_dir(model_dir, device)
    preset = loaded.config.get("preset")
    chosen = inference_values(preset) if preset else {"tta": "none", "combine": "mean"}
    chosen |= {k: v for k, v in (("tta", tta), ("combine", combine)) if v is not None}
    from cryorestore import blockwise

    def opened(path):  # large maps: the NaN/Inf check by slabs, releasing the pages it read
        if not blockwise.is_large(io.read_mrc_header(path)[0]):
            return stack.enter_context(io.open_mrc_mmap(path))
        v = stack.enter_context(io.open_mrc_mmap(path, check_finite=False))
        blockwise.check_finite_slabs(v.data, path)
        return v

    with contextlib.ExitStack() as stack:
        ve = opened(even)
        vo = None
        if odd is not None:
            vo = opened(odd)
            io.check_same_grid(ve, vo, str(even), str(odd))
        voxel_size = ve.voxel_size
        result = restore(loaded, ve.data, None if vo is None else vo.data, device=device, **chosen, **kwargs)
        del ve, vo  # the last references to the maps: the input pages leave memory before the output is written
    return io.write_mrc(out, result, voxel_size)
