"""Gradient diagnostics: per-layer gradient norms with and without shortcut heads.

The shortcut-heads paper's point is that in a deep SNN the gradient reaching the first layers
vanishes (surrogate gradients shrink it at every neuron); a head after each stage hands block 1
a direct path to the loss.  ``gradient_norms`` measures it: the L2 norm of the gradient of
every weight tensor of the main network (conv/dense/readout weights, input -> output), averaged
over a few batches, for each heads mode on the *same* initial weights and the same batches.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from spikeline.errors import SpikelineError

from .blocks import LIF, ConvSynapse, DenseSynapse
from .config import DEFAULT_T
from .distributed import resolve_device
from .models import MODELS, build_model
from .plots import plot_grad_norms
from .quantize import quantize_weight
from .tasks.classify import build_heads, model_spec_for
from .train import seed_everything


def weight_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Trainable weight tensors (>= 2-D: conv and dense weights) in registration order, which
    is input -> output for every ``SpikingNet``."""
    return [(name, p) for name, p in model.named_parameters()
            if p.requires_grad and p.dim() >= 2 and name.split(".")[-1] == "weight"]


def gradient_norms(heads: nn.Module, batches, progress: float = 0.0,
                   device: torch.device | str = "cpu") -> list[dict]:
    """Mean (over ``batches``) gradient L2 norm of each main-network weight tensor under
    ``heads.loss(x, y, progress)``.  Rows: ``{"depth", "name", "shape", "grad_norm"}``."""
    heads.train()
    params = weight_parameters(heads.model)
    if not params:
        raise SpikelineError("the model has no weight tensors to diagnose")
    sums = torch.zeros(len(params), dtype=torch.float64)
    count = 0
    for x, y in batches:
        heads.zero_grad(set_to_none=True)
        loss, _ = heads.loss(x.to(device), y.to(device), progress)
        loss.backward()
        for k, (_, p) in enumerate(params):
            if p.grad is not None:
                sums[k] += float(p.grad.detach().double().norm())
        count += 1
    heads.zero_grad(set_to_none=True)
    if count == 0:
        raise SpikelineError("no batches to compute gradients on")
    return [{"depth": k, "name": name, "shape": list(p.shape),
             "grad_norm": float(sums[k] / count)} for k, (name, p) in enumerate(params)]


