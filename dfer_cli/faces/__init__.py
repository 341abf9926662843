"""Faces: found (blazeface, detect), followed across frames (track), cropped (crop), composed per clip (follow)."""
