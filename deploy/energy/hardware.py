"""Hardware energy models: the schema of ``hardware.toml`` and its loader.

A model is ``kind = "cmos"`` (arithmetic of one number format: ``mac``, ``ac``; ``word_bytes``)
or ``kind = "neuromorphic"`` (per-event figures of a chip: ``synop`` [+ ``synop_conv``,
``graded_synop``, ``neuron_active``, ``neuron_inactive``, ``spike``]).  Each constant is
``{ pj = <picojoules>, source = "...", [pre_silicon = true|false] }``.  Model flags:

- ``measured`` (default true): false for assumed prices (Loihi 2 publishes no per-operation
  energy); every table, JSON entry and plot then says "not measured";
- ``graded_spikes`` (neuromorphic, default false): the chip sends integer payloads (Loihi 2);
  a chip without them refuses graded events instead of pricing them as one spike;
- ``ann_baseline``: the cmos model that prices the ANN of the same architecture.

The file's ``[memory]`` table holds the SRAM access energies (per access, by memory size) that
the Lemaire convention interpolates; see :class:`Memory`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import tomllib

from spikeline.errors import SpikelineError

__all__ = ["Constant", "HardwareModel", "Memory", "load_hardware_models", "load_memory",
           "select_models", "DEFAULT_HARDWARE_FILE"]

DEFAULT_HARDWARE_FILE = Path(__file__).with_name("hardware.toml")
DEFAULT_ANN_BASELINE = "cmos45_int8"  # prices the ANN equivalent of neuromorphic models
PJ = 1e-12


@dataclass(frozen=True)
class Constant:
    """One energy figure: ``joules`` (the file stores ``pj``), its ``source`` and whether it
    comes from pre-silicon simulation (``pre_silicon``; None = not stated)."""

    joules: float
    source: str
    pre_silicon: bool | None = None

    def __post_init__(self):
        if not (math.isfinite(self.joules) and self.joules >= 0):
            raise ValueError(f"energy must be finite and >= 0, got {self.joules}")
        if not self.source.strip():
            raise ValueError("source must be a non-empty string")


MODEL_KINDS = {
    # kind: (required priced constants, optional priced constants)
    "cmos": (("mac", "ac"), ()),
    "neuromorphic": (("synop",), ("synop_conv", "graded_synop", "neuron_active",
                                  "neuron_inactive", "spike")),
}
FLAGS = {"cmos": ("measured", "word_bytes"), "neuromorphic": ("measured", "graded_spikes")}


@dataclass(frozen=True)
class HardwareModel:
    """A hardware energy model (module docstring).  ``ann_mac`` / ``ann_ac`` / ``ann_word_bytes``
    are the ``ann_baseline`` model's, which prices the ANN of the same architecture."""

    name: str
    kind: str
    description: str
    constants: Mapping[str, Constant]
    ann_baseline: str
    unpriced: Mapping[str, Constant] = field(default_factory=dict)
    ann_mac: float = 0.0
    ann_ac: float = 0.0
    measured: bool = True
    graded_spikes: bool = False
    word_bytes: int = 4
    ann_word_bytes: int = 4

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {sorted(MODEL_KINDS)}, got {self.kind!r}")
        required, optional = MODEL_KINDS[self.kind]
        missing = [c for c in required if c not in self.constants]
        unknown = [c for c in self.constants if c not in required + optional]
        if missing or unknown:
            raise ValueError(f"constants missing {missing} / unknown {unknown}; kind "
                             f"{self.kind!r} takes {list(required)} and optionally "
                             f"{list(optional)}")
        if self.word_bytes < 1 or self.ann_word_bytes < 1:
            raise ValueError("word_bytes must be >= 1")

    def joules(self, key: str) -> float:
        c = self.constants.get(key)
        return c.joules if c is not None else 0.0

    @property
    def pre_silicon(self) -> bool | None:
        """True if any priced constant is pre-silicon; None if no constant says."""
        flags = [c.pre_silicon for c in self.constants.values() if c.pre_silicon is not None]
        return any(flags) if flags else None


