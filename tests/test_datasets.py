from pathlib import Path

import pytest

from dfer_cli.errors import DferError
from dfer_cli.labels import DFEW_CLASSES, MAFW_CLASSES
from dfer_cli.train.datasets import DfewDataset, FolderDataset, MafwDataset, summarize


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- DFEW

DFEW_FOLD1_TRAIN = "video_name,label\n1,1\n2,7\n25,3\n"  # ids as DFEW writes them: no zero padding
DFEW_FOLD1_TEST = "video_name,label\n00031,6\n00040,2\n"
DFEW_FOLD2_TEST = "video_name,label\n1,4\n"


def make_dfew(root: Path, train_dir="train(single-labeled)", test_dir="test(single-labeled)",
              csv_name="set_{}.csv", header=True) -> Path:
    split_root = root / "EmoLabel_DataSplit"
    for folder, fold, text in ((train_dir, 1, DFEW_FOLD1_TRAIN), (test_dir, 1, DFEW_FOLD1_TEST),
                               (test_dir, 2, DFEW_FOLD2_TEST)):
        if not header:
            text = text.split("\n", 1)[1]
        touch(split_root / folder / csv_name.format(fold), text.encode())
    for clip in ("00001", "00002", "00025", "00031", "00040"):
        for i in (1, 2):
            touch(root / "Clip" / "clip_224x224" / clip / f"{clip}_{i:05d}.jpg", b"jpg")
    # Original clips for audio: one named without padding, one missing (00040).
    for name in ("00001.mp4", "2.mp4", "00025.mp4", "00031.mp4"):
        touch(root / "Clip" / "original" / name)
    return root


def test_dfew_official_layout(tmp_path):
    root = make_dfew(tmp_path / "DFEW")
    data = DfewDataset(root, fold=1)
    assert data.class_names == DFEW_CLASSES
    assert data.splits == ("train", "test")
    train = data.samples("train")
    assert [(s.key, s.label) for s in train] == [("00001", 0), ("00002", 6), ("00025", 2)]
    assert [DFEW_CLASSES[s.label] for s in train] == ["happy", "fear", "neutral"]
    first = train[0]
    assert first.frames_dir == root / "Clip" / "clip_224x224" / "00001"
    assert first.video == root / "Clip" / "original" / "00001.mp4"
    assert first.split == "train"
    assert train[1].video == root / "Clip" / "original" / "2.mp4"
    test = data.samples("test")
    assert [(s.key, s.label) for s in test] == [("00031", 5), ("00040", 1)]
    assert test[1].video is None  # no original clip: kept; prepare reports it as having no audio track


def test_dfew_summary_counts_each_class(tmp_path):
    summary = summarize(DfewDataset(make_dfew(tmp_path), fold=1), "test")
    assert summary.counts == (0, 1, 0, 0, 0, 1, 0)
    assert str(summary) == ("DFEW fold 1, test: 2 clips "
                            "(happy 0, sad 1, neutral 0, angry 0, surprise 0, disgust 1, fear 0)")


def test_dfew_fold_selection(tmp_path):
    data = DfewDataset(make_dfew(tmp_path), fold=2)
    assert [(s.key, s.label) for s in data.samples("test")] == [("00001", 3)]
    with pytest.raises(DferError, match=r"EmoLabel_DataSplit/train\(single-labeled\)/set_2\.csv"):
        data.samples("train")


@pytest.mark.parametrize(
    ("train_dir", "test_dir", "csv_name", "header"),
    [
        ("train_single-labeled", "test_single-labeled", "set{}.csv", True),
        ("Train (single-labeled)", "TEST(Single-Labelled)", "train_set_{}.csv", True),
        ("train(single-labeled)", "test(single-labeled)", "set_{}.csv", False),
    ],
)
def test_dfew_name_variants(tmp_path, train_dir, test_dir, csv_name, header):
    root = make_dfew(tmp_path, train_dir, test_dir, csv_name, header)
    data = DfewDataset(root, fold=1)
    assert [(s.key, s.label) for s in data.samples("train")] == [("00001", 0), ("00002", 6), ("00025", 2)]
    assert len(data.samples("test")) == 2


