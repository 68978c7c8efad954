"""``rtseg bench``'s sweep on a tiny configuration: statuses, figures measured on the artifacts
themselves, Pareto front, and the CSV / JSON / PNG outputs."""
import csv
import json

import numpy as np
import pytest
import torch

from rtseg.cli import main
from rtseg.errors import RtsegError
from rtseg.tradeoff import SweepOptions, pareto_front, plan
from rtseg.tradeoff.sweep import EXPORT_FAILED, FAILED_VALIDATION, NO_RUNTIME, NOT_APPLICABLE, Combo, measure, unavailable

from export_helpers import VIDEO, camvid_subset


def test_pareto_front_by_hand():
    rows = [{"fps": 10, "miou": 0.60}, {"fps": 5, "miou": 0.70}, {"fps": 4, "miou": 0.65},   # 2 dominated by 1
            {"fps": 20, "miou": 0.50}, {"fps": 20, "miou": 0.40}, {"fps": None, "miou": 0.9},  # 4 by 3; 5 unmeasured
            {"fps": 5, "miou": 0.70}]                                                         # tie with 1: both kept
    assert pareto_front(rows) == [1, 6, 0, 3]


def test_plan_validates_names():
    opts = SweepOptions(models=["m"], backends=["torch", "onnxruntime"], precisions=["fp32", "int8"],
                        sizes=[(64, 96), (32, 48)])
    combos = plan(opts)
    assert len(combos) == 8 and combos[0] == Combo("m", "torch", "fp32", (64, 96))
    with pytest.raises(RtsegError, match="unknown backend 'onnx'"):
        plan(SweepOptions(models=["m"], backends=["onnx"]))
    with pytest.raises(RtsegError, match="unknown precision"):
        plan(SweepOptions(models=["m"], precisions=["int4"]))


def test_unavailable_combinations_are_rows_not_crashes():
    assert unavailable("torch", "int8", "cpu")[0] == NOT_APPLICABLE
    assert unavailable("torch", "fp16", "cpu")[0] == NOT_APPLICABLE
    assert unavailable("torch", "fp32", "cpu") is None
    assert unavailable("onnxruntime", "int8", "cpu") is None
    status, reason = unavailable("tensorrt", "fp16", "cpu")  # no TensorRT (or no GPU) on CI machines
    assert status == NO_RUNTIME and reason


def test_export_failure_and_failed_gate_statuses(tiny_enet, monkeypatch, tmp_path):
    import rtseg.export as export_mod

    opts = SweepOptions(models=[str(tiny_enet)], sizes=[(64, 96)], calib=str(tmp_path), repeats=1, warmup=0,
                        engines_dir=str(tmp_path / "eng"))

    def refuse(req, log=None):
        raise RtsegError("the exporter said no")

    monkeypatch.setattr(export_mod, "export", refuse)
    row = measure(Combo(str(tiny_enet), "onnxruntime", "fp32", (64, 96)), opts)
    assert row["status"] == EXPORT_FAILED and "the exporter said no" in row["reason"]
    assert row["gflops"] > 0 and row["params"] > 0

    class Result:  # an INT8 artifact the gate measured 3 points worse: reported, flagged
        path, gate = tiny_enet, {"drop": 3.0, "passed": False, "budget": 1.0}

    monkeypatch.setattr(export_mod, "export", lambda req, log=None: Result)
    from rtseg.backends.torch_backend import TorchBackend
    monkeypatch.setattr("rtseg.backends.open_backend", lambda spec, **kw: TorchBackend.load(str(spec)))
    row = measure(Combo(str(tiny_enet), "onnxruntime", "int8", (64, 96)), opts)
    assert row["status"] == FAILED_VALIDATION and row["int8_gate_drop"] == 3.0 and row["fps"] > 0