@dataclass(frozen=True)
class Memory:
    """SRAM access energy by memory size: ``points`` = ``((bytes, pJ per access), ...)``,
    increasing, interpolated linearly between points and held at the last one beyond it
    (Lemaire et al. 2022 interpolate Horowitz's 8 kB / 32 kB / 1 MB figures from 0); ``fifo_words``
    = the spike FIFO an event-driven core reads inputs from and writes outputs to."""

    points: tuple[tuple[float, float], ...]
    source: str
    fifo_words: int = 1000

    def __post_init__(self):
        pts = tuple((float(b), float(e)) for b, e in self.points)
        object.__setattr__(self, "points", pts)
        if len(pts) < 2 or any(not (math.isfinite(b) and math.isfinite(e) and b >= 0 and e >= 0)
                               for b, e in pts):
            raise ValueError("memory points must be >= 2 finite (bytes, pJ) pairs >= 0")
        if any(b2 <= b1 for (b1, _), (b2, _) in zip(pts, pts[1:])):
            raise ValueError("memory point sizes must increase strictly")
        if self.fifo_words < 1:
            raise ValueError("fifo_words must be >= 1")

    def access_joules(self, size_bytes: float) -> float:
        """Energy of one access to a memory of ``size_bytes`` (J)."""
        pts = self.points
        size = min(max(size_bytes, pts[0][0]), pts[-1][0])
        for (b0, e0), (b1, e1) in zip(pts, pts[1:]):
            if size <= b1:
                return (e0 + (e1 - e0) * (size - b0) / (b1 - b0)) * PJ
        return pts[-1][1] * PJ  # pragma: no cover - the clamp above keeps size <= last point


def _parse_constant(raw, where: str) -> Constant:
    if not isinstance(raw, dict):
        raise SpikelineError(f"{where}: expected a table {{ pj = <number>, source = \"...\" "
                             f"[, pre_silicon = true|false] }}, got {raw!r}")
    extra = set(raw) - {"pj", "source", "pre_silicon"}
    if extra:
        raise SpikelineError(f"{where}: unknown key(s) {sorted(extra)}; expected pj, source, "
                             f"pre_silicon")
    pj, source, pre = raw.get("pj"), raw.get("source"), raw.get("pre_silicon")
    if isinstance(pj, bool) or not isinstance(pj, (int, float)) or not math.isfinite(pj) or pj < 0:
        raise SpikelineError(f"{where}.pj: expected a number of picojoules >= 0, got {pj!r}")
    if not isinstance(source, str) or not source.strip():
        raise SpikelineError(f"{where}.source: expected a non-empty string naming where the "
                             f"figure comes from, got {source!r}")
    if pre is not None and not isinstance(pre, bool):
        raise SpikelineError(f"{where}.pre_silicon: expected true or false, got {pre!r}")
    return Constant(joules=float(pj) * PJ, source=source, pre_silicon=pre)


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SpikelineError(f"{path}: no such hardware model file") from None
    except tomllib.TOMLDecodeError as err:
        raise SpikelineError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise SpikelineError(f"{path}: cannot read ({err})") from None


def _parse_flag(raw, key: str, where: str, default):
    value = raw.get(key, default)
    if key == "word_bytes":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpikelineError(f"{where}.word_bytes: expected an integer >= 1, got {value!r}")
    elif not isinstance(value, bool):
        raise SpikelineError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _parse_models(path: Path) -> dict[str, dict]:
    data = _read(path)
    extra = set(data) - {"models", "memory"}
    if extra:
        raise SpikelineError(f"{path}: unknown top-level key(s) {sorted(extra)}; expected "
                             f"[models.NAME] tables and an optional [memory] table")
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise SpikelineError(f"{path}: expected at least one [models.NAME] table")
    parsed = {}
    for name, raw in models.items():
        where = f"{path}: models.{name}"
        if not isinstance(raw, dict):
            raise SpikelineError(f"{where}: expected a table")
        kind = raw.get("kind")
        if kind not in MODEL_KINDS:
            raise SpikelineError(f"{where}.kind: expected one of {sorted(MODEL_KINDS)}, "
                                 f"got {kind!r}")
        required, optional = MODEL_KINDS[kind]
        allowed = {"kind", "description", "ann_baseline", "unpriced", *FLAGS[kind], *required,
                   *optional}
        extra = set(raw) - allowed
        if extra:
            raise SpikelineError(f"{where}: unknown key(s) {sorted(extra)}; a {kind!r} model "
                                 f"takes {sorted(allowed)}")
        missing = [k for k in required if k not in raw]
        if missing:
            raise SpikelineError(f"{where}: missing constant(s) {missing} (a {kind!r} model "
                                 f"needs {list(required)})")
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise SpikelineError(f"{where}.description: expected a string")
        baseline = raw.get("ann_baseline", name if kind == "cmos" else DEFAULT_ANN_BASELINE)
        if not isinstance(baseline, str):
            raise SpikelineError(f"{where}.ann_baseline: expected the name of a cmos model that "
                                 f"prices the ANN equivalent, got {baseline!r}")
        unpriced = raw.get("unpriced", {})
        if not isinstance(unpriced, dict):
            raise SpikelineError(f"{where}.unpriced: expected a table of constants")
        parsed[name] = {
            "name": name, "kind": kind, "description": description, "ann_baseline": baseline,
            "constants": {k: _parse_constant(raw[k], f"{where}.{k}")
                          for k in (*required, *optional) if k in raw},
            "unpriced": {k: _parse_constant(v, f"{where}.unpriced.{k}")
                         for k, v in unpriced.items()},
            "measured": _parse_flag(raw, "measured", where, True),
            "graded_spikes": _parse_flag(raw, "graded_spikes", where, False)
            if kind == "neuromorphic" else False,
            "word_bytes": _parse_flag(raw, "word_bytes", where, 4) if kind == "cmos" else 4,
            "file": path,
        }
    return parsed


