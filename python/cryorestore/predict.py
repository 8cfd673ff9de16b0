"""Apply a trained model directory to whole tomograms by streaming tiled inference.

Each volume is cut into overlapping cubic tiles (reflect-padded at borders shorter than a tile),
read one batch at a time (from a memory map when the input is an MRC file; an OME-Zarr level is read
into memory once, see :func:`predict_files`), normalised with the model's
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
memory-mapped MRC input, whose pages are released as the tiles pass on maps larger than
:data:`cryorestore.blockwise.BLOCKWISE_VOXELS` (an OME-Zarr input is read into memory once, as float32).
The default combination (``mean+lowpass``) low-passes that output in place, in float32 chunks, with the
half-map FSC estimated over stated crops (:func:`cryorestore.ensemble.half_fsc_lowpass`), so it adds no
whole-volume copy. Sizes are in voxels; volumes are (z, y, x) float32.
"""

from __future__ import annotations

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
            halves: bool = False, scratch_dir: str | Path | None = None, **kwargs):
    """The restored map from the network's outputs over the method's prediction inputs, combined by
    :func:`cryorestore.ensemble.combine_outputs` (``mean``: cryoCARE's mean of f(even) and f(odd)).

    ``halves`` (with ``odd``): return ``(restored, g(even), g(odd))``, the combination split into a map of
    each half (:func:`cryorestore.ensemble.combine_halves`; ``restored`` is their mean), which the
    truth-free score and the uncertainty map need; the network runs once per half as without it.

    With ``scratch_dir`` on maps above :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels and the
    ``mean`` or ``mean+lowpass`` combination, the halves are kept in bounded memory
    (:func:`_restore_halves_bounded`): ``g(even)`` and ``g(odd)`` come back as lazy views over the restored
    map (in memory) and the half spread (a temporary file in ``scratch_dir``), and a fourth item, the
    :class:`cryorestore.blockwise.ScratchMap` to ``close()`` once they are no longer read."""
    from cryorestore import ensemble
    from cryorestore.methods import method_class

    ensemble.check_combine(combine)
    inputs = list(method_class(loaded.config["method"]).prediction_inputs(even, odd))
    if halves:
        if odd is None or len(inputs) != 2:
            raise InputError("a map of each half needs both half maps")
        from cryorestore import blockwise

        if scratch_dir is not None and combine in ("mean", "mean+lowpass") and blockwise.is_large(np.shape(even)):
            return _restore_halves_bounded(loaded, inputs, even, odd, combine, scratch_dir, **kwargs)
        outs = [predict_volume(loaded, v, **kwargs) for v in inputs]
        ge, go, _ = ensemble.combine_halves(outs[0], outs[1], even, odd, combine, tuple(loaded.config["tilt_range"]))
        del outs
        mean = np.add(ge, go, dtype=np.float32)
        mean *= np.float32(0.5)
        return mean, ge, go
    if combine == "calibrated" and odd is not None and len(inputs) == 2:  # needs f(even) and f(odd) apart
        outs = [predict_volume(loaded, v, **kwargs) for v in inputs]
        return ensemble.combine_outputs(outs, even, odd, combine, tuple(loaded.config["tilt_range"]))
    lowpass = combine == "mean+lowpass" and odd is not None and len(inputs) == 2
    # the halves' FSC first (large maps: float64 crops and their spectra), before the output takes its memory
    sigma = ensemble.half_fsc_lowpass_sigma(even, odd) if lowpass else None
    mean = predict_mean(loaded, inputs, **kwargs)  # one streaming accumulator for every input
    if lowpass:
        return ensemble.half_fsc_lowpass(mean, even, odd, inplace=True, sigma=sigma)  # large maps: float32 chunks
    return mean


def _restore_halves_bounded(loaded: LoadedModel, inputs: Sequence, even, odd, combine: str,
                            scratch_dir: str | Path, **kwargs):
    """``restore(..., halves=True)`` on a large map holding one full-size map in memory.

    f(even) is predicted into memory, copied into a temporary file (:class:`cryorestore.blockwise.ScratchMap`
    in ``scratch_dir``) and freed; f(odd) is predicted into memory; then, z-slab by z-slab, the memory
    array becomes the mean ``P = (f(e) + f(o)) / 2`` and the file the half spread ``D = (f(e) − f(o)) / 2``
    (the file's pages released as it goes). ``mean+lowpass``: both are low-passed in place by the Gaussian
    of :func:`cryorestore.ensemble.half_fsc_lowpass_sigma` (half-map FSC over the stated crops), in
    float32 chunks (:func:`cryorestore.blockwise.gaussian_inplace`); the filter is linear, so ``P ± D``
    are :func:`cryorestore.ensemble.combine_halves`'s ``g(e)``, ``g(o)`` (to float32 rounding).
    Returns ``(P, g(e), g(o), scratch)`` with ``g(e) = P + D``, ``g(o) = P − D`` lazy
    (:class:`cryorestore.blockwise.SignedSumOf`)."""
    from cryorestore import blockwise, ensemble

    shape = tuple(int(s) for s in np.shape(even))
    # the halves' FSC (float64 crops and their spectra) while no full-size map is in memory yet: taken after
    # the predictions it set the peak of denoise at 256×1024×1024 (benchmarks/RESULTS.md)
    sigma = ensemble.half_fsc_lowpass_sigma(even, odd) if combine == "mean+lowpass" else 0.0
    scratch = blockwise.ScratchMap(shape, scratch_dir)
    try:
        fe = predict_volume(loaded, inputs[0], **kwargs)
        blockwise.copy_slabs(fe, scratch.array)
        del fe
        mean = predict_volume(loaded, inputs[1], **kwargs)  # f(odd), turned into the mean below
        spread = scratch.array
        for z0, z1 in blockwise.z_slabs(shape):
            fe_slab = np.array(spread[z0:z1], dtype=np.float32)
            fo_slab = mean[z0:z1]
            spread[z0:z1] = (fe_slab - fo_slab) * np.float32(0.5)
            fo_slab += fe_slab
            fo_slab *= np.float32(0.5)
            blockwise.release_pages(spread)
        if combine == "mean+lowpass":
            blockwise.gaussian_inplace(mean, sigma)
            blockwise.gaussian_inplace(spread, sigma)
    except BaseException:
        scratch.close()
        raise
    return mean, blockwise.SignedSumOf(mean, spread, 1.0), blockwise.SignedSumOf(mean, spread, -1.0), scratch


