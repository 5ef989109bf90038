"""The certificate: every exported artifact spikes exactly like the trained network.

Two parts, in this order:

1. **Parameters** (``deploy/certificate.py``), before any spike is simulated: the reference is
   rebuilt from the training run's checkpoint that ``metadata.json`` records (folded and
   quantized again), and every weight, bias, decay, threshold, delay and edge of ``model.nir``,
   ``model.net``, the Lava process graph and ``folded.pt`` must equal it exactly.  Any
   difference fails verify, naming the node, the index and both values; no spike is simulated
   then.  An export that records no run, or whose run is not here, is reported as
   ``not_checked`` (not as passed): its spikes are compared with its own ``folded.pt``.
2. **Spikes**, on real inputs: the reference network (the rebuilt one, else ``folded.pt``) run
   by the training code against each backend:

- ``nir``: ``model.nir`` in our simulator, Loihi fixed point: every neuron node's spikes (and
  the readout's voltage) must equal the reference's, node by node.
- ``lava``: in Lava (``Loihi2SimCfg(select_tag='fixed_pt')``), in a subprocess: ``model.net``
  through netx when the export has one (sequential nets), else the process graph that
  ``to_lava`` builds from ``model.nir`` (residual nets trained with ``--timing loihi``).  Every
  layer's spikes and the readout voltage must equal the reference's; ``path`` says which ran.
  Lava runs the first ``DEFAULT_SAMPLES['lava']`` samples (it costs about 10 s a sample).
- detectors (``deploy/detector.py``): the spiking part's every neuron node as above, plus each
  Output node (P4, P5: what leaves the chip) against the folded network's features, and the
  off-chip readout (``readout.npz``) applied to the simulated outputs against the folded
  network's Detect outputs, entry for entry (``readout_p4``, ``readout_p5`` in ``per_node``).
  A wrong wire into an Output node or a changed readout weight shows up there.  On ``lava``
  (a detector exported with ``--timing loihi``) the same: every neuron node, both Output nodes
  (their source neurons' spikes in Lava) and the readout applied to them.
- ``spikingjelly``, ``snntorch``: their NIR importers.  They implement NIR's float semantics,
  not Loihi's fixed point, so each is held to our simulator in ``mode='float'`` on the same
  (peer-lowered) ``model.nir``, last spiking population compared.  A peer that matches
  *reads model.nir as spikeline does (float semantics)*; it says nothing about whether
  ``model.nir`` equals the trained network (that is ``nir``'s and the parameter
  certificate's job), so it is never listed in ``checked_by``.  How far float semantics drift
  from the fixed point is reported as ``float_vs_fixed``: information, not a failure.

The silence rule: every compared layer of every backend must be active in the reference on the
inputs (a spike, or a nonzero readout voltage); a layer that stayed silent certifies nothing, and
verify fails naming it.  ``coverage`` gives, per spiking layer, the fraction of neurons that
spiked at least once on the inputs.

Default sample counts (``DEFAULT_SAMPLES``) come from a measurement
(``benchmarks/verify_coverage.py``): how many ndigits test samples the spike comparison needs to
catch a one-grid-step change of one weight in each layer of the demo cnn and of a
``--timing loihi`` resnet18.
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nir
import numpy as np
import torch

from spikeline.errors import BadInput, ExportUnsupported, SpikelineError
from spikeline.pipeline.timing import shift

from .artifact import ExportMeta, GraphTiming
from .certificate import ParameterCertificate, certify_parameters, reference_from_run
from .export import load_folded
from .lava_run import run_graph, run_netx
from .peers import FIRES_AT_THRESHOLD, PEERS, PeerUnsupported, lower_for_peers, run_peer
from .simulate import graph_dt, simulate
from .tasks import deploy_task, to_nir
from .to_lava import lower
from .to_netx import netx_layer_modules

BACKENDS = ("nir", "lava", *PEERS)
# The backends whose spikes are compared with the trained network (the reference); the peers
# are compared with our reading of model.nir.
AGAINST_TRAINED = ("nir", "lava")
PEER_CLAIM = "reads model.nir as spikeline does (float semantics)"
# Samples the spike certificate runs by default: the CLI's `verify` and `run` read these.
# Chosen from benchmarks/verify_coverage.py (docs/verify.md, "How many samples"): on the demo
# cnn a one-grid-step weight change in either conv was caught by the first sample in 10/10
# trials; in the two dense layers the catch rate stops growing at 16 samples (90%, as at 64):
# the rest are weights from neurons that never spike on any input, which no sample count
# catches and which the parameter certificate compares exactly.  So nir and the peers (about
# a second a sample here) run 16.  Lava takes about 10 s a sample and its parameters are
# compared entry by entry before it runs: 4 samples (catch rate 80-100% per layer on the demo).
DEFAULT_SAMPLES = {"nir": 16, "spikingjelly": 16, "snntorch": 16, "lava": 4}


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
    silent: list[str] = field(default_factory=list)  # compared nodes silent in the reference
    samples: int = 0

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
    parameters: ParameterCertificate | None = None
    coverage: dict[str, float] = field(default_factory=dict)  # spiking node -> fraction
    reference: str = ""  # what the spikes were compared with

    @property
    def checked_by(self) -> list[str]:
        """The backends whose spikes ran and matched the trained network (``nir``, ``lava``);
        a peer that matched is in ``peers_agree`` instead."""
        return [b.backend for b in self.backends
                if b.status == "ok" and b.backend in AGAINST_TRAINED]

    @property
    def peers_agree(self) -> list[str]:
        """The peers that read ``model.nir`` as spikeline does (float semantics)."""
        return [b.backend for b in self.backends if b.status == "ok" and b.backend in PEERS]

    def problems(self, allow_skip: bool = False) -> list[str]:
        """Why this report certifies nothing (empty when it does): a parameter that differs
        from the run's checkpoint, a mismatch or error, a skipped backend (unless
        ``allow_skip``), no backend compared with the trained network, or a compared layer
        that stayed silent in the reference on the inputs."""
        why = []
        if self.parameters is not None and self.parameters.status == "mismatch":
            p = self.parameters
            why.append(f"parameters: {p.differences} entries differ from the run's checkpoint; "
                       + "; ".join(str(d) for d in p.shown[:3]))
            return why  # no spike was simulated
        why += [f"{b.backend}: {b.status}{' (' + b.note.strip() + ')' if b.note else ''}"
                for b in self.backends
                if b.status in ("mismatch", "error") or (b.status == "skipped" and not allow_skip)]
        ran = [b for b in self.backends if b.status in ("ok", "mismatch")]
        if not self.backends:
            why.append("no backend was requested")
        elif not any(b.backend in AGAINST_TRAINED for b in self.backends):
            why.append(f"no backend compared spikes with the trained network ({', '.join(PEERS)} "
                       f"only {PEER_CLAIM}); add nir or lava to --backends")
        elif not any(b.backend in AGAINST_TRAINED for b in ran):
            why.append("no backend ran that compares spikes with the trained network")
        for b in ran:
            if b.silent:
                why.append(f"{b.backend}: layer(s) {', '.join(b.silent)} never active in the "
                           "reference on these inputs: a comparison of silence certifies "
                           "nothing (use more or livelier samples)")
        if self.reference_spikes == 0 and not any(b.silent for b in ran):
            why.append("nothing spiked in the reference on this input: a certificate on "
                       "silence certifies nothing")
        return why

    def summary(self) -> str:
        return report_summary(self)

    @property
    def ok(self) -> bool:
        """Every requested backend ran and matched, on an input that made neurons spike."""
        return not self.problems()

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checked_by": self.checked_by,
                "peers_read_model_nir_as_spikeline": self.peers_agree,
                "problems": self.problems(),
                "parameters": None if self.parameters is None else self.parameters.to_dict(),
                "spike_reference": self.reference,
                "samples": self.samples, "T": self.steps,
                "reference_spikes": self.reference_spikes,
                "coverage": self.coverage,
                "backends": [asdict(b) for b in self.backends],
                "float_vs_fixed_mismatches": self.float_vs_fixed}


def _compare(name: str, reference: str, pairs) -> BackendResult:
    """``pairs``: (node, ours, theirs) tensors; counts entries that differ."""
    result = BackendResult(name, "ok", reference)
    for node, ours, theirs in pairs:
        ours, theirs = torch.as_tensor(ours), torch.as_tensor(theirs)
        if ours.numel() and not bool(ours.any()):
            result.silent.append(node)
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


def _node_export(model, meta: ExportMeta):
    """The NIR node mapping (node name -> module) of a folded model."""
    return to_nir(model, meta.model_spec, meta.require_shape())


def coverage(ref: dict, graph: nir.NIRGraph) -> dict[str, float]:
    """Per spiking node of ``graph`` in ``ref`` (``[T, N, ...]`` spikes): the fraction of its
    neurons that spiked at least once, at any step, in any sample."""
    out = {}
    for name, value in ref.items():
        if isinstance(graph.nodes.get(name), nir.CubaLIF):
            fired = (torch.as_tensor(value) != 0).flatten(2).any(0).any(0)
            out[name] = round(float(fired.float().mean()), 4)
    return out


def verify_export(export_dir, frames: torch.Tensor, backends=BACKENDS,
                  lava_timeout: float = 300.0, progress=None,
                  lava_samples: int | None = None) -> VerifyReport:
    """Check the export in ``export_dir`` on ``frames [T, N, C, H, W]`` (event counts): the
    parameter certificate first, then spikes (Lava on the first ``lava_samples`` samples,
    all when None)."""
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise BadInput(f"unknown backend(s) {sorted(unknown)}; known: {', '.join(BACKENDS)}")
    if not backends:
        raise BadInput(f"no backend given: nothing would be checked (known: {', '.join(BACKENDS)})")
    export_dir = Path(export_dir)
    folded, meta, folded_export = load_folded(export_dir)
    frames = torch.as_tensor(frames, dtype=torch.float32)
    if progress:
        progress("parameters")
    reference, description = reference_from_run(export_dir, meta)
    folded_spec = torch.load(export_dir / "folded.pt", weights_only=True,
                             map_location="cpu")["model_spec"]
    parameters = certify_parameters(export_dir, meta, folded, folded_spec, reference,
                                    description)
    if parameters.status == "mismatch":  # no spike is simulated on a network that differs
        return VerifyReport(frames.shape[1], frames.shape[0], [], 0, parameters=parameters)
    if reference is None:
        model, fresh = folded, folded_export
        ref_name = "folded.pt (the export's own; no training run to rebuild it from)"
    else:
        model, fresh = reference, _node_export(reference, meta)
        ref_name = "the run's checkpoint, folded and quantized again"
    task = deploy_task(meta.task)
    # what the chip receives, [T + input_pad_steps, N, C, H, W]
    x = model.network_input(frames.transpose(0, 1))
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
    lava_n = x.shape[1] if lava_samples is None else max(1, min(int(lava_samples), x.shape[1]))
    for backend in backends:
        if progress:
            progress(backend)
        if backend == "nir":
            pairs = [(n, ref[n], fixed.outputs[n]) for n in ref]
            pairs += task.output_pairs(export_dir, model, fresh, frames, fixed.outputs)
            result = _compare("nir", "trained network (fixed point)", pairs)
        elif backend == "lava":
            sub = {n: v[:, :lava_n] for n, v in ref.items()}
            result = _verify_lava(export_dir, model, fresh, sub, x[:, :lava_n], lava_timeout,
                                  graph, lambda outs: task.output_pairs(
                                      export_dir, model, fresh, frames[:, :lava_n], outs))
            if result.status == "skipped":
                result.note = task.lava_note(result.note)
        else:
            result, drift = _verify_peer(backend, graph, x, fixed)
            float_vs_fixed.update(drift)
        if result.status in ("ok", "mismatch"):
            result.samples = lava_n if backend == "lava" else int(x.shape[1])
        results.append(result)
    spikes = int(sum(v.sum().item() for n, v in ref.items()
                     if isinstance(graph.nodes.get(n), nir.CubaLIF)))
    return VerifyReport(x.shape[1], x.shape[0], results, spikes, float_vs_fixed,
                        parameters=parameters, coverage=coverage(ref, graph),
                        reference=ref_name)


def _verify_lava(export_dir, model, fresh, ref, x, timeout, graph,
                 output_pairs=None) -> BackendResult:
    if importlib.util.find_spec("lava") is None:
        return BackendResult("lava", "skipped", note="lava-nc / lava-dl are not installed")
    if (export_dir / "model.net").is_file():
        return _verify_netx(export_dir, model, fresh, ref, x, timeout)
    return _verify_lava_graph(export_dir, ref, x, timeout, graph, output_pairs)


def _output_signals(graph: nir.NIRGraph, out: dict) -> dict:
    """Per Output node of ``graph``, what it receives in a Lava run ``out`` (neuron name ->
    ``[steps, N, ...]``): its source neuron's spikes, shifted by any Delay nodes between."""
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


