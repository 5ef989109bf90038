"""NIR graph -> Lava process graph (``Conv``/``Dense``/``LIF``, identity ``Sparse`` delay lines).

netx HDF5 wires layers strictly in sequence; a Lava process graph built directly holds residual
networks too.  ``lower(graph)`` is the pure part: it checks that every node can run on Lava's
fixed-point models and returns a ``LavaNet`` of plain dataclasses; ``build(net, data)`` creates
the processes (it imports Lava) and ``deploy/lava_run.py`` runs them in a subprocess.

How a graph written by ``to_nir`` (``--timing loihi``) maps, and why it is exact (Lava's sources:
``lava/proc/{dense,conv,sparse,lif}/models.py``):

- Timing.  Every Conv/Dense/Sparse process sends last step's accumulation before receiving this
  step's spikes: one step per synaptic hop.  A LIF receives, updates and sends in one step.  The
  graph says the same with ``Delay`` nodes: each synapse's input must be delayed by ``d >= 1``
  steps.  ``d = 1`` is the hop itself; a larger ``d`` becomes a delay line of ``d - 1``
  identity hops (weight 1, graded) in front of the synapse.  A neuron fed by spikes delayed
  ``d >= 1`` steps (a Spiking ResNet's identity shortcut) gets a line of ``d`` identity hops,
  the last of weight 64 (1.0), or of the weight a ``Scale`` node gives it (an identity
  shortcut weighted just above the threshold: 84, i.e. 1.3125).  A line is a chain of ``Sparse`` processes rather than one
  ``DelaySparse``: the same steps, but ``DelaySparse``'s model rebuilds its per-delay matrices
  every step (csr item assignment), which took minutes per sample on a 34x34x8 map.  The
  RingBuffer source sends frame ``t`` at Lava step ``t + 1``, so Lava's monitored step ``i``
  is the trained network's step ``i``.
- Residual sums: several OutPorts connected to one InPort add (``magma/core/model/py/ports.py``),
  so a residual add is fan-in into one ``a_in``.  A SEW ADD junction carries counts, so the
  synapse it feeds takes graded messages (``num_message_bits = 24``); with 0 they are cast to
  bool.  Graded input is used only where a synapse's input can exceed 1.
- Weights: NIR holds ``mantissa / 64``.  Dense/Sparse clip to 8 bits and, for a mixed-sign
  matrix, drop the LSB (``utils/weightutils.py``): odd mantissas there are refused, never
  silently changed.  A ``Scale`` between a synapse and its neuron (a relaying sum pool of
  weight 84/64) multiplies that synapse's weights.  Conv ignores ``weight_exp`` and does not
  clip; its layout is ``(C_out, kx, ky, C_in)`` on ``(X, Y, C)`` maps and it flips the kernel, so the torch kernel
  is stored as ``w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)`` (as ``netx/hdf5.py`` does).
  Flattened maps are Lava's ``(X, Y, C)`` order, so a Dense after a Flatten has its columns
  permuted from NIR's ``(C, H, W)`` order.
- LIF: ``u = trunc0(u (4096 - (du + 1)) / 4096) + (a_in << 6)``,
  ``v = trunc0(v (4096 - dv) / 4096) + u + (bias_mant << bias_exp)``, spike when
  ``v > vth << 6``: with ``du = iDecay - 1``, ``dv = vDecay``, ``vth = vThMant``, ``bias_exp = 6``
  and ``bias_mant = 64 * bias`` it is ``pipeline/neuron.py``'s neuron.  Lava wraps ``u`` at 24
  bits and clips ``v`` at +-(2^23 - 1); the trained network does neither, so a net that reaches
  those ranges shows up as mismatches in ``verify``, never as a pass.  The CubaLI readout is a
  LIF with the largest threshold (2^17 - 1, i.e. 2048.0) whose voltage is read.
- A neuron in the graph's ``reset_steps`` (``pipeline/timing.py``: under loihi timing with
  voltage biases, each neuron restarts at its input's arrival) is a ``LIFReset``: ``u`` and
  ``v`` set to 0 before the update of Lava step ``reset_offset`` (mod ``reset_interval``),
  here our step ``r`` of a sample run alone, so ``reset_interval = T + input_pad_steps`` and
  ``reset_offset = r + 1`` (Lava counts from 1; lava-dl's netx resets layer i at i + 1 alike).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np

from spikeline.errors import ExportUnsupported
from spikeline.pipeline.geometry import conv_output_size
from spikeline.pipeline.geometry import pair as _pair

from .artifact import GraphTiming
from .graph import topological_order
from .nir_check import graph_dt
from .nir_params import nir_to_cuba

GRADED_BITS = 24  # num_message_bits of a synapse whose input can exceed 1 (counts)
MAX_VTH = (1 << 17) - 1  # LIF's vth is an unsigned 17-bit integer
ONE = 64  # the weight mantissa of 1.0
SYNAPSES = (nir.Conv2d, nir.Linear, nir.SumPool2d)
NEURONS = (nir.CubaLIF, nir.CubaLI)


@dataclass
class Term:
    """A source (Input or neuron node, or a synapse for a neuron's input) seen ``delay`` steps
    late, through a Flatten when ``flat``."""

    source: str
    delay: int
    flat: bool = False
    weight: int = 64  # the mantissa it arrives with (a Scale node changes it)


@dataclass
class Lif:
    name: str
    shape: tuple[int, ...]  # NIR order (C, H, W) or (N,)
    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray | None  # NIR order, bias_exp = 6
    readout: bool  # CubaLI: never spikes, its voltage is read
    reset_step: int = 0  # > 0: current and voltage set to 0 at that step (``LIFReset``)


@dataclass
class Synapse:
    """A Conv (``kind='conv'``, Lava layout) or Dense (``kind='dense'``, columns in Lava's
    flatten order) process."""

    name: str
    kind: str
    weight: np.ndarray
    in_shape: tuple[int, ...]  # NIR order
    out_shape: tuple[int, ...]
    graded: bool
    stride: tuple[int, int] = (1, 1)  # Lava's (X, Y) order
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


@dataclass
class DelayLine:
    """``1 + delay`` identity ``Sparse`` hops of ``size`` neurons, the last of ``weight``."""

    name: str
    source: str
    size: int
    weight: int
    delay: int


@dataclass
class Edge:
    """``src`` (a process name; ``port`` 'out') into ``dst``'s input, reshaped to fit."""

    src: str
    dst: str


@dataclass
class LavaNet:
    input_name: str
    input_shape: tuple[int, ...]
    graded_input: bool
    lifs: dict[str, Lif] = field(default_factory=dict)
    synapses: dict[str, Synapse] = field(default_factory=dict)
    lines: dict[str, DelayLine] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    pad_steps: int = 0
    readout_start: int = 0


def _steps(name: str, node: nir.Delay, dt: float) -> int:
    delay = np.asarray(node.delay, dtype=np.float64)
    if delay.size == 0 or not np.all(np.isfinite(delay)):
        raise ExportUnsupported(f"Lava: node {name!r}: Delay must be finite, got {delay!r}")
    steps = np.round(delay / dt)
    if np.ptp(steps) > 0 or not np.allclose(steps * dt, delay, rtol=1e-6, atol=1e-12):
        raise ExportUnsupported(f"Lava: node {name!r}: Delay must be one whole number of "
                                f"steps (dt {dt}) for every neuron")
    return int(steps.flat[0])


def _mantissa(name: str, weight, dense: bool) -> np.ndarray:
    w = np.asarray(weight, dtype=np.float64) * ONE
    mant = np.round(w)
    if not np.allclose(mant, w, atol=1e-6):
        raise ExportUnsupported(f"Lava: node {name!r}: weights are not on the 1/64 grid of "
                                "Loihi's 8-bit weight mantissas (export a folded, quantized "
                                "model)")
    mixed = mant.min() < 0 < mant.max()
    low = -256 if mixed or not dense else -255
    if mant.min() < low or mant.max() > 255:
        raise ExportUnsupported(f"Lava: node {name!r}: weight mantissas span "
                                f"[{mant.min():.0f}, {mant.max():.0f}], outside the 8-bit "
                                f"[{low}, 255] that Lava clips to")
    if dense and mixed and np.any(mant % 2):
        raise ExportUnsupported(f"Lava: node {name!r}: odd weight mantissas in a mixed-sign "
                                "matrix (Lava's Dense drops their least significant bit)")
    return mant.astype(np.int32)


class _Lowering:
    def __init__(self, graph: nir.NIRGraph):
        self.g = graph
        self.dt = graph_dt(graph)
        self.order, back = topological_order(graph)
        if back:
            raise ExportUnsupported(f"Lava: recurrent edges {sorted(back)} are not supported")
        self.preds = {n: [] for n in graph.nodes}
        self.succs = {n: [] for n in graph.nodes}
        for src, dst in graph.edges:
            self.preds[dst].append(src)
            self.succs[src].append(dst)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.terms: dict[str, list[Term]] = {}

    def fail(self, name, why):
        raise ExportUnsupported(f"Lava cannot run node {name!r} "
                                f"({type(self.g.nodes[name]).__name__}): {why}")

    def input_shape(self, name) -> tuple[int, ...]:
        shapes = {self.shapes[p] for p in self.preds[name]}
        if len(shapes) != 1:
            self.fail(name, f"incoming edges of shapes {sorted(shapes)} do not add up")
        return shapes.pop()

    def gather(self, name) -> list[Term]:
        """What ``name`` receives: its predecessors' terms, through Delay and Flatten nodes."""
        out = []
        for p in self.preds[name]:
            out += self.terms[p]
        return out

    def run(self) -> LavaNet:
        net = None
        for name in self.order:
            node = self.g.nodes[name]
            if isinstance(node, nir.Input):
                shape = tuple(int(v) for v in node.input_type["input"])
                self.shapes[name], self.terms[name] = shape, [Term(name, 0)]
                net = LavaNet(name, shape, False)
            elif isinstance(node, nir.Delay):
                steps = _steps(name, node, self.dt)
                self.shapes[name] = self.input_shape(name)
                self.terms[name] = [Term(t.source, t.delay + steps, t.flat)
                                    for t in self.gather(name)]
            elif isinstance(node, nir.Scale):
                self.scale(name, node)
            elif isinstance(node, nir.Flatten):
                shape = self.input_shape(name)
                self.shapes[name] = (int(np.prod(shape)),)
                self.terms[name] = [Term(t.source, t.delay, t.flat or len(shape) > 1)
                                    for t in self.gather(name)]
            elif isinstance(node, SYNAPSES):
                self.synapse(net, name, node)
            elif isinstance(node, NEURONS):
                self.neuron(net, name, node)
            elif isinstance(node, nir.Output):
                self.shapes[name] = self.input_shape(name)
                self.terms[name] = []
            else:
                self.fail(name, "no Lava process for this node type; supported: Input, "
                          "Output, Delay, Flatten, Scale, Conv2d, Linear, SumPool2d, CubaLIF, "
                          "CubaLI")
        timing = GraphTiming.of(self.g)
        net.pad_steps, net.readout_start = timing.input_pad_steps, timing.readout_start
        for lif_name, step in timing.reset_steps.items():
            net.lifs[lif_name].reset_step = step
        net.graded_input = (timing.input_encoding or "binary") != "binary"
        return net

    def scale(self, name, node: nir.Scale) -> None:
        """A uniform ``Scale`` on the 1/64 weight grid multiplies the weight its terms arrive
        with; a neuron then takes them through an identity line of that last weight."""
        shape = self.input_shape(name)
        factor = np.unique(np.asarray(node.scale, dtype=np.float64))
        if factor.size != 1:
            self.fail(name, "a Scale with more than one factor (Lava's identity line carries one "
                      "weight)")
        terms = self.gather(name)
        mants = [t.weight * float(factor[0]) for t in terms]
        if any(m != round(m) or not 1 <= m <= 255 for m in mants):
            self.fail(name, f"scale {factor[0]} is not a positive 8-bit weight on the 1/64 grid")
        self.shapes[name] = shape
        self.terms[name] = [Term(t.source, t.delay, t.flat, int(round(m)))
                            for t, m in zip(terms, mants)]

    def _line(self, net: LavaNet, term: Term, weight: int, delay: int) -> str:
        name = f"line_{term.source}_{weight}_{delay}"
        if name not in net.lines:
            size = int(np.prod(self.shapes[term.source]))
            net.lines[name] = DelayLine(name, term.source, size, weight, delay)
            net.edges.append(Edge(term.source, name))
        return name

    def synapse(self, net, name, node):
        in_shape = self.input_shape(name)
        terms = self.gather(name)
        for t in terms:
            src = self.g.nodes[t.source]
            if not isinstance(src, (nir.Input, nir.CubaLIF)):
                self.fail(name, f"its input {t.source!r} is not spikes (a synapse must follow "
                          "the input or a spiking neuron)")
            if t.weight != ONE:
                self.fail(name, f"its input from {t.source!r} is scaled (a Scale node must "
                          "feed a neuron: fold the factor into the synapse's weights)")
            if t.delay < 1:
                self.fail(name, f"its input from {t.source!r} arrives with {t.delay} steps of "
                          "delay, but every Lava synapse adds one (train with --timing loihi, "
                          "whose graphs carry that hop as a Delay node)")
        graded = len(terms) > 1 or any(t.delay > 1 for t in terms) or (
            any(isinstance(self.g.nodes[t.source], nir.Input) for t in terms)
            and (GraphTiming.of(self.g).input_encoding or "binary") != "binary")
        if isinstance(node, nir.Linear):
            if len(in_shape) != 1:
                self.fail(name, f"Linear on a {in_shape} map (flatten it first)")
            weight = _mantissa(name, node.weight, dense=True)
            if weight.shape[1] != in_shape[0]:
                self.fail(name, f"weight {weight.shape} does not take {in_shape[0]} inputs")
            src_shapes = {self.shapes[t.source] for t in terms}
            if len(src_shapes) != 1:
                self.fail(name, f"inputs of different shapes {sorted(src_shapes)}")
            src_shape = src_shapes.pop()
            if len(src_shape) == 3:  # columns from NIR's (C, H, W) to Lava's (X, Y, C) order
                c, h, w = src_shape
                weight = weight[:, np.arange(c * h * w).reshape(c, h, w)
                                .transpose(2, 1, 0).reshape(-1)]
            out = (weight.shape[0],)
            syn = Synapse(name, "dense", weight, in_shape, out, graded)
        else:
            if len(in_shape) != 3:
                self.fail(name, f"a 2-D convolution needs a (C, H, W) input, got {in_shape}")
            c, h, w = in_shape
            if isinstance(node, nir.Conv2d):
                if node.bias is not None and np.any(np.asarray(node.bias)):
                    self.fail(name, "a synaptic bias (Lava's Conv has none; a voltage bias "
                              "belongs in the neuron's v_leak)")
                if isinstance(node.padding, str):
                    self.fail(name, f"padding {node.padding!r} (give numbers)")
                torch_w = _mantissa(name, node.weight, dense=False)
                stride, padding = _pair(node.stride), _pair(node.padding)
                dilation, groups = _pair(node.dilation), int(node.groups)
            else:  # SumPool2d: a grouped conv with weight 1.0 (a Scale after it: fold_scale)
                kernel = _pair(node.kernel_size)
                stride, padding, dilation, groups = (_pair(node.stride), _pair(node.padding),
                                                     (1, 1), c)
                torch_w = np.full((c, 1, *kernel), ONE, dtype=np.int32)
            cout, _, kh, kw = torch_w.shape
            oh, ow = conv_output_size((h, w), (kh, kw), stride, padding, dilation)
            weight = np.ascontiguousarray(torch_w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))
            syn = Synapse(name, "conv", weight, in_shape, (cout, oh, ow), graded,
                          stride[::-1], padding[::-1], dilation[::-1], groups)
        net.synapses[name] = syn
        for t in terms:
            if t.delay == 1:
                net.edges.append(Edge(t.source, name))
            else:
                net.edges.append(Edge(self._line(net, t, 1, t.delay - 2), name))
        self.shapes[name] = syn.out_shape
        self.terms[name] = [Term(name, 0)]

    def fold_scale(self, net: LavaNet, name: str, term: Term) -> None:
        """A ``Scale`` between a synapse and its neuron (a relaying sum pool, weight 84/64)
        multiplies that synapse's weights: exact when the products stay 8-bit mantissas and
        nothing else reads the synapse."""
        syn = net.synapses[term.source]
        if len(self.succs[term.source]) != 1:
            self.fail(name, f"its input from {term.source!r} is scaled, but that synapse also "
                      "feeds other nodes, so the factor cannot move into its weights")
        scaled, rest = np.divmod(syn.weight.astype(np.int64) * term.weight, ONE)
        if np.any(rest) or scaled.min() < -256 or scaled.max() > 255:
            self.fail(name, f"the scale {term.weight}/{ONE} on {term.source!r}'s weights leaves "
                      "the 8-bit mantissas of the 1/64 grid")
        syn.weight = scaled.astype(np.int32)

    def neuron(self, net, name, node):
        shape = self.input_shape(name)
        fixed = nir_to_cuba(node, self.dt)
        if fixed is None:
            self.fail(name, "its parameters have no Loihi fixed-point form (12-bit decays, "
                      "w_in = tau_syn/dt, r = tau_mem/dt, v_reset = 0)")
        p, bias = fixed
        readout = isinstance(node, nir.CubaLI)
        if p.i_decay < 1:
            self.fail(name, "a current decay of 0 has no Lava du (du = iDecay - 1)")
        vth = MAX_VTH if readout else p.theta * ONE
        if vth != int(vth) or not 0 <= vth <= MAX_VTH:
            self.fail(name, f"threshold {p.theta} is not a 17-bit multiple of 1/64")
        mant = None
        if bias is not None:
            if readout:
                self.fail(name, "a voltage bias on the readout")
            mant = np.broadcast_to(np.asarray(bias, dtype=np.float64) * ONE, shape)
            if not np.allclose(mant, np.round(mant), atol=1e-6):
                self.fail(name, "voltage bias not on the 1/64 grid of Loihi's bias mantissa")
            mant = np.round(mant).astype(np.int32)
            if mant.min() < -4096 or mant.max() > 4095:
                self.fail(name, "voltage bias outside the 13-bit mantissa (|bias| < 64)")
        net.lifs[name] = Lif(name, shape, p.i_decay - 1, p.v_decay, int(vth), mant, readout)
        for t in self.gather(name):
            src = self.g.nodes[t.source]
            if isinstance(src, SYNAPSES) and t.delay == 0 and not t.flat:
                if t.weight != ONE:
                    self.fold_scale(net, name, t)
                net.edges.append(Edge(t.source, name))
            elif isinstance(src, (nir.Input, nir.CubaLIF)) and t.delay >= 1 and not t.flat:
                net.edges.append(Edge(self._line(net, t, t.weight, t.delay - 1), name))
            else:
                self.fail(name, f"its input from {t.source!r} (delayed {t.delay} steps) has no "
                          "Lava form: a neuron takes a synapse's output undelayed, or spikes "
                          "delayed by at least the one-step hop")
        self.shapes[name] = shape
        self.terms[name] = [Term(name, 0)]


