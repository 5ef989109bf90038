"""A detector's off-chip readout (``deploy/detector.py``), priced beside its spiking part.

The spiking part (stem, backbone, neck: ``model.nir``) is counted and priced like any graph
(:mod:`.counts`, :mod:`.conventions`).  The Detect readout is not in the graph: it runs on a host
(the ``ann_baseline`` CMOS model of the hardware model) and is listed separately.  Per level
``l`` with a ``C_l x H_l x W_l`` spike map and ``K = 3 (5 + classes)`` outputs::

    FLOPs_l = H_l W_l C_l K          (1x1 convolution, MACs)
    bias_l  = H_l W_l K              (additions)
    spikes_l                         (the level's measured spikes per inference)

``T`` is the input's steps: under ``--timing loihi`` the graph runs ``T + input_pad_steps``
steps but the host reads each level over its own ``T``-step window (``deploy/detector.py``).
``spikes_l`` counts the level's spikes over all the steps the graph runs (outside its window
too), an upper bound on what the host reads under ``loihi`` timing.

Pricing, per convention (the host's ``E_MAC``, ``E_AC``)::

    ems       SNN side: T * E_MAC * FLOPs_l   (EMS-YOLO's Eq. 6 counts Detect as a MAC layer
              at each of the T steps, its input being real-valued there)
              ANN side: E_MAC * FLOPs_l        (once per inference)
    event,    SNN side: E_MAC * FLOPs_l + E_AC * (spikes_l + bias_l)   (the convolution is
    lemaire   linear, so the host sums each level's spikes over T, one AC per spike, and applies
              the 1x1 convolution once to the spike counts; exact, see deploy/detector.py)
              ANN side: E_MAC * FLOPs_l + E_AC * bias_l
              arithmetic only on both sides, also under lemaire (no memory term for the host)

``with_readout`` adds the readout to both sides: the SNN total is chip + host, the ANN total is
the ANN of the whole architecture (spiking part's dense ops + the Detect convolution).

How this relates to EMS-YOLO's "5.83x less energy than the ANN" (Su et al. 2023, Eq. 6, read
in /work/shared/REFERENCE.md §11; no released script reproduces it):

- their convention is ours ``ems``: first layer and non-spike inputs as MACs at every step,
  later layers ACs x FLOPs x input firing rate x T, E_MAC 4.6 pJ / E_AC 0.9 pJ (45 nm fp32:
  ``cmos45_fp32``), ANN = E_MAC x FLOPs; their ratio is ANN / SNN of that sum;
- our rates are measured, per layer, on the exported (folded, quantized, fixed-point) network
  on real test scenes, not assumed or taken from the training pass;
- our architecture is the deployable form (spikes between blocks, strided 1x1 shortcuts instead
  of max pooling and real-valued shortcut convolutions, no top-down upsampling in the neck), so
  their real-valued shortcut convolutions (MAC layers in Eq. 6) are AC layers here;
- T (ours 3 on ndigits-detect, theirs 5 on Gen1 / 4 on COCO) multiplies every SNN term;
- the input is 64 x 64 event frames with binary encoding, theirs 320 x 320 (Gen1): the stem
  (a MAC layer under ``ems``) weighs differently;
- the readout is listed separately here; Eq. 6 folds Detect into the SNN sum as a MAC layer;
- ``event`` prices only the events that happen (exact fan-out, borders included), and
  ``lemaire`` adds addressing and SRAM traffic on both sides (Lemaire et al. 2022): the
  like-for-like figure, usually far below any Eq. 6 ratio.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from spikeline.errors import BadInput

from ..artifact import DetectorReadout
from .conventions import EnergyEstimate
from .counts import EnergyCounts
from .report import estimate_key

__all__ = ["ReadoutLevel", "readout_levels", "price_readout", "readout_report"]


@dataclass(frozen=True)
class ReadoutLevel:
    level: str
    source_node: str
    in_channels: int
    out_channels: int
    height: int
    width: int
    spikes: float  # per inference, into this level's readout

    @property
    def macs(self) -> int:
        return self.height * self.width * self.in_channels * self.out_channels

    @property
    def bias_adds(self) -> int:
        return self.height * self.width * self.out_channels


def readout_levels(readout: DetectorReadout, counts: EnergyCounts) -> list[ReadoutLevel]:
    """The levels of ``metadata.json``'s ``readout`` with their measured input spikes."""
    spikes = {n.name: n.spikes for n in counts.neuron_nodes}
    out = []
    for lv in readout.levels:
        if lv.source_node not in spikes:
            raise BadInput(f"metadata.json readout level {lv.level!r}: source node "
                           f"{lv.source_node!r} is not a neuron node of the graph")
        out.append(ReadoutLevel(lv.level, lv.source_node, lv.in_channels, lv.out_channels,
                                lv.height, lv.width, float(spikes[lv.source_node])))
    return out


def price_readout(levels: Sequence[ReadoutLevel], convention: str, e_mac: float, e_ac: float,
                  T: int) -> tuple[float, float]:
    """``(SNN-side joules, ANN-side joules)`` of the readout (module docstring)."""
    macs = sum(lv.macs for lv in levels)
    bias = sum(lv.bias_adds for lv in levels)
    spikes = sum(lv.spikes for lv in levels)
    if convention == "ems":
        return T * e_mac * macs, e_mac * macs
    return e_mac * macs + e_ac * (spikes + bias), e_mac * macs + e_ac * bias


def readout_report(readout: DetectorReadout, counts: EnergyCounts,
                   estimates: Sequence[EnergyEstimate], models: Mapping) -> dict:
    """The readout's counts, and per estimate key its price and the totals with it."""
    levels = readout_levels(readout, counts)
    # the host reads T steps per level; a loihi-timed graph runs input_pad_steps more
    steps = max(counts.T - readout.input_pad_steps, 1)
    entry = {"where": "off-chip (host: the hardware model's ann_baseline CMOS model)",
             "levels": [{"level": lv.level, "source_node": lv.source_node,
                         "in_channels": lv.in_channels, "out_channels": lv.out_channels,
                         "height": lv.height, "width": lv.width, "macs": lv.macs,
                         "bias_adds": lv.bias_adds, "input_spikes": lv.spikes}
                        for lv in levels],
             "macs": sum(lv.macs for lv in levels),
             "bias_adds": sum(lv.bias_adds for lv in levels),
             "input_spikes": sum(lv.spikes for lv in levels), "T": steps, "energy": {}}
    for est in estimates:
        model = models[est.model]
        e_mac, e_ac = model.ann_mac, model.ann_ac
        if not e_mac and model.kind == "cmos":  # a model built without its baseline's prices
            e_mac, e_ac = model.joules("mac"), model.joules("ac")
        snn_r, ann_r = price_readout(levels, est.convention, e_mac, e_ac, steps)
        snn, ann = est.snn.total + snn_r, est.ann.total + ann_r
        entry["energy"][estimate_key(est)] = {
            "readout_snn_J": snn_r, "readout_ann_J": ann_r, "snn_total_J": snn,
            "ann_total_J": ann, "ratio": ann / snn if snn > 0 else None}
    return entry
