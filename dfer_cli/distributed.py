"""Several processes under torchrun: which one this is, its device, and the few collectives dfer needs.

nccl on CUDA, gloo on CPU. Each process uses the GPU of its local rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .runtime import pick_device


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def process_group(device_spec: str) -> Iterator[tuple[Ranks, torch.device]]:
    """This process's rank and device, from torchrun's environment; joins the process group for the
    block when launched by torchrun (and not already in one), and leaves it cleanly after."""
    world = world_size()
    device = pick_device(device_spec)
    if world == 1:
        yield Ranks(), device
        return
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Ranks(rank, world), device
        # The last collective holds no tensors: gloo's worker frees an all_gather_object's
        # Python-backed tensors a moment after wait() returns, and a rank that exited at once
        # reached interpreter shutdown first and aborted in that decref.
        dist.barrier()
    finally:
        if owns:
            dist.destroy_process_group()


def gather(obj: object, ranks: Ranks) -> list:
    """`obj` from every rank, in rank order, on every rank."""
    if ranks.world == 1:
        return [obj]
    gathered: list = [None] * ranks.world
    dist.all_gather_object(gathered, obj)
    return gathered
