"""A loihi-timed network is exactly the ideal one shifted in time, with either BatchNorm.

Scale-only: without a voltage bias no layer moves before its input arrives.  Shifting (the
default): the bias drives every layer from step 0, and each neuron restarts at its input's
arrival (``LIF.reset_step``, Lava's ``LIFReset``), so the bias-only steps leave no trace.  With
the BatchNorm statistics over each layer's own window ``[arrival, arrival + T)`` the same
weights give the same logits (and the same running statistics) under both timings.  Without
the reset (checkpoints written before it) they do not.
"""
import numpy as np
import nir
import pytest
import torch

from spikeline.deploy.fold import fold_model
from spikeline.deploy.simulate import simulate
from spikeline.deploy.to_nir import model_to_nir
from spikeline.pipeline.blocks import LIF, Affine, BiasNorm, recalibrate_norms
from spikeline.pipeline.checkpoint import build_from_spec
from spikeline.pipeline.config import TrainConfig, resolve
from spikeline.pipeline.heads import ShortcutHeads
from spikeline.pipeline.models import build_model

SIZE = (12, 12)
RESNET = {"width": 8, "depths": (1, 1, 1, 1)}


def _frames(n=4, t=4, seed=1, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, t, 2, *SIZE, generator=g) < p).float()


def _trained_pair(name, batchnorm, **options):
    """An ideal-timed net trained a few Adam steps with shortcut heads (so that the weights,
    gains, shifts and statistics are not those of init), and a loihi-timed copy."""
    torch.manual_seed(0)
    ideal = build_model(name, input_size=SIZE, batchnorm=batchnorm, **options)
    heads = ShortcutHeads(ideal, 10, "evolutionary")
    opt = torch.optim.Adam(heads.parameters(), lr=1e-2)
    y = torch.tensor([0, 1, 2, 3])
    for step in range(4):
        opt.zero_grad()
        heads.loss(_frames(seed=step), y, progress=step / 4)[0].backward()
        opt.step()
    loihi = build_model(name, input_size=SIZE, timing="loihi", batchnorm=batchnorm, **options)
    loihi.load_state_dict(ideal.state_dict())
    return ideal, loihi


def _recalibrate(model):
    batches = [(_frames(seed=10 + i), None) for i in range(2)]
    assert recalibrate_norms(model, batches, torch.device("cpu"), 2) == 2


@pytest.mark.parametrize("batchnorm", ["scale", "shift"])
@pytest.mark.parametrize("name,options", [("resnet18", RESNET), ("sew_resnet18", RESNET),
                                          ("vgg11", {"width": 8})])
def test_either_norm_gives_identical_logits_under_both_timings(name, options, batchnorm):
    ideal, loihi = _trained_pair(name, batchnorm, **options)
    assert loihi.latency > 0
    x = _frames(seed=99)
    with torch.no_grad():
        # train mode: batch statistics over each layer's own window
        assert torch.equal(ideal.train()(x), loihi.train()(x))
        for m_i, m_l in zip(ideal.modules(), loihi.modules()):
            if isinstance(m_i, BiasNorm):
                assert torch.equal(m_i.running_mean, m_l.running_mean)
                assert torch.equal(m_i.running_var, m_l.running_var)
        _recalibrate(ideal)
        _recalibrate(loihi)
        for m_i, m_l in zip(ideal.modules(), loihi.modules()):
            if isinstance(m_i, BiasNorm):
                assert torch.equal(m_i.running_var, m_l.running_var)
        a, b = ideal.eval()(x), loihi.eval()(x)
        assert a.std() > 0 and torch.equal(a, b)
        # the folded, quantized nets too, and neither writes a voltage bias
        fi, fl = fold_model(ideal), fold_model(loihi)
        assert torch.equal(fi(x), fl(x))
    # scale-only writes no voltage bias, the shifting form does
    biased = any(getattr(m, "bias", None) is not None for m in fl.modules()
                 if hasattr(m, "weight") and not isinstance(m, torch.nn.Linear))
    assert biased == (batchnorm == "shift")


