"""MS/EMS networks and the EMS-YOLO detector: shapes, spikes where the chip needs them,
gradients, export of the deployable blocks, and a detector that learns on ndigits-detect."""
from __future__ import annotations

import nir
import pytest
import torch
from spikeline.deploy.fold import fold_model
from spikeline.deploy.simulate import simulate
from spikeline.deploy.to_nir import model_to_nir
from spikeline.deploy.verify import reference_activity
from spikeline.pipeline.blocks import Conv
from spikeline.pipeline.detection import yolo_loss
from spikeline.pipeline.ems import DeployableEMSBlock, ems_detector, ms_resnet
from spikeline.pipeline.heads import ShortcutHeads
from spikeline.pipeline.models import DEFAULT_NEURON, SpikingNet, _flat_readout
from torch import nn


def _frames(n=2, T=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, T, 2, size, size, generator=g) < 0.15).float()


@pytest.mark.parametrize("deployable", [False, True])
@pytest.mark.parametrize("depth", [10, 18])
def test_detector_shapes_and_what_travels_between_blocks(depth, deployable):
    torch.manual_seed(0)
    net = ems_detector(depth, in_channels=2, num_classes=10, neuron=DEFAULT_NEURON, width=8,
                       deployable=deployable)
    x = _frames()
    raw = net(x)
    assert [tuple(r.shape) for r in raw] == [(2, 3, 4, 4, 15), (2, 3, 2, 2, 15)]
    p4, p5 = net.features(x)
    binary = all(bool(((f == 0) | (f == 1)).all()) for f in (p4, p5))
    assert binary == deployable  # spikes on the chip's variant, membranes as published


def test_detector_gradients_reach_the_stem():
    torch.manual_seed(0)
    for deployable in (False, True):
        net = ems_detector(10, in_channels=2, num_classes=10, neuron=DEFAULT_NEURON, width=8,
                           deployable=deployable)
        targets = torch.tensor([[0, 3, 0.3, 0.3, 0.3, 0.4], [1, 7, 0.6, 0.6, 0.3, 0.4]])
        loss, _ = yolo_loss(net(_frames()), targets, net.head.anchors, 64)
        loss.backward()
        stem = net.stem.synapse.weight if deployable else net.stem.synapse.weight
        assert stem.grad is not None and stem.grad.abs().sum() > 0


def test_ms_resnet_classifies_and_takes_shortcut_heads():
    torch.manual_seed(0)
    net = ms_resnet((2, 2, 2, 2), in_channels=2, num_classes=10, input_size=(34, 34),
                    neuron=DEFAULT_NEURON, encoding="binary", width=8)
    x = _frames(size=34)
    assert net(x).shape == (2, 10)
    heads = ShortcutHeads(net, 10, "evolutionary")
    loss, logits = heads.loss(x, torch.tensor([1, 2]), progress=0.5)
    loss.backward()
    assert logits.shape == (2, 10) and len(heads.heads) == 3


def test_deployable_blocks_export_and_simulate_spike_for_spike(tmp_path):
    """A classifier of deployable EMS blocks folds to NIR and our simulator reproduces every
    neuron of the folded model exactly (the detector's backbone is made of these blocks)."""
    torch.manual_seed(0)
    n = DEFAULT_NEURON
    stage = nn.Sequential(Conv(n, 2, 8, 3, stride=2, padding=1, norm=True, delay_shift=False),
                          DeployableEMSBlock(n, 8, 16, 2), DeployableEMSBlock(n, 16, 16, 1))
    model = SpikingNet([stage], _flat_readout(n, 16, (9, 9), 10), "binary", [16])
    x = (torch.rand(4, 5, 2, 34, 34) < 0.3).float()
    with torch.no_grad():
        model.train()(x)  # BatchNorm statistics that are not the identity
    folded = fold_model(model)
    export = model_to_nir(folded, (2, 34, 34))
    nir.write(tmp_path / "m.nir", export.graph)
    sim = simulate(nir.read(tmp_path / "m.nir"), folded.encode(x))
    seen = reference_activity(folded, export.modules, x)  # what verify compares against
    with torch.no_grad():
        logits = folded(x)
    assert sum(v.sum().item() for k, v in seen.items() if "lif" in k) > 0
    for node, out in seen.items():
        assert torch.equal(sim.outputs[node], out), node
    torch.testing.assert_close(sim.output.mean(0), logits, rtol=0, atol=0)


@pytest.mark.slow
def test_detector_learns_to_find_digits_on_ndigits_detect(tmp_path):
    """A tiny deployable EMS-Res10, 5 epochs of 256 scenes: its mAP@0.5 on those scenes must
    rise well above what the untrained head finds (measured: 0, nothing above the
    confidence floor)."""
    from spikeline.datasets.detection import detection_collate, load_detection
    from spikeline.pipeline.detection import decode, mean_average_precision, nms

    torch.manual_seed(0)
    data = torch.utils.data.Subset(load_detection("ndigits-detect", "train", T=3,
                                                  cache_dir=tmp_path), range(256))
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True,
                                         collate_fn=detection_collate)
    net = ems_detector(10, in_channels=2, num_classes=10, neuron=DEFAULT_NEURON, width=16,
                       deployable=True)

    def found_map() -> float:
        preds, truths = [], []
        net.eval()
        with torch.no_grad():
            for x, t in torch.utils.data.DataLoader(data, batch_size=64,
                                                    collate_fn=detection_collate):
                for i, rows in enumerate(nms(decode(net(x), net.head.anchors), 0.01, 0.5)):
                    mine = t[t[:, 0] == i]
                    cxcy, wh = mine[:, 2:4] * 64, mine[:, 4:6] * 64
                    truths.append((torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1).numpy(),
                                   mine[:, 1].numpy()))
                    preds.append(rows.numpy())
        net.train()
        return mean_average_precision(preds, truths, 10)["mAP50"]

    before = found_map()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(5):
        for x, targets in loader:
            loss, _ = yolo_loss(net(x), targets, net.head.anchors, 64)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = found_map()
    assert after > max(10 * before, 0.02), (before, after)
