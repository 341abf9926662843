"""The people stage, around the model: before it, who is in each clip, who speaks, and which of them are
analysed with which voice (the model's rows); after it, the file's persons, its speaker and its label."""

from __future__ import annotations

from collections.abc import Sequence

from dfer_cli.clips.load import ClipInputs
from dfer_cli.media import decode
from dfer_cli.people.config import PeopleConfig
from dfer_cli.people.inputs import ClipPeople, person_rows
from dfer_cli.people.persons import SeenClip, finish_people, link_persons
from dfer_cli.people.speakers import Turn, clip_turns
from dfer_cli.results.records import FileResult


def every_face(config: PeopleConfig) -> bool:
    """Whether the clips are read for every face (and every channel of their audio), not the main one alone."""
    return config.mode == "all"


def identified(config: PeopleConfig) -> int:
    """How many of a clip's faces (the most present and largest) are identified by their face: as many
    as may be analysed, so that a crowd costs no more than they do."""
    return config.max_people


def before_model(path: str, info: decode.VideoInfo, clips: Sequence[ClipInputs],
                 config: PeopleConfig, device: str = "cpu") -> list[ClipPeople]:
    """Each clip's model rows, and with every person who is there and who speaks. Who speaks
    is decided among everyone seen; then at most `max_people` persons are analysed (persons across the
    clips read, not a clip's tracks), those who speak first, then the most present.
    The lips are read on the video's own frames over each speech segment, read again from the file
    (speakers.py): which frames are needed is known only once the speech is heard, and holding every
    frame of a pass at full size would cost a 64-s timeline part 1 GB at 720x288. The lips' landmark
    model runs on `device`."""
    if not every_face(config):
        return [ClipPeople([(None, c.track.crops, c.fbank)] if c.track.crops is not None else []) for c in clips]
    persons = _persons(clips)
    # A clip's faces alone hear its whole soundtrack unchecked only where they are the one person of what
    # was read: where two persons appear, even apart (a listener on screen, the speaker in another shot),
    # the lips are read in every clip, however many faces it shows.
    one = len({p for mine in persons for p in mine}) == 1
    alone = [one and bool(mine) for mine in persons]
    turns = clip_turns(path, info, clips, config, device, alone)
    chosen = _analysed(clips, persons, turns, config.max_people)
    return [person_rows(c, said, config.voice, kept, lone) if c.track.crops is not None else ClipPeople([])
            for c, said, kept, lone in zip(clips, turns, chosen, alone, strict=True)]


def _persons(clips: Sequence[ClipInputs]) -> list[list[int]]:
    """The person of each face of each clip, over the clips read (persons.link_persons)."""
    cuts = [t for c in clips for t in c.cuts]
    seen = [SeenClip(c.plan.start, c.plan.end, [p.median for p in c.track.people],
                     [_shown(c, p.detected) for p in c.track.people],
                     [None if i is None else i.embedding for i in (c.identities or (None,) * len(c.track.people))],
                     [0 if i is None else i.chips for i in (c.identities or (None,) * len(c.track.people))])
            for c in clips]
    return link_persons(seen, cuts)


def _analysed(clips: Sequence[ClipInputs], persons: Sequence[Sequence[int]], turns: Sequence[Sequence[Turn]],
              max_people: int) -> list[list[int]]:
    """Which of each clip's people (indices, most present and largest first) are analysed: the faces of the
    `max_people` persons ranked first over the clips read (those who speak, then the most present), at
    most `max_people` of a clip, in their order."""
    speaks: set[int] = set()
    presence: dict[int, int] = {}
    for c, mine, said in zip(clips, persons, turns, strict=True):
        speaks |= {mine[t.person] for t in said if t.person is not None}
        for p, track in zip(mine, c.track.people, strict=True):
            presence[p] = presence.get(p, 0) + track.found
    top = set(sorted(presence, key=lambda p: (p not in speaks, -presence[p], p))[:max_people])
    chosen = []
    for mine, said in zip(persons, turns, strict=True):
        own = {t.person for t in said}
        ranked = sorted(range(len(mine)), key=lambda k: (mine[k] not in top, k not in own, k))
        chosen.append(sorted(k for k in ranked[:max_people] if mine[k] in top))
    return chosen


def _shown(clip: ClipInputs, detected: dict) -> tuple[float, float]:
    times = clip.frame_times[sorted(detected)]
    return float(times.min()), float(times.max())


def after_model(result: FileResult, class_names: list[str]) -> None:
    """A classified file's label: its clips' mean, or with people its persons and speaker first, the label
    its speaker's (or its main face's when nobody visible speaks)."""
    if any(c.people for c in result.clips):
        finish_people(result, class_names)
    else:
        result.finish(class_names)
