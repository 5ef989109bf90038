"""The interface every task implements: what the training loop builds and how it is scored,
and the data it trains on.  ``pipeline/train.py`` and ``spikeline.workflow`` see tasks only
through it."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class Task(Protocol):
    """A kind of run (classification, detection).

    - ``name`` (``TrainConfig.task``), ``metric`` (the record key that chooses best.pt),
      ``sharded_eval`` (a split's score is a sum over samples, so DDP ranks score shards),
      ``plot_series`` / ``plot_label`` / ``plot_scale`` (the curves);
    - ``check(config)``: refuse, naming the option, what this task cannot honour;
    - ``spec(config, sample, num_classes)``: the checkpoint's ``model_spec``;
      ``build(config, spec)``: the training module (``.model`` is what is deployed,
      ``.loss(x, y, progress) -> (loss, aux)``);
    - ``batch_size_of``, ``zero_stats``, ``batch_stats``, ``train_metrics``, ``postfix``: an
      epoch's running sums and what they mean; ``evaluate(model, loader, ranks)``:
      ``{name: value}`` (recorded as ``val_<name>`` / ``test_<name>``); ``epoch_line``;
    - data: ``datasets`` (name -> ``DatasetInfo``), ``load_splits(config, data_dir,
      cache_dir)``, ``make_loader(dataset, batch_size, shuffle=, workers=, seed=)``;
    - ``test_scores(model, loader, device) -> dict``: what ``spikeline evaluate`` reports.
    """

    name: str
    metric: str
    sharded_eval: bool
    plot_series: tuple
    plot_label: str
    plot_scale: float

    @property
    def datasets(self) -> dict: ...

    def check(self, config) -> None: ...

    def spec(self, config, sample: torch.Tensor, num_classes: int) -> dict: ...

    def build(self, config, spec: dict) -> nn.Module: ...

    def batch_size_of(self, x: torch.Tensor, y) -> int: ...

    def zero_stats(self) -> torch.Tensor: ...

    def batch_stats(self, loss, aux, y, n: int) -> torch.Tensor: ...

    def train_metrics(self, stats) -> dict: ...

    def postfix(self, stats) -> dict: ...

    def evaluate(self, model: nn.Module, loader, ranks) -> dict: ...

    def epoch_line(self, record: dict) -> str: ...

    def load_splits(self, config, data_dir=None, cache_dir=None): ...

    def make_loader(self, dataset, batch_size: int, **kwargs): ...

    def test_scores(self, model: nn.Module, loader, device) -> dict: ...
