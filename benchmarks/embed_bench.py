"""Face-embedding cost on this machine: dlib's ResNet as ported to torch (dfer_cli.faces.embedding), faces
per second at batch 1 and 64 on the CPU, and the alignment (face mesh points -> dlib's 150x150 chip) per
face. dlib's own network per face too, where dlib-bin is installed.

    python benchmarks/embed_bench.py [--threads N] [--repeats 3]

Figures are for this machine only, the best of --repeats runs: on a shared machine the other runs measure
the neighbours.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("DFER_SHARED", ROOT.parent / "shared")) / "media"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from timing import best_of  # noqa: E402

from dfer_cli.faces import align  # noqa: E402
from dfer_cli.faces.detect import FaceDetector  # noqa: E402
from dfer_cli.faces.embedding import FaceEmbedder  # noqa: E402
from dfer_cli.faces.landmarks import FaceLandmarker  # noqa: E402

CLIP = MEDIA / "grid" / "lbax4n.mpg"


def chips_of(path: Path, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` frames, their face-mesh points (dfer's detector and mesh) and dlib chips."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24")
                           for _, f in zip(range(count), container.decode(video=0), strict=False)])
    boxes = [found[0] for found in FaceDetector().detect_batch(frames)]
    points = FaceLandmarker().landmarks(frames, [(b.x0, b.y0, b.x1, b.y1) for b in boxes])
    return frames, points, np.stack([align.face_chip(f, p) for f, p in zip(frames, points, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    frames, points, chips = chips_of(CLIP, 64)
    print(f"{CLIP.name}: {len(chips)} faces; torch {torch.__version__}, {torch.get_num_threads()} threads")
    seconds = best_of(args.repeats, lambda: [align.face_chip(f, p) for f, p in zip(frames, points, strict=True)])
    print(f"alignment (mesh points -> 150x150 chip): {seconds / len(frames) * 1e3:.2f} ms/face")
    for batch in (1, 64):
        embedder = FaceEmbedder(batch_size=batch)
        count = 16 if batch == 1 else 64
        embedder.embed(chips[:count])  # the weights, and oneDNN's kernels
        seconds = best_of(args.repeats, lambda: embedder.embed(chips[:count]))  # noqa: B023
        print(f"torch port, batch {batch:2}: {count / seconds:7.1f} faces/s ({seconds / count * 1e3:.2f} ms/face)")
    import dlib_oracle

    if not dlib_oracle.available():
        print("dlib: not installed (dlib-bin and face_recognition_models, the test extra)")
        return
    dlib_oracle.descriptors(chips[:1])
    seconds = best_of(args.repeats, lambda: dlib_oracle.descriptors(chips[:16]))
    print(f"dlib's compute_face_descriptor, one chip a call: {16 / seconds:7.1f} faces/s")


if __name__ == "__main__":
    main()
