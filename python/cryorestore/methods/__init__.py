"""Training methods: what the network's input and target are, and which loss compares them.

Every method is a small class with the same interface, used by :mod:`cryorestore.train`:

* ``extract_size(crop)``: box size (voxels) to cut from the tomograms for a training crop of
  ``crop`` voxels (rotating methods need ``ceil(√3·crop) + 2`` so 3D-rotated crops have no empty corners).
* ``paired``: whether the method needs even and odd half tomograms (``"required"``), can use them
  (``"optional"``), or uses one map.
* ``make_batch(raw, rng) -> (input, target, ctx)``: ``raw`` is (B, C, E, E, E) on the training device
  (C = 2 for even/odd pairs, 1 for a single map); ``input``/``target`` are (B, 1, c, c, c).
* ``loss(pred, target, ctx)``: scalar training loss.
* ``refill_every`` and ``refill(model, store, ...)``: for missing-wedge methods, every k epochs the
  stored input boxes get their missing wedge filled with the model's prediction.
* ``prediction_inputs(even, odd)``: which volumes prediction runs the network on (results averaged).

Volumes are (z, y, x); all tensors are float32.
"""

from __future__ import annotations

from typing import Any

from cryorestore.errors import InputError

METHOD_NAMES = ("n2n", "deepdewedge", "isonet")


def method_class(name: str) -> type:
    """The class implementing method ``name`` (one of :data:`METHOD_NAMES`)."""
    if name == "n2n":
        from cryorestore.methods.n2n import Noise2Noise

        return Noise2Noise
    if name == "deepdewedge":
        from cryorestore.methods.deepdewedge import DeepDeWedge

        return DeepDeWedge
    if name == "isonet":
        from cryorestore.methods.isonet import IsoNet

        return IsoNet
    raise InputError(f"unknown method '{name}'; choose one of {', '.join(METHOD_NAMES)}")


def get_method(name: str, **options: Any):
    """Build the method ``name`` (one of :data:`METHOD_NAMES`) with its options."""
    return method_class(name)(**options)
