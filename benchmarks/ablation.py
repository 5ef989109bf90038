"""Ablation of the shortcut-heads paper on ndigits, at a budget that can show an effect.

The paper ("Take A Shortcut Back", arXiv 2401.04486, Tables 2/4) claims (1) shortcut and
evolutionary training beat vanilla training and (2) the gain grows with depth, because the
first layers of a deep plain network get a vanishing gradient without heads.

Cells: heads {none, shortcut, evolutionary, dsn} x a plain Spiking ResNet of 8 and of 20 layers
(``resnet20`` layout, 1 or 3 blocks per stage) x two surrogates: ``ours`` (the models' default,
tau_grad 0.004, scale_grad 10) and ``lava`` (lava-dl's examples, tau_grad 0.03, scale_grad 3,
where gradients vanish in deep nets: REFERENCE §2).  Every cell runs the same seeds, so each
head mode is compared with ``none`` *paired* on a seed (same data order, same initial weights).

Each run is ``pipeline.train`` (best.pt chosen on the fixed validation split, the test split
evaluated once, for it) with at least ``--min-steps`` optimizer steps; the first-layer gradient
norm at init comes from ``pipeline.diagnose`` on the run's own initial weights.  A finished run
is appended as one JSON line to ``--results`` (``benchmarks/results/ablation.jsonl``)::

    {"heads", "depth", "surrogate", "seed", "steps", "val_acc", "test_acc", "grad_first",
     "settings", "seconds"}

so an interrupted ablation resumes where it stopped (a line whose ``settings`` differ from the
current ones is not reused).  Run it niced in the background, then report::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/ablation.py run &
    .venv/bin/python benchmarks/ablation.py report     # table, paired tests, plot, verdicts

``report`` writes ``OUT/ablation.md`` and ``OUT/ablation.json`` and the plot
(``docs/ablation.png`` by default): per cell mean +- std and the gradient at init; per head mode
the paired difference from ``none`` on the same seeds with a paired t-test's p-value
(``scipy.stats.ttest_rel``) and the effect size (Cohen's d_z = mean / std of the paired
differences); and one verdict per claim: holds, does not hold, or cannot be decided at this
budget.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

HEADS = ("none", "shortcut", "evolutionary", "dsn")
CLAIMED = ("shortcut", "evolutionary")  # the paper's methods; dsn is its comparison baseline
DEPTHS = {8: [1, 1, 1], 20: [3, 3, 3]}  # resnet20 layout: stem + 2 convs per block + readout
SURROGATES = {"ours": {}, "lava": {"tau_grad": 0.03, "scale_grad": 3.0}}
ALPHA = 0.05  # significance level of every verdict
ROOT = Path(__file__).resolve().parents[1]

# The training budget of one run: ndigits (34x34, 10 classes), T = 4, width 16 (4/8/16
# channels), batch 32, Adam 1e-2 with a cosine schedule, lambda = 0.25, BatchNorm recalibrated
# on 4 batches.  ~1,290 training samples (ndigits' train split less the 10% validation) give
# 41 steps per epoch: 10 epochs = 410 optimizer steps, the ndigits_resnet recipe's budget,
# at which its 20-layer net reaches 77%.
# Timing and normalization are pinned (the paper's setting: ideal timing, BatchNorm with its
# shift), so that a later change of a default does not silently mix two settings in one table.
SETTINGS = {"model": "resnet20", "width": 16, "T": 4, "epochs": 10, "batch_size": 32,
            "lr": 1e-2, "lam": 0.25, "recalibrate_batches": 4, "val_fraction": 0.1,
            "timing": "ideal", "batchnorm": "shift"}


def settings_key(settings: dict) -> str:
    """A short hash of the settings a run was made with (resume reuses only equal ones)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def read_results(path: Path) -> list[dict]:
    """The finished runs recorded in a JSONL file (none if it does not exist)."""
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise SystemExit(f"{path}:{n}: not a JSON line ({err.msg}); a run killed while "
                             "writing leaves a partial line: delete that line and rerun") from None
    return rows


