"""Energy report: JSON (every count and energy), a Markdown summary and PNG charts.

:func:`build_report` turns :class:`~spikeline.deploy.energy.EnergyCounts` and the
:class:`~spikeline.deploy.energy.EnergyEstimate` of each hardware model into one JSON-ready dict:

- ``layers``: one entry per synaptic node with ``name``, ``op``, ``synops``, ``macs``,
  ``neuron_updates``, ``spikes`` and extras (``input_events``, ``firing_rate``,
  ``binary_fraction``, ``connections``, ``dense_ops``, ``dense_op_kind``, ``neurons``,
  ``active_neuron_updates``, ``neuron_nodes``, shapes, and ``energy`` {model: {snn, ann}}),
- ``totals``: the same counts summed (``dense_ops`` split into ``ann_macs`` / ``ann_adds``),
- ``neurons``: one entry per neuron node,
- ``energy``: {model: {``snn``, ``ann``, ``ratio``, ``kind``, ``breakdown``, constants with
  their sources}}, joules per inference,
- ``meta``: T, samples, fan-out mode, counting conventions and whatever the caller adds.

Every file is written atomically (a temporary file in the target folder, then ``os.replace``).
Charts are drawn with matplotlib's Agg canvas (no pyplot state, no display needed).
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

from spikeline.atomic import atomic_file

from .energy import EnergyCounts, EnergyEstimate, HardwareModel

LAYER_KEYS = ("name", "op", "synops", "macs", "neuron_updates", "spikes", "input_events",
              "firing_rate", "binary_fraction", "connections", "dense_ops", "dense_op_kind",
              "neurons", "active_neuron_updates")

CONVENTIONS = (
    "Counts are per inference: summed over T steps, averaged over the samples.",
    "synops = accumulates: nonzero binary ({-1,0,1}) inputs x exact fan-out (borders, stride, "
    "padding included); macs = the same for steps whose input is not binary (NeuroBench rule, "
    "per sample and step).",
    "SumPool2d/AvgPool2d count as synaptic layers (NeuroBench does not count pooling).",
    "dense ANN ops are counted once per inference (FLOPs_conv = k^2 H_out W_out C_in/groups "
    "C_out, FLOPs_fc = in*out; pooling adds priced as ACs).",
    "CMOS estimates price arithmetic only (no memory or data movement), which favours the SNN.",
    "Neuromorphic estimates include neuron updates and spikes, but their ANN column is the "
    "arithmetic-only CMOS baseline (ann_baseline), so that ratio is not like for like.",
)


def _model_entry(est: EnergyEstimate, model: HardwareModel | None) -> dict:
    entry = {"snn": est.snn, "ann": est.ann, "ratio": est.ratio,
             "breakdown": dict(est.breakdown)}
    if model is not None:
        entry.update({
            "kind": model.kind, "description": model.description,
            "ann_baseline": model.ann_baseline, "pre_silicon": model.pre_silicon,
            "constants": {k: {"pj": c.joules * 1e12, "source": c.source,
                              "pre_silicon": c.pre_silicon}
                          for k, c in model.constants.items()},
        })
    return entry


def build_report(counts: EnergyCounts, estimates: Sequence[EnergyEstimate],
                 models: Mapping[str, HardwareModel] | None = None,
                 meta: Mapping | None = None) -> dict:
    """JSON-ready report of ``counts`` priced by ``estimates`` (see module docstring)."""
    models = models or {}
    layers = []
    for layer in counts.layers:
        entry = {key: getattr(layer, key) for key in LAYER_KEYS}
        entry["neuron_nodes"] = list(layer.neuron_nodes)
        entry["input_shape"] = list(layer.input_shape)
        entry["output_shape"] = list(layer.output_shape)
        entry["energy"] = {est.model: {"snn": est.layers[layer.name][0],
                                       "ann": est.layers[layer.name][1]} for est in estimates}
        layers.append(entry)
    totals = counts.totals()
    totals["dense_ops"] = totals["ann_macs"] + totals["ann_adds"]
    totals["network_input_events"] = counts.network_input_events
    neurons = [{"name": n.name, "op": n.op, "layer": n.layer, "neurons": n.neurons,
                "neuron_updates": n.updates, "active_neuron_updates": n.active_updates,
                "spikes": n.spikes, "spiking": n.spiking, "firing_rate": n.firing_rate}
               for n in counts.neuron_nodes]
    energy = {est.model: _model_entry(est, models.get(est.model)) for est in estimates}
    report_meta = {"T": counts.T, "samples": counts.samples, "fanout": counts.fanout,
                   "units": {"energy": "J per inference", "counts": "per inference"},
                   "conventions": list(CONVENTIONS)}
    report_meta.update(dict(meta or {}))
    return {"meta": report_meta, "layers": layers, "totals": totals, "neurons": neurons,
            "energy": energy}


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

def _num(value: float) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-2:
        return f"{value:.3g}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def _joules(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-12:.3g} pJ"


def to_markdown(report: Mapping) -> str:
    """A Markdown summary: per-layer count table with totals, energy per hardware model."""
    meta = report["meta"]
    lines = ["# Spike energy report", ""]
    source = meta.get("model")
    if source:
        lines.append(f"Model: `{source}`  ")
    lines += [f"T = {meta['T']} steps, {meta['samples']} sample(s), fan-out: {meta['fanout']}. "
              "Counts per inference.", ""]
    lines += ["| layer | op | input rate | synops (AC) | MACs | dense ANN ops | neuron updates | "
              "spikes |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for layer in report["layers"]:
        lines.append(f"| {layer['name']} | {layer['op']} | {layer['firing_rate']:.4f} | "
                     f"{_num(layer['synops'])} | {_num(layer['macs'])} | "
                     f"{_num(layer['dense_ops'])} | {_num(layer['neuron_updates'])} | "
                     f"{_num(layer['spikes'])} |")
    t = report["totals"]
    lines.append(f"| **total** | | | {_num(t['synops'])} | {_num(t['macs'])} | "
                 f"{_num(t['dense_ops'])} | {_num(t['neuron_updates'])} | {_num(t['spikes'])} |")
    lines += ["", "| hardware model | kind | SNN / inference | ANN / inference | ANN / SNN | "
              "pre-silicon |", "|---|---|---:|---:|---:|---|"]
    for name, e in report["energy"].items():
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.3g}x"
        pre = {True: "yes", False: "no", None: "-"}[e.get("pre_silicon")]
        lines.append(f"| {name} | {e.get('kind', '-')} | {_joules(e['snn'])} | "
                     f"{_joules(e['ann'])} | {ratio} | {pre} |")
    lines += ["", "Notes:"] + [f"- {c}" for c in meta.get("conventions", [])]
    return "\n".join(lines) + "\n"


def summary_text(report: Mapping) -> str:
    """A few lines for the terminal."""
    t, meta = report["totals"], report["meta"]
    lines = [f"{len(report['layers'])} synaptic layers, T={meta['T']}, {meta['samples']} "
             f"sample(s); per inference: {_num(t['synops'])} synops (AC), {_num(t['macs'])} "
             f"MACs, {_num(t['spikes'])} spikes, {_num(t['neuron_updates'])} neuron updates; "
             f"dense ANN {_num(t['dense_ops'])} ops"]
    for name, e in report["energy"].items():
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.3g}x"
        lines.append(f"  {name:<16} SNN {_joules(e['snn']):>10}   ANN {_joules(e['ann']):>10}"
                     f"   ANN/SNN {ratio}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder + ``os.replace``."""
    path = Path(path)
    with atomic_file(path, fsync=True) as fh:
        fh.write(data)
    return path


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(report: Mapping, path: str | Path) -> Path:
    text = json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode())


