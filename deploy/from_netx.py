"""lava-dl netx HDF5 -> NIR: the converter lava-dl never merged.

Each netx layer becomes its synapse node (weights / 64) and a CubaLIF population with the same
12-bit decays and threshold (``to_nir.cuba_to_nir``); a ``dense`` layer with
``vThMant = 262143`` (lava-dl's Affine) becomes a CubaLI readout; ``pool`` a SumPool2d (its
padding kept), followed by a Scale when its weight is not 1 (lava-dl's ``weight_scale``);
``bias`` mantissas the voltage bias (``bias / 64``).  lava-dl's SLAYER delays every block's
output by one step (``delay_shift=True``, its default); ``delay_shift=True`` here adds that
one-step Delay after each spiking layer so the NIR graph reproduces the SLAYER forward.

Grouped convolutions: NIR 1.0.8 infers a Conv2d's input channels from ``weight.shape[1]``, which
is wrong for ``groups > 1``, so a grouped conv is written as the equivalent dense conv (zero
weights between groups); the grouped conv with one weight per channel that spikeline's netx
export writes for sum pooling becomes a SumPool2d again.

A netx file does not record its input size; a strided first layer maps several input sizes to
the recorded output.  Any input size in that range is accepted (``input_shape``); without one,
the smallest is used and the graph's metadata lists the range.

Every field is checked (type, shape, range) before use: a malformed file raises ``BadInput``
naming the file, layer and field.  Schema: lava-dl's ``netx/hdf5.py``
(https://github.com/lava-nc/lava-dl/blob/main/src/lava/lib/dl/netx/hdf5.py) and
docs/reference.md §3.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import nir
import numpy as np

from spikeline.errors import BadInput, DataNotFound, SpikelineError, check_size
from spikeline.pipeline.geometry import conv_output_size
from spikeline.pipeline.neuron import P_SCALE, CubaParams

from .to_netx import NEVER_SPIKES
from .nir_check import DT
from .nir_params import cuba_to_nir

__all__ = ["netx_to_nir", "SUPPORTED", "input_sizes"]

SUPPORTED = ("conv", "pool", "flatten", "dense")
_MAX_DIM = 1 << 20  # a channel count or map side above this is not a network


def _field(group: h5py.Group, key: str, where: str):
    if key not in group or not isinstance(group[key], h5py.Dataset):
        raise BadInput(f"{where}: missing field {key!r}")
    data = group[key]
    check_size(data.size * data.dtype.itemsize, f"{where}/{key}")
    return data[()]


def _numbers(value, key: str, where: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise BadInput(f"{where}/{key}: expected numbers, got {array.dtype} {value!r:.60}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise BadInput(f"{where}/{key}: holds NaN or Inf")
    return array


def _int(group, key, where, low=0, high=_MAX_DIM, default=None) -> int:
    if default is not None and key not in group:
        return default
    array = _numbers(_field(group, key, where), key, where).reshape(-1)
    if array.size != 1 or array[0] != np.round(array[0]) or not low <= array[0] <= high:
        raise BadInput(f"{where}/{key}: expected one integer in [{low}, {high}], got "
                       f"{array.tolist()}")
    return int(array[0])


def _read_pair(group, key, where, low, default=None) -> tuple[int, int]:
    if default is not None and key not in group:
        return default
    array = _numbers(_field(group, key, where), key, where).reshape(-1)
    if array.size not in (1, 2) or np.any(array != np.round(array)) \
            or np.any(array < low) or np.any(array > _MAX_DIM):
        raise BadInput(f"{where}/{key}: expected one or two integers >= {low}, got "
                       f"{array.tolist()}")
    return (int(array[0]), int(array[-1]))


def _shape(group, where) -> tuple[int, ...]:
    array = _numbers(_field(group, "shape", where), "shape", where).reshape(-1)
    if array.size not in (1, 3) or np.any(array != np.round(array)) or np.any(array < 1) \
            or np.any(array > _MAX_DIM):
        raise BadInput(f"{where}/shape: expected (C, H, W) or (N,) of positive integers, got "
                       f"{array.tolist()}")
    return tuple(int(v) for v in array)


def _text(group, key, where) -> str:
    value = _field(group, key, where)
    value = value.reshape(-1)[0] if isinstance(value, np.ndarray) and value.size == 1 else value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    if isinstance(value, str):
        return value
    raise BadInput(f"{where}/{key}: expected a string, got {value!r:.60}")


def _neuron(group: h5py.Group, where: str) -> tuple[CubaParams, bool]:
    if "neuron" not in group or not isinstance(group["neuron"], h5py.Group):
        raise BadInput(f"{where}: missing group 'neuron'")
    n, at = group["neuron"], f"{where}/neuron"
    kind = _text(n, "type", at)
    if kind != "CUBA":
        raise BadInput(f"{at}/type is {kind!r}; only CUBA neurons convert")
    i_decay, v_decay = (_int(n, k, at, 0, P_SCALE) for k in ("iDecay", "vDecay"))
    v_th = _int(n, "vThMant", at, 1, NEVER_SPIKES)
    try:
        p = CubaParams(threshold=v_th / 64 if v_th != NEVER_SPIKES else 1.0,
                       current_decay=i_decay / P_SCALE, voltage_decay=v_decay / P_SCALE)
    except ValueError as err:
        raise BadInput(f"{at}: {err}") from None
    return p, v_th == NEVER_SPIKES


def input_sizes(out: int, kernel: int, stride: int, padding: int, dilation: int = 1):
    """Input sizes ``n`` with ``floor((n + 2p - d(k-1) - 1) / s) + 1 == out``: a range of
    ``stride`` sizes, ``range(lo, lo + s)``."""
    lo = (out - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1
    return range(max(lo, 1), lo + stride)


def netx_to_nir(path, delay_shift: bool = True,
                input_shape: tuple[int, ...] | None = None) -> nir.NIRGraph:
    """Convert the netx file at ``path`` into a NIR graph; ``input_shape`` ``(C, H, W)`` may be
    any shape that gives the first layer's recorded output (default: the smallest)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFound(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            return _convert(f, path, delay_shift, input_shape)
    except SpikelineError:
        raise
    except Exception as err:  # h5py/HDF5 errors of a damaged file, NIR type inference
        raise BadInput(f"{path}: not a readable lava-dl netx file ({type(err).__name__}: "
                       f"{err})") from None


