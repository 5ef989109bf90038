"""No dead layers at initialisation; GPU-only code paths (bf16 autocast, the compiled neuron)
exercised on CPU; evaluation in exact float32 agrees with the export."""
import json
import math

import pytest
import torch
from spikeline.pipeline.blocks import BiasNorm, grid_init_
from spikeline.pipeline.diagnose import PAPER_SIZE, diagnose_init
from spikeline.pipeline.models import MODELS
from spikeline.pipeline.quantize import quantize_weight

from spikeline.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check_alive(res):
    assert res["main_logits_nonzero"]
    for row in res["layers"]:
        assert row["nonzero_weight_fraction"] >= 0.5, row
        assert row["grad_norm"] > 0, row


def test_grid_init_keeps_two_thirds_nonzero_at_any_fan_in():
    for fan_in in (9, 576, 4608, 18432, 100000):
        w = grid_init_(torch.empty(64, fan_in))
        nonzero = float((quantize_weight(w) != 0).float().mean())
        assert nonzero >= 0.6, (fan_in, nonzero)
        # small fan-ins keep torch's bound 1 / sqrt(fan_in)
        assert float(w.abs().max()) <= max(1 / math.sqrt(fan_in), 3 / 64) + 1e-7


@pytest.mark.parametrize("T", [4, 10])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_no_dead_layers_in_any_registry_model_at_its_paper_size(model, T):
    """48x48 (CIFAR10-DVS) for every model but the cnn (34x34, ndigits); paper widths; the
    paper's T=10 (docs/reference.md §13) and the ``ndigits_resnet`` recipe's T=4.  T=4 needs
    the relays: the identity shortcut at 84/64 (ResNet-34's stage 4 was dead at weight 1) and
    the cnn's relaying pools and first-conv scale (its readout heard nothing before T=8)."""
    res = diagnose_init(model, T=T, batch_size=1)
    assert res["size"] == [PAPER_SIZE.get(model, 48)] * 2
    _check_alive(res)


