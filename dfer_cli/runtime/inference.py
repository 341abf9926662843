"""The one batched-inference loop (predict and evaluate): uint8 videos to the device, softmax back."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch

from dfer_cli.errors import DferError
from dfer_cli.runtime.device import autocast
from dfer_cli.runtime.probe import check_model_time
from dfer_cli.runtime.quantize import int8_copy


def softmax_batches(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    device: torch.device, precision: str = "fp32") -> np.ndarray:
    """Class probabilities (N, C) for batches of (video (B, T, 3, S, S) uint8 or float, audio
    (B, 1, frames, mels)), in order; the model is left in eval mode.

    With precision "int8" (CPU) the Linear layers of a quantized copy do the work. Videos travel as
    uint8 where they can (4x fewer bytes than floats) and the model scales them on its device; on CUDA
    the host tensors are pinned so that the copy overlaps the previous batch.
    """
    model.eval()
    dims = getattr(model, "dims", None)
    if precision == "int8":  # the int8 copy, made once per model (runtime/quantize.py)
        model = int8_copy(model)
    cuda = device.type == "cuda"
    out, wall, cpu = [], 0.0, 0.0
    with torch.inference_mode():
        for video, audio in batches:
            if cuda:
                video, audio = video.pin_memory(), audio.pin_memory()
            video, audio = video.to(device, non_blocking=True), audio.to(device, non_blocking=True)
            started = time.perf_counter(), time.process_time()
            with autocast(device, precision):
                out.append(model(video, audio).float().softmax(-1))
            wall, cpu = wall + time.perf_counter() - started[0], cpu + time.process_time() - started[1]
    if not out:
        raise DferError("no clips to classify")
    if dims is not None and not cuda:  # a pick of --precision auto that this run contradicts is measured again
        check_model_time(dims, precision, sum(len(p) for p in out), wall, cpu)
    return torch.cat(out).cpu().numpy()
