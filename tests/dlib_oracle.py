"""dlib itself (the dlib-bin wheel, with the face_recognition_models data): its face detector, 68-point
landmarks, face chips and face-recognition network, the oracle that dfer's face alignment and embeddings
are checked against. Import it only where both are installed; `available()` says so."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np


def _models() -> Path | None:
    # The package's own __init__ needs pkg_resources (setuptools); its data files are found without it.
    spec = importlib.util.find_spec("face_recognition_models")
    return None if spec is None or spec.origin is None else Path(spec.origin).parent / "models"


def available() -> bool:
    return importlib.util.find_spec("dlib") is not None and _models() is not None


@cache
def _nets():
    import dlib

    models = _models()
    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")))


def landmarks(frame: np.ndarray):
    """dlib's 68 points (a full_object_detection) of the first face its HOG detector finds, or None."""
    detector, predictor, _ = _nets()
    frame = np.ascontiguousarray(frame)
    found = detector(frame, 1)
    return predictor(frame, found[0]) if found else None


def face_chip(frame: np.ndarray, shape) -> np.ndarray:
    """dlib's 150x150 chip (padding 0.25), as compute_face_descriptor cuts it."""
    import dlib

    return dlib.get_face_chip(np.ascontiguousarray(frame), shape, 150, 0.25)


def descriptors(chips: np.ndarray) -> np.ndarray:
    """dlib's 128-d descriptors of aligned 150x150 chips (N, 150, 150, 3) uint8."""
    _, _, net = _nets()
    return np.array([np.array(net.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips], np.float32)
