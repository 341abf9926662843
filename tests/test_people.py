"""Every person, and whose voice it is: composites of the GRID clips (two or three faces side by side with
one voice, a voice from off screen, silence, a conversation, a crowd) through `Model.predict`."""

from pathlib import Path

import numpy as np
import pytest
from conftest import MEDIA, save_tiny_weights
from mediagen import ffmpeg

import dfer_cli as dfer
from dfer_cli.results.records import ClipResult

GRID = sorted((MEDIA / "grid").glob("*.mpg"))
SINGLE = MEDIA / "grid" / "bbaf2n.mpg"
H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")
LISTEN = (  # the first 10 frames (GRID's silent start) forwards and backwards: a face listening, not speaking
    "trim=end_frame=10,setpts=PTS-STARTPTS,split[{t}f][{t}b];[{t}b]reverse[{t}r];[{t}f][{t}r]concat=n=2,"
    "loop=loop=3:size=20,trim=end_frame=75,setpts=N/25/TB"
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    weights = save_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny")
    return dfer.load_model(weights, device="cpu", precision="fp32")


def _inputs(*paths: Path) -> list[str]:
    return [a for p in paths for a in ("-i", str(p))]


def side_by_side(out: Path, faces: list[Path], voice: Path, pan: str | None = None) -> Path:
    """The faces in a row, with `voice`'s sound (`pan`: an ffmpeg pan filter for its channels)."""
    n = len(faces)
    graph = "".join(f"[{i}:v]" for i in range(n)) + f"hstack=inputs={n}[v]"
    if pan:
        graph += f";[{n}:a]pan={pan}[a]"
    ffmpeg(*_inputs(*faces, voice), "-filter_complex", graph, "-map", "[v]", "-map", "[a]" if pan else f"{n}:a",
           *H264, "-shortest", out)
    return out


def predict(model, path: Path, **options) -> dict:
    (record,) = model.predict(path, workers=0, **options)
    assert record.status == "ok", record.error
    return record.to_dict()


def test_the_speaker_side_by_side_gets_their_own_voice(model, tmp_path):
    """Ten pairs of different GRID speakers, the voice of the left one or of the right one."""
    right = 0
    for k in range(10):
        pair = [GRID[k], GRID[(k + 1) % len(GRID)]]
        speaking = k % 2
        r = predict(model, side_by_side(tmp_path / f"pair{k}.mp4", pair, pair[speaking]))
        assert [p["person"] for p in r["people"]] == [0, 1]
        assert r["people"][0]["box"][0] < r["people"][1]["box"][0]  # numbered left to right
        assert r["speech_seconds"] > 0.5
        if r["speaker"] == speaking:
            right += 1
            voices = [p["voice"] for p in r["people"]]
            assert voices[speaking] == "own" and voices[1 - speaking] == "none"
            assert r["people"][speaking]["speaking"] > 0.9
            assert r["probabilities"] == r["people"][speaking]["probabilities"]
    assert right >= 9


def test_a_voice_from_off_screen_is_nobody_visible(model, tmp_path):
    """Two GRID faces with the voice of a third GRID speaker who is not on screen."""
    nobody = 0
    for k in range(10):
        faces = [GRID[k], GRID[(k + 1) % len(GRID)]]
        r = predict(model, side_by_side(tmp_path / f"off{k}.mp4", faces, GRID[(k + 2) % len(GRID)]))
        if r["speaker"] is None:
            nobody += 1
            assert {p["voice"] for p in r["people"]} == {"none"}
            assert r["unattributed_speech_seconds"] == pytest.approx(r["speech_seconds"]) and r["speech_seconds"] > 0.5
            main = next(p for p in r["people"] if p["probabilities"] == r["probabilities"])  # the main face's call
            assert main["person"] in (0, 1)
    assert nobody >= 7


def test_one_face_alone_keeps_the_whole_soundtrack_and_todays_result(model):
    people = predict(model, SINGLE)
    main = predict(model, SINGLE, people="main")
    assert "people" not in main and "speaker" not in main and "people" not in main["clips"][0]
    (person,) = people["people"]
    assert person["voice"] == "all" and people["speaker"] == 0 and people["speech_seconds"] > 0.5
    assert people["probabilities"] == main["probabilities"] == person["probabilities"]
    assert [c["probabilities"] for c in people["clips"]] == [c["probabilities"] for c in main["clips"]]


def test_silence_under_two_faces_is_nobody_speaking(model, tmp_path):
    silent = tmp_path / "silent.mp4"
    ffmpeg(*_inputs(GRID[0], GRID[1]), "-f", "lavfi", "-i", "anullsrc=channel_layout=stereo:sample_rate=44100",
           "-filter_complex", "[0:v][1:v]hstack[v]", "-map", "[v]", "-map", "2:a", *H264, "-shortest", silent)
    r = predict(model, silent)
    assert r["speaker"] is None and r["speech_seconds"] < 0.3 and len(r["people"]) == 2
    assert {p["voice"] for p in r["people"]} == {"none"}


def test_no_audio_track_under_two_faces(model, tmp_path):
    mute = tmp_path / "mute.mp4"
    ffmpeg(*_inputs(GRID[0], GRID[1]), "-filter_complex", "[0:v][1:v]hstack[v]", "-map", "[v]",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", mute)
    r = predict(model, mute)
    assert r["flags"]["no_audio"] and r["speaker"] is None and r["speech_seconds"] == 0
    assert {p["voice"] for p in r["people"]} == {"none"} and r["label"] is not None


def test_a_voice_on_one_stereo_channel_is_still_speech(model, tmp_path):
    """The left speaker's voice on the right channel only: speech presence listens to every channel."""
    path = side_by_side(tmp_path / "right-channel.mp4", [GRID[0], GRID[1]], GRID[0], pan="stereo|c0=0*c0|c1=c0")
    r = predict(model, path)
    assert r["speech_seconds"] > 0.5 and r["speaker"] == 0


def test_a_conversation_is_split_between_its_speakers(model, tmp_path):
    """The left person speaks for 3 s while the right one listens, then the other way round."""
    left, right = GRID[0], GRID[1]
    graph = (
        "[0:v]setpts=PTS-STARTPTS,split[a0][a1];[1:v]setpts=PTS-STARTPTS,split[b0][b1];"
        f"[a1]{LISTEN.format(t='la')}[al];[b0]{LISTEN.format(t='lb')}[bl];"
        "[a0][al]concat=n=2,setpts=N/25/TB[left];[bl][b1]concat=n=2,setpts=N/25/TB[right];[left][right]hstack[v];"
        "[0:a][1:a]concat=n=2:v=0:a=1[a]"
    )
    path = tmp_path / "conversation.mp4"
    ffmpeg(*_inputs(left, right), "-filter_complex", graph, "-map", "[v]", "-map", "[a]", *H264, path)
    r = predict(model, path, window=3)
    first, second = r["clips"]
    assert {t["person"] for t in first["speech"]} == {0} and first["speaker"] == 0
    assert {t["person"] for t in second["speech"]} == {1} and second["speaker"] == 1
    assert {p["voice"] for p in r["people"]} == {"own"}
    assert 0.3 < r["people"][0]["speaking"] < 0.7


def test_a_crowd_is_capped_and_counted(model, tmp_path):
    """Twelve faces in a 4 x 3 gallery: at most --max-people analysed, all of them counted."""
    faces = [GRID[k % len(GRID)] for k in range(12)]
    cells = "".join(f"[{i}:v]scale=180:144[c{i}];" for i in range(12))
    layout = "|".join(f"{180 * (i % 4)}_{144 * (i // 4)}" for i in range(12))
    graph = cells + "".join(f"[c{i}]" for i in range(12)) + f"xstack=inputs=12:layout={layout}[v]"
    path = tmp_path / "crowd.mp4"
    ffmpeg(*_inputs(*faces), "-filter_complex", graph, "-map", "[v]", "-map", "0:a", *H264, "-shortest", path)
    r = predict(model, path, max_people=3)
    assert len(r["people"]) == 3 and r["flags"]["people_seen"] >= 8
    assert all(len(c["people"]) <= 3 for c in r["clips"])


def test_the_table_csv_and_dataframe_have_a_line_per_person(model, tmp_path):
    import io

    from dfer_cli.results.writers import make_writer

    (record,) = model.predict(side_by_side(tmp_path / "pair.mp4", GRID[:2], GRID[0]), workers=0)
    out = io.StringIO()
    writer = make_writer("csv", out, model.class_names, False, people=True)
    writer.write(record)
    writer.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].endswith(",error,person,speaker,voice,speech_seconds")
    assert lines[1].split(",")[-4:-1] == ["0", "True", "own"] and lines[2].split(",")[-4:-1] == ["1", "False", "none"]
    table = io.StringIO()
    writer = make_writer("table", table, model.class_names, False, people=True)
    writer.write(record)
    writer.close()
    assert "0 speaks" in table.getvalue() and "not theirs" in table.getvalue()
    frame = dfer.to_dataframe([record])
    assert list(frame["person"]) == [0, 1] and list(frame["speaker"]) == [True, False]
    assert np.isclose(frame["speaking"].sum(), 1.0)


def test_explain_explains_each_person(model, tmp_path):
    r = predict(model, side_by_side(tmp_path / "pair.mp4", GRID[:2], GRID[0]), explain=True)
    speaker, listener = r["people"][r["speaker"]], r["people"][1 - r["speaker"]]
    for person in (speaker, listener):
        shares = person["explanation"]
        assert shares["face_share"] + (shares["voice_share"] or 0) == pytest.approx(1, abs=1e-3)
    assert listener["voice"] == "none" and not listener["explanation"]["voice_share"]  # it heard no voice
    assert r["explanation"]["voice_share"] == speaker["explanation"]["voice_share"]


def _clip(start: float, boxes: list[list[float]], speech: list[dict]) -> ClipResult:
    people = [{"person": k, "box": b, "faces_found": 16, "frames": 16, "voice": "own", "speech_seconds": 0.0,
               "main": k == 0, "probabilities": {"a": 0.6, "b": 0.4}} for k, b in enumerate(boxes)]
    return ClipResult(0, start, start + 2, start, start + 2, 16, 16, people=people, speech=speech)


def test_who_leaves_and_comes_back_where_they_were_is_the_same_person():
    from dfer_cli.results.people import finish_people
    from dfer_cli.results.records import FileResult

    left, right, elsewhere = [0, 0, 50, 50], [200, 0, 250, 50], [100, 100, 150, 150]
    result = FileResult("x.mp4", clips=[
        _clip(0, [left, right], [{"start": 0.5, "end": 1.5, "person": 1}]),
        _clip(2, [right], []),  # the left person is away
        _clip(4, [left, right], [{"start": 4.5, "end": 5.0, "person": 0}]),  # back where they were
        _clip(6, [elsewhere], []),  # someone at a new place: a new person
    ])
    finish_people(result, ["a", "b"])
    assert [p["person"] for p in result.people] == [0, 1, 2]  # left to right: left, elsewhere (x 125), right
    by_place = {tuple(p["box"]): p for p in result.people}
    assert by_place[tuple(left)]["seen"] == pytest.approx(4.0) and by_place[tuple(right)]["seen"] == pytest.approx(6.0)
    assert by_place[tuple(right)]["speech_seconds"] == pytest.approx(1.0) and result.speaker == 2
    assert [c.speaker for c in result.clips] == [2, None, 0, None]
    assert result.speech_seconds == pytest.approx(1.5) and result.unattributed_speech_seconds == 0


def test_the_timeline_plot_draws_who_speaks(tmp_path):
    from dfer_cli.results.timeline_plot import plot_timeline

    png = tmp_path / "who.png"
    plot_timeline([0, 1, 1, 2], np.full((4, 2), 0.5), ["a", "b"], png, "x",
                  speech=[(0.2, 0.8, 0), (1.1, 1.5, 1), (1.6, 1.9, None)])
    plain = tmp_path / "plain.png"
    plot_timeline([0, 1, 1, 2], np.full((4, 2), 0.5), ["a", "b"], plain, "x")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.read_bytes() != plain.read_bytes()


def test_the_landmark_model_runs_where_the_pipeline_puts_it(model, tmp_path, monkeypatch):
    """In one process the front end's landmark model goes to the model's device; workers keep the CPU."""
    import torch

    from dfer_cli.people import speaking
    from dfer_cli.predict import pipeline
    from dfer_cli.runtime.device import frontend_device

    cuda = torch.device("cuda")
    assert frontend_device(cuda, 0) == cuda and frontend_device(cuda, 2) == torch.device("cpu")
    asked, real = [], speaking.process_landmarker
    monkeypatch.setattr(speaking, "process_landmarker", lambda device: asked.append(device) or real("cpu"))
    monkeypatch.setattr(pipeline, "frontend_device", lambda device, workers: torch.device("meta"))
    r = predict(model, side_by_side(tmp_path / "pair.mp4", GRID[:2], GRID[0]))
    assert asked == ["meta"] and r["speaker"] == 0


# Music: a plucked chord that changes every half second on each channel, no voice.
CHORDS = ("aevalsrc='0.25*exp(-3*mod(t,0.5))*(sin(2*PI*261.6*t*(1+0.25*floor(mod(2*t,4))))+sin(2*PI*329.6*t)"
          "+sin(2*PI*392*t))|0.25*exp(-3*mod(t,0.5))*(sin(2*PI*196*t)+sin(2*PI*293.7*t*(1+0.125*floor(mod(2*t,3)))))'"
          ":s=44100:d=3")


def test_music_without_speech_is_nobody_speaking(model, tmp_path):
    two, one = tmp_path / "music2.mp4", tmp_path / "music1.mp4"
    ffmpeg(*_inputs(GRID[0], GRID[1]), "-f", "lavfi", "-i", CHORDS, "-filter_complex", "[0:v][1:v]hstack[v]",
           "-map", "[v]", "-map", "2:a", *H264, "-shortest", two)
    ffmpeg(*_inputs(GRID[0]), "-f", "lavfi", "-i", CHORDS, "-map", "0:v", "-map", "1:a", *H264, "-shortest", one)
    r = predict(model, two)
    assert r["speech_seconds"] == 0 and r["speaker"] is None and [p["voice"] for p in r["people"]] == ["none"] * 2
    r = predict(model, one)
    assert r["speech_seconds"] == 0 and r["speaker"] is None and [p["voice"] for p in r["people"]] == ["all"]


def test_one_speaker_per_stereo_channel(model, tmp_path):
    """The left person speaks first on the left channel, the right one after on the right channel."""
    graph = (
        "[0:v]setpts=PTS-STARTPTS,split[a0][a1];[1:v]setpts=PTS-STARTPTS,split[b0][b1];"
        f"[a1]{LISTEN.format(t='la')}[al];[b0]{LISTEN.format(t='lb')}[bl];"
        "[a0][al]concat=n=2,setpts=N/25/TB[left];[bl][b1]concat=n=2,setpts=N/25/TB[right];[left][right]hstack[v];"
        "[0:a]aformat=channel_layouts=mono,apad=pad_dur=3[l];[1:a]aformat=channel_layouts=mono,adelay=3000:all=1[r];"
        "[l][r]join=inputs=2:channel_layout=stereo[a]"
    )
    path = tmp_path / "two-channels.mp4"
    ffmpeg(*_inputs(GRID[0], GRID[1]), "-filter_complex", graph, "-map", "[v]", "-map", "[a]", *H264, path)
    r = predict(model, path, window=3)
    first, second = r["clips"]
    assert {t["person"] for t in first["speech"]} == {0} and {t["person"] for t in second["speech"]} == {1}
    assert [p["voice"] for p in r["people"]] == ["own", "own"] and r["unattributed_speech_seconds"] == 0


def test_who_leaves_and_returns_is_one_person_end_to_end(model, tmp_path):
    """The right person is away (a grey picture) for the middle 3 s of 9: one person seen 6 s, not two."""
    graph = ("[0:v]setpts=PTS-STARTPTS,loop=loop=2:size=75,setpts=N/25/TB[left];"
             "[1:v]setpts=PTS-STARTPTS,split[b0][b1];color=c=gray:s=360x288:r=25:d=3[away];"
             "[b0][away][b1]concat=n=3,setpts=N/25/TB[right];[left][right]hstack[v]")
    path = tmp_path / "away.mp4"
    ffmpeg(*_inputs(GRID[0], GRID[1]), "-filter_complex", graph, "-map", "[v]", "-map", "0:a", *H264, path)
    r = predict(model, path, window=3)
    assert [len(c["people"]) for c in r["clips"]] == [2, 1, 2]
    assert [p["seen"] for p in r["people"]] == [pytest.approx(9, abs=0.2), pytest.approx(6, abs=0.2)]


def test_speech_across_window_edges_keeps_its_speaker(model, tmp_path):
    """--window 1 cuts the sentence into pieces; it is attributed whole, so no piece falls to nobody (each
    window's piece on its own frames gave 1.1 s of 1.6 to nobody here, and the file to the wrong person)."""
    pair = [GRID[3], GRID[4]]
    r = predict(model, side_by_side(tmp_path / "pair.mp4", pair, pair[1]), window=1)
    pieces = [t["person"] for c in r["clips"] for t in c["speech"]]
    assert len(pieces) >= 2 and set(pieces) == {1} and r["speaker"] == 1 and r["unattributed_speech_seconds"] == 0


def test_every_face_of_a_gallery_and_of_a_row(model, tmp_path):
    """A 3 x 3 gallery at 1920x1080 (the whole-frame pass found 2-4 of its faces a frame: 4 people) and
    four GRID faces in a row: the faces beside those found are looked for over tiles."""
    cells = "".join(f"[{i}:v]scale=640:360[c{i}];" for i in range(9))
    layout = "|".join(f"{640 * (i % 3)}_{360 * (i // 3)}" for i in range(9))
    graph = cells + "".join(f"[c{i}]" for i in range(9)) + f"xstack=inputs=9:layout={layout}[v]"
    path = tmp_path / "gallery.mp4"
    ffmpeg(*_inputs(*[GRID[k % len(GRID)] for k in range(9)]), "-filter_complex", graph, "-map", "[v]", "-map", "0:a",
           *H264, "-shortest", path)
    r = predict(model, path, max_people=9)
    assert len(r["people"]) == 9 and r["flags"]["people_seen"] == 9
    centres = sorted(((x0 + x1) / 2 // 640, (y0 + y1) / 2 // 360) for x0, y0, x1, y1 in (p["box"] for p in r["people"]))
    assert centres == sorted((x, y) for x in range(3) for y in range(3))  # one in each cell
    r = predict(model, side_by_side(tmp_path / "row.mp4", GRID[:4], GRID[0]))
    assert len(r["people"]) == 4


def smaller_beside_larger(out: Path, listener: Path, speaker: Path, scale: float = 0.6) -> Path:
    """`listener` listening at its own size (faces of 110-140 px) beside `speaker` speaking, scaled by `scale`
    (faces of 80-90 px) and padded back to 360x288: a 720x288 frame with the speaker's voice."""
    w, h = int(360 * scale) // 2 * 2, int(288 * scale) // 2 * 2
    graph = (f"[0:v]{LISTEN.format(t='l')}[big];[1:v]setpts=PTS-STARTPTS,scale={w}:{h},"
             "pad=360:288:(ow-iw)/2:(oh-ih)/2[small];[big][small]hstack[v]")
    ffmpeg(*_inputs(listener, speaker), "-filter_complex", graph, "-map", "[v]", "-map", "1:a", *H264, "-shortest", out)
    return out


def test_a_smaller_speaker_beside_a_larger_listener_is_found_and_keeps_the_voice(model, tmp_path):
    """The whole-frame pass sees only the larger face; the smaller one is looked for too, and who speaks is
    decided among everyone seen before --max-people keeps the most present: with 1, the speaker, hearing
    their own voice (not the silent face with all of it)."""
    right = 0
    for k in range(6):
        path = smaller_beside_larger(tmp_path / f"small{k}.mp4", GRID[k], GRID[(k + 1) % len(GRID)])
        r = predict(model, path)
        assert len(r["people"]) == 2 and r["flags"]["people_seen"] == 2
        one = predict(model, path, max_people=1)
        (kept,) = one["people"]
        assert kept["voice"] != "all" and one["flags"]["people_seen"] == 2
        if r["speaker"] == 1:
            right += 1
            assert kept["voice"] == "own" and kept["speaking"] == 1.0 and one["speaker"] == 0
            assert kept["box"] == r["people"][1]["box"]
    assert right >= 5


def test_the_file_counts_the_speech_of_every_clip_of_a_span():
    """A short file's two clips share a span: one sees two people and gives the speech to nobody, the
    other sees one, who is given all of it. The file counts each clip's share, so it agrees with both."""
    from dfer_cli.results.people import finish_people
    from dfer_cli.results.records import FileResult

    left, right = [0, 0, 50, 50], [200, 0, 250, 50]
    result = FileResult("x.mp4", clips=[_clip(0, [left, right], [{"start": 0.5, "end": 1.5, "person": None}]),
                                        _clip(0, [left], [{"start": 0.5, "end": 1.5, "person": 0}])])
    finish_people(result, ["a", "b"])
    assert result.clips[1].speaker == 0 and result.speaker == 0
    assert result.speech_seconds == pytest.approx(1.0) and result.unattributed_speech_seconds == pytest.approx(0.5)
    assert result.people[0]["speech_seconds"] == pytest.approx(0.5)
