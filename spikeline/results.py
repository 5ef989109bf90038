"""What the Python API returns: data, with ``.to_json()``, a readable ``repr``, a Markdown table
in a notebook (``_repr_markdown_``) and ``.plot()`` where a figure says more than a table.

- :class:`Run`: a training run folder (config, per-epoch records, summary); its curves.
- :class:`Artifact`: an export folder (graph, metadata, files, deployed accuracy).
- :class:`Certificate`: verify's answer, backend by backend.
- :class:`EnergyReport`: counted operations priced in joules; energy per layer.
- :class:`SimulationResult`: every node's output over time; spike rates per layer.

Figures are ``matplotlib.figure.Figure`` objects made outside pyplot's global state (a notebook
shows them; nothing needs closing).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nir
import torch

from spikeline.deploy.artifact import ExportMeta, graph_input_shape, read_model
from spikeline.deploy.energy.report import json_text, layers_figure, to_markdown, write_report
from spikeline.deploy.simulate import Simulation
from spikeline.deploy.verify import VerifyReport
from spikeline.errors import BadInput, DataNotFound
from spikeline.pipeline.checkpoint import load_run_model
from spikeline.pipeline.config import TrainConfig
from spikeline.pipeline.plots import curves_figure
from spikeline.pipeline.train import task_for
from spikeline.workflow import evaluate_run

__all__ = ["Artifact", "Certificate", "EnergyReport", "Run", "SimulationResult"]


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _table(rows: list[tuple[str, object]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


def _displayable(fig):
    """``fig`` (a ``matplotlib.figure.Figure``, outside pyplot), shown where it is returned.

    In IPython (a notebook) the kernel's matplotlib backend is loaded once: the inline one
    registers how a Figure is shown (as a PNG), which ``%matplotlib inline`` did and a bare
    Figure does not trigger.  No backend is chosen, and a script loads nothing."""
    ipython = sys.modules.get("IPython")
    if ipython is not None and ipython.get_ipython() is not None:
        import matplotlib  # lazy: as the figure's own import (matplotlib, 0.9 s, measured)
        from matplotlib.backends.registry import backend_registry  # lazy: as above

        backend_registry.load_backend_module(matplotlib.get_backend())
    return fig


def _dumps(data) -> str:
    return json.dumps(data, indent=2, default=str)


def _read_json(path: Path, missing_ok: bool = False):
    if missing_ok and not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise DataNotFound(f"{path}: cannot read ({err.strerror or err})") from None
    except ValueError as err:
        raise BadInput(f"{path}: not valid JSON ({err})") from None


# ---- a training run -------------------------------------------------------------------------

@dataclass
class Run:
    """A training run folder: ``config`` (``TrainConfig``), ``history`` (one record per epoch,
    as ``metrics.jsonl``), ``summary`` (``summary.json``: validation and test scores of
    ``best.pt``; empty while the run has not finished an invocation)."""

    path: Path
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path) -> Run:
        """The run in folder ``path`` (written by ``sl.train`` or ``spikeline train``)."""
        path = Path(path)
        if not path.is_dir():
            raise DataNotFound(f"{path}: no such run folder")
        stored = _read_json(path / "config.json")
        if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
            raise BadInput(f"{path / 'config.json'}: expected {{'config': {{...}}, ...}}")
        history = []
        metrics = path / "metrics.jsonl"
        if metrics.is_file():
            for number, line in enumerate(metrics.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        history.append(json.loads(line))
                    except ValueError as err:
                        raise BadInput(f"{metrics}: line {number} is not JSON ({err})") from None
        summary = _read_json(path / "summary.json", missing_ok=True) or {}
        return cls(path, TrainConfig.from_dict(stored["config"]), history, summary)

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def finished(self) -> bool:
        return bool(self.summary.get("finished"))

    @property
    def val_score(self):
        """best.pt's validation score (accuracy; detection: mAP@0.5)."""
        return self.summary.get(task_for(self.config).metric)

    @property
    def test_score(self):
        """best.pt's test score, evaluated once (accuracy; detection: mAP@0.5)."""
        return self.summary.get("test_" + task_for(self.config).metric[4:])

    def model(self, checkpoint: str = "best") -> torch.nn.Module:
        """The trained main network (heads stripped, eval mode) of ``checkpoint``."""
        return load_run_model(self.path, checkpoint)[0]

    def evaluate(self, checkpoint: str = "best", *, device: str = "auto", data_dir=None,
                 cache_dir=None, batch_size: int | None = None,
                 limit_test: int | None = None) -> dict:
        """Test score of ``checkpoint``'s stripped network: ``test_acc`` (detection: ``mAP50``,
        ``mAP50_95``), with the sample count; what ``spikeline evaluate --json`` prints."""
        return evaluate_run(self.path, checkpoint, device=device, data_dir=data_dir,
                            cache_dir=cache_dir, batch_size=batch_size, limit_test=limit_test)

    def to_json(self) -> str:
        return _dumps({"path": str(self.path), "config": self.config.to_dict(),
                       "history": self.history, "summary": self.summary})

    def __repr__(self) -> str:
        metric = task_for(self.config).metric[4:]
        return (f"Run({str(self.path)!r}, {self.config.model} on {self.config.dataset}, "
                f"{len(self.history)}/{self.config.epochs} epochs, val {metric} "
                f"{self.val_score!r}, test {metric} {self.test_score!r})")

    def _repr_markdown_(self) -> str:
        c, metric = self.config, task_for(self.config).metric[4:]
        show = _pct if metric == "acc" else (lambda v: "n/a" if v is None else f"{v:.4f}")
        return f"**Run** `{self.path}`\n\n" + _table([
            ("task", c.task), ("model", c.model), ("dataset", c.dataset),
            ("heads", c.heads), ("T", c.T), ("size", c.size),
            ("epochs", f"{len(self.history)} of {c.epochs}"),
            ("best epoch", (self.summary.get("best") or {}).get("epoch")),
            (f"validation {metric}", show(self.val_score)),
            (f"test {metric} (best.pt, once)", show(self.test_score))])

    def plot(self):
        """Training curves: loss, and the task's scores per epoch (a Figure)."""
        t = task_for(self.config)
        return _displayable(curves_figure(self.history,
                                          f"{self.config.model} / {self.config.dataset}",
                                          t.plot_series, t.plot_label, t.plot_scale))


