"""INT8: calibration frames from folders and videos, ORT QDQ quantization, the accuracy gate and
its refusal, the zero-zero-point Q/DQ model for TensorRT, OpenVINO FP32/INT8."""
import numpy as np
import onnx
import pytest
import torch

from export_helpers import CAMVID, VIDEO, camvid_subset, trained_enet
from rtseg.backends import open_backend
from rtseg.backends.base import Backend, ModelMeta
from rtseg.export import ExportRequest, export
from rtseg.export.api import Exporter
from rtseg.export.frames import labelled_pairs, load_frames, load_labelled, spread
from rtseg.export.gate import GateRefused, run_gate
from rtseg.export.quantize import nonzero_zero_points

SIZE = (96, 128)


@pytest.fixture(scope="session")
def enet_weights(tmp_path_factory):
    return trained_enet(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    """12 labelled CamVid train frames in images/ + masks/ (8 calibrate, 4 held out)."""
    return camvid_subset(tmp_path_factory.mktemp("calib"), n_train=12, n_val=0) / "train"


@pytest.fixture(scope="module")
def int8_onnx(enet_weights, calib_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("engines")
    shown = []
    result = export(ExportRequest(str(enet_weights), "onnx", "int8", SIZE, calib=str(calib_dir), calib_frames=8,
                                  max_drop=100.0, out_dir=str(out)), show=shown.append)
    return result, shown, out


def test_spread_picks_evenly_and_never_repeats():
    assert spread(10, 4) == [0, 3, 6, 9]
    assert spread(3, 8) == [0, 1, 2]
    assert len(set(spread(367, 64))) == 64


def test_calibration_and_held_out_frames_are_disjoint(calib_dir):
    fs = load_frames(calib_dir, 8, 100)
    assert len(fs.calib) == 8 and len(fs.held_out) == 4 and fs.labelled
    assert all(m is not None and m.shape == f.shape[:2] for f, m in fs.held_out)
    calib_bytes = {f.tobytes() for f in fs.calib}
    assert not any(f.tobytes() in calib_bytes for f, _ in fs.held_out)
    assert load_frames(calib_dir, 8, 100).digest == fs.digest
    assert load_frames(calib_dir, 6, 100).digest != fs.digest


def test_video_frames_are_unlabelled_and_pinned_by_indices():
    fs = load_frames(VIDEO, 4, 3)
    assert len(fs.calib) == 4 and len(fs.held_out) == 3 and not fs.labelled
    assert fs.calib[0].shape == (540, 960, 3) and fs.held_out[0][1] is None
    assert load_frames(VIDEO, 5, 3).digest != fs.digest


def test_labelled_layouts():
    assert labelled_pairs(CAMVID / "train") is not None           # <split> + <split>annot
    assert len(load_labelled(CAMVID, 5)) == 5                      # CamVid root -> val
    assert labelled_pairs(VIDEO.parent) is None


def test_int8_export_runs_and_the_gate_prints_the_drop(int8_onnx, enet_weights):
    result, shown, _ = int8_onnx
    table = "\n".join(shown)
    assert "INT8 accuracy gate on 4 held-out frames" in table and "against their labels" in table
    assert "mIoU" in table and "Sky" in table and "drop" in table
    meta = open_backend(str(result.path)).meta
    gate = meta.info["int8_gate"]
    assert meta.precision == "int8" and gate["reference"] == "labels" and gate["frames"] == 4
    assert isinstance(gate["drop"], float) and gate["passed"]
    assert meta.info["quantization"]["qdq_nodes"] > 50
    model = onnx.load(str(result.path))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 50
    int8 = open_backend(str(result.path))
    fp32 = open_backend(str(enet_weights))
    x = int8.preprocess(np.zeros((60, 80, 3), np.uint8) + 100)[None]
    assert int8.infer(x).shape == fp32.infer(x).shape == (1, 11, *SIZE)


def test_agreement_check_used_after_engine_builds(int8_onnx, enet_weights, calib_dir):
    result, _, out = int8_onnx
    ex = Exporter(ExportRequest(str(enet_weights), "onnx", "int8", SIZE, calib=str(calib_dir), calib_frames=8,
                                out_dir=str(out)))
    assert ex._agreement(ex.onnx()) == 1.0
    assert 0.5 < ex._agreement(result.path) <= 1.0


def test_int8_cache_hit_reports_the_recorded_drop(int8_onnx, enet_weights, calib_dir):
    result, _, out = int8_onnx
    logs = []
    again = export(ExportRequest(str(enet_weights), "onnx", "int8", SIZE, calib=str(calib_dir), calib_frames=8,
                                 max_drop=100.0, out_dir=str(out)), log=logs.append)
    assert again.reused and again.path == result.path
    assert any("INT8 gate measured when built" in m for m in logs)


def test_gate_refuses_over_budget_and_force_records_the_drop(enet_weights, calib_dir, tmp_path):
    req = ExportRequest(str(enet_weights), "onnx", "int8", SIZE, calib=str(calib_dir), calib_frames=8,
                        max_drop=-100.0, out_dir=str(tmp_path))  # INT8 cannot be 100 points better
    shown = []
    with pytest.raises(GateRefused, match="artifact not kept"):
        export(req, show=shown.append)
    assert len(shown) == 2, "the fallback (head in float) is tried before refusing"
    assert not [p for p in tmp_path.iterdir() if "int8" in p.name], "nothing INT8 may stay behind"
    req.force = True
    result = export(req)
    info = open_backend(str(result.path)).meta.info
    assert info["forced"] and not info["int8_gate"]["passed"] and info["int8_gate"]["drop"] > -100.0


def test_video_calibration_gates_against_fp32_soft_labels(enet_weights, tmp_path):
    shown = []
    result = export(ExportRequest(str(enet_weights), "onnx", "int8", SIZE, calib=str(VIDEO), calib_frames=6,
                                  gate_frames=3, max_drop=100.0, out_dir=str(tmp_path)), show=shown.append)
    assert "soft labels" in shown[0] and "same class on" in shown[0]
    gate = open_backend(str(result.path)).meta.info["int8_gate"]
    assert gate["reference"] == "fp32-soft-labels" and gate["frames"] == 3
    assert 0.0 < gate["pixel_agreement"] <= 1.0
    assert all(v is None or 0.0 <= v <= 1.0 for v in gate["iou_fp32"] + gate["iou_int8"])


class _Fixed(Backend):
    """Returns the same logits for any frame."""

    runtime = "fixed"

    def __init__(self, logits):
        self.logits = torch.as_tensor(logits, dtype=torch.float32)[None]
        c, h, w = self.logits.shape[1:]
        self.meta = ModelMeta("fixed", [f"c{i}" for i in range(c)], [[0, 0, 0]] * c, [0.0] * 3, [1.0] * 3,
                              (h, w), 255)

    def infer(self, batch):
        return self.logits


def test_unlabelled_gate_ignores_flips_where_fp32_hesitates():
    """8x9 frame: columns 0-3 surely class 0, 4-8 surely class 1 except column 4, a coin toss.
    INT8 flipping the coin-toss column loses nothing (hard FP32 pseudo-labels called it a 20-point
    drop); flipping a column FP32 is sure of is a real loss."""
    fp32 = np.zeros((2, 8, 9), np.float32)
    fp32[0, :, :4], fp32[1, :, 5:] = 10.0, 10.0
    fp32[1, :, 4] = 0.01                      # column 4: p = (0.4975, 0.5025), argmax class 1
    hesitant, sure = fp32.copy(), fp32.copy()
    hesitant[0, :, 4] = 1.0                   # INT8 says class 0 on the coin-toss column
    sure[1, :, 0] = 20.0                      # INT8 says class 1 on a column FP32 is sure is class 0
    frames = [(np.zeros((8, 9, 3), np.uint8), None)] * 2
    a = run_gate(_Fixed(hesitant), _Fixed(fp32), frames, progress=False)
    b = run_gate(_Fixed(sure), _Fixed(fp32), frames, progress=False)
    assert a.reference == "fp32-soft-labels" and a.pixel_agreement == pytest.approx(64 / 72)
    assert abs(a.drop) < 0.1 and a.passed
    assert b.drop > 10.0 and not b.passed


def test_val_folder_replaces_the_held_out_frames(enet_weights, calib_dir, tmp_path):
    val = camvid_subset(tmp_path / "v", n_train=0, n_val=3) / "val"
    result = export(ExportRequest(str(enet_weights), "onnx", "int8", SIZE, calib=str(calib_dir), calib_frames=8,
                                  val=str(val), max_drop=100.0, out_dir=str(tmp_path / "e")))
    gate = result.gate
    assert gate["frames"] == 3 and gate["source"] == str(val)


def test_tensorrt_qdq_model_has_zero_zero_points_and_runs_in_ort(enet_weights, calib_dir, tmp_path):
    ex = Exporter(ExportRequest(str(enet_weights), "engine", "int8", SIZE, calib=str(calib_dir), calib_frames=8,
                                max_drop=100.0, out_dir=str(tmp_path)))
    path = ex.int8("onnx-trt")
    model = onnx.load(str(path))
    assert nonzero_zero_points(model) == []
    zps = [n.input[2] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    inits = {t.name: t for t in model.graph.initializer}
    assert zps and all(inits[z].data_type == onnx.TensorProto.INT8 for z in zps if z in inits)
    meta = open_backend(str(path)).meta
    assert meta.precision == "int8" and meta.info["quantization"]["target"] == "tensorrt"
    gate = meta.info["int8_gate"]
    assert gate["reference"] == "labels" and 0 <= gate["miou_int8"] <= 1
    assert "int8trt" in path.name


def test_openvino_fp32_matches_onnx_runtime(enet_weights, tmp_path):
    pytest.importorskip("openvino")
    out = str(tmp_path)
    xml = export(ExportRequest(str(enet_weights), "openvino", "fp32", SIZE, out_dir=out)).path
    assert xml.suffix == ".xml" and xml.with_suffix(".bin").is_file()
    ov = open_backend(str(xml))
    ref = open_backend(str(export(ExportRequest(str(enet_weights), "onnx", "fp32", SIZE, out_dir=out)).path))
    assert ov.runtime == "openvino" and ov.meta.class_names == ref.meta.class_names and ov.meta.precision == "fp32"
    x = np.random.default_rng(0).standard_normal((2, 3, *SIZE), dtype=np.float32)
    agreement = (ov.predict_ids(x) == ref.predict_ids(x)).float().mean().item()
    assert agreement >= 0.999


def test_openvino_int8(enet_weights, calib_dir, tmp_path):
    pytest.importorskip("openvino")
    result = export(ExportRequest(str(enet_weights), "openvino", "int8", SIZE, calib=str(calib_dir), calib_frames=8,
                                  max_drop=100.0, out_dir=str(tmp_path)))
    backend = open_backend(str(result.path))
    assert backend.meta.precision == "int8" and "int8_gate" in backend.meta.info
    assert backend.meta.info["quantization"]["method"] in ("nncf", "ort-qdq")
    ids = backend.predict_ids(np.zeros((1, 3, *SIZE), np.float32))
    assert ids.shape == (1, *SIZE) and ids.dtype == torch.int64


def test_openvino_int8_without_nncf_converts_the_qdq_model(enet_weights, calib_dir, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    import rtseg.export.openvino as ov_export

    monkeypatch.setattr(ov_export, "has_nncf", lambda: False)
    result = export(ExportRequest(str(enet_weights), "openvino", "int8", SIZE, calib=str(calib_dir), calib_frames=8,
                                  max_drop=100.0, out_dir=str(tmp_path)))
    backend = open_backend(str(result.path))
    assert backend.meta.info["quantization"]["method"] == "ort-qdq"
    assert backend.meta.info["quantization"]["target"] == "openvino"
    x = backend.preprocess(np.full((60, 80, 3), 90, np.uint8))[None]
    assert backend.infer(x).shape == (1, 11, *SIZE)
