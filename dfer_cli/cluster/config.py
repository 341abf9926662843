"""RayConfig: where a `dfer predict --ray` job runs and how its stages are sized."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dfer_cli.errors import UsageError


@dataclass(frozen=True)
class RayConfig:
    # local: start Ray here, stop it at the end; auto: the running cluster; ray://host:port (Ray Client),
    # or host:port (a head node's address, as `ray start --head` prints it)
    address: str = "local"
    actors: int | None = None  # model actors; None: one per GPU, or one on a cluster without GPUs
    cpus_per_task: float = 1.0  # CPUs each decoding task (decode, faces, fbank) reserves
    files_per_call: int | None = None  # files per model call; None: enough for a batch of `batch_size` clips
    flush_files: int = 8  # finished files written to the output at least this often...
    flush_seconds: float = 30.0  # ...and at least every this many seconds

    def __post_init__(self) -> None:
        if not re.fullmatch(r"local|auto|ray://\S+|[\w.-]+:\d+", self.address):
            raise UsageError(f"--ray {self.address!r}: expected local, auto, ray://host:port or a head's host:port")
        if self.actors is not None and self.actors < 1:
            raise UsageError("--ray-actors: at least 1")
        if self.cpus_per_task <= 0:
            raise UsageError("--ray-cpus-per-task: more than 0")
        if self.flush_files < 1 or self.flush_seconds <= 0:
            raise UsageError("the output is flushed every 1 file or more and every second or more")
