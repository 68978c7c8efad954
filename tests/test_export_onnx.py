"""ONNX export: every architecture round-trips through ONNX Runtime on real CamVid frames;
dynamic H/W only where proven; metadata, the artifact cache, argmax in the graph, the CLI."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from export_helpers import CAMVID, trained_enet
from rtseg.backends import open_backend
from rtseg.backends.base import ModelMeta, normalize_image
from rtseg.cli import main
from rtseg.data import read_image_rgb
from rtseg.errors import RtsegError
from rtseg.export import ExportRequest, export
from rtseg.export.onnx import ExportError, compare_with_torch, export_onnx, probe_sizes
from rtseg.models import available, build

SIZE = (64, 96)
HEAVY = {"fcn8s", "segnet", "unet", "pspnet", "deeplabv3"}


@pytest.fixture(scope="session")
def enet_weights(tmp_path_factory):
    return trained_enet(tmp_path_factory.getbasetemp())


def _frames(size, n=2):
    files = sorted((CAMVID / "val").glob("*.png"))[:n]
    return [normalize_image(read_image_rgb(f), size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])[None]
            for f in files]


def _meta(size=SIZE):
    return ModelMeta("test", [f"c{i}" for i in range(11)], [[i, i, i] for i in range(11)], [0.5] * 3, [0.5] * 3,
                     size, 11)


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in HEAVY else a for a in available()])
def test_every_architecture_round_trips_through_onnx_runtime(arch, tmp_path):
    torch.manual_seed(0)
    model = build(arch, 11).eval()
    frames = _frames(SIZE)
    path, check = export_onnx(model, _meta(), tmp_path / f"{arch}.onnx", SIZE, check_inputs=frames)
    assert check["rel"] < 1e-3
    result = compare_with_torch(model, path, frames)
    assert result["agreement"] >= 0.999, result
    meta = open_backend(str(path)).meta
    assert meta.input_size == SIZE and meta.precision == "fp32" and not meta.argmax_in_graph


class _ShapeSafe(nn.Module):
    """Every size is derived from the input tensor, so a dynamic export stays right."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, 11, 1)

    def forward(self, x):
        return F.interpolate(self.head(torch.relu(self.down(x))), size=x.shape[-2:], mode="bilinear")


