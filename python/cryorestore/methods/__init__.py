"""Training methods: what the network's input and target are, and which loss compares them.

Every method subclasses :class:`cryorestore.methods.base.TrainingMethod` (the contract the trainer
calls: ``extract_size``, ``make_batch``, ``validation_batch``, ``loss``, ``start_epoch``,
``refill_every``/``refill``, ``prediction_inputs``, and the class attributes ``name``, ``paired``,
``default_loss``); see that module for what each member means.

Volumes are (z, y, x); all tensors are float32.
"""

from __future__ import annotations

from typing import Any

from cryorestore.errors import InputError
from cryorestore.methods.base import TrainingMethod

METHOD_NAMES = ("n2n", "deepdewedge", "isonet")

#: the method ``train`` and ``denoise`` use unless ``--method`` is given: IsoNet, joint even/odd mode
#: with half maps (denoises and fills the missing wedge), single-map mode with one map. At an equal
#: step budget on the realistic benchmark it led n2n by 0.7-1.2 dB PSNR and 0.03-0.09 in mean
#: apodised FSC against the truth on two seeds (``benchmarks/RESULTS.md``, "Wedge methods at equal compute").
DEFAULT_METHOD = "isonet"


def method_class(name: str) -> type[TrainingMethod]:
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


def get_method(name: str, **options: Any) -> TrainingMethod:
    """Build the method ``name`` (one of :data:`METHOD_NAMES`) with its options."""
    return method_class(name)(**options)