def test_the_cnn_hears_its_input_at_t4_on_random_frames_and_on_recordings(tmp_path, capsys):
    """The cnn's relaying pools and first-conv scale (``models.cnn``): at T=4 every layer,
    the readout included, gets a gradient at init, on random frames and on ndigits."""
    _check_alive(diagnose_init("cnn", T=4, batch_size=2))
    out = tmp_path / "init.json"
    assert main(["diagnose", "init", "--model", "cnn", "--T", "4", "--dataset", "ndigits",
                 "--batch-size", "8", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["input"] == "ndigits training recordings" and res["batch_size"] == 8
    _check_alive(res)
    assert "on ndigits training recordings" in capsys.readouterr().out


def test_diagnose_init_refuses_frames_of_the_wrong_shape():
    from spikeline.errors import SpikelineError

    frames = torch.zeros(2, 6, 2, 34, 34)
    with pytest.raises(SpikelineError, match=r"expected \[T, 2, H, W\] = \[4, 2, 34, 34\]"):
        diagnose_init("cnn", T=4, batch=(frames, torch.zeros(2, dtype=torch.long)))


def test_diagnose_init_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "init.json"
    assert main(["diagnose", "init", "--model", "cnn", "--T", "8", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["size"] == [34, 34] and isinstance(res["main_logits_nonzero"], bool)
    assert {"name", "nonzero_weight_fraction", "grad_norm", "output_rate"} <= \
        res["layers"][0].keys()
    assert "synaptic layers" in capsys.readouterr().out


def test_biasnorm_under_bf16_autocast_keeps_float32_statistics():
    norm = BiasNorm(8)
    z = torch.randn(3, 2, 8, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv = torch.nn.functional.conv2d(z.flatten(0, 1), torch.randn(8, 8, 1, 1))
        scaled, _bias = norm(conv.unflatten(0, (3, 2)))
    assert norm.running_mean.dtype == torch.float32 and conv.dtype == torch.bfloat16
    assert torch.isfinite(norm.running_var).all() and scaled.dtype == torch.float32


TINY_RESNET = ["--dataset", "ndigits", "--model", "resnet20", "--width", "8", "--depths",
               "1,1,1", "--T", "4", "--batch-size", "8", "--limit-train", "16",
               "--limit-test", "8", "--epochs", "1", "--max-steps", "2", "--device", "cpu",
               "--recalibrate-batches", "1", "--no-progress"]


def test_bf16_autocast_trains_a_batchnorm_resnet_on_cpu_and_exports_the_same_spikes(tmp_path):
    """--amp bf16 on CPU (the CUDA default's code path); the trained network evaluates to the
    same spikes in exact float32 and through the folded export."""
    out = tmp_path / "amp"
    assert main(["train", *TINY_RESNET, "--amp", "bf16", "--out", str(out)]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 2 and ckpt["config"]["amp"] == "bf16"
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())

    from spikeline.deploy.export import export_run, load_folded
    from spikeline.deploy.simulate import simulate
    from spikeline.pipeline.checkpoint import load_run_model
    from spikeline.pipeline.models import encode_frames

    export = export_run(out, tmp_path / "export", formats=("nir",))
    folded, _meta, nir_export = load_folded(export.out_dir)
    torch.manual_seed(1)
    frames = (torch.rand(2, 4, 2, 34, 34) < 0.2).float()
    with torch.no_grad():
        logits = folded(frames)
    x = encode_frames(frames.transpose(0, 1), "binary")
    voltage = simulate(nir_export.graph, x, mode="loihi").output
    torch.testing.assert_close(voltage.mean(0), logits, rtol=0, atol=0)
    # the unfolded network in eval mode runs without autocast too (float32 only)
    model, _ = load_run_model(out, "last")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        from spikeline.pipeline.train import exact_fp32

        with exact_fp32():
            assert model(frames).dtype == torch.float32


def test_compiled_neuron_trains_a_batchnorm_resnet(tmp_path, monkeypatch):
    """The CUDA default (the fused, torch.compile'd neuron step) on CPU."""
    monkeypatch.setenv("SPIKELINE_FUSED", "1")
    monkeypatch.setenv("SPIKELINE_NEURON", "compiled")
    out = tmp_path / "fused"
    assert main(["train", *TINY_RESNET, "--out", str(out)]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_training_then_exact_fp32_evaluation_matches_cpu(tmp_path):
    """The CUDA default (bf16 autocast, fused neuron) trains; evaluation in exact float32 (TF32
    off) on CUDA gives the CPU's logits bit for bit."""
    out = tmp_path / "cuda"
    args = [a if a != "cpu" else "cuda" for a in TINY_RESNET]
    assert main(["train", *args, "--out", str(out)]) == 0
    from spikeline.pipeline.checkpoint import load_run_model
    from spikeline.pipeline.train import exact_fp32

    model, _ = load_run_model(out, "last")
    torch.manual_seed(2)
    frames = (torch.rand(2, 4, 2, 34, 34) < 0.2).float()
    with torch.no_grad(), exact_fp32():
        cpu = model(frames)
        gpu = model.to("cuda")(frames.to("cuda")).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=0)


def test_fold_aware_synapse_computes_exactly_the_export():
    """In its fold-aware form a BatchNorm network's logits equal the folded export's."""
    from spikeline.deploy.fold import fold_model
    from spikeline.pipeline.blocks import set_fold_aware
    from spikeline.pipeline.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", input_size=(34, 34), width=8, depths=(1, 1, 1)).eval()
    for m in model.modules():
        if isinstance(m, BiasNorm):
            with torch.no_grad():
                m.running_var.uniform_(0.3, 3)
                m.running_mean.uniform_(-1, 1)
                m.weight.uniform_(0.5, 1.5)
                m.shift.uniform_(-0.5, 0.5)
    frames = (torch.rand(2, 4, 2, 34, 34) < 0.2).float()
    with torch.no_grad():
        folded = fold_model(model)(frames)
        plain = model(frames)
        assert set_fold_aware(model, True) > 0
        aware = model(frames)
    torch.testing.assert_close(aware, folded, rtol=0, atol=0)
    assert not torch.equal(plain, folded)  # the fold does change the network
    # gradients reach the weights and the norm's affine parameters through the folded form
    model.train()
    model(frames).sum().backward()
    syn = model.stages[0][1].conv1
    assert syn.weight.grad is not None and syn.norm.weight.grad is not None
    assert float(syn.weight.grad.abs().sum()) > 0


def test_fold_finetune_epochs_needs_earlier_epochs(capsys):
    assert main(["train", "--print-config", "--epochs", "2", "--fold-finetune-epochs", "2"]) == 2
    assert "--fold-finetune-epochs" in capsys.readouterr().err


def test_fold_finetune_makes_the_tested_network_the_deployed_one(tmp_path):
    """With --fold-finetune-epochs, best.pt comes from a folded epoch and its test accuracy is
    the deployed (exported, fixed-point) accuracy, sample for sample."""
    import nir
    from spikeline.datasets.registry import make_loader
    from spikeline.deploy.accuracy import deployed_accuracy
    from spikeline.deploy.export import export_run
    from spikeline.pipeline.config import TrainConfig

    from spikeline.cli.train import load_data, resolve_config

    out = tmp_path / "fold"
    args = [a for a in TINY_RESNET if a not in ("--max-steps", "2")]
    args[args.index("--epochs") + 1] = "2"
    assert main(["train", *args, "--fold-finetune-epochs", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["epoch"] == 2
    export = export_run(out, tmp_path / "export", formats=("nir",))
    config = resolve_config(TrainConfig(**json.loads((out / "config.json").read_text())["config"]))
    test = load_data(config).test
    deployed = deployed_accuracy(nir.read(export.out_dir / "model.nir"),
                                 make_loader(test, 8, shuffle=False))
    assert deployed.count == summary["num_test"]
    assert deployed.accuracy == summary["test_acc"]


def test_deployed_accuracy_honours_the_graphs_readout_window(monkeypatch):
    """input_pad_steps zero frames are appended to the T input steps; the logits average the
    output voltage over steps [readout_start, T + L)."""
    import nir
    from spikeline.deploy import simulate as sim
    from spikeline.deploy.accuracy import deployed_accuracy, readout_window

    from spikeline.errors import BadInput

    seen = []

    def fake_simulate(graph, x, mode="auto"):
        seen.append((x.shape[0], float(x[4:].abs().sum())))
        # step t drives class t: 10 on steps 0-1, 1 afterwards, so the window decides
        steps, n = x.shape[0], x.shape[1]
        v = torch.zeros(steps, n, 10)
        for t in range(steps):
            v[t, :, t] = 10.0 if t < 2 else 1.0
        return sim.Simulation({"out": v}, "out")

    monkeypatch.setattr(sim, "simulate", fake_simulate)
    graph = nir.NIRGraph(nodes={}, edges=[], metadata={"input_pad_steps": 3,
                                                       "readout_start": 2})
    assert readout_window(graph) == (3, 2)
    frames = torch.ones(2, 4, 2, 5, 5)  # N=2, T=4
    # full window: steps 0 and 1 dominate (class 0 wins the argmax tie-break); from step 2 on
    # every class 2..6 scores equally and class 2 wins
    assert deployed_accuracy(graph, [(frames, torch.tensor([2, 2]))]).accuracy == 1.0
    assert seen[-1] == (7, 0.0)  # T + L steps, the L appended ones are zero
    graph.metadata = {"input_pad_steps": 0, "readout_start": 0}
    assert deployed_accuracy(graph, [(frames, torch.tensor([0, 0]))]).accuracy == 1.0
    assert seen[-1][0] == 4
    graph.metadata = {"readout_start": 4}
    with pytest.raises(BadInput, match="readout_start"):
        deployed_accuracy(graph, [(frames, torch.tensor([0, 0]))])
    graph.metadata = {"readout_start": -1}
    with pytest.raises(BadInput, match="readout_start"):
        readout_window(graph)


def test_fold_finetune_default_is_one_epoch_where_batchnorm_is_folded():
    """The default: the last epoch in the deployed form for classifiers with BatchNorm trained
    2+ epochs; not for the cnn (nothing to fold), one epoch, ReZero or detectors; an explicit
    value stays."""
    from spikeline.pipeline.config import TrainConfig, resolve

    def ff(**kw):
        return resolve(TrainConfig(**kw), 4, (34, 34)).fold_finetune_epochs

    assert ff(model="resnet18", epochs=2) == 1
    assert ff(model="resnet18", epochs=2, timing="loihi") == 1
    assert ff(model="resnet18", epochs=1) == 0
    assert ff(model="cnn", epochs=4) == 0
    assert ff(model="resnet18", epochs=2, rezero=True) == 0
    assert ff(task="detection", dataset="ndigits-detect", model="ems_res10", epochs=4) == 0
    assert ff(model="resnet18", epochs=4, fold_finetune_epochs=2) == 2
    assert ff(model="resnet18", epochs=4, fold_finetune_epochs=0) == 0


def test_models_without_batchnorm_are_the_registry_models_without_batchnorm():
    """config.MODELS_WITHOUT_BATCHNORM (torch-free, for the default above) matches the models."""
    from spikeline.pipeline.blocks import Synapse
    from spikeline.pipeline.config import MODELS_WITHOUT_BATCHNORM
    from spikeline.pipeline.models import MODELS, build_model

    for name in MODELS:
        net = build_model(name, in_channels=2, num_classes=10, input_size=(34, 34), width=4)
        has_norm = any(isinstance(m, Synapse) and m.norm is not None for m in net.modules())
        assert has_norm == (name not in MODELS_WITHOUT_BATCHNORM), name


def test_resnets_are_the_registry_models_with_residual_blocks_and_default_to_lr_3e_3():
    """config.RESNETS (torch-free, for the default learning rate) matches the models; Adam on a
    ResNet classifier starts at 3e-3, anything else at the optimizer's default, and an
    explicit --lr is kept."""
    from spikeline.pipeline.config import RESNETS, TrainConfig, resolve
    from spikeline.pipeline.models import MODELS, ResidualBlock, build_model

    for name in MODELS:
        net = build_model(name, in_channels=2, num_classes=10, input_size=(34, 34), width=4)
        assert any(isinstance(m, ResidualBlock) for m in net.modules()) == (name in RESNETS)
    lr = lambda **kw: resolve(TrainConfig(**kw), 4, 34).lr  # noqa: E731
    assert lr(model="resnet18") == lr(model="sew_resnet34") == 3e-3
    assert lr(model="cnn") == lr(model="vgg11") == 1e-3
    assert lr(model="resnet18", optimizer="sgd") == 0.1
    assert lr(model="resnet18", lr=0.01) == 0.01
    assert lr(task="detection", dataset="ndigits-detect", model="ems_res10") == 1e-3


def test_a_checkpoint_from_a_fold_aware_epoch_is_scored_in_its_folded_form():
    """workflow.as_trained: what a run's summary calls "trained" (classifiers and detectors
    alike) is the network as that checkpoint trained it, folded when it comes from one of the
    last --fold-finetune-epochs epochs; before them, and without them, unfolded."""
    from spikeline.pipeline.blocks import Synapse
    from spikeline.pipeline.models import build_model
    from spikeline.workflow import as_trained

    def folded_synapses(epoch, tuned):
        net = build_model("resnet18", input_size=(16, 16), width=8, depths=(1, 1, 1, 1))
        ckpt = {"epoch": epoch, "config": {"epochs": 3, "fold_finetune_epochs": tuned}}
        return {m.fold_aware for m in as_trained(net, ckpt).modules()
                if isinstance(m, Synapse) and m.norm is not None}

    assert folded_synapses(3, 1) == {True}
    assert folded_synapses(2, 1) == folded_synapses(3, 0) == folded_synapses(3, None) == {False}
