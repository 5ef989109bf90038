"""spikeline: event data -> trained spiking network -> verified neuromorphic artifact -> energy.

The Python API (``import spikeline as sl``)::

    sl.TrainConfig(...)                       what defines a training run
    sl.train(config, out, progress=None)      -> sl.Run        (sl.Run.load(path), run.evaluate())
    sl.export(run_or_model, out, formats=...) -> sl.Artifact   (sl.Artifact.load(path))
    sl.verify(artifact, inputs, backends=...) -> sl.Certificate
    sl.energy(artifact, inputs, convention=..., hardware=...) -> sl.EnergyReport
    sl.simulate(graph_or_path, events_or_frames) -> sl.SimulationResult
    sl.load_dataset(name, split)              frames of event counts
    sl.models.build(name, ...)                the registry; sl.models.* blocks for your own

See ``spikeline.api`` for the arguments.  The command line (``spikeline ...``) calls the same
workflow (``spikeline.workflow``).
"""
import importlib

__version__ = "0.1.0"

# The API's names load on first use (PEP 562): `import spikeline` alone, which every
# `spikeline` command does before parsing its flags, takes 0.1 s; the API imports torch and nir,
# 2.9 s (measured on this machine).
_API = {
    "TrainConfig": "spikeline.pipeline.config",
    "train": "spikeline.api", "export": "spikeline.api", "verify": "spikeline.api",
    "energy": "spikeline.api", "simulate": "spikeline.api", "load_dataset": "spikeline.api",
    "Run": "spikeline.results", "Artifact": "spikeline.results",
    "Certificate": "spikeline.results", "EnergyReport": "spikeline.results",
    "SimulationResult": "spikeline.results",
    "SpikelineError": "spikeline.errors", "BadInput": "spikeline.errors",
    "DataNotFound": "spikeline.errors", "VerifyFailed": "spikeline.errors",
}

__all__ = ["Artifact", "BadInput", "Certificate", "DataNotFound", "EnergyReport", "Run",
           "SimulationResult", "SpikelineError", "TrainConfig", "VerifyFailed", "__version__",
           "energy", "export", "load_dataset", "models", "simulate", "train", "verify"]


def __getattr__(name):
    if name == "models":
        return importlib.import_module("spikeline.models")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'spikeline' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
