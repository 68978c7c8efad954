"""Confusion matrix scores against numbers worked out by hand."""
import math

import numpy as np
import pytest
import torch

from rtseg.metrics import ConfusionMatrix, format_table, merge

# 4 classes; class 3 appears in neither map (the 3 predicted at the ignored pixel must not count).
TARGET = torch.tensor([[0, 0, 1, 1],
                       [0, 2, 1, 255],
                       [2, 2, 1, 0]])
PRED = torch.tensor([[0, 1, 1, 1],
                     [0, 2, 0, 3],
                     [2, 1, 1, 0]])
# Counted (gt, pred) pairs: (0,0) x3, (0,1), (1,1) x3, (1,0), (2,2) x2, (2,1) -> 11 pixels.
EXPECTED = [[3, 1, 0, 0],
            [1, 3, 0, 0],
            [0, 1, 2, 0],
            [0, 0, 0, 0]]


def worked_example() -> ConfusionMatrix:
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(PRED, TARGET)
    return cm


def test_matrix_by_hand():
    cm = worked_example()
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == EXPECTED


def test_scores_by_hand():
    r = worked_example().compute()
    # GT pixels per class 4, 4, 3, 0; predicted 4, 5, 2, 0; true positives 3, 3, 2, 0.
    assert r["pixel_acc"] == pytest.approx(8 / 11)
    assert r["iou"][:3] == pytest.approx([3 / 5, 3 / 6, 2 / 3])
    assert math.isnan(r["iou"][3])
    assert r["miou"] == pytest.approx((0.6 + 0.5 + 2 / 3) / 3)        # class 3 excluded
    assert r["acc"][:3] == pytest.approx([3 / 4, 3 / 4, 2 / 3])
    assert r["mean_acc"] == pytest.approx((0.75 + 0.75 + 2 / 3) / 3)
    assert r["fwiou"] == pytest.approx((4 * 0.6 + 4 * 0.5 + 3 * 2 / 3) / 11)
    assert r["dice"][:3] == pytest.approx([6 / 8, 6 / 9, 4 / 5])
    assert math.isnan(r["dice"][3])
    assert r["mean_dice"] == pytest.approx((0.75 + 2 / 3 + 0.8) / 3)


def test_perfect_prediction_scores_one():
    target = torch.tensor([[0, 1, 2], [2, 255, 1]])
    cm = ConfusionMatrix(3)
    cm.update(target.clamp(max=2), target)
    r = cm.compute()
    for key in ("pixel_acc", "mean_acc", "miou", "fwiou", "mean_dice"):
        assert r[key] == pytest.approx(1.0), key


def test_missed_and_spurious_classes_count_as_zero():
    cm = ConfusionMatrix(4)
    # class 1 is in the GT but never predicted; class 2 is predicted but not in the GT;
    # class 3 is in neither and is the only one excluded.
    cm.update(torch.tensor([0, 0, 2, 0]), torch.tensor([0, 1, 0, 0]))
    r = cm.compute()
    assert r["iou"][:3] == pytest.approx([2 / 4, 0.0, 0.0])
    assert math.isnan(r["iou"][3])
    assert r["miou"] == pytest.approx(0.5 / 3)
    assert math.isnan(r["acc"][2])                   # no GT pixel: excluded from mean_acc
    assert r["mean_acc"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_ignore_and_out_of_range_targets_skipped():
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(np.array([0, 1, 2, 2, 1]), np.array([0, 9, 7, -1, 1]))
    assert int(cm.matrix.sum()) == 2
    assert cm.matrix.diag().tolist() == [1, 1, 0]


def test_all_ignored_gives_nan_not_error():
    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255))
    r = cm.compute()
    assert math.isnan(r["miou"]) and math.isnan(r["pixel_acc"])


def test_invalid_inputs_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([3]), torch.tensor([0]))


def test_merge_equals_single_accumulation_and_reset():
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(PRED[:2], TARGET[:2])
    b.update(PRED[2:], TARGET[2:])
    assert (a + b).matrix.tolist() == EXPECTED
    assert merge(a, b).matrix.tolist() == EXPECTED
    assert int(a.matrix.sum()) + int(b.matrix.sum()) == 11   # operands untouched
    with pytest.raises(ValueError):
        a + ConfusionMatrix(3)
    a.reset()
    assert int(a.matrix.sum()) == 0


def test_format_table():
    r = worked_example().compute()
    text = format_table(r, ["road", "car", "pedestrian", "sky"])
    lines = text.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines if line and line[0] != "-"}
    assert rows["road"] == ["60.0", "75.0", "75.0"]           # IoU, Dice, Acc
    assert rows["pedestrian"] == ["66.7", "80.0", "66.7"]
    assert rows["sky"] == ["-", "-", "-"]
    assert rows["mean"] == ["58.9", "73.9", "72.2"]
    assert rows["fwIoU"] == ["58.2"]
    # Columns line up: every per-class row has the same length.
    per_class = [line for line in lines if line.split()[0] in ("road", "car", "pedestrian", "sky")]
    assert len({len(line) for line in per_class}) == 1
    with pytest.raises(ValueError):
        format_table(r, ["road"])


def test_json_value_turns_nan_into_null():
    from rtseg.metrics import json_value

    assert json_value(float("nan")) is None
    assert json_value(0.25) == 0.25 and json_value(3) == 3 and json_value(None) is None