def test_dfew_missing_split_file(tmp_path):
    root = make_dfew(tmp_path)
    data = DfewDataset(root, fold=3)
    with pytest.raises(DferError) as err:
        data.samples("test")
    message = str(err.value)
    assert f"{root}/EmoLabel_DataSplit/test(single-labeled)/set_3.csv" in message
    assert "video_name,label" in message


def test_dfew_missing_frames(tmp_path):
    root = make_dfew(tmp_path)
    for jpg in (root / "Clip" / "clip_224x224" / "00040").iterdir():
        jpg.unlink()
    (root / "Clip" / "clip_224x224" / "00040").rmdir()
    with pytest.raises(DferError, match=r"1 of the 2 clips in .*set_1\.csv have no face frames .*00040"):
        DfewDataset(root, fold=1).samples("test")
    for clip_dir in (root / "Clip" / "clip_224x224").iterdir():
        for jpg in clip_dir.iterdir():
            jpg.unlink()
        clip_dir.rmdir()
    (root / "Clip" / "clip_224x224").rmdir()
    with pytest.raises(DferError, match=r"Clip/clip_224x224/<5-digit id>/\*\.jpg"):
        DfewDataset(root, fold=1)


def test_dfew_bad_label_and_bad_arguments(tmp_path):
    root = make_dfew(tmp_path)
    csv_path = root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv"
    csv_path.write_text("video_name,label\n31,6\n40,8\n")
    with pytest.raises(DferError, match=r"set_1\.csv, line 3: label '8' is not 1\.\.7"):
        DfewDataset(root, fold=1).samples("test")
    with pytest.raises(DferError, match="fold must be 1..5"):
        DfewDataset(root, fold=6)
    with pytest.raises(DferError, match="has no 'val' split"):
        DfewDataset(root, fold=1).samples("val")
    with pytest.raises(DferError, match="data set folder not found"):
        DfewDataset(tmp_path / "nowhere", fold=1)


def test_dfew_without_any_original_clips(tmp_path):
    root = make_dfew(tmp_path)
    for mp4 in (root / "Clip" / "original").iterdir():
        mp4.unlink()
    (root / "Clip" / "original").rmdir()
    samples = DfewDataset(root, fold=1).samples("train")
    assert [s.video for s in samples] == [None, None, None]
    assert all(s.frames_dir is not None for s in samples)


# ----------------------------------------------------------------------------- MAFW

MAFW_SET = Path("Train & Test Set") / "single" / "no_caption"


def make_mafw(root: Path) -> Path:
    # Label names in any case, and integers in MAFW's own numbering (4 = happiness, 11 = disappointment).
    touch(root / MAFW_SET / "set_1" / "train.txt",
          b"00001.mp4 anger\n00002.mp4 Happiness\n00003.mp4 4\n\n00004.mp4 11\n")
    touch(root / MAFW_SET / "set_1" / "test.txt", b"00005.mp4 contempt\n00006.mp4 1\n")
    touch(root / MAFW_SET / "set_2" / "test.txt", b"00001.mp4 neutral\n")
    for i in range(1, 7):
        touch(root / "data" / "clips" / f"{i:05d}.mp4")
    return root


def test_mafw_official_layout(tmp_path):
    root = make_mafw(tmp_path / "MAFW")
    data = MafwDataset(root, fold=1)
    assert data.class_names == MAFW_CLASSES
    train = data.samples("train")
    assert [(s.key, MAFW_CLASSES[s.label]) for s in train] == [
        ("00001", "anger"), ("00002", "happiness"), ("00003", "happiness"), ("00004", "disappointment"),
    ]
    assert [s.label for s in train] == [3, 0, 0, 10]  # the reference model's order
    assert train[0].video == root / "data" / "clips" / "00001.mp4"
    assert all(s.frames_dir is None for s in train)  # faces come from the face detector
    test = data.samples("test")
    assert [(s.key, s.label) for s in test] == [("00005", 7), ("00006", 3)]
    assert summarize(data, "test").counts == (0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0)


