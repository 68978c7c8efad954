"""Every architecture of the registry: shapes, train/eval outputs, gradients, bad options."""
import pytest
import torch

from rtseg.models import REALTIME, UnknownModelError, available, build

SIZES = [(64, 96), (70, 90)]  # the second is not a multiple of 32, like CamVid's 360x480
NUM_CLASSES = 5


@pytest.fixture(scope="module", params=available())
def arch(request):
    return request.param


def test_registry_lists_all_eight():
    assert sorted(available()) == sorted(
        ["enet", "icnet", "deeplabv3plus", "fcn8s", "segnet", "unet", "pspnet", "deeplabv3"])
    assert set(REALTIME) <= set(available())


@pytest.mark.parametrize("size", SIZES)
def test_eval_logits_at_input_size(arch, size):
    torch.manual_seed(0)
    model = build(arch, NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, NUM_CLASSES, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", SIZES)
def test_train_mode_outputs_and_gradients_reach_first_layer(arch, size):
    torch.manual_seed(0)
    model = build(arch, NUM_CLASSES).train()
    out = model(torch.randn(2, 3, *size))
    outs = out if isinstance(out, tuple) else (out,)
    assert outs[0].shape == (2, NUM_CLASSES, *size)
    for aux in outs[1:]:
        assert aux.shape[:2] == (2, NUM_CLASSES)
    loss = sum(o.float().pow(2).mean() for o in outs)
    loss.backward()
    first_conv = next(p for p in model.parameters() if p.dim() == 4)
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError) as e:
        build("deeplabv3pluss", 3)
    msg = str(e.value)
    assert "deeplabv3plus" in msg and "enet" in msg and "Did you mean" in msg


def test_unknown_option_is_an_error(arch):
    with pytest.raises(TypeError):
        build(arch, 3, no_such_option=1)


@pytest.mark.parametrize("arch_name,backbone", [("deeplabv3plus", "mobilenetv2"),
                                                ("icnet", "mobilenetv2"),
                                                ("pspnet", "efficientnet_lite0")])
def test_alternative_backbones(arch_name, backbone):
    model = build(arch_name, 3, backbone=backbone).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 70, 90)).shape == (1, 3, 70, 90)


def test_logits_at_camvid_size(arch):
    # The size every shipped model works at (360 is not a multiple of 32).
    model = build(arch, 11).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 360, 480))
    assert out.shape == (1, 11, 360, 480) and torch.isfinite(out).all()