def _verify_lava_graph(export_dir, ref, x, timeout, graph, output_pairs=None) -> BackendResult:
    """``model.nir`` as a Lava process graph (``to_lava``): every neuron node compared, and
    what the task compares beyond them (``output_pairs``: a detector's Output nodes and the
    off-chip readout) on Lava's outputs."""
    reference = "trained network (fixed point)"
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
    if output_pairs is not None:
        pairs += output_pairs(_output_signals(graph, out))
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
        return BackendResult("lava", "error", "trained network (fixed point)", note=str(err),
                             path=path)
    merged = {}
    for node, ours, theirs in pairs:  # one entry per node, summed over samples
        a, b = merged.get(node, ([], []))
        merged[node] = (a + [ours], b + [theirs])
    result = _compare("lava", "trained network (fixed point)",
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
    reference = ("model.nir in our simulator, float mode" + (", firing at v == threshold"
                 if FIRES_AT_THRESHOLD[peer] else "") + f": {PEER_CLAIM}")
    try:
        theirs = run_peer(peer, lowered, x, dt)
    except Exception as err:  # noqa: BLE001 - an importer failing is a result to report
        return BackendResult(peer, "error", reference,
                             note=f"{type(err).__name__}: {err}"), drift
    return _compare(peer, reference, [(last, float_sim.output, theirs)]), drift


def report_lines(report: VerifyReport) -> list[str]:
    """The report as the CLI prints it: the parameter certificate, the spike comparison per
    backend, coverage per layer."""
    lines = []
    p = report.parameters
    if p is not None:
        if p.status == "not_checked":
            lines.append(f"parameters: NOT CHECKED ({p.note})")
        else:
            lines.append(f"parameters: {p.status}, {p.differences} of {p.compared} entries "
                         f"differ ({', '.join(p.artifacts)} against {p.reference})")
            lines += [f"  {d}" for d in p.shown]
            if p.note:
                lines.append(f"  ({p.note})")
    if not report.backends:
        return lines
    lines.append(f"spikes: {report.samples} sample(s), {report.steps} steps each, "
                 f"{report.reference_spikes} reference spikes; reference: {report.reference}")
    lines.append(f"{'backend':14s} {'status':9s} {'samples':>7s} {'mismatches':>10s} "
                 f"{'compared':>10s}  reference")
    for b in report.backends:
        lines.append(f"{b.backend:14s} {b.status:9s} {b.samples:7d} {b.mismatches:10d} "
                     f"{b.compared:10d}  {b.reference or '-'}"
                     f"{'  (' + b.note.strip() + ')' if b.note else ''}")
        if b.path:
            lines.append(f"{'':14s} ran: {b.path}")
        if b.per_node and b.status != "skipped":
            lines.append(f"{'':14s} mismatches per layer: "
                         + ", ".join(f"{n} {m}" for n, m in b.per_node.items()))
        if b.silent:
            lines.append(f"{'':14s} silent in the reference: {', '.join(b.silent)}")
    if report.coverage:
        lines.append("coverage (neurons that spiked at least once): " + ", ".join(
            f"{n} {100 * c:.1f}%" for n, c in report.coverage.items()))
    if report.float_vs_fixed:
        lines.append(f"float semantics vs Loihi fixed point (information): "
                     f"{sum(report.float_vs_fixed.values())} differing spikes in the last "
                     "spiking layer")
    return lines


def report_summary(report: VerifyReport) -> str:
    """One line: what matched what (after ``problems()`` found none)."""
    p = report.parameters
    parts = []
    if p is not None and p.status == "ok":
        parts.append(f"parameters equal the run's checkpoint ({', '.join(p.artifacts)})")
    elif p is not None:
        parts.append("parameters NOT checked against a training run")
    parts.append(f"spikes match the trained network on {', '.join(report.checked_by) or 'none'}"
                 " (0 mismatches)")
    if report.peers_agree:
        parts.append(f"{', '.join(report.peers_agree)} {PEER_CLAIM}")
    skipped = [b.backend for b in report.backends if b.status == "skipped"]
    if skipped:
        parts.append(f"skipped: {', '.join(skipped)}")
    return "; ".join(parts)