def lower(graph: nir.NIRGraph) -> LavaNet:
    """Check ``graph`` and plan its Lava processes; raises ``ExportUnsupported`` naming the
    node and the reason when Lava cannot run it exactly."""
    return _Lowering(graph).run()


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """NIR's (C, H, W) -> Lava's (X, Y, C); 1-D shapes unchanged."""
    return tuple(shape[::-1]) if len(shape) == 3 else tuple(shape)


def to_lava_order(a: np.ndarray) -> np.ndarray:
    """An array of NIR shape (C, H, W) in Lava's (X, Y, C) layout."""
    return a.transpose(2, 1, 0) if a.ndim == 3 else a


def build(net: LavaNet, data: np.ndarray):
    """Create the Lava processes of ``net`` fed by ``data`` ``[steps, *input_shape]``.

    Returns ``(source, {lif name: LIF process})``.  Imports Lava (``lava-nc``).
    """
    from lava.proc.conv.process import Conv  # optional: Lava is installed by make install only
    from lava.proc.dense.process import Dense  # optional: as above
    from lava.proc.io.source import RingBuffer  # optional: as above
    from lava.proc.lif.process import LIF, LIFReset  # optional: as above
    from lava.proc.sparse.process import Sparse  # optional: as above
    from scipy.sparse import csr_matrix, identity  # optional: scipy comes with Lava

    stacked = np.stack([to_lava_order(frame) for frame in data], axis=-1)
    procs: dict[str, object] = {net.input_name: RingBuffer(data=stacked.astype(np.int32))}
    for name, lif in net.lifs.items():
        bias = 0 if lif.bias_mant is None else to_lava_order(lif.bias_mant)
        kw = dict(shape=lava_shape(lif.shape), du=lif.du, dv=lif.dv, vth=lif.vth,
                  bias_mant=bias, bias_exp=6, name=name)
        if 0 < lif.reset_step < len(data):
            # Lava counts steps from 1 and resets before the step's update: our step r is its
            # step r + 1; one sample per run, so the interval is the run's length
            procs[name] = LIFReset(**kw, reset_interval=len(data),
                                   reset_offset=(lif.reset_step + 1) % len(data))
        else:
            procs[name] = LIF(**kw)
    for name, syn in net.synapses.items():
        bits = GRADED_BITS if syn.graded else 0
        if syn.kind == "dense":
            procs[name] = Dense(weights=syn.weight, num_message_bits=bits, name=name)
        else:
            procs[name] = Conv(weight=syn.weight, input_shape=lava_shape(syn.in_shape),
                               padding=syn.padding, stride=syn.stride, dilation=syn.dilation,
                               groups=syn.groups, num_message_bits=bits, name=name)
    for name, line in net.lines.items():
        # 1 + delay identity Sparse hops in a chain, the last one carrying the weight: each hop
        # is one step, as a DelaySparse's extra delays are, without the DelaySparse model's
        # per-step rebuild of its delay matrices (measured: minutes per sample at 34x34x8)
        hops = []
        for k in range(line.delay + 1):
            weight = line.weight if k == line.delay else 1
            matrix = csr_matrix(identity(line.size, dtype=np.int32, format="csr") * weight)
            hops.append(Sparse(weights=matrix, num_message_bits=GRADED_BITS,
                               name=f"{name}_{k}"))
        for a, b in zip(hops[:-1], hops[1:], strict=True):
            a.a_out.connect(b.s_in)
        procs[name] = _Chain(hops[0].s_in, hops[-1].a_out)
    for edge in net.edges:
        _connect(procs[edge.src], procs[edge.dst])
    return procs[net.input_name], {n: procs[n] for n in net.lifs}


@dataclass
class _Chain:
    """A chain of processes seen as one: its first input and its last output."""

    s_in: object
    a_out: object


def _connect(src, dst) -> None:
    out = src.s_out if hasattr(src, "s_out") else src.a_out
    inp = dst.a_in if hasattr(dst, "a_in") else dst.s_in
    if tuple(out.shape) != tuple(inp.shape):
        out = out.reshape(tuple(inp.shape))
    out.connect(inp)
