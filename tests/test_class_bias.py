"""Per-class logit offsets: the search, folding them into a model, and `rtseg tune-bias`."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from rtseg.checkpoint import load_weights
from rtseg.class_bias import fold_offsets, miou_of, confusion, tune_offsets
from rtseg.cli import main
from rtseg.errors import RtsegError
from rtseg.models import build


def test_search_finds_the_offset_that_unlocks_a_never_predicted_class():
    # Class 2 is always second at its own pixels (0.6 below class 0) and far behind elsewhere:
    # the argmax never picks it; an offset in (0.6, 1.2) makes every pixel right.
    labels = torch.tensor([0] * 50 + [1] * 40 + [2] * 10)
    z = torch.zeros(3, 100)
    z[0, :50], z[1, 50:90] = 2.0, 2.0
    z[0, 90:], z[2, 90:] = 1.0, 0.4
    z[2, :90] = 0.8  # 1.2 below the winner there
    before = miou_of(confusion(labels, z.max(0).indices, 3))
    result = tune_offsets(z, labels)
    assert result.miou_before == pytest.approx(before) and before < 0.8
    assert 0.6 < result.offsets[2] - result.offsets[0] < 1.2  # only the gap to class 0 matters
    assert result.miou_after == pytest.approx(1.0)


def test_search_never_moves_without_a_gain():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    z = torch.nn.functional.one_hot(labels, 3).T.float()  # already perfect
    result = tune_offsets(z, labels)
    assert result.offsets == [0.0, 0.0, 0.0] and result.miou_after == 1.0


@pytest.mark.parametrize("arch, options", [("enet", {"upsample": "bilinear"}), ("enet", {}),
                                           ("deeplabv3plus", {"backbone": "mobilenetv2", "pretrained": False})])
def test_offsets_fold_into_the_layer_that_shifts_the_logits(arch, options):
    torch.manual_seed(0)
    model = build(arch, 5, **options).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        offsets = [0.5, -1.0, 0.0, 2.25, 0.75]
        fold_offsets(model, offsets, (64, 96))
        after = model(x)
    expected = torch.tensor(offsets)[None, :, None, None].expand_as(before)
    assert torch.allclose(after - before, expected, atol=1e-4 + 1e-6 * float(before.abs().max()))


def test_a_classifier_followed_by_normalisation_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    model[1].running_var.fill_(4.0)  # the BN halves any bias shift
    with pytest.raises(RtsegError, match="cannot fold class offsets"):
        fold_offsets(model, [1.0, 0, 0, 0], (8, 8))


def test_tune_bias_command_writes_a_self_describing_model(tiny_enet, tmp_path, capsys):
    data = tiny_enet.parents[1] / "data"
    out = tmp_path / "tuned.safetensors"
    assert main(["tune-bias", "--model", str(tiny_enet), "--data", "folder", "--root", str(data),
                 "--split", "train", "--every", "1", "--out", str(out)]) == 0
    assert "folder:train mIoU" in capsys.readouterr().out
    state, preset, _, info = load_weights(out)
    src_state, src_preset, _, _ = load_weights(tiny_enet)
    bias = info["class_bias"]
    assert preset == src_preset and bias["tuned_on"] == "folder:train" and bias["images"] == 8
    assert bias["miou_after"] >= bias["miou_before"]
    # Only the classifier's bias changed, by exactly the recorded offsets.
    layer = bias["layer"] + ".bias"
    shift = state[layer] - src_state[layer]
    assert np.allclose(shift.numpy(), list(bias["offsets"].values()), atol=1e-6)
    assert all(torch.equal(state[k], src_state[k]) for k in state if k != layer)

    # Tuning the tuned file again records the total offset its bias carries, not only the last step.
    again = tmp_path / "again.safetensors"
    assert main(["tune-bias", "--model", str(out), "--data", "folder", "--root", str(data),
                 "--split", "train", "--every", "1", "--out", str(again)]) == 0
    state2, _, _, info2 = load_weights(again)
    total = (state2[layer] - src_state[layer]).numpy()
    assert np.allclose(total, list(info2["class_bias"]["offsets"].values()), atol=1e-6)


def test_tune_bias_bad_output_is_one_line(tiny_enet, tmp_path, capsys):
    data = tiny_enet.parents[1] / "data"
    assert main(["tune-bias", "--model", str(tiny_enet), "--data", "folder", "--root", str(data),
                 "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rtseg tune-bias: error: --out must be a .safetensors file, got {tmp_path / 'x.pt'}"


def test_tune_bias_unwritable_output_fails_before_the_work(tiny_enet, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    data = tiny_enet.parents[1] / "data"
    assert main(["tune-bias", "--model", str(tiny_enet), "--data", "folder", "--root", str(data),
                 "--out", str(blocker / "x.safetensors")]) == 2
    captured = capsys.readouterr()
    assert "collecting" not in captured.out  # refused before any image was read
    assert captured.err.strip().startswith(f"rtseg tune-bias: error: cannot write {blocker / 'x.safetensors'}")