# ---- an export ------------------------------------------------------------------------------

@dataclass
class Artifact:
    """An export folder: ``graph`` (``model.nir``), ``meta`` (``metadata.json``, typed:
    ``deploy.artifact.ExportMeta``), the files written and the formats skipped (with why), and
    ``deployed``: the deployed network's test score beside the trained one's, when it was
    measured (``sl.export(run, ...)``)."""

    path: Path
    graph: nir.NIRGraph
    meta: ExportMeta
    deployed: dict | None = None

    @classmethod
    def load(cls, path) -> Artifact:
        """The export folder ``path``; it must be complete and consistent (its manifest)."""
        path = Path(path)
        if not path.is_dir():
            raise DataNotFound(f"{path}: no such export folder (a .nir file of another tool "
                               "goes to sl.simulate and sl.energy as it is)")
        graph, meta, _ = read_model(path)
        if meta is None:
            raise DataNotFound(f"{path}: no metadata.json (expected a folder written by "
                               "sl.export or `spikeline export`)")
        return cls(path, graph, meta)

    @property
    def files(self) -> dict:
        return dict(self.meta.files)

    @property
    def skipped(self) -> dict:
        return dict(self.meta.skipped)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return graph_input_shape(self.graph)

    @property
    def T(self) -> int | None:
        return self.meta.T

    def to_json(self) -> str:
        return _dumps({"path": str(self.path), "metadata": self.meta.raw,
                       "deployed": self.deployed})

    def __repr__(self) -> str:
        return (f"Artifact({str(self.path)!r}, files {sorted(self.files.values())}, input "
                f"{list(self.input_shape)}, T {self.T})")

    def _repr_markdown_(self) -> str:
        m = self.meta
        rows = [("task", m.task), ("files", ", ".join(sorted(self.files.values()))),
                ("input", list(self.input_shape)), ("T", self.T),
                ("encoding", m.input_encoding), ("timing", m.timing.timing),
                ("latency steps", m.timing.latency_steps),
                ("nodes", len(self.graph.nodes))]
        rows += [(f"not written: {k}", v) for k, v in self.skipped.items()]
        if self.deployed:
            rows += [(k.replace("_", " "), v) for k, v in self.deployed.items()]
        return f"**Artifact** `{self.path}`\n\n" + _table(rows)


# ---- verify ---------------------------------------------------------------------------------