def _convert(f, path, delay_shift, input_shape):
    if "layer" not in f or not isinstance(f["layer"], h5py.Group):
        raise BadInput(f"{path}: no 'layer' group (not a netx network)")
    keys = list(f["layer"].keys())
    bad = [k for k in keys if not k.isdigit()]
    if bad:
        raise BadInput(f"{path}: layer keys {bad} are not layer numbers")
    names = sorted(keys, key=int)
    if [int(k) for k in names] != list(range(len(names))):
        raise BadInput(f"{path}: layers {names} are not numbered 0 to {len(names) - 1}")
    if not names:
        raise BadInput(f"{path}: the network has no layers")
    nodes, edges, prev, shape, accepted = {}, [], None, None, None
    for i in names:
        g, where = f["layer"][i], f"{path}:layer/{i}"
        if not isinstance(g, h5py.Group):
            raise BadInput(f"{where}: expected a group")
        kind = _text(g, "type", where)
        if kind not in SUPPORTED:
            raise BadInput(f"{where}: layer type {kind!r} is not supported; "
                           f"supported: {', '.join(SUPPORTED)}")
        if prev is None:
            shape, accepted = _first_input(g, kind, where, input_shape)
            nodes["input"] = nir.Input(input_type={"input": np.array(shape)})
            prev = "input"
        name, shape, spiking_node = _layer(g, kind, where, shape, nodes, edges, prev, i)
        prev = name
        if delay_shift and spiking_node:
            nodes[f"{i}_delay"] = nir.Delay(delay=np.full(shape, DT))
            edges.append((prev, f"{i}_delay"))
            prev = f"{i}_delay"
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((prev, "output"))
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges,
                            metadata={"dt": DT, "source": f"lava-dl netx {path.name}",
                                      "input_encoding": "binary",
                                      "input_shapes_accepted": accepted})
    except ValueError as err:  # NIR's type inference: the layers do not fit together
        raise BadInput(f"{path}: the layers do not fit together ({err})") from None


