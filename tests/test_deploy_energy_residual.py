"""`spikeline energy` on residual exports end to end (Spiking ResNet and SEW ADD).

Regression: every residual export crashed the energy command with ``AttributeError: module
'nir' has no attribute 'Identity'`` (nir 1.0.8 has no Identity node)."""
import json

import numpy as np
import pytest
import torch

from spikeline.cli import main
from spikeline.deploy.export import export_model
from spikeline.pipeline.models import build_model


@pytest.mark.parametrize("name,kind", [("resnet20", "spiking"), ("sew_resnet18", "ADD")])
def test_energy_on_a_residual_export(tmp_path, name, kind):
    torch.manual_seed(0)
    depths = [1, 1, 1] if name == "resnet20" else [1, 1, 1, 1]
    spec = {"name": name, "in_channels": 2, "num_classes": 10, "input_size": [16, 16],
            "width": 4, "depths": depths}
    model = build_model(name, input_size=(16, 16), width=4, depths=depths)
    with torch.no_grad():  # at init this tiny net is nearly silent after its stem: no spike
        for p in model.parameters():  # would meet at a junction and the count would be 0
            if p.dim() > 1:
                p.mul_(4)
    export_model(model, spec, tmp_path / "export", config={"T": 4})
    x = (np.random.default_rng(0).random((4, 2, 2, 16, 16)) < 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "energy.json"
    assert main(["energy", str(tmp_path / "export"), "--input", str(tmp_path / "x.npy"),
                 "--json", str(out), "--report", str(tmp_path / "report")]) == 0
    data = json.loads(out.read_text())
    assert data["totals"]["synops"] + data["totals"]["macs"] > 0
    # every residual sum is priced: identity shortcuts into neurons (Spiking ResNet) or SEW
    # ADD junctions into the next synapse; the ANN of the same architecture adds densely
    assert data["totals"]["dense_shortcut_adds"] > 0
    assert data["totals"]["shortcut_adds"] > 0  # spikes did cross the shortcuts
    assert (data["convention"], data["hardware"]) == ("lemaire", "cmos45_int8")
    assert data["snn"]["memory_J"] > 0 and data["ann"]["memory_J"] > 0
    for entry in data["energy"].values():
        assert entry["snn"]["total_J"] > 0 and entry["ann"]["total_J"] > 0
    assert data["energy"]["loihi2"]["measured"] is False
    if kind == "ADD" and data["totals"]["macs"] > 0:  # spikes met at a junction: graded
        assert "loihi1" in data["refused"]
    assert (tmp_path / "report" / "energy_layers.png").stat().st_size > 5000


def test_energy_of_a_loihi_timed_export_counts_the_padded_steps(tmp_path):
    """With --timing loihi the graph runs T + latency steps (zero input after T): those steps
    are simulated and counted, not priced a second time as input-free updates."""
    import nir

    from spikeline.deploy.energy import count_in_batches

    torch.manual_seed(0)
    model = build_model("resnet18", input_size=(16, 16), width=8, depths=[1, 1, 1, 1],
                        timing="loihi")
    spec = {"name": "resnet18", "input_size": [16, 16], "width": 8, "depths": [1, 1, 1, 1],
            "timing": "loihi"}
    export_model(model, spec, tmp_path / "export", config={"T": 4})
    graph = nir.read(tmp_path / "export" / "model.nir")
    pad = int(graph.metadata["input_pad_steps"])
    assert pad > 0
    x = (np.random.default_rng(0).random((4, 2, 2, 16, 16)) < 0.3).astype(np.float32)
    counts = count_in_batches(graph, x, latency_steps=pad)
    by_hand = count_in_batches(graph.__class__(nodes=graph.nodes, edges=graph.edges,
                                               metadata={**graph.metadata,
                                                         "input_pad_steps": 0}),
                               np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)]))
    assert counts.totals() == by_hand.totals()
