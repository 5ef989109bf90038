"""Pricing conventions: the same counts, priced three ways that papers use.

Every convention returns an :class:`EnergyEstimate`: the SNN and the ANN of the same
architecture, each split into compute and memory joules per inference, per layer too, and the
hardware model and convention that produced them.

``event`` (spikeline's default, event-exact counts):
    CMOS models price arithmetic only, on both sides::

        E_SNN = E_MAC * macs + E_AC * (synops + shortcut_adds)
        E_ANN = E_MAC * dense_MACs + E_AC * (dense_pool_adds + dense_shortcut_adds)

    Neuromorphic models use the chip's per-event figures (all-in: they include the chip's own
    memory accesses, so ``memory_J`` is 0 and the memory is inside ``compute_J``)::

        E_SNN = sum_l E_synop(l) * synops_l + E_graded * macs_l + E_synop * shortcut_adds_l
              + E_active * active_updates + E_inactive * (updates - active_updates)
              + E_spike * spikes

    ``E_synop(l) = synop_conv`` for Conv layers when given.  Graded events (``macs``: integer
    inputs, SEW ADD sums) need a chip with graded spikes (``graded_synop``, Loihi 2); a binary
    chip (Loihi 1) refuses them.  Their ANN is priced under the Lemaire memory model on the
    ``ann_baseline`` CMOS model, never as arithmetic alone, so the two sides both pay for memory.

``ems`` (EMS-YOLO's Eq. 6, exactly; CMOS models only)::

    E_SNN = sum_l T * (fr_l * E_AC * FLOPs_l)     for layers fed by spikes
          + sum_l T * E_MAC * FLOPs_l             for the first layer and any layer whose input
                                                  is not binary (MAC layers)
    E_ANN = E_MAC * sum_l FLOPs_l                 (pooling layers: E_AC * adds)

    with ``fr_l`` the layer's mean input spike rate over T and all input positions.  No neuron,
    memory or shortcut term: that is the convention.

``lemaire`` (Lemaire et al., ICONIP 2022, arXiv 2210.13107; CMOS models only), E = ops +
addressing + memory, ``E_ADD = ac``, ``E_MUL + E_ADD = mac``, every memory access of one word
priced by the size of the memory holding it (:class:`~.hardware.Memory`).  Per layer, over the
steps whose input is binary (``theta`` = input spikes, ``S`` = synaptic events, exact
fan-out)::

    ops        AC:  S + bias_adds + out_spikes + shortcut_adds     MAC: leaks (one per state
                                                                        variable per update)
    addressing AC:  theta * kernel_fanout          MAC: 2 * theta (convolution and pooling)
    memory     read_in theta @ FIFO, read_params S (+ bias) @ layer parameters,
               read + write potential S each @ layer outputs,
               read + write potential per neuron update @ the neuron population,
               write_out out_spikes @ FIFO

Steps whose input is not binary run as the FNN layer does, once per such step.  The ANN of the
same architecture, once per inference, with its own data reuse::

    ops        MAC: dense_ops (pooling: AC)  AC: bias adds + dense_shortcut_adds
    addressing AC:  in + out (+ C_out k^2 for convolution)
    memory     read_in (conv: every weight use, linear: each input) @ the layer input,
               read_params dense_ops (+ bias) @ layer parameters, write_out out @ layer output

The break-even spike rate ``r*`` of a layer (and of the network) is the uniform rate, the same
at every spike input and output (a fraction of neurons spiking per step), at which the SNN's
energy equals the ANN's.  E_SNN is affine in r, so ``r* = (E_ANN - E(0)) / (E(1) - E(0))``;
None when the SNN never wins (E(0) >= E_ANN).  The first layer's non-binary input keeps its
measured steps (it is not a spike rate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping

from spikeline.errors import SpikelineError

from .counts import EnergyCounts, LayerCounts
from .hardware import HardwareModel, Memory, load_memory

__all__ = ["CONVENTIONS", "Energy", "EnergyEstimate", "LayerEnergy", "GradedEventsRefused",
           "price", "price_ems", "price_event", "price_lemaire", "price_table", "break_even_rate"]

CONVENTIONS = ("event", "ems", "lemaire")


class GradedEventsRefused(SpikelineError):
    """A binary-spike chip was asked to price graded (integer) events."""


@dataclass(frozen=True)
class Energy:
    """Joules per inference, ``compute`` and ``memory`` (0 where the convention has none)."""

    compute: float = 0.0
    memory: float = 0.0

    def __post_init__(self):
        for name in ("compute", "memory"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Energy.{name} must be finite and >= 0, got {value}")

    @property
    def total(self) -> float:
        return self.compute + self.memory

    def __add__(self, other: "Energy") -> "Energy":
        return Energy(self.compute + other.compute, self.memory + other.memory)

    def to_dict(self) -> dict:
        return {"compute_J": self.compute, "memory_J": self.memory, "total_J": self.total}


@dataclass(frozen=True)
class LayerEnergy:
    """One layer's SNN (its neurons included) and ANN energy; ``break_even_rate`` (lemaire)."""

    snn: Energy
    ann: Energy
    break_even_rate: float | None = None


