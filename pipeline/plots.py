"""PNG figures of training runs and gradient diagnostics, written atomically.

Every figure is a ``matplotlib.figure.Figure`` outside pyplot's state, drawn to PNG by the Agg
canvas: no backend is chosen for the process (a notebook keeps its inline backend, a script
its own), and nothing has to be closed."""
from __future__ import annotations

import os
from pathlib import Path

from spikeline.atomic import atomic_file


def _figure(nrows=1, ncols=1, figsize=(6, 4)):
    """``(figure, axes [nrows][ncols])``."""
    from matplotlib.figure import Figure  # lazy: matplotlib, 0.9 s (measured)

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: str | os.PathLike) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: as _figure's import

    path = Path(path)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_file(path) as fh:
        fig.savefig(fh, dpi=100, format="png")
    return path


def plot_curves(history: list[dict], path: str | os.PathLike, title: str = "",
                series=(("train_acc", "train"), ("val_acc", "validation")),
                ylabel: str = "accuracy (%)", scale: float = 100.0) -> Path:
    """Loss (left) and the scores ``series`` (``(record key, label)``, times ``scale``;
    default train/validation accuracy in %) per epoch from metrics records (right)."""
    return _save(curves_figure(history, title, series, ylabel, scale), path)


def curves_figure(history: list[dict], title: str = "",
                  series=(("train_acc", "train"), ("val_acc", "validation")),
                  ylabel: str = "accuracy (%)", scale: float = 100.0):
    """The ``matplotlib.figure.Figure`` of :func:`plot_curves` (a notebook shows it)."""
    from matplotlib.ticker import MaxNLocator  # lazy: as _figure's import

    fig, axes = _figure(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    ax = axes[0][0]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax = axes[0][1]
    for (key, label), marker in zip(series, ("o-", "s-", "^-", "d-")):
        ax.plot(epochs, [scale * h[key] for h in history], marker, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_grad_norms(per_mode: dict[str, list[dict]], path: str | os.PathLike,
                    title: str = "") -> Path:
    """Gradient norm per weight tensor against depth (log scale), one line per heads mode."""
    fig, axes = _figure(1, 1, figsize=(8, 4.5))
    ax = axes[0][0]
    for mode, layers in per_mode.items():
        ax.plot([row["depth"] for row in layers], [row["grad_norm"] for row in layers],
                "o-", ms=3, label=mode)
    ax.set_yscale("log")
    ax.set_xlabel("depth (weight tensor index, input -> output)")
    ax.set_ylabel("gradient L2 norm")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="heads")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_ablation(rows: list[dict], path: str | os.PathLike) -> Path:
    """Grouped bars: accuracy (left) and first-layer gradient norm (right) per model/mode."""
    fig, axes = _figure(1, 2, figsize=(11, 4))
    models = list(dict.fromkeys(r["model"] for r in rows))
    modes = list(dict.fromkeys(r["heads"] for r in rows))
    width = 0.8 / max(len(modes), 1)
    for k, mode in enumerate(modes):
        xs, acc, grad = [], [], []
        for m, model in enumerate(models):
            for r in rows:
                if r["model"] == model and r["heads"] == mode:
                    xs.append(m + k * width)
                    acc.append(100 * r["test_acc"])
                    grad.append(r["first_layer_grad_norm"])
        axes[0][0].bar(xs, acc, width, label=mode)
        axes[0][1].bar(xs, grad, width, label=mode)
    for ax, label in ((axes[0][0], "best test accuracy (%)"),
                      (axes[0][1], "first-layer gradient norm")):
        ax.set_xticks([m + width * (len(modes) - 1) / 2 for m in range(len(models))])
        ax.set_xticklabels(models)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(title="heads", fontsize="small", framealpha=0.6)
    axes[0][0].set_ylim(0, 105)
    axes[0][1].set_yscale("log")
    return _save(fig, path)
