"""Operation counts of a simulated NIR graph and their price in joules.

- :mod:`.counts`: per-inference synaptic ops, MACs, neuron updates, spikes (exact fan-out);
- :mod:`.hardware`: hardware models (``hardware.toml``) and the SRAM memory table;
- :mod:`.conventions`: pricing conventions ``event``, ``ems`` (EMS-YOLO Eq. 6) and
  ``lemaire`` (Lemaire et al. 2022: ops + addressing + memory, with break-even spike rates);
- :mod:`.report`: JSON / Markdown / PNG report;
- :mod:`.batches`: counting a run in batches of samples.
"""
from .batches import count_in_batches
from .conventions import (
    CONVENTIONS, Energy, EnergyEstimate, GradedEventsRefused, LayerEnergy, break_even_rate,
    price, price_ems, price_event, price_lemaire, price_table,
)
from .counts import (
    FANOUT_MODES, EnergyCounts, Geometry, LayerCounts, NeuronCounts, combine_counts,
    conv_fanout, count_operations, layer_geometry,
)
from .hardware import (
    Constant, HardwareModel, Memory, load_hardware_models, load_memory, select_models,
)

__all__ = [
    "CONVENTIONS", "Constant", "Energy", "EnergyCounts", "EnergyEstimate", "FANOUT_MODES",
    "Geometry", "GradedEventsRefused", "HardwareModel", "LayerCounts", "LayerEnergy", "Memory",
    "NeuronCounts", "break_even_rate", "combine_counts", "conv_fanout", "count_in_batches",
    "count_operations", "layer_geometry", "load_hardware_models", "load_memory", "price",
    "price_ems", "price_event", "price_lemaire", "price_table", "select_models",
]