@dataclass(frozen=True)
class EnergyEstimate:
    """Joules per inference of ``convention`` on hardware ``model``: ``snn`` and ``ann``
    (:class:`Energy`), ``layers`` name -> :class:`LayerEnergy`, ``breakdown`` of the SNN
    (named parts, J), ``ann_hardware`` (the model that priced the ANN), ``measured`` (False for
    assumed prices), ``break_even_rate`` (lemaire) and ``notes``."""

    model: str
    convention: str
    snn: Energy
    ann: Energy
    layers: Mapping[str, LayerEnergy]
    breakdown: Mapping[str, float] = field(default_factory=dict)
    ann_hardware: str = ""
    measured: bool = True
    break_even_rate: float | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {self.convention!r}")
        object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def ratio(self) -> float | None:
        """ANN / SNN (None when the SNN costs nothing)."""
        return self.ann.total / self.snn.total if self.snn.total > 0 else None


def _require_cmos(model: HardwareModel, convention: str):
    if model.kind != "cmos":
        raise SpikelineError(f"--convention {convention} prices arithmetic (and memory) of a "
                             f"digital CMOS design; {model.name!r} is a {model.kind} chip. Use a "
                             "cmos model (cmos45_fp32, cmos45_fp16, cmos45_int8, cmos45_int32) or "
                             "--convention event for chips")


def _refuse_graded(counts: EnergyCounts, model: HardwareModel):
    graded = [layer.name for layer in counts.layers if layer.macs > 0]
    if graded and not model.graded_spikes:
        raise GradedEventsRefused(
            f"{model.name} sends binary spikes only, but layer(s) {graded} receive graded "
            "(integer) events: event counts above 1 per bin, or SEW ADD sums of spikes. Pricing "
            "them as one spike each would understate the work. Price on a chip with graded "
            "spikes (loihi2, assumed prices) or feed binary input and use Spiking ResNet "
            "shortcuts")


# --------------------------------------------------------------------------------------------
# event
# --------------------------------------------------------------------------------------------

