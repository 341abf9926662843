"""Persons across camera cuts: composites of the GRID clips (a cut from one speaker to another, a reaction
shot, A B A in a timeline, one speaker cut from the left of a wide frame to the right, a split screen)
through `Model.predict`, and the linking rule on its own. bbaf2n and lbax4n are two speakers."""

from pathlib import Path

import numpy as np
import pytest
from conftest import MEDIA, save_tiny_weights
from mediagen import ffmpeg

import dfer_cli as dfer
from dfer_cli.faces.box import Box
from dfer_cli.people.persons import SeenClip, link_persons

A, B = MEDIA / "grid" / "bbaf2n.mpg", MEDIA / "grid" / "lbax4n.mpg"
H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")


def _inputs(*paths: Path) -> list[str]:
    return [a for p in paths for a in ("-i", str(p))]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    weights = save_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny")
    return dfer.load_model(weights, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """The composites, built once for the module."""
    if not A.is_file():
        pytest.skip("no GRID media (set DFER_SHARED)")
    out = tmp_path_factory.mktemp("persons")
    made = {name: out / f"{name}.mp4" for name in ("cut", "reaction", "aba", "wide", "split")}
    ffmpeg(*_inputs(A, B), "-filter_complex", "[0:v][0:a][1:v][1:a]concat=n=2:v=1:a=1[v][a]",
           "-map", "[v]", "-map", "[a]", *H264, made["cut"])
    ffmpeg(*_inputs(A, B), "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v];[0:a][0:a]concat=n=2:v=0:a=1[a]",
           "-map", "[v]", "-map", "[a]", *H264, made["reaction"])
    ffmpeg(*_inputs(A, B, A), "-filter_complex", "[0:v][0:a][1:v][1:a][2:v][2:a]concat=n=3:v=1:a=1[v][a]",
           "-map", "[v]", "-map", "[a]", *H264, made["aba"])
    ffmpeg(*_inputs(A), "-filter_complex", "[0:v]split[a][b];[a]trim=end=1.5,setpts=PTS-STARTPTS,pad=iw*2:ih:0:0[l];"
           "[b]trim=start=1.5,setpts=PTS-STARTPTS,pad=iw*2:ih:iw:0[r];[l][r]concat=n=2:v=1:a=0[v]",
           "-map", "[v]", "-map", "0:a", *H264, made["wide"])
    ffmpeg(*_inputs(A), "-filter_complex", "[0:v]split[a][b];[a][b]hstack[v]", "-map", "[v]", "-map", "0:a",
           *H264, made["split"])
    return made


def predict(model, path: Path, **options) -> dict:
    (record,) = model.predict(path, workers=0, **options)
    assert record.status == "ok", record.error
    return record.to_dict()


def test_a_cut_from_one_speaker_to_another_is_two_persons_each_with_their_own_voice(model, media):
    record = predict(model, media["cut"])
    assert record["cuts"] and abs(record["cuts"][0] - 3.0) < 0.1
    assert [p["person"] for p in record["people"]] == [0, 1]
    assert [p["voice"] for p in record["people"]] == ["own", "own"]
    assert all(p["speech_seconds"] > 0.5 for p in record["people"])
    first, second = (p["appearances"] for p in record["people"])
    assert first[-1][1] <= 3.0 <= second[0][0]
    # In a timeline the window over the cut is kept inside one shot: its longer piece (the earlier on a tie).
    windows = predict(model, media["cut"], window=2.0)
    assert [(c["start"], c["end"]) for c in windows["clips"]] == [(0.0, 2.0), (2.0, 3.0), (4.0, 6.0)]
    assert [[q["person"] for q in c["people"]] for c in windows["clips"]] == [[0], [0], [1]]


def test_a_reaction_shot_gives_the_listener_nothing_and_the_speaker_the_voice(model, media):
    record = predict(model, media["reaction"])
    speaker, listener = record["people"]
    assert listener["speech_seconds"] == 0 and listener["voice"] == "none"
    assert record["speaker"] == speaker["person"] == 0
    assert record["unattributed_speech_seconds"] > 0.5  # A's voice over B's face is nobody visible's


def test_a_person_keeps_one_number_in_every_window(model, media):
    record = predict(model, media["aba"], window=3.0)
    assert len(record["people"]) == 2
    numbers = [[q["person"] for q in c["people"]] for c in record["clips"]]
    assert numbers == [[0], [1], [0]]
    assert record["people"][0]["appearances"] == [[0.0, 3.0], [6.0, 9.0]]


def test_one_speaker_cut_from_left_to_right_is_one_person(model, media):
    record = predict(model, media["wide"])
    assert len(record["people"]) == 1
    assert record["speaker"] == 0 and record["people"][0]["voice"] == "all"  # the only face: the whole soundtrack


def test_a_split_screen_of_one_face_is_two_persons(model, media):
    record = predict(model, media["split"])
    assert len(record["people"]) == 2


def test_persons_are_linked_by_face_across_shots_and_never_when_seen_together():
    me, other = np.zeros(128), np.full(128, 0.1)  # 1.13 apart: two people
    left, right = Box(0, 0, 10, 10), Box(50, 0, 60, 10)
    clips = [SeenClip(0, 2, [left, right], [(0, 2), (0, 2)], [me, me], [3, 3]),  # one face twice: a split screen
             SeenClip(3, 5, [right], [(3, 5)], [other], [3]),  # after a cut, where the second stood
             SeenClip(6, 8, [left], [(6, 8)], [me], [3])]
    assert link_persons(clips, cuts=[2.5, 5.5]) == [[0, 1], [2], [0]]
    # Without a cut between them, a track in one place is one stretch while its face stays, and another
    # face there (a cut the detector missed) starts a new one; a clip not embedded continues its stretch.
    later = [SeenClip(5.2, 6, [right], [(5.2, 6)], [None], [0]), SeenClip(6.2, 7, [right], [(6.2, 7)], [me], [1])]
    assert link_persons(clips[1:2] + later, cuts=[]) == [[0], [0], [1]]


def test_a_slideshow_and_strobe_light_keep_going_and_strobe_is_no_cut(model, tmp_path):
    import cutmedia

    clips = [cutmedia.decode(p, limit=60) for p in cutmedia.sources(MEDIA)[:4]]
    rng = np.random.default_rng(0)
    slides = cutmedia.slideshow(clips, tmp_path / "slides.mp4", rng, hold=5).path
    strobe = cutmedia.strobe(clips[0], tmp_path / "strobe.mp4", rng).path
    for window in (None, 1.0):
        shown = predict(model, slides, window=window)
        assert shown["cuts"] and all(c["end"] > c["start"] for c in shown["clips"])
        lit = predict(model, strobe, window=window)
        assert lit["cuts"] == [] and len(lit["people"]) == 1
