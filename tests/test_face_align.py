"""dlib's aligned face chip made from face-mesh points, against dlib's own get_face_chip; and the frontal
judgement on a mesh turned away from the camera."""

from __future__ import annotations

import math

import dlib_oracle
import numpy as np
import pytest
from test_face_embedding import grid_frames

from dfer_cli.errors import DferError
from dfer_cli.faces import align
from dfer_cli.faces.detect import FaceDetector
from dfer_cli.faces.landmarks import FaceLandmarker

needs_dlib = pytest.mark.skipif(not dlib_oracle.available(), reason="dlib-bin and face_recognition_models "
                                "(the test extra) are not installed")


@pytest.fixture(scope="module")
def mesh() -> tuple[np.ndarray, np.ndarray]:
    """A GRID frame and its 468 face-mesh points (frame pixels, x y z) from dfer's detector and mesh."""
    frame = grid_frames("lbax4n", 1)[0]
    box = FaceDetector().detect(frame)[0]
    return frame, FaceLandmarker().landmarks(frame[None], [(box.x0, box.y0, box.x1, box.y1)])[0]


def _as_mesh(shape) -> np.ndarray:
    """dlib's 68 points written where the mesh points align.py maps onto them lie; zeros elsewhere."""
    points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    mesh = np.zeros((468, 3))
    mesh[list(align.MESH_POINTS[68]), :2] = points[list(align._DLIB_68)]
    return mesh


@needs_dlib
@pytest.mark.parametrize("name", ["lbax4n", "swiz3n", "pwij3p"])
def test_chip_is_dlibs_pixel_for_pixel(name):
    import dlib

    frame = np.ascontiguousarray(grid_frames(name, 1)[0])
    shape = dlib_oracle.landmarks(frame)
    details = dlib.get_face_chip_details(shape, align.SIZE, align.PADDING)
    chip = align.chip_location(_as_mesh(shape))
    rect = details.rect
    assert chip.cx == pytest.approx((rect.left() + rect.right()) / 2, abs=1e-9)
    assert chip.cy == pytest.approx((rect.top() + rect.bottom()) / 2, abs=1e-9)
    assert chip.side == pytest.approx(rect.width(), abs=1e-9)
    assert chip.angle == pytest.approx(details.angle, abs=1e-12)
    np.testing.assert_array_equal(align.extract_chip(frame, chip), dlib_oracle.face_chip(frame, shape))


@needs_dlib
def test_large_faces_are_shrunk_smoothly():
    """A face 3x larger than the chip: dlib samples an image pyramid, align.py a frame averaged in 3x3 blocks."""
    frame = grid_frames("lbax4n", 1)[0]
    shape = dlib_oracle.landmarks(frame)
    big = np.ascontiguousarray(np.repeat(np.repeat(frame, 3, 0), 3, 1))
    mesh = _as_mesh(shape)
    mesh[:, :2] = mesh[:, :2] * 3 + 1  # a pixel's centre lands on the centre of its 3x3 copy
    import dlib

    scaled = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1),
                                        [dlib.point(p.x * 3 + 1, p.y * 3 + 1) for p in shape.parts()])
    ours, theirs = align.face_chip(big, mesh).astype(int), dlib_oracle.face_chip(big, scaled).astype(int)
    # Measured: 1.04 grey levels apart on average; the plain bilinear chip of the small frame is 0 apart.
    print(f"3x face: {np.abs(ours - theirs).mean():.2f} grey levels from dlib's chip")
    assert np.abs(ours - theirs).mean() < 2.5


def test_mesh_chip_puts_the_eyes_where_dlibs_template_has_them(mesh):
    frame, points = mesh
    chip = align.chip_location(points)
    assert abs(chip.angle) < 0.2 and 100 < chip.side < 250
    out = align.face_chip(frame, points)
    assert out.shape == (150, 150, 3) and out.dtype == np.uint8
    # The outer eye corners, mapped into the chip, land near the template's (padding 0.25).
    cos, sin, step = math.cos(chip.angle), math.sin(chip.angle), (chip.side - 1) / 149
    for mesh_index, template in ((33, (0.121737, 0.216423)), (263, (0.858516, 0.216423))):
        dx, dy = points[mesh_index, 0] - chip.cx, points[mesh_index, 1] - chip.cy
        u, v = (cos * dx + sin * dy) / step + 74.5, (-sin * dx + cos * dy) / step + 74.5
        expected = (np.array(template) + 0.25) / 1.5 * 150
        assert np.hypot(u - expected[0], v - expected[1]) < 6


def test_five_point_template_gives_a_similar_chip(mesh):
    frame, points = mesh
    a, b = align.chip_location(points, 68), align.chip_location(points, 5)
    assert abs(a.angle - b.angle) < 0.05 and abs(a.side / b.side - 1) < 0.1
    assert math.hypot(a.cx - b.cx, a.cy - b.cy) < 0.05 * a.side


def _turned(points: np.ndarray, degrees: float) -> np.ndarray:
    """The mesh turned about the vertical axis through its centre, seen straight on (x from x and z)."""
    a = math.radians(degrees)
    centred = points - points.mean(0)
    out = centred.copy()
    out[:, 0] = centred[:, 0] * math.cos(a) + centred[:, 2] * math.sin(a)
    return out


def test_frontal_judgement_follows_the_yaw(mesh):
    _, points = mesh
    base = align.nose_offset(points)
    assert align.is_frontal(points)
    shifts = {d: abs(align.nose_offset(_turned(points, d)) - base) for d in (10, 20, 30)}
    # Measured on this face: 0.088, 0.181, 0.287.
    assert 0.06 < shifts[10] < 0.12 and 0.15 < shifts[20] < 0.22 and 0.24 < shifts[30] < 0.34
    assert align.is_frontal(_turned(points, 10)) and align.is_frontal(_turned(points, -10))
    assert not align.is_frontal(_turned(points, 30)) and not align.is_frontal(_turned(points, -30))


def test_bad_input_is_refused(mesh):
    frame, points = mesh
    with pytest.raises(DferError, match="468"):
        align.chip_location(points[:68])
    with pytest.raises(DferError, match="68 or 5"):
        align.chip_location(points, template=6)
    with pytest.raises(DferError, match="uint8"):
        align.face_chip(frame.astype(np.float32), points)
    assert not align.is_frontal(np.zeros((468, 3)))  # a degenerate mesh (eye corners on one point)


def test_chip_leaving_the_frame_is_black_there(mesh):
    frame, points = mesh
    shifted = points.copy()
    shifted[:, 0] -= points[:, 0].min() + 40  # the face half out of the frame's left edge
    chip = align.face_chip(frame, shifted)
    assert (chip[:, :20] == 0).all() and chip[:, 100:].any()
