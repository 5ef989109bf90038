"""Data-parallel training helpers: the process group, the device of a rank, buffer sync.

Launch with ``torchrun --nproc_per_node K -m spikeline train ...``: torchrun sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; each process trains on its ``DistributedSampler`` shard, DDP
averages gradients (NCCL on CUDA, gloo on CPU), BatchNorm buffers are broadcast from rank 0
after each epoch, and rank 0 writes the run directory.  ``ranks_identical`` checks at the end
that every rank holds rank 0's exact weights.
"""
from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from spikeline.errors import BadInput, SpikelineError

__all__ = [
    "Ranks",
    "all_reduce_sum",
    "any_rank",
    "broadcast_buffers",
    "ranks_identical",
    "resolve_device",
    "session",
]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    world: int
    rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` (the local rank's GPU) or ``auto`` (CUDA when torch sees one)."""
    if name not in ("cpu", "cuda", "auto"):
        raise BadInput(f"--device: expected cpu, cuda or auto, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SpikelineError("--device cuda was asked for but torch sees no CUDA device "
                                 "(this torch build: " + torch.__version__ + ")")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


@contextmanager
def session(device_name: str):
    """The job's ``Ranks``; joins (and afterwards leaves) the process group when torchrun
    started several processes and nobody joined it yet."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_name, local_rank)
    own_group = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        own_group = True
    try:
        yield Ranks(world, rank, device)
    finally:
        if own_group and dist.is_initialized():
            gc.collect()  # DDP reducers left unreferenced let go of the group before it goes
            dist.destroy_process_group()


def wrap(module: nn.Module, ranks: Ranks) -> nn.Module:
    """``module`` under DistributedDataParallel when there are several ranks."""
    if ranks.world == 1:
        return module
    return DistributedDataParallel(
        module, device_ids=[ranks.device.index] if ranks.device.type == "cuda" else None,
        find_unused_parameters=False)


def broadcast_buffers(module: nn.Module, ranks: Ranks) -> None:
    """Every rank takes rank 0's buffers (BatchNorm statistics)."""
    if ranks.world > 1:
        for buf in module.buffers():
            dist.broadcast(buf.data, 0)


def all_reduce_sum(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The sum of ``tensor`` over ranks (a CPU tensor in, a CPU tensor out)."""
    if ranks.world == 1:
        return tensor
    moved = tensor.to(ranks.device)
    dist.all_reduce(moved)
    return moved.cpu()


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """True when ``flag`` holds on any rank."""
    return bool(all_reduce_sum(torch.tensor([1.0 if flag else 0.0]), ranks).item())


def ranks_identical(module: nn.Module, ranks: Ranks) -> bool | None:
    """Every rank compares its state to rank 0's, bit for bit (None with one rank)."""
    if ranks.world == 1:
        return None
    mismatch = torch.zeros(1, device=ranks.device)
    for tensor in module.state_dict().values():
        ref = tensor.detach().clone()
        dist.broadcast(ref, 0)
        if not torch.equal(ref, tensor):
            mismatch += 1
    dist.all_reduce(mismatch)
    return bool(mismatch.item() == 0)


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()