def test_tiny_sweep_writes_table_csv_json_and_plot(tiny_enet, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from rtseg.backends import open_backend
    from rtseg.data import build_dataset
    from rtseg.evaluate import evaluate

    data = camvid_subset(tmp_path / "data", n_train=3, n_val=2)
    out = tmp_path / "bench"
    code = main(["bench", "--models", str(tiny_enet), "--backends", "torch,onnxruntime,tensorrt",
                 "--precisions", "fp32,int8", "--sizes", "64x96", "--data", "folder", "--root", str(data),
                 "--calib", str(data / "train" / "images"), "--calib-frames", "2", "--video", str(VIDEO),
                 "--video-frames", "4", "--repeats", "2", "--engines", str(tmp_path / "eng"), "--out", str(out),
                 "--quiet"])
    assert code == 0
    table = capsys.readouterr().out
    assert "| model | backend |" in table and "runtime not available" in table

    rows = json.loads((out / "results.json").read_text())["rows"]
    by = {(r["backend"], r["precision"]): r for r in rows}
    assert len(rows) == 6
    assert by[("torch", "int8")]["status"] == NOT_APPLICABLE
    assert by[("tensorrt", "fp32")]["status"] == NO_RUNTIME
    for key in (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")):
        r = by[key]
        assert r["status"] in ("ok", FAILED_VALIDATION), r
        assert r["fps"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 and r["e2e_fps"] > 0 and r["e2e_frames"] == 4
        assert 0 <= r["miou"] <= 1 and r["eval_images"] == 2 and r["gflops"] > 0 and r["artifact_mb"] > 0
        assert 0 < r["tc"] <= 100 and 0 <= r["changed"] < 100  # flicker of the e2e run's 4 frames
    assert by[("onnxruntime", "int8")]["artifact"].endswith(".onnx")
    assert by[("onnxruntime", "int8")]["int8_gate_drop"] is not None

    # mIoU is that of each artifact: the torch row equals rtseg eval of the weights at that size,
    # and the ONNX row equals rtseg eval of the exported file.
    ds = build_dataset("folder", data, "val")
    for key, spec in ((("torch", "fp32"), str(tiny_enet)), (("onnxruntime", "fp32"), by[("onnxruntime", "fp32")]["artifact"])):
        ref = evaluate(open_backend(spec), ds, (64, 96), progress=False)["miou"]
        # to 1e-6: the report prints a tenth of a percent, and a row rounded to four digits
        # could print a different tenth than `rtseg eval` does.
        assert by[key]["miou"] == pytest.approx(ref, abs=1e-6)

    with open(out / "results.csv") as f:
        table_rows = list(csv.DictReader(f))
    assert [r["status"] for r in table_rows] == [r["status"] for r in rows]
    assert sum(r["pareto"] == "True" for r in table_rows) >= 1
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert np.isfinite([r["fps"] for r in rows if r.get("fps")]).all()


def test_argmax_rows_beside_logits_rows_with_latency_and_miou(tiny_enet, tmp_path):
    """``argmax=True`` adds, for each exported combination, the artifact with argmax in its graph;
    every row is timed on ``predict_ids`` and scored; a runtime missing here is a row, not a stop."""
    pytest.importorskip("onnxruntime")
    from rtseg.tradeoff import format_table, sweep

    data = camvid_subset(tmp_path / "data", n_train=0, n_val=1)
    opts = SweepOptions(models=[str(tiny_enet)], backends=["torch", "onnxruntime", "tensorrt"], precisions=["fp32"],
                        sizes=[(64, 96)], data="folder", root=str(data), limit=1, warmup=1, repeats=3,
                        argmax=True, engines_dir=str(tmp_path / "eng"))
    assert [(c.backend, c.argmax) for c in plan(opts)] == [
        ("torch", False), ("onnxruntime", False), ("onnxruntime", True), ("tensorrt", False), ("tensorrt", True)]
    rows = sweep(opts, progress=False)
    ok = [r for r in rows if r["status"] == "ok"]
    assert [(r["backend"], r["argmax"]) for r in ok] == [("torch", False), ("onnxruntime", False), ("onnxruntime", True)]
    for r in ok:
        assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and 0 <= r["miou"] <= 1 and r["eval_images"] == 1
    assert ok[2]["artifact"].endswith(".onnx") and "argmax" in ok[2]["artifact"]
    table = format_table(rows)
    assert "| onnxruntime | fp32 |" in table and "| onnxruntime +argmax | fp32 |" in table
    if not torch.cuda.is_available():
        assert all(r["status"] == NO_RUNTIME and "tensorrt" in r["reason"].lower()
                   for r in rows if r["backend"] == "tensorrt")


def test_bad_model_name_is_one_line_error(capsys):
    assert main(["bench", "--models", "deeplabv3plus_camvidd", "--root", "none", "--video", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deeplabv3plus_camvidd" in err[0]


def test_missing_video_is_one_line_error(capsys):
    assert main(["bench", "--video", "/nonexistent/clip.mp4", "--root", "none"]) == 2
    assert "does not exist" in capsys.readouterr().err
