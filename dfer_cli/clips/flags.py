"""The one vocabulary of flags that predict records and cache entries carry, and how a timeline's parts merge."""

# The flags, on every record and cache entry:
#     no_audio         the file has no audio track (the model gets its no-audio input)
#     audio_error      the audio track exists but could not be decoded (treated as no audio)
#     silent_audio     there is a track, and every clip's audio is too quiet to carry speech
#     no_face          no clip had a face in enough frames: nothing was classified
#     faces_found      frames where the face was detected (the rest were filled in), of `frames`
#     distinct_frames  different video frames among those sampled: below `frames` when a short or
#                      low-rate video repeats frames to fill its clips
#     still_image      a single distinct frame (a photo read as a 1-frame video): no motion to read
#     faces_seen       distinct faces (tracks) in the clip that had the most: people are followed
#                      within a clip, not across clips seconds apart
#     people_seen      with people: faces present in enough of a clip's frames to be people, in the clip
#                      that had the most, before --max-people keeps the most present and largest
#     audio_channel    predict only: the channel the model heard (media/channels.py: "mono", "FL",
#                      "FR", "FC"), the clips' distinct choices joined by ", "; the benchmarks hear
#                      channel 0 and carry no such flag

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from dfer_cli.clips.load import ClipInputs
from dfer_cli.media import decode


def file_flags(info: decode.VideoInfo, clips: Sequence[ClipInputs], audio_errors: Sequence[str] = (),
               people: bool = False) -> dict:
    """The flags of a file's record (or a cache entry) in the one vocabulary above; `people_seen` where
    the clips were read for every person."""
    found = sum(c.track.found for c in clips)
    total = sum(c.track.total for c in clips)
    distinct = len(np.unique(np.concatenate([c.frame_times for c in clips]))) if clips else 0
    flags = {"no_audio": not info.has_audio or bool(audio_errors),
             "silent_audio": bool(clips) and all(c.silent for c in clips),
             "no_face": not any(c.track.crops is not None for c in clips), "faces_found": found,
             "frames": total, "distinct_frames": distinct, "still_image": distinct == 1,
             "faces_seen": max((c.track.faces_seen for c in clips), default=0)}
    if people:
        flags["people_seen"] = max((len(c.track.people) for c in clips), default=0)
    heard = _joined(c.channel for c in clips)
    if heard:
        flags["audio_channel"] = heard
    if audio_errors:
        flags["audio_error"] = audio_errors[0]
    return flags


def merge_flags(parts: Sequence[dict], seen_times: Sequence[np.ndarray]) -> dict:
    """The flags of a file analysed in parts (a long timeline), from each part's flags and the
    times of the frames each part decoded (a frame two parts share counts once)."""
    distinct = len(np.unique(np.concatenate(seen_times))) if seen_times else 0
    flags = {"no_audio": any(f["no_audio"] for f in parts), "silent_audio": all(f["silent_audio"] for f in parts),
             "no_face": all(f["no_face"] for f in parts), "faces_found": sum(f["faces_found"] for f in parts),
             "frames": sum(f["frames"] for f in parts), "distinct_frames": distinct, "still_image": distinct == 1,
             "faces_seen": max((f["faces_seen"] for f in parts), default=0)}
    if any("people_seen" in f for f in parts):
        flags["people_seen"] = max(f.get("people_seen", 0) for f in parts)
    heard = _joined(c for f in parts for c in f.get("audio_channel", "").split(", "))
    if heard:
        flags["audio_channel"] = heard
    errors = [f["audio_error"] for f in parts if "audio_error" in f]
    if errors:
        flags["audio_error"] = errors[0]
    return flags


def _joined(channels: Iterable[str | None]) -> str:
    """The distinct channel choices, in first-seen order, as one value ("" for none)."""
    return ", ".join(dict.fromkeys(c for c in channels if c))
