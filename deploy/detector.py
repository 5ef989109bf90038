"""The deployable EMS-YOLO detector on a chip: a spiking part with two outputs, a readout off it.

What runs where (``pipeline/ems.py``, ``deployable=True``)::

    on chip    stem -> backbone (4 stages) -> neck {reduce -> p5 ; p4 on the stride-16 map}
               every signal between layers is binary spikes: one NIR graph, two Output nodes
               (``output_p4``, ``output_p5``) carrying the P4 and P5 spike maps
    off chip   Detect: per level l, a 1x1 convolution with bias on the spike map at every step,
               averaged over the T steps (``readout.npz``), then YOLOv5 decoding and NMS

The readout equation (level ``l``, sample ``n``, anchor ``a``, output ``o`` of ``O = 5 +
classes``, cell ``(y, x)``; ``s_l[t]`` the spikes the graph's Output node ``l`` emits; ``r_l``
the level's ``readout_start``)::

    raw_l[n, a, y, x, o] = b_l[a O + o] + sum_c W_l[a O + o, c] * (1/T) sum_{t = r_l}^{r_l + T - 1}
                                                                    s_l[t, n, c, y, x]

(a convolution is linear, so the mean over T of the per-step convolution equals one
convolution of the mean spike map: a host evaluates it once per inference on the spike
counts).  Decoding (``pipeline.detection.decode``) with ``anchors_l`` and ``stride_l``::

    xy = (2 sigmoid(raw_xy) - 0.5 + cell) * stride_l     wh = (2 sigmoid(raw_wh))^2 * anchor
    score = sigmoid(raw_obj) * sigmoid(raw_cls)

Timing.  ``ideal``: ``r_l = 0`` and the graph runs ``T`` steps.  ``loihi`` (``--timing
loihi``): every synaptic hop is one step (``Delay`` nodes in the graph, as for classifiers), the
input is padded with ``input_pad_steps`` zero frames (P5's depth) and ``r_l`` is level ``l``'s
depth in hops (``SpikingDetector.level_latency``: P4 is shallower than P5), so each level's
readout averages the ``T`` steps in which its neurons see input steps ``0 .. T - 1``.  The
windows are in ``readout.npz`` (``readout_start``, ``input_pad_steps``) and the graph's metadata
(``readout_starts``).

The readout is off-chip because its output is real-valued with a bias (a score, not a spike)
and it is read once per inference; its input is spikes, so a chip *could* accumulate it, but
EMS-YOLO's Detect and its energy convention treat it as a dense MAC layer.

The published (non-deployable) detector passes real-valued membrane potentials between blocks
(and max-pools them); binary-spike cores cannot send those, so it is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import torch
import torch.nn.functional as F

from spikeline.errors import BadInput, ExportUnsupported, SpikelineError
from spikeline.pipeline.detection import CONF_THRESHOLD, MAX_DET, NMS_IOU, Anchors, decode, nms
from spikeline.pipeline.models import encode_frames
from spikeline.pipeline.timing import pad_steps

from .artifact import GraphTiming
from .nir_check import DT
from .simulate import simulate
from .to_nir import Export, _Exporter, reset_metadata

__all__ = ["LEVELS", "READOUT_EQUATION", "check_deployable", "detector_to_nir",
           "detector_timing", "readout_arrays", "Readout", "load_readout",
           "readout_raw", "reference_features", "deployed_detections"]

LEVELS = ("p4", "p5")
READOUT_FILE = "readout.npz"
READOUT_EQUATION = ("raw_l[n,a,y,x,o] = b_l[a*O+o] + sum_c W_l[a*O+o,c] * mean_t "
                    "s_l[t,n,c,y,x]  (O = 5 + classes; s_l = spikes of the graph's Output node "
                    "of level l; t over [readout_start_l, T + readout_start_l), T the input "
                    "steps before padding)")
DECODE_EQUATION = ("xy = (2 sigmoid(raw_xy) - 0.5 + cell) * stride_l; wh = (2 sigmoid(raw_wh))^2 "
                   "* anchor; score = sigmoid(raw_obj) * sigmoid(raw_cls); then per-class NMS")


def check_deployable(model) -> None:
    """Refuse the published detector: its blocks pass membrane potentials, not spikes."""
    if not getattr(model, "deployable", False):
        raise ExportUnsupported(
            "the published EMS-YOLO detector (deployable=False) passes real-valued membrane "
            "potentials between blocks (membrane shortcuts, max pooling and concatenation of "
            "real values), which cannot travel between the cores of a binary-spike chip; train "
            "the deployable form (model spec \"deployable\": true: spikes between every block, "
            "strided 1x1 shortcut convolutions) and export that")


def detector_to_nir(folded, input_shape: tuple[int, int, int],
                    metadata: dict | None = None) -> Export:
    """The spiking part of a folded deployable detector as one NIR graph whose two Output
    nodes carry the P4 and P5 spike maps (``metadata['output_nodes']`` in level order)."""
    check_deployable(folded)
    timing = getattr(folded, "timing", "ideal")
    ex = _Exporter()
    inp = ex.b.add("input", nir.Input(input_type={"input": np.array(input_shape)}), [])
    # under loihi timing, the input's hop into the stem's synapse
    sources = ex.delay([inp], tuple(input_shape), int(timing == "loihi"))
    sources, shape = ex.module(folded.stem, sources, tuple(input_shape))
    maps = []
    for stage in folded.backbone:
        sources, shape = ex.module(stage, sources, shape)
        maps.append((sources, shape))
    (s16, shape16), (s32, shape32) = maps[-2], maps[-1]
    top, top_shape = ex.module(folded.neck["reduce"], s32, shape32)
    p5, shape5 = ex.module(folded.neck["p5"], top, top_shape)
    p4, shape4 = ex.module(folded.neck["p4"], s16, shape16)
    outs = [ex.b.add(f"output_{level}", nir.Output(output_type={"output": np.array(s)}), src)
            for level, src, s in (("p4", p4, shape4), ("p5", p5, shape5))]
    meta = {"dt": DT, "input_encoding": folded.encoding, "output_nodes": outs,
            "output_node": outs[0], **detector_timing(folded), **reset_metadata(ex.b.resets),
            "readout": f"off-chip ({READOUT_FILE}): {READOUT_EQUATION}", **(metadata or {})}
    return Export(nir.NIRGraph(nodes=ex.b.nodes, edges=ex.b.edges, metadata=meta),
                  ex.b.modules)


def detector_timing(model) -> dict:
    """How the detector's graph is run (``SpikingDetector``): ``timing``, ``latency_steps``
    (hops to P5), ``level_latency_steps`` (hops to each level), ``input_pad_steps`` (zero
    frames after the ``T`` input steps) and ``readout_starts`` (per level, the first of the
    ``T`` steps its readout averages)."""
    return {"timing": getattr(model, "timing", "ideal"), "latency_steps": int(model.latency),
            "level_latency_steps": dict(zip(LEVELS, map(int, model.level_latency))),
            "input_pad_steps": int(model.input_pad_steps),
            "readout_starts": dict(zip(LEVELS, map(int, model.readout_starts)))}


def readout_arrays(folded, graph: nir.NIRGraph) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays for readout.npz, its description for metadata.json)``."""
    head = folded.head
    outs = list(GraphTiming.of(graph).output_nodes)
    arrays = {"levels": np.array(LEVELS), "input_nodes": np.array(outs),
              "strides": np.array(head.anchors.strides, dtype=np.int64),
              "anchors": np.array(head.anchors.sizes, dtype=np.float64),
              "num_classes": np.array(head.num_classes, dtype=np.int64),
              "readout_start": np.array(folded.readout_starts, dtype=np.int64),
              "input_pad_steps": np.array(folded.input_pad_steps, dtype=np.int64)}
    levels = []
    for level, conv, out, start in zip(LEVELS, head.convs, outs, folded.readout_starts):
        weight = conv.weight.detach().cpu().numpy().astype(np.float32)[:, :, 0, 0]
        arrays[f"weight_{level}"] = weight
        arrays[f"bias_{level}"] = conv.bias.detach().cpu().numpy().astype(np.float32)
        c, h, w = (int(v) for v in graph.nodes[out].output_type["output"])
        source = next(src for src, dst in graph.edges if dst == out)
        levels.append({"level": level, "input_node": out, "source_node": source,
                       "in_channels": c, "out_channels": int(weight.shape[0]), "height": h,
                       "width": w, "readout_start": int(start)})
    meta = {"file": READOUT_FILE, "where": "off-chip (host): real-valued output with a bias",
            "equation": READOUT_EQUATION, "decode": DECODE_EQUATION,
            "anchors": [[list(map(float, a)) for a in lv] for lv in head.anchors.sizes],
            "strides": list(head.anchors.strides), "num_classes": int(head.num_classes),
            "outputs_per_anchor": int(head.outputs), "levels": levels,
            "input_pad_steps": int(folded.input_pad_steps),
            "window": "per level: steps [readout_start, T + readout_start) of the graph's "
                      "T + input_pad_steps",
            "nms": {"conf": 0.001, "iou": 0.6}}
    return arrays, meta


