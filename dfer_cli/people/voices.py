"""Each person's voice: the clip's audio input holding only the speech attributed to them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dfer_cli.media.fbank import FRAME_MS, SHIFT_MS, model_input
from dfer_cli.people.speakers import Turn


def voice_kind(person: int, people: int, turns: Sequence[Turn], mode: str) -> str:
    """"all": the whole soundtrack (one person in the clip, or `mode` "all"); "own": their attributed
    speech; "none": the no-audio input, when nothing is attributed to them."""
    if mode == "all" or people == 1:
        return "all"
    return "own" if any(t.person == person for t in turns) else "none"


def person_audio(features: np.ndarray, audio_start: float, turns: Sequence[Turn], person: int, kind: str) -> np.ndarray:
    """The audio input (frames, mels) this person hears: as is for "all", the no-audio input for "none",
    and for "own" the clip's with the frames of every other turn (another speaker's, or nobody visible's)
    replaced by the no-audio input's, which is what a file without a sound track gives the model."""
    if kind == "all":
        return features
    silence = model_input(None, 0)
    if kind == "none":
        return silence
    centres = audio_start + (np.arange(len(features)) * SHIFT_MS + FRAME_MS / 2) / 1000
    others = np.zeros(len(features), bool)
    for turn in turns:
        if turn.person != person:
            others |= (centres >= turn.start) & (centres < turn.end)
    out = features.copy()
    out[others] = silence[others]
    return out