def price_event(counts: EnergyCounts, model: HardwareModel,
                memory: Memory | None = None) -> EnergyEstimate:
    """The ``event`` convention on ``model`` (module docstring)."""
    layers, parts = {}, {"synaptic": 0.0, "graded": 0.0, "shortcut": 0.0, "neuron": 0.0,
                         "spike": 0.0}
    if model.kind == "cmos":
        for layer in counts.layers:
            e_dense = model.ann_mac if layer.dense_op_kind == "mac" else model.ann_ac
            syn = model.joules("mac") * layer.macs + model.joules("ac") * layer.synops
            add = model.joules("ac") * layer.shortcut_adds
            ann = e_dense * layer.dense_ops + model.ann_ac * layer.dense_shortcut_adds
            parts["synaptic"] += syn
            parts["shortcut"] += add
            layers[layer.name] = LayerEnergy(Energy(syn + add), Energy(ann))
        snn = Energy(sum(e.snn.compute for e in layers.values()))
        ann = Energy(sum(e.ann.compute for e in layers.values()))
        return EnergyEstimate(model.name, "event", snn, ann, layers, parts,
                              ann_hardware=model.name, measured=model.measured,
                              notes=("arithmetic only on both sides (no memory, no neuron "
                                     "updates), which favours the SNN",))

    _refuse_graded(counts, model)
    ann_est = _lemaire_ann(counts, model.ann_mac, model.ann_ac, model.ann_word_bytes,
                           memory or load_memory())
    per_layer = {}
    for layer in counts.layers:
        e_syn = model.joules("synop")
        if layer.op in ("Conv2d", "Conv1d") and "synop_conv" in model.constants:
            e_syn = model.joules("synop_conv")
        syn = e_syn * layer.synops
        graded = model.joules("graded_synop") * layer.macs
        add = model.joules("synop") * layer.shortcut_adds
        parts["synaptic"] += syn
        parts["graded"] += graded
        parts["shortcut"] += add
        per_layer[layer.name] = syn + graded + add
    for node in counts.neuron_nodes:
        neuron = (model.joules("neuron_active") * node.active_updates
                  + model.joules("neuron_inactive") * (node.updates - node.active_updates))
        spike = model.joules("spike") * node.spikes
        parts["neuron"] += neuron
        parts["spike"] += spike
        if node.layer in per_layer:
            per_layer[node.layer] += neuron + spike
    layers = {name: LayerEnergy(Energy(value), ann_est[name]) for name, value in per_layer.items()}
    snn = Energy(sum(parts.values()))
    ann = sum((e for e in ann_est.values()), Energy())
    notes = [f"per-event chip figures are all-in (the chip's memory is inside compute_J); the "
             f"ANN is priced with memory (Lemaire model on {model.ann_baseline})"]
    if not model.measured:
        notes.insert(0, f"{model.name}: NOT MEASURED, assumed per-operation prices")
    return EnergyEstimate(model.name, "event", snn, ann, layers, parts,
                          ann_hardware=f"{model.ann_baseline} + SRAM (lemaire)",
                          measured=model.measured, notes=tuple(notes))


# --------------------------------------------------------------------------------------------
# ems
# --------------------------------------------------------------------------------------------

def _ems_is_mac(layer: LayerCounts) -> bool:
    return layer.first_layer or layer.graded


def price_ems(counts: EnergyCounts, model: HardwareModel) -> EnergyEstimate:
    """EMS-YOLO's Eq. 6 on ``model`` (module docstring)."""
    _require_cmos(model, "ems")
    e_mac, e_ac = model.joules("mac"), model.joules("ac")
    layers, parts = {}, {"mac_layers": 0.0, "ac_layers": 0.0}
    T = counts.T
    for layer in counts.layers:
        flops = layer.dense_ops
        if _ems_is_mac(layer):
            snn = T * e_mac * flops
            parts["mac_layers"] += snn
        else:
            snn = T * layer.firing_rate * e_ac * flops
            parts["ac_layers"] += snn
        ann = (e_mac if layer.dense_op_kind == "mac" else e_ac) * flops
        layers[layer.name] = LayerEnergy(Energy(snn), Energy(ann))
    snn = Energy(sum(e.snn.compute for e in layers.values()))
    ann = Energy(sum(e.ann.compute for e in layers.values()))
    return EnergyEstimate(model.name, "ems", snn, ann, layers, parts, ann_hardware=model.name,
                          measured=model.measured,
                          notes=("EMS-YOLO Eq. 6: arithmetic only, FLOPs x input rate; first "
                                 "layer and non-spike inputs as dense MACs every step",))