def _figure_png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_layers(report: Mapping) -> bytes:
    """PNG: per-layer event-driven ops (AC / MAC stacked) and per-layer SNN energy per model."""
    from matplotlib.figure import Figure

    names = [layer["name"] for layer in report["layers"]]
    xs = range(len(names))
    fig = Figure(figsize=(max(6.0, 0.7 * len(names) + 3), 7.5))
    ax_ops, ax_e = fig.subplots(2, 1, sharex=True)
    synops = [layer["synops"] for layer in report["layers"]]
    macs = [layer["macs"] for layer in report["layers"]]
    ax_ops.bar(xs, synops, label="synops (AC)", color="tab:blue")
    ax_ops.bar(xs, macs, bottom=synops, label="MACs (non-binary input)", color="tab:orange")
    ax_ops.set_ylabel("operations / inference")
    ax_ops.set_title("Synaptic operations per layer")
    ax_ops.legend(fontsize=8)
    models = list(report["energy"])
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        values = [max(layer["energy"][model]["snn"], 1e-30) for layer in report["layers"]]
        ax_e.bar([x - 0.4 + width * (i + 0.5) for x in xs], values, width=width, label=model)
    if models:
        ax_e.set_yscale("log")
        ax_e.legend(fontsize=7, ncol=2)
    ax_e.set_ylabel("SNN energy / inference [J]")
    ax_e.set_title("SNN energy per layer (neuron updates and spikes included)")
    ax_e.set_xticks(list(xs))
    ax_e.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    return _figure_png(fig)


def plot_models(report: Mapping) -> bytes:
    """PNG: SNN vs ANN-equivalent energy per inference for every hardware model (log scale)."""
    from matplotlib.figure import Figure

    models = list(report["energy"])
    fig = Figure(figsize=(max(6.0, 1.1 * len(models) + 2), 4.5))
    ax = fig.subplots()
    xs = range(len(models))
    snn = [max(report["energy"][m]["snn"], 1e-30) for m in models]
    ann = [max(report["energy"][m]["ann"], 1e-30) for m in models]
    ax.bar([x - 0.2 for x in xs], snn, width=0.4, label="SNN", color="tab:blue")
    ax.bar([x + 0.2 for x in xs], ann, width=0.4, label="ANN equivalent", color="tab:gray")
    for x, m in zip(xs, models):
        ratio = report["energy"][m]["ratio"]
        if ratio is not None:
            ax.annotate(f"{ratio:.2g}x", (x, max(snn[x], ann[x])), ha="center", va="bottom",
                        fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("energy / inference [J]")
    ax.set_title("SNN vs ANN equivalent per hardware model (label: ANN/SNN)")
    ax.legend(fontsize=8)
    return _figure_png(fig)


REPORT_FILES = {"json": "energy.json", "markdown": "energy.md", "layers_png": "energy_layers.png",
                "models_png": "energy_models.png"}


def write_report(report: Mapping, directory: str | Path) -> dict[str, Path]:
    """Write energy.json, energy.md, energy_layers.png and energy_models.png into ``directory``
    (created if needed), each atomically; returns {kind: path}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {"json": write_json(report, directory / REPORT_FILES["json"])}
    out["markdown"] = atomic_write_bytes(directory / REPORT_FILES["markdown"],
                                         to_markdown(report).encode())
    out["layers_png"] = atomic_write_bytes(directory / REPORT_FILES["layers_png"],
                                           plot_layers(report))
    out["models_png"] = atomic_write_bytes(directory / REPORT_FILES["models_png"],
                                           plot_models(report))
    return out