def test_heads_see_the_same_windows_under_both_timings():
    ideal, loihi = _trained_pair("resnet18", "scale", **RESNET)
    x = _frames(seed=5)
    torch.manual_seed(0)
    h1 = ShortcutHeads(ideal, 10, "shortcut")
    h2 = ShortcutHeads(loihi, 10, "shortcut")
    h2.heads.load_state_dict(h1.heads.state_dict())
    with torch.no_grad():
        for a, b in zip(h1.outputs(x)[0], h2.outputs(x)[0], strict=True):
            assert a.abs().sum() > 0 and torch.equal(a, b)
    assert loihi.stage_starts == (4, 6, 8, 10) and ideal.stage_starts == (0, 0, 0, 0)


def test_without_the_reset_the_shifting_norm_is_not_the_ideal_net():
    """The check above can fail: checkpoints trained before the reset rebuild without it
    (``resets_at_arrival`` absent from their spec), and their biases act before arrival."""
    ideal, _ = _trained_pair("resnet18", "shift", **RESNET)
    spec = {"name": "resnet18", "input_size": list(SIZE), "width": 8, "depths": [1, 1, 1, 1],
            "timing": "loihi", "batchnorm": "shift"}
    old = build_from_spec(spec)
    old.load_state_dict(ideal.state_dict())
    assert not old.resets_at_arrival
    assert all(m.reset_step == 0 for m in old.modules() if hasattr(m, "reset_step"))
    new = build_from_spec({**spec, "resets_at_arrival": True})
    assert [m.reset_step for m in new.modules() if isinstance(m, LIF)][:3] == [1, 2, 3]
    assert next(m for m in new.modules() if isinstance(m, Affine)).reset_step == new.latency
    x = _frames(seed=99)
    with torch.no_grad():
        _recalibrate(ideal)
        _recalibrate(old)
        assert not torch.equal(ideal.eval()(x), old.eval()(x))


def test_resets_are_left_out_where_nothing_precedes_the_arrival():
    """Without any voltage bias (scale-only) every layer is silent before its arrival, so no
    neuron restarts (and the export writes no ``reset_steps``); under ideal timing none do."""
    scale = build_model("resnet18", input_size=SIZE, timing="loihi", batchnorm="scale", **RESNET)
    ideal = build_model("resnet18", input_size=SIZE, **RESNET)
    for model in (scale, ideal):
        assert all(m.reset_step == 0 for m in model.modules() if hasattr(m, "reset_step"))


def test_scale_only_loihi_export_has_no_voltage_bias_and_runs_as_trained():
    _, loihi = _trained_pair("resnet18", "scale", **RESNET)
    _recalibrate(loihi)
    folded = fold_model(loihi)
    export = model_to_nir(folded, (2, *SIZE))
    for node in export.graph.nodes.values():
        if isinstance(node, nir.CubaLIF):
            assert not np.any(np.asarray(node.v_leak))
    x = _frames(n=1, seed=3)
    sim = simulate(export.graph, folded.network_input(x), mode="loihi")
    out = export.graph.metadata["output_node"]
    start = export.graph.metadata["readout_start"]
    logits = sim.outputs[out][start:].mean(0)
    with torch.no_grad():
        assert torch.equal(logits.reshape(-1), folded(x).reshape(-1))


def test_specs_without_batchnorm_rebuild_the_shifting_form():
    """Checkpoints written before scale-only BatchNorm rebuild as they were written."""
    spec = {"name": "resnet18", "input_size": list(SIZE), "width": 8, "depths": [1, 1, 1, 1],
            "timing": "loihi"}
    old = build_from_spec(spec)
    assert all(m.shift is not None for m in old.modules() if isinstance(m, BiasNorm))
    new = build_from_spec({**spec, "batchnorm": "scale"})
    assert all(m.shift is None for m in new.modules() if isinstance(m, BiasNorm))
    with pytest.raises(ValueError, match="batchnorm"):
        build_model("resnet18", batchnorm="center")


def test_config_default_batchnorm_is_the_shifting_one_under_both_timings():
    assert resolve(TrainConfig(timing="loihi"), 4, 34).batchnorm == "shift"
    assert resolve(TrainConfig(timing="ideal"), 4, 34).batchnorm == "shift"
    assert resolve(TrainConfig(timing="loihi", batchnorm="scale"), 4, 34).batchnorm == "scale"


# --- the identity shortcut relays a lone spike ----------------------------------------------

