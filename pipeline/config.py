"""Every training option once: its type, default, help and validator (``TrainConfig``).

``TrainConfig`` is what defines a run (stored in every checkpoint; ``--resume`` reuses it);
``Runtime`` is how one invocation runs (device, workers, where to write).  Each field carries
its command-line form in ``dataclasses.field(metadata=...)``:

- ``help``: the option's help text (the default is appended);
- ``parse``: ``str -> value`` for the command line (also used for TOML strings);
- ``check``: ``value -> None``, raising ``ValueError`` with what was expected;
- ``choices``: the allowed values, where there is a fixed set;
- ``flag``: the option's name when it is not ``--field-name``.

``spikeline/cli/options.py`` builds the ``train``, ``run`` and ``diagnose`` options from these,
and ``TrainConfig.__post_init__`` runs the same checks, so a value from the command line, a
TOML recipe or a checkpoint is checked once, in one place, and an error names the field.

A recipe is a TOML file of ``TrainConfig`` fields (``load_toml``); flags given on the command
line override it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from spikeline.errors import BadInput

__all__ = [
    "AMP_MODES",
    "BATCHNORMS",
    "DEFAULT_BATCHNORM",
    "DEFAULT_LR",
    "NEURON_FIELDS",
    "OPTIMIZERS",
    "SCHEDULES",
    "TASKS",
    "TIMINGS",
    "Runtime",
    "TrainConfig",
    "load_toml",
    "option_fields",
    "parse_size",
    "positive_int",
    "resolve",
]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
AMP_MODES = ("auto", "bf16", "off")  # auto: bf16 autocast on CUDA, none on CPU
TIMINGS = ("ideal", "loihi")
BATCHNORMS = ("scale", "shift")
# under both timings: under loihi its bias costs nothing, since each neuron restarts at its
# input's arrival (timing.py); scale-only BatchNorm measured 2.2 points lower (docs/deploy.md)
DEFAULT_BATCHNORM = "shift"
TASKS = ("classify", "detection")
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.1}
# Time steps of an input when nothing says otherwise (a diagnosis, a graph that records no T);
# a dataset's own T is its DatasetInfo.default_T.  The paper's T (arXiv 2401.04486).
DEFAULT_T = 10
NEURON_FIELDS = ("threshold", "current_decay", "voltage_decay", "tau_grad", "scale_grad")


# --- parsers and checks (one of each kind) ----------------------------------------------------

def parse_size(text) -> list[int]:
    """``48`` or ``48x40`` (H x W) -> ``[H, W]``, both >= 1."""
    if isinstance(text, int) and not isinstance(text, bool):
        parts = [text]
    elif isinstance(text, (list, tuple)):
        parts = list(text)
    else:
        try:
            parts = [int(p) for p in str(text).lower().split("x")]
        except ValueError:
            raise ValueError(f"expected N or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1
                                  for p in parts):
        raise ValueError(f"expected N or HxW with positive sizes, got {text!r}")
    return [int(p) for p in parts]


def parse_int_list(text) -> list[int]:
    if isinstance(text, (list, tuple)):
        return list(text)
    try:
        return [int(p) for p in str(text).split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def parse_bool(text) -> bool:
    if isinstance(text, bool):
        return text
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def positive_int(v) -> None:
    if not (_is_int(v) and v >= 1):
        raise ValueError(f"expected a positive integer, got {v!r}")


def nonneg_int(v) -> None:
    if not (_is_int(v) and v >= 0):
        raise ValueError(f"expected an integer >= 0, got {v!r}")


def positive_float(v) -> None:
    if not (_is_number(v) and math.isfinite(v) and v > 0):
        raise ValueError(f"expected a finite number > 0, got {v!r}")


def nonneg_float(v) -> None:
    if not (_is_number(v) and math.isfinite(v) and v >= 0):
        raise ValueError(f"expected a finite number >= 0, got {v!r}")


def unit_fraction(v) -> None:
    if not (_is_number(v) and math.isfinite(v) and 0 <= v <= 1):
        raise ValueError(f"expected a number in [0, 1], got {v!r}")


def val_fraction(v) -> None:
    if not (_is_number(v) and math.isfinite(v) and 0 < v < 1):
        raise ValueError(f"expected a number in (0, 1), got {v!r}")


def positive_int_list(v) -> None:
    if not (isinstance(v, list) and v and all(_is_int(d) and d >= 1 for d in v)):
        raise ValueError(f"expected comma-separated positive integers, got {v!r}")


def size_check(v) -> None:
    if not (isinstance(v, list) and len(v) == 2 and all(_is_int(d) and d >= 1 for d in v)):
        raise ValueError(f"expected [H, W] with positive sizes, got {v!r}")


def _parse_float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {text!r}") from None


def _parse_int(text) -> int:
    if _is_int(text):
        return text
    try:
        return int(str(text))
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def opt(default, help: str, *, parse=None, check=None, choices=None, flag=None,
        commands=("train", "run"), cli: bool = True):
    """A dataclass field with its command-line description."""
    meta = {"help": help, "parse": parse, "check": check, "choices": choices, "flag": flag,
            "commands": tuple(commands), "cli": cli}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


_MODEL = ("train", "run", "diagnose")  # options that shape the model and its data


# --- the config -------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """What defines a run (stored in every checkpoint; ``resume`` reuses it)."""

    task: str = opt("classify", "what the run trains: classify (a classifier, --heads) or "
                    "detection (an EMS-YOLO detector on a detection dataset: ndigits-detect, "
                    "gen1)", choices=TASKS, commands=("train",))
    dataset: str = opt("ndigits", "dataset name", commands=_MODEL)
    model: str = opt("cnn", "model name: cnn, vgg11, resnet18, resnet19, resnet20, resnet34, sew_resnet18, sew_resnet34; with --task detection: ems_res10, ems_res18", commands=("train", "run"))
    heads: str = opt("none", "shortcut heads: none | shortcut | evolutionary | dsn",
                     choices=("none", "shortcut", "evolutionary", "dsn"),
                     commands=("train", "run"))
    lam: float = opt(0.25, "lambda of evolutionary training, lambda(i) = lam (1 - i/I)",
                     parse=_parse_float, check=nonneg_float, commands=_MODEL)
    T: int | None = opt(None, "time steps (default: the dataset's)", parse=_parse_int,
                        check=positive_int, commands=_MODEL)
    size: list[int] | None = opt(None, "frame size N or HxW (default: the dataset's)",  # noqa: RUF009
                                 parse=parse_size, check=size_check, commands=_MODEL)
    encoding: str = opt("binary", "input encoding: binary (a pixel spikes in a bin where it "
                        "saw an event) or counts", choices=("binary", "counts"), commands=_MODEL)
    rezero: bool = opt(False, "gate residual branches by a scalar initialised at 0",
                       parse=parse_bool, commands=_MODEL)
    width: int | None = opt(None, "channel scale of the model (64 = paper widths for "
                            "ResNets/VGG)", parse=_parse_int, check=positive_int, commands=_MODEL)
    depths: list[int] | None = opt(None, "ResNets: residual blocks per stage, e.g. 2,2,2",  # noqa: RUF009
                                   parse=parse_int_list, check=positive_int_list,
                                   commands=_MODEL)
    connect: str | None = opt(None, "SEW ResNets only: element-wise connect function "
                              "(default ADD)", choices=("ADD", "AND", "IAND"), commands=_MODEL)
    timing: str = opt("ideal", "ideal (one step per layer, as trained) or loihi (the chip's "
                      "per-hop delays)", choices=TIMINGS, commands=_MODEL)
    batchnorm: str | None = opt(None, "BatchNorm form: shift (standard BatchNorm, the "
                                "default; its shift becomes each neuron's voltage bias, and "
                                "under --timing loihi each neuron restarts when its input "
                                "arrives) or scale (multiplies only: no voltage bias)",
                                choices=BATCHNORMS, commands=_MODEL)
    # CUBA-LIF parameters; None: models.DEFAULT_NEURON's (detectors: ems.detector_neuron()'s)
    threshold: float | None = opt(None, "neuron threshold", parse=_parse_float,
                                  check=positive_float, commands=_MODEL)
    current_decay: float | None = opt(None, "fraction of the current lost per step",
                                      parse=_parse_float, check=unit_fraction, commands=_MODEL)
    voltage_decay: float | None = opt(None, "fraction of the voltage lost per step",
                                      parse=_parse_float, check=unit_fraction, commands=_MODEL)
    tau_grad: float | None = opt(None, "surrogate width: tau_rho = 100 * tau_grad * threshold "
                                 "(default 0.004 for classifiers, 0.02 for detectors)",
                                 parse=_parse_float, check=positive_float, commands=_MODEL)
    scale_grad: float | None = opt(None, "surrogate height: peak slope = 0.1 * scale_grad / "
                                   "(2 tau_rho)", parse=_parse_float, check=positive_float,
                                   commands=_MODEL)
    epochs: int = opt(10, "epochs", parse=_parse_int, check=positive_int)
    batch_size: int = opt(32, "samples per step and process", parse=_parse_int,
                          check=positive_int, commands=_MODEL)
    optimizer: str = opt("adam", "optimizer", choices=OPTIMIZERS)
    lr: float | None = opt(None, "peak learning rate (default: adam 3e-3 for the ResNets, "
                           "1e-3 otherwise; sgd 0.1)",
                           parse=_parse_float, check=positive_float)
    momentum: float = opt(0.9, "sgd momentum", parse=_parse_float, check=unit_fraction)
    weight_decay: float = opt(0.0, "weight decay", parse=_parse_float, check=nonneg_float)
    schedule: str = opt("cosine", "learning rate schedule, per iteration", choices=SCHEDULES)
    augment: bool = opt(True, "training augmentation (random roll; flip where the dataset is "
                        "mirror-symmetric; detection datasets: none)", parse=parse_bool)
    seed: int = opt(0, "random seed of the initialisation, data order and augmentation "
                    "(the dataset splits do not depend on it)", parse=_parse_int,
                    check=nonneg_int, commands=_MODEL)
    val_fraction: float = opt(0.1, "fraction of each class of the training split held out "
                              "for validation (fixed, seeded independently of --seed); best.pt "
                              "is chosen on it (detection datasets have a fixed validation "
                              "split)", parse=_parse_float, check=val_fraction)
    limit_train: int | None = opt(None, "train on a fixed subset of N samples",
                                  parse=_parse_int, check=positive_int)
    limit_test: int | None = opt(None, "validate and test on fixed subsets of N samples",
                                 parse=_parse_int, check=positive_int)
    amp: str = opt("auto", "bf16 autocast in training: auto (on CUDA only), bf16 (also on "
                   "CPU), off; evaluation always runs in exact float32", choices=AMP_MODES)
    # BatchNorm statistics recomputed with each epoch's final weights over this many training
    # batches before evaluation and checkpointing (0: keep the running averages)
    recalibrate_batches: int = opt(16, "recompute BatchNorm statistics over N training batches "
                                   "with each epoch's final weights before evaluating (0: off)",
                                   parse=_parse_int, check=nonneg_int)

    # detection (--task detection) only
    deployable: bool = opt(True, "detection: build the all-spike form of the detector that "
                           "exports (false: EMS-YOLO's published real-valued form, which does "
                           "not)", parse=parse_bool, commands=("train",))
    box_gain: float = opt(0.05, "detection: gain of the box (CIoU) loss (EMS-YOLO's 0.05)",
                          parse=_parse_float, check=nonneg_float, commands=("train",))
    obj_gain: float = opt(1.0, "detection: gain of the objectness loss, scaled by "
                          "(image/640)^2 as YOLOv5 does (EMS-YOLO's 1.0)", parse=_parse_float,
                          check=nonneg_float, commands=("train",))
    cls_gain: float = opt(0.5, "detection: gain of the class loss, scaled by classes/80 as "
                          "YOLOv5 does (EMS-YOLO's 0.5)", parse=_parse_float,
                          check=nonneg_float, commands=("train",))

    fold_finetune_epochs: int | None = opt(None, "train the last N epochs in the deployed form "
                                           "(BatchNorm folded into the 8-bit weights and bias, "
                                           "statistics frozen), so that the validated network "
                                           "is the deployed one; default: 1 for classifiers "
                                           "with BatchNorm trained 2 epochs or more, else 0",
                                           parse=_parse_int, check=nonneg_int)

    def __post_init__(self):
        if isinstance(self.amp, bool):  # checkpoints before amp became a mode
            self.amp = "auto" if self.amp else "off"
        if self.size is not None and not isinstance(self.size, list):
            self.size = parse_size(self.size) if not isinstance(self.size, tuple) \
                else list(self.size)
        if isinstance(self.depths, tuple):
            self.depths = list(self.depths)
        check_fields(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def folded_epoch(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (counted from 1) trains in the deployed, folded form: one of
        the last ``fold_finetune_epochs``."""
        return bool(self.fold_finetune_epochs) and epoch > self.epochs - self.fold_finetune_epochs

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Runtime:
    """How this invocation runs (not part of the run's identity)."""

    out: str | os.PathLike = opt(None, "run directory", flag="--out", cli=False)  # noqa: RUF009
    device: str = opt("auto", "cpu, cuda or auto", choices=("cpu", "cuda", "auto"),
                      commands=_MODEL)
    workers: int = opt(0, "data loader processes", parse=_parse_int, check=nonneg_int)
    data_dir: str | None = opt(None, "where downloaded datasets live", commands=_MODEL)
    cache_dir: str | None = opt(None, "frame cache directory", commands=_MODEL)
    resume: bool = opt(False, "continue the run in RUN_DIR from last.pt (its stored config is "
                       "used)", commands=("train",), cli=False)
    stop_after: int | None = opt(None, "stop after this many epochs in this invocation (resume "
                                 "later)", parse=_parse_int, check=positive_int,
                                 commands=("train",))
    max_steps: int | None = opt(None, "stop after N optimizer steps in all (smoke runs; the "
                                "schedules keep the full run's length)", parse=_parse_int,
                                check=positive_int)
    progress: bool = opt(True, "progress bars and per-epoch lines", cli=False)

    def __post_init__(self):
        check_fields(self)


