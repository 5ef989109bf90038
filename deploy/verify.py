"""The certificate: every exported artifact spikes exactly like the trained network.

Reference: the folded, quantized network (``folded.pt``), run by the training code.  Backends:

- ``nir``: ``model.nir`` in our simulator, Loihi fixed point: every neuron node's spikes (and
  the readout's voltage) must equal the reference's, node by node.
- ``lava``: ``model.net`` in Lava (``Loihi2SimCfg(select_tag='fixed_pt')``), one process per
  sample: every layer's spikes and the readout voltage must equal the reference's.
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

from spikeline.errors import SpikelineError

from .export import load_folded
from .lava_run import run_netx
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
    def ok(self) -> bool:
        return all(b.status in ("ok", "skipped") for b in self.backends)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "samples": self.samples, "T": self.steps,
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
        raise SpikelineError(f"unknown backend(s) {sorted(unknown)}; known: {', '.join(BACKENDS)}")
    export_dir = Path(export_dir)
    model, meta, fresh = load_folded(export_dir)
    frames = torch.as_tensor(frames, dtype=torch.float32)
    x = model.encode(frames.transpose(0, 1))  # what the chip receives, [T, N, C, H, W]
    ref = reference_activity(model, fresh.modules, frames.transpose(0, 1))
    graph = nir.read(export_dir / "model.nir")
    missing = set(fresh.modules) - set(graph.nodes)
    if missing:
        raise SpikelineError(f"{export_dir / 'model.nir'}: nodes {sorted(missing)} of the "
                             "folded model are missing: the graph does not belong to folded.pt")
    results, float_vs_fixed = [], {}
    fixed = simulate(graph, x, mode="loihi") if "nir" in backends or set(PEERS) & set(backends) \
        else None
    for backend in backends:
        if progress:
            progress(backend)
        if backend == "nir":
            results.append(_compare("nir", "folded model (fixed point)",
                                    ((n, ref[n], fixed.outputs[n]) for n in ref)))
        elif backend == "lava":
            results.append(_verify_lava(export_dir, model, fresh, ref, x, lava_timeout))
        else:
            result, drift = _verify_peer(backend, graph, x, fixed)
            results.append(result)
            float_vs_fixed.update(drift)
    spikes = int(sum(v.sum().item() for n, v in ref.items() if "lif" in n))
    return VerifyReport(x.shape[1], x.shape[0], results, spikes, float_vs_fixed)


def _verify_lava(export_dir, model, fresh, ref, x, timeout) -> BackendResult:
    net = export_dir / "model.net"
    if not net.is_file():
        return BackendResult("lava", "skipped", note="no model.net in the export (metadata.json "
                             "'skipped' says why)")
    if importlib.util.find_spec("lava") is None:
        return BackendResult("lava", "skipped", note="lava-nc / lava-dl are not installed")
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
        return BackendResult("lava", "error", "folded model (fixed point)", note=str(err))
    merged = {}
    for node, ours, theirs in pairs:  # one entry per node, summed over samples
        a, b = merged.get(node, ([], []))
        merged[node] = (a + [ours], b + [theirs])
    return _compare("lava", "folded model (fixed point)",
                    ((n, torch.stack(a), torch.stack(b)) for n, (a, b) in merged.items()))


def _verify_peer(peer, graph, x, fixed):
    module = {"spikingjelly": "spikingjelly", "snntorch": "snntorch"}[peer]
    if importlib.util.find_spec(module) is None:
        return BackendResult(peer, "skipped", note=f"{module} is not installed"), {}
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
