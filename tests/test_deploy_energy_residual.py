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
    assert data["totals"]["shortcut_adds"] >= 0
    assert (data["convention"], data["hardware"]) == ("lemaire", "cmos45_int8")
    assert data["snn"]["memory_J"] > 0 and data["ann"]["memory_J"] > 0
    for entry in data["energy"].values():
        assert entry["snn"]["total_J"] > 0 and entry["ann"]["total_J"] > 0
    assert data["energy"]["loihi2"]["measured"] is False
    if kind == "ADD" and data["totals"]["macs"] > 0:  # spikes met at a junction: graded
        assert "loihi1" in data["refused"]
    assert (tmp_path / "report" / "energy_layers.png").stat().st_size > 5000