def uncertainty_path(out: str | Path) -> Path:
    """Where the uncertainty map of the restored map ``out`` goes: ``<stem>_uncertainty.mrc`` beside it
    (``.mrc`` and ``.zarr`` suffixes dropped from the stem)."""
    p = Path(out)
    for suffix in (".mrc", ".zarr"):
        if p.name.endswith(suffix):
            return p.with_name(p.name[:-len(suffix)] + "_uncertainty.mrc")
    return p.with_name(p.name + "_uncertainty.mrc")


def predict_files(model_dir: str | Path, even: str | Path, odd: str | Path | None, out: str | Path,
                  device: torch.device | str = "cpu", tta: str | None = None, combine: str | None = None,
                  zarr_level: int = 0, bin: int = 1, uncertainty: bool = False, **kwargs) -> Path:
    """Restore maps (MRC files, memory-mapped and read tile by tile, or OME-Zarr levels, read into memory
    once) with the model directory; write ``out`` (MRC, or an OME-Zarr pyramid when it ends in ``.zarr``)
    with the input's voxel size.

    ``zarr_level``: the OME-Zarr level to read; ``bin``: Fourier binning at load
    (:func:`cryorestore.volume_io.fourier_bin`; the output's voxel size is the input's times ``bin``).
    ``tta``/``combine`` left None take the values of the preset the model was trained with
    (:func:`cryorestore.presets.inference_values`; no test-time augmentation and the plain mean for a
    model trained without one), so ``predict`` gives the map ``denoise`` gives. ``uncertainty`` (needs
    ``odd``) also writes :func:`uncertainty_path` (:func:`cryorestore.ensemble.uncertainty_map` of the
    combination's map of each half), which holds two more maps in memory on small maps; on maps above
    :data:`cryorestore.blockwise.BLOCKWISE_VOXELS` voxels with ``mean`` or ``mean+lowpass`` one map more on
    disk only (the half spread, a temporary file beside ``out``, removed after), the uncertainty map
    written slab by slab (:func:`_restore_halves_bounded`).
    """
    from cryorestore.ensemble import UncertaintyOf, uncertainty_map

    if uncertainty and odd is None:
        raise InputError("--uncertainty needs --odd: the spread of the restorations of the two half maps")
    import sys

    from cryorestore import volume_io
    from cryorestore.presets import inference_values

    loaded = load_model_dir(model_dir, device)
    preset = loaded.config.get("preset")
    chosen = inference_values(preset) if preset else {"tta": "none", "combine": "mean"}
    chosen |= {k: v for k, v in (("tta", tta), ("combine", combine)) if v is not None}
    from cryorestore import blockwise

    # large MRC maps: memory-mapped, the NaN/Inf check made by slabs releasing the pages it read
    ve = blockwise.open_map(even, zarr_level, bin)
    vo = None
    if odd is not None:
        vo = blockwise.open_map(odd, zarr_level, bin)
        io.check_same_grid(ve, vo, str(even), str(odd))
    voxel_size = ve.voxel_size
    note = volume_io.voxel_note(loaded.config.get("voxel_size"), voxel_size, bin)
    if note:
        print(f"cryorestore predict: warning: {note}", file=sys.stderr, flush=True)
    # OME-Zarr levels are read into memory once (each chunk fetched and decoded once; overlapping tiles would
    # decode a chunk many times, and fetch it as often from a remote store); MRC files stay memory-mapped
    e_data = ve.data if isinstance(ve.data, np.ndarray) else volume_io.read_all(ve.data)
    o_data = None if vo is None else vo.data if isinstance(vo.data, np.ndarray) else volume_io.read_all(vo.data)
    unc = scratch = None
    if uncertainty:  # large maps: the half spread on disk beside the output, the map written slab by slab
        result, ge, go, *rest = restore(loaded, e_data, o_data, device=device, halves=True,
                                        scratch_dir=Path(out).parent, **chosen, **kwargs)
        scratch = rest[0] if rest else None
        unc = UncertaintyOf(ge, go) if scratch is not None else uncertainty_map(ge, go)
        del ge, go
    else:
        result = restore(loaded, e_data, o_data, device=device, **chosen, **kwargs)
    del ve, vo, e_data, o_data  # the last references to the maps: the input pages leave memory before the output is written
    try:
        if unc is not None:
            blockwise.write_map(uncertainty_path(out), unc, voxel_size)
    finally:
        if scratch is not None:
            scratch.close()
    return blockwise.write_map(out, result, voxel_size)