def append_result(path: Path, row: dict) -> None:
    """Append one finished run as a single line (one write call: a crash loses at most it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()


def plan(heads, depths, surrogates, seeds, done: list[dict], key: str):
    """The cells still to run, in an order that finishes whole paired groups first."""
    finished = {(r["heads"], r["depth"], r["surrogate"], r["seed"]) for r in done
                if r.get("settings") == key}
    return [(d, s, seed, h) for seed in seeds for d in depths for s in surrogates for h in heads
            if (h, d, s, seed) not in finished]


# --- statistics ---------------------------------------------------------------------------------

def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """``a - b`` on the seeds both have: mean difference, paired t-test p-value, Cohen's d_z."""
    from scipy import stats  # imported here: only the report needs scipy

    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    out = {"seeds": seeds, "n": len(diffs), "mean_diff": None, "std_diff": None, "p": None,
           "d_z": None}
    if not diffs:
        return out
    mean, std = mean_std(diffs)
    out.update(mean_diff=mean, std_diff=std)
    if len(diffs) >= 2 and std > 0:
        out["p"] = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
        out["d_z"] = mean / std
    elif len(diffs) >= 2:  # identical differences on every seed: no spread to test against
        out["p"] = 0.0 if mean != 0 else 1.0
    return out


def holm(ps: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values of one family of tests (None stays None):
    with the m p-values sorted, ``p_(i) -> max_{j <= i} min(1, (m - j + 1) p_(j))``.  It
    controls the family-wise error rate at α for any dependence between the tests."""
    known = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


def verdict(test: dict, direction: str = "greater") -> str:
    """``holds`` when the paired difference is significant in the claimed direction, ``does not
    hold`` when it is significant the other way, else ``cannot be decided``; significance is
    judged on the family's Holm-adjusted p (``p_holm``) where ``analyse`` has set it."""
    p = test.get("p_holm", test["p"])
    if p is None or test["mean_diff"] is None:
        return "cannot be decided"
    if p < ALPHA:
        good = test["mean_diff"] > 0 if direction == "greater" else test["mean_diff"] < 0
        return "holds" if good else "does not hold"
    return "cannot be decided"


def analyse(rows: list[dict]) -> dict:
    """Cells, paired comparisons with ``none`` and the two claims' verdicts."""
    by = {}
    for r in rows:
        by.setdefault((r["depth"], r["surrogate"], r["heads"]), {})[r["seed"]] = r
    cells = []
    for (depth, sur, heads), runs in sorted(by.items()):
        accs = [r["test_acc"] for r in runs.values()]
        mean, std = mean_std(accs)
        grads = [r["grad_first"] for r in runs.values() if r.get("grad_first") is not None]
        cells.append({"depth": depth, "surrogate": sur, "heads": heads, "n": len(accs),
                      "test_acc": mean, "test_acc_std": std,
                      "test_acc_by_seed": {s: r["test_acc"] for s, r in sorted(runs.items())},
                      "steps": min(r["steps"] for r in runs.values()),
                      "grad_first": statistics.fmean(grads) if grads else None})
    comparisons = []
    for (depth, sur, heads), runs in sorted(by.items()):
        base = by.get((depth, sur, "none"))
        if heads == "none" or base is None:
            continue
        test = paired({s: r["test_acc"] for s, r in runs.items()},
                      {s: r["test_acc"] for s, r in base.items()})
        comparisons.append({"depth": depth, "surrogate": sur, "heads": heads, **test})
    # claim 2: the gain over none is larger at the deeper net (paired on seed: the gain of the
    # deep net on seed s minus the gain of the shallow one on seed s)
    depth_claims = []
    depths = sorted({r["depth"] for r in rows})
    if len(depths) >= 2:
        shallow, deep = depths[0], depths[-1]
        for sur in sorted({r["surrogate"] for r in rows}):
            for heads in ("shortcut", "evolutionary"):
                gains = {}
                for d in (shallow, deep):
                    h, n = by.get((d, sur, heads), {}), by.get((d, sur, "none"), {})
                    gains[d] = {s: h[s]["test_acc"] - n[s]["test_acc"] for s in set(h) & set(n)}
                test = paired(gains[deep], gains[shallow])
                depth_claims.append({"surrogate": sur, "heads": heads, "shallow": shallow,
                                     "deep": deep, **test})
    # each claim is one family of tests, its verdicts corrected for the number asked; DSN is
    # the paper's comparison method, not a claim: its rows are a family of their own, unjudged
    claimed = [c for c in comparisons if c["heads"] in CLAIMED]
    reference = [c for c in comparisons if c["heads"] not in CLAIMED]
    for family in (claimed, reference, depth_claims):
        for test, adjusted in zip(family, holm([t["p"] for t in family]), strict=True):
            test["p_holm"] = adjusted
            test["verdict"] = verdict(test) if family is not reference else "not a claim"
    return {"cells": cells, "comparisons": comparisons, "depth_claims": depth_claims}


def _fmt(x, spec: str, factor: float = 1.0) -> str:
    return "n/a" if x is None else format(factor * x, spec)


def _cell(c: dict | None) -> str:
    if c is None:
        return "—"
    grad = "" if c["grad_first"] is None else f", g1 {c['grad_first']:.2g}"
    return (f"{100 * c['test_acc']:.1f} ± {100 * c['test_acc_std']:.1f} "
            f"(n={c['n']}{grad})")


def render(result: dict) -> str:
    """The report as Markdown: cells, paired comparisons, verdicts."""
    cells, lines = result["cells"], []
    heads = [h for h in HEADS if any(c["heads"] == h for c in cells)]
    lines += ["Test accuracy (%), mean ± std over seeds (n runs); g1 = first-layer gradient "
              "norm at init (mean over seeds).", "",
              "| net | surrogate | " + " | ".join(heads) + " |",
              "|---|---|" + "---|" * len(heads)]
    for depth, sur in dict.fromkeys((c["depth"], c["surrogate"]) for c in cells):
        row = {c["heads"]: c for c in cells if (c["depth"], c["surrogate"]) == (depth, sur)}
        lines.append(f"| {depth} layers | {sur} | "
                     + " | ".join(_cell(row.get(h)) for h in heads) + " |")
    lines += ["", "Paired against `none` on the same seeds (points of test accuracy; p: paired "
              "t-test, two-sided; p_holm: Holm-adjusted over the shortcut and evolutionary "
              "rows (dsn's rows apart), which the verdict uses; d_z: Cohen's effect size; "
              f"α = {ALPHA}):", "",
              "| net | surrogate | heads | n | gain | p | p_holm | d_z | claim 1 |",
              "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for c in result["comparisons"]:
        lines.append(f"| {c['depth']} layers | {c['surrogate']} | {c['heads']} | {c['n']} | "
                     f"{_fmt(c['mean_diff'], '+.1f', 100)} | {_fmt(c['p'], '.3g')} | "
                     f"{_fmt(c.get('p_holm'), '.3g')} | {_fmt(c['d_z'], '.2f')} | "
                     f"{c['verdict']} |")
    if result["depth_claims"]:
        lines += ["", "Does the gain grow with depth? (gain of the deep net minus gain of the "
                  "shallow net, paired on seed; p_holm over this table's tests):", "",
                  "| surrogate | heads | n | deep − shallow gain | p | p_holm | claim 2 |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for c in result["depth_claims"]:
            lines.append(f"| {c['surrogate']} | {c['heads']} | {c['n']} | "
                         f"{_fmt(c['mean_diff'], '+.1f', 100)} | {_fmt(c['p'], '.3g')} | "
                         f"{_fmt(c.get('p_holm'), '.3g')} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    """Bars of mean ± std per cell, grouped by net and surrogate, each seed's run a dot (the
    same seed's runs joined within a group: the pairing the tests use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result["cells"]
    groups = list(dict.fromkeys((c["depth"], c["surrogate"]) for c in cells))
    heads = [h for h in HEADS if any(c["heads"] == h for c in cells)]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(len(heads), 1)
    for k, h in enumerate(heads):
        xs, ys, es = [], [], []
        for g, (depth, sur) in enumerate(groups):
            for c in cells:
                if (c["depth"], c["surrogate"], c["heads"]) == (depth, sur, h):
                    xs.append(g + k * width)
                    ys.append(100 * c["test_acc"])
                    es.append(100 * c["test_acc_std"])
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=h, alpha=0.85)
    for g, (depth, sur) in enumerate(groups):  # per seed: its runs across head modes
        row = {c["heads"]: c.get("test_acc_by_seed", {}) for c in cells
               if (c["depth"], c["surrogate"]) == (depth, sur)}
        for seed in sorted({s for accs in row.values() for s in accs}):
            pts = [(g + k * width, 100 * row[h][seed]) for k, h in enumerate(heads)
                   if seed in row.get(h, {})]
            ax.plot(*zip(*pts), color="black", lw=0.5, alpha=0.4, marker="o", ms=2.5)
    ax.set_xticks([g + width * (len(heads) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{d} layers\n{s} surrogate" for d, s in groups], fontsize="small")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.axhline(10, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(title="heads", fontsize="small", loc="lower center", ncol=len(heads) + 1,
              bbox_to_anchor=(0.5, 1.0), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# --- running ------------------------------------------------------------------------------------

def run_all(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from spikeline.datasets.registry import load_splits, make_loader
    from spikeline.pipeline.config import Runtime, TrainConfig, resolve
    from spikeline.pipeline.diagnose import diagnose_gradients
    from spikeline.pipeline.train import train

    settings = dict(SETTINGS, epochs=args.epochs, limit_train=args.limit_train,
                    limit_test=args.limit_test)
    key = settings_key(settings)
    results = Path(args.results)
    done = read_results(results)
    todo = plan([h for h in args.heads.split(",") if h], [int(d) for d in args.depths.split(",")],
                [s for s in args.surrogates.split(",") if s],
                [int(s) for s in args.seeds.split(",")], done, key)
    print(f"{len(todo)} runs to go ({len(done)} recorded in {results})", flush=True)
    data = load_splits("ndigits", T=settings["T"], size=(34, 34), augment=True,
                       val_fraction=settings["val_fraction"], limit_train=args.limit_train,
                       limit_test=args.limit_test)
    grads: dict = {}
    for depth, sur, seed, heads in todo:
        base = TrainConfig(dataset="ndigits", model=settings["model"], width=settings["width"],
                           depths=DEPTHS[depth], T=settings["T"], epochs=settings["epochs"],
                           batch_size=settings["batch_size"], lr=settings["lr"],
                           lam=settings["lam"], seed=seed, limit_train=args.limit_train,
                           limit_test=args.limit_test,
                           recalibrate_batches=settings["recalibrate_batches"],
                           timing=settings["timing"], batchnorm=settings["batchnorm"],
                           **SURROGATES[sur])
        base = resolve(base, settings["T"], (34, 34))
        config = TrainConfig(**{**base.to_dict(), "heads": heads})
        if (depth, sur, seed) not in grads:  # the same initial weights for every head mode
            modes = list(HEADS)
            grads[(depth, sur, seed)] = diagnose_gradients(
                [TrainConfig(**{**base.to_dict(), "heads": m, "augment": False}) for m in modes],
                data, make_loader, batches=2)["first_layer_grad_norm"]
        run_dir = Path(args.out) / "runs" / f"d{depth}-{sur}-{heads}-s{seed}"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # an unrecorded run was interrupted: start it again
        t0 = time.perf_counter()
        summary = train(config, Runtime(out=run_dir, progress=False), data, make_loader).summary
        row = {"heads": heads, "depth": depth, "surrogate": sur, "seed": seed,
               "steps": summary["iteration"], "val_acc": summary["val_acc"],
               "test_acc": summary["test_acc"], "grad_first": grads[(depth, sur, seed)][heads],
               "settings": key, "seconds": round(time.perf_counter() - t0, 1)}
        if row["steps"] < args.min_steps:
            raise SystemExit(f"run {run_dir} took {row['steps']} optimizer steps, fewer than "
                             f"--min-steps {args.min_steps}: raise --epochs or --limit-train")
        append_result(results, row)
        print(json.dumps(row), flush=True)
    return 0


def report(args) -> int:
    rows = read_results(Path(args.results))
    if not rows:
        raise SystemExit(f"{args.results}: no finished runs to report")
    result = analyse(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    text = render(result)
    (out / "ablation.md").write_text(text)
    plot(result, Path(args.plot))
    print(text)
    print(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'}, {args.plot}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train the missing runs, appending each to --results")
    r.add_argument("--heads", default=",".join(HEADS))
    r.add_argument("--depths", default="8,20")
    r.add_argument("--surrogates", default="ours,lava")
    r.add_argument("--seeds", default="0,1,2,3,4")
    r.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    r.add_argument("--limit-train", type=int, default=None, help="default: the whole split")
    r.add_argument("--limit-test", type=int, default=None, help="default: the whole split")
    r.add_argument("--min-steps", type=int, default=400,
                   help="refuse a budget below this many optimizer steps per run")
    r.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: two runs in parallel use the 2 cores best)")
    p = sub.add_parser("report", help="table, paired tests, plot and verdicts")
    p.add_argument("--plot", default=str(ROOT / "docs" / "ablation.png"))
    for q in (r, p):
        q.add_argument("--results", default=str(ROOT / "benchmarks" / "results" /
                                                "ablation.jsonl"))
        q.add_argument("--out", default="runs/ablation")
    args = ap.parse_args(argv)
    return run_all(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