def test_identity_shortcut_relays_a_lone_spike_and_exports_as_a_scale_on_lava():
    from spikeline.deploy.to_lava import lower
    from spikeline.pipeline.models import ResidualBlock, relay_weight_for
    from spikeline.pipeline.neuron import CubaParams

    block = build_model("resnet18", input_size=SIZE, **RESNET).stages[0][1]  # ideal timing
    assert isinstance(block, ResidualBlock) and block.down is None
    assert block.identity_weight == relay_weight_for(block.lif1.neuron) == 84 / 64
    assert relay_weight_for(CubaParams(threshold=1.0)) == 68 / 64  # even mantissa above
    with torch.no_grad():
        block.conv2.weight.zero_()  # a closed branch: only the identity reaches the neuron
        x = torch.zeros(3, 1, 8, 4, 4)
        x[0, 0, 2, 1, 3] = 1.0  # one spike
        out = block.eval()(x)
        assert out[0, 0, 2, 1, 3] == 1 and out[0].sum() == 1
        block.identity_weight = 1.0  # the weight before: below the threshold, the spike is lost
        assert block(x)[0].sum() == 0
    model = build_model("resnet18", input_size=SIZE, timing="loihi", **RESNET)
    graph = model_to_nir(fold_model(model.eval()), (2, *SIZE)).graph
    scales = [n for n in graph.nodes.values() if isinstance(n, nir.Scale)]
    assert len(scales) == 1 and np.all(np.asarray(scales[0].scale) == 84 / 64)
    net = lower(graph)
    weights = {line.weight for line in net.lines.values()}
    assert 84 in weights and 64 not in weights  # the identity line ends in 84, not 64


def test_old_specs_keep_the_identity_of_weight_one():
    spec = {"name": "resnet18", "input_size": list(SIZE), "width": 8, "depths": [1, 1, 1, 1]}
    old = build_from_spec(spec)
    assert {b.identity_weight for b in old.modules() if hasattr(b, "identity_weight")} == {1.0}
    graph = model_to_nir(fold_model(old.eval()), (2, *SIZE)).graph
    assert not any(isinstance(n, nir.Scale) for n in graph.nodes.values())
    with pytest.raises(ValueError, match="identity_weight"):
        build_model("resnet18", identity_weight=1.3)


# --- detectors ---------------------------------------------------------------------------

@pytest.mark.parametrize("batchnorm", ["scale", "shift"])
def test_either_norm_detector_gives_identical_outputs_under_both_timings(batchnorm):
    from spikeline.pipeline.ems import ems_detector, detector_neuron

    torch.manual_seed(0)
    kw = {"in_channels": 2, "num_classes": 3, "neuron": detector_neuron(), "width": 8,
          "deployable": True, "batchnorm": batchnorm}
    ideal = ems_detector(18, **kw)
    loihi = ems_detector(18, timing="loihi", **kw)
    if batchnorm == "shift":  # random shifts, so that every bias differs from 0
        with torch.no_grad():
            for m in ideal.modules():
                if isinstance(m, BiasNorm):
                    m.shift.uniform_(-0.3, 0.3)
    loihi.load_state_dict(ideal.state_dict())
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 3, 2, 64, 64, generator=g) < 0.3).float()
    with torch.no_grad():
        for a, b in zip(ideal.train()(x), loihi.train()(x), strict=True):
            assert torch.equal(a, b)
        for a, b in zip(ideal.eval()(x), loihi.eval()(x), strict=True):
            assert a.abs().sum() > 0 and torch.equal(a, b)
    with pytest.raises(Exception, match="deployable"):
        ems_detector(10, **{**kw, "batchnorm": "scale", "deployable": False})


def test_detector_spec_defaults_to_the_wider_surrogate():
    from spikeline.pipeline.detect_train import detection_spec

    config = TrainConfig(task="detection", dataset="ndigits-detect", model="ems_res10",
                         timing="loihi")
    sample = torch.zeros(3, 2, 64, 64)
    spec = detection_spec(resolve(config, 3, 64), sample, 10)
    assert spec["neuron"]["tau_grad"] == 0.02 and spec["batchnorm"] == "shift"
    assert spec["resets_at_arrival"]
    assert spec["identity_weight"] == 84 / 64
    spec = detection_spec(resolve(TrainConfig(task="detection", dataset="ndigits-detect",
                                              model="ems_res10", tau_grad=0.004), 3, 64),
                          sample, 10)
    assert spec["neuron"]["tau_grad"] == 0.004 and spec["batchnorm"] == "shift"
    assert build_from_spec(spec).head is not None