class _Pyramid(nn.Module):
    """Adaptive pooling to 3 bins: DEPLOY.md measured the dynamo export wrong at other sizes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 11, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(3)

    def forward(self, x):
        y = self.conv(x)
        return y + F.interpolate(self.pool(y), size=x.shape[-2:], mode="bilinear")


def test_dynamic_export_is_kept_when_proven_at_three_sizes(tmp_path):
    torch.manual_seed(0)
    model = _ShapeSafe().eval()
    path, check = export_onnx(model, _meta(), tmp_path / "dyn.onnx", SIZE, dynamic=True)
    assert check["sizes"] == [list(s) for s in probe_sizes(SIZE)] and len(check["sizes"]) == 3
    backend = open_backend(str(path))
    assert backend.meta.info["dynamic"] is True
    for h, w in [(64, 96), (97, 131), (40, 50)]:
        x = torch.randn(1, 3, h, w)
        assert backend.infer(x.numpy()).shape == (1, 11, h, w)
        assert torch.allclose(backend.infer(x.numpy()), model(x).detach(), atol=1e-4)


@pytest.mark.parametrize("model", [_Pyramid(), build("enet", 11)], ids=["adaptive-pool", "enet"])
def test_dynamic_export_is_refused_when_not_proven(model, tmp_path):
    with pytest.raises(ExportError, match="dynamic H/W refused"):
        export_onnx(model.eval(), _meta(), tmp_path / "dyn.onnx", SIZE, dynamic=True)
    assert not list(tmp_path.glob("*.onnx")), "a refused export must leave no file"


def test_metadata_round_trip_and_cache(enet_weights, tmp_path):
    from rtseg.backends.torch_backend import TorchBackend

    logs = []
    req = ExportRequest(str(enet_weights), "onnx", "fp32", SIZE, out_dir=str(tmp_path / "engines"))
    first = export(req, log=logs.append)
    assert not first.reused and first.path.parent == tmp_path / "engines"
    meta, ref = open_backend(str(first.path)).meta, TorchBackend.load(str(enet_weights)).meta
    for field in ("name", "class_names", "colors", "mean", "std", "ignore_index"):
        assert getattr(meta, field) == getattr(ref, field), field
    assert meta.input_size == SIZE and meta.precision == "fp32" and meta.source == str(enet_weights)
    assert meta.info["cache_key"].startswith(first.path.stem.rsplit("_", 1)[1])

    logs.clear()
    second = export(req, log=logs.append)
    assert second.reused and second.path == first.path
    assert any("cache hit" in m for m in logs)

    # Same file name, new weights: a new key, a new artifact.
    from rtseg.checkpoint import load_weights, save_weights
    from rtseg.zoo import build_from_preset

    state, preset, dataset, info = load_weights(enet_weights)
    model = build_from_preset(preset, dataset.num_classes)
    state = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state)
    changed = tmp_path / enet_weights.name
    save_weights(changed, model, preset, dataset, info)
    third = export(ExportRequest(str(changed), "onnx", "fp32", SIZE, out_dir=str(tmp_path / "engines")))
    assert not third.reused and third.path != first.path

    # A hand-edited artifact under the cached name is rebuilt, not trusted.
    first.path.write_bytes(b"not an onnx file")
    logs.clear()
    fourth = export(req, log=logs.append)
    assert fourth.path == first.path and not fourth.reused
    assert any("stale or foreign" in m for m in logs)
    assert open_backend(str(first.path)).meta.info["cache_key"] == meta.info["cache_key"]


def test_argmax_in_graph_gives_uint8_ids_equal_to_fp32_argmax(enet_weights, tmp_path):
    out = str(tmp_path / "engines")
    logits = open_backend(str(export(ExportRequest(str(enet_weights), size=SIZE, out_dir=out)).path))
    ids = open_backend(str(export(ExportRequest(str(enet_weights), size=SIZE, argmax=True, out_dir=out)).path))
    assert ids.meta.argmax_in_graph and not logits.meta.argmax_in_graph
    x = np.concatenate(_frames(SIZE, 3))
    got = ids.infer(x)
    assert got.dtype == torch.uint8 and got.shape == (3, *SIZE)
    agreement = (got.long() == logits.infer(x).argmax(1)).float().mean().item()
    assert agreement >= 0.999
    assert torch.equal(ids.predict_ids(x), got.long())


def test_eval_runs_an_exported_model_and_refuses_tta_on_argmax(enet_weights, tmp_path, capsys):
    out = str(tmp_path / "engines")
    path = export(ExportRequest(str(enet_weights), size=SIZE, argmax=True, out_dir=out)).path
    assert main(["eval", "--model", str(path), "--root", str(CAMVID), "--limit", "1"]) == 0
    assert "(onnxruntime, fp32)" in capsys.readouterr().out
    assert main(["eval", "--model", str(path), "--root", str(CAMVID), "--limit", "1", "--flip"]) == 2
    assert "argmax in graph" in capsys.readouterr().err


def test_cli_prints_the_artifact_path_last(enet_weights, tmp_path):
    out = subprocess.run([sys.executable, "-m", "rtseg", "export", "--model", str(enet_weights), "--size", "64x96",
                          "--out-dir", str(tmp_path / "e")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert Path(last).is_file() and Path(last).suffix == ".onnx"
    assert "checked in ONNX Runtime against torch" in out.stderr


def test_fp16_graph_for_strongly_typed_tensorrt(enet_weights, tmp_path):
    import onnx

    result = export(ExportRequest(str(enet_weights), "onnx", "fp16", SIZE, out_dir=str(tmp_path)))
    model = onnx.load(str(result.path))
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    weights = [t for t in model.graph.initializer if len(t.dims) == 4 and t.data_type in floats]  # conv kernels
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # FP32 in and out
    meta = open_backend(str(result.path)).meta
    assert meta.precision == "fp16" and meta.info["check"]["agreement"] >= 0.98


def test_int8_without_calibration_is_refused(enet_weights):
    with pytest.raises(RtsegError, match="--calib"):
        export(ExportRequest(str(enet_weights), precision="int8"))


def test_missing_onnx_runtime_names_the_extra(monkeypatch):
    from rtseg.backends.onnxruntime_backend import import_onnxruntime
    from rtseg.backends.openvino_backend import import_openvino

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(RtsegError, match=r'pip install "rtseg\[onnx\]"'):
        import_onnxruntime()
    with pytest.raises(RtsegError, match=r'pip install "rtseg\[openvino\]"'):
        import_openvino()


def test_verify_judges_by_class_agreement_not_logit_deviation(monkeypatch, tmp_path):
    """A local logit deviation (a max-pool near-tie resolved differently) with every class the same
    passes; a deviation that changes classes fails."""
    import rtseg.export.onnx as onnx_mod
    from rtseg.export.onnx import ExportError, verify

    figures = {"max_abs": 0.35, "rel": 0.016, "agreement": 1.0}
    monkeypatch.setattr(onnx_mod, "compare_with_torch", lambda *a, **k: dict(figures))
    assert verify(None, tmp_path / "m.onnx", [(8, 8)])["rel"] == 0.016
    figures["agreement"] = 0.99
    with pytest.raises(ExportError, match="exported graph is wrong"):
        verify(None, tmp_path / "m.onnx", [(8, 8)])
