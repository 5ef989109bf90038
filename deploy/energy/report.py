"""Energy report: JSON (every count and energy), a Markdown summary and PNG charts.

:func:`build_report` turns :class:`~.counts.EnergyCounts` and a list of
:class:`~.conventions.EnergyEstimate` (one per convention and hardware model) into one
JSON-ready dict:

- ``layers``: one entry per synaptic node: ``name``, ``op``, ``synops``, ``macs``,
  ``neuron_updates``, ``spikes`` and extras (``input_events``, ``firing_rate``,
  ``binary_fraction``, ``connections``, ``dense_ops``, ``dense_op_kind``, ``neurons``,
  ``active_neuron_updates``, ``shortcut_adds``, ``neuron_nodes``, shapes), ``energy``
  {estimate key: {snn, ann, snn_compute, snn_memory, ann_compute, ann_memory,
  break_even_rate}} and ``snn_J`` / ``ann_J`` / ``break_even_rate`` of the primary estimate;
- ``totals``: the same counts summed (``dense_ops`` split into ``ann_macs`` / ``ann_adds``);
- ``neurons``: one entry per neuron node;
- ``energy``: {estimate key: entry}, the key being the hardware model's name for the ``event``
  convention and ``CONVENTION/MODEL`` otherwise; each entry states its ``convention`` and
  ``hardware``, ``snn`` and ``ann`` as ``{compute_J, memory_J, total_J}``, ``ratio`` (ANN /
  SNN), ``break_even_rate``, ``measured`` (false: assumed prices, "not measured"),
  ``ann_hardware``, ``breakdown`` and ``notes``;
- ``refused``: {estimate key: reason} for pricings a model refuses (graded events on Loihi 1);
- top level, for the primary (first) estimate: ``convention``, ``hardware``, ``snn``, ``ann``,
  ``break_even_rate``;
- ``meta``: T, samples, fan-out mode, counting conventions and whatever the caller adds;
- ``readout`` (detectors only, :mod:`.readout`): the off-chip Detect readout's MACs per level,
  listed apart from the spiking part, and per estimate key its price and the SNN / ANN totals
  and ratio with it.

Every file is written atomically.  Charts are drawn with matplotlib's Agg canvas.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

from spikeline.atomic import atomic_file

from .conventions import EnergyEstimate
from .counts import EnergyCounts
from .hardware import HardwareModel

LAYER_KEYS = ("name", "op", "synops", "macs", "neuron_updates", "spikes", "input_events",
              "firing_rate", "binary_fraction", "connections", "dense_ops", "dense_op_kind",
              "neurons", "active_neuron_updates", "shortcut_adds", "dense_shortcut_adds",
              "first_layer")

CONVENTIONS = (
    "Counts are per inference: summed over T steps, averaged over the samples.",
    "synops = accumulates: nonzero binary ({-1,0,1}) inputs x exact fan-out (borders, stride, "
    "padding included); macs = the same for steps whose input is not binary (NeuroBench rule, "
    "per sample and step). With --fanout nonzero the counts equal NeuroBench's Effective "
    "ACs/MACs; the default structural fan-out counts every synapse (Sinabs).",
    "SumPool2d/AvgPool2d count as synaptic layers (NeuroBench does not count pooling).",
    "dense ANN ops are counted once per inference (FLOPs_conv = k^2 H_out W_out C_in/groups "
    "C_out, FLOPs_fc = in*out; pooling adds priced as ACs).",
    "event convention, CMOS rows: arithmetic only on both sides (no memory), which favours "
    "the SNN. Chip rows: per-event figures are all-in; their ANN is priced with memory "
    "(Lemaire model on the ann_baseline CMOS model), so the ratio is like for like.",
    "ems convention: EMS-YOLO Eq. 6, T * (fr * E_AC * FLOPs) per spike layer, T * E_MAC * FLOPs "
    "for the first layer and non-spike inputs; ANN = E_MAC * FLOPs.",
    "lemaire convention: ops + addressing + SRAM memory (Lemaire et al. 2022) for SNN and ANN "
    "alike; break_even_rate = the uniform spike rate below which the SNN wins.",
    "Models marked 'not measured' use assumed per-operation prices (Loihi 2 publishes none).",
)


def estimate_key(est: EnergyEstimate) -> str:
    """``MODEL`` for the event convention (as before conventions existed), else
    ``CONVENTION/MODEL``."""
    return est.model if est.convention == "event" else f"{est.convention}/{est.model}"


def _model_entry(est: EnergyEstimate, model: HardwareModel | None) -> dict:
    entry = {"convention": est.convention, "hardware": est.model,
             "snn": est.snn.to_dict(), "ann": est.ann.to_dict(), "ratio": est.ratio,
             "break_even_rate": est.break_even_rate, "measured": est.measured,
             "label": "" if est.measured else "not measured",
             "ann_hardware": est.ann_hardware, "breakdown": dict(est.breakdown),
             "notes": list(est.notes)}
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
                 meta: Mapping | None = None,
                 refused: Mapping[str, str] | None = None,
                 readout: Mapping | None = None) -> dict:
    """JSON-ready report of ``counts`` priced by ``estimates`` (see module docstring); the
    first estimate is the primary one (top-level fields, per-layer ``snn_J`` / ``ann_J``)."""
    models = models or {}
    primary = estimates[0] if estimates else None
    layers = []
    for layer in counts.layers:
        entry = {key: getattr(layer, key) for key in LAYER_KEYS}
        entry["neuron_nodes"] = list(layer.neuron_nodes)
        entry["input_shape"] = list(layer.input_shape)
        entry["output_shape"] = list(layer.output_shape)
        entry["energy"] = {}
        for est in estimates:
            le = est.layers[layer.name]
            entry["energy"][estimate_key(est)] = {
                "snn": le.snn.total, "ann": le.ann.total, "snn_compute": le.snn.compute,
                "snn_memory": le.snn.memory, "ann_compute": le.ann.compute,
                "ann_memory": le.ann.memory, "break_even_rate": le.break_even_rate}
        if primary is not None:
            le = primary.layers[layer.name]
            entry.update({"snn_J": le.snn.total, "ann_J": le.ann.total,
                          "snn": le.snn.to_dict(), "ann": le.ann.to_dict(),
                          "break_even_rate": le.break_even_rate})
        layers.append(entry)
    totals = counts.totals()
    totals["dense_ops"] = totals["ann_macs"] + totals["ann_adds"]
    totals["network_input_events"] = counts.network_input_events
    neurons = [{"name": n.name, "op": n.op, "layer": n.layer, "neurons": n.neurons,
                "neuron_updates": n.updates, "active_neuron_updates": n.active_updates,
                "spikes": n.spikes, "spiking": n.spiking, "firing_rate": n.firing_rate}
               for n in counts.neuron_nodes]
    energy = {estimate_key(est): _model_entry(est, models.get(est.model)) for est in estimates}
    report_meta = {"T": counts.T, "samples": counts.samples, "fanout": counts.fanout,
                   "latency_steps": counts.latency_steps,
                   "units": {"energy": "J per inference", "counts": "per inference"},
                   "conventions": list(CONVENTIONS)}
    report_meta.update(dict(meta or {}))
    report = {"meta": report_meta, "layers": layers, "totals": totals, "neurons": neurons,
              "energy": energy, "refused": dict(refused or {})}
    if readout is not None:
        report["readout"] = dict(readout)
    if primary is not None:
        report.update({"convention": primary.convention, "hardware": primary.model,
                       "snn": primary.snn.to_dict(), "ann": primary.ann.to_dict(),
                       "break_even_rate": primary.break_even_rate,
                       "measured": primary.measured})
    return report


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


def _rate(value) -> str:
    if value is None:
        return "never"
    if math.isinf(value):
        return "any"
    return f"{100 * value:.2f}%" if value <= 1 else f"> 100% ({100 * value:.0f}%)"


def _label(e: Mapping) -> str:
    return "" if e.get("measured", True) else " (not measured)"


def to_markdown(report: Mapping) -> str:
    """A Markdown summary: per-layer count table with totals, energy per convention and model."""
    meta = report["meta"]
    lines = ["# Spike energy report", ""]
    source = meta.get("model")
    if source:
        lines.append(f"Model: `{source}`  ")
    lines += [f"T = {meta['T']} steps, {meta['samples']} sample(s), fan-out: {meta['fanout']}. "
              "Counts per inference.", ""]
    lines += ["| layer | op | input rate | synops (AC) | MACs | shortcut adds | dense ANN ops | "
              "neuron updates | spikes |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for layer in report["layers"]:
        lines.append(f"| {layer['name']} | {layer['op']} | {layer['firing_rate']:.4f} | "
                     f"{_num(layer['synops'])} | {_num(layer['macs'])} | "
                     f"{_num(layer['shortcut_adds'])} | "
                     f"{_num(layer['dense_ops'])} | {_num(layer['neuron_updates'])} | "
                     f"{_num(layer['spikes'])} |")
    t = report["totals"]
    lines.append(f"| **total** | | | {_num(t['synops'])} | {_num(t['macs'])} | "
                 f"{_num(t['shortcut_adds'])} | {_num(t['dense_ops'])} | "
                 f"{_num(t['neuron_updates'])} | {_num(t['spikes'])} |")
    if "snn" in report and report["layers"] and "snn" in report["layers"][0]:
        lines += ["", f"Per layer, {report['convention']} convention on {report['hardware']}"
                  f"{'' if report.get('measured', True) else ' (not measured)'}:", "",
                  "| layer | SNN compute | SNN memory | ANN compute | ANN memory | "
                  "break-even rate |", "|---|---:|---:|---:|---:|---:|"]
        for layer in report["layers"]:
            be = _rate(layer["break_even_rate"]) if report["convention"] == "lemaire" else "-"
            lines.append(f"| {layer['name']} | {_joules(layer['snn']['compute_J'])} | "
                         f"{_joules(layer['snn']['memory_J'])} | "
                         f"{_joules(layer['ann']['compute_J'])} | "
                         f"{_joules(layer['ann']['memory_J'])} | {be} |")
    lines += ["", "| convention | hardware | SNN compute | SNN memory | SNN total | ANN total "
              "(priced on) | ANN / SNN | break-even rate |",
              "|---|---|---:|---:|---:|---|---:|---:|"]
    for e in report["energy"].values():
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.3g}x"
        be = _rate(e["break_even_rate"]) if e["convention"] == "lemaire" else "-"
        lines.append(f"| {e['convention']} | {e['hardware']}{_label(e)} | "
                     f"{_joules(e['snn']['compute_J'])} | {_joules(e['snn']['memory_J'])} | "
                     f"{_joules(e['snn']['total_J'])} | {_joules(e['ann']['total_J'])} "
                     f"({e['ann_hardware']}) | {ratio} | {be} |")
    if "readout" in report:
        r = report["readout"]
        lines += ["", f"Off-chip readout (Detect, {r['where']}): "
                  + ", ".join(f"{lv['level']} {_num(lv['macs'])} MACs on "
                              f"{lv['in_channels']}x{lv['height']}x{lv['width']} spikes"
                              for lv in r["levels"]), "",
                  "| convention | hardware | readout (SNN side) | readout (ANN side) | "
                  "SNN + readout | ANN (whole architecture) | ANN / SNN |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for key, e in r["energy"].items():
            ratio = "-" if e["ratio"] is None else f"{e['ratio']:.3g}x"
            conv, _, hw = key.rpartition("/")
            lines.append(f"| {conv or 'event'} | {hw} | {_joules(e['readout_snn_J'])} | "
                         f"{_joules(e['readout_ann_J'])} | {_joules(e['snn_total_J'])} | "
                         f"{_joules(e['ann_total_J'])} | {ratio} |")
    for key, why in report.get("refused", {}).items():
        lines.append(f"| refused | {key} | | | | | | |")
        lines.append("")
        lines.append(f"{key}: {why}")
    lines += ["", "Notes:"] + [f"- {c}" for c in meta.get("conventions", [])]
    return "\n".join(lines) + "\n"


def summary_text(report: Mapping) -> str:
    """A few lines for the terminal: counts, then SNN and ANN per convention and model."""
    t, meta = report["totals"], report["meta"]
    lines = [f"{len(report['layers'])} synaptic layers, T={meta['T']}, {meta['samples']} "
             f"sample(s); per inference: {_num(t['synops'])} synops (AC), {_num(t['macs'])} "
             f"MACs, {_num(t['spikes'])} spikes, {_num(t['neuron_updates'])} neuron updates; "
             f"dense ANN {_num(t['dense_ops'])} ops"]
    for key, e in report["energy"].items():
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.3g}x"
        extra = (f"   break-even rate {_rate(e['break_even_rate'])}"
                 if e["convention"] == "lemaire" else "")
        lines.append(f"  {key + _label(e):<30} SNN {_joules(e['snn']['total_J']):>10} "
                     f"(memory {_joules(e['snn']['memory_J'])})   ANN "
                     f"{_joules(e['ann']['total_J']):>10}   ANN/SNN {ratio}{extra}")
    if "readout" in report:
        r = report["readout"]
        lines.append(f"off-chip readout (Detect, not in the graph): {_num(r['macs'])} MACs + "
                     f"{_num(r['bias_adds'])} bias adds on {_num(r['input_spikes'])} input "
                     "spikes; with it (SNN = spiking part + readout, ANN = whole architecture):")
        for key, e in r["energy"].items():
            ratio = "-" if e["ratio"] is None else f"{e['ratio']:.3g}x"
            lines.append(f"  {key:<30} readout {_joules(e['readout_snn_J']):>10}   SNN "
                         f"{_joules(e['snn_total_J']):>10}   ANN {_joules(e['ann_total_J']):>10}"
                         f"   ANN/SNN {ratio}")
    for key, why in report.get("refused", {}).items():
        lines.append(f"  {key:<30} refused: {why}")
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


def json_text(report: Mapping) -> str:
    """The report as JSON text (non-finite numbers refused, numpy values as plain ones)."""
    return json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n"


def write_json(report: Mapping, path: str | Path) -> Path:
    return atomic_write_bytes(path, json_text(report).encode())


def _figure_png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib, 0.9 s (measured)

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_layers(report: Mapping) -> bytes:
    """PNG: per-layer event-driven ops (AC / MAC stacked) and, for the primary estimate, per
    layer SNN and ANN energy stacked into compute and memory (:func:`layers_figure`)."""
    return _figure_png(layers_figure(report))


def layers_figure(report: Mapping):
    """The ``matplotlib.figure.Figure`` of :func:`plot_layers`."""
    from matplotlib.figure import Figure  # lazy: matplotlib, 0.9 s (measured)

    layers = report["layers"]
    names = [layer["name"] for layer in layers]
    xs = list(range(len(names)))
    fig = Figure(figsize=(max(6.0, 0.8 * len(names) + 3), 7.5))
    ax_ops, ax_e = fig.subplots(2, 1, sharex=True)
    synops = [layer["synops"] for layer in layers]
    macs = [layer["macs"] for layer in layers]
    ax_ops.bar(xs, synops, label="synops (AC)", color="tab:blue")
    ax_ops.bar(xs, macs, bottom=synops, label="MACs (non-binary input)", color="tab:orange")
    ax_ops.set_ylabel("operations / inference")
    ax_ops.set_title("Synaptic operations per layer")
    ax_ops.legend(fontsize=8)
    if "snn" in report and layers and "snn" in layers[0]:
        key = report["hardware"] if report["convention"] == "event" else \
            f"{report['convention']}/{report['hardware']}"
        label = _label(report["energy"].get(key, {"measured": report.get("measured", True)}))
        w = 0.38
        snn_c = [layer["snn"]["compute_J"] for layer in layers]
        snn_m = [layer["snn"]["memory_J"] for layer in layers]
        ann_c = [layer["ann"]["compute_J"] for layer in layers]
        ann_m = [layer["ann"]["memory_J"] for layer in layers]
        left = [x - w / 2 for x in xs]
        right = [x + w / 2 for x in xs]
        ax_e.bar(left, snn_c, w, label="SNN compute", color="tab:blue")
        ax_e.bar(left, snn_m, w, bottom=snn_c, label="SNN memory", color="lightsteelblue")
        ax_e.bar(right, ann_c, w, label="ANN compute", color="dimgray")
        ax_e.bar(right, ann_m, w, bottom=ann_c, label="ANN memory", color="silver")
        ax_e.set_ylabel("energy / inference [J]")
        ax_e.set_title(f"Per layer, {report['convention']} convention on "
                       f"{report['hardware']}{label}: compute + memory")
        ax_e.legend(fontsize=7, ncol=2)
    ax_e.set_xticks(xs)
    ax_e.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    return fig


def plot_models(report: Mapping) -> bytes:
    """PNG: SNN vs ANN energy per inference for every convention and model (log scale), SNN
    bars stacked compute + memory; assumed prices labelled "not measured"."""
    from matplotlib.figure import Figure  # lazy: matplotlib, 0.9 s (measured)

    keys = list(report["energy"])
    fig = Figure(figsize=(max(6.0, 1.1 * len(keys) + 2), 4.8))
    ax = fig.subplots()
    xs = range(len(keys))
    tiny = 1e-30
    e = report["energy"]
    snn_c = [max(e[k]["snn"]["compute_J"], tiny) for k in keys]
    snn_m = [e[k]["snn"]["memory_J"] for k in keys]
    ann = [max(e[k]["ann"]["total_J"], tiny) for k in keys]
    ax.bar([x - 0.2 for x in xs], snn_c, width=0.4, label="SNN compute", color="tab:blue")
    ax.bar([x - 0.2 for x in xs], snn_m, width=0.4, bottom=snn_c, label="SNN memory",
           color="lightsteelblue")
    ax.bar([x + 0.2 for x in xs], ann, width=0.4, label="ANN (same model)", color="tab:gray")
    for x, k in zip(xs, keys):
        ratio = e[k]["ratio"]
        if ratio is not None:
            ax.annotate(f"{ratio:.2g}x", (x, max(snn_c[x] + snn_m[x], ann[x])), ha="center",
                        va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([k + ("\n(not measured)" if not e[k].get("measured", True) else "")
                        for k in keys], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("energy / inference [J]")
    ax.set_title("SNN vs ANN of the same architecture (label: ANN/SNN)")
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