def load_hardware_models(path: str | Path | None = None) -> dict[str, HardwareModel]:
    """The bundled models of ``hardware.toml``, extended / overridden by ``path``.

    ``path``'s ``[models.NAME]`` tables add models, or replace a bundled model of the same name.
    A malformed file raises :class:`SpikelineError` naming the file, the field and what was
    expected.  A neuromorphic model's ``ann_baseline`` (default ``cmos45_int8``) must name a
    ``cmos`` model (from either file), whose ``mac``/``ac`` energies price the ANN equivalent.
    """
    raw = _parse_models(DEFAULT_HARDWARE_FILE)
    if path is not None:
        raw.update(_parse_models(Path(path)))
    models = {}
    for name, entry in raw.items():
        base = raw.get(entry["ann_baseline"])
        if base is None or base["kind"] != "cmos":
            raise SpikelineError(f"{entry['file']}: models.{name}.ann_baseline: "
                                 f"{entry['ann_baseline']!r} is not a cmos model; expected one "
                                 f"of {sorted(k for k, v in raw.items() if v['kind'] == 'cmos')}")
        models[name] = HardwareModel(
            name=name, kind=entry["kind"], description=entry["description"],
            constants=entry["constants"], ann_baseline=entry["ann_baseline"],
            unpriced=entry["unpriced"], ann_mac=base["constants"]["mac"].joules,
            ann_ac=base["constants"]["ac"].joules, measured=entry["measured"],
            graded_spikes=entry["graded_spikes"], word_bytes=entry["word_bytes"],
            ann_word_bytes=base["word_bytes"])
    return models


def load_memory(path: str | Path | None = None) -> Memory:
    """The ``[memory]`` table of ``path`` if it has one, else the bundled file's."""
    for source in ([Path(path)] if path is not None else []) + [DEFAULT_HARDWARE_FILE]:
        table = _read(source).get("memory")
        if table is None:
            continue
        where = f"{source}: memory"
        if not isinstance(table, dict) or set(table) - {"sram", "source", "fifo_words"}:
            raise SpikelineError(f"{where}: expected a table with sram = [[bytes, pj], ...], "
                                 "source = \"...\" and optional fifo_words")
        try:
            return Memory(points=tuple(tuple(p) for p in table["sram"]),
                          source=str(table["source"]), fifo_words=int(table.get("fifo_words",
                                                                                1000)))
        except (KeyError, TypeError, ValueError) as err:
            raise SpikelineError(f"{where}: {err}") from None
    raise SpikelineError(f"{DEFAULT_HARDWARE_FILE}: no [memory] table")


def select_models(models: Mapping[str, HardwareModel], names) -> list[HardwareModel]:
    """The models called ``names`` (all when ``names`` is empty); unknown names raise."""
    if not names:
        return list(models.values())
    unknown = [n for n in names if n not in models]
    if unknown:
        raise SpikelineError(f"unknown hardware model(s) {unknown}; expected one of "
                             f"{sorted(models)} (add models with --hardware-file FILE)")
    return [models[n] for n in names]
