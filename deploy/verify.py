"""The certificate: every exported artifact spikes exactly like the trained network.

Reference: the folded, quantized network (``folded.pt``), run by the training code.  Backends:

- ``nir``: ``model.nir`` in our simulator, Loihi fixed point: every neuron node's spikes (and
  the readout's voltage) must equal the reference's, node by node.
- ``lava``: in Lava (``Loihi2SimCfg(select_tag='fixed_pt')``), in a subprocess: ``model.net``
  through netx when the export has one (sequential nets), else the process graph that
  ``to_lava`` builds from ``model.nir`` (residual nets trained with ``--timing loihi``).  Every
  layer's spikes and the readout voltage must equal the reference's; ``path`` says which ran.
- detectors (``deploy/detector.py``): the spiking part's every neuron node as above, plus each
  Output node (P4, P5: what leaves the chip) against the folded network's features, and the
  off-chip readout (``readout.npz``) applied to the simulated outputs against the folded
  network's Detect outputs, entry for entry (``readout_p4``, ``readout_p5`` in ``per_node``).
  A wrong wire into an Output node or a changed readout weight shows up there.  On ``lava``
  (a detector exported with ``--timing loihi``) the same: every neuron node, both Output nodes
  (their source neurons' spikes in Lava) and the readout applied to them.
- ``spikingjelly``, ``snntorch``: their NIR importers.  They implement NIR's float semantics,
  not Loihi's fixed point, so they are held to our simulator in ``mode='float'`` on the same
  (peer-lowered) graph, last spiking population compared.  How far float semantics drift from
  the fixed point is reported as ``float_vs_fixed``: information, not a failure.
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nir
import numpy as np
import torch

from spikeline.errors import BadInput, ExportUnsupported, SpikelineError

from .artifact import GraphTiming
from .detector import LEVELS, encode_input, load_readout, reference_features
from .export import load_folded
from .lava_run import run_graph, run_netx
from .peers import FIRES_AT_THRESHOLD, PEERS, PeerUnsupported, lower_for_peers, run_peer
from .simulate import graph_dt, simulate
from .to_netx import netx_layer_modules

BACKENDS = ("nir", "lava", *PEERS)


@dataclass
class BackendResult:
    """Mismatching entries of one backend against its reference, per node and in total."""

    backend: str
    status: str  # ok | mismatch | skipped | error
    reference: str = ""
    compared: int = 0
    mismatches: int = 0
    per_node: dict[str, int] = field(default_factory=dict)
    note: str = ""
    path: str = ""  # lava: which artifact ran (netx file or process graph)

    def __post_init__(self):
        if self.status not in ("ok", "mismatch", "skipped", "error"):
            raise ValueError(f"unknown status {self.status!r}")


@dataclass
class VerifyReport:
    samples: int
    steps: int
    backends: list[BackendResult]
    reference_spikes: int
    float_vs_fixed: dict[str, int] = field(default_factory=dict)

    @property
    def checked_by(self) -> list[str]:
        """The backends that ran and matched the trained network."""
        return [b.backend for b in self.backends if b.status == "ok"]

    def problems(self, allow_skip: bool = False) -> list[str]:
        """Why this report certifies nothing (empty when it does): a mismatch or error, a
        skipped backend (unless ``allow_skip``), no backend at all, or an input on which
        nothing spiked."""
        why = [f"{b.backend}: {b.status}{' (' + b.note.strip() + ')' if b.note else ''}"
               for b in self.backends
               if b.status in ("mismatch", "error") or (b.status == "skipped" and not allow_skip)]
        if not self.backends:
            why.append("no backend was requested")
        elif not self.checked_by:
            why.append("no backend ran")
        if self.reference_spikes == 0:
            why.append("nothing spiked in the reference on this input: a certificate on "
                       "silence certifies nothing")
        return why

    @property
    def ok(self) -> bool:
        """Every requested backend ran and matched, on an input that made neurons spike."""
        return not self.problems()

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checked_by": self.checked_by, "problems": self.problems(),
                "samples": self.samples, "T": self.steps,
                "reference_spikes": self.reference_spikes,
                "backends": [asdict(b) for b in self.backends],
                "float_vs_fixed_mismatches": self.float_vs_fixed}


def _compare(name: str, reference: str, pairs) -> BackendResult:
    """``pairs``: (node, ours, theirs) tensors; counts entries that differ."""
    result = BackendResult(name, "ok", reference)
    for node, ours, theirs in pairs:
        ours, theirs = torch.as_tensor(ours), torch.as_tensor(theirs)
        if ours.shape != theirs.shape:
            result.per_node[node] = ours.numel()
            result.note += f"{node}: shape {tuple(theirs.shape)} vs {tuple(ours.shape)}. "
        else:
            result.per_node[node] = int((ours.to(torch.float32) != theirs.to(torch.float32))
                                        .sum())
        result.compared += ours.numel()
    result.mismatches = sum(result.per_node.values())
    if result.mismatches:
        result.status = "mismatch"
    return result


def reference_activity(model, modules: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs ``[T, N, ...]`` of the given modules when ``model`` runs on ``x [N, T, ...]``."""
    seen = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out))
             for n, m in modules.items()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def verify_export(export_dir, frames: torch.Tensor, backends=BACKENDS,
                  lava_timeout: float = 300.0, progress=None) -> VerifyReport:
    """Check the export in ``export_dir`` on ``frames [T, N, C, H, W]`` (event counts)."""
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise BadInput(f"unknown backend(s) {sorted(unknown)}; known: {', '.join(BACKENDS)}")
    if not backends:
        raise BadInput(f"no backend given: nothing would be checked (known: {', '.join(BACKENDS)})")
    export_dir = Path(export_dir)
    model, meta, fresh = load_folded(export_dir)
    frames = torch.as_tensor(frames, dtype=torch.float32)
    detector = meta.is_detection
    # what the chip receives, [T + input_pad_steps, N, C, H, W]
    x = encode_input(model, frames.transpose(0, 1)) if detector else \
        model.network_input(frames.transpose(0, 1))
    ref = reference_activity(model, fresh.modules, frames.transpose(0, 1))
    graph = nir.read(export_dir / "model.nir")
    missing = set(fresh.modules) - set(graph.nodes)
    if missing:
        raise SpikelineError(f"{export_dir / 'model.nir'}: nodes {sorted(missing)} of the "
                             "folded model are missing: the graph does not belong to folded.pt")
    pad = GraphTiming.of(graph, str(export_dir / "model.nir")).input_pad_steps
    if pad != getattr(model, "input_pad_steps", 0):
        raise SpikelineError(f"{export_dir / 'model.nir'}: input_pad_steps {pad} but the folded "
                             f"model needs {model.input_pad_steps}: the graph does not belong to "
                             "folded.pt")
    results, float_vs_fixed = [], {}
    fixed = simulate(graph, x, mode="loihi") if "nir" in backends or set(PEERS) & set(backends) \
        else None
    for backend in backends:
        if progress:
            progress(backend)
        if backend == "nir":
            pairs = [(n, ref[n], fixed.outputs[n]) for n in ref]
            if detector:
                pairs += _detector_pairs(export_dir, model, fresh, frames, fixed.outputs)
            results.append(_compare("nir", "folded model (fixed point)", pairs))
        elif backend == "lava":
            result = _verify_lava(export_dir, model, fresh, ref, x, lava_timeout, graph,
                                  (lambda outs: _detector_pairs(export_dir, model, fresh, frames,
                                                                outs)) if detector else None)
            if detector and result.status == "skipped" and "delay" in result.note:
                result.note = ("the detector was trained with ideal timing (no step per "
                               "synaptic hop), while every Lava synapse adds one step, so its "
                               "process graph would run a different network; train it with "
                               "--timing loihi. " + result.note)
            results.append(result)
        else:
            result, drift = _verify_peer(backend, graph, x, fixed)
            results.append(result)
            float_vs_fixed.update(drift)
    spikes = int(sum(v.sum().item() for n, v in ref.items() if "lif" in n))
    return VerifyReport(x.shape[1], x.shape[0], results, spikes, float_vs_fixed)


