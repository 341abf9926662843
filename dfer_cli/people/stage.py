"""The people stage, around the model: before it, who is in each clip, who speaks, and which of them are
analysed with which voice (the model's rows); after it, the file's persons, its speaker and its label."""

from __future__ import annotations

from collections.abc import Sequence

from dfer_cli.clips.load import ClipInputs
from dfer_cli.media import decode
from dfer_cli.people.config import PeopleConfig
from dfer_cli.people.inputs import ClipPeople, person_rows
from dfer_cli.people.persons import finish_people
from dfer_cli.people.speakers import Turn, clip_turns
from dfer_cli.results.records import FileResult


def every_face(config: PeopleConfig) -> bool:
    """Whether the clips are read for every face (and every channel of their audio), not the main one alone."""
    return config.mode == "all"


def before_model(path: str, info: decode.VideoInfo, clips: Sequence[ClipInputs],
                 config: PeopleConfig, device: str = "cpu") -> list[ClipPeople]:
    """Each clip's model rows, and with every person who is there and who speaks. Who speaks
    is decided among everyone seen; then at most `max_people` are analysed, those who speak first.
    The lips are read on the video's own frames over each speech segment, read again from the file
    (speakers.py): which frames are needed is known only once the speech is heard, and holding every
    frame of a pass at full size would cost a 64-s timeline part 1 GB at 720x288. The lips' landmark
    model runs on `device`."""
    if not every_face(config):
        return [ClipPeople([(None, c.track.crops, c.fbank)] if c.track.crops is not None else []) for c in clips]
    turns = clip_turns(path, info, clips, config, device)
    return [person_rows(c, said, config.voice, _analysed(len(c.track.people), said, config.max_people))
            if c.track.crops is not None else ClipPeople([]) for c, said in zip(clips, turns, strict=True)]


def _analysed(people: int, turns: Sequence[Turn], max_people: int) -> list[int]:
    """Which of a clip's people (indices, most present and largest first) are analysed: those who speak
    in it first, then the most present, `max_people` at most, in their order."""
    speaks = {t.person for t in turns}
    ranked = sorted(range(people), key=lambda k: (k not in speaks, k))
    return sorted(ranked[:max_people])


def after_model(result: FileResult, class_names: list[str]) -> None:
    """A classified file's label: its clips' mean, or with people its persons and speaker first, the label
    its speaker's (or its main face's when nobody visible speaks)."""
    if any(c.people for c in result.clips):
        finish_people(result, class_names)
    else:
        result.finish(class_names)
