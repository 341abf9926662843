import json
import math

import numpy as np
import pytest

from dfer_cli.errors import DferError
from dfer_cli.train.metrics import Report, confusion_matrix, evaluate_predictions

NAMES = ("a", "b", "c", "d")
# Class a: 3 of 4 right. Class b: 1 of 3 right (one mistaken for d). Class c: 3 samples, never predicted.
# Class d: no samples at all (but predicted once).
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 0, 3, 0, 1, 1]
EXPECTED_CM = np.array([
    [3, 1, 0, 0],
    [1, 1, 0, 1],
    [1, 2, 0, 0],
    [0, 0, 0, 0],
])


def one_hot_scores(pred, num_classes, logits=False):
    scores = np.full((len(pred), num_classes), -3.0 if logits else 0.02)
    scores[np.arange(len(pred)), pred] = 2.5 if logits else 0.9
    return scores


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert cm.dtype.kind == "i"
    np.testing.assert_array_equal(cm, EXPECTED_CM)


def test_report_uar_war_and_empty_class():
    report = Report.from_confusion(EXPECTED_CM, NAMES)
    np.testing.assert_array_equal(report.counts, [4, 3, 3, 0])
    assert report.num_samples == 10
    recall = report.per_class_recall
    assert recall[0] == pytest.approx(75.0)
    assert recall[1] == pytest.approx(100.0 / 3)
    assert recall[2] == 0.0  # has samples, never predicted: counts as 0 in UAR
    assert math.isnan(recall[3])  # no samples: excluded from UAR
    assert report.war == pytest.approx(40.0)  # 4 right out of 10
    assert report.uar == pytest.approx((75.0 + 100.0 / 3 + 0.0) / 3)  # 36.11


@pytest.mark.parametrize("logits", [False, True])
def test_evaluate_predictions_probs_or_logits(logits):
    report = evaluate_predictions(Y_TRUE, one_hot_scores(Y_PRED, 4, logits), NAMES)
    np.testing.assert_array_equal(report.confusion, EXPECTED_CM)
    assert report.class_names == NAMES
    assert report.war == pytest.approx(40.0)
    assert report.uar == pytest.approx(36.111111)


def test_perfect_and_balanced_cases():
    perfect = evaluate_predictions([0, 1, 1, 2], one_hot_scores([0, 1, 1, 2], 3), ("x", "y", "z"))
    assert (perfect.uar, perfect.war) == (100.0, 100.0)
    # Majority-class guessing: WAR looks fine, UAR exposes it.
    y_true = [0] * 8 + [1] * 2
    lazy = evaluate_predictions(y_true, one_hot_scores([0] * 10, 2), ("common", "rare"))
    assert lazy.war == pytest.approx(80.0)
    assert lazy.uar == pytest.approx(50.0)


def test_to_dict_is_strict_json_with_null_for_empty_class():
    report = Report.from_confusion(EXPECTED_CM, NAMES)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["uar"] == pytest.approx(36.111111)
    assert data["war"] == pytest.approx(40.0)
    assert data["num_samples"] == 10
    assert data["class_names"] == list(NAMES)
    assert data["confusion_matrix"] == EXPECTED_CM.tolist()
    assert data["per_class"][3] == {"name": "d", "samples": 0, "recall": None}
    assert data["per_class"][2] == {"name": "c", "samples": 3, "recall": 0.0}


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0, 1], [0], "2 true labels but 1 predictions"),
        ([0, 4], [0, 1], "true label 4 is outside 0..3"),
        ([0, 1], [0, -1], "prediction -1 is outside 0..3"),
    ],
)
def test_confusion_matrix_rejects_bad_labels(y_true, y_pred, message):
    with pytest.raises(DferError, match=message):
        confusion_matrix(y_true, y_pred, 4)


def test_evaluate_rejects_bad_shapes_and_empty_input():
    with pytest.raises(DferError, match=r"shape \(N, 4\)"):
        evaluate_predictions([0, 1], np.zeros((2, 3)), NAMES)
    with pytest.raises(DferError, match="no samples"):
        evaluate_predictions([], np.zeros((0, 4)), NAMES)
    with pytest.raises(DferError, match="for 3 class names"):
        Report.from_confusion(EXPECTED_CM, NAMES[:3])
