"""Model registry, residual forms, shortcut heads and their training outputs."""
import pytest
import torch
import torch.nn.functional as F

from spikeline.pipeline.heads import HEAD_MODES, ShortcutHeads, evolutionary_lambda
from spikeline.pipeline.models import BRANCH_GAMMA, MODELS, ResidualBlock, build_model
from spikeline.pipeline.neuron import CubaParams


def frames(n=2, t=4, size=(48, 48), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (n, t, 2, *size), generator=g).float()


def small(name, **kw):
    size = (34, 34) if name == "cnn" else (48, 48)
    opts = {} if name == "cnn" else {"width": 8}
    return build_model(name, input_size=size, **opts, **kw), size


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_runs_and_exposes_stages(name):
    model, size = small(name)
    x = frames(size=size)
    stages, logits = model.forward_stages(x)
    assert logits.shape == (2, 10)
    assert len(stages) == len(model.stage_channels) >= 2
    for out, channels in zip(stages, model.stage_channels):
        assert out.shape[:2] == (4, 2) and out.shape[2] == channels
    torch.testing.assert_close(model(x), logits, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["cnn", "resnet18", "resnet20", "vgg11"])
def test_deployable_models_emit_binary_spikes(name):
    model, size = small(name)
    for out in model.forward_stages(frames(size=size))[0]:
        assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_sew_add_makes_counts_and_iand_stays_binary():
    x = frames(seed=3)
    add = build_model("sew_resnet18", input_size=(48, 48), width=8)
    iand = build_model("sew_resnet18", input_size=(48, 48), width=8, connect="IAND")
    for model in (add, iand):  # open the branches (nearly closed at init: BRANCH_GAMMA)
        for block in model.modules():
            if isinstance(block, ResidualBlock):
                torch.nn.init.ones_(block.conv2.norm.weight)
    assert max(out.max().item() for out in add.forward_stages(x)[0]) > 1
    for out in iand.forward_stages(x)[0]:
        assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_rezero_starts_as_identity_residual():
    model = build_model("resnet20", input_size=(48, 48), width=16, rezero=True)
    gates = [m.gate for m in model.modules() if getattr(m, "gate", None) is not None]
    assert gates and all(g.item() == 0 for g in gates)


def test_encoding_binary_clips_counts():
    model = build_model("cnn")
    x = frames(size=(34, 34))
    assert model.encode(x).max() == 1
    assert build_model("cnn", encoding="counts").encode(x).max() == 2
    with pytest.raises(ValueError, match="encoding"):
        build_model("cnn", encoding="rate")


def test_unknown_model_is_named():
    with pytest.raises(KeyError, match="resnet99"):
        build_model("resnet99")


def test_lambda_schedule():
    assert evolutionary_lambda(0.25, 0.0) == 0.25
    assert evolutionary_lambda(0.25, 0.5) == 0.125
    assert evolutionary_lambda(0.25, 1.0) == 0.0
    with pytest.raises(ValueError):
        evolutionary_lambda(0.25, 1.5)


def test_head_losses_follow_the_paper():
    torch.manual_seed(0)
    model, size = small("resnet20")
    x, y = frames(size=size), torch.tensor([3, 7])
    wrapped = {m: ShortcutHeads(model, 10, m) for m in HEAD_MODES}
    wrapped["dsn"].heads = wrapped["shortcut"].heads = wrapped["evolutionary"].heads
    heads, main = wrapped["evolutionary"].outputs(x)
    assert len(heads) == len(model.stage_channels) - 1
    expected = {
        "none": F.cross_entropy(main, y),
        "shortcut": F.cross_entropy(main + sum(heads), y),
        "evolutionary": F.cross_entropy(main + 0.25 * 0.6 * sum(heads), y),
        "dsn": F.cross_entropy(main, y) + sum(F.cross_entropy(h, y) for h in heads),
    }
    for mode, head in wrapped.items():
        loss, logits = head.loss(x, y, progress=0.4)
        torch.testing.assert_close(loss, expected[mode])
        torch.testing.assert_close(logits, main, rtol=0, atol=0)
    # at the end of training the evolutionary output is the main branch alone
    torch.testing.assert_close(wrapped["evolutionary"].loss(x, y, 1.0)[0], expected["none"])


def test_heads_reach_the_first_stage():
    """With lava-dl examples' surrogate (peak slope 0.04) the first stage's gradient vanishes
    through the stack; the heads hand it one directly."""
    torch.manual_seed(0)
    flat = CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03, tau_grad=0.03,
                      scale_grad=3.0)
    model, size = small("resnet20", neuron=flat)
    x, y = frames(size=size), torch.tensor([1, 2])
    first = next(model.parameters())
    norms = {}
    for mode in ("none", "shortcut"):
        model.zero_grad()
        ShortcutHeads(model, 10, mode).loss(x, y)[0].backward()
        norms[mode] = first.grad.norm().item()
    assert norms["shortcut"] > norms["none"] > 0


def test_strip_leaves_the_vanilla_network():
    torch.manual_seed(0)
    model, size = small("resnet18")
    vanilla_params = sum(p.numel() for p in model.parameters())
    wrapped = ShortcutHeads(model, 10, "evolutionary")
    assert sum(p.numel() for p in wrapped.parameters()) > vanilla_params
    stripped = wrapped.strip()
    assert sum(p.numel() for p in stripped.parameters()) == vanilla_params
    assert not any("head" in name for name, _ in stripped.named_parameters())
    x = frames(size=size)
    wrapped.eval()
    _, main = wrapped.outputs(x)
    torch.testing.assert_close(stripped(x), main, rtol=0, atol=0)


def test_residual_branches_start_nearly_closed():
    """Each residual branch's last BatchNorm starts at BRANCH_GAMMA: small enough that the
    spikes a block passes on are not drowned by its random branch (the input survives depth),
    nonzero so every layer has a gradient at init (tests/test_pipeline_init.py)."""
    model = build_model("resnet18", input_size=(34, 34), width=16)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 8 and 0 < BRANCH_GAMMA < 0.1
    for block in blocks:
        assert torch.all(block.conv2.norm.weight == BRANCH_GAMMA)
        assert torch.all(block.conv1.norm.weight == 1)