# --------------------------------------------------------------------------------------------
# lemaire
# --------------------------------------------------------------------------------------------

def _lemaire_snn_layer(layer: LayerCounts, e_mac: float, e_ac: float, word: int,
                       mem: Memory) -> tuple[Energy, dict]:
    theta, S = layer.spike_events, layer.synops
    T_bin = layer.binary_fraction * layer.T
    T_graded = layer.T - T_bin
    fifo = mem.access_joules(mem.fifo_words * word)
    params = mem.access_joules(layer.params * word)
    outputs = mem.access_joules(layer.output_size * word)
    neurons = mem.access_joules(layer.neurons * word)
    inputs = mem.access_joules(layer.input_size * word)
    bias = layer.output_size if layer.has_bias else 0
    # event-driven steps
    ops = e_ac * (S + bias * T_bin + layer.spikes + layer.shortcut_adds) + e_mac * layer.leaks
    conv_like = layer.op not in ("Linear", "Affine")
    addr = e_ac * theta * layer.kernel_fanout + (e_mac * 2 * theta if conv_like else 0.0)
    read_in = theta * fifo
    read_params = (S + bias * T_bin) * params
    potential = 2 * S * outputs + 2 * layer.neuron_updates * neurons
    write_out = layer.spikes * fifo
    # steps whose input is not binary: the FNN layer, once per step
    dense_ops = layer.dense_ops
    if T_graded:
        if layer.dense_op_kind == "mac":
            ops += T_graded * (e_mac * dense_ops + e_ac * bias)
        else:
            ops += T_graded * e_ac * dense_ops
        addr += T_graded * e_ac * _ann_addressing(layer)
        read_in += T_graded * (dense_ops if conv_like else layer.input_size) * inputs
        read_params += T_graded * (dense_ops + bias) * params
    parts = {"ops": ops, "addressing": addr, "read_in": read_in, "read_params": read_params,
             "potential": potential, "write_out": write_out}
    return Energy(ops + addr, read_in + read_params + potential + write_out), parts


def _ann_addressing(layer: LayerCounts) -> float:
    """Lemaire's FNN addressing: in + out (+ C_out * k_h * k_w for a convolution)."""
    extra = layer.output_shape[0] * layer.taps if layer.op in ("Conv2d", "Conv1d") else 0
    return layer.input_size + layer.output_size + extra


def _lemaire_ann(counts: EnergyCounts, e_mac: float, e_ac: float, word: int,
                 mem: Memory) -> dict[str, Energy]:
    out = {}
    for layer in counts.layers:
        inputs = mem.access_joules(layer.input_size * word)
        params = mem.access_joules(layer.params * word)
        outputs = mem.access_joules(layer.output_size * word)
        bias = layer.output_size if layer.has_bias else 0
        dense = layer.dense_ops
        if layer.dense_op_kind == "mac":
            ops = e_mac * dense + e_ac * (bias + layer.dense_shortcut_adds)
        else:
            ops = e_ac * (dense + layer.dense_shortcut_adds)
        addr = e_ac * _ann_addressing(layer)
        conv_like = layer.op not in ("Linear", "Affine")
        read_in = (dense if conv_like else layer.input_size) * inputs
        read_params = (dense + bias) * params
        write_out = layer.output_size * outputs
        out[layer.name] = Energy(ops + addr, read_in + read_params + write_out)
    return out


def _at_rate(layer: LayerCounts, rate: float) -> LayerCounts:
    """``layer`` with every spike count set to a uniform ``rate`` (binary steps only)."""
    T_bin = layer.binary_fraction * layer.T
    mean_fan = layer.connections / max(1, layer.input_size)
    theta = rate * T_bin * layer.input_size
    return replace(layer, spike_events=theta, synops=theta * mean_fan,
                   spikes=rate * layer.T * layer.neurons,
                   shortcut_adds=rate * layer.T * layer.dense_shortcut_adds)


