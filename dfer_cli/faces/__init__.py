"""Faces: found (blazeface, letterbox, anchors, detect), followed across frames (track), cropped (crop),
composed per clip (follow), and their landmarks (face_mesh, landmarks); mediapipe_ops holds what the two
MediaPipe ports share."""
