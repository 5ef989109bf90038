"""benchmarks/ablation.py's bookkeeping and statistics, and paper_table.sh's dry run."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def _load_ablation():
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ab = _load_ablation()


def _rows(gains: dict[tuple[int, str], list[float]], base=0.5, key="k"):
    """Runs of ``none`` at ``base + 0.01 * seed`` and each (depth, heads) at that plus a gain."""
    rows = []
    for (depth, heads), per_seed in gains.items():
        for seed, gain in enumerate(per_seed):
            for h, acc in (("none", base + 0.01 * seed), (heads, base + 0.01 * seed + gain)):
                rows.append({"heads": h, "depth": depth, "surrogate": "ours", "seed": seed,
                             "steps": 410, "val_acc": acc, "test_acc": acc,
                             "grad_first": 1.0, "settings": key})
    # one `none` row per (depth, seed)
    unique = {(r["heads"], r["depth"], r["seed"]): r for r in rows}
    return list(unique.values())


def test_paired_test_matches_scipy_and_reports_effect_size():
    a = {0: 0.60, 1: 0.62, 2: 0.58, 3: 0.65, 4: 0.61}
    b = {0: 0.55, 1: 0.60, 2: 0.50, 3: 0.61, 4: 0.60, 9: 0.99}  # seed 9 has no pair: left out
    t = ab.paired(a, b)
    seeds = [0, 1, 2, 3, 4]
    assert t["seeds"] == seeds and t["n"] == 5
    expected = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue
    assert t["p"] == pytest.approx(expected)
    diffs = [a[s] - b[s] for s in seeds]
    assert t["mean_diff"] == pytest.approx(sum(diffs) / 5)
    assert t["d_z"] == pytest.approx(t["mean_diff"] / t["std_diff"])


@pytest.mark.parametrize("gains, expected", [
    ([0.10, 0.12, 0.09, 0.11, 0.13], "holds"),
    ([-0.10, -0.12, -0.09, -0.11, -0.13], "does not hold"),
    ([0.10, -0.12, 0.09, -0.11, 0.01], "cannot be decided"),
])
def test_claim_one_verdicts(gains, expected):
    result = ab.analyse(_rows({(20, "shortcut"): gains}))
    (comparison,) = result["comparisons"]
    assert comparison["heads"] == "shortcut" and comparison["n"] == 5
    assert comparison["verdict"] == expected


def test_holm_adjusts_a_family_of_p_values():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (monotone), 0.5
    assert ab.holm([0.03, 0.01, None, 0.5, 0.02]) == pytest.approx(
        [0.06, 0.04, None, 0.5, 0.06])
    assert ab.holm([]) == []


def test_a_verdict_needs_the_family_corrected_p():
    """Eight comparisons, one of them at p ~ 0.02: significant alone, not after Holm."""
    gains = {(20, "shortcut"): [0.05, 0.01, 0.06, 0.02, 0.04]}
    alone = ab.analyse(_rows(gains))["comparisons"][0]
    assert 0.01 < alone["p"] < 0.03 and alone["verdict"] == "holds"
    tests = [dict(alone, p=0.5) for _ in range(7)] + [dict(alone)]
    for t, adjusted in zip(tests, ab.holm([t["p"] for t in tests])):
        t["p_holm"] = adjusted
    assert tests[-1]["p_holm"] == pytest.approx(8 * alone["p"])
    assert ab.verdict(tests[-1]) == "cannot be decided"


def test_dsn_is_reported_but_not_judged_nor_counted_in_the_claims_family():
    gains = [0.10, 0.12, 0.09, 0.11, 0.13]
    alone = ab.analyse(_rows({(20, "shortcut"): gains}))["comparisons"][0]
    both = {c["heads"]: c for c in ab.analyse(_rows({(20, "shortcut"): gains,
                                                     (20, "dsn"): gains}))["comparisons"]}
    assert both["dsn"]["verdict"] == "not a claim"
    assert both["shortcut"]["p_holm"] == pytest.approx(alone["p_holm"])


def test_claim_two_compares_gains_paired_on_seed():
    rows = _rows({(8, "shortcut"): [0.01, 0.02, 0.00, 0.01, 0.02],
                  (20, "shortcut"): [0.10, 0.12, 0.09, 0.11, 0.13]})
    claims = {c["heads"]: c for c in ab.analyse(rows)["depth_claims"]}
    assert claims["shortcut"]["verdict"] == "holds"
    assert claims["shortcut"]["mean_diff"] == pytest.approx(0.098)
    assert claims["evolutionary"]["n"] == 0  # no runs of it: nothing decided
    assert claims["evolutionary"]["verdict"] == "cannot be decided"


def test_results_resume_only_runs_with_the_same_settings(tmp_path):
    path = tmp_path / "results" / "ablation.jsonl"
    assert ab.read_results(path) == []
    key = ab.settings_key(ab.SETTINGS)
    ab.append_result(path, {"heads": "none", "depth": 8, "surrogate": "ours", "seed": 0,
                            "settings": key})
    ab.append_result(path, {"heads": "dsn", "depth": 8, "surrogate": "ours", "seed": 0,
                            "settings": "another"})
    todo = ab.plan(["none", "dsn"], [8], ["ours"], [0, 1], ab.read_results(path), key)
    assert (8, "ours", 0, "none") not in todo  # recorded with these settings
    assert (8, "ours", 0, "dsn") in todo       # recorded with other settings: run again
    assert len(todo) == 3


def test_a_partial_line_is_named(tmp_path):
    path = tmp_path / "ablation.jsonl"
    path.write_text('{"heads": "none"}\n{"heads": "sh')
    with pytest.raises(SystemExit, match=r"ablation.jsonl:2: not a JSON line"):
        ab.read_results(path)


def test_report_writes_table_json_and_plot(tmp_path):
    results = tmp_path / "ablation.jsonl"
    for row in _rows({(8, "evolutionary"): [0.01, 0.0, 0.02, 0.01, 0.03],
                      (20, "evolutionary"): [0.1, 0.12, 0.09, 0.11, 0.13]}):
        ab.append_result(results, row)
    assert ab.main(["report", "--results", str(results), "--out", str(tmp_path / "out"),
                    "--plot", str(tmp_path / "ablation.png")]) == 0
    text = (tmp_path / "out" / "ablation.md").read_text()
    assert "| 20 layers | ours | evolutionary | 5 | +11.0 |" in text and "p_holm" in text
    assert json.loads((tmp_path / "out" / "ablation.json").read_text())["depth_claims"]
    assert (tmp_path / "ablation.png").stat().st_size > 10_000


def test_paper_table_refuses_a_missing_dataset(tmp_path):
    proc = subprocess.run(["bash", "benchmarks/paper_table.sh", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{tmp_path}/CIFAR10DVS: no such folder" in proc.stderr


@pytest.mark.slow
def test_paper_table_dry_run(tmp_path):
    """Every cell's real command (recipe + overrides) runs for one epoch at toy size, and the
    table comes out in the paper's layout with 3 seeds per cell."""
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    proc = subprocess.run(["bash", "benchmarks/paper_table.sh", str(tmp_path), "--dry-run"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "18 runs; estimated" in proc.stdout
    table = (tmp_path / "paper_table.md").read_text()
    assert table.startswith("DRY RUN")  # never mistaken for the paper's setting
    for method in ("vanilla", "shortcut back-propagation", "evolutionary training"):
        line = next(l for l in table.splitlines() if l.startswith(f"| {method} |"))
        assert line.count("(n=3)") == 2, line
    # a second call keeps the finished runs
    again = subprocess.run(["bash", "benchmarks/paper_table.sh", str(tmp_path), "--dry-run"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("finished, kept") == 18


@pytest.mark.slow
def test_ablation_run_records_each_run_and_resumes(tmp_path):
    results = tmp_path / "ablation.jsonl"
    args = ["run", "--heads", "none,shortcut", "--depths", "8", "--surrogates", "ours",
            "--seeds", "0", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
            "--min-steps", "2", "--results", str(results), "--out", str(tmp_path)]
    assert ab.main(args) == 0
    rows = ab.read_results(results)
    assert [(r["heads"], r["depth"], r["seed"]) for r in rows] == [("none", 8, 0),
                                                                    ("shortcut", 8, 0)]
    assert all(r["steps"] == 2 and 0 <= r["test_acc"] <= 1 and r["grad_first"] > 0
               for r in rows)
    assert ab.main(args) == 0  # nothing left to run: the file is unchanged
    assert ab.read_results(results) == rows
    with pytest.raises(SystemExit, match="fewer than --min-steps 400"):
        ab.main([a if a != "2" else "400" for a in args[:-4]] + ["--heads", "dsn", "--results",
                                                                 str(results), "--out",
                                                                 str(tmp_path)])
