"""DDP training: 2 CPU processes on the gloo backend end with identical weights."""
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spikeline.pipeline.checkpoint import load_checkpoint


pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                 reason="torch.distributed with gloo is needed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    from spikeline.cli.train import load_data, loader_factory, resolve_config
    from spikeline.pipeline.train import Runtime, TrainConfig, train

    config = resolve_config(TrainConfig(dataset="ndigits", model="cnn", heads="shortcut", T=8,
                                        epochs=1, batch_size=8, limit_train=32, limit_test=16))
    result = train(config, Runtime(out=out, device="cpu", progress=False), load_data(config),
                   loader_factory())
    torch.save({"state": result.heads.state_dict(), "history": result.history,
                "identical": result.ddp_ranks_identical}, os.path.join(out, f"rank{rank}.pt"))


def test_ddp_two_gloo_processes_end_identical(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["identical"] is True and r1["identical"] is True
    for h in r0["history"] + r1["history"]:
        h.pop("seconds")  # wall time is each rank's own
    assert r0["history"] == r1["history"]  # metrics are all-reduced: every rank agrees
    # each rank stepped on its half: 32 samples / 2 ranks / batch 8 = 2 steps
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["iteration"] == ckpt["total_iterations"] == 2 and ckpt["world_size"] == 2
    init = _fresh_state(ckpt["model_spec"])
    moved = [k for k in init if not torch.equal(init[k], ckpt["model"][k])]
    assert moved  # training changed the weights
    assert any(k.endswith("weight") for k in moved)
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], ckpt["model"][k])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ddp_ranks_identical"] is True


def _fresh_state(spec: dict):
    """The initial weights of the run (init is a function of the seed)."""
    from spikeline.pipeline.train import TrainConfig, build_heads, seed_everything

    seed_everything(0)
    return build_heads(TrainConfig(model="cnn", heads="shortcut"), spec).state_dict()