def _first_input(g, kind, where, given):
    """The input shape for the first layer and a description of the accepted ones."""
    if kind == "dense":
        n = _int(g, "inFeatures", where, 1)
        ranges = [(n, n)]
        channels = None
    elif kind in ("conv", "pool"):
        out = _shape(g, where)
        if len(out) != 3:
            raise BadInput(f"{where}/shape: a {kind} layer's output is (C, H, W), got {out}")
        channels = _int(g, "inChannels", where, 1) if kind == "conv" else out[0]
        k = _read_pair(g, "kernelSize", where, 1)
        s = _read_pair(g, "stride", where, 1, default=k if kind == "pool" else (1, 1))
        p = _read_pair(g, "padding", where, 0, default=(0, 0))
        d = _read_pair(g, "dilation", where, 1, default=(1, 1))
        ranges = [(r.start, r.stop - 1) for r in
                  (input_sizes(o, *a) for o, a in zip(out[1:], zip(k, s, p, d)))]
    else:
        raise BadInput(f"{where}: cannot start a network with a {kind!r} layer")
    accepted = (f"[{channels}, {ranges[0][0]}..{ranges[0][1]}, {ranges[1][0]}..{ranges[1][1]}]"
                if channels is not None else f"[{ranges[0][0]}]")
    if given is None:
        shape = (channels, ranges[0][0], ranges[1][0]) if channels is not None else \
            (ranges[0][0],)
        return shape, accepted
    given = tuple(int(v) for v in given)
    wanted = [(channels, channels), *ranges] if channels is not None else ranges
    if len(given) != len(wanted) or not all(lo <= v <= hi for v, (lo, hi) in zip(given, wanted)):
        raise BadInput(f"--input-shape {list(given)}: the first layer ({where}) gives its "
                       f"recorded output only for inputs {accepted}")
    return given, accepted


def _conv_out(shape, k, s, p, d):
    return conv_output_size(shape[1:], k, s, p, d)


def _layer(g, kind, where, shape, nodes, edges, prev, i):
    """Add layer ``i``'s nodes; returns (last node, output shape, whether it spikes)."""
    if kind == "flatten":
        nodes[f"{i}_flatten"] = nir.Flatten(input_type={"input": np.array(shape)},
                                            start_dim=0, end_dim=-1)
        edges.append((prev, f"{i}_flatten"))
        return f"{i}_flatten", (int(np.prod(shape)),), False
    out_shape = _shape(g, where)
    name = f"{i}_{kind}"
    if kind == "dense":
        weight = _numbers(_field(g, "weight", where), "weight", where).astype(np.float64) / 64
        if weight.ndim != 2 or weight.shape != (int(np.prod(out_shape)), int(np.prod(shape))):
            raise BadInput(f"{where}/weight: shape {list(weight.shape)} does not map the "
                           f"previous layer's {int(np.prod(shape))} outputs to {out_shape}")
        syn, pool_weight = nir.Linear(weight=weight), 1.0
    else:
        if len(shape) != 3 or len(out_shape) != 3:
            raise BadInput(f"{where}: a {kind} layer maps (C, H, W) to (C, H, W); got "
                           f"{shape} -> {out_shape}")
        syn, name, pool_weight = _conv_like(g, kind, where, shape, out_shape, i)
    nodes[name] = syn
    edges.append((prev, name))
    if pool_weight != 1.0:  # a weighted sum pool: the sums, then a Scale
        nodes[f"{i}_scale"] = nir.Scale(scale=np.full(out_shape, pool_weight))
        edges.append((name, f"{i}_scale"))
        name = f"{i}_scale"
    p, readout = _neuron(g, where)
    bias = None
    if "bias" in g:
        bias = _numbers(_field(g, "bias", where), "bias", where).astype(np.float64) / 64
        if bias.size not in (1, out_shape[0]):
            raise BadInput(f"{where}/bias: {bias.size} values for {out_shape[0]} channels")
        bias = bias.reshape(-1)
    try:
        nodes[f"{i}_neuron"] = cuba_to_nir(p, out_shape, bias, spiking=not readout)
    except ValueError as err:
        raise BadInput(f"{where}: {err}") from None
    edges.append((name, f"{i}_neuron"))
    return f"{i}_neuron", out_shape, not readout


