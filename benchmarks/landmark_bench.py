"""Face-landmark cost on this machine: the torch port's faces per second at batch 1 and 64 (crop and
network, on the CPU), and mediapipe 0.10.14's FaceMesh per face on the same frames where it is installed.

    python benchmarks/landmark_bench.py [--threads N] [--repeats 3]

Torch runs with its default threads unless --threads says otherwise. FaceMesh is timed in video mode
(it tracks the face, so each frame costs the landmark model and little else) and in static-image mode
(face detection, then landmarks, on every frame). Figures are for this machine only, and the best of
--repeats runs: on a shared machine the other runs measure the neighbours.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
sys.path.insert(0, str(ROOT))

from timing import best_of  # noqa: E402

from dfer_cli.faces.landmarks import FaceLandmarker  # noqa: E402

CLIP = MEDIA / "grid" / "lbax4n.mpg"
BOX = (121.0, 110.0, 259.0, 248.0)  # the speaker's face, about as BlazeFace finds it on every frame
EYES = ((160.0, 160.0), (220.0, 161.0))


def frames_of(path: Path, count: int) -> np.ndarray:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(count), container.decode(video=0), strict=False)]
    return np.stack(frames)


def port(frames: np.ndarray, repeats: int) -> None:
    boxes, eyes = [BOX] * len(frames), np.array([EYES] * len(frames))
    for batch in (1, 64):
        landmarker = FaceLandmarker(batch_size=batch)
        count = 16 if batch == 1 else 64
        landmarker.landmarks(frames[:count], boxes[:count], eyes[:count])  # weights, and oneDNN's kernels
        seconds = best_of(repeats, lambda: landmarker.landmarks(frames[:count], boxes[:count], eyes[:count]))  # noqa: B023
        print(f"torch port, batch {batch:2}: {count / seconds:7.1f} faces/s ({seconds / count * 1e3:.2f} ms/face)")


def mediapipe(frames: np.ndarray, repeats: int) -> None:
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError:
        print("mediapipe FaceMesh: not installed (mediapipe 0.10.14 needs Python 3.12 or lower)")
        return
    for static, label in ((False, "video mode (tracking)"), (True, "static images (detection + landmarks)")):
        def run(static: bool = static) -> None:
            with face_mesh.FaceMesh(static_image_mode=static, refine_landmarks=False, max_num_faces=1) as mesh:
                for frame in frames:
                    with warnings.catch_warnings():  # mediapipe's protobuf deprecation notice, on every call
                        warnings.simplefilter("ignore")
                        assert mesh.process(frame).multi_face_landmarks

        seconds = best_of(repeats, run)
        print(f"mediapipe FaceMesh, {label}: {seconds / len(frames) * 1e3:.2f} ms/face")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = frames_of(CLIP, 64)
    print(f"{CLIP.name}: {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    port(frames, args.repeats)
    mediapipe(frames, args.repeats)


if __name__ == "__main__":
    main()