def _detector_pairs(export_dir, model, fresh, frames, outputs: dict) -> list:
    """The Output nodes (P4, P5) and the off-chip readout against the folded detector;
    ``outputs``: the backend's signal per node name (what each Output node received)."""
    features, raw = reference_features(model, frames.transpose(0, 1))
    readout = load_readout(export_dir / "readout.npz")
    outs = list(GraphTiming.of(fresh.graph).output_nodes)  # as the graph from folded.pt names them
    pairs = [(name, ref, outputs.get(name, torch.empty(0)))
             for name, ref in zip(outs, features)]
    try:
        theirs = readout.raw([outputs[n] for n in readout.input_nodes])
    except (KeyError, RuntimeError, SpikelineError):  # nodes of the wrong shape, or none
        theirs = [torch.empty(0)] * len(raw)
    pairs += [(f"readout_{level}", ours, t) for level, ours, t in zip(LEVELS, raw, theirs)]
    return pairs


def _verify_lava(export_dir, model, fresh, ref, x, timeout, graph,
                 detector_pairs=None) -> BackendResult:
    if importlib.util.find_spec("lava") is None:
        return BackendResult("lava", "skipped", note="lava-nc / lava-dl are not installed")
    if (export_dir / "model.net").is_file():
        return _verify_netx(export_dir, model, fresh, ref, x, timeout)
    return _verify_lava_graph(export_dir, ref, x, timeout, graph, detector_pairs)


