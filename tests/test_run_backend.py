"""`rtseg run --backend/--precision`: which runtime a model runs in, and exporting to it on first use."""
import ctypes
import gc
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import CLIP

from rtseg import resolve
from rtseg.backends import open_backend
from rtseg.resolve import choose_runtime
from rtseg.cli import main
from rtseg.errors import RtsegError
from rtseg.pipeline import RunOptions, run

SIZE = (176, 240)  # ENet halves three times: ONNX max-pooling needs sizes divisible by 8


def test_auto_follows_the_preset_and_what_is_installed(monkeypatch):
    assert choose_runtime("deeplabv3plus_camvid", "cpu") == "openvino"
    assert choose_runtime("icnet_camvid", None) == "openvino"
    assert choose_runtime("enet_camvid", "cpu") == "openvino"  # bilinear decoder: 2.7x faster than torch
    assert choose_runtime("deeplabv3plus_camvid", "cuda") == "torch"
    assert choose_runtime("enet_camvid", "cpu", "onnxruntime") == "onnxruntime"
    # INT8 asked of a torch-preferring model: the first installed CPU runtime that has INT8.
    monkeypatch.setattr(resolve, "_preset_runtime", lambda spec: "torch")
    assert choose_runtime("enet_camvid", "cpu") == "torch"
    assert choose_runtime("enet_camvid", "cpu", "auto", "int8") == "openvino"
    monkeypatch.undo()
    monkeypatch.setattr(resolve, "installed", lambda runtime: False)
    assert choose_runtime("deeplabv3plus_camvid", "cpu") == "torch"


def test_exported_files_keep_their_runtime(tmp_path):
    assert choose_runtime("m.xml", "cpu") == "openvino"
    assert choose_runtime("m.onnx", "cpu") == "onnxruntime"
    assert choose_runtime("m.onnx", "cpu", "openvino") == "openvino"  # OpenVINO reads ONNX
    with pytest.raises(RtsegError, match="m.xml is a openvino artifact; it cannot run with --backend onnxruntime"):
        choose_runtime("m.xml", "cpu", "onnxruntime")
    with pytest.raises(RtsegError, match="--backend must be one of"):
        choose_runtime("enet_camvid", "cpu", "tflite")


def test_openvino_backend_exports_once_and_matches_torch(tiny_enet, tmp_path, one_torch_thread, monkeypatch):
    engines = tmp_path / "engines"
    opts = RunOptions(source=str(CLIP), model=str(tiny_enet), backend="openvino", precision="fp32", size=SIZE, max_frames=3,
                      save_masks=str(tmp_path / "m"), engines_dir=str(engines), quiet=True)
    summary = run(opts)
    assert summary["runtime"] == "openvino" and summary["frames"] == 3
    built = sorted(os.listdir(engines))
    assert any(f.endswith(".xml") for f in built)

    # The masks are torch's masks: same network, FP32.
    torch_run = run(RunOptions(source=str(CLIP), model=str(tiny_enet), backend="torch", size=SIZE, max_frames=3,
                               save_masks=str(tmp_path / "t"), quiet=True))
    assert torch_run["runtime"] == "torch"
    for name in sorted(os.listdir(tmp_path / "m")):
        a = cv2.imread(str(tmp_path / "m" / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "t" / name), cv2.IMREAD_UNCHANGED)
        assert (a == b).mean() > 0.995, name

    # Second run: the cached export is reused, nothing new is written.
    mtimes = {f: os.path.getmtime(engines / f) for f in built}
    run(opts)
    assert {f: os.path.getmtime(engines / f) for f in sorted(os.listdir(engines))} == mtimes

    # A cache hit reads the weight file's header only: loading or hashing its tensors fails here.
    _forbid_reading_weights(monkeypatch, tiny_enet)
    assert run(opts)["runtime"] == "openvino"
    monkeypatch.undo()

    # The exported file runs in the precision it was exported in; asking it for another one is an
    # error rather than a silent FP32 run labelled INT8 by the user.
    xml = str(engines / next(f for f in built if f.endswith(".xml")))
    assert resolve.open_for_run(xml, "cpu").meta.precision == "fp32"  # no INT8 default for a file
    with pytest.raises(RtsegError, match=r"was exported as fp32; --precision int8 cannot change that"):
        resolve.open_for_run(xml, "cpu", precision="int8")
    assert main(["run", "--source", str(CLIP), "--model", xml, "--precision", "int8", "--quiet"]) == 2