def break_even_rate(snn_at_zero: float, snn_at_one: float, ann: float) -> float | None:
    """``r`` with ``E(r) = ann`` for ``E`` affine through E(0), E(1); None if never below."""
    if snn_at_zero >= ann:
        return None
    slope = snn_at_one - snn_at_zero
    return (ann - snn_at_zero) / slope if slope > 0 else math.inf


def price_lemaire(counts: EnergyCounts, model: HardwareModel,
                  memory: Memory | None = None) -> EnergyEstimate:
    """Lemaire et al. 2022 on ``model`` (module docstring)."""
    _require_cmos(model, "lemaire")
    mem = memory or load_memory()
    e_mac, e_ac, word = model.joules("mac"), model.joules("ac"), model.word_bytes
    ann = _lemaire_ann(counts, e_mac, e_ac, word, mem)
    layers, parts = {}, {}
    zero = one = 0.0
    for layer in counts.layers:
        snn, layer_parts = _lemaire_snn_layer(layer, e_mac, e_ac, word, mem)
        for key, value in layer_parts.items():
            parts[key] = parts.get(key, 0.0) + value
        e0 = _lemaire_snn_layer(_at_rate(layer, 0.0), e_mac, e_ac, word, mem)[0].total
        e1 = _lemaire_snn_layer(_at_rate(layer, 1.0), e_mac, e_ac, word, mem)[0].total
        zero, one = zero + e0, one + e1
        layers[layer.name] = LayerEnergy(snn, ann[layer.name],
                                         break_even_rate(e0, e1, ann[layer.name].total))
    snn = sum((e.snn for e in layers.values()), Energy())
    ann_total = sum((e.ann for e in layers.values()), Energy())
    return EnergyEstimate(model.name, "lemaire", snn, ann_total, layers, parts,
                          ann_hardware=model.name, measured=model.measured,
                          break_even_rate=break_even_rate(zero, one, ann_total.total),
                          notes=("Lemaire et al. 2022: ops + addressing + SRAM memory, SNN and "
                                 "ANN of the same architecture on the same model",))


def price(counts: EnergyCounts, model: HardwareModel, convention: str = "event",
          memory: Memory | None = None) -> EnergyEstimate:
    """Price ``counts`` on ``model`` under ``convention`` (one of :data:`CONVENTIONS`)."""
    if convention == "event":
        return price_event(counts, model, memory)
    if convention == "ems":
        return price_ems(counts, model)
    if convention == "lemaire":
        return price_lemaire(counts, model, memory)
    raise SpikelineError(f"unknown convention {convention!r}; expected one of "
                         f"{', '.join(CONVENTIONS)}")


PRIMARY = ("lemaire", "cmos45_int8")  # the full table's headline: like for like, with memory


def price_table(counts: EnergyCounts, models, conventions=CONVENTIONS,
                memory: Memory | None = None) -> tuple[list[EnergyEstimate], dict[str, str]]:
    """Every valid (convention, model) pricing of ``counts``: ``event`` on every model,
    ``ems`` and ``lemaire`` on CMOS models; the like-for-like ``lemaire`` on ``cmos45_int8``
    first when present.  Returns (estimates, refused) with refused = {key: reason} for models
    that refuse the counts (graded events on a binary-spike chip)."""
    memory = memory or load_memory()
    estimates, refused = [], {}
    for convention in conventions:
        for model in models:
            if convention != "event" and model.kind != "cmos":
                continue
            try:
                estimates.append(price(counts, model, convention, memory))
            except GradedEventsRefused as err:
                key = model.name if convention == "event" else f"{convention}/{model.name}"
                refused[key] = str(err)
    estimates.sort(key=lambda e: (e.convention, e.model) != PRIMARY)
    return estimates, refused
