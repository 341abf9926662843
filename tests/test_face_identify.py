"""A face's identity over a stretch of frames (dfer_cli.faces.identify): frames spread, frontal chips,
the mean embedding, on the GRID clips (id2_vcd_swwp2s and pwij3p are one speaker)."""

from __future__ import annotations

from functools import cache

import av
import numpy as np
import pytest
from conftest import MEDIA

from dfer_cli.faces import identify
from dfer_cli.faces.detect import FaceDetector
from dfer_cli.faces.embedding import FaceEmbedder
from dfer_cli.faces.landmarks import FaceLandmarker
from dfer_cli.people.identity import SAME_PERSON

GRID = MEDIA / "grid"


@cache
def networks() -> tuple[FaceDetector, FaceLandmarker, FaceEmbedder]:
    return FaceDetector(), FaceLandmarker(), FaceEmbedder()


def frames_of(name: str) -> np.ndarray:
    path = GRID / f"{name}.mpg"
    if not path.is_file():
        pytest.skip(f"no {path} (set DFER_SHARED)")
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def stretch_embedding(frames: np.ndarray) -> np.ndarray | None:
    detector, landmarker, embedder = networks()
    picked = frames[identify.spread(len(frames))]
    boxes = [(b.x0, b.y0, b.x1, b.y1) for b in (found[0] for found in detector.detect_batch(picked))]
    return identify.mean_embedding(identify.face_chips(picked, boxes, landmarker), embedder)


def test_spread_takes_the_middles_of_equal_parts():
    assert identify.spread(3).tolist() == [0, 1, 2]
    assert identify.spread(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert identify.spread(75, 5).tolist() == [7, 22, 37, 52, 67]
    assert identify.spread(0).tolist() == []


def test_a_speakers_two_clips_are_one_person_and_other_speakers_are_not():
    same = [stretch_embedding(frames_of(n)) for n in ("id2_vcd_swwp2s", "pwij3p")]
    others = [stretch_embedding(frames_of(n)) for n in ("bbaf2n", "lbbc2a", "sbwe5n")]
    assert all(e is not None and e.shape == (128,) for e in same + others)
    assert np.linalg.norm(same[0] - same[1]) < SAME_PERSON
    for a in same[:1] + others:
        for b in others:
            if a is not b:
                assert np.linalg.norm(a - b) > SAME_PERSON


def test_the_two_halves_of_one_clip_are_one_person():
    frames = frames_of("lwbsza")
    first, second = stretch_embedding(frames[:37]), stretch_embedding(frames[37:])
    assert np.linalg.norm(first - second) < SAME_PERSON / 2


def test_a_box_without_a_face_gives_no_chip_and_no_embedding():
    _, landmarker, embedder = networks()
    blank = np.full((1, 288, 360, 3), 128, np.uint8)
    chips = identify.face_chips(blank, [(100, 80, 200, 180)], landmarker)
    assert chips.shape == (0, 150, 150, 3)
    assert identify.mean_embedding(chips, embedder) is None
    assert identify.face_chips(blank, [], landmarker).shape == (0, 150, 150, 3)


def test_a_turned_face_is_not_embedded():
    """Mesh points whose nose lies far off the eyes' midpoint (a face in profile) give no chip."""
    frames = frames_of("bbaf2n")[30:31]
    detector, landmarker, _ = networks()
    (box,) = detector.detect_batch(frames)[0][:1]
    points, presence = landmarker.landmarks_and_presence(frames, [(box.x0, box.y0, box.x1, box.y1)])
    assert len(identify.frontal_chips(frames, points, presence=presence)) == 1
    turned = points.copy()
    eyes = turned[0, [33, 263], :2]
    turned[0, 1, :2] = eyes.mean(0) + 0.3 * (eyes[1] - eyes[0])  # past MAX_NOSE_OFFSET
    assert len(identify.frontal_chips(frames, turned, presence=presence)) == 0