def test_mafw_fold_selection_and_missing_split(tmp_path):
    root = make_mafw(tmp_path)
    data = MafwDataset(root, fold=2)
    assert [(s.key, s.label) for s in data.samples("test")] == [("00001", 2)]
    with pytest.raises(DferError) as err:
        data.samples("train")
    assert f"{root}/Train & Test Set/single/no_caption/set_2/train.txt" in str(err.value)
    with pytest.raises(DferError, match=r"no folder 'set_3'"):
        MafwDataset(root, fold=3).samples("test")


def test_mafw_missing_clips_and_bad_labels(tmp_path):
    root = make_mafw(tmp_path)
    (root / "data" / "clips" / "00006.mp4").unlink()
    with pytest.raises(DferError, match=r"1 of the 2 clips in .*test\.txt are not in .*clips.*00006"):
        MafwDataset(root, fold=1).samples("test")
    (root / MAFW_SET / "set_1" / "train.txt").write_text("00001.mp4 joy\n")
    with pytest.raises(DferError, match=r"train\.txt, line 1: unknown MAFW label 'joy'"):
        MafwDataset(root, fold=1).samples("train")
    (root / MAFW_SET / "set_1" / "train.txt").write_text("00001.mp4 12\n")
    with pytest.raises(DferError, match=r"label '12' is not 1\.\.11 \(MAFW numbering: 1 anger"):
        MafwDataset(root, fold=1).samples("train")


def test_mafw_missing_clips_folder(tmp_path):
    touch(tmp_path / MAFW_SET / "set_1" / "train.txt", b"00001.mp4 anger\n")
    with pytest.raises(DferError, match=r"expected .*/data/clips/<clip>\.mp4"):
        MafwDataset(tmp_path, fold=1)


# ----------------------------------------------------------------------------- Folder

def make_folder(root: Path) -> Path:
    for i in range(10):
        touch(root / "happy" / f"h{i}.mp4")
    for i in range(5):
        touch(root / "angry" / f"a{i}.webm")
    touch(root / "sad" / "nested" / "s0.MP4")  # case-insensitive extension, sub-folders searched
    touch(root / "sad" / "s1.mkv")
    touch(root / "sad" / "notes.txt")  # not a video: ignored
    touch(root / "sad" / ".hidden.mp4")  # hidden: ignored
    touch(root / ".cache" / "x.mp4")  # hidden folder: not a class
    return root


def keys(samples):
    return sorted(s.key for s in samples)


def test_folder_classes_and_stratified_split(tmp_path):
    root = make_folder(tmp_path)
    data = FolderDataset(root, val_fraction=0.2, seed=1)
    assert data.class_names == ("angry", "happy", "sad")
    assert data.splits == ("train", "val")
    train, val = data.samples("train"), data.samples("val")
    assert len(train) + len(val) == 17
    per_class_val = [sum(s.label == c for s in val) for c in range(3)]
    assert per_class_val == [1, 2, 1]  # round(5 * .2), round(10 * .2), and at least one of sad's two
    assert {s.label for s in train} == {0, 1, 2}
    assert "sad/nested/s0.MP4" in keys(train + val)
    sample = next(s for s in train + val if s.key == "happy/h0.mp4")
    assert sample.video == root / "happy" / "h0.mp4" and sample.frames_dir is None and sample.label == 1
    # Same seed, same split; another seed, another split.
    assert keys(FolderDataset(root, seed=1).samples("val")) == keys(val)
    assert any(keys(FolderDataset(root, seed=s).samples("val")) != keys(val) for s in (2, 3, 4))


