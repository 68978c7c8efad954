"""ModelEMA against hand-computed averages."""
import math

import pytest
import torch
import torch.nn as nn

from rtseg.ema import ModelEMA


def tiny_model(value: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    set_all(model, value)
    return model


def set_all(model: nn.Module, value: float, batches: int = 0) -> None:
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t.fill_(batches if name.endswith("num_batches_tracked") else value)


def test_ema_copy_is_frozen_eval_and_separate():
    model = tiny_model(1.0)
    ema = ModelEMA(model, decay=0.5, warmup=0)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in model.parameters())
    set_all(model, 7.0)
    assert float(ema.module[0].weight[0, 0]) == 1.0     # a deep copy, not a view


def test_ema_matches_hand_computed_average():
    model = tiny_model(1.0)
    ema = ModelEMA(model, decay=0.5, warmup=0)
    set_all(model, 3.0, batches=4)
    ema.update(model)          # 0.5 * 1 + 0.5 * 3 = 2
    set_all(model, 5.0, batches=9)
    ema.update(model)          # 0.5 * 2 + 0.5 * 5 = 3.5
    sd = ema.module.state_dict()
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        assert torch.allclose(sd[name], torch.full_like(sd[name], 3.5)), name
    assert int(sd["1.num_batches_tracked"]) == 9          # integer buffers are copied
    assert ema.updates == 2


def test_warmup_ramps_decay():
    model = tiny_model(0.0)
    ema = ModelEMA(model, decay=0.9, warmup=2)
    set_all(model, 1.0)
    ema.update(model)
    d1 = 0.9 * (1 - math.exp(-1 / 2))                      # 0.3541
    assert ema.current_decay() == pytest.approx(d1)
    assert float(ema.module[0].weight[0, 0]) == pytest.approx(1 - d1)
    ema.update(model)
    d2 = 0.9 * (1 - math.exp(-2 / 2))                      # 0.5689
    assert float(ema.module[0].weight[0, 0]) == pytest.approx(d2 * (1 - d1) + (1 - d2))


def test_state_dict_round_trip_resumes():
    model = tiny_model(1.0)
    ema = ModelEMA(model, decay=0.8, warmup=3)
    for v in (2.0, 4.0, 3.0):
        set_all(model, v)
        ema.update(model)
    state = ema.state_dict()

    resumed = ModelEMA(tiny_model(-5.0), decay=0.8, warmup=3)
    resumed.load_state_dict(state)
    assert resumed.updates == 3
    for name, t in ema.module.state_dict().items():
        assert torch.equal(resumed.module.state_dict()[name], t), name
    # Both continue identically, which requires the update count to have been restored.
    set_all(model, 6.0)
    ema.update(model)
    resumed.update(model)
    assert torch.equal(resumed.module[0].weight, ema.module[0].weight)


def test_invalid_decay_raises():
    with pytest.raises(ValueError):
        ModelEMA(tiny_model(0.0), decay=1.0)