def _forbid_reading_weights(monkeypatch, weights):
    """Makes every way of reading ``weights``' tensors, or hashing its bytes, raise."""
    import safetensors.torch

    import rtseg.export.cache as cache

    def refuse(*a, **k):
        raise AssertionError("torch weights were read on a cache hit")

    hash_file = cache.sha256_file
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr("rtseg.zoo.load_model", refuse)
    monkeypatch.setattr("rtseg.zoo.load_weights", refuse)
    monkeypatch.setattr("rtseg.checkpoint.load_weights", refuse)
    monkeypatch.setattr(cache, "sha256_file",
                        lambda p: refuse() if Path(p).resolve() == Path(weights).resolve() else hash_file(p))


def test_auto_falls_back_to_torch_when_the_export_fails(tiny_enet, tmp_path, monkeypatch):
    """The default command must work wherever torch does; an explicit request must not be ignored."""
    def broken(*a, **k):
        raise RtsegError("ONNX export is not available: pip install \"rtseg[onnx]\"")

    monkeypatch.setattr(resolve, "_preset_runtime", lambda spec: "openvino")
    monkeypatch.setattr(resolve, "export", broken)
    lines = []
    backend = resolve.open_for_run(str(tiny_enet), "cpu", "auto", log=lines.append)
    assert backend.runtime == "torch"
    # The default tries INT8 first, then FP32, then runs torch: each step says why it moved on.
    assert lines[0].startswith("notice: INT8 not used (ONNX export is not available")
    assert lines[1].startswith("notice: could not export to openvino")
    with pytest.raises(RtsegError, match="ONNX export is not available"):
        resolve.open_for_run(str(tiny_enet), "cpu", "openvino", log=lines.append)


