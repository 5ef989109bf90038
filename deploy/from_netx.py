"""lava-dl netx HDF5 -> NIR: the converter lava-dl never merged.

Each netx layer becomes its synapse node (weights / 64) and a CubaLIF population with the same
12-bit decays and threshold (``to_nir.cuba_to_nir``); a ``dense`` layer with
``vThMant = 262143`` (lava-dl's Affine) becomes a CubaLI readout; ``pool`` a SumPool2d;
``bias`` mantissas the voltage bias (``bias / 64``).  lava-dl's SLAYER delays every block's
output by one step (``delay_shift=True``, its default); ``delay_shift=True`` here adds that
one-step Delay after each spiking layer so the NIR graph reproduces the SLAYER forward.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import nir
import numpy as np

from spikeline.errors import SpikelineError
from spikeline.pipeline.neuron import P_SCALE, CubaParams

from .to_netx import NEVER_SPIKES
from .to_nir import DT, cuba_to_nir

SUPPORTED = ("conv", "pool", "flatten", "dense")


def _read(group: h5py.Group, key: str, where: str):
    if key not in group:
        raise SpikelineError(f"{where}: missing field {key!r}")
    return group[key][()]


def _neuron(group: h5py.Group, where: str) -> tuple[CubaParams, bool]:
    if "neuron" not in group:
        raise SpikelineError(f"{where}: missing group 'neuron'")
    n = group["neuron"]
    kind = _read(n, "type", f"{where}/neuron")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind != "CUBA":
        raise SpikelineError(f"{where}/neuron/type is {kind!r}; only CUBA neurons convert")
    i_decay, v_decay = (int(_read(n, k, f"{where}/neuron")) for k in ("iDecay", "vDecay"))
    v_th = int(_read(n, "vThMant", f"{where}/neuron"))
    p = CubaParams(threshold=v_th / 64 if v_th != NEVER_SPIKES else 1.0,
                   current_decay=i_decay / P_SCALE, voltage_decay=v_decay / P_SCALE)
    return p, v_th == NEVER_SPIKES


def netx_to_nir(path, delay_shift: bool = True,
                input_shape: tuple[int, ...] | None = None) -> nir.NIRGraph:
    """Convert the netx file at ``path`` into a NIR graph; ``input_shape`` ``(C, H, W)``
    defaults to what the first layer implies."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise SpikelineError(f"{path}: not an HDF5 file ({err})") from None
    with f:
        if "layer" not in f:
            raise SpikelineError(f"{path}: no 'layer' group (not a netx network)")
        names = sorted(f["layer"].keys(), key=int)
        nodes, edges, prev, shape = {}, [], None, None
        for i in names:
            g, where = f["layer"][i], f"{path}:layer/{i}"
            kind = _read(g, "type", where)
            kind = (kind[0] if np.ndim(kind) else kind)
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind not in SUPPORTED:
                raise SpikelineError(f"{where}: layer type {kind!r} is not supported; "
                                     f"supported: {', '.join(SUPPORTED)}")
            if prev is None:
                shape = tuple(input_shape) if input_shape else _input_shape(g, kind, where)
                nodes["input"] = nir.Input(input_type={"input": np.array(shape)})
                prev = "input"
            name, shape, spiking_node = _layer(g, kind, where, shape, nodes, edges, prev, i)
            prev = name
            if delay_shift and spiking_node:
                nodes[f"{i}_delay"] = nir.Delay(delay=np.full(shape, DT))
                edges.append((prev, f"{i}_delay"))
                prev = f"{i}_delay"
        if prev is None:
            raise SpikelineError(f"{path}: the network has no layers")
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"dt": DT, "source": f"lava-dl netx {path.name}",
                                  "input_encoding": "binary"})


def _input_shape(g, kind, where):
    if kind == "conv":
        return _conv_input(g, int(_read(g, "inChannels", where)), where)
    if kind == "pool":
        return _conv_input(g, int(_read(g, "shape", where)[0]), where)
    if kind == "dense":
        return (int(_read(g, "inFeatures", where)),)
    raise SpikelineError(f"{where}: cannot start a network with a {kind!r} layer")


def _conv_input(g, c, where):
    """netx stores no input size: the smallest one giving the first layer's output size
    (pass ``input_shape`` where a stride makes it ambiguous)."""
    out = _read(g, "shape", where)[1:]
    k = np.atleast_1d(_read(g, "kernelSize", where)) * np.ones(2, int)
    s = np.atleast_1d(_read(g, "stride", where)) * np.ones(2, int)
    p = np.atleast_1d(_read(g, "padding", where)) * np.ones(2, int)
    d = np.atleast_1d(g["dilation"][()]) * np.ones(2, int) if "dilation" in g else np.ones(2, int)
    size = (out - 1) * s - 2 * p + d * (k - 1) + 1
    return (c, *(int(v) for v in size))


def _layer(g, kind, where, shape, nodes, edges, prev, i):
    """Add layer ``i``'s nodes; returns (last node, output shape, whether it spikes)."""
    if kind == "flatten":
        nodes[f"{i}_flatten"] = nir.Flatten(input_type={"input": np.array(shape)},
                                            start_dim=0, end_dim=-1)
        edges.append((prev, f"{i}_flatten"))
        return f"{i}_flatten", (int(np.prod(shape)),), False
    out_shape = tuple(int(v) for v in _read(g, "shape", where))
    if kind == "dense":
        weight = np.asarray(_read(g, "weight", where), dtype=np.float64) / 64
        if weight.ndim != 2 or weight.shape[1] != int(np.prod(shape)):
            raise SpikelineError(f"{where}: weight of shape {weight.shape} does not take the "
                                 f"previous layer's {int(np.prod(shape))} outputs")
        syn = nir.Linear(weight=weight)
    elif kind == "conv":
        weight = np.asarray(_read(g, "weight", where), dtype=np.float64) / 64
        weight = weight.reshape(weight.shape[:4])
        pair = lambda key, default: tuple(int(v) for v in  # noqa: E731
                                          np.atleast_1d(g[key][()]) * np.ones(2, int)) \
            if key in g else default
        syn = nir.Conv2d(input_shape=np.array(shape[1:]), weight=weight,
                         stride=pair("stride", (1, 1)), padding=pair("padding", (0, 0)),
                         dilation=pair("dilation", (1, 1)),
                         groups=int(g["groups"][()]) if "groups" in g else 1,
                         bias=np.zeros(weight.shape[0]))
    else:  # pool
        weight = np.asarray(_read(g, "weight", where)).reshape(-1)
        if np.any(weight != 64):
            raise SpikelineError(f"{where}: pool weight {weight[0] / 64} != 1 has no NIR form")
        k = tuple(int(v) for v in np.atleast_1d(_read(g, "kernelSize", where)) * np.ones(2, int))
        s = tuple(int(v) for v in np.atleast_1d(_read(g, "stride", where)) * np.ones(2, int))
        syn = nir.SumPool2d(kernel_size=np.array(k), stride=np.array(s),
                            padding=np.array([0, 0]))
    nodes[f"{i}_{kind}"] = syn
    edges.append((prev, f"{i}_{kind}"))
    p, readout = _neuron(g, where)
    bias = np.asarray(g["bias"][()], dtype=np.float64) / 64 if "bias" in g else None
    nodes[f"{i}_neuron"] = cuba_to_nir(p, out_shape, bias, spiking=not readout)
    edges.append((f"{i}_{kind}", f"{i}_neuron"))
    return f"{i}_neuron", out_shape, not readout
