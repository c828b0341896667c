"""torchrun integration: one process per device, DistributedDataParallel, gloo on CPU and NCCL on CUDA.

A plain ``python`` run is a world of one; nothing here changes its behaviour.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..backends.devices import resolve_device as resolve_any_device
from ..errors import InputError


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The one device resolver (backends.devices), then a bare ``cuda`` (or ``auto`` on a GPU machine) becomes this
    process's own GPU, ``cuda:LOCAL_RANK``."""
    device = torch.device(resolve_any_device(name))
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_world(device_name: str = "auto") -> World:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if size > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise InputError("WORLD_SIZE > 1 but no MASTER_ADDR is set", fix="launch several processes with torchrun")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local_rank, device)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def mean_across(value: float, world: World) -> float:
    """The mean of one float over all ranks (every rank must call it)."""
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world.size


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
