"""Models: the registry's networks (``build``) and the blocks to assemble your own.

``sl.models.build("resnet20", input_size=(34, 34), num_classes=10)`` builds a registered
network; ``names()`` lists them.  A network of your own is a ``SpikingNet`` (encoder -> stages
-> readout) of lava-dl-compatible blocks (``Conv``, ``Pool``, ``Dense``, ``Flatten``,
``Dropout``, ``ResidualBlock`` and an ``Affine`` readout) with ``CubaParams`` neurons;
``sl.export`` writes it without the registry (its structure goes into ``folded.pt`` as data,
``describe``), and so it writes a registry network changed by hand (scale-only BatchNorm, an
identity shortcut's weight, ``loihi`` timing: each is recorded)::

    n = sl.models.DEFAULT_NEURON
    net = sl.models.SpikingNet(
        [sl.models.Conv(n, 2, 8, 3, padding=1, norm=True), sl.models.Pool(n, 2)],
        nn.Sequential(sl.models.Flatten(), sl.models.Affine(n, 8 * 17 * 17, 10)),
        encoding="binary", stage_channels=[8, 8])
"""
from __future__ import annotations

from spikeline.pipeline.blocks import Affine, Conv, Dense, Dropout, Flatten, Pool
from spikeline.pipeline.models import DEFAULT_NEURON, MODELS, ResidualBlock, SpikingNet, build_model
from spikeline.pipeline.neuron import CubaParams
from spikeline.pipeline.structure import describe

__all__ = ["Affine", "Conv", "CubaParams", "DEFAULT_NEURON", "Dense", "Dropout", "Flatten",
           "Pool", "ResidualBlock", "SpikingNet", "build", "describe", "names"]

build = build_model


def names() -> list[str]:
    """The registered classifier names ``build`` accepts."""
    return list(MODELS)
