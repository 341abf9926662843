"""The classifier: softmax probabilities for batches of clips gathered across files."""

from __future__ import annotations

import time

import numpy as np
import torch

from dfer_cli.predict.frontend import PreparedFile
from dfer_cli.runtime.inference import softmax_batches


class Classifier:
    """Softmax probabilities for batches of clips, on the chosen device."""

    def __init__(self, model: torch.nn.Module, device: torch.device, batch_size: int,
                 precision: str = "fp32") -> None:
        self.model, self.device, self.batch_size = model.to(device).eval(), device, batch_size
        self.precision = precision

    def __call__(self, videos: np.ndarray, audios: np.ndarray) -> np.ndarray:
        """videos (K, T, S, S, 3) uint8, audios (K, frames, mels) float32 -> (K, C)."""
        batches = ((torch.from_numpy(videos[i:i + self.batch_size]).permute(0, 1, 4, 2, 3),
                    torch.from_numpy(audios[i:i + self.batch_size]).unsqueeze(1))
                   for i in range(0, len(videos), self.batch_size))
        return softmax_batches(self.model, batches, self.device, self.precision)


def classify(batch: list[PreparedFile], classifier: Classifier, class_names: list[str]) -> None:
    if not batch:
        return
    start = time.perf_counter()
    probs = classifier(np.concatenate([p.videos for p in batch]), np.concatenate([p.audios for p in batch]))
    share = (time.perf_counter() - start) / len(probs)
    row = 0
    for p in batch:
        for owner in p.rows:
            named = {n: round(float(v), 6) for n, v in zip(class_names, probs[row], strict=True)}
            p.result.clips[owner.clip].classified(owner.person, named)
            row += 1
        p.result.timings["model"] = round(share * len(p.rows), 4)
        p.result.precision = classifier.precision