def option_fields(cls, command: str):
    """The fields of ``cls`` that ``command``'s command line offers, in declaration order."""
    return [f for f in dataclasses.fields(cls)
            if f.metadata.get("cli", False) and command in f.metadata.get("commands", ())]


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def check_value(f, value) -> None:
    """Raise ``BadInput`` naming the option when ``value`` is not allowed for field ``f``."""
    if value is None:
        return
    choices, check = f.metadata.get("choices"), f.metadata.get("check")
    try:
        if choices is not None and value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {value!r}")
        if check is not None:
            check(value)
    except ValueError as err:
        raise BadInput(f"{flag_of(f)} ({f.name}): {err}") from None


def check_fields(obj) -> None:
    for f in dataclasses.fields(obj):
        if f.metadata:
            check_value(f, getattr(obj, f.name))


def load_toml(path: str | os.PathLike) -> dict:
    """A recipe's ``TrainConfig`` fields; unknown keys and bad values name the file and key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise BadInput(f"--config {path}: not a readable TOML file ({err})") from None
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BadInput(f"--config {path}: unknown option(s) {', '.join(unknown)}; known: "
                       f"{', '.join(fields)}")
    values = {}
    for key, value in data.items():
        f = fields[key]
        if key == "size":
            try:
                value = parse_size(value)
            except ValueError as err:
                raise BadInput(f"--config {path}: size: {err}") from None
        elif isinstance(value, float) and f.metadata.get("parse") is _parse_int:
            raise BadInput(f"--config {path}: {key}: expected an integer, got {value!r}")
        elif isinstance(value, int) and f.metadata.get("parse") is _parse_float:
            value = float(value)
        try:
            check_value(f, value)
        except BadInput as err:
            raise BadInput(f"--config {path}: {err}") from None
        values[key] = value
    return values


def resolve(config: TrainConfig, default_T: int, default_size) -> TrainConfig:
    """Fill in the dataset's defaults (T, size) and the optimizer's lr; check combinations."""
    c = dataclasses.replace(config)
    if c.connect is not None and not c.model.startswith("sew_"):
        raise BadInput(f"--connect (connect): applies to SEW ResNets only (sew_*), not "
                       f"{c.model!r}: a Spiking ResNet adds its residual before the neuron")
    if c.fold_finetune_epochs is None:
        c.fold_finetune_epochs = default_fold_finetune_epochs(c)
    if c.fold_finetune_epochs >= c.epochs:
        raise BadInput(f"--fold-finetune-epochs (fold_finetune_epochs): must be below --epochs "
                       f"({c.epochs}): the folded form needs BatchNorm statistics from earlier "
                       f"epochs, got {c.fold_finetune_epochs}")
    if c.fold_finetune_epochs and c.rezero:
        raise BadInput("--fold-finetune-epochs (fold_finetune_epochs): not available with "
                       "--rezero (the fold multiplies the gate into the weights before rounding)")
    if c.batchnorm is None:
        c.batchnorm = DEFAULT_BATCHNORM
    if c.T is None:
        c.T = int(default_T)
    if c.size is None:
        c.size = parse_size(list(default_size) if not isinstance(default_size, int)
                            else default_size)
    if c.lr is None:
        c.lr = default_lr(c)
    return c


# registry models without BatchNorm (kept here, not read off models.py, so that the options
# stay importable without torch; tests/test_pipeline_init.py checks it against the models)
MODELS_WITHOUT_BATCHNORM = frozenset({"cnn"})
# the registry's residual networks (likewise checked against the models)
RESNETS = frozenset({"resnet18", "resnet19", "resnet20", "resnet34", "sew_resnet18",
                     "sew_resnet34"})
RESNET_ADAM_LR = 3e-3


def default_lr(c: TrainConfig) -> float:
    """``DEFAULT_LR`` of the optimizer, except Adam on a ResNet classifier: 3e-3.

    Measured on ndigits, 2-epoch runs, seeds 0-2 (docs/training.md): validation accuracy rose
    from 1e-3 to 3e-3 in every paired run, by 8 to 26 points (resnet18 d1,1,1,1 w8, the repro:
    w16, evolutionary heads, T=6, and sew_resnet18 d1,1,1,1 w8, seed 0).  The cnn keeps 1e-3
    (its demo figures); detectors' recipes set their own."""
    if c.optimizer == "adam" and c.task == "classify" and c.model in RESNETS:
        return RESNET_ADAM_LR
    return DEFAULT_LR[c.optimizer]


def default_fold_finetune_epochs(c: TrainConfig) -> int:
    """1 for a classifier whose BatchNorm the export folds, trained 2 epochs or more; else 0.

    Rounding the folded weights to the 8-bit grid cost 2.5-16 points of test accuracy on
    ndigits (2-epoch resnet18 runs; docs/deploy.md), and the last epoch trained in the folded
    form removes that loss: deployed = trained.  Not for the cnn (no BatchNorm: nothing is
    folded), ReZero (refused above), or detectors (not measured on them yet)."""
    if c.task != "classify" or c.rezero or c.epochs < 2 or c.model in MODELS_WITHOUT_BATCHNORM:
        return 0
    return 1


def neuron_params(config: TrainConfig, default) -> dict:
    """The run's CubaParams as a dict: the default, with the config's explicit choices."""
    params = dataclasses.asdict(default)
    params.update({k: getattr(config, k) for k in NEURON_FIELDS if getattr(config, k) is not None})
    return params
