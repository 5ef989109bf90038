"""Gradient diagnostics: per-layer gradient norms with and without shortcut heads.

The shortcut-heads paper's point is that in a deep SNN the gradient reaching the first layers
vanishes (surrogate gradients shrink it at every neuron); a head after each stage hands block 1
a direct path to the loss.  ``gradient_norms`` measures it: the L2 norm of the gradient of
every weight tensor of the main network (conv/dense/readout weights, input -> output), averaged
over a few batches, for each heads mode on the *same* initial weights and the same batches.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from spikeline.errors import SpikelineError


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


def diagnose_gradients(model: str, modes: list[str], *, dataset: str = "ndigits",
                       batches: int = 3, batch_size: int = 16, T: int | None = None,
                       size=None, lam: float = 0.25, progress: float = 0.0, seed: int = 0,
                       width: int | None = None, depths: list[int] | None = None,
                       encoding: str = "binary", data_dir=None, device: str = "cpu",
                       out: str | Path | None = None, neuron: dict | None = None) -> dict:
    """Gradient norms of ``model`` for each heads mode in ``modes``; writes
    ``OUT/gradients.json`` and ``OUT/gradients.png`` when ``out`` is given.  ``neuron``
    overrides CubaParams fields (threshold, decays, tau_grad, scale_grad)."""
    from spikeline.datasets.registry import make_loader

    from .train import (TrainConfig, _resolve, build_heads, load_splits, model_spec_for,
                        resolve_device, seed_everything)

    if not modes:
        raise SpikelineError("--heads needs at least one mode")
    if batches < 1 or batch_size < 1:
        raise SpikelineError("--batches and --batch-size must be >= 1")
    dev = resolve_device(device)
    config = _resolve(TrainConfig(dataset=dataset, model=model, heads=modes[0], lam=lam, T=T,
                                  size=size, encoding=encoding, width=width, depths=depths,
                                  batch_size=batch_size, augment=False, seed=seed,
                                  limit_train=batches * batch_size, limit_test=1,
                                  **(neuron or {})))
    for mode in modes:  # validate every mode before any work
        _resolve(dataclasses.replace(config, heads=mode))
    train_ds, _ = load_splits(config, data_dir)
    loader = make_loader(train_ds, batch_size, shuffle=True, seed=seed)
    data = [batch for _, batch in zip(range(batches), loader)]
    spec = model_spec_for(config, train_ds[0][0])
    per_mode, first, ratio = {}, {}, {}
    for mode in modes:
        seed_everything(seed)  # identical initial network weights for every mode
        heads = build_heads(dataclasses.replace(config, heads=mode), spec).to(dev)
        rows = gradient_norms(heads, data, progress, dev)
        per_mode[mode] = rows
        first[mode] = rows[0]["grad_norm"]
        last = rows[-1]["grad_norm"]
        ratio[mode] = first[mode] / last if last > 0 else None  # strict JSON: no Infinity
    result = {
        "model": model, "dataset": dataset, "T": config.T, "size": config.size,
        "batches": len(data), "batch_size": batch_size, "seed": seed, "lam": lam,
        "progress": progress, "model_spec": spec,
        "first_layer_grad_norm": first, "first_over_last": ratio, "layers": per_mode,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gradients.json").write_text(json.dumps(result, indent=2) + "\n")
        from .plots import plot_grad_norms

        plot_grad_norms(per_mode, out / "gradients.png",
                        title=f"{model} on {dataset}: gradient norm per weight tensor")
        result["files"] = [str(out / "gradients.json"), str(out / "gradients.png")]
    return result
