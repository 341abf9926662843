"""torchrun's processes: the only reader of RANK, WORLD_SIZE and LOCAL_RANK. Several processes share
the work (`process_group`, `gather`): nccl on CUDA, gloo on CPU, each process on its local rank's GPU."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dfer_cli.runtime.device import pick_device


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_size() -> int:
    """How many processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def ranks() -> Ranks:
    """This process's rank among torchrun's, read from its environment (no process group needed)."""
    return Ranks(int(os.environ.get("RANK", "0")), world_size())


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, a CUDA device becomes the GPU of this process's local rank; else unchanged."""
    if world_size() > 1 and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextlib.contextmanager
def process_group(device_spec: str) -> Iterator[tuple[Ranks, torch.device]]:
    """This process's rank and device, from torchrun's environment; joins the process group for the
    block when launched by torchrun (and not already in one), and leaves it cleanly after."""
    here = ranks()
    device = local_device(pick_device(device_spec))
    if here.world == 1:
        yield here, device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield here, device
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