def test_folder_without_validation(tmp_path):
    data = FolderDataset(make_folder(tmp_path), val_fraction=0.0)
    assert data.splits == ("train",)
    assert len(data.samples("train")) == 17
    with pytest.raises(DferError, match="has no 'val' split"):
        data.samples("val")


def test_folder_errors(tmp_path):
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DferError, match="no class folders"):
        FolderDataset(tmp_path / "empty_root")
    touch(tmp_path / "root" / "happy" / "a.mp4")
    touch(tmp_path / "root" / "sad" / "readme.txt")
    with pytest.raises(DferError, match=r"sad: class folder without videos \(3gp avi flv m4v"):
        FolderDataset(tmp_path / "root")
    with pytest.raises(DferError, match=r"val_fraction must be in \[0, 1\)"):
        FolderDataset(tmp_path / "root", val_fraction=1.0)


def test_folder_from_csv(tmp_path):
    root = tmp_path / "videos"
    for name in ("x1.mp4", "x2.mp4", "y1.mp4", "y2.mp4", "y3.mp4"):
        touch(root / name)
    touch(tmp_path / "lists" / "z1.mp4")  # relative to the CSV's own folder
    csv_path = touch(tmp_path / "lists" / "labels.csv", (
        b"path,label,split\n"
        b"x1.mp4,calm,train\n"
        b"x2.mp4,calm,test\n"
        b"y1.mp4,excited,Validation\n"
        b"y2.mp4,excited,\n"  # no split: assigned by the seeded split
        b"y3.mp4,excited,\n"
        b"z1.mp4,calm,train\n"
    ))
    data = FolderDataset(root, val_fraction=0.5, labels_csv=csv_path)
    assert data.class_names == ("calm", "excited")
    assert data.splits == ("train", "val", "test")
    assert keys(data.samples("test")) == ["x2.mp4"]
    train, val = data.samples("train"), data.samples("val")
    assert "y1.mp4" in keys(val) and {"x1.mp4", "z1.mp4"} <= set(keys(train))
    assert len([k for k in keys(train + val) if k in ("y2.mp4", "y3.mp4")]) == 2
    z1 = next(s for s in train if s.key == "z1.mp4")
    assert z1.video == tmp_path / "lists" / "z1.mp4" and z1.label == 0


def test_folder_csv_integer_labels_without_header(tmp_path):
    for i in range(4):
        touch(tmp_path / f"v{i}.mp4")
    csv_path = touch(tmp_path / "labels.csv", b"v0.mp4,0\nv1.mp4,6\nv2.mp4,3\nv3.mp4,6\n")
    data = FolderDataset(tmp_path, val_fraction=0.0, labels_csv=csv_path)
    assert data.class_names == DFEW_CLASSES  # integer labels: 0-based, default names for 7 classes
    assert sorted((s.key, s.label) for s in data.samples("train")) == [
        ("v0.mp4", 0), ("v1.mp4", 6), ("v2.mp4", 3), ("v3.mp4", 6),
    ]


def test_folder_csv_errors(tmp_path):
    touch(tmp_path / "a.mp4")
    with pytest.raises(DferError, match="labels CSV not found"):
        FolderDataset(tmp_path, labels_csv=tmp_path / "missing.csv")
    bad = touch(tmp_path / "bad.csv", b"path,label\na.mp4,x\nb.mp4,y\nc.mp4,y\n")
    with pytest.raises(DferError, match=r"2 videos listed in .*bad\.csv exist neither.*b\.mp4 \(line 3\)"):
        FolderDataset(tmp_path, labels_csv=bad)
    bad.write_text("path,label,split\na.mp4,x,holdout\n")
    with pytest.raises(DferError, match=r"bad\.csv, line 2: split 'holdout' is not one of train, val, test"):
        FolderDataset(tmp_path, labels_csv=bad)