def _output_signals(graph: nir.NIRGraph, out: dict) -> dict:
    """Per Output node of ``graph``, what it receives in a Lava run ``out`` (neuron name ->
    ``[steps, N, ...]``): its source neuron's spikes, shifted by any Delay nodes between."""
    from spikeline.pipeline.timing import shift

    from .simulate import graph_dt

    dt = graph_dt(graph)
    preds = {}
    for src, dst in graph.edges:
        preds.setdefault(dst, []).append(src)
    signals = {}
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.Output):
            continue
        src, steps = (preds.get(name) or [None])[0], 0
        while src in graph.nodes and isinstance(graph.nodes[src], nir.Delay):
            steps += int(round(float(np.asarray(graph.nodes[src].delay).flat[0]) / dt))
            src = (preds.get(src) or [None])[0]
        if src in out and len(preds.get(name, [])) == 1:
            signals[name] = shift(torch.from_numpy(out[src]), steps)
    return signals


def _verify_lava_graph(export_dir, ref, x, timeout, graph, detector_pairs=None) -> BackendResult:
    """``model.nir`` as a Lava process graph (``to_lava``): every neuron node compared, and
    for a detector its Output nodes and the off-chip readout on Lava's outputs."""
    from .to_lava import lower

    reference = "folded model (fixed point)"
    path = "process graph from model.nir (to_lava)"
    try:
        net = lower(graph)
    except ExportUnsupported as why:
        return BackendResult("lava", "skipped", note=f"no model.net, and {why}", path=path)
    try:
        out = run_graph(export_dir / "model.nir", x.numpy(), timeout=timeout)
    except SpikelineError as err:
        return BackendResult("lava", "error", reference, note=str(err), path=path)
    pairs = []
    for node in net.lifs:
        if node not in ref:
            return BackendResult("lava", "error", reference, path=path,
                                 note=f"node {node!r} has no counterpart in the folded model")
        pairs.append((node, ref[node], torch.from_numpy(out[node])))
    if detector_pairs is not None:
        pairs += detector_pairs(_output_signals(graph, out))
    result = _compare("lava", reference, pairs)
    result.path = path
    return result


def _verify_netx(export_dir, model, fresh, ref, x, timeout) -> BackendResult:
    net = export_dir / "model.net"
    path = "model.net through netx"
    layers = netx_layer_modules(model)
    names = {id(m): n for n, m in fresh.modules.items()}
    pairs = []
    try:
        for i in range(x.shape[1]):
            out = run_netx(net, x[:, i].numpy(), timeout=timeout)
            for k, module in enumerate(layers):
                node = names[id(module)]
                key = "readout" if k == len(layers) - 1 else f"layer{k}"
                theirs = torch.from_numpy(np.asarray(out[key], dtype=np.float32))
                pairs.append((node, ref[node][:, i].reshape(theirs.shape), theirs))
    except SpikelineError as err:
        return BackendResult("lava", "error", "folded model (fixed point)", note=str(err),
                             path=path)
    merged = {}
    for node, ours, theirs in pairs:  # one entry per node, summed over samples
        a, b = merged.get(node, ([], []))
        merged[node] = (a + [ours], b + [theirs])
    result = _compare("lava", "folded model (fixed point)",
                      ((n, torch.stack(a), torch.stack(b)) for n, (a, b) in merged.items()))
    result.path = path
    return result


def _verify_peer(peer, graph, x, fixed):
    module = {"spikingjelly": "spikingjelly", "snntorch": "snntorch"}[peer]
    if importlib.util.find_spec(module) is None:
        return BackendResult(peer, "skipped", note=f"{module} is not installed"), {}
    delays = [n for n, node in graph.nodes.items() if isinstance(node, nir.Delay)]
    if delays:  # their importers raise 'Unknown node type ... Delay' (measured, 2.0 / 1.0)
        return BackendResult(peer, "skipped", note=f"{peer}'s NIR importer has no Delay node "
                             f"(the graph has {len(delays)}, e.g. {delays[0]!r}: hardware "
                             "timing); nir and lava run it"), {}
    try:
        lowered = lower_for_peers(graph)
    except PeerUnsupported as why:
        return BackendResult(peer, "skipped", note=str(why)), {}
    dt = graph_dt(graph)
    float_sim = simulate(lowered, x, mode="float", dt=dt,
                         fire_at_threshold=FIRES_AT_THRESHOLD[peer])
    last = next(src for src, dst in lowered.edges if dst == "output")
    drift = {last: int((float_sim.output != fixed.outputs[last]).sum())}
    reference = "our simulator, float mode" + (", firing at v == threshold"
                                               if FIRES_AT_THRESHOLD[peer] else "")
    try:
        theirs = run_peer(peer, lowered, x, dt)
    except Exception as err:  # noqa: BLE001 - an importer failing is a result to report
        return BackendResult(peer, "error", reference,
                             note=f"{type(err).__name__}: {err}"), drift
    return _compare(peer, reference, [(last, float_sim.output, theirs)]), drift
