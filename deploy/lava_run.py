"""Run a network in Lava (``Loihi2SimCfg(select_tag='fixed_pt')``), in a subprocess.

Two paths: ``run_netx`` loads a netx HDF5 file (sequential nets), ``run_graph`` builds the
process graph of a NIR file with ``deploy/to_lava.py`` (any graph Lava can hold: residual nets).

A failing Lava run hangs in ``stop()`` and leaves child processes behind (measured with
lava-nc 0.10.0), so both start ``python -m spikeline.deploy.lava_run`` in its own process
group with a timeout and kill the whole group when it expires.

Lava's layers each add one step of synaptic delay (layer i's step t is Lava's step t + i + 1),
so the netx run is ``T + layers`` steps long on a zero-padded input; ``run_netx`` returns
every layer's spikes (and the readout's voltage) re-aligned to the trained model's time axis,
``[T, C, H, W]`` per layer.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import nir
import numpy as np

from spikeline.errors import SpikelineError

from .to_lava import build, lower

S_SCALE = 4096  # Lava states are 4096 x SLAYER's


def run_netx(net_path, x: np.ndarray, timeout: float = 300.0) -> dict[str, np.ndarray]:
    """``x``: binary input ``[T, C, H, W]``.  Returns ``{'layer<i>': spikes [T, *shape],
    'readout': voltage [T, K]}`` aligned with the trained model (our step t)."""
    return _run_child("netx", net_path, x, timeout)


def run_graph(nir_path, x: np.ndarray, timeout: float = 300.0) -> dict[str, np.ndarray]:
    """Run the NIR graph at ``nir_path`` as a Lava process graph (``to_lava.build``) on
    ``x`` ``[steps, N, *input_shape]`` (the network input, padded as the graph's metadata
    says), one sample after another in one subprocess.  Returns, per neuron node, its spikes
    (CubaLIF) or voltage (CubaLI readout, in the trained network's units) ``[steps, N, *shape]``;
    Lava's step ``i`` is the trained network's step ``i``."""
    return _run_child("graph", nir_path, x, timeout)


def _run_child(kind: str, path, x: np.ndarray, timeout: float) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "input.npy", Path(tmp) / "out.npz"
        np.save(inp, np.asarray(x, dtype=np.float32))
        cmd = [sys.executable, "-m", "spikeline.deploy.lava_run", kind, str(path), str(inp),
               str(out)]
        net_path = path
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, text=True)
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            log, _ = proc.communicate()
            # a process model that raised leaves the runtime hanging in stop(): say what it was
            tail = f"; its output ends:\n{log[-1500:]}" if log and log.strip() else ""
            raise SpikelineError(f"Lava run of {net_path} did not finish in {timeout:.0f} s "
                                 f"(killed){tail}") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode != 0 or not out.exists():
            raise SpikelineError(f"Lava run of {net_path} failed:\n{log[-3000:]}")
        with np.load(out) as data:
            return {key: data[key] for key in data.files}


def patch_conv_int8_params() -> None:
    """Work around lava-nc 0.10's Conv model under NumPy >= 2, exactly.

    ``PyConvModelFixed`` keeps ``kernel_size``, ``stride``, ``padding``, ``dilation`` and
    ``groups`` as int8 Vars and passes them to ``lava.proc.conv.utils.conv``, whose
    ``conv_scipy`` computes ``channels % groups``: under NumPy 2's promotion rules (NEP 50) a
    Python int of 128 or more against an int8 raises ``OverflowError: Python integer 128 out
    of bounds for int8`` in the Conv process, for any layer with 128 or more input or output
    channels (measured: lava-nc 0.10.0, NumPy 2.4; the runtime then hangs in ``stop()``).  The
    same values as int64 give the same convolution (the arithmetic is unchanged); the Lava
    processes are forked from this one, so patching the module function here reaches them.
    """
    from lava.proc.conv import utils  # optional: Lava is installed by make install only

    if getattr(utils.conv, "spikeline_int64_params", False):
        return
    original = utils.conv

    def conv(input_, weight, kernel_size, stride, padding, dilation, groups):
        wide = [np.asarray(v, dtype=np.int64) for v in (kernel_size, stride, padding, dilation)]
        return original(input_, weight, *wide, int(groups))

    conv.spikeline_int64_params = True
    utils.conv = conv


def _whc_to_chw(a: np.ndarray, shape) -> np.ndarray:
    """Lava's [steps, W, H, C] (or [steps, N]) -> [steps, C, H, W]."""
    if len(shape) == 3:
        return a.reshape(a.shape[0], *shape[::-1]).transpose(0, 3, 2, 1)
    return a.reshape(a.shape[0], *shape)


def _main(net_path: str, input_path: str, out_path: str) -> None:
    from lava.lib.dl import netx  # optional: Lava is installed by make install only
    from lava.magma.core.run_conditions import RunSteps  # optional: as above
    from lava.magma.core.run_configs import Loihi2SimCfg  # optional: as above
    from lava.proc import io  # optional: as above
    from lava.proc.monitor.process import Monitor  # optional: as above

    x = np.load(input_path)  # [T, C, H, W]
    steps, (c, h, w) = x.shape[0], x.shape[1:]
    net = netx.hdf5.Network(net_config=net_path, input_shape=(w, h, c))
    depth = len(net.layers)
    total = steps + depth
    padded = np.zeros((total, c, h, w), dtype=np.float32)
    padded[:steps] = x
    source = io.source.RingBuffer(data=padded.transpose(3, 2, 1, 0))  # W, H, C, T
    source.s_out.connect(net.inp)
    monitors = []
    for i, layer in enumerate(net.layers):
        var = layer.neuron.v if i == depth - 1 else layer.neuron.s_out
        monitor = Monitor()
        monitor.probe(var, total)
        monitors.append((monitor, var))
    try:
        net.run(condition=RunSteps(num_steps=total),
                run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        result = {}
        for i, ((monitor, var), layer) in enumerate(zip(monitors, net.layers)):
            data = monitor.get_data()[var.process.name][var.name]
            shape = tuple(int(v) for v in layer.shape)[::-1]  # Lava: W, H, C -> C, H, W
            # layer i's state of our step t is Lava's at step t + i + 1 (one delay per layer)
            aligned = _whc_to_chw(data, shape)[i + 1:i + 1 + steps]
            if i == depth - 1:
                result["readout"] = aligned / S_SCALE
            else:
                result[f"layer{i}"] = aligned
    finally:
        net.stop()
    np.savez(out_path, **result)


def _main_graph(nir_path: str, input_path: str, out_path: str) -> None:
    from lava.magma.core.run_conditions import RunSteps  # optional: Lava, make install only
    from lava.magma.core.run_configs import Loihi2SimCfg  # optional: as above
    from lava.proc.monitor.process import Monitor  # optional: as above

    patch_conv_int8_params()
    net = lower(nir.read(nir_path))
    x = np.load(input_path)  # [steps, N, *input_shape]
    steps = x.shape[0]
    per_sample: dict[str, list[np.ndarray]] = {name: [] for name in net.lifs}
    for i in range(x.shape[1]):
        source, lifs = build(net, x[:, i])
        monitors = {}
        for name, proc in lifs.items():
            var = proc.v if net.lifs[name].readout else proc.s_out
            monitor = Monitor()
            monitor.probe(var, steps)
            monitors[name] = (monitor, var)
        try:
            source.run(condition=RunSteps(num_steps=steps),
                       run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            for name, (monitor, var) in monitors.items():
                data = np.asarray(monitor.get_data()[var.process.name][var.name])
                shape = net.lifs[name].shape
                data = _whc_to_chw(data, shape).astype(np.float32)
                if net.lifs[name].readout:
                    data = data / S_SCALE
                per_sample[name].append(data)
        finally:
            source.stop()
    np.savez(out_path, **{name: np.stack(v, axis=1) for name, v in per_sample.items()})


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:5]
    (_main_graph if kind == "graph" else _main)(*args)
