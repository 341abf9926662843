import os
import struct

import numpy as np
import pytest

from dfer_cli import figures
from dfer_cli.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from dfer_cli.errors import DferError
from dfer_cli.labels import DFEW_CLASSES, MAFW_CLASSES
from dfer_cli.results import timeline_plot
from dfer_cli.train import plots
from dfer_cli.train.metrics import Report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def expected_pixels(size_in):
    return round(size_in[0] * figures.DPI), round(size_in[1] * figures.DPI)


def only_file(folder):
    # No temporary file may be left behind beside the result.
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("names", [DFEW_CLASSES, MAFW_CLASSES])
def test_plot_confusion(tmp_path, names):
    rng = np.random.default_rng(0)
    c = len(names)
    confusion = rng.integers(0, 5, size=(c, c)) + np.diag(rng.integers(10, 40, size=c))
    confusion[-1] = 0  # a class without samples: an empty (grey) row
    path = tmp_path / "confusion.png"
    plots.plot_confusion(Report.from_confusion(confusion, names), path)
    assert png_size(path) == expected_pixels(plots.CONFUSION_SIZE_IN)
    assert only_file(tmp_path) == ["confusion.png"]


def test_plot_timeline(tmp_path):
    times = np.arange(0.0, 12.0, 0.5)
    logits = np.stack([np.sin(times / (k + 1)) * (k + 1) for k in range(7)], axis=1)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    path = tmp_path / "out" / "timeline.png"  # the parent folder is created
    timeline_plot.plot_timeline(times, probs, DFEW_CLASSES, path, "clip.mp4")
    assert png_size(path) == expected_pixels(timeline_plot.TIMELINE_SIZE_IN)


def test_plot_timeline_single_window_and_unknown_names(tmp_path):
    path = tmp_path / "one.png"
    timeline_plot.plot_timeline([1.0], np.array([[0.2, 0.3, 0.5]]), ("x", "y", "z"), path, "short")
    assert png_size(path) == expected_pixels(timeline_plot.TIMELINE_SIZE_IN)


def test_plot_timeline_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(DferError, match="3 time points and 7 classes"):
        timeline_plot.plot_timeline([0, 1, 2], np.zeros((3, 6)), DFEW_CLASSES, tmp_path / "x.png", "t")
    with pytest.raises(DferError, match="no time points"):
        timeline_plot.plot_timeline([], np.zeros((0, 7)), DFEW_CLASSES, tmp_path / "x.png", "t")
    assert only_file(tmp_path) == []


def test_plot_training_curves(tmp_path):
    records = [
        {"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e ** 0.8, "lr": 1e-4 * (1 - e / 26),
         "val_uar": 30 + e, "val_war": 40 + e}
        for e in range(1, 26)
    ]
    records[3]["val_uar"] = None  # a metric not computed that epoch is skipped
    path = tmp_path / "curves.png"
    plots.plot_training_curves(records, path)
    assert png_size(path) == expected_pixels(plots.CURVES_SIZE_IN)


def test_plot_training_curves_partial_and_empty(tmp_path):
    path = tmp_path / "curves.png"
    plots.plot_training_curves([{"train_loss": 1.0}, {"train_loss": 0.5}], path)  # no lr, no metrics
    assert png_size(path) == expected_pixels(plots.CURVES_SIZE_IN)
    with pytest.raises(DferError, match="no training records"):
        plots.plot_training_curves([], path)


def test_atomic_writes_replace_whole_files(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "first\n")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert only_file(tmp_path) == ["a.txt"]


def test_atomic_path_failure_keeps_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and not tmp.exists()
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert path.read_text() == "old"
    assert only_file(tmp_path) == ["report.json"]


def test_atomic_file_gets_normal_permissions(tmp_path):
    path = tmp_path / "p.bin"
    atomic_write_bytes(path, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_class_names_in_any_script_draw_without_a_missing_glyph(tmp_path):
    """Class folders named in Chinese: DejaVu Sans has none of their glyphs (a warning per character,
    empty boxes); the font chain draws each one."""
    import warnings

    names = ("快乐", "悲伤", "中性", "neutral")
    confusion = np.diag([5, 6, 7, 8]) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.plot_confusion(Report.from_confusion(confusion, names), tmp_path / "confusion.png", title="折叠 1")
        probs = np.full((4, 4), 0.25)
        timeline_plot.plot_timeline(np.arange(4.0), probs, list(names), tmp_path / "timeline.png", "讲座.mp4")
    assert png_size(tmp_path / "confusion.png") == expected_pixels(plots.CONFUSION_SIZE_IN)
    assert figures.text_fonts()[0] == "DejaVu Sans" and len(figures.text_fonts()) > 1