@dataclass
class Certificate:
    """verify's answer: each backend against the trained network, spike for spike.  ``ok``:
    every requested backend ran and matched on an input that made neurons spike."""

    report: VerifyReport
    allow_skip: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> list[str]:
        return self.report.problems(allow_skip=self.allow_skip)

    @property
    def checked_by(self) -> list[str]:
        return self.report.checked_by

    @property
    def backends(self):
        return self.report.backends

    def to_json(self) -> str:
        return _dumps(self.report.to_dict())

    def __repr__(self) -> str:
        state = "OK" if self.ok else "FAILED: " + "; ".join(self.problems)
        return (f"Certificate({state}; checked by {self.checked_by}; {self.report.samples} "
                f"sample(s) x {self.report.steps} steps, {self.report.reference_spikes} "
                "reference spikes)")

    def _repr_markdown_(self) -> str:
        head = ("**Certificate: OK**" if self.ok else
                "**Certificate: FAILED** (" + "; ".join(self.problems) + ")")
        rows = "\n".join(f"| {b.backend} | {b.status} | {b.mismatches} | {b.compared} | "
                         f"{b.reference or '-'} | {b.note.strip()} |" for b in self.backends)
        return (f"{head}: {self.report.samples} sample(s), {self.report.steps} steps, "
                f"{self.report.reference_spikes} reference spikes\n\n"
                "| backend | status | mismatches | compared | reference | note |\n"
                "|---|---|---|---|---|---|\n" + rows + "\n")


# ---- energy ---------------------------------------------------------------------------------

@dataclass
class EnergyReport:
    """Operations counted on real inputs and priced per inference: ``report`` is the full
    JSON-ready report (``deploy/energy/report.py``); the headline fields are the primary
    estimate's (the first convention / hardware pair priced)."""

    report: dict

    @property
    def convention(self) -> str:
        return self.report["convention"]

    @property
    def hardware(self) -> str:
        return self.report["hardware"]

    @property
    def snn_joules(self) -> float:
        """The SNN's energy per inference, primary estimate."""
        return self.report["snn"]["total_J"]

    @property
    def ann_joules(self) -> float:
        """The ANN of the same architecture, same convention and hardware."""
        return self.report["ann"]["total_J"]

    @property
    def estimates(self) -> dict:
        """Every priced ``convention/hardware`` pair."""
        return self.report["energy"]

    @property
    def layers(self) -> list[dict]:
        return self.report["layers"]

    def to_json(self) -> str:
        return json_text(self.report)

    def save(self, directory) -> dict:
        """Write energy.json, energy.md and the two figures into ``directory``."""
        return write_report(self.report, directory)

    def __repr__(self) -> str:
        return (f"EnergyReport({self.convention} on {self.hardware}: SNN "
                f"{self.snn_joules:.3g} J vs ANN {self.ann_joules:.3g} J per inference, "
                f"{len(self.estimates)} estimate(s))")

    def _repr_markdown_(self) -> str:
        return to_markdown(self.report)

    def plot(self):
        """Operations and energy per layer (a Figure)."""
        return _displayable(layers_figure(self.report))


# ---- simulate -------------------------------------------------------------------------------

@dataclass
class SimulationResult:
    """Every node's output over time (``outputs[name]``: ``[T, N, *shape]``, spikes for
    spiking neurons) and ``summary``: what ``spikeline simulate`` prints."""

    simulation: Simulation
    summary: dict

    @property
    def outputs(self) -> dict[str, torch.Tensor]:
        return self.simulation.outputs

    @property
    def output(self) -> torch.Tensor:
        """The Output node's values (a graph with several Output nodes: read ``outputs``)."""
        return self.simulation.output

    def spike_rates(self) -> dict[str, float]:
        """Spikes per neuron and step, per spiking node."""
        return {n: count / max(self.outputs[n].numel(), 1)
                for n, count in self.summary["spikes_per_node"].items()}

    def to_json(self) -> str:
        return _dumps(self.summary)

    def __repr__(self) -> str:
        return (f"SimulationResult({self.summary['samples']} sample(s) x {self.summary['T']} "
                f"steps, {len(self.outputs)} nodes, "
                f"{sum(self.summary['spikes_per_node'].values())} spikes)")

    def _repr_markdown_(self) -> str:
        rates = self.spike_rates()
        return (f"**Simulation**: {self.summary['samples']} sample(s), {self.summary['T']} "
                "steps\n\n| node | spikes | rate (per neuron and step) |\n|---|---|---|\n"
                + "\n".join(f"| {n} | {s} | {rates[n]:.4f} |"
                            for n, s in self.summary["spikes_per_node"].items()) + "\n")

    def plot(self):
        """Spike rate per spiking layer (a Figure)."""
        from matplotlib.figure import Figure  # lazy: matplotlib, 0.9 s (measured)

        rates = self.spike_rates()
        fig = Figure(figsize=(max(5.0, 0.7 * len(rates) + 2), 3.5))
        ax = fig.subplots()
        ax.bar(range(len(rates)), list(rates.values()), color="tab:blue")
        ax.set_xticks(range(len(rates)))
        ax.set_xticklabels(list(rates), rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("spikes per neuron and step")
        ax.set_title("Spike rate per layer")
        fig.tight_layout()
        return _displayable(fig)
