"""The contract every training method implements and :mod:`cryorestore.train` calls.

A method says what the network's input and target are, how they are compared, and (for
missing-wedge methods) how the stored training boxes are refilled between epochs. The trainer only
ever calls the members declared here, so adding a method means subclassing :class:`TrainingMethod`
and implementing its abstract members; nothing is probed with ``hasattr``.

Tensors are float32 (B, C, Z, Y, X) with axes (z, y, x); sizes are in voxels.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import torch

Pairing = Literal["required", "optional", "single"]
Batch = tuple[torch.Tensor, torch.Tensor, dict[str, Any]]


class TrainingMethod(abc.ABC):
    """Base class of the training methods (Noise2Noise, DeepDeWedge, IsoNet, …).

    Class attributes every method sets:

    * ``name``: the CLI name (``--method``),
    * ``paired``: ``"required"`` (needs even and odd half tomograms), ``"optional"`` (uses them when
      given, else one map) or ``"single"`` (one map),
    * ``default_loss``: the loss spec used when ``--loss`` is not given (the one the benchmark
      supports for this method).

    ``tta_quarter_turns``: the quarter turns about y (in the (z, x) plane) that test-time augmentation
    may apply to this method's network inputs (:mod:`cryorestore.ensemble`). All four for a network
    trained on inputs turned that way (Noise2Noise); ``(0, 2)`` for the missing-wedge methods, whose
    training inputs always carry the data's wedge in its own orientation (the artificial wedge is
    applied in the tomogram's frame after the random rotation): a quarter turn moves the wedge to where
    the network has never seen one, and measurably worsened the filled map (``benchmarks/RESULTS.md``).

    Instance attribute ``refill_every``: every that many epochs the trainer calls :meth:`refill` on
    the stored training boxes (0: the method never refills).
    """

    name: ClassVar[str]
    paired: ClassVar[Pairing]
    default_loss: ClassVar[str]
    tta_quarter_turns: ClassVar[tuple[int, ...]] = (0, 1, 2, 3)
    refill_every: int = 0

    @abc.abstractmethod
    def extract_size(self, crop: int) -> int:
        """Box edge (voxels) to cut from the tomograms for a training crop of ``crop`` voxels."""

    @abc.abstractmethod
    def make_batch(self, raw: torch.Tensor, rng: np.random.Generator,
                   filled: torch.Tensor | None = None) -> Batch:
        """Training ``(input, target, ctx)`` from ``raw`` (B, C, E, E, E) boxes (C = 2 for even/odd, 1 for one map).

        ``filled`` holds the same boxes with their missing wedge refilled (refilling methods only).
        ``input``/``target`` are (B, 1, c, c, c); ``ctx`` is passed on to :meth:`loss`.
        """

    @abc.abstractmethod
    def validation_batch(self, raw: torch.Tensor, rng: np.random.Generator) -> Batch:
        """Held-out ``(input, target, ctx)`` whose target never changes during training.

        Built from the unrefilled boxes only and without any epoch-dependent augmentation (e.g.
        IsoNet's noise schedule), so that validation losses of different epochs compare the same
        thing and the best epoch can be chosen from them. ``rng`` is seeded identically every epoch.
        """

    @abc.abstractmethod
    def loss(self, pred: torch.Tensor, target: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        """Scalar loss between the network output ``pred`` and ``target`` (both (B, 1, c, c, c))."""

    @abc.abstractmethod
    def start_epoch(self, epoch: int) -> None:
        """Called by the trainer before each training epoch (0-based), e.g. to advance a schedule."""

    @abc.abstractmethod
    def refill(self, model: torch.nn.Module, original: torch.Tensor, filled: torch.Tensor,
               batch_size: int = 8, progress: bool = True) -> None:
        """In place: refill ``filled`` (N, C, E, E, E) from ``original`` with the model (only called when
        ``refill_every > 0``)."""

    @staticmethod
    @abc.abstractmethod
    def prediction_inputs(even: np.ndarray, odd: np.ndarray | None) -> Sequence[np.ndarray]:
        """The volumes prediction runs the network on; the restored map is the mean of the outputs."""


def even_odd_inputs(even: np.ndarray, odd: np.ndarray | None) -> Sequence[np.ndarray]:
    """``(even, odd)`` (cryoCARE: the mean of f(even) and f(odd) is the result), or ``(even,)`` alone."""
    return (even,) if odd is None else (even, odd)
