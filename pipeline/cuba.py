"""CUBA-LIF parameters and thresholds: pure data, below both ``neuron.py`` (the dynamics) and
``kernels/`` (the same dynamics, fused).

``CubaParams`` holds a population's parameters as lava-dl's ``cuba.Neuron`` takes them, and
derives the integers Loihi runs (12-bit decays ``iDecay = round(4096 * current_decay)``, the
threshold mantissa ``vThMant = int(threshold * 64)``); ``reset_threshold`` and
``spike_threshold`` are the float32 thresholds lava-dl compares states with.  See
``neuron.py`` for the equations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CubaParams", "P_SCALE", "SCALE_RHO_MULT", "TAU_RHO_MULT", "decay_int",
           "reset_threshold", "spike_threshold"]

P_SCALE = 1 << 12  # decays are 12-bit fractions
TAU_RHO_MULT = 100.0  # lava-dl neuron/cuba.py
SCALE_RHO_MULT = 0.1


@dataclass(frozen=True)
class CubaParams:
    """Parameters of a CUBA-LIF population, as lava-dl's ``cuba.Neuron`` takes them.

    ``current_decay`` and ``voltage_decay`` are fractions lost per step (``alpha`` in
    ``u[t] = (1 - alpha) u[t-1] + x[t]``); ``scale`` is the weight scale (64 on Loihi).
    """

    threshold: float = 1.25
    current_decay: float = 0.25
    voltage_decay: float = 0.03
    tau_grad: float = 0.03
    scale_grad: float = 3.0
    scale: int = 64

    def __post_init__(self):
        if not self.threshold > 0:
            raise ValueError(f"CubaParams.threshold must be > 0, got {self.threshold}")
        for name in ("current_decay", "voltage_decay"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"CubaParams.{name} must lie in [0, 1], got {value}")
        if self.scale <= 0 or self.scale & (self.scale - 1):
            raise ValueError(f"CubaParams.scale must be a power of two, got {self.scale}")

    @property
    def s_scale(self) -> int:
        """Integer scale of the states (4096 for scale 64)."""
        return self.scale * 64

    @property
    def i_decay(self) -> int:
        """12-bit current decay, rounded as lava-dl's ``quantize`` does (float32, half-even)."""
        return decay_int(self.current_decay)

    @property
    def v_decay(self) -> int:
        return decay_int(self.voltage_decay)

    @property
    def theta(self) -> float:
        """Threshold on the weight grid: ``int(threshold * scale) / scale``."""
        return int(self.threshold * self.scale) / self.scale

    @property
    def v_th_mant(self) -> int:
        """Loihi's threshold mantissa (``vThMant``)."""
        return int(self.theta * self.scale)

    @property
    def threshold_eps(self) -> float:
        return 0.01 / self.s_scale

    @property
    def tau_rho(self) -> float:
        return self.tau_grad * self.theta * TAU_RHO_MULT

    @property
    def scale_rho(self) -> float:
        return self.scale_grad * SCALE_RHO_MULT

    def device_params(self) -> dict:
        """The ``neuron/`` group of a netx HDF5 layer."""
        return {
            "type": "CUBA",
            "iDecay": self.i_decay,
            "vDecay": self.v_decay,
            "vThMant": self.v_th_mant,
            "refDelay": 1,
            "gradedSpike": False,
        }


def decay_int(fraction: float) -> int:
    """A decay fraction as a 12-bit integer, rounded as lava-dl's ``quantize`` does."""
    value = np.float32(P_SCALE * fraction)  # lava-dl stores p_scale * decay as float32
    return int(np.clip(np.round(value), 0, P_SCALE))


def reset_threshold(p: CubaParams) -> float:
    """The float32 threshold lava-dl compares the integer voltage state with to reset it."""
    return float(np.float32((p.theta + p.threshold_eps) * p.s_scale))


def spike_threshold(p: CubaParams) -> float:
    """The float32 threshold the voltage ``v / 4096`` is compared with to spike."""
    return float(np.float32(p.theta + p.threshold_eps))
