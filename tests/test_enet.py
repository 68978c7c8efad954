"""Tests for ENet (Paszke et al. 2016)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from rtseg.models.enet import build_enet


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _calibrate_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Fills BN running statistics from ``x`` and returns the model in eval mode.

    With fresh statistics (mean 0, var 1) eval-mode BN normalizes nothing and the ~30 residual
    blocks blow logits up to ~1e4, where float32 rounding alone exceeds any sensible tolerance.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration passes
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(x)
    return model.eval()


@pytest.mark.parametrize("upsample", ["unpool", "bilinear"])
@pytest.mark.parametrize("size", [(360, 480), (97, 131)])
def test_eval_output_at_input_size(upsample, size):
    torch.manual_seed(0)
    model = build_enet(12, upsample=upsample).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 12, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("upsample", ["unpool", "bilinear"])
def test_train_mode_output_and_gradient_reaches_initial_block(upsample):
    torch.manual_seed(0)
    model = build_enet(5, upsample=upsample).train()
    out = model(torch.randn(2, 3, 70, 90))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 5, 70, 90)
    out.square().mean().backward()
    grad = model.initial.conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_parameter_count_close_to_paper():
    # The paper reports 0.37 M parameters for its 11-19 class datasets.
    for num_classes in (11, 19):
        assert 0.33e6 < _num_params(build_enet(num_classes)) < 0.40e6


def test_padding_is_cropped_not_resized():
    # The crop must keep logits aligned with pixels: the top-left block of an input padded up to a
    # multiple of 8 by hand gives the same logits as the unpadded input (eval, BN in inference mode).
    torch.manual_seed(0)
    model = build_enet(4).eval()
    x = torch.randn(1, 3, 61, 83)
    padded = torch.nn.functional.pad(x, (0, 5, 0, 3))  # 64 x 88
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded)[:, :, :61, :83], atol=1e-5)


def test_variants_share_parameters_but_differ_in_upsampling():
    unpool, bilinear = build_enet(6, upsample="unpool"), build_enet(6, upsample="bilinear")
    assert _num_params(unpool) == _num_params(bilinear)
    bilinear.load_state_dict(unpool.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert not torch.allclose(unpool.eval()(x), bilinear.eval()(x))


def test_bilinear_variant_computes_no_pool_indices():
    model = build_enet(3, upsample="bilinear").eval()
    _, indices = model.down1(torch.randn(1, 16, 32, 48))
    assert indices is None


def test_options_are_validated():
    with pytest.raises(TypeError):
        build_enet(3, backbone="resnet50")
    with pytest.raises(ValueError):
        build_enet(3, upsample="nearest")


def test_onnx_export_bilinear_matches_torch(tmp_path):
    import onnx  # extra "onnx" (installed by CI): never skipped
    import onnxruntime as ort
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 96)
    model = _calibrate_bn(build_enet(5, upsample="bilinear"), x)
    path = tmp_path / "enet.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    nodes = onnx.load(str(path)).graph.node
    # The engine-friendly variant must not need what onnx-tensorrt lacks: MaxPool's Indices output
    # and MaxUnpool (which the dynamo exporter would lower to ScatterND).
    assert not {"MaxUnpool", "ScatterND"} & {node.op_type for node in nodes}
    assert all(len(node.output) == 1 for node in nodes if node.op_type == "MaxPool")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == (1, 5, 64, 96)
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-3)