def diagnose_gradients(configs: list, data, make_loader, *, batches: int = 3,
                       progress: float = 0.0, device: str = "cpu",
                       out: str | Path | None = None) -> dict:
    """Gradient norms of one model under each of ``configs`` (TrainConfigs that differ in
    ``heads`` only), on the same initial weights and the same ``batches`` batches of
    ``data.train``; writes ``OUT/gradients.json`` and ``OUT/gradients.png`` when ``out`` is
    given."""

    if not configs:
        raise SpikelineError("--heads needs at least one mode")
    dev = resolve_device(device)
    config = configs[0]
    loader = make_loader(data.train, config.batch_size, shuffle=True, seed=config.seed)
    batches_ = [batch for _, batch in zip(range(batches), loader)]
    spec = model_spec_for(config, data.train[0][0], data.num_classes)
    per_mode, first, ratio = {}, {}, {}
    for c in configs:
        seed_everything(c.seed)  # identical initial network weights for every mode
        heads = build_heads(c, spec).to(dev)
        rows = gradient_norms(heads, batches_, progress, dev)
        per_mode[c.heads] = rows
        first[c.heads] = rows[0]["grad_norm"]
        last = rows[-1]["grad_norm"]
        ratio[c.heads] = first[c.heads] / last if last > 0 else None  # strict JSON
    result = {
        "model": config.model, "dataset": config.dataset, "T": config.T, "size": config.size,
        "batches": len(batches_), "batch_size": config.batch_size, "seed": config.seed,
        "lam": config.lam, "progress": progress, "model_spec": spec,
        "first_layer_grad_norm": first, "first_over_last": ratio, "layers": per_mode,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gradients.json").write_text(json.dumps(result, indent=2) + "\n")
        plot_grad_norms(per_mode, out / "gradients.png",
                        title=f"{config.model} on {config.dataset}: gradient norm per weight "
                        "tensor")
        result["files"] = [str(out / "gradients.json"), str(out / "gradients.png")]
    return result


# The input size each model is meant for: the CNN for ndigits' 34x34 sensor, every other model
# for CIFAR10-DVS resized to 48x48 (the shortcut-heads paper's setting).
PAPER_SIZE = {"cnn": 34}
DEFAULT_PAPER_SIZE = 48


def paper_size(model: str, size=None) -> tuple[int, int]:
    """``size`` (N or (H, W)) as (H, W); None: the size ``model`` is meant for."""
    size = PAPER_SIZE.get(model, DEFAULT_PAPER_SIZE) if size is None else size
    return (size, size) if isinstance(size, int) else tuple(size)


def diagnose_init(model: str, *, size=None, T: int = DEFAULT_T, width: int | None = None,
                  batch_size: int = 2, seed: int = 0, rate: float = 0.1,
                  num_classes: int = 10, batch: tuple[torch.Tensor, torch.Tensor] | None = None,
                  batch_source: str = "recordings") -> dict:
    """Dead layers at initialisation.

    Builds ``model`` (default widths) at ``size`` (default: ``PAPER_SIZE``), feeds one batch
    of random binary event frames (each pixel and polarity spikes with probability ``rate``)
    with random labels, or ``batch`` (frames ``[N, T, 2, H, W]`` and labels, e.g. recordings:
    uniform noise lacks their spatial clusters, which drive a small net much harder; named in
    the result by ``batch_source``), and reports per synaptic layer (conv/dense synapse, in order):
    ``nonzero_weight_fraction`` of the 8-bit quantized weights, the L2 ``grad_norm`` of the
    weights under the cross-entropy of the main logits, and the ``output_rate`` of the spiking
    layer it feeds (None for the readout); plus ``main_logits_nonzero``.
    """

    if model not in MODELS:
        raise SpikelineError(f"--model: unknown model {model!r}; known: {', '.join(MODELS)}")
    h, w = paper_size(model, size)
    torch.manual_seed(seed)
    options = {} if width is None else {"width": width}
    net = build_model(model, in_channels=2, num_classes=num_classes, input_size=(h, w),
                      **options)
    net.train()
    synapses = [(n, m) for n, m in net.named_modules() if isinstance(m, (ConvSynapse,
                                                                          DenseSynapse))]
    lifs = [(n, m) for n, m in net.named_modules() if isinstance(m, LIF)]
    rates = {}
    hooks = [m.register_forward_hook(
        lambda mod, _i, o, n=n: rates.__setitem__(n, float(o.detach().float().mean())))
        for n, m in lifs]
    gen = torch.Generator().manual_seed(seed)
    if batch is None:
        x = (torch.rand(batch_size, T, 2, h, w, generator=gen) < rate).float()
        y = torch.randint(0, num_classes, (batch_size,), generator=gen)
        source = f"random binary frames, rate {rate}"
    else:
        x, y = batch
        if tuple(x.shape[1:]) != (T, 2, h, w):
            raise SpikelineError(f"diagnose init: the batch's frames are {list(x.shape[1:])}, "
                                 f"expected [T, 2, H, W] = {[T, 2, h, w]}")
        source = batch_source
    try:
        logits = net(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
    finally:
        for hk in hooks:
            hk.remove()
    lif_names = [n for n, _ in lifs]
    rows = []
    for name, syn in synapses:
        q = quantize_weight(syn.weight.detach(), syn.scale)
        grad = syn.weight.grad
        rows.append({
            "name": name, "shape": list(syn.weight.shape),
            "nonzero_weight_fraction": float((q != 0).float().mean()),
            "grad_norm": 0.0 if grad is None else float(grad.double().norm()),
            "output_rate": _rate_of(name, lif_names, rates),
        })
    return {"model": model, "size": [h, w], "T": T, "batch_size": int(x.shape[0]),
            "input": source, "input_rate": float((x > 0).float().mean()), "seed": seed,
            "main_logits_nonzero": bool((logits.detach() != 0).any()),
            "logits_std": float(logits.detach().std()), "layers": rows}


def _rate_of(synapse_name: str, lif_names: list[str], rates: dict) -> float | None:
    """The spike rate of the neurons a synapse drives: the first LIF after it in module order
    within the same parent (``conv1`` -> ``lif1``, ``stages.0.0.synapse`` -> ``stages.0.0.lif``,
    a shortcut ``down`` -> the block's ``lif2``)."""
    parent, _, leaf = synapse_name.rpartition(".")
    candidates = {"conv1": "lif1", "conv2": "lif2", "down": "lif2", "synapse": "lif"}
    target = f"{parent}.{candidates.get(leaf, '')}" if parent else candidates.get(leaf, "")
    if leaf == "down" and f"{parent}.down_lif" in rates:
        target = f"{parent}.down_lif"
    return rates.get(target)