@pytest.mark.parametrize("args, message", [
    (["--backend", "openvino", "--precision", "int8"], "INT8 needs calibration frames: --calib"),
    (["--backend", "torch", "--precision", "int8"], "--precision int8 needs an exported runtime"),
])
def test_bad_precision_requests_are_one_line(tiny_enet, tmp_path, capsys, args, message):
    code = main(["run", "--quiet", "--source", str(CLIP), "--model", str(tiny_enet), "--max-frames", "1",
                 "--save-masks", str(tmp_path / "m"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "m").exists() or not os.listdir(tmp_path / "m")


def test_unwritable_engines_folder_is_one_error(tiny_enet, tmp_path):
    blocker = tmp_path / "engines"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(RtsegError, match="engines"):
        resolve.open_for_run(str(tiny_enet), "cpu", "openvino", size=SIZE, engines_dir=str(blocker), log=lambda _: None)


def test_an_exported_file_runs_directly(tiny_enet, tmp_path):
    from rtseg.export.api import ExportRequest, export

    path = export(ExportRequest(model=str(tiny_enet), format="onnx", size=SIZE, out_dir=str(tmp_path))).path
    backend = resolve.open_for_run(str(path), "cpu", "auto", log=lambda _: None)
    assert backend.runtime == "onnxruntime"
    x = np.zeros((1, 3, *SIZE), np.float32)
    ref = open_backend(str(tiny_enet)).predict_ids(x)
    assert (backend.predict_ids(x) == ref).float().mean() > 0.995


def test_int8_by_default_calibrated_on_the_sample_and_gated(tiny_enet, tmp_path, one_torch_thread, monkeypatch):
    """No precision asked: the INT8 artifact, calibrated on the frames that ship, when its gate passes;
    --precision fp32 opts out; a refused gate runs FP32 and says so."""
    engines, lines = tmp_path / "engines", []
    opened = resolve.open_for_run(str(tiny_enet), "cpu", "openvino", size=SIZE, engines_dir=str(engines),
                                 log=lines.append)
    gate = opened.meta.info["int8_gate"]
    assert opened.meta.precision == "int8" and gate["passed"], lines
    assert opened.meta.info["cache"]["calib"]  # calibrated: the frames' digest is part of its cache key
    assert any("int8, gate" in line and "--precision fp32 opts out" in line for line in lines)
    _forbid_reading_weights(monkeypatch, tiny_enet)  # the second time, a cache hit: header only
    assert resolve.open_for_run(str(tiny_enet), "cpu", "openvino", size=SIZE, engines_dir=str(engines),
                                log=lines.append).meta.precision == "int8"
    monkeypatch.undo()
    assert resolve.open_for_run(str(tiny_enet), "cpu", "openvino", precision="fp32", size=SIZE,
                               engines_dir=str(engines), log=lines.append).meta.precision == "fp32"


def test_a_refused_int8_gate_runs_fp32_with_a_notice(tiny_enet, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setattr(resolve, "DEFAULT_MAX_DROP", -1.0)  # no INT8 build can pass a negative budget
    lines = []
    opened = resolve.open_for_run(str(tiny_enet), "cpu", "openvino", size=SIZE, engines_dir=str(tmp_path),
                                 log=lines.append)
    assert opened.meta.precision == "fp32"
    notices = [line for line in lines if line.startswith("notice:")]
    assert notices and notices[0].startswith("notice: INT8 not used (INT8 accuracy gate: mIoU drop"), lines
    assert not any(p.name.endswith(".xml") and "int8" in p.name for p in tmp_path.iterdir())


def test_openvino_streams_run_two_frames_at_once_with_the_same_output(tiny_enet, tmp_path):
    """Files get two OpenVINO requests side by side (`rtseg run` keeps both busy); a camera one."""
    def opened(streams):
        return resolve.open_for_run(str(tiny_enet), "cpu", "openvino", precision="fp32", size=SIZE,
                                    engines_dir=str(tmp_path), log=lambda _: None, streams=streams)
    one, two = opened(1), opened(2)
    assert one.inflight == 1 and two.inflight == 2
    xs = [np.random.default_rng(i).standard_normal((1, 3, *SIZE)).astype(np.float32) for i in range(4)]
    pending, outs = [two.submit(xs[0]), two.submit(xs[1])], []
    for x in xs[2:]:
        outs.append(pending.pop(0)())
        pending.append(two.submit(x))
    outs += [p() for p in pending]
    for x, out in zip(xs, outs):
        assert torch.allclose(out, one.infer(x), atol=1e-4)


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _signal_stack_is_usable() -> bool:
    """The calling thread's alternate signal stack is off, or lies in writable mapped memory."""
    ss = _SignalStack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(ss)) == 0
    if ss.ss_flags & 2 or not ss.ss_sp:  # SS_DISABLE
        return True
    for line in Path("/proc/self/maps").read_text().splitlines():
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= ss.ss_sp and ss.ss_sp + ss.ss_size <= hi:
            return line.split()[1].startswith("rw")
    return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_backends_closed_in_the_order_they_opened_leave_a_usable_signal_stack(tiny_enet, tmp_path):
    """OpenVINO's CPU plugin swaps the thread's signal stack for its own on AMX CPUs; two of them
    closed first-in-first-out left it pointing at unmapped memory, and the next signal (a
    subprocess ending, Ctrl-C) killed the process with SIGSEGV."""
    opened = [resolve.open_for_run(str(tiny_enet), "cpu", "openvino", precision="fp32", size=SIZE,
                                   engines_dir=str(tmp_path), log=lambda _: None, streams=n)
              for n in (1, 2)]
    while opened:
        opened.pop(0)
        gc.collect()
        assert _signal_stack_is_usable()