@dataclass(frozen=True)
class Readout:
    """The off-chip Detect stage read from ``readout.npz``."""

    input_nodes: tuple[str, ...]
    weights: tuple[torch.Tensor, ...]  # [A*O, C] per level
    biases: tuple[torch.Tensor, ...]
    anchors: object  # pipeline.detection.Anchors
    num_classes: int
    starts: tuple[int, ...] = ()  # per level, the first step averaged (empty: all 0)
    pad_steps: int = 0  # zero frames the graph's input carries after the T input steps

    def window(self, spikes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level, the ``T`` steps its readout averages, ``[start_l, T + start_l)``, of
        ``[T + pad_steps, N, ...]`` spike maps."""
        steps = spikes[0].shape[0] - self.pad_steps
        if steps < 1:
            raise BadInput(f"the readout needs more than its {self.pad_steps} padding steps; "
                           f"got {spikes[0].shape[0]} steps")
        starts = self.starts or (0,) * len(spikes)
        return [h[s:s + steps] for h, s in zip(spikes, starts)]

    def raw(self, spikes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level ``[T + pad_steps, N, C, H, W]`` spikes -> ``[N, A, H, W, O]`` raw outputs,
        each level averaged over its window (the same operations as
        ``SpikingDetector.readout_window`` + ``pipeline.detection.Detect``, so the result is
        bit for bit theirs)."""
        out = []
        a, o = self.anchors.per_level, 5 + self.num_classes
        for w, b, h in zip(self.weights, self.biases, self.window(spikes)):
            steps, n = h.shape[:2]
            y = F.conv2d(h.flatten(0, 1).float().contiguous(), w[:, :, None, None], b)
            y = y.unflatten(0, (steps, n)).mean(0)
            out.append(y.view(n, a, o, *y.shape[-2:]).permute(0, 1, 3, 4, 2).contiguous())
        return out


def load_readout(path) -> Readout:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        anchors = Anchors(tuple(tuple((float(w), float(h)) for w, h in lv)
                                for lv in data["anchors"]),
                          tuple(int(s) for s in data["strides"]))
        levels = [str(v) for v in data["levels"]]
        weights = tuple(torch.from_numpy(np.asarray(data[f"weight_{lv}"], np.float32))
                        for lv in levels)
        biases = tuple(torch.from_numpy(np.asarray(data[f"bias_{lv}"], np.float32))
                       for lv in levels)
        nc = int(data["num_classes"])
        inputs = tuple(str(v) for v in data["input_nodes"])
        starts = tuple(int(v) for v in data["readout_start"]) if "readout_start" in data \
            else (0,) * len(levels)
        pad = int(data["input_pad_steps"]) if "input_pad_steps" in data else 0
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise BadInput(f"{path}: not a readable detector readout ({type(err).__name__}: "
                       f"{err})") from None
    for lv, w, b in zip(levels, weights, biases):
        if w.ndim != 2 or b.shape != (w.shape[0],) or w.shape[0] != anchors.per_level * (5 + nc):
            raise BadInput(f"{path}: level {lv}: weight {tuple(w.shape)} and bias "
                           f"{tuple(b.shape)} do not make {anchors.per_level} x (5 + {nc}) "
                           "outputs")
        if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise BadInput(f"{path}: level {lv} holds NaN or Inf")
    if len(inputs) != len(levels):
        raise BadInput(f"{path}: {len(inputs)} input nodes for {len(levels)} levels")
    if len(starts) != len(levels) or min(starts, default=0) < 0 or pad < 0 or \
            max(starts, default=0) > pad:
        raise BadInput(f"{path}: readout_start {list(starts)} and input_pad_steps {pad}: "
                       f"expected one start per level ({len(levels)}), each in [0, {pad}]")
    return Readout(inputs, weights, biases, anchors, nc, starts, pad)


def reference_features(model, x_nt: torch.Tensor):
    """``([P4, P5] spikes [T + input_pad_steps, N, ...], raw head outputs)`` of the folded
    reference network."""
    with torch.no_grad():
        features = model.features(x_nt)
        return features, model.head(model.readout_window(features))


def readout_raw(graph: nir.NIRGraph, readout: Readout, x: torch.Tensor, mode: str = "loihi",
                sim=None):
    """``(simulation, raw outputs)``: the graph simulated on ``x [T + input_pad_steps, N, ...]``
    (padded already) and the off-chip readout applied to the Output nodes it names."""
    if sim is None:
        sim = simulate(graph, x, mode=mode)
    missing = [n for n in readout.input_nodes if n not in sim.outputs]
    if missing:
        raise SpikelineError(f"the readout reads nodes {missing}, which the graph does not have")
    return sim, readout.raw([sim.outputs[n] for n in readout.input_nodes])


def deployed_detections(graph, readout: Readout, frames_nt: torch.Tensor, encoding: str,
                        conf: float | None = None, iou: float | None = None) -> list[torch.Tensor]:
    """NMS'd ``[k, 6]`` rows per sample of the deployed detector on ``[N, T, C, H, W]``
    (``conf``/``iou`` default to what the trained network is scored with)."""
    pad = GraphTiming.of(graph).input_pad_steps
    if pad != readout.pad_steps:
        raise BadInput(f"the graph's input_pad_steps ({pad}) and the readout's "
                       f"({readout.pad_steps}) differ: they come from different exports")
    x = pad_steps(encode_frames(frames_nt.float().transpose(0, 1), encoding), pad)
    _, raw = readout_raw(graph, readout, x)
    return nms(decode(raw, readout.anchors), CONF_THRESHOLD if conf is None else conf,
               NMS_IOU if iou is None else iou, MAX_DET)
