"""The CLI end to end: a tiny `spikeline run`, then export/simulate/verify/import/energy on it."""
import json
import pathlib

import nir
import numpy as np
import pytest

from spikeline.cli import main

SHARED = pathlib.Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    out = root / "run"
    code = main(["run", "--dataset", "ndigits", "--model", "cnn", "--heads", "evolutionary",
                 "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--T", "4",
                 # lr 3e-3: after 4 steps every layer spikes on some test sample (verify
                 # refuses a silent layer) and the test accuracy is above chance (measured
                 # with the cnn's relaying init: 1e-3 12.5%, 3e-3 15.6%, 1e-2 6.25%)
                 "--lr", "0.003", "--batch-size", "16", "--verify-samples", "8",
                 "--lava-samples", "1", "--energy-samples", "4",
                 "--cache-dir", str(root / "cache"), "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_run_writes_every_artifact(run_dir):
    summary = json.loads((run_dir / "pipeline.json").read_text())
    # accuracies are counts over the 32 test samples; 4 steps already beat chance (10%)
    assert summary["num_test"] == 32
    for key in ("trained_test_acc", "deployed_test_acc"):
        assert summary[key] * 32 == pytest.approx(round(summary[key] * 32)), key
    assert summary["trained_test_acc"] > 0.1 and summary["deployed_test_acc"] > 0.1
    assert summary["deployed_minus_trained"] == pytest.approx(
        summary["deployed_test_acc"] - summary["trained_test_acc"])
    assert {b: v["mismatches"] for b, v in summary["verify"].items()} == {
        "nir": 0, "lava": 0, "spikingjelly": 0, "snntorch": 0}
    assert summary["energy_per_inference_J"]["cmos45_int8"]["snn"] > 0
    for name in ("export/model.nir", "export/model.net", "export/folded.pt", "verify.json",
                 "energy/energy.json", "energy/energy_layers.png", "best.pt", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name


def test_export_simulate_verify_import_commands(run_dir, tmp_path, capsys):
    export = tmp_path / "export"
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "nir", "--out", str(export),
                 "--cache-dir", str(run_dir.parent / "cache")]) == 0
    assert (export / "model.nir").is_file() and not (export / "model.net").exists()
    # the deployed network's accuracy on the whole test split, beside the trained one's: the
    # same graph on the same split as `run` measured
    printed = capsys.readouterr().out
    assert "deployed (folded, quantized, fixed-point)" in printed and "trained" in printed
    pipeline = json.loads((run_dir / "pipeline.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["deployed_test_acc"] == pipeline["deployed_test_acc"]
    assert summary["trained_test_acc"] == summary["test_acc"] == pipeline["trained_test_acc"]
    graph = nir.read(export / "model.nir")
    x = np.zeros((3, 2, 34, 34), dtype=np.float32)
    x[:, :, 10:20, 10:20] = 1
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    assert main(["simulate", str(export / "model.nir"), "--input", str(tmp_path / "x.npy"),
                 "--save-output", str(tmp_path / "y.npy")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["T"] == 3 and summary["output_shape"] == [10]
    assert np.load(tmp_path / "y.npy").shape == (3, 10)
    assert len(summary["spikes_per_node"]) == 5
    # one bright square for 3 steps leaves the last layers silent: a comparison of silence
    # certifies nothing, and verify says so (exit 1); test samples make every layer spike
    assert main(["verify", str(export), "--input", str(tmp_path / "x.npy"),
                 "--backends", "nir,spikingjelly"]) == 1
    assert "never active in the reference" in capsys.readouterr().err
    assert main(["verify", str(export), "--dataset", "ndigits", "--samples", "8",
                 "--cache-dir", str(run_dir.parent / "cache"), "--backends", "nir,spikingjelly",
                 "--json", str(tmp_path / "v.json")]) == 0
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["ok"] is True and report["checked_by"] == ["nir"]
    assert report["peers_read_model_nir_as_spikeline"] == ["spikingjelly"]
    assert report["parameters"]["status"] == "ok" and "model.nir" in \
        report["parameters"]["artifacts"]
    assert main(["import", str(export / "model.nir"), "--out", str(tmp_path / "copy.nir")]) == 0
    assert set(nir.read(tmp_path / "copy.nir").nodes) == set(graph.nodes)


def test_simulate_a_real_recording_through_an_external_graph(capsys):
    from conftest import real_path

    graph, sample = real_path("nir/nmnist_cnn_sinabs.nir"), real_path("nmnist_sample.bin")
    assert main(["simulate", str(graph), "--events", str(sample), "--T", "10"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["T"] == 10 and summary["spikes_per_node"]["1"] > 0


def test_bad_inputs_exit_2_with_a_message(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    assert main(["simulate", str(tmp_path / "missing.nir"), "--input", "x.npy"]) == 2
    (tmp_path / "bad.nir").write_text("not a graph")
    assert main(["import", str(tmp_path / "bad.nir"), "--out", str(tmp_path / "o.nir")]) == 2
    err = capsys.readouterr().err
    assert "missing.nir" in err and "bad.nir" in err


def test_tiny_residual_run_end_to_end(tmp_path):
    """A Spiking ResNet (BatchNorm, residuals) through train -> export -> deployed accuracy ->
    verify -> energy, and the summary shows trained next to deployed accuracy."""
    out = tmp_path / "res"
    code = main(["run", "--dataset", "ndigits", "--model", "resnet20", "--width", "8",
                 "--depths", "1,1,1", "--epochs", "1", "--limit-train", "32", "--limit-test",
                 "16", "--T", "4", "--batch-size", "16", "--recalibrate-batches", "1",
                 "--lr", "0.01", "--verify-samples", "8", "--energy-samples", "2",
                 "--backends", "nir",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "pipeline.json").read_text())
    assert summary["model"] == "resnet20" and summary["num_test"] == 16
    for key in ("trained_test_acc", "deployed_test_acc"):  # counts over the 16 samples
        assert summary[key] * 16 == pytest.approx(round(summary[key] * 16)), key
    assert summary["verify"]["nir"]["mismatches"] == 0
    assert summary["verify_parameters"] == "ok" and summary["verified_by"] == ["nir"]
    assert all(0 < c <= 1 for c in summary["verify_coverage"].values())
    train_summary = json.loads((out / "summary.json").read_text())
    assert train_summary["deployed_test_acc"] == summary["deployed_test_acc"]
    assert train_summary["test_acc"] == summary["trained_test_acc"]


@pytest.mark.slow
def test_the_resnet18_repro_learns_well_above_chance(tmp_path):
    """Issue 8's repro, as a user types it (2-3 minutes): a plain Spiking ResNet-18 with
    evolutionary heads leaves chance (10%) within 2 epochs, and its deployed accuracy is
    measured next to the trained one.  It stayed at 11% while every residual branch started
    at full gain (models.BRANCH_GAMMA says why); measured after the fix: trained 34.0%,
    deployed 29.5%; with the ResNets' default lr 3e-3 (2026-12-07): 47.9% and 47.9% (seeds
    1-2: 52.9%, 40.7%; a different thread count changes float sums as a seed would, hence the
    margin under issue 17's 40% / 38%)."""
    out = tmp_path / "repro"
    code = main(["run", "--dataset", "ndigits", "--model", "resnet18", "--width", "16",
                 "--heads", "evolutionary", "--epochs", "2", "--T", "6", "--backends", "nir",
                 "--verify-samples", "2", "--energy-samples", "2",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "pipeline.json").read_text())
    assert summary["trained_test_acc"] >= 0.35, summary["trained_test_acc"]
    assert summary["deployed_test_acc"] >= 0.35, summary["deployed_test_acc"]
    assert summary["verify"]["nir"]["mismatches"] == 0


def test_print_config_of_the_cifar10dvs_recipe_resolves(capsys):
    recipe = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "cifar10dvs_resnet18.toml"
    assert main(["train", "--print-config", "--config", str(recipe), "--epochs", "3"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["dataset"] == "cifar10dvs" and config["model"] == "resnet18"
    assert config["T"] == 10 and config["size"] == [48, 48] and config["heads"] == "evolutionary"
    assert config["lam"] == 0.25 and config["epochs"] == 3  # the flag overrides the recipe
    assert config["lr"] == 1e-3 and config["batch_size"] == 128


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_cpu(tmp_path):
    import os
    import subprocess

    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "OUT": str(tmp_path / "gpu"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=root, env=env,
                          check=False, capture_output=True, text=True, timeout=1500)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    checks = {r["check"]: r for r in lines if "check" in r}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert checks["env"]["dry_run"] is True
    assert checks["summary"]["failed_steps"] == 0
    modes = {r["mode"] for r in lines if r.get("bench") == "resnet18_modes" and
             "samples_per_s" in r}
    assert modes == {"eager", "compile", "compile_bf16"}
    assert (tmp_path / "gpu" / "results.jsonl").is_file()