def _conv_like(g, kind, where, shape, out_shape, i):
    c = shape[0]
    k = _read_pair(g, "kernelSize", where, 1)
    s = _read_pair(g, "stride", where, 1, default=k if kind == "pool" else (1, 1))
    p = _read_pair(g, "padding", where, 0, default=(0, 0))
    d = _read_pair(g, "dilation", where, 1, default=(1, 1))
    computed = _conv_out(shape, k, s, p, d)
    if computed != out_shape[1:]:
        raise BadInput(f"{where}: a {kind} with kernel {k}, stride {s}, padding {p} maps a "
                       f"{shape[1]}x{shape[2]} input to {computed[0]}x{computed[1]}, but the "
                       f"file records {out_shape[1]}x{out_shape[2]}")
    weight = _numbers(_field(g, "weight", where), "weight", where).astype(np.float64)
    if kind == "pool":
        if out_shape[0] != c:
            raise BadInput(f"{where}/shape: pooling keeps the {c} channels, got {out_shape[0]}")
        if weight.size < 1 or np.any(weight != weight.reshape(-1)[0]):
            raise BadInput(f"{where}/weight: a pool has one weight")
        return nir.SumPool2d(kernel_size=np.array(k), stride=np.array(s),
                             padding=np.array(p)), f"{i}_pool", weight.reshape(-1)[0] / 64
    groups = _int(g, "groups", where, 1, default=1)
    if weight.ndim == 5 and weight.shape[4] == 1:  # lava-dl writes [out, in, kh, kw, 1]
        weight = weight[..., 0]
    cout = out_shape[0]
    if weight.ndim != 4 or weight.shape[2:] != k:
        raise BadInput(f"{where}/weight: shape {list(weight.shape)}, expected "
                       f"[out, in / groups, {k[0]}, {k[1]}]")
    if c % groups or cout % groups or weight.shape != (cout, c // groups, *k):
        raise BadInput(f"{where}: weight {list(weight.shape)} with groups {groups} does not "
                       f"map {c} to {cout} channels")
    weight = weight / 64
    if (groups > 1 and groups == c == cout and d == (1, 1) and weight.size
            and np.all(weight == weight.flat[0]) and weight.flat[0] > 0):
        # spikeline's netx form of sum pooling (deploy/to_netx.py), weighted or not
        return nir.SumPool2d(kernel_size=np.array(k), stride=np.array(s),
                             padding=np.array(p)), f"{i}_pool", float(weight.flat[0])
    if groups > 1:  # NIR infers grouped convs' input channels wrongly: write it dense
        check_size(cout * c * k[0] * k[1] * 8, f"{where}: the grouped conv as a dense one")
        dense = np.zeros((cout, c, *k))
        per_in, per_out = c // groups, cout // groups
        for group in range(groups):
            rows = slice(group * per_out, (group + 1) * per_out)
            dense[rows, group * per_in:(group + 1) * per_in] = weight[rows]
        weight = dense
    return nir.Conv2d(input_shape=np.array(shape[1:]), weight=weight, stride=np.array(s),
                      padding=np.array(p), dilation=np.array(d), groups=1,
                      bias=np.zeros(cout)), f"{i}_conv", 1.0
